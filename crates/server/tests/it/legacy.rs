//! Legacy compatibility: with `http.error_status = "always_200"` every error under the base path is sent with
//! HTTP 200, its envelope, code and `Retry-After` kept, while the operator paths and `/admin/v1` keep their
//! statuses; `token.unit_claim` chooses what `oun` holds; `null` and unknown fields are ignored on the token
//! endpoints; a bad value of either key stops start-up naming it.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_client::Credentials;
use crm_auth_core::{Claims, DateFormat, ErrorCode, issue};
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::login_check::{self, LoginCheck};
use crm_auth_server::db::name_key;
use crm_auth_server::service::admin;
use crm_auth_server::settings::{ErrorStatus, Settings, UnitClaim};
use diesel::connection::SimpleConnection as _;
use serde_json::{Value, json};

use crate::common::server::{crm_auth, run_with_stdin};
use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, code, header, post, test_keyring};

backend_tests!(
    always_200_sends_every_error_with_200,
    standard_keeps_every_status,
    always_200_leaves_the_operator_paths_and_the_admin_api_alone,
    the_client_reads_errors_sent_with_200,
    unit_claim_chooses_what_oun_holds,
    null_and_unknown_fields_are_ignored_on_the_token_endpoints,
);

/// One error answer as it went over the wire.
#[derive(Debug)]
struct Answer {
    /// The code the request must be answered with.
    expected: ErrorCode,
    status: u16,
    retry_after: Option<String>,
    code: String,
    /// Whether the answer closes its connection.
    closes: bool,
}

