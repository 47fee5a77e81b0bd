//! The floors the endpoints are measured against, run in this process through the server's own library: the
//! database's own rate for the query or commit an endpoint needs (through a pool built like the server's), the
//! Argon2id rate of this machine, bulk seeding for the growth runs, and a scratch PostgreSQL database per run.
//!
//! Each measurement also renders itself as one line of `key=value` pairs, which the bench prints as it goes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use crm_auth_core::{AuthMethod, Role, digest_key, new_id, new_session_id};
use crm_auth_server::clock::{Clock as _, SystemClock};
use crm_auth_server::db::api_key::{self, ApiKeyRow};
use crm_auth_server::db::schema::{api_keys, sessions, user_units, users};
use crm_auth_server::db::session::{self, Session};
use crm_auth_server::db::user::{self, Membership, User};
use crm_auth_server::db::{self, Backend, DbConnection, Pool, name_key, organisation};
use crm_auth_server::password::{NoObserver, PasswordHasher};
use crm_auth_server::settings::Settings;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

/// The organisation and user `crm-auth demo` creates; seeded rows hang off them.
const DEMO_ORG: &str = "demo";
/// See [`DEMO_ORG`].
const DEMO_USER: &str = "admin";

/// Rows per INSERT statement when seeding.
const ROWS_PER_STATEMENT: usize = 1_000;
/// INSERT statements per transaction when seeding.
const STATEMENTS_PER_TRANSACTION: usize = 20;

/// Sessions each thread of the rotate floor keeps rotating.
const ROTATE_SESSIONS_PER_THREAD: usize = 8;

/// Session ids the read floor cycles through.
const READ_SAMPLE: i64 = 20_000;

/// The password every hashing run checks.
const HASH_PASSWORD: &str = "correct horse battery staple";

/// The database work of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbOp {
    /// Validate's session lookup by id.
    Read,
    /// A login's session insert (one durable commit).
    Insert,
    /// Refresh's compare-and-set on the generation (one durable commit).
    Rotate,
    /// The administration API's first page of 50 users of the demo organisation, with their units.
    ListUsers,
}

impl DbOp {
    /// The name in the floor's label (`D_read`) and its line.
    pub fn name(self) -> &'static str {
        match self {
            DbOp::Read => "read",
            DbOp::Insert => "insert",
            DbOp::Rotate => "rotate",
            DbOp::ListUsers => "list_users",
        }
    }
}

/// What one database floor measured.
#[derive(Clone, Debug)]
pub struct DbRate {
    /// Which work.
    pub op: DbOp,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Threads.
    pub concurrency: usize,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Operations that succeeded.
    pub ops: u64,
    /// Operations that failed (SQLite's busy timeout under contention, say).
    pub errors: u64,
}

impl DbRate {
    /// Successful operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds.max(1e-9)
    }
}

impl fmt::Display for DbRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "op={} backend={} concurrency={} pool_size={} seconds={:.3} ops={} errors={} ops_per_sec={:.1}",
            self.op.name(),
            self.backend,
            self.concurrency,
            self.pool_size,
            self.seconds,
            self.ops,
            self.errors,
            self.ops_per_sec()
        )
    }
}

/// What one hashing floor measured.
#[derive(Clone, Debug)]
pub struct HashRate {
    /// Hashing threads.
    pub threads: usize,
    /// Argon2id memory, KiB.
    pub m_kib: u32,
    /// Argon2id passes.
    pub t: u32,
    /// Argon2id lanes.
    pub p: u32,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Verifications done.
    pub hashes: u64,
    /// Verifications that did not answer `true`.
    pub failures: u64,
}

impl HashRate {
    /// Verifications per second over every thread.
    pub fn hashes_per_sec(&self) -> f64 {
        self.hashes as f64 / self.seconds.max(1e-9)
    }

    /// Milliseconds one thread spends on one verification.
    pub fn ms_per_hash(&self) -> f64 {
        self.seconds * 1000.0 * self.threads as f64 / self.hashes.max(1) as f64
    }
}

impl fmt::Display for HashRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "threads={} m_kib={} t={} p={} seconds={:.3} hashes={} failures={} hashes_per_sec={:.2} \
             ms_per_hash={:.2}",
            self.threads,
            self.m_kib,
            self.t,
            self.p,
            self.seconds,
            self.hashes,
            self.failures,
            self.hashes_per_sec(),
            self.ms_per_hash()
        )
    }
}

