//! Offline verification against the server's published keys: [`JwksVerifier`] fetches
//! `GET /.well-known/jwks.json`, keeps it, and checks tokens with [`crm_auth_core::Verifier`] without a request
//! per token.
//!
//! The set is fetched on first use, again once it is older than its maximum age (300 s, the server's
//! `Cache-Control`), and again when a token names a key it does not hold, at most once per refetch interval
//! (30 s) whatever the tokens presented: a stream of forged `kid`s costs the server one request per interval.
//! A fetch that fails or times out keeps the last good set, so verification goes on while the server is down;
//! it is tried again at most once per refetch interval (or maximum age, when shorter).
//!
//! A key staged on the server with `not_before` is in the JWKS before it signs, so a verifier whose set is
//! renewed by age within the staging time never meets a token of an unknown key during a rotation.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crm_auth_core::{Claims, ErrorCode, Jwks, TokenError, Verifier, header_kid, routes};

/// How often at most a token naming an unknown key makes the set be fetched again.
pub const DEFAULT_REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// How long a fetched set is used before it is fetched again (the server sends `max-age=300`).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);

/// How long one fetch may take.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The token failed verification against the keys held.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No key set was ever fetched, so nothing can be verified; the text says why the last fetch failed.
    #[error("no signing keys could be fetched: {0}")]
    Unavailable(String),
}

impl JwksError {
    /// The envelope code a service would answer: the token's (`INVALID_TOKEN`, `TOKEN_EXPIRED`) or
    /// `UNAVAILABLE`.
    pub fn code(&self) -> ErrorCode {
        match self {
            JwksError::Token(err) => err.code(),
            JwksError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

/// Builds a [`JwksVerifier`]; see [`JwksVerifier::builder`].
#[derive(Debug)]
pub struct JwksVerifierBuilder {
    url: String,
    issuer: String,
    leeway: u64,
    accept_legacy: bool,
    fetch_timeout: Duration,
    refetch_interval: Duration,
    max_age: Duration,
    http: Option<reqwest::Client>,
}

impl JwksVerifierBuilder {
    /// The `iss` tokens must carry: the server's `token.issuer` (default `crm-auth`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> JwksVerifierBuilder {
        self.issuer = issuer.into();
        self
    }

    /// Seconds of clock skew tolerated on `exp` and `iat`; as a rule the server's `token.leeway_seconds`.
    pub fn leeway(mut self, seconds: u64) -> JwksVerifierBuilder {
        self.leeway = seconds;
        self
    }

    /// Whether tokens without `iss` pass.
    pub fn accept_legacy(mut self, accept: bool) -> JwksVerifierBuilder {
        self.accept_legacy = accept;
        self
    }

    /// How long one fetch may take (default 5 s).
    pub fn fetch_timeout(mut self, timeout: Duration) -> JwksVerifierBuilder {
        self.fetch_timeout = timeout;
        self
    }

    /// The shortest time between two fetches caused by unknown keys (default 30 s).
    pub fn refetch_interval(mut self, interval: Duration) -> JwksVerifierBuilder {
        self.refetch_interval = interval;
        self
    }

    /// How long a fetched set is used before it is fetched again (default 300 s).
    pub fn max_age(mut self, max_age: Duration) -> JwksVerifierBuilder {
        self.max_age = max_age;
        self
    }

    /// Fetches through this reqwest client (proxies, TLS roots) instead of a default one.
    pub fn http_client(mut self, client: reqwest::Client) -> JwksVerifierBuilder {
        self.http = Some(client);
        self
    }

    /// The verifier; nothing is fetched until the first token.
    pub fn build(self) -> Result<JwksVerifier, crate::Error> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| crate::Error::invalid_argument(format!("bad JWKS url: {e}")))?;
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| {
                    crate::Error::invalid_argument(format!("could not build the http client: {e}"))
                })?,
        };
        Ok(JwksVerifier {
            inner: Arc::new(Inner {
                http,
                url,
                issuer: self.issuer,
                leeway: self.leeway,
                accept_legacy: self.accept_legacy,
                fetch_timeout: self.fetch_timeout,
                refetch_interval: self.refetch_interval,
                max_age: self.max_age,
                cached: RwLock::new(None),
                fetching: tokio::sync::Mutex::new(Fetches::default()),
            }),
        })
    }
}

/// Verifies tokens offline against a JWKS it fetches and caches. Cheap to clone; clones share the cache.
///
/// ```no_run
/// use crm_auth_client::JwksVerifier;
///
/// # async fn run(presented: &str) -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = JwksVerifier::builder("http://127.0.0.1:8080/.well-known/jwks.json")
///     .issuer("crm-auth")
///     .leeway(30)
///     .build()?;
/// let claims = verifier.verify(presented).await?;
/// println!("{} of {}", claims.usr, claims.org);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct JwksVerifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    url: reqwest::Url,
    issuer: String,
    leeway: u64,
    accept_legacy: bool,
    fetch_timeout: Duration,
    refetch_interval: Duration,
    max_age: Duration,
    cached: RwLock<Option<Cached>>,
    /// Held while fetching, so that concurrent callers share one fetch.
    fetching: tokio::sync::Mutex<Fetches>,
}

