//! The extractor with an online configuration, against the real server on a loopback port: the server's
//! verdict, logouts included, is what the handler sees.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{rt, test};
use crm_auth_actix::AuthConfig;
use crm_auth_core::{DateFormat, ErrorCode, issue};
use serde_json::json;

use crate::common::{RealServer, claims_at, client_at, keyring};

/// A well-formed token for `username` signed by a key the server does not know.
fn foreign_token(username: &str) -> anyhow::Result<String> {
    Ok(issue(
        &keyring("k1", 0x5a)?,
        &claims_at(username, 1_700_000_000, 7200),
        DateFormat::Numeric,
    ))
}

#[actix_web::test]
async fn the_real_servers_verdict_decides() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let real = RealServer::start(crm_auth_server::settings::Settings::for_test(dir.path()))?;
    let client = real.client()?;
    let token = client
        .token(&crm_auth_client::Credentials::api_key(&real.key))
        .await?;
    let app = app!(AuthConfig::online(client.clone()));
    let ask = |token: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };

    let (status, _, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["username"], "alice");
    assert_eq!(body["unit"], "HQ");
    assert_eq!(body["session_id"], token.session_id());
    assert_eq!(body["method"], "web_api_key");
    assert_eq!(body["token"], token.as_str());

    // A logout at the server bites at once, although the token itself is still valid.
    client.release(token.as_str()).await?;
    let (status, _, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"]["code"], "SESSION_ENDED");
    assert_eq!(body["data"], json!({}));
    assert!(!body.to_string().contains(token.as_str()));

    // A token the server never issued is refused by the server too.
    let (status, _, body) = call!(app, ask(&foreign_token("alice")?));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"]["code"], "INVALID_TOKEN");
    Ok(())
}

#[actix_web::test]
async fn cached_answers_outlive_a_logout_for_the_cache_time_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let real = RealServer::start(crm_auth_server::settings::Settings::for_test(dir.path()))?;
    let client = real.client()?;
    let ttl = Duration::from_millis(1500);
    let cached = app!(AuthConfig::online(client.clone()).cache(ttl));
    let uncached = app!(AuthConfig::online(client.clone()));
    let ask = |token: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };
    let token = client
        .token(&crm_auth_client::Credentials::api_key(&real.key))
        .await?;
    let (status, _, body) = call!(cached, ask(token.as_str()));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["method"], "web_api_key");

    client.release(token.as_str()).await?;
    // Within the cache time the remembered answer stands; without a cache the logout bites at once.
    let (status, _, body) = call!(cached, ask(token.as_str()));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["username"], "alice");
    assert_eq!(call!(uncached, ask(token.as_str())).0, StatusCode::UNAUTHORIZED);
    // Past it the server is asked again.
    rt::time::sleep(ttl + Duration::from_millis(200)).await;
    let (status, _, body) = call!(cached, ask(token.as_str()));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"]["code"], "SESSION_ENDED");
    // Refusals are not remembered: a fresh token of a fresh session passes.
    let fresh = client
        .token(&crm_auth_client::Credentials::api_key(&real.key))
        .await?;
    assert_eq!(call!(cached, ask(fresh.as_str())).0, StatusCode::OK);
    Ok(())
}

#[actix_web::test]
async fn an_unreachable_server_is_unavailable_not_a_pass() -> anyhow::Result<()> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let app = app!(AuthConfig::online(client_at(SocketAddr::from((
        [127, 0, 0, 1],
        port
    )))?));
    let req = test::TestRequest::get()
        .uri("/whoami")
        .insert_header((
            header::AUTHORIZATION,
            format!("Bearer {}", foreign_token("alice")?),
        ))
        .to_request();
    let (status, _, body) = call!(app, req);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({
            "data": {},
            "status": {
                "code": "UNAVAILABLE",
                "description": "",
                "message": ErrorCode::Unavailable.default_message(),
            },
        })
    );
    Ok(())
}
