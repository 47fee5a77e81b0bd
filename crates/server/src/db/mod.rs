//! Storage: one connection type over SQLite and PostgreSQL, the r2d2 pool and the embedded migrations.
//!
//! Lookups by a unique key end in `get_result`, never `first`: `first` adds `LIMIT ?`, and SQLite lets the
//! planner read a bound LIMIT, so it re-prepares such a statement every time the value is bound again (each
//! execution), which cost validate about a third of its time.

/// Maps a closed set to a TEXT column by name, on every backend: `$name` and `$parse` turn a value into its
/// name and back. Defined before the model modules so that each can use it.
macro_rules! text_column {
    ($type:ty, $name:expr, $parse:expr) => {
        impl<DB: diesel::backend::Backend> diesel::serialize::ToSql<diesel::sql_types::Text, DB> for $type
        where
            str: diesel::serialize::ToSql<diesel::sql_types::Text, DB>,
        {
            fn to_sql<'b>(
                &'b self,
                out: &mut diesel::serialize::Output<'b, '_, DB>,
            ) -> diesel::serialize::Result {
                let name: fn(&$type) -> &'static str = $name;
                diesel::serialize::ToSql::<diesel::sql_types::Text, DB>::to_sql(name(self), out)
            }
        }

        impl<DB: diesel::backend::Backend> diesel::deserialize::FromSql<diesel::sql_types::Text, DB> for $type
        where
            String: diesel::deserialize::FromSql<diesel::sql_types::Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> diesel::deserialize::Result<Self> {
                let parse: fn(&str) -> Option<$type> = $parse;
                let name =
                    <String as diesel::deserialize::FromSql<diesel::sql_types::Text, DB>>::from_sql(bytes)?;
                parse(&name).ok_or_else(|| format!("unknown {} {name:?}", stringify!($type)).into())
            }
        }
    };
}

/// Keeps the rows of a boxed query that come after a list's cursor `(time, id)` in the order `(time, id)`:
/// later, or as late with a greater id. The order is total, so paging by it neither skips nor repeats a row,
/// rows of the same second included.
macro_rules! after_cursor {
    ($query:expr, $time:expr, $id:expr, $after:expr) => {
        match $after {
            Some((time, id)) => $query.filter($time.gt(time).or($time.eq(time).and($id.gt(id.to_owned())))),
            None => $query,
        }
    };
}

pub mod api_key;
pub mod audit;
pub mod batch;
pub mod coalesce;
pub mod group_commit;
pub mod login_check;
pub mod login_failure;
pub mod organisation;
pub mod rate_limit;
pub mod rekey;
pub mod schema;
pub mod session;
pub mod store;
pub mod unit;
pub mod user;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::R2D2Connection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::clock::Stopwatch;
use crate::settings::DatabaseSettings;

/// One set of migrations for both backends: the schema is written in SQL both accept (TEXT ids, BIGINT unix
/// seconds, BOOLEAN), so it cannot differ between them. A change that needs each backend's own SQL would
/// split this into one folder per backend.
const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// How long a request waits for a pooled connection, and a new connection for the server, before the
/// database counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The most rows one purge statement deletes: few enough that a batch holds SQLite's one writer, or its rows'
/// locks on PostgreSQL, for milliseconds.
pub const PURGE_BATCH: i64 = 1_000;

/// The most rows one multi-row `INSERT` of an import writes, and the most values one lookup of it binds: well
/// under SQLite's 32,766 bound parameters with the widest row (a key's 10 columns), and large enough that
/// 100,000 users take a few hundred statements.
pub const IMPORT_BATCH: usize = 1_000;

/// SQLite waits this long for a competing writer before giving up with "database is locked".
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;

pub use connection::DbConnection;
pub use store::Store;

mod connection {
    //! The derive generates undocumented helper items; they are diesel's, not ours.