/// Why the set is fetched again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refetch {
    /// None is held, or it is older than the maximum age.
    Stale,
    /// A token names a key the set does not hold.
    UnknownKey,
}

#[derive(Clone, Debug)]
struct Cached {
    verifier: Arc<Verifier>,
    fetched_at: Instant,
}

#[derive(Debug, Default)]
struct Fetches {
    /// When the last fetch started, successful or not.
    last: Option<Instant>,
    /// Why the last fetch failed, if it did.
    error: Option<String>,
    /// How many fetches were made.
    count: u64,
}

impl JwksVerifier {
    /// A builder for the JWKS at `url`, for example `https://auth.example.com/.well-known/jwks.json`.
    pub fn builder(url: impl Into<String>) -> JwksVerifierBuilder {
        JwksVerifierBuilder {
            url: url.into(),
            issuer: "crm-auth".to_owned(),
            leeway: 0,
            accept_legacy: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            refetch_interval: DEFAULT_REFETCH_INTERVAL,
            max_age: DEFAULT_MAX_AGE,
            http: None,
        }
    }

    /// The JWKS of a server at `base_url` (its root, not the API's base path).
    pub fn for_server(base_url: &str) -> JwksVerifierBuilder {
        JwksVerifier::builder(format!("{}{}", base_url.trim_end_matches('/'), routes::JWKS))
    }

    /// Verifies `token` at the system clock's time.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwksError> {
        self.verify_at(token, system_now()).await
    }

    /// Verifies `token` at `now` (unix seconds), fetching the set first when none is held, when it is older
    /// than its maximum age, or when the token names a key it does not hold (at most once per refetch
    /// interval).
    pub async fn verify_at(&self, token: &str, now: i64) -> Result<Claims, JwksError> {
        let kid = header_kid(token);
        let mut cached = self.cached();
        let why = match &cached {
            None => Some(Refetch::Stale),
            Some(c) if c.fetched_at.elapsed() >= self.inner.max_age => Some(Refetch::Stale),
            Some(c) if kid.as_deref().is_some_and(|kid| !c.verifier.knows(kid)) => Some(Refetch::UnknownKey),
            Some(_) => None,
        };
        if let Some(why) = why {
            self.refetch(why).await;
            cached = self.cached();
        }
        match cached {
            Some(c) => Ok(c.verifier.verify(token, now)?),
            None => Err(JwksError::Unavailable(
                self.inner
                    .fetching
                    .lock()
                    .await
                    .error
                    .clone()
                    .unwrap_or_else(|| "not fetched yet".to_owned()),
            )),
        }
    }

    /// How many times the set was fetched (or a fetch was tried).
    pub async fn fetch_count(&self) -> u64 {
        self.inner.fetching.lock().await.count
    }

    fn cached(&self) -> Option<Cached> {
        self.inner
            .cached
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches the set unless the last fetch started too recently for `why`: less than the refetch interval
    /// ago for an unknown key, less than the shorter of it and the maximum age ago for a set that is old or
    /// missing. Concurrent callers wait for one fetch. A failure keeps the set held.
    async fn refetch(&self, why: Refetch) {
        let inner = &self.inner;
        let mut fetches = inner.fetching.lock().await;
        let gap = match why {
            Refetch::UnknownKey => inner.refetch_interval,
            Refetch::Stale => inner.refetch_interval.min(inner.max_age),
        };
        // Another caller may have fetched while this one waited for the lock.
        let fresh = self
            .cached()
            .is_some_and(|c| c.fetched_at.elapsed() < inner.max_age);
        if fetches.last.is_some_and(|last| last.elapsed() < gap) || (why == Refetch::Stale && fresh) {
            return;
        }
        fetches.last = Some(monotonic_now());
        fetches.count += 1;
        match self.fetch().await {
            Ok(verifier) => {
                fetches.error = None;
                *self
                    .inner
                    .cached
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
                    verifier: Arc::new(verifier),
                    fetched_at: monotonic_now(),
                });
            }
            Err(reason) => fetches.error = Some(reason),
        }
    }

    async fn fetch(&self) -> Result<Verifier, String> {
        let inner = &self.inner;
        let response = inner
            .http
            .get(inner.url.clone())
            .timeout(inner.fetch_timeout)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("http status {}", response.status().as_u16()));
        }
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let jwks = Jwks::from_json(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        Ok(Verifier::from_jwks(&jwks, inner.issuer.clone())
            .map_err(|e| e.to_string())?
            .with_leeway(inner.leeway)
            .with_accept_legacy(inner.accept_legacy))
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the cache's ages are measured on the monotonic clock"
)]
fn monotonic_now() -> Instant {
    Instant::now()
}

/// Unix seconds by the system clock; a clock set before 1970 reads as 0, which refuses every token as not yet
/// valid rather than accepting expired ones.
#[expect(
    clippy::disallowed_methods,
    reason = "the system clock, used unless a time is given to verify_at"
)]
fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}
