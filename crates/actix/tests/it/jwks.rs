//! The extractor verifying through the server's JWKS: tokens of the real server's EdDSA key pass without a
//! request per token, others are refused, and a JWKS that cannot be fetched is `UNAVAILABLE`, never a pass.

use std::net::TcpListener;

use actix_web::http::{StatusCode, header};
use actix_web::{rt, test};
use crm_auth_actix::AuthConfig;
use crm_auth_core::{Algorithm, DateFormat, SigningKey, issue, routes};
use crm_auth_server::service::admin::{self, Actor};
use crm_auth_server::settings::{KeySettings, Settings};

use crate::common::{claims_at, keyring};

#[actix_web::test]
async fn tokens_are_verified_against_the_published_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pem = dir.path().join("ed.pem");
    std::fs::write(&pem, SigningKey::generate_pkcs8_pem(Algorithm::EdDsa)?)?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys = vec![KeySettings::private_key("ed", &pem)];
    let state = crm_auth_server::state::AppState::from_settings(settings)?;
    let key = {
        let conn = &mut *state.store.pool().get()?;
        let org = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
        admin::add_unit(conn, &Actor::Cli, &org, "HQ", None, 1)?;
        let new = admin::NewUser {
            username: "alice",
            units: &["HQ".into()],
            ..admin::NewUser::default()
        };
        let user = admin::add_user(conn, &Actor::Cli, &org, new, 1)?;
        admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), 1)?.1
    };
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = crm_auth_server::http::serve(listener, state)?;
    let handle = server.handle();
    std::thread::spawn(move || rt::System::new().block_on(server));
    let client = crm_auth_client::Client::builder()
        .base_url(format!("http://{addr}"))
        .build()?;
    let token = client
        .token(&crm_auth_client::Credentials::api_key(key.expose()))
        .await?;
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
    handle.stop(true).await;

    // Nothing answers at the JWKS URL and nothing was fetched before: unavailable, not a pass.
    let app = app!(AuthConfig::jwks(format!("http://{addr}{}", routes::JWKS))?);
    let (status, _, body) = call!(app, ask(token.as_str()));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"]["code"], "UNAVAILABLE");
    Ok(())
}
