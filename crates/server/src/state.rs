//! `AppState`: what every request needs, built once at start-up and shared by all workers.

use std::sync::Arc;
use std::time::Instant;

use crm_auth_core::{Keyring, VerifyOptions};

use crate::clock::{Clock, SystemClock};
use crate::db::group_commit::GroupCommit;
use crate::db::{self, Backend, DbConnection, Pool, PooledConnection};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::password::PasswordHasher;
use crate::ratelimit::RateLimiter;
use crate::settings::Settings;

/// Shared state, registered as actix app data; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub settings: Arc<Settings>,
    /// The database pool (built once).
    pub pool: Pool,
    /// Where writes go: grouped into shared commits on SQLite, straight through on PostgreSQL.
    pub writes: GroupCommit,
    /// Which backend the pool talks to.
    pub backend: &'static str,
    /// Signing and verification keys.
    pub keyring: Arc<Keyring>,
    /// The bounded Argon2id pool.
    pub hasher: PasswordHasher,
    /// The time source; tests inject a manual one.
    pub clock: Arc<dyn Clock>,
    /// Per-address limiter for the token endpoints.
    pub rate_limiter: Arc<RateLimiter>,
    /// The Prometheus metrics, also the hashing pool's observer.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state: pool, migrations, keyring, metrics and hashing threads.
    pub fn build(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
        let backend = Backend::from_url(settings.database.url.expose())?;
        let backend_name = backend.name();
        let pool = db::build_pool(backend.clone(), settings.database.pool_size)?;
        db::run_migrations(&mut *pool.get()?)?;
        let writes = GroupCommit::start(&backend)?;
        let (keyring, _) = crate::signing::load_keyring(&settings)?;
        let metrics = Arc::new(Metrics::new()?);
        let hasher = PasswordHasher::start(&settings.auth.argon2, settings.hash_threads(), metrics.clone())?;
        let rate_limiter = RateLimiter::new(&settings.http.rate_limit);
        Ok(AppState {
            settings: Arc::new(settings),
            pool,
            writes,
            backend: backend_name,
            keyring: Arc::new(keyring),
            hasher,
            clock,
            rate_limiter: Arc::new(rate_limiter),
            metrics,
        })
    }

    /// [`AppState::build`] with the system clock.
    pub fn from_settings(settings: Settings) -> anyhow::Result<AppState> {
        AppState::build(settings, Arc::new(SystemClock))
    }

    /// Checks a connection out of the pool, recording how long that took. Call it on a blocking thread.
    pub fn conn(&self) -> Result<PooledConnection, ApiError> {
        let started = Instant::now();
        let conn = self.pool.get();
        self.metrics.pool_waited(started.elapsed());
        Ok(conn?)
    }

    /// Runs database work that only reads on a blocking thread with a pooled connection.
    pub async fn read<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let state = self.clone();
        actix_web::web::block(move || {
            let mut conn = state.conn()?;
            job(&mut conn)
        })
        .await?
    }

    /// Runs database work that writes and returns once its writes are durable: on SQLite in the next group
    /// commit (no thread waits for it), on PostgreSQL like [`AppState::read`].
    pub async fn write<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        match self.writes.submit(job) {
            Ok(answer) => answer.await,
            Err(job) => self.read(job).await,
        }
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
