//! The extractor verifying through the server's JWKS: tokens of the real server's EdDSA key pass without a
//! request per token, others are refused, and a JWKS that cannot be fetched is `UNAVAILABLE`, never a pass.

use actix_web::http::{StatusCode, header};
use actix_web::test;
use crm_auth_actix::AuthConfig;
use crm_auth_core::{Algorithm, DateFormat, SigningKey, issue, routes};
use crm_auth_server::settings::{KeySettings, Settings};

use crate::common::{RealServer, claims_at, keyring};

#[actix_web::test]
async fn tokens_are_verified_against_the_published_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pem = dir.path().join("ed.pem");
    std::fs::write(&pem, SigningKey::generate_pkcs8_pem(Algorithm::EdDsa)?)?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys = vec![KeySettings::private_key("ed", &pem)];
    let real = RealServer::start(settings)?;
    let addr = real.addr;
    let token = real.token().await?;
    let app = app!(AuthConfig::jwks(format!("http://{addr}{}", routes::JWKS))?);
    let ask = |token: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
            .to_request()
    };

    let (status, _, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["username"], "alice");
    // An HS256 token under a secret the JWKS never holds.
    let foreign = issue(
        &keyring("ed", 0x5a)?,
        &claims_at("alice", 1_700_000_000, 7200),
        DateFormat::Numeric,
    );
    let (status, _, body) = call!(app, ask(&foreign));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["status"]["code"], "INVALID_TOKEN");
    real.stop().await;

    // Nothing answers at the JWKS URL and nothing was fetched before: unavailable, not a pass.
    let app = app!(AuthConfig::jwks(format!("http://{addr}{}", routes::JWKS))?);
    let (status, _, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"]["code"], "UNAVAILABLE");
    Ok(())
}
