//! An actix-web extractor that protects routes with crm-auth tokens.
//!
//! Take [`Authenticated`] as a handler argument and the route accepts only requests with a valid token; the
//! handler learns the session's user, organisation and unit. Every other request is answered with the
//! contract's envelope, `{"data": {}, "status": {"code": "INVALID_TOKEN", ...}}`, without the handler running
//! (see [`AuthError`]).
//!
//! How tokens are checked is set once per application with an [`AuthConfig`] registered as app data, in one
//! line with [`configure`]:
//!
//! - [`AuthConfig::offline`]: signature, `alg`, `exp`, `iat` and `iss`, checked locally with a [`Verifier`]
//!   holding the server's signing keys. Fast and independent of the server, but a released session's tokens
//!   pass until their `exp` (two hours by default).
//! - `AuthConfig::online` (feature `validate`): the server's validate endpoint is asked on every request, so a
//!   logout bites at once, at the cost of a round trip (`.cache(ttl)` saves repeated ones, at the cost of
//!   accepting a logged-out session for up to `ttl`).
//! - `AuthConfig::jwks` (feature `jwks`): as offline, against the EdDSA/ES256 public keys the server publishes
//!   at `/.well-known/jwks.json`, fetched and cached; no secret is shared.
//!
//! # Protect a route
//!
//! With the server's HS256 key (for EdDSA and ES256 keys, `AuthConfig::jwks` needs no key file):
//!
//! ```rust
//! use actix_web::{App, HttpServer, Responder, get};
//! use crm_auth_actix::{AuthConfig, Authenticated, KeyFileError, Keyring, Verifier};
//!
//! #[get("/whoami")]
//! async fn whoami(user: Authenticated) -> impl Responder {
//!     format!("{} of {} in {}", user.username, user.organisation, user.unit)
//! }
//!
//! /// Tokens checked offline with the server's HS256 key, read from a copy of its key file: the generated
//! /// `{data_dir}/signing-key` has the key id `generated`, a `token.keys` entry the `id` it is given there.
//! fn auth_config(key_id: &str, key_file: &str) -> Result<AuthConfig, KeyFileError> {
//!     let keyring = Keyring::from_key_file(key_id, key_file)?;
//!     let verifier = Verifier::new(keyring, "crm-auth").with_leeway(30);
//!     Ok(AuthConfig::offline(verifier))
//! }
//!
//! /// The service, listening at `addr`; `main` awaits
//! /// `server(auth_config("generated", "signing-key")?, "127.0.0.1:8081")?`.
//! fn server(auth: AuthConfig, addr: &str) -> std::io::Result<actix_web::dev::Server> {
//!     let app = move || {
//!         App::new()
//!             .configure(crm_auth_actix::configure(auth.clone()))
//!             .service(whoami)
//!     };
//!     Ok(HttpServer::new(app).bind(addr)?.run())
//! }
//! ```
//!
//! # Where the token is read
//!
//! As the server reads it for refresh, release and validate: `Authorization: Bearer <token>`, then the JSON
//! body's `token` member (bodies of at most [`BODY_TOKEN_LIMIT`] bytes), then the query parameter `token`.
//! Reading the body leaves it whole for the extractors listed after `Authenticated` and for the handler; list
//! `Authenticated` before any body extractor, since one listed earlier takes the body first.
//!
//! # Features
//!
//! - `validate`: `AuthConfig::online`, on `crm-auth-client` (reqwest), whose `Client`, `ClientBuilder` and
//!   `Error` (as `ClientError`) are re-exported.
//! - `jwks`: `AuthConfig::jwks`, on `crm-auth-client`'s `JwksVerifier` (re-exported, with `ClientError`).

mod config;
mod error;
mod extractor;
mod lookup;

pub use config::{AuthConfig, configure};
pub use crm_auth_core::{AuthMethod, ErrorCode, KeyFileError, Keyring, SigningKey, TokenError, Verifier};
pub use error::AuthError;
pub use extractor::Authenticated;
pub use lookup::BODY_TOKEN_LIMIT;

#[cfg(any(feature = "validate", feature = "jwks"))]
pub use crm_auth_client::Error as ClientError;
#[cfg(feature = "validate")]
pub use crm_auth_client::{Client, ClientBuilder};
#[cfg(feature = "jwks")]
pub use crm_auth_client::{JwksError, JwksVerifier};
