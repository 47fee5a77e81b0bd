//! Synchronous wrappers of [`crate::Client`] and [`crate::Session`], for programs without an async runtime
//! (feature `blocking`).
//!
//! Each blocking client owns a private single-threaded tokio runtime, shared by its clones and by the sessions
//! and [`Admin`] handles made from it, and runs every call to completion on it. The administration API's lists
//! come as [`Items`], an `Iterator` that fetches page after page. Calls may come from many threads at once.
//!
//! These types must not be used from inside an async runtime (a `#[tokio::main]` function or a task): a call
//! there would block the runtime's thread. Such a call fails with [`Error::InsideAsyncRuntime`] instead of
//! blocking; use [`crate::Client`] there.
//!
//! ```no_run
//! use crm_auth_client::Credentials;
//! use crm_auth_client::blocking::{Client, Session};
//!
//! # fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let token = client.token(&Credentials::api_key("EE63A82C4FEBE02FF34E90DD1EBA5ABE"))?;
//! let session = client.validate(token.as_str())?;
//! println!("logged in as {} in {}", session.username, session.organisation);
//!
//! let session = Session::new(client, Credentials::password("admin", "secret", "demo"));
//! let token = session.token()?;
//! # Ok(())
//! # }
//! ```

mod admin;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crm_auth_core::SessionInfo;

use crate::client::with_unit;
use crate::session::Clock;
use crate::{Credentials, Error, Token};

pub use admin::{Admin, Items};

/// Owns the runtime and shuts it down without waiting, so that dropping the last client never blocks, not even
/// inside an async context.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> Result<Runtime, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime { source: Arc::new(e) })?;
        Ok(Runtime(Some(runtime)))
    }

    fn block_on<T>(&self, future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::InsideAsyncRuntime);
        }
        match &self.0 {
            Some(runtime) => runtime.block_on(future),
            None => Err(Error::invalid_argument(
                "the blocking client's runtime has shut down",
            )),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Configures a blocking [`Client`]: the same settings as [`crate::ClientBuilder`].
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ClientBuilder {
    inner: crate::ClientBuilder,
}

impl ClientBuilder {
    /// See [`crate::ClientBuilder::base_url`].
    pub fn base_url(self, url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.base_url(url),
        }
    }

    /// See [`crate::ClientBuilder::base_path`].
    pub fn base_path(self, path: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.base_path(path),
        }
    }

    /// See [`crate::ClientBuilder::timeout`].
    pub fn timeout(self, timeout: Duration) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::connect_timeout`].
    pub fn connect_timeout(self, timeout: Duration) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.connect_timeout(timeout),
        }
    }

    /// See [`crate::ClientBuilder::user_agent`].
    pub fn user_agent(self, user_agent: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.user_agent(user_agent),
        }
    }

    /// See [`crate::ClientBuilder::http_client`]. The reqwest client should not be in use on another runtime:
    /// its pooled connections belong to the runtime they were opened on.
    pub fn http_client(self, client: reqwest::Client) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.http_client(client),
        }
    }

    /// See [`crate::ClientBuilder::retries`].
    pub fn retries(self, retries: u32) -> ClientBuilder {
        ClientBuilder {
            inner: self.inner.retries(retries),
        }
    }

    /// Builds the client and starts its runtime.
    pub fn build(self) -> Result<Client, Error> {
        Client::new(self.inner.build()?)
    }
}

/// A blocking client of the crm-auth service: the methods of [`crate::Client`], run to completion.
///
/// Cloning is cheap; clones share the runtime and the connection pool.
#[derive(Clone)]
pub struct Client {
    inner: crate::Client,
    runtime: Arc<Runtime>,
}

impl Client {
    /// A builder with the defaults of [`crate::Client::builder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Wraps an async client, starting a runtime for it.
    pub fn new(client: crate::Client) -> Result<Client, Error> {
        Ok(Client {
            inner: client,
            runtime: Arc::new(Runtime::new()?),
        })
    }

    /// See [`crate::Client::token`].
    pub fn token(&self, credentials: &Credentials) -> Result<Token, Error> {
        self.runtime.block_on(self.inner.token(credentials))
    }

    /// Logs in with a username and password in an organisation; `unit` is a unit id, name or code, `None`
    /// the user's default unit.
    #[deprecated(note = "use `Client::token(&Credentials::password(username, password, organisation))`")]
    pub fn token_with_password(
        &self,
        username: &str,
        password: &str,
        organisation: &str,
        unit: Option<&str>,
    ) -> Result<Token, Error> {
        self.token(&with_unit(
            Credentials::password(username, password, organisation),
            unit,
        ))
    }

    /// Logs in with a Web API key; `unit` is a unit id, name or code, `None` the user's default unit.
    #[deprecated(note = "use `Client::token(&Credentials::api_key(key))`")]
    pub fn token_with_api_key(&self, key: &str, unit: Option<&str>) -> Result<Token, Error> {
        self.token(&with_unit(Credentials::api_key(key), unit))
    }

    /// See [`crate::Client::refresh`].
    pub fn refresh(&self, token: &str) -> Result<Token, Error> {
        self.runtime.block_on(self.inner.refresh(token))
    }

    /// See [`crate::Client::release`].
    pub fn release(&self, token: &str) -> Result<(), Error> {
        self.runtime.block_on(self.inner.release(token))
    }

    /// See [`crate::Client::validate`].
    pub fn validate(&self, token: &str) -> Result<SessionInfo, Error> {
        self.runtime.block_on(self.inner.validate(token))
    }

    /// See [`crate::Client::health`].
    pub fn health(&self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.health())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// A blocking [`crate::Session`]: keeps one session's token fresh for any number of threads.