impl Answer {
    async fn of(expected: ErrorCode, res: reqwest::Response) -> anyhow::Result<Answer> {
        let status = res.status().as_u16();
        let retry_after = header(&res, "retry-after");
        let closes = header(&res, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        assert_eq!(
            header(&res, "content-type").as_deref(),
            Some("application/json"),
            "{expected}"
        );
        let body: Value = serde_json::from_slice(&res.bytes().await?)?;
        assert_eq!(body["data"], json!({}), "{expected}: {body}");
        assert!(body["status"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        Ok(Answer {
            expected,
            status,
            retry_after,
            code: body["status"]["code"].as_str().unwrap_or_default().to_owned(),
            closes,
        })
    }
}

/// Settings under which every error of the contract can be caused on demand: one failure locks an account,
/// a login finding its account's check slot taken does not wait, and a stalled body is cut after a second.
fn provoking(error_status: ErrorStatus) -> impl FnOnce(&mut Settings) {
    move |s| {
        s.http.error_status = error_status;
        s.auth.lockout.threshold = 1;
        s.auth.lockout.max_wait_ms = 0;
        s.http.body_timeout_seconds = 1;
    }
}

/// Causes every error code of the contract's table once (and `REQUEST_TIMEOUT`), on `app` and on a second
/// node of it with a rate limit, and returns the answers. It ends by breaking the database, so `app` is of
/// no further use.
async fn every_error(app: &TestApp) -> anyhow::Result<Vec<Answer>> {
    use ErrorCode::*;
    let http = reqwest::Client::new();
    let login = |username: &str, password: &str, unit: Option<&str>| {
        json!({"username": username, "password": password, "organisation": ORG, "unit": unit}).to_string()
    };
    let validate = |token: &str| {
        http.get(app.api("/authentication/token/validate"))
            .bearer_auth(token)
            .send()
    };
    let mut answers = Vec::new();

    let url = app.api("/authentication/token");
    answers.push(Answer::of(InvalidRequest, post(&url, None, "{").await?).await?);
    let wrong = login("nobody", "wrong", None);
    answers.push(Answer::of(InvalidCredentials, post(&url, None, wrong.clone()).await?).await?);
    // The threshold is one failure, and the test's clock stands still.
    answers.push(Answer::of(TooManyAttempts, post(&url, None, wrong).await?).await?);
    let other_unit = login(USER, PASSWORD, Some("Other"));
    answers.push(Answer::of(InvalidUnit, post(&url, None, other_unit).await?).await?);
    let too_large = "x".repeat(app.state.settings.http.max_body_bytes + 1);
    answers.push(Answer::of(PayloadTooLarge, post(&url, None, too_large).await?).await?);
    answers.push(Answer::of(MethodNotAllowed, http.get(&url).send().await?).await?);
    let nowhere = app.api("/authentication/nowhere");
    answers.push(Answer::of(NotFound, http.get(&nowhere).send().await?).await?);

    answers.push(Answer::of(InvalidToken, validate("not.a.token").await?).await?);
    let now = app.clock.now();
    let expired = Claims::new(
        crm_auth_core::new_session_id(),
        USER,
        ORG,
        "Main",
        now - 7_200,
        now - 3_600,
    )
    .issued_by("crm-auth");
    let expired = issue(&test_keyring()?, &expired, DateFormat::Numeric);
    answers.push(Answer::of(TokenExpired, validate(&expired).await?).await?);
    let released = app.login().await?;
    app.client.release(released.as_str()).await?;
    answers.push(Answer::of(SessionEnded, validate(released.as_str()).await?).await?);

    // Another node of the same service turns the rate limit on, since the limit covers every token endpoint.
    let limited = app.node_with(|s| {
        s.http.rate_limit.per_second = 1;
        s.http.rate_limit.burst = 1;
    })?;
    let key_url = format!(
        "{}{}/authentication/web_api_key/token",
        limited.url, app.state.settings.http.base_path
    );
    let key_login = || http.post(&key_url).basic_auth(&app.key, Some("")).send();
    assert_eq!(key_login().await?.status(), 200);
    answers.push(Answer::of(RateLimited, key_login().await?).await?);

    // The one check slot of carol's account is taken (by another node, say): her login does not wait for it.
    login_check::create(
        &mut *app.conn()?,
        &LoginCheck {
            organisation_key: name_key(ORG),
            username_key: name_key("carol"),
            id: crm_auth_core::new_id(),
            taken_at: now,
        },
    )?;
    let carol = login("carol", "whatever", None);
    answers.push(Answer::of(Unavailable, post(&url, None, carol).await?).await?);

    answers.push(stalled_body(app).await?);

    // A table gone is a bug the server cannot recover from by itself: `INTERNAL_ERROR`.
    let live = app.login().await?;
    app.conn()?
        .batch_execute("ALTER TABLE sessions RENAME TO sessions_gone")?;
    answers.push(Answer::of(InternalError, validate(live.as_str()).await?).await?);
    Ok(answers)
}

/// A password login whose body stops after one of its 100 bytes, as raw HTTP: answered after the body
/// timeout, and its connection closed.
async fn stalled_body(app: &TestApp) -> anyhow::Result<Answer> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = app.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {}/authentication/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{",
        app.state.settings.http.base_path
    );
    stream.write_all(head.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await??;
    let text = String::from_utf8(out)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let body: Value = serde_json::from_str(body)?;
    Ok(Answer {
        expected: ErrorCode::RequestTimeout,
        status,
        retry_after: None,
        code: body["status"]["code"].as_str().unwrap_or_default().to_owned(),
        closes: head.to_ascii_lowercase().contains("connection: close"),
    })
}

/// What every answer carries whatever its status: the code, `Retry-After` where the contract sets it, and
/// `Connection: close` where the body was left unread (stalled, or refused by its length).
fn check_headers_and_codes(answers: &[Answer]) {
    let expected: Vec<ErrorCode> = answers.iter().map(|a| a.expected).collect();
    for code in [
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidUnit,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::SessionEnded,
        ErrorCode::TooManyAttempts,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Unavailable,
        ErrorCode::InternalError,
    ] {
        assert!(expected.contains(&code), "{code} was not provoked");
    }
    for answer in answers {
        assert_eq!(answer.code, answer.expected.as_str(), "{answer:?}");
        let retries = matches!(
            answer.expected,
            ErrorCode::TooManyAttempts | ErrorCode::RateLimited | ErrorCode::Unavailable
        );
        assert_eq!(answer.retry_after.is_some(), retries, "{answer:?}");
        if answer.expected == ErrorCode::Unavailable {
            assert_eq!(answer.retry_after.as_deref(), Some("1"), "{answer:?}");
        }
        let unread = matches!(
            answer.expected,
            ErrorCode::RequestTimeout | ErrorCode::PayloadTooLarge
        );
        assert_eq!(answer.closes, unread, "{answer:?}");
    }
}

async fn always_200_sends_every_error_with_200(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, provoking(ErrorStatus::Always200)).await?;
    let answers = every_error(&app).await?;
    check_headers_and_codes(&answers);
    for answer in &answers {
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    Ok(())
}

async fn standard_keeps_every_status(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, provoking(ErrorStatus::Standard)).await?;
    let answers = every_error(&app).await?;
    check_headers_and_codes(&answers);
    for answer in &answers {
        assert_eq!(answer.status, answer.expected.http_status(), "{answer:?}");
    }
    Ok(())
}

/// Load balancers, Prometheus and the administration API's callers read the HTTP status, so `always_200`
/// leaves them alone; so are paths outside the base path.
async fn always_200_leaves_the_operator_paths_and_the_admin_api_alone(
    backend: Backend,
) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.http.error_status = ErrorStatus::Always200).await?;
    let http = reqwest::Client::new();
    let status_and_code = async |res: reqwest::Response| {
        let status = res.status().as_u16();
        let body: Value = serde_json::from_slice(&res.bytes().await?)?;
        anyhow::Ok((
            status,
            body["status"]["code"].as_str().unwrap_or_default().to_owned(),
        ))
    };
    let admin = http
        .get(format!("{}/admin/v1/organisations", app.url))
        .send()
        .await?;
    assert_eq!(status_and_code(admin).await?, (401, "INVALID_TOKEN".to_owned()));
    let member = app.login().await?;
    let admin = http
        .get(format!("{}/admin/v1/organisations", app.url))
        .bearer_auth(member.as_str())
        .send()
        .await?;
    assert_eq!(status_and_code(admin).await?, (403, "FORBIDDEN".to_owned()));
    let metrics = http.post(format!("{}/metrics", app.url)).send().await?;
    assert_eq!(
        status_and_code(metrics).await?,
        (405, "METHOD_NOT_ALLOWED".to_owned())
    );
    let elsewhere = http.get(format!("{}/no/such/path", app.url)).send().await?;
    assert_eq!(status_and_code(elsewhere).await?, (404, "NOT_FOUND".to_owned()));
    // A stopping node's readiness must still fail for the load balancer.
    let ready = format!("{}/health/ready", app.url);
    assert_eq!(http.get(&ready).send().await?.status(), 200);
    assert!(app.state.drain.start());
    assert_eq!(http.get(&ready).send().await?.status(), 503);
    assert_eq!(
        http.get(format!("{}/health/live", app.url))
            .send()
            .await?
            .status(),
        200
    );
    Ok(())
}

