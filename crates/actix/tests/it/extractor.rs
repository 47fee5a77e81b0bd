//! The extractor in an actix test service with an offline configuration: where the token is found, what the
//! handler learns, which envelope refuses a request, and that the body stays readable.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::{StatusCode, header};
use actix_web::web::{self, Bytes};
use actix_web::{App, FromRequest as _, rt, test};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use crm_auth_actix::{AuthConfig, Authenticated, BODY_TOKEN_LIMIT, Verifier};
use crm_auth_core::{Claims, DateFormat, issue};
use futures_util::{Stream, StreamExt as _};
use serde_json::json;

use crate::common::{ISSUER, SESSION, bearer, claims_at, keyring, whoami};

const NOW: i64 = 1_700_000_000;
const LEEWAY: u64 = 30;

fn config() -> anyhow::Result<AuthConfig> {
    let verifier = Verifier::new(keyring("k1", 0x5a)?, ISSUER).with_leeway(LEEWAY);
    Ok(AuthConfig::offline_with_clock(verifier, || NOW))
}

/// Alice's claims, issued a minute before [`NOW`], valid for two hours.
fn claims(username: &str) -> Claims {
    claims_at(username, NOW - 60, 7200)
}

/// `claims` changed by `change`.
fn with(mut claims: Claims, change: impl FnOnce(&mut Claims)) -> Claims {
    change(&mut claims);
    claims
}

fn sign(claims: &Claims) -> anyhow::Result<String> {
    Ok(issue(&keyring("k1", 0x5a)?, claims, DateFormat::Numeric))
}

fn token(username: &str) -> anyhow::Result<String> {
    sign(&claims(username))
}

/// A body arriving in small chunks, each after a pending poll, without a declared length.
struct Trickle {
    chunks: Vec<Bytes>,
    wait: bool,
}

impl Trickle {
    fn payload(body: &[u8], chunk: usize) -> Payload {
        let mut chunks: Vec<Bytes> = body.chunks(chunk).map(Bytes::copy_from_slice).collect();
        chunks.reverse();
        Payload::Stream {
            payload: Box::pin(Trickle { chunks, wait: true }),
        }
    }
}

impl Stream for Trickle {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.wait {
            self.wait = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.wait = true;
        Poll::Ready(self.chunks.pop().map(Ok))
    }
}

#[actix_web::test]
async fn handler_sees_the_session_of_the_token() -> anyhow::Result<()> {
    let app = app!(config()?);
    let alice = token("alice")?;
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(bearer(&alice))
        .to_request();
    let (status, _, body) = call!(app, req);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({
            "session_id": SESSION,
            "username": "alice",
            "organisation": "Acme",
            "unit": "HQ",
            "expires_at": NOW + 7140,
            "method": null,
            "token": alice,
        })
    );
    Ok(())
}

#[actix_web::test]
async fn header_comes_before_body_and_body_before_query() -> anyhow::Result<()> {
    let app = app!(config()?);
    let (alice, bob, carol) = (token("alice")?, token("bob")?, token("carol")?);
    let body = json!({"token": bob}).to_string();

    let req = test::TestRequest::post()
        .uri(&format!("/whoami?token={carol}"))
        .insert_header(bearer(&alice))
        .set_payload(body.clone())
        .to_request();
    assert_eq!(call!(app, req).2["username"], "alice");

    let req = test::TestRequest::post()
        .uri(&format!("/whoami?token={carol}"))
        .set_payload(body)
        .to_request();
    assert_eq!(call!(app, req).2["username"], "bob");

    let req = test::TestRequest::get()
        .uri(&format!("/whoami?token={carol}"))
        .to_request();
    assert_eq!(call!(app, req).2["username"], "carol");
    Ok(())
}

#[actix_web::test]
async fn bearer_scheme_is_case_insensitive_and_other_schemes_are_no_token() -> anyhow::Result<()> {
    let app = app!(config()?);
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header((header::AUTHORIZATION, format!("  bEaReR   {}  ", token("alice")?)))
        .to_request();
    assert_eq!(call!(app, req).2["username"], "alice");

    // A Basic header (a Web API key, say) is not a token; the lookup goes on to the query.
    let req = test::TestRequest::get()
        .uri(&format!("/whoami?token={}", token("carol")?))
        .insert_header((header::AUTHORIZATION, "Basic RUU2M0E4MkM6"))
        .to_request();
    assert_eq!(call!(app, req).2["username"], "carol");
    Ok(())
}