///
/// Cloning is cheap and clones share the token. `Debug` shows who logs in, never the password or key.
#[derive(Clone)]
pub struct Session {
    inner: crate::Session,
    runtime: Arc<Runtime>,
}

impl Session {
    /// See [`crate::Session::new`].
    pub fn new(client: Client, credentials: Credentials) -> Session {
        Session {
            inner: crate::Session::new(client.inner, credentials),
            runtime: client.runtime,
        }
    }

    /// A session that logs in with a username and password in an organisation; `unit` is a unit id, name or
    /// code, `None` the user's default unit.
    #[deprecated(
        note = "use `Session::new(client, Credentials::password(username, password, organisation))`"
    )]
    pub fn with_password(
        client: Client,
        username: impl Into<String>,
        password: impl Into<String>,
        organisation: impl Into<String>,
        unit: Option<String>,
    ) -> Session {
        let credentials = Credentials::password(username, password, organisation);
        Session::new(client, with_unit(credentials, unit.as_deref()))
    }

    /// A session that logs in with a Web API key; `unit` is a unit id, name or code, `None` the user's
    /// default unit.
    #[deprecated(note = "use `Session::new(client, Credentials::api_key(key))`")]
    pub fn with_api_key(client: Client, key: impl Into<String>, unit: Option<String>) -> Session {
        Session::new(client, with_unit(Credentials::api_key(key), unit.as_deref()))
    }

    /// See [`crate::Session::margin`].
    #[must_use]
    pub fn margin(self, margin: Duration) -> Session {
        Session {
            inner: self.inner.margin(margin),
            runtime: self.runtime,
        }
    }

    /// See [`crate::Session::clock`].
    #[must_use]
    pub fn clock(self, clock: Clock) -> Session {
        Session {
            inner: self.inner.clock(clock),
            runtime: self.runtime,
        }
    }

    /// See [`crate::Session::token`].
    pub fn token(&self) -> Result<Token, Error> {
        self.runtime.block_on(self.inner.token())
    }

    /// See [`crate::Session::invalidate`]. Inside an async runtime it fails with
    /// [`Error::InsideAsyncRuntime`], as every call does.
    pub fn invalidate(&self) -> Result<(), Error> {
        self.runtime.block_on(async {
            self.inner.invalidate().await;
            Ok(())
        })
    }

    /// See [`crate::Session::release`].
    pub fn release(&self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.release())
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{Reply, TestServer, mint};

    #[test]
    fn blocking_calls_work_from_many_threads() -> anyhow::Result<()> {
        let token = mint("EE63A82C4FEBE02FF34E90DD1EBA5ABE", 1000, 8200)?;
        let server = TestServer::start(vec![Reply::token(&token)])?;
        let client = Client::builder().base_url(server.url()).build()?;
        let session = Session::new(client.clone(), Credentials::api_key("K")).clock(Arc::new(|| 1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let session = session.clone();
                std::thread::spawn(move || session.token().map(|t| t.as_str().to_owned()))
            })
            .collect();
        for thread in threads {
            let got = thread.join().map_err(|_| anyhow::anyhow!("thread panicked"))??;
            assert_eq!(got, token);
        }
        assert_eq!(server.requests().len(), 1);
        assert_eq!(client.refresh(&token)?.as_str(), token);
        Ok(())
    }

    #[tokio::test]
    async fn inside_a_runtime_calls_fail_instead_of_blocking() -> anyhow::Result<()> {
        let client = Client::builder().base_url("http://127.0.0.1:9").build()?;
        assert!(matches!(client.health(), Err(Error::InsideAsyncRuntime)));
        let session = Session::new(client.clone(), Credentials::api_key("K"));
        assert!(matches!(session.token(), Err(Error::InsideAsyncRuntime)));
        assert!(matches!(session.invalidate(), Err(Error::InsideAsyncRuntime)));
        // Dropping the last clone inside the runtime must not panic either.
        drop(client);
        Ok(())
    }

    #[test]
    fn debug_hides_credentials() -> anyhow::Result<()> {
        let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
        let session = Session::new(client, Credentials::password("alice", "hunter2-secret", "Acme"));
        let debug = format!("{session:?}");
        assert!(
            !debug.contains("hunter2-secret") && debug.contains("alice"),
            "{debug}"
        );
        Ok(())
    }
}