    /// A connection to either backend; every query is written once against this type.
    #[derive(diesel::MultiConnection)]
    pub enum DbConnection {
        /// PostgreSQL, chosen by a `postgres://` or `postgresql://` URL.
        Postgres(diesel::PgConnection),
        /// SQLite, chosen by a `sqlite://PATH` URL.
        Sqlite(diesel::SqliteConnection),
    }
}

/// The backend type of [`DbConnection`], which queries are built for.
pub type Db = <DbConnection as diesel::Connection>::Backend;

/// Where a page of a list starts: after the row with this `(time, id)`, the last of the page before; `None`
/// starts at the oldest row.
pub type After<'a> = Option<(i64, &'a str)>;

/// The pool every request borrows from.
pub type Pool = r2d2::Pool<ConnectionManager>;

/// A connection borrowed from [`Pool`].
pub type PooledConnection = r2d2::PooledConnection<ConnectionManager>;

/// Which database a URL points at. `Debug` hides the PostgreSQL URL, which may carry a password (the pool's
/// `Debug` shows its manager, and so this).
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// A PostgreSQL server; the URL is handed to libpq.
    Postgres(String),
    /// An SQLite file at this path.
    Sqlite(PathBuf),
}

/// Failures to set the database up.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported backend.
    #[error("database.url must start with sqlite:// or postgres://")]
    UnsupportedUrl,
    /// The SQLite file (or its folder) could not be created or made private.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No connection could be made.
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(String),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Postgres(_) => f.write_str("Postgres(***)"),
            Backend::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
        }
    }
}

impl Backend {
    /// Reads `sqlite://PATH` (also `sqlite:PATH`) or `postgres://...` / `postgresql://...`.
    pub fn from_url(url: &str) -> Result<Backend, DbError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres(with_connect_timeout(url)));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
            .ok_or(DbError::UnsupportedUrl)?;
        Ok(Backend::Sqlite(PathBuf::from(path)))
    }

    /// The backend's name, for logs and test output.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }
}

/// libpq waits for a lost server for minutes by default; a short limit turns an outage into
/// `UNAVAILABLE` instead of a hung request.
fn with_connect_timeout(url: &str) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout={}", CONNECT_TIMEOUT.as_secs())
}

/// Opens connections of the configured backend; r2d2 calls it.
#[derive(Debug, Clone)]
pub struct ConnectionManager {
    backend: Backend,
    /// PostgreSQL: whether statements are prepared and kept per connection (`database.prepared_statements`).
    prepared_statements: bool,
    /// How many of its connections were found lost so far (see [`checkout`]).
    losses: Arc<AtomicU64>,
}

