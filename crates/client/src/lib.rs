//! Typed Rust SDK for the crm-auth service: get a token with a Web API key or a username and password, refresh,
//! release and validate it, with one [`Error`] type that carries the contract's [`ErrorCode`].
//!
//! A [`Client`] sends one request per method call (plus bounded retries where repeating is safe, see
//! [`ClientBuilder::retries`]); a [`Session`] keeps a token fresh for a long-running program. Tokens come back as
//! [`Token`]s, whose claims are decoded (without verification) for convenience. Tokens and keys travel in the
//! `Authorization` header, never in a URL, and no `Debug` or `Display` of this crate prints a token, key or
//! password. The feature `blocking` adds synchronous wrappers (see [Features](#features)).
//!
//! # Log in
//!
//! [`Credentials`] say who logs in: [`Credentials::api_key`] for a service, [`Credentials::password`] for a
//! person in an organisation, either with [`Credentials::unit`] to choose a unit. [`Client::token`] logs in
//! once; the [`Token`] tells who it is for and for how long. (The server's tests run these examples.)
//!
//! ```no_run
#![doc = include_str!("doc/login.rs")]
//! ```
//!
//! A refused login says why, in terms fit for an end user:
//!
//! ```no_run
//! use crm_auth_client::{Client, Credentials, ErrorCode};
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! match client.token(&Credentials::password("admin", "secret", "demo")).await {
//!     Ok(token) => println!("logged into unit {}", token.unit()),
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
//! use crm_auth_client::{Client, Credentials, Session};
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let session = Session::new(client, Credentials::password("admin", "secret", "demo"))
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
//! A session learns that the server ended it (an operator revoked it, the user was disabled) when it next
//! refreshes. A caller told `SESSION_ENDED` by a service sooner calls [`Session::invalidate`], and the next
//! token is a new session's:
//!
//! ```no_run
#![doc = include_str!("doc/session.rs")]
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
//! use crm_auth_client::{Client, Credentials};
//! use crm_auth_client::admin::{NewKey, UserChange};
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let token = client.token(&Credentials::password("admin", "secret", "demo")).await?;
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
//!   synchronously (lists as iterators), each client running a private single-threaded runtime. Not for use
//!   inside an async runtime: a call there fails with `Error::InsideAsyncRuntime`.
//!
//! # Dependencies
//!
//! The client is built on reqwest 0.12, re-exported as [`reqwest`] for [`ClientBuilder::http_client`], which
//! takes a `reqwest::Client` of that version. Nothing else of this crate's API names a reqwest type.

pub mod admin;
mod client;
mod credentials;
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
pub use credentials::Credentials;
pub use crm_auth_core::{AuthMethod, Claims, ErrorCode, SessionInfo, Status, TokenError};
pub use error::{Error, TransportKind};
pub use jwks::{
    DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_AGE, DEFAULT_REFETCH_INTERVAL, JwksError, JwksVerifier,
    JwksVerifierBuilder,
};
/// The reqwest this crate is built on (0.12), for [`ClientBuilder::http_client`].
pub use reqwest;
pub use session::{Clock, DEFAULT_MARGIN, Session};
pub use token::Token;