#[actix_web::test]
async fn body_stays_readable_after_the_lookup() -> anyhow::Result<()> {
    let app = app!(config()?);
    let body = json!({"token": token("bob")?, "amount": 12}).to_string();

    let req = test::TestRequest::post()
        .uri("/echo")
        .set_payload(body.clone())
        .to_request();
    let (status, _, json) = call!(app, req);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"username": "bob", "body": body}));

    let req = test::TestRequest::post()
        .uri("/json")
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.clone())
        .to_request();
    let (status, _, json) = call!(app, req);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["username"], "bob");
    assert_eq!(json["body"]["amount"], 12);

    // With a bearer token the body is not looked at, and reaches the handler as sent.
    let req = test::TestRequest::post()
        .uri("/echo")
        .insert_header(bearer(&token("alice")?))
        .set_payload(body.clone())
        .to_request();
    assert_eq!(call!(app, req).2, json!({"username": "alice", "body": body}));
    Ok(())
}

#[actix_web::test]
async fn body_arriving_in_chunks_is_searched_and_passed_on() -> anyhow::Result<()> {
    let app = app!(config()?);
    let body = json!({"token": token("bob")?, "note": "x".repeat(500)}).to_string();
    let mut req = test::TestRequest::post().uri("/echo").to_request();
    *req.payload() = Trickle::payload(body.as_bytes(), 7);
    let (status, _, json) = call!(app, req);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"username": "bob", "body": body}));
    Ok(())
}

#[actix_web::test]
async fn long_body_is_not_searched_but_passed_on_whole() -> anyhow::Result<()> {
    let app = app!(config()?);
    // The token comes first, yet a body over the limit is never parsed for it.
    let body = json!({"token": token("bob")?, "note": "x".repeat(BODY_TOKEN_LIMIT)}).to_string();

    // Declared length over the limit.
    let req = test::TestRequest::post()
        .uri("/echo")
        .set_payload(body.clone())
        .to_request();
    let (status, _, json) = call!(app, req);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json["status"]["description"], "token missing");

    // No declared length: read up to the limit, then given up on; the query decides.
    let mut req = test::TestRequest::post()
        .uri(&format!("/echo?token={}", token("carol")?))
        .to_request();
    *req.payload() = Trickle::payload(body.as_bytes(), 1000);
    let (status, _, json) = call!(app, req);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json, json!({"username": "carol", "body": body}));
    Ok(())
}

#[actix_web::test]
async fn body_without_a_token_string_falls_back_to_the_query() -> anyhow::Result<()> {
    let app = app!(config()?);
    let carol = token("carol")?;
    for body in [
        "token=abc".to_owned(),
        json!({"token": 5}).to_string(),
        json!({"token": ""}).to_string(),
        json!([token("bob")?]).to_string(),
    ] {
        let req = test::TestRequest::post()
            .uri(&format!("/echo?token={carol}"))
            .set_payload(body.clone())
            .to_request();
        assert_eq!(call!(app, req).2, json!({"username": "carol", "body": body}));
    }
    Ok(())
}

#[actix_web::test]
async fn missing_token_is_answered_with_the_envelope() -> anyhow::Result<()> {
    let app = app!(config()?);
    for req in [
        test::TestRequest::get().uri("/whoami").to_request(),
        test::TestRequest::get().uri("/whoami?token=").to_request(),
        test::TestRequest::post()
            .uri("/whoami")
            .set_payload("{}")
            .to_request(),
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header((header::AUTHORIZATION, "Bearer "))
            .to_request(),
    ] {
        let (status, content_type, body) = call!(app, req);
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(content_type, "application/json");
        assert_eq!(
            body,
            json!({
                "data": {},
                "status": {
                    "code": "INVALID_TOKEN",
                    "description": "token missing",
                    "message": "The token is not valid.",
                },
            })
        );
    }
    // RFC 6750 section 3.1: no error code when the request carried no token.
    let req = test::TestRequest::get().uri("/whoami").to_request();
    assert_eq!(
        challenge!(app, req),
        (StatusCode::UNAUTHORIZED, "Bearer".to_owned())
    );
    Ok(())
}

