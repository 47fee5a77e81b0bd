//! What the extractor's tests share: a test app whose handlers echo what the extractor found, a call that
//! returns status, content type and JSON body, and the keys and claims of the tokens they send.

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, rt};
use crm_auth_actix::{Authenticated, Keyring, SigningKey};
use crm_auth_core::Claims;
use crm_auth_server::service::admin::{self, Actor};
use crm_auth_server::settings::Settings;
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

/// A client of the server at `addr` that does not retry.
pub fn client_at(addr: SocketAddr) -> anyhow::Result<crm_auth_client::Client> {
    Ok(crm_auth_client::Client::builder()
        .base_url(format!("http://{addr}"))
        .retries(0)
        .build()?)
}

/// A real crm-auth server with `settings` on a free port, on a thread of its own, holding organisation `Acme`,
/// unit `HQ` and user `alice` with one Web API key; stopped when dropped.
pub struct RealServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Alice's Web API key.
    pub key: String,
    /// Stops it.
    handle: ServerHandle,
}

impl RealServer {
    pub fn start(settings: Settings) -> anyhow::Result<RealServer> {
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
            admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), 1)?
                .1
                .expose()
                .to_owned()
        };
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = crm_auth_server::http::serve(listener, state)?;
        let handle = server.handle();
        std::thread::spawn(move || rt::System::new().block_on(server));
        Ok(RealServer { addr, key, handle })
    }

    /// A client of it that does not retry.
    pub fn client(&self) -> anyhow::Result<crm_auth_client::Client> {
        client_at(self.addr)
    }

    /// Stops it and waits until it has stopped.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }

    /// A token of a key login as alice.
    pub async fn token(&self) -> anyhow::Result<crm_auth_client::Token> {
        Ok(self
            .client()?
            .token(&crm_auth_client::Credentials::api_key(&self.key))
            .await?)
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        // `stop` sends its command when called; the future it returns only waits for the workers to end.
        drop(self.handle.stop(false));
    }
}