/// The SDK trusts `status.code`, not the HTTP status: an error sent with 200 is still an error, with its code,
/// message and `Retry-After`.
async fn the_client_reads_errors_sent_with_200(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| {
        s.http.error_status = ErrorStatus::Always200;
        s.http.rate_limit.per_second = 1;
        // Logins and refreshes count; validate and release do not.
        s.http.rate_limit.burst = 3;
    })
    .await?;
    let err = app.client.validate("not.a.token").await.err();
    assert_eq!(err.as_ref().and_then(|e| e.code()), Some(ErrorCode::InvalidToken));
    assert_eq!(err.as_ref().and_then(|e| e.http_status()), Some(200));
    assert!(
        err.as_ref()
            .and_then(|e| e.message())
            .is_some_and(|m| !m.is_empty())
    );
    let wrong = app.client.token(&Credentials::password(USER, "wrong", ORG)).await;
    assert_eq!(code(wrong), Some(ErrorCode::InvalidCredentials));
    let token = app.login().await?;
    app.client.release(token.as_str()).await?;
    assert_eq!(
        code(app.client.refresh(token.as_str()).await),
        Some(ErrorCode::SessionEnded)
    );
    // The bucket of three is spent.
    let err = app.login().await.err();
    assert_eq!(err.as_ref().and_then(|e| e.code()), Some(ErrorCode::RateLimited));
    assert_eq!(
        err.as_ref().and_then(|e| e.retry_after()),
        Some(Duration::from_secs(1))
    );
    Ok(())
}

