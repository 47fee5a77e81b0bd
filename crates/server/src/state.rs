//! `AppState`: what every request needs, built once at start-up and shared by all workers.

use std::sync::Arc;

use crm_auth_core::VerifyOptions;

use crate::clock::{Clock, SystemClock};
use crate::db::{ConnectionManager, Store};
use crate::http::shutdown::Drain;
use crate::metrics::Metrics;
use crate::password::PasswordHasher;
use crate::ratelimit::RateLimiter;
use crate::service::lockout::Lockout;
use crate::settings::Settings;
use crate::signing::Keys;

/// Shared state, registered as actix app data; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub settings: Arc<Settings>,
    /// The database.
    pub store: Store,
    /// Signing and verification keys, replaced whole on SIGHUP.
    pub keys: Arc<Keys>,
    /// The bounded Argon2id pool.
    pub hasher: PasswordHasher,
    /// The time source; tests inject a manual one.
    pub clock: Arc<dyn Clock>,
    /// Per-address limiter for the token endpoints.
    pub rate_limiter: Arc<RateLimiter>,
    /// The Prometheus metrics, also the hashing pool's observer.
    pub metrics: Arc<Metrics>,
    /// Set once shutdown has begun: readiness fails and every answer closes its connection.
    pub drain: Arc<Drain>,
    /// This node's queues of password logins per account, in front of the lockout's slots in the database.
    pub lockout: Arc<Lockout>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state: store (pool, migrations, batching threads), keyring, metrics and hashing threads.
    pub fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
        let manager = ConnectionManager::from_settings(&settings.database)?;
        let keys = Keys::load(&settings, clock.now())?;
        let metrics = Arc::new(Metrics::new()?);
        let store = Store::open(manager, settings.database.pool_size, Arc::clone(&metrics))?;
        let hasher = PasswordHasher::start(&settings.auth.argon2, settings.hash_threads(), metrics.clone())?;
        let rate_limiter = RateLimiter::new(&settings.http.rate_limit, Arc::clone(&clock));
        let lockout = Lockout::new(&settings.auth.lockout);
        Ok(AppState {
            settings: Arc::new(settings),
            store,
            keys: Arc::new(keys),
            hasher,
            clock,
            rate_limiter: Arc::new(rate_limiter),
            metrics,
            drain: Arc::new(Drain::new()),
            lockout: Arc::new(lockout),
        })
    }

    /// [`AppState::build`] with the system clock.
    pub fn from_settings(settings: Settings) -> anyhow::Result<AppState> {
        AppState::build(settings, Arc::new(SystemClock))
    }

    /// The verification rules at `now`.
    pub fn verify_options(&self, now: i64) -> VerifyOptions {
        let token = &self.settings.token;
        VerifyOptions {
            now,
            leeway: token.leeway_seconds,
            issuer: token.issuer.clone(),
            accept_legacy: token.accept_legacy,
        }
    }
}