#[actix_web::test]
async fn refused_tokens_are_challenged_as_invalid_token() -> anyhow::Result<()> {
    let app = app!(config()?);
    let expired = sign(&claims_at("alice", NOW - 7200, 60))?;
    let foreign = issue(&keyring("k1", 0x33)?, &claims("alice"), DateFormat::Numeric);
    for bad in [expired, foreign, "not-a-token".to_owned()] {
        let req = test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&bad))
            .to_request();
        assert_eq!(
            challenge!(app, req),
            (
                StatusCode::UNAUTHORIZED,
                r#"Bearer error="invalid_token""#.to_owned()
            )
        );
    }
    // A pass carries no challenge.
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(bearer(&token("alice")?))
        .to_request();
    assert_eq!(challenge!(app, req), (StatusCode::OK, String::new()));
    Ok(())
}

#[actix_web::test]
async fn configure_registers_the_config_in_one_line() -> anyhow::Result<()> {
    let app = test::init_service(
        App::new()
            .configure(crm_auth_actix::configure(config()?))
            .route("/whoami", web::get().to(whoami)),
    )
    .await;
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(bearer(&token("alice")?))
        .to_request();
    assert_eq!(call!(app, req).2["username"], "alice");
    Ok(())
}

#[actix_web::test]
async fn bad_tokens_are_refused_without_being_echoed() -> anyhow::Result<()> {
    let app = app!(config()?);
    let good = token("alice")?;

    // Alice's signature on claims naming someone else.
    let forged = token("admin")?;
    let (_, forged_payload, _) = split(&forged)?;
    let (header_b64, _, signature) = split(&good)?;
    let tampered = format!("{header_b64}.{forged_payload}.{signature}");

    let expired = sign(&with(claims("alice"), |c| {
        c.iat = NOW - 7300;
        c.exp = NOW - i64::try_from(LEEWAY).unwrap_or(i64::MAX) - 1;
    }))?;
    let other_issuer = sign(&with(claims("alice"), |c| {
        c.iss = Some("someone-else".to_owned())
    }))?;
    let no_issuer = sign(&with(claims("alice"), |c| c.iss = None))?;
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"none"}"#),
        URL_SAFE_NO_PAD.encode(claims("alice").to_json(DateFormat::Numeric)),
    );
    let other_key = issue(&keyring("k1", 0x33)?, &claims("alice"), DateFormat::Numeric);
    let unknown_key = issue(&keyring("k2", 0x5a)?, &claims("alice"), DateFormat::Numeric);

    let cases = [
        (tampered, "INVALID_TOKEN", "bad token signature"),
        (expired, "TOKEN_EXPIRED", "token expired"),
        (other_issuer, "INVALID_TOKEN", "wrong token issuer"),
        (no_issuer, "INVALID_TOKEN", "wrong token issuer"),
        (alg_none, "INVALID_TOKEN", "unsupported token algorithm"),
        (other_key, "INVALID_TOKEN", "bad token signature"),
        (unknown_key, "INVALID_TOKEN", "unknown signing key"),
        ("not-a-token".to_owned(), "INVALID_TOKEN", "malformed token"),
    ];
    for (bad, code, description) in cases {
        for req in [
            test::TestRequest::get()
                .uri("/whoami")
                .insert_header(bearer(&bad))
                .to_request(),
            test::TestRequest::post()
                .uri("/whoami")
                .set_payload(json!({"token": bad}).to_string())
                .to_request(),
            test::TestRequest::get()
                .uri(&format!("/whoami?token={bad}"))
                .to_request(),
        ] {
            let (status, content_type, body) = call!(app, req);
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{description}");
            assert_eq!(content_type, "application/json");
            assert_eq!(body["data"], json!({}));
            assert_eq!(body["status"]["code"], code);
            assert_eq!(body["status"]["description"], description);
            assert!(!body.to_string().contains(&bad), "{description}");
        }
    }
    Ok(())
}

/// A token's three segments.
fn split(token: &str) -> anyhow::Result<(&str, &str, &str)> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) => Ok((h, p, s)),
        _ => anyhow::bail!("not a compact jwt"),
    }
}

#[actix_web::test]
async fn leeway_and_string_dates_are_honoured() -> anyhow::Result<()> {
    let app = app!(config()?);
    // Expired by less than the leeway: clocks drift, and the server allows for it too.
    let leeway = i64::try_from(LEEWAY)?;
    let barely = sign(&with(claims("alice"), |c| c.exp = NOW - leeway))?;
    // CRM.COM's own samples write `iat`/`exp` as strings.
    let strings = issue(&keyring("k1", 0x5a)?, &claims("bob"), DateFormat::String);
    for (token, username) in [(barely, "alice"), (strings, "bob")] {
        let req = test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&token))
            .to_request();
        let (status, _, body) = call!(app, req);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["username"], username);
    }
    Ok(())
}

