//! How [`Authenticated`](crate::Authenticated) checks a token: offline against a keyring, or online against
//! the server's validate endpoint.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{HttpRequest, web};
use crm_auth_core::Verifier;

use crate::{AuthError, Authenticated};

/// The current time in unix seconds.
type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// How [`Authenticated`](crate::Authenticated) checks tokens. Register one per application, with
/// `App::configure(crm_auth_actix::configure(config))` ([`configure`]), as `web::Data<AuthConfig>` or as plain
/// app data (`App::app_data(config)`); cloning is cheap.
///
/// - [`AuthConfig::offline`] checks signature, `alg`, `exp`, `iat` and `iss` locally with a [`Verifier`]. No
///   request leaves the service, but a released session's tokens pass until their `exp`.
/// - `AuthConfig::online` (feature `validate`) asks the server's validate endpoint on every request, so a
///   logout, a revoked session or a disabled user is refused at once.
#[derive(Clone)]
pub struct AuthConfig {
    mode: Arc<Mode>,
}

enum Mode {
    Offline {
        verifier: Verifier,
        clock: Clock,
    },
    #[cfg(feature = "validate")]
    Online {
        client: crm_auth_client::Client,
        cache: Option<online::OkCache>,
    },
    #[cfg(feature = "jwks")]
    Jwks {
        verifier: crm_auth_client::JwksVerifier,
    },
}

impl AuthConfig {
    /// Verifies tokens locally with `verifier`, at the time of the system clock.
    ///
    /// Give the verifier the server's signing keys, its `token.issuer` and, as a rule, its
    /// `token.leeway_seconds` ([`Verifier::with_leeway`]).
    pub fn offline(verifier: Verifier) -> AuthConfig {
        AuthConfig::offline_with_clock(verifier, system_now)
    }

    /// Verifies tokens locally with `verifier`, at the time `clock` returns (unix seconds).
    pub fn offline_with_clock(
        verifier: Verifier,
        clock: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> AuthConfig {
        AuthConfig {
            mode: Arc::new(Mode::Offline {
                verifier,
                clock: Arc::new(clock),
            }),
        }
    }

    /// Validates every token with the server: `GET {base}/authentication/token/validate` through `client`.
    ///
    /// A session released, revoked or otherwise over is refused with `SESSION_ENDED` at once. When the server
    /// cannot be asked (no connection, time-out, an answer other than a verdict on the token) the request is
    /// refused with `503 UNAVAILABLE`; the client's own retries apply first (`ClientBuilder::retries`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use actix_web::App;
    /// use crm_auth_actix::{AuthConfig, Client};
    ///
    /// # fn run() -> Result<(), crm_auth_actix::ClientError> {
    /// let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
    /// let auth = AuthConfig::online(client).cache(Duration::from_secs(10));
    /// let app = App::new().configure(crm_auth_actix::configure(auth));
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// # run().unwrap();
    /// ```
    #[cfg(feature = "validate")]
    pub fn online(client: crm_auth_client::Client) -> AuthConfig {
        AuthConfig {
            mode: Arc::new(Mode::Online { client, cache: None }),
        }
    }

    /// Remembers the server's OK answers for `ttl` (never beyond the token's `exp`), so that a token used again
    /// within `ttl` costs no round trip. Off by default; only `AuthConfig::online` caches, other
    /// configurations are returned unchanged.
    ///
    /// The trade-off: a session released, revoked or disabled at the server is still accepted by this service
    /// for up to `ttl` after the last answer that accepted it. Refusals are never cached. The cache holds at
    /// most 10,000 tokens per configuration; when full, expired entries go first, then all of them. Call it on
    /// the configuration `online` returns, before cloning it: a clone's copies share their mode.
    #[cfg(feature = "validate")]
    pub fn cache(mut self, ttl: std::time::Duration) -> AuthConfig {
        if let Some(Mode::Online { cache, .. }) = Arc::get_mut(&mut self.mode) {
            *cache = (!ttl.is_zero()).then(|| online::OkCache::new(ttl));
        }
        self
    }

    /// Verifies tokens locally against the public keys the server publishes at `url`
    /// (`https://auth.example.com/.well-known/jwks.json`), for the issuer `crm-auth` with no leeway; the keys
    /// are fetched and cached by [`JwksVerifier`](crm_auth_client::JwksVerifier) (again after 300 s, or when a
    /// token names an unknown key, at most once per 30 s; the last good set is kept while the server is down).
    /// For another issuer or a leeway, build the verifier and use [`AuthConfig::with_jwks_verifier`].
    ///
    /// ```
    /// use actix_web::App;
    /// use crm_auth_actix::AuthConfig;
    ///
    /// # fn run() -> Result<(), crm_auth_actix::ClientError> {
    /// let auth = AuthConfig::jwks("http://127.0.0.1:8080/.well-known/jwks.json")?;
    /// let app = App::new().configure(crm_auth_actix::configure(auth));
    /// # let _ = app;
    /// # Ok(())
    /// # }
    /// # run().unwrap();
    /// ```
    #[cfg(feature = "jwks")]
    pub fn jwks(url: impl Into<String>) -> Result<AuthConfig, crm_auth_client::Error> {
        Ok(AuthConfig::with_jwks_verifier(
            crm_auth_client::JwksVerifier::builder(url).build()?,
        ))
    }

    /// Verifies tokens locally with a JWKS-fetching `verifier`.
    #[cfg(feature = "jwks")]
    pub fn with_jwks_verifier(verifier: crm_auth_client::JwksVerifier) -> AuthConfig {
        AuthConfig {
            mode: Arc::new(Mode::Jwks { verifier }),
        }
    }

    /// The configuration registered with the application, as `web::Data<AuthConfig>` or as `AuthConfig`.
    pub(crate) fn from_request(req: &HttpRequest) -> Option<AuthConfig> {
        req.app_data::<web::Data<AuthConfig>>()
            .map(|data| data.get_ref().clone())
            .or_else(|| req.app_data::<AuthConfig>().cloned())
    }

    /// Checks `token` and describes its session.
    pub(crate) async fn authenticate(&self, token: String) -> Result<Authenticated, AuthError> {
        match &*self.mode {
            Mode::Offline { verifier, clock } => {
                let claims = verifier.verify(&token, clock())?;
                Ok(Authenticated::from_claims(claims, token))
            }
            #[cfg(feature = "validate")]
            Mode::Online { client, cache } => online::validate(client, cache.as_ref(), token).await,
            #[cfg(feature = "jwks")]
            Mode::Jwks { verifier } => match verifier.verify(&token).await {
                Ok(claims) => Ok(Authenticated::from_claims(claims, token)),
                Err(crm_auth_client::JwksError::Token(err)) => Err(AuthError::Token(err)),
                Err(err) => Err(AuthError::Unavailable(err.to_string())),
            },
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.mode {
            Mode::Offline { verifier, .. } => f
                .debug_struct("AuthConfig::Offline")
                .field("verifier", verifier)
                .finish_non_exhaustive(),
            #[cfg(feature = "validate")]
            Mode::Online { client, cache } => f
                .debug_struct("AuthConfig::Online")
                .field("client", client)
                .field("cache", &cache.as_ref().map(|cache| cache.ttl))
                .finish(),
            #[cfg(feature = "jwks")]
            Mode::Jwks { verifier } => f
                .debug_struct("AuthConfig::Jwks")
                .field("verifier", verifier)
                .finish(),
        }
    }
}

/// Unix seconds by the system clock; a clock set before 1970 reads as 0, which refuses every token as not yet
/// valid rather than accepting expired ones.
#[expect(
    clippy::disallowed_methods,
    reason = "the system clock, used unless a clock is injected"
)]
fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(feature = "validate")]
mod online {
    //! The online check: the server's verdict on a token, mapped onto the extractor's refusals.

    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use crm_auth_client::{Client, Error};
    use crm_auth_core::{ErrorCode, decode_unverified};

