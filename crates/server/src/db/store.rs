//! `Store`: the one storage front the services use. It owns the pool and hides how each backend is fastest:
//! SQLite's writes go through the group commit, PostgreSQL's token-endpoint statements through the coalescer.
//! Callers see plain methods that answer after their own commit.

use std::collections::HashMap;
use std::sync::Arc;

use diesel::Connection as _;

use super::api_key::{self, KeyWithOwner};
use super::coalesce::Coalescer;
use super::group_commit::GroupCommit;
use super::session::{self, Rotation, Session, Standing};
use super::{Backend, ConnectionManager, DbConnection, DbError, Pool, PooledConnection};
use crate::clock::Stopwatch;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The database behind the service; cheap to clone. On SQLite, writes share commits; on PostgreSQL, the token
/// endpoints' lookups and writes are coalesced across requests. `Debug` hides the PostgreSQL URL.
#[derive(Clone, Debug)]
pub struct Store {
    /// The pool every request borrows from.
    pool: Pool,
    /// Which database, and where.
    backend: Backend,
    /// Pool waits and batch sizes are recorded here.
    metrics: Arc<Metrics>,
    /// The backend's batching.
    engine: Engine,
}

/// How a backend batches work across requests.
#[derive(Clone, Debug)]
enum Engine {
    /// Every write job queued since the last commit runs in one transaction.
    Sqlite(GroupCommit),
    /// The token endpoints' statements are served one statement per kind per batch.
    Postgres(Coalescer),
}

impl Store {
    /// Opens the pool of `size` connections of `manager`, applies pending migrations and starts the backend's
    /// batching thread(s).
    pub fn open(manager: ConnectionManager, size: u32, metrics: Arc<Metrics>) -> Result<Store, DbError> {
        let backend = manager.backend().clone();
        let pool = super::build_pool(manager, size)?;
        super::run_migrations(&mut *pool.get().map_err(|e| DbError::Connect(e.to_string()))?)?;
        let engine = match &backend {
            Backend::Sqlite(path) => Engine::Sqlite(GroupCommit::start(path, &metrics)?),
            Backend::Postgres(_) => Engine::Postgres(
                Coalescer::start(&pool, &metrics).map_err(|e| DbError::Connect(e.to_string()))?,
            ),
        };
        Ok(Store {
            pool,
            backend,
            metrics,
            engine,
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The pool, for the metrics' gauges and for commands and tests that run statements of their own.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Checks a connection out of the pool, recording how long that took. Call it on a blocking thread.
    pub fn conn(&self) -> Result<PooledConnection, ApiError> {
        let started = Stopwatch::start();
        let conn = super::checkout(&self.pool);
        self.metrics.pool_waited(started.elapsed());
        Ok(conn?)
    }

    /// Runs database work that only reads on a blocking thread with a pooled connection.
    pub async fn read<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.clone();
        actix_web::web::block(move || {
            let mut conn = store.conn()?;
            job(&mut conn)
        })
        .await?
    }

    /// Runs database work that writes and returns once its writes are durable: on SQLite in the next group
    /// commit (no thread waits for it; the job must not open a transaction itself), on PostgreSQL like
    /// [`Store::read`].
    pub async fn write<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(commits) => commits.submit(job).await,
            Engine::Postgres(_) => self.read(job).await,
        }
    }

