//! What the extractor's tests share: a test app whose handlers echo what the extractor found, a call that
//! returns status, content type and JSON body, and the keys and claims of the tokens they send.

use actix_web::HttpResponse;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use crm_auth_actix::{Authenticated, Keyring, SigningKey};
use crm_auth_core::Claims;
use serde_json::{Value, json};

/// The issuer every test token names.
pub const ISSUER: &str = "crm-auth";

/// The session id every test token carries.
pub const SESSION: &str = "EE63A82C4FEBE02FF34E90DD1EBA5ABE";

/// A keyring of one 32-byte key, every byte `byte`.
pub fn keyring(id: &str, byte: u8) -> anyhow::Result<Keyring> {
    Ok(Keyring::new(vec![SigningKey::new(id, vec![byte; 32])?])?)
}

/// Claims for `username` in Acme / HQ, issued at `iat`, valid for `ttl` seconds.
pub fn claims_at(username: &str, iat: i64, ttl: i64) -> Claims {
    Claims::new(SESSION, username, "Acme", "HQ", iat, iat + ttl).issued_by(ISSUER)
}

/// Answers with the session the extractor found.
pub async fn whoami(user: Authenticated) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "session_id": user.session_id,
        "username": user.username,
        "organisation": user.organisation,
        "unit": user.unit,
        "expires_at": user.expires_at,
        "method": user.method.map(|method| method.as_str()),
        "token": user.token(),
    }))
}

/// Answers with the user and the body, read as bytes after the extractor looked for a token in it.
pub async fn echo(user: Authenticated, body: Bytes) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "username": user.username,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// Answers with the user and the body, read as JSON after the extractor looked for a token in it.
pub async fn echo_json(user: Authenticated, body: web::Json<Value>) -> HttpResponse {
    HttpResponse::Ok().json(json!({"username": user.username, "body": body.into_inner()}))
}

/// An app with `/whoami` (GET, POST), `/echo` (the body as bytes) and `/json` (the body as JSON), the
/// configuration registered as `web::Data`.
macro_rules! app {
    ($config:expr) => {
        actix_web::test::init_service(
            actix_web::App::new()
                .app_data(actix_web::web::Data::new($config))
                .route("/whoami", actix_web::web::get().to($crate::common::whoami))
                .route("/whoami", actix_web::web::post().to($crate::common::whoami))
                .route("/echo", actix_web::web::post().to($crate::common::echo))
                .route("/json", actix_web::web::post().to($crate::common::echo_json)),
        )
        .await
    };
}

/// Status, `Content-Type` and JSON body of a response.
macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = actix_web::test::call_service(&$app, $req).await;
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = actix_web::test::read_body(resp).await;
        let json: serde_json::Value = serde_json::from_slice(&body)?;
        (status, content_type, json)
    }};
}

/// The status and the `WWW-Authenticate` header of a response (empty when absent).
macro_rules! challenge {
    ($app:expr, $req:expr) => {{
        let resp = actix_web::test::call_service(&$app, $req).await;
        let value = resp
            .headers()
            .get(actix_web::http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (resp.status(), value)
    }};
}

/// An `Authorization: Bearer` header carrying `token`.
pub fn bearer(token: &str) -> (header::HeaderName, String) {
    (header::AUTHORIZATION, format!("Bearer {token}"))
}