    use crate::{AuthError, Authenticated};

    /// The most tokens an [`OkCache`] holds.
    const CACHE_CAPACITY: usize = 10_000;

    /// The server's OK answers, by token, until a deadline.
    pub(super) struct OkCache {
        pub(super) ttl: Duration,
        entries: Mutex<HashMap<String, (Instant, Authenticated)>>,
    }

    impl OkCache {
        pub(super) fn new(ttl: Duration) -> OkCache {
            OkCache {
                ttl,
                entries: Mutex::new(HashMap::new()),
            }
        }

        /// The remembered answer for `token`, if still fresh and the token not expired.
        fn get(&self, token: &str, now: Instant) -> Option<Authenticated> {
            let entries = self.entries.lock().ok()?;
            let (until, user) = entries.get(token)?;
            (now < *until && user.expires_at > super::system_now()).then(|| user.clone())
        }

        fn put(&self, user: &Authenticated, now: Instant) {
            let Ok(mut entries) = self.entries.lock() else {
                return;
            };
            if entries.len() >= CACHE_CAPACITY {
                entries.retain(|_, (until, _)| now < *until);
                if entries.len() >= CACHE_CAPACITY {
                    entries.clear();
                }
            }
            entries.insert(user.token().to_owned(), (now + self.ttl, user.clone()));
        }
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the cache's deadlines are wall-clock durations of the running process"
    )]
    fn instant_now() -> Instant {
        Instant::now()
    }

    /// Asks the server about `token`, or the cache first. What is not even shaped like a token is refused
    /// without a round trip, with the answer the server would give.
    pub(super) async fn validate(
        client: &Client,
        cache: Option<&OkCache>,
        token: String,
    ) -> Result<Authenticated, AuthError> {
        decode_unverified(&token)?;
        if let Some(user) = cache.and_then(|cache| cache.get(&token, instant_now())) {
            return Ok(user);
        }
        match client.validate(&token).await {
            Ok(session) => {
                let user = Authenticated::from_session(session, token);
                if let Some(cache) = cache {
                    cache.put(&user, instant_now());
                }
                Ok(user)
            }
            Err(err) => Err(refusal(&err)),
        }
    }

    fn refusal(err: &Error) -> AuthError {
        let description = || err.description().unwrap_or_default().to_owned();
        match err.code() {
            Some(code @ (ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::SessionEnded)) => {
                AuthError::Refused {
                    code,
                    description: description(),
                }
            }
            // The server could not read the token it was sent.
            Some(ErrorCode::InvalidRequest) => AuthError::Refused {
                code: ErrorCode::InvalidToken,
                description: description(),
            },
            // The client refused to put the token into a header: it cannot be a token.
            _ if matches!(err, Error::InvalidArgument { .. }) => {
                AuthError::Token(crm_auth_core::TokenError::Malformed)
            }
            // `Display` of the client's errors never holds the token.
            _ => AuthError::Unavailable(err.to_string()),
        }
    }
}

/// Registers `config` with an application in one line: `App::new().configure(crm_auth_actix::configure(config))`
/// (as `web::Data<AuthConfig>`, which [`Authenticated`](crate::Authenticated) reads).
pub fn configure(config: AuthConfig) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(config));
    }
}
