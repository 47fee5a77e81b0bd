//! Typed Rust SDK for the crm-auth service: get a token with a Web API key or a username and password, refresh,
//! release and validate it, with one [`Error`] type that carries the contract's [`ErrorCode`].
//!
//! A [`Client`] sends one request per method call (plus bounded retries where repeating is safe, see
//! [`ClientBuilder::retries`]); a [`Session`] keeps a token fresh for a long-running program. Tokens come back as
//! [`Token`]s, whose claims are decoded (without verification) for convenience. Tokens and keys travel in the
//! `Authorization` header, never in a URL, and no `Debug` or `Display` of this crate prints a token, key or
//! password. The feature `blocking` adds synchronous wrappers (see [Features](#features)).
//!
//! # Log in with a Web API key
//!
//! ```no_run
//! use crm_auth_client::Client;
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let token = client.token_with_api_key("EE63A82C4FEBE02FF34E90DD1EBA5ABE", None).await?;
//! println!("session {} expires at {}", token.session_id(), token.expires_at());
//! // Send token.as_str() with the calls that need it.
//! # Ok(())
//! # }
//! ```
//!
//! # Log in with a username and password
//!
//! ```no_run
//! use crm_auth_client::{Client, ErrorCode};
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! match client.token_with_password("admin", "secret", "demo", Some("HQ")).await {
//!     Ok(token) => println!("logged into unit {}", token.claims().oun),
//!     Err(err) if err.code() == Some(ErrorCode::TooManyAttempts) => {
//!         println!("locked out, retry in {:?}", err.retry_after());
//!     }
//!     // `message()` is a sentence fit to show an end user.
//!     Err(err) => println!("login failed: {}", err.message().unwrap_or("the service did not answer")),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Keep a token fresh with a [`Session`]
//!
//! ```no_run
//! use std::time::Duration;
//! use crm_auth_client::{Client, Session};
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let session = Session::with_password(client, "admin", "secret", "demo", None)
//!     .margin(Duration::from_secs(120));
//! for _ in 0..3 {
//!     // Refreshed (or logged in again) only when less than two minutes are left; clones of the session,
//!     // in any number of tasks, share the token and one refresh on the wire.
//!     let token = session.token().await?;
//!     println!("using session {}", token.session_id());
//! }
//! session.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Validate a token (downstream services)
//!
//! ```no_run
//! use crm_auth_client::Client;
//!
//! # async fn run(presented: &str) -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! match client.validate(presented).await {
//!     Ok(session) => println!("{} of {} in {}", session.username, session.organisation, session.unit),
//!     // INVALID_TOKEN, TOKEN_EXPIRED or SESSION_ENDED: the caller must log in again.
//!     Err(err) if err.is_session_over() => println!("refused: {err}"),
//!     Err(err) => return Err(err),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Administer organisations, users and keys
//!
//! [`Client::admin`] turns an `admin`'s or `operator`'s token into an [`Admin`] handle on the administration
//! API (`/admin/v1`): organisations, units, users, Web API keys, sessions, the audit and the import, with lists
//! as pages or as streams of every item. See the [`admin`] module.
//!
//! ```no_run
//! use crm_auth_client::Client;
//! use crm_auth_client::admin::{NewKey, UserChange};
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let token = client.token_with_password("admin", "secret", "demo", None).await?;
//! let admin = client.admin(token.as_str())?;
//! let key = NewKey { username: "billing".into(), name: None, expires_at: None };
//! let created = admin.create_key("demo", &key).await?;
//! println!("the new key, shown this once: {}", created.key);
//! let change = UserChange { disabled: Some(true), ..UserChange::default() };
//! admin.update_user("demo", "mallory", &change).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `blocking`: the module `blocking`, with a `Client`, a `Session` and an `Admin` offering the same methods
//!   synchronously (lists as iterators), each client running a private single-threaded runtime. Not for use inside an async runtime.

pub mod admin;
mod client;
mod error;
mod jwks;
mod retry;
mod session;
mod token;

#[cfg(feature = "blocking")]
pub mod blocking;

#[cfg(test)]
mod testserver;

pub use admin::Admin;
pub use client::{
    Client, ClientBuilder, DEFAULT_BASE_PATH, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RETRIES, DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
};
pub use crm_auth_core::{AuthMethod, Claims, ErrorCode, SessionInfo, Status, TokenError};
pub use error::Error;
pub use jwks::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_AGE, DEFAULT_REFETCH_INTERVAL, JwksError, JwksVerifier,
    JwksVerifierBuilder,
};
pub use session::{Clock, DEFAULT_MARGIN, Session};
pub use token::Token;
