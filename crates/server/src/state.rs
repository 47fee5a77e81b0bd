//! `AppState`: what every request needs, built once at start-up and shared by all workers.

use std::sync::Arc;
use std::time::Instant;

use crm_auth_core::{Keyring, VerifyOptions};

use crate::clock::{Clock, SystemClock};
use crate::db::api_key::{self, KeyWithOwner};
use crate::db::coalesce::Coalescer;
use crate::db::group_commit::GroupCommit;
use crate::db::session::{self, Rotation, Session, Standing};
use crate::db::{self, Backend, DbConnection, Pool, PooledConnection};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::password::PasswordHasher;
use crate::ratelimit::RateLimiter;
use crate::settings::Settings;

/// Threads per queue of coalesced statements. One makes the biggest batches; on 2 cores one thread per queue
/// served more validations, key logins and refreshes than two or four (docs/BENCHMARKS.md).
const COALESCING_THREADS: usize = 1;

/// Shared state, registered as actix app data; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The validated configuration.
    pub settings: Arc<Settings>,
    /// The database pool (built once).
    pub pool: Pool,
    /// Where writes go: grouped into shared commits on SQLite, straight through on PostgreSQL.
    pub writes: GroupCommit,
    /// On PostgreSQL, the token endpoints' statements, coalesced across requests.
    pub coalescer: Option<Coalescer>,
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
        let coalescer = match backend {
            Backend::Postgres(_) => Some(Coalescer::start(&pool, COALESCING_THREADS, &metrics)?),
            Backend::Sqlite(_) => None,
        };
        let rate_limiter = RateLimiter::new(&settings.http.rate_limit);
        Ok(AppState {
            settings: Arc::new(settings),
            pool,
            writes,
            coalescer,
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

    /// The session with this id.
    pub async fn find_session(&self, id: &str) -> Result<Option<Session>, ApiError> {
        let id = id.to_owned();
        match &self.coalescer {
            Some(coalescer) => coalescer.session(id).await,
            None => self.read(move |conn| Ok(session::find_by_id(conn, &id)?)).await,
        }
    }

    /// The session with this id and its standing.
    pub async fn find_session_with_standing(
        &self,
        id: &str,
    ) -> Result<Option<(Session, Standing)>, ApiError> {
        let id = id.to_owned();
        match &self.coalescer {
            Some(coalescer) => coalescer.session_with_standing(id).await,
            None => {
                self.read(move |conn| Ok(session::find_with_standing(conn, &id)?))
                    .await
            }
        }
    }

    /// The unrevoked key with this digest, with its user, organisation and the user's default unit.
    pub async fn find_key_with_owner(&self, digest: String) -> Result<Option<KeyWithOwner>, ApiError> {
        match &self.coalescer {
            Some(coalescer) => coalescer.key_with_owner(digest).await,
            None => {
                self.read(move |conn| Ok(api_key::find_active_with_owner(conn, &digest)?))
                    .await
            }
        }
    }

    /// Stores a new session, then checks again that its user, key, unit and organisation are active: a
    /// concurrent `user disable` or `key revoke` may have ended the user's sessions between the login's
    /// checks and the insert, and no session may outlive a revocation that has answered. If the check fails
    /// the session is ended (on SQLite its insert is rolled back) and the answer is `INVALID_CREDENTIALS`.
    pub async fn insert_session(&self, row: Session) -> Result<Session, ApiError> {
        match &self.coalescer {
            Some(coalescer) => coalescer.insert(row).await,
            None => {
                self.write(move |conn| {
                    session::create(conn, &row)?;
                    let (_, standing) = session::find_with_standing(conn, &row.id)?
                        .ok_or_else(|| ApiError::Internal("a new session was not found".into()))?;
                    if let Some(reason) = standing.end_reason() {
                        session::update_end(conn, &row.id, row.created_at, reason)?;
                        return Err(ApiError::InvalidCredentials);
                    }
                    Ok(row)
                })
                .await
            }
        }
    }

    /// Moves a live session to its next generation if it is still at `rotation.from_gen`; whether this call
    /// did it (of concurrent callers, one does).
    pub async fn rotate_session(&self, rotation: Rotation) -> Result<bool, ApiError> {
        match &self.coalescer {
            Some(coalescer) => coalescer.rotate(rotation).await,
            None => {
                self.write(move |conn| {
                    let Rotation {
                        id,
                        from_gen,
                        now,
                        expires_at,
                    } = rotation;
                    Ok(session::update_rotate(conn, &id, from_gen, now, expires_at)?)
                })
                .await
            }
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