/// The `oun` of `token`.
fn oun(token: &crm_auth_client::Token) -> String {
    token.claims().oun.clone()
}

async fn unit_claim_chooses_what_oun_holds(backend: Backend) -> anyhow::Result<()> {
    for claim in [UnitClaim::Name, UnitClaim::Code, UnitClaim::Id] {
        let app = TestApp::start_with(&backend, |s| s.token.unit_claim = claim).await?;
        let id_of = |unit: &str| {
            let conn = &mut *app.conn()?;
            let org = admin::find_organisation(conn, ORG)?;
            anyhow::Ok(admin::find_unit(conn, &org, unit)?.id)
        };
        // Bob's only unit has no code.
        app.add_user("bob", Some(PASSWORD), &["Other"])?;
        let (main, second, other) = match claim {
            UnitClaim::Name => ("Main".to_owned(), "Second".to_owned(), "Other".to_owned()),
            UnitClaim::Code => ("MN".to_owned(), "SC".to_owned(), "Other".to_owned()),
            UnitClaim::Id => (app.main_unit_id.clone(), id_of("Second")?, id_of("Other")?),
        };
        let token = app.login().await?;
        assert_eq!(oun(&token), main, "{claim:?}: password login");
        // Every token of the session carries the same claim, the one handed back within the reuse interval too.
        app.clock.advance(1);
        let refreshed = app.client.refresh(token.as_str()).await?;
        assert_eq!(oun(&refreshed), main, "{claim:?}: refresh");
        let again = app.client.refresh(token.as_str()).await?;
        assert_eq!(again.as_str(), refreshed.as_str(), "{claim:?}: reuse");
        // Validate names the unit whatever the claim holds.
        assert_eq!(app.client.validate(refreshed.as_str()).await?.unit, "Main");

        let keyed = app
            .client
            .token(&Credentials::api_key(&app.key).unit("Second"))
            .await?;
        assert_eq!(oun(&keyed), second, "{claim:?}: key login");
        app.clock.advance(1);
        assert_eq!(
            oun(&app.client.refresh(keyed.as_str()).await?),
            second,
            "{claim:?}: key refresh"
        );

        let bob = app
            .client
            .token(&Credentials::password("bob", PASSWORD, ORG))
            .await?;
        assert_eq!(oun(&bob), other, "{claim:?}: a unit without a code");
        app.clock.advance(1);
        assert_eq!(
            oun(&app.client.refresh(bob.as_str()).await?),
            other,
            "{claim:?}: its refresh"
        );
    }
    Ok(())
}