/// The settings a run depends on, as one line: pool, workers, hashing, and the durability settings as the
/// database reports them on a pooled connection.
pub fn describe(settings: &Settings) -> Result<String> {
    let pool = pool(settings)?;
    let conn = &mut *pool.get()?;
    let mut text = |sql: &'static str| -> Result<String> {
        let value: String =
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(sql)).get_result(conn)?;
        Ok(value.split_whitespace().collect::<Vec<_>>().join("_"))
    };
    let database = match backend_name(settings) {
        "sqlite" => format!(
            "database_version={} journal_mode={} synchronous={} busy_timeout_ms={}",
            text("sqlite_version()")?,
            text("(SELECT journal_mode FROM pragma_journal_mode())")?,
            match text("(SELECT CAST(synchronous AS TEXT) FROM pragma_synchronous())")?.as_str() {
                "0" => "OFF",
                "1" => "NORMAL",
                "2" => "FULL",
                "3" => "EXTRA",
                _ => "unknown",
            },
            text("(SELECT CAST(timeout AS TEXT) FROM pragma_busy_timeout())")?,
        ),
        _ => format!(
            "database_version={} fsync={} synchronous_commit={} wal_sync_method={} full_page_writes={} \
             shared_buffers={} connection_tls={}",
            text("current_setting('server_version')")?,
            text("current_setting('fsync')")?,
            text("current_setting('synchronous_commit')")?,
            text("current_setting('wal_sync_method')")?,
            text("current_setting('full_page_writes')")?,
            text("current_setting('shared_buffers')")?,
            text(
                "(SELECT CASE WHEN ssl THEN 'on' ELSE 'off' END FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
            )?,
        ),
    };
    let a = &settings.auth.argon2;
    let workers = match settings.http.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    Ok(format!(
        "backend={} pool_size={} http_workers={workers} hash_threads={} argon2=m{}_t{}_p{} {database}",
        backend_name(settings),
        settings.database.pool_size,
        settings.hash_threads(),
        a.m_kib,
        a.t,
        a.p,
    ))
}

/// Creates an empty PostgreSQL database named `name` on the server of `admin_url`.
pub fn create_database(admin_url: &str, name: &str) -> Result<()> {
    // A database name cannot be a bound parameter; it is checked to be a plain identifier instead.
    scratch_database(admin_url, &format!("CREATE DATABASE {}", checked_name(name)?))
}

/// Drops the PostgreSQL database `name`, disconnecting its sessions.
pub fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    scratch_database(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", checked_name(name)?),
    )
}

/// Whether PostgreSQL accepts a connection at `admin_url`.
pub fn postgres_answers(admin_url: &str) -> bool {
    diesel::PgConnection::establish(&postgres_url(admin_url)).is_ok()
}

/// The admin URL with the server's short connect timeout, so that a PostgreSQL that is down fails fast.
fn postgres_url(admin_url: &str) -> String {
    match Backend::from_url(admin_url) {
        Ok(Backend::Postgres(url)) => url,
        _ => admin_url.to_owned(),
    }
}

/// `name` when it is lower-case letters, digits and `_`, starting with a letter: safe as an SQL identifier.
fn checked_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        bail!("database name {name:?} must be lower-case letters, digits and _");
    }
    Ok(name)
}

/// Runs one statement on the maintenance database.
fn scratch_database(admin_url: &str, sql: &str) -> Result<()> {
    let mut admin = diesel::PgConnection::establish(&postgres_url(admin_url))
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", crate::redact(admin_url)))?;
    admin.batch_execute(sql)?;
    Ok(())
}

/// A pool built as the server builds its own, on a migrated database.
fn pool(settings: &Settings) -> Result<Pool> {
    let pool = db::build_pool(
        db::ConnectionManager::from_settings(&settings.database)?,
        settings.database.pool_size,
    )?;
    db::run_migrations(&mut *pool.get()?)?;
    Ok(pool)
}

/// `sqlite` or `postgres`, from the settings' URL.
fn backend_name(settings: &Settings) -> &'static str {
    Backend::from_url(settings.database.url.expose()).map_or("unknown", |b| b.name())
}