    /// [`Store::write`] for work whose statements must commit together or not at all, and whose locks must
    /// hold until the end: on SQLite the job's savepoint in the group commit (whose transaction holds the
    /// database's write lock throughout), on PostgreSQL a transaction of its own.
    pub async fn transaction<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(commits) => commits.submit(job).await,
            Engine::Postgres(_) => {
                self.read(move |conn| conn.transaction::<T, ApiError, _>(|conn| job(conn)))
                    .await
            }
        }
    }

    /// Runs an administrative change, whose functions open transactions of their own, on a blocking thread
    /// with a pooled connection (not the group commit, whose batch transaction they could not nest in). The
    /// whole change is one transaction, so a change of several parts (a user's role and units, say) is kept
    /// whole or not at all, and the functions' own transactions nest in it as savepoints. On SQLite that
    /// transaction is a `BEGIN IMMEDIATE` that the connection's transaction manager knows of: it takes the
    /// write lock first, so the one writer waits its turn (the busy timeout) instead of failing to upgrade a
    /// read.
    pub async fn admin<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        self.read(move |conn| super::write_transaction(conn, job)).await
    }

    /// Runs work that opens its own transactions, and may wait long outside them, on a blocking thread with a
    /// pooled connection: the import, which hashes passwords before its one write transaction (see
    /// [`super::write_transaction`]) and must not hold SQLite's write lock meanwhile.
    pub async fn blocking<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        self.read(job).await
    }

    /// [`Store::write`] for a thread of its own, outside the async runtime (the purge job): runs `job` and
    /// waits until its writes are durable. On SQLite the job joins the next group commit like a request's, so
    /// it takes SQLite's one writer for no longer than the job itself; on PostgreSQL it runs on a pooled
    /// connection and may open a transaction of its own.
    pub fn write_blocking<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        match &self.engine {
            Engine::Sqlite(commits) => commits.submit(job).wait(),
            Engine::Postgres(_) => job(&mut *self.conn()?),
        }
    }

    /// The session with this id.
    pub async fn find_session(&self, id: &str) -> Result<Option<Session>, ApiError> {
        let id = id.to_owned();
        match &self.engine {
            Engine::Postgres(coalescer) => coalescer.session(id).await,
            Engine::Sqlite(_) => self.read(move |conn| Ok(session::find_by_id(conn, &id)?)).await,
        }
    }

    /// The session with this id and its standing.
    pub async fn find_session_with_standing(
        &self,
        id: &str,
    ) -> Result<Option<(Session, Standing)>, ApiError> {
        let id = id.to_owned();
        match &self.engine {
            Engine::Postgres(coalescer) => coalescer.session_with_standing(id).await,
            Engine::Sqlite(_) => {
                self.read(move |conn| Ok(session::find_with_standing(conn, &id)?))
                    .await
            }
        }
    }

    /// The unrevoked key with this digest, with its user, organisation and the user's default unit.
    pub async fn find_key_with_owner(&self, digest: String) -> Result<Option<KeyWithOwner>, ApiError> {
        match &self.engine {
            Engine::Postgres(coalescer) => coalescer.key_with_owner(digest).await,
            Engine::Sqlite(_) => {
                self.read(move |conn| Ok(api_key::find_active_with_owner(conn, &digest)?))
                    .await
            }
        }
    }

    /// Stores a new session, then checks again that its user, key, unit and organisation are active: a
    /// concurrent `user disable` or `key revoke` may have ended the user's sessions between the login's
    /// checks and the insert, and no session may outlive a revocation that has answered. If the check fails
    /// the session is ended and the answer is `INVALID_CREDENTIALS`.
    pub async fn insert_session(&self, row: Session) -> Result<Session, ApiError> {
        if let Engine::Postgres(coalescer) = &self.engine {
            return coalescer.insert(row).await;
        }
        self.write(move |conn| {
            session::create(conn, &row)?;
            let checked = recheck(conn, &[&row])?.pop();
            checked.unwrap_or_else(|| Err(ApiError::Internal("a new session was not checked".into())))?;
            Ok(row)
        })
        .await
    }

    /// Moves a live session to its next generation if it is still at `rotation.from_gen`; whether this call
    /// did it (of concurrent callers, one does).
    pub async fn rotate_session(&self, rotation: Rotation) -> Result<bool, ApiError> {
        if let Engine::Postgres(coalescer) = &self.engine {
            return coalescer.rotate(rotation).await;
        }
        let Rotation {
            id,
            from_gen,
            now,
            expires_at,
        } = rotation;
        self.write(move |conn| Ok(session::update_rotate(conn, &id, from_gen, now, expires_at)?))
            .await
    }
}

/// The check every new session gets after its insert is visible (committed, or inside the SQLite batch that
/// holds the write lock): reads the standing of `rows` in one statement and ends each session whose user,
/// key, unit or organisation was revoked meanwhile. Answers, row by row and in order, `Ok` for a session that
/// may go on and `INVALID_CREDENTIALS` for one it ended; the outer error is the lookup's.
///
/// On PostgreSQL the read comes after [`session::lock_standing`], which waits for revocations in progress;
/// on SQLite the batch's transaction holds the only write lock, so no revocation is in progress.
pub(super) fn recheck(
    conn: &mut DbConnection,
    rows: &[&Session],
) -> Result<Vec<Result<(), ApiError>>, ApiError> {
    if let DbConnection::Postgres(pg) = conn {
        session::lock_standing(pg, rows)?;
    }
    let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
    let standings: HashMap<String, Standing> = session::find_many_with_standing(conn, &ids)?
        .into_iter()
        .map(|(found, standing)| (found.id, standing))
        .collect();
    let mut checked = Vec::with_capacity(rows.len());
    for row in rows {
        checked.push(match standings.get(&row.id).map(|s| s.end_reason()) {
            None => Err(ApiError::Internal("a new session was not found".into())),
            Some(None) => Ok(()),
            Some(Some(reason)) => match session::update_end(conn, &row.id, row.created_at, reason) {
                Ok(_) => Err(ApiError::InvalidCredentials),
                Err(e) => Err(e.into()),
            },
        });
    }
    Ok(checked)
}