/// CRM.COM clients serialise whole classes: every optional field may be `null`, and members this service does
/// not know, of every JSON type, come along. The token endpoints ignore both.
async fn null_and_unknown_fields_are_ignored_on_the_token_endpoints(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let with_extras = |fields: Value| {
        let mut body = json!({
            "extraNull": null,
            "extraTrue": true,
            "extraFalse": false,
            "extraInteger": -7,
            "extraFloat": 1.5e3,
            "extraString": "x",
            "extraArray": [1, "a", null, {"b": []}],
            "extraObject": {"nested": {"deep": [true, null]}},
        });
        if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
            body.extend(fields);
        }
        body.to_string()
    };
    let ok = async |res: reqwest::Response| {
        let status = res.status().as_u16();
        let body: Value = serde_json::from_slice(&res.bytes().await?)?;
        assert_eq!((status, &body["status"]["code"]), (200, &json!("OK")), "{body}");
        anyhow::Ok(body["data"].clone())
    };
    let http = reqwest::Client::new();

    let body =
        with_extras(json!({"username": USER, "password": PASSWORD, "organisation": ORG, "unit": null}));
    let token = ok(post(&app.api("/authentication/token"), None, body).await?).await?;
    let token = token["token"].as_str().unwrap_or_default().to_owned();

    let key = STANDARD.encode(format!("{}:", app.key));
    let keyed = http
        .post(app.api("/authentication/web_api_key/token"))
        .header("authorization", format!("Basic {key}"))
        .header("content-type", "application/json")
        .body(with_extras(json!({"unit": null})))
        .send()
        .await?;
    ok(keyed).await?;

    // The token in the body, or in the header with a `null` token in the body.
    let refresh = app.api("/authentication/token/refresh");
    app.clock.advance(1);
    let data = ok(post(&refresh, None, with_extras(json!({"token": token}))).await?).await?;
    let token = data["token"].as_str().unwrap_or_default().to_owned();
    app.clock.advance(1);
    let data = ok(post(&refresh, Some(&token), with_extras(json!({"token": null}))).await?).await?;
    let token = data["token"].as_str().unwrap_or_default().to_owned();

    let validate = app.api("/authentication/token/validate");
    let data = ok(post(&validate, None, with_extras(json!({"token": token}))).await?).await?;
    assert_eq!(data["session"]["username"], USER);
    ok(post(&validate, Some(&token), with_extras(json!({"token": null}))).await?).await?;

    let release = app.api("/authentication/token/release");
    ok(post(&release, None, with_extras(json!({"token": token}))).await?).await?;
    ok(post(&release, Some(&token), with_extras(json!({"token": null}))).await?).await?;
    assert_eq!(
        code(app.client.validate(&token).await),
        Some(ErrorCode::SessionEnded)
    );
    Ok(())
}

/// An unknown value of either key stops start-up with one line naming the key, from a file or a variable,
/// before the database is touched.
#[test]
fn bad_legacy_settings_stop_start_up_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("c.toml");
    for (toml, key) in [
        ("[http]\nerror_status = \"sometimes\"", "http.error_status"),
        ("[http]\nerror_status = \"always200\"", "http.error_status"),
        ("[http]\nerror_status = 200", "http.error_status"),
        ("[token]\nunit_claim = \"label\"", "token.unit_claim"),
        ("[token]\nunit_claim = \"Name\"", "token.unit_claim"),
    ] {
        std::fs::write(&file, toml)?;
        let err = Settings::load_from(Some(&file), Vec::new())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(key), "{toml}: {err:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    for (toml, error_status, unit_claim) in [
        ("", ErrorStatus::Standard, UnitClaim::Name),
        (
            "[http]\nerror_status = \"always_200\"\n[token]\nunit_claim = \"code\"",
            ErrorStatus::Always200,
            UnitClaim::Code,
        ),
        (
            "[http]\nerror_status = \"standard\"\n[token]\nunit_claim = \"id\"",
            ErrorStatus::Standard,
            UnitClaim::Id,
        ),
    ] {
        std::fs::write(&file, toml)?;
        let settings = Settings::load_from(Some(&file), Vec::new())?;
        assert_eq!(
            (settings.http.error_status, settings.token.unit_claim),
            (error_status, unit_claim),
            "{toml}"
        );
    }

    // The example configuration documents both keys, at their defaults.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crm-auth.example.toml");
    let text = std::fs::read_to_string(&example)?;
    assert!(text.contains("\nerror_status = \"standard\"\n"));
    assert!(text.contains("\nunit_claim = \"name\"\n"));
    let settings = Settings::load_from(Some(&example), Vec::new())?;
    assert_eq!(
        (settings.http.error_status, settings.token.unit_claim),
        (ErrorStatus::Standard, UnitClaim::Name)
    );

    for (name, value, key) in [
        ("CRM_AUTH__HTTP__ERROR_STATUS", "never_200", "http.error_status"),
        ("CRM_AUTH__TOKEN__UNIT_CLAIM", "number", "token.unit_claim"),
    ] {
        let database = dir.path().join("db.sqlite");
        let mut command = crm_auth(dir.path(), &format!("sqlite://{}", database.display()));
        command.arg("serve").env(name, value);
        let out = run_with_stdin(command, "")?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success(), "{name}={value} started");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}={value}: {stderr}");
        assert!(stderr.contains(key), "{name}={value}: {stderr}");
        assert!(!database.exists(), "{name}={value}: the database was created");
    }
    Ok(())
}