/// A session of the demo user in the demo unit, opened by the demo user's newest live key: the shape of the
/// rows a key login writes.
fn template(conn: &mut DbConnection, now: i64) -> Result<Session> {
    let org =
        organisation::find_by_name(conn, DEMO_ORG)?.context("no demo organisation: run `crm-auth demo`")?;
    let admin = user::find_by_username(conn, &org.id, DEMO_USER)?.context("no demo user")?;
    let unit = user::find_default_unit(conn, &admin.id)?.context("the demo user has no default unit")?;
    let key = api_key::find_by_organisation(conn, &org.id)?
        .into_iter()
        .filter(|k| k.user_id == admin.id && k.revoked_at.is_none())
        .max_by_key(|k| k.created_at);
    Ok(Session {
        id: String::new(),
        organisation_id: org.id,
        user_id: admin.id,
        unit_id: unit.id,
        method: if key.is_some() {
            AuthMethod::WebApiKey
        } else {
            AuthMethod::Password
        },
        api_key_id: key.map(|k| k.id),
        username: admin.username,
        organisation_name: org.name,
        unit_name: unit.name,
        created_at: now,
        generation: 0,
        rotated_at: now,
        expires_at: now + 7_200,
        max_end_at: now + 86_400,
        ended_at: None,
        end_reason: None,
        refreshed_at: None,
        client: Some("127.0.0.1".to_owned()),
        unit_code: unit.code,
    })
}

/// The template with a new id, made as the server makes a session's.
fn fresh(template: &Session) -> Session {
    Session {
        id: new_session_id(),
        ..template.clone()
    }
}