#[actix_web::test]
#[expect(
    clippy::disallowed_methods,
    reason = "the test compares against the system clock the extractor reads"
)]
async fn offline_uses_the_system_clock() -> anyhow::Result<()> {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let verifier = Verifier::new(keyring("k1", 0x5a)?, ISSUER);
    let app = app!(AuthConfig::offline(verifier));
    let live = sign(&with(claims("alice"), |c| {
        c.iat = now - 10;
        c.exp = now + 7200;
    }))?;
    let expired = sign(&with(claims("alice"), |c| {
        c.iat = now - 7300;
        c.exp = now - 100;
    }))?;
    for (token, status) in [(live, StatusCode::OK), (expired, StatusCode::UNAUTHORIZED)] {
        let req = test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&token))
            .to_request();
        assert_eq!(call!(app, req).0, status);
    }
    Ok(())
}

#[actix_web::test]
async fn config_may_be_plain_app_data() -> anyhow::Result<()> {
    let app = test::init_service(
        App::new()
            .app_data(config()?)
            .route("/whoami", web::get().to(whoami)),
    )
    .await;
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(bearer(&token("alice")?))
        .to_request();
    assert_eq!(call!(app, req).2["username"], "alice");
    Ok(())
}

#[actix_web::test]
async fn missing_config_is_an_internal_error_not_a_pass() -> anyhow::Result<()> {
    let app = test::init_service(App::new().route("/whoami", web::get().to(whoami))).await;
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header(bearer(&token("alice")?))
        .to_request();
    let (status, content_type, body) = call!(app, req);
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(content_type, "application/json");
    assert_eq!(body["data"], json!({}));
    assert_eq!(body["status"]["code"], "INTERNAL_ERROR");
    let message = body["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("AuthConfig"), "{message}");
    assert!(message.contains("crm_auth_actix::configure"), "{message}");
    Ok(())
}

/// A body source that remembers only the last waker, as actix's own HTTP/1 payload does, and receives its
/// bytes when the test says so.
#[derive(Default)]
struct Pipe {
    chunks: Vec<Bytes>,
    ended: bool,
    waker: Option<Waker>,
    polls: usize,
}

struct PipeStream(Rc<RefCell<Pipe>>);

impl Stream for PipeStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut pipe = self.0.borrow_mut();
        pipe.polls += 1;
        if !pipe.chunks.is_empty() {
            return Poll::Ready(Some(Ok(pipe.chunks.remove(0))));
        }
        if pipe.ended {
            return Poll::Ready(None);
        }
        pipe.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Yields until the source has been polled `polls` times.
async fn until_polled(pipe: &Rc<RefCell<Pipe>>, polls: usize) -> anyhow::Result<()> {
    for _ in 0..100 {
        if pipe.borrow().polls >= polls {
            return Ok(());
        }
        rt::task::yield_now().await;
    }
    anyhow::bail!("the source was not polled")
}

#[actix_web::test]
async fn lookup_hears_of_a_body_read_by_another_task() -> anyhow::Result<()> {
    // The extractor awaited in one task (a middleware's, say) while another reads the body: the source wakes
    // only the reader, and the lookup must still learn that the body has arrived.
    let pipe = Rc::new(RefCell::new(Pipe::default()));
    let (req, _) = test::TestRequest::post()
        .uri("/")
        .app_data(web::Data::new(config()?))
        .to_http_parts();
    let mut payload: Payload = Payload::Stream {
        payload: Box::pin(PipeStream(Rc::clone(&pipe))),
    };
    let auth = rt::spawn(Authenticated::from_request(&req, &mut payload));
    until_polled(&pipe, 1).await?;
    let reader = rt::spawn(async move {
        let mut body = Vec::new();
        while let Some(chunk) = payload.next().await {
            body.extend_from_slice(&chunk?);
        }
        Ok::<_, PayloadError>(body)
    });
    until_polled(&pipe, 2).await?;

    let body = json!({"token": token("bob")?}).to_string();
    let waker = {
        let mut pipe = pipe.borrow_mut();
        pipe.chunks.push(Bytes::copy_from_slice(body.as_bytes()));
        pipe.ended = true;
        pipe.waker.take()
    };
    waker.ok_or_else(|| anyhow::anyhow!("no waker"))?.wake();

    let read = rt::time::timeout(Duration::from_secs(10), reader).await???;
    assert_eq!(read, body.as_bytes());
    let user = rt::time::timeout(Duration::from_secs(10), auth).await??;
    assert_eq!(user?.username, "bob");
    Ok(())
}