impl ConnectionManager {
    /// A manager for this backend. For SQLite the file's folder (0700 when new) and the file itself (0600) are
    /// created here.
    pub fn new(backend: Backend) -> Result<ConnectionManager, DbError> {
        if let Backend::Sqlite(path) = &backend {
            create_parent(path)?;
            crate::files::ensure_private_file(path).map_err(|source| DbError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        Ok(ConnectionManager {
            backend,
            prepared_statements: true,
            losses: Arc::default(),
        })
    }

    /// A manager for the database that `[database]` names, with its `prepared_statements`.
    pub fn from_settings(settings: &DatabaseSettings) -> Result<ConnectionManager, DbError> {
        let manager = ConnectionManager::new(Backend::from_url(settings.url.expose())?)?;
        Ok(manager.prepared_statements(settings.prepared_statements))
    }

    /// Whether PostgreSQL statements are prepared and kept per connection (the default), or sent with their
    /// parameters each time, as behind a pooler in transaction mode.
    pub fn prepared_statements(mut self, on: bool) -> ConnectionManager {
        self.prepared_statements = on;
        self
    }

    /// Which database this manager connects to.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Opens one connection outside any pool.
    pub fn establish(&self) -> Result<DbConnection, DbError> {
        r2d2::ManageConnection::connect(self)
    }
}

fn create_parent(path: &Path) -> Result<(), DbError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            crate::files::create_private_dir(dir).map_err(|source| DbError::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

impl r2d2::ManageConnection for ConnectionManager {
    type Connection = DbConnection;
    type Error = DbError;

    fn connect(&self) -> Result<DbConnection, DbError> {
        match &self.backend {
            Backend::Postgres(url) => {
                let mut conn =
                    diesel::PgConnection::establish(url).map_err(|e| DbError::Connect(e.to_string()))?;
                if self.prepared_statements {
                    // Diesel keeps statements prepared, and after five runs PostgreSQL may switch one to a
                    // generic plan made from the statistics of that moment and keep it until they change. A
                    // server started on an empty database (or one without autovacuum) kept plans made for empty
                    // tables, which scan the whole table once it has grown: batched lookups fell to a tenth of
                    // their speed. Planning each run costs far less than that.
                    conn.batch_execute("SET plan_cache_mode = force_custom_plan")
                        .map_err(|e| DbError::Connect(e.to_string()))?;
                } else {
                    // Behind a pooler in transaction mode, a statement prepared on one server connection does
                    // not exist on the next, and a session setting stays behind on whichever connection ran
                    // it. Unprepared, each statement travels with its parameters (one round trip, as before)
                    // and is planned for them, so the plan setting above is not needed either.
                    conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
                }
                conn.set_instrumentation(Health::new(&self.losses));
                Ok(DbConnection::Postgres(conn))
            }
            Backend::Sqlite(path) => {
                let path = path.to_str().ok_or(DbError::UnsupportedUrl)?;
                let mut conn =
                    diesel::SqliteConnection::establish(path).map_err(|e| DbError::Connect(e.to_string()))?;
                // WAL lets readers run beside the one writer; FULL sync keeps every answered
                // revocation on disk; the busy timeout queues writers instead of failing them.
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                ))
                .map_err(|e| DbError::Connect(e.to_string()))?;
                Ok(DbConnection::Sqlite(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), DbError> {
        conn.ping().map_err(|e| DbError::Connect(e.to_string()))
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        let broken = conn.is_broken() || Health::lost(conn);
        match Health::of(conn) {
            Some(health) if broken => {
                health.losses.fetch_add(1, Ordering::Relaxed);
            }
            Some(health) => health.returned = Stopwatch::start(),
            None => {}
        }
        broken
    }
}

/// A connection that has sat in the pool this long is pinged before it is handed out: after a failover every
/// pooled connection is to the old primary, and an idle node would otherwise fail one request per connection,
/// whenever its traffic resumed. A connection in steady use is not pinged (a ping is a round trip).
const IDLE_PING: Duration = Duration::from_secs(1);

/// Checks a connection out of `pool`, pinging it first if it sat idle past `IDLE_PING` (1 s) or if another
/// connection of the pool was found lost since this one last answered: when one connection to a server is
/// lost, the rest usually are too (the server stopped, a failover), so each is tested once instead of failing
/// a request of its own. A connection that fails its ping is dropped and another taken.
pub fn checkout(pool: &Pool) -> Result<PooledConnection, r2d2::Error> {
    for _ in 0..pool.max_size() {
        let mut conn = pool.get()?;
        let Some(health) = Health::of(&mut conn) else {
            return Ok(conn);
        };
        let losses = health.losses.load(Ordering::Relaxed);
        if health.seen_losses == losses && health.returned.elapsed() < IDLE_PING {
            return Ok(conn);
        }
        if conn.ping().is_ok() {
            if let Some(health) = Health::of(&mut conn) {
                health.seen_losses = losses;
            }
            return Ok(conn);
        }
        // Dropped: the failed ping marked it lost, so the pool closes it and opens another.
    }
    pool.get()
}

/// Whether `e` shows that the connection it came from is of no further use: the server is gone (a primary
/// stopped, a network cut), or the server answers but is read-only (a standby, or a primary demoted after a
/// failover, reached again through a pooler). Such a connection is dropped instead of going back to the pool,
/// and the request answers `UNAVAILABLE`.
pub fn ends_connection(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(
        e,
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand
                | DatabaseErrorKind::ReadOnlyTransaction,
            _
        )
    )
}

/// Watches a PostgreSQL connection's statements for an error that [`ends_connection`], which the pool then
/// learns of in `has_broken`. Diesel itself marks a connection broken only when libpq reports its transaction
/// status unknown after a statement; a statement whose preparation failed on a lost connection leaves it
/// looking healthy, and after a failover such connections went back to the pool and failed every request
/// given them, with the new primary up, until the load stopped.
#[derive(Debug)]
struct Health {
    /// A statement failed with an error that ends the connection.
    lost: bool,
    /// The manager's count of lost connections, shared by its connections.
    losses: Arc<AtomicU64>,
    /// That count when this connection last answered a ping, or was opened.
    seen_losses: u64,
    /// Since the connection went back to the pool (or was opened).
    returned: Stopwatch,
}

impl Health {
    fn new(losses: &Arc<AtomicU64>) -> Health {
        Health {
            lost: false,
            losses: Arc::clone(losses),
            seen_losses: losses.load(Ordering::Relaxed),
            returned: Stopwatch::start(),
        }
    }

    /// The health record of a PostgreSQL connection.
    fn of(conn: &mut DbConnection) -> Option<&mut Health> {
        match conn {
            DbConnection::Postgres(pg) => diesel::Connection::instrumentation(pg).downcast_mut::<Health>(),
            DbConnection::Sqlite(_) => None,
        }
    }

    /// Whether `conn`'s statements have shown it lost.
    fn lost(conn: &mut DbConnection) -> bool {
        Health::of(conn).is_some_and(|health| health.lost)
    }
}

impl diesel::connection::Instrumentation for Health {
    fn on_connection_event(&mut self, event: diesel::connection::InstrumentationEvent<'_>) {
        if let diesel::connection::InstrumentationEvent::FinishQuery { error: Some(e), .. } = event
            && ends_connection(e)
        {
            self.lost = true;
        }
    }
}

/// Builds the pool of `manager`'s connections. Checkouts ping only a connection that sat idle or may have
/// been lost (see [`checkout`]); otherwise a broken connection shows itself by the error it returns.
pub fn build_pool(manager: ConnectionManager, size: u32) -> Result<Pool, DbError> {
    if matches!(manager.backend, Backend::Sqlite(_)) {
        // Switching a new file to WAL needs it to itself: one connection does it before the pool opens more.
        manager.establish()?;
    }
    r2d2::Pool::builder()
        .max_size(size)
        .min_idle(Some(size.min(2)))
        .connection_timeout(CONNECT_TIMEOUT)
        .test_on_check_out(false)
        .build(manager)
        .map_err(|e| DbError::Connect(e.to_string()))
}

/// Applies every pending migration, each in a transaction of its own; returns how many ran. The
/// `fold_name_keys` migration is completed in Rust ([`rekey::run`]) inside its transaction, so a collision
/// leaves the database as it was.
pub fn run_migrations(conn: &mut DbConnection) -> Result<usize, DbError> {
    let mut applied = 0;
    loop {
        let pending = MigrationHarness::<Db>::pending_migrations(conn, MIGRATIONS)
            .map_err(|e| DbError::Migrate(e.to_string()))?;
        let Some(next) = pending.into_iter().next() else {
            return Ok(applied);
        };
        let name = next.name().to_string();
        conn.transaction(|conn| -> Result<(), MigrateError> {
            let version = conn.run_migration(&*next).map_err(MigrateError::Step)?;
            if version.to_string() == rekey::VERSION {
                rekey::run(conn)?;
            }
            Ok(())
        })
        .map_err(|e| DbError::Migrate(format!("{name}: {e}")))?;
        applied += 1;
    }
}

/// What stops one migration inside its transaction.
#[derive(Debug, thiserror::Error)]
enum MigrateError {
    #[error("{0}")]
    Step(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Rekey(#[from] rekey::RekeyError),
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
}

/// Reverts the newest applied migration (used by the migration tests, to write rows as the previous schema
/// had them); returns its version.
pub fn revert_last_migration(conn: &mut DbConnection) -> Result<String, DbError> {
    MigrationHarness::<Db>::revert_last_migration(conn, MIGRATIONS)
        .map(|version| version.to_string())
        .map_err(|e| DbError::Migrate(e.to_string()))
}

/// Reverts every applied migration (used by the migration tests).
pub fn revert_all_migrations(conn: &mut DbConnection) -> Result<(), DbError> {
    MigrationHarness::<Db>::revert_all_migrations(conn, MIGRATIONS)
        .map(drop)
        .map_err(|e| DbError::Migrate(e.to_string()))
}

/// Runs `job` in one transaction that, on SQLite, takes the write lock at its start (`BEGIN IMMEDIATE`), so
/// that the one writer waits its turn (the busy timeout) instead of failing to upgrade a read midway; the
/// connection's transaction manager knows of it, so transactions the job opens nest in it as savepoints. On
/// PostgreSQL it is an ordinary transaction.
pub fn write_transaction<T, E>(
    conn: &mut DbConnection,
    job: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager as _};
    let DbConnection::Sqlite(sqlite) = conn else {
        return conn.transaction(job);
    };
    AnsiTransactionManager::begin_transaction_sql(sqlite, "BEGIN IMMEDIATE")?;
    let outcome = job(conn);
    let DbConnection::Sqlite(sqlite) = conn else {
        return Err(diesel::result::Error::BrokenTransactionManager.into());
    };
    match outcome {
        Ok(done) => {
            AnsiTransactionManager::commit_transaction(sqlite)?;
            Ok(done)
        }
        Err(e) => {
            AnsiTransactionManager::rollback_transaction(sqlite)?;
            Err(e)
        }
    }
}

/// The form of a name that the `*_key` columns hold and every lookup compares: Unicode NFKC, then full case
/// folding, then NFKC again. So `josé` typed precomposed or with a combining accent, `straße` and `STRASSE`,
/// `admin` and full-width `ａｄｍｉｎ` are one name. Folding can undo a normalisation (a folded letter may take
/// a new composed form), hence the second pass, which makes the key a fixed point: `name_key(name_key(x)) ==
/// name_key(x)`.
pub fn name_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    let folded = caseless::default_case_fold_str(&name.nfkc().collect::<String>());
    folded.nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::name_key;

    #[test]
    fn look_alike_spellings_share_a_key() {
        for (a, b) in [
            ("jos\u{e9}", "jose\u{301}"),
            ("straße", "STRASSE"),
            ("admin", "ＡＤＭＩＮ"),
            ("ﬀ", "FF"),
            ("ẞ", "ss"),
            ("\u{2126}", "\u{3c9}"),
            ("ǅ", "Ǆ"),
        ] {
            assert_eq!(name_key(a), name_key(b), "{a} and {b}");
        }
        assert_ne!(
            name_key("admin"),
            name_key("\u{430}dmin"),
            "Cyrillic stays another letter"
        );
    }

    /// A key must be its own key, or a stored key would not be found by typing it.
    #[test]
    fn a_key_is_a_fixed_point() {
        for name in [
            "\u{1fc3}",
            "\u{345}",
            "ΐ",
            "İstanbul",
            "ǰ",
            "ﬃ",
            "Ⅻ",
            "㎒",
            "\u{1e9e}",
            "ꭰ",
        ] {
            let key = name_key(name);
            assert_eq!(name_key(&key), key, "{name}");
        }
    }
}