/// Runs one endpoint's database work directly through a pool built like the server's, in `concurrency`
/// threads each checking a connection out per operation as a request does, for `seconds`.
pub fn db_rate(settings: &Settings, op: DbOp, concurrency: usize, seconds: f64) -> Result<DbRate> {
    let concurrency = concurrency.max(1);
    let pool = pool(settings)?;
    let now = SystemClock.now();
    let (read_ids, mut rotate_ids) = {
        let conn = &mut *pool.get()?;
        match op {
            DbOp::Read => {
                let ids: Vec<String> = sessions::table
                    .filter(sessions::ended_at.is_null())
                    .select(sessions::id)
                    .limit(READ_SAMPLE)
                    .load(conn)?;
                if ids.is_empty() {
                    bail!("no live session to read");
                }
                (ids, Vec::new())
            }
            DbOp::Insert => (Vec::new(), Vec::new()),
            DbOp::ListUsers => {
                let org = organisation::find_by_name(conn, DEMO_ORG)?
                    .context("no demo organisation: run `crm-auth demo`")?;
                (vec![org.id], Vec::new())
            }
            DbOp::Rotate => {
                let template = template(conn, now)?;
                let rows: Vec<Session> = (0..concurrency * ROTATE_SESSIONS_PER_THREAD)
                    .map(|_| fresh(&template))
                    .collect();
                conn.transaction(|conn| rows.iter().try_for_each(|row| session::create(conn, row)))?;
                (Vec::new(), rows.into_iter().map(|r| r.id).collect())
            }
        }
    };
    let insert_template = match op {
        DbOp::Insert => Some(template(&mut *pool.get()?, now)?),
        _ => None,
    };
    let read_ids = Arc::new(read_ids);
    let ops = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let barrier = Barrier::new(concurrency + 1);
    let duration = Duration::from_secs_f64(seconds.max(0.1));
    let mut started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..concurrency {
            let mine: Vec<String> = if op == DbOp::Rotate {
                rotate_ids
                    .drain(..ROTATE_SESSIONS_PER_THREAD.min(rotate_ids.len()))
                    .collect()
            } else {
                Vec::new()
            };
            let (pool, read_ids, template) = (&pool, &read_ids, &insert_template);
            let (ops, errors, barrier) = (&ops, &errors, &barrier);
            scope.spawn(move || {
                let mut generations = vec![0i64; mine.len()];
                let mut i = t * 7919;
                barrier.wait();
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    i = i.wrapping_add(1);
                    let ok = match pool.get() {
                        Err(_) => false,
                        Ok(mut conn) => match op {
                            DbOp::Read => {
                                let id = &read_ids[i % read_ids.len()];
                                session::find_by_id(&mut conn, id)
                                    .is_ok_and(|s| s.is_some_and(|s| s.ended_at.is_none()))
                            }
                            DbOp::Insert => template
                                .as_ref()
                                .is_some_and(|t| session::create(&mut conn, &fresh(t)).is_ok()),
                            DbOp::Rotate => {
                                let k = i % mine.len();
                                let done = session::update_rotate(
                                    &mut conn,
                                    &mine[k],
                                    generations[k],
                                    now,
                                    now + 7_200,
                                );
                                // Only a write that happened moves the generation on; a failed one (the
                                // busy timeout) is retried from the same generation.
                                let done = done.unwrap_or(false);
                                if done {
                                    generations[k] += 1;
                                }
                                done
                            }
                            DbOp::ListUsers => list_users(&mut conn, &read_ids[0]).is_ok(),
                        },
                    };
                    if ok {
                        ops.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        barrier.wait();
        started = Instant::now();
        // The scope joins every thread before it returns.
    });
    Ok(DbRate {
        op,
        backend: backend_name(settings),
        concurrency,
        pool_size: settings.database.pool_size,
        seconds: started.elapsed().as_secs_f64(),
        ops: ops.into_inner(),
        errors: errors.into_inner(),
    })
}

/// The database work of `GET /admin/v1/organisations/{org}/users?limit=50`: one more row than the page
/// holds (to know whether another follows), then the page's units in one statement.
fn list_users(conn: &mut DbConnection, organisation_id: &str) -> QueryResult<usize> {
    let page = user::page_in(conn, organisation_id, None, 51)?;
    let ids: Vec<&str> = page.iter().take(50).map(|u| u.id.as_str()).collect();
    Ok(user::units_of(conn, &ids)?.len())
}

/// Verifies passwords with the configured Argon2id parameters on the server's hashing pool, one caller per
/// hashing thread (one per core unless the settings say otherwise), for `seconds`.
pub fn hash_rate(settings: &Settings, seconds: f64) -> Result<HashRate> {
    let threads = settings.hash_threads().max(1);
    let argon2 = &settings.auth.argon2;
    let hasher = PasswordHasher::start(argon2, threads, Arc::new(NoObserver))?;
    let phc = PasswordHasher::hash_blocking(argon2, HASH_PASSWORD)?;
    let hashes = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let barrier = Barrier::new(threads + 1);
    let duration = Duration::from_secs_f64(seconds.max(0.1));
    let check = |rt: &tokio::runtime::Runtime| {
        rt.block_on(hasher.verify(HASH_PASSWORD.to_owned(), Some(phc.clone())))
            .unwrap_or(false)
    };
    let mut started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (hashes, failures, barrier, check) = (&hashes, &failures, &barrier, &check);
            handles.push(scope.spawn(move || -> Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().build();
                // The first hash of a thread allocates its working memory; the server pays that once too.
                if let Ok(rt) = &rt {
                    check(rt);
                }
                // Every thread reaches the barrier, even one without a runtime, or the others wait for ever.
                barrier.wait();
                let rt = rt?;
                let deadline = Instant::now() + duration;
                while Instant::now() < deadline {
                    if !check(&rt) {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    hashes.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }));
        }
        barrier.wait();
        started = Instant::now();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a hashing thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(HashRate {
        threads,
        m_kib: argon2.m_kib,
        t: argon2.t,
        p: argon2.p,
        seconds: started.elapsed().as_secs_f64(),
        hashes: hashes.into_inner(),
        failures: failures.into_inner(),
    })
}

/// What to bulk-insert for the demo organisation (run `crm-auth demo` first).
#[derive(Debug, Default)]
pub struct Seed<'a> {
    /// Users named `bench-00000`, ... in the demo unit, all with this password.
    pub users: Option<(usize, &'a str)>,
    /// Live sessions of the demo user.
    pub sessions: usize,
    /// Web API keys of the demo user (random, never shown).
    pub keys: usize,
}

/// Bulk-inserts rows in big transactions and returns a `key=value` line of what it did.
pub fn seed(settings: &Settings, wanted: &Seed<'_>) -> Result<String> {
    let conn = &mut *pool(settings)?.get()?;
    let now = SystemClock.now();
    let template = template(conn, now)?;
    let started = Instant::now();
    let mut users_inserted = 0;
    if let Some((users, password)) = wanted.users {
        if password.is_empty() {
            bail!("the password must not be empty");
        }
        let phc = PasswordHasher::hash_blocking(&settings.auth.argon2, password)?;
        let rows: Vec<(User, Membership)> = (0..users)
            .map(|i| {
                let username = format!("bench-{i:05}");
                let user = User {
                    id: new_id(),
                    organisation_id: template.organisation_id.clone(),
                    username_key: name_key(&username),
                    username,
                    password_hash: Some(phc.clone()),
                    is_active: true,
                    created_at: now,
                    role: Role::Member,
                };
                let membership = Membership {
                    user_id: user.id.clone(),
                    unit_id: template.unit_id.clone(),
                    is_default: true,
                };
                (user, membership)
            })
            .collect();
        let (user_rows, memberships): (Vec<User>, Vec<Membership>) = rows.into_iter().unzip();
        insert_chunked(conn, &user_rows, |conn, chunk| match conn {
            // Owned: the role column converts on the way in, which diesel does for owned values only.
            DbConnection::Postgres(c) => diesel::insert_into(users::table)
                .values(chunk.to_vec())
                .execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(users::table)
                .values(chunk.to_vec())
                .execute(c),
        })?;
        insert_chunked(conn, &memberships, |conn, chunk| match conn {
            DbConnection::Postgres(c) => diesel::insert_into(user_units::table).values(chunk).execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(user_units::table).values(chunk).execute(c),
        })?;
        users_inserted = users;
    }
    let mut inserted = 0;
    while inserted < wanted.sessions {
        let n = (wanted.sessions - inserted).min(ROWS_PER_STATEMENT * STATEMENTS_PER_TRANSACTION);
        let rows: Vec<Session> = (0..n)
            .map(|i| {
                // Spread creation times over the last day, as a day of logins would; ids made as the
                // server makes them, so the index has the shape a day of logins gives it.
                let created = now - ((inserted + i) % 86_000) as i64;
                Session {
                    id: new_session_id(),
                    created_at: created,
                    rotated_at: created,
                    expires_at: created + 7_200,
                    max_end_at: created + 86_400,
                    ..template.clone()
                }
            })
            .collect();
        insert_chunked(conn, &rows, |conn, chunk| {
            session::create_batch(conn, chunk).map(|()| chunk.len())
        })?;
        inserted += n;
    }
    let mut inserted_keys = 0;
    while inserted_keys < wanted.keys {
        let n = (wanted.keys - inserted_keys).min(ROWS_PER_STATEMENT * STATEMENTS_PER_TRANSACTION);
        let rows: Vec<ApiKeyRow> = (0..n)
            .map(|_| {
                let secret = new_id();
                ApiKeyRow {
                    id: new_id(),
                    organisation_id: template.organisation_id.clone(),
                    user_id: template.user_id.clone(),
                    digest: digest_key(&secret),
                    prefix: secret.chars().take(6).collect(),
                    created_at: now,
                    revoked_at: None,
                    last_used_at: None,
                    name: None,
                    expires_at: None,
                }
            })
            .collect();
        insert_chunked(conn, &rows, |conn, chunk| match conn {
            DbConnection::Postgres(c) => diesel::insert_into(api_keys::table).values(chunk).execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(api_keys::table).values(chunk).execute(c),
        })?;
        inserted_keys += n;
    }
    if users_inserted + wanted.sessions + wanted.keys > 0 {
        // Fresh statistics, as a database that grew over time would have,
        // and its write-ahead log checkpointed, as it would be after steady traffic rather than one burst.
        conn.batch_execute(match conn {
            DbConnection::Postgres(_) => "ANALYZE",
            DbConnection::Sqlite(_) => "PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE)",
        })?;
        // PostgreSQL would otherwise write the burst's pages back during the next figure, whose commits
        // then wait behind that I/O. CHECKPOINT needs a superuser or pg_checkpoint; without either the
        // figure runs as it is and says so.
        if let DbConnection::Postgres(_) = conn
            && let Err(e) = conn.batch_execute("CHECKPOINT")
        {
            eprintln!("note: no CHECKPOINT after seeding ({e}); the next figure shares the disk with it");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(format!(
        "users={users_inserted} sessions={} keys={} seconds={elapsed:.3} rows_per_sec={:.0}",
        wanted.sessions,
        wanted.keys,
        (users_inserted + wanted.sessions + wanted.keys) as f64 / elapsed.max(1e-9)
    ))
}

/// How many sessions the database of `settings` holds.
pub fn session_count(settings: &Settings) -> Result<i64> {
    let conn = &mut db::ConnectionManager::from_settings(&settings.database)?.establish()?;
    Ok(sessions::table.count().get_result(conn)?)
}

/// Inserts `rows` in one transaction, [`ROWS_PER_STATEMENT`] rows per statement.
fn insert_chunked<T>(
    conn: &mut DbConnection,
    rows: &[T],
    insert: impl Fn(&mut DbConnection, &[T]) -> QueryResult<usize>,
) -> Result<()> {
    conn.transaction(|conn| {
        rows.chunks(ROWS_PER_STATEMENT)
            .try_for_each(|chunk| insert(conn, chunk).map(drop))
    })?;
    Ok(())
}
