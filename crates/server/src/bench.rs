//! Hidden `crm-auth bench ...` commands behind `cargo xtask bench`: the floors the endpoints are measured
//! against (the database's own rate for the query or commit an endpoint needs, through the server's own pool;
//! the Argon2id rate of this machine), bulk seeding for the growth runs, and a scratch PostgreSQL database
//! per run.
//!
//! Every command prints one line of `key=value` pairs on stdout, which the xtask reads.

#![expect(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use crm_auth_core::{AuthMethod, digest_key, new_id};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

use crate::clock::{Clock as _, SystemClock};
use crate::db::api_key::{self, ApiKeyRow};
use crate::db::schema::{api_keys, sessions, user_units, users};
use crate::db::session::{self, Session};
use crate::db::user::{self, Membership, User};
use crate::db::{self, Backend, DbConnection, Pool, name_key, organisation};
use crate::password::{NoObserver, PasswordHasher};
use crate::settings::Settings;

/// The organisation and user `crm-auth demo` creates; seeded rows hang off them.
const DEMO_ORG: &str = "demo";
const DEMO_USER: &str = "admin";

/// Rows per INSERT statement and statements per transaction when seeding.
const ROWS_PER_STATEMENT: usize = 1_000;
const STATEMENTS_PER_TRANSACTION: usize = 20;

/// Sessions each thread of `db --op rotate` keeps rotating.
const ROTATE_SESSIONS_PER_THREAD: usize = 8;

/// Session ids `db --op read` cycles through.
const READ_SAMPLE: i64 = 20_000;

/// The hidden measurement commands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Run one endpoint's database work directly through a pool built like the server's, in N threads, and
    /// print ops/s.
    Db {
        /// Which query or commit.
        #[arg(long, value_enum)]
        op: DbOp,
        /// Threads, each checking a connection out of the pool per operation as a request does.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// How long to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Stop after this many successful operations, whatever the time.
        #[arg(long, default_value_t = 10_000_000)]
        max_ops: u64,
    },
    /// Verify passwords with the configured Argon2id parameters on the server's hashing pool, one caller per
    /// hashing thread, and print the time per hash.
    Hash {
        /// Hashing threads; default one per core, as the server.
        #[arg(long)]
        threads: Option<usize>,
        /// How long to run.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Bulk-insert rows in big transactions: users (password read from stdin), sessions and keys of the demo
    /// organisation. Run `crm-auth demo` first.
    Seed {
        /// Users named `bench-00000`, ... in the demo unit, all with the same password.
        #[arg(long, default_value_t = 0)]
        users: usize,
        /// Live sessions of the demo user.
        #[arg(long, default_value_t = 0)]
        sessions: usize,
        /// Web API keys of the demo user (random, never shown).
        #[arg(long, default_value_t = 0)]
        keys: usize,
        /// Read the users' password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print the settings a run depends on: pool, workers, hashing, and the durability settings as the
    /// database reports them on a pooled connection.
    Describe,
    /// Create an empty PostgreSQL database.
    CreateDatabase {
        /// A URL of the server's maintenance database (e.g. postgres://postgres@127.0.0.1:5432/postgres).
        #[arg(long)]
        admin_url: String,
        /// The new database's name (letters, digits and `_`).
        name: String,
    },
    /// Drop a PostgreSQL database, disconnecting its sessions.
    DropDatabase {
        /// A URL of the server's maintenance database.
        #[arg(long)]
        admin_url: String,
        /// The database's name.
        name: String,
    },
}

/// The database work of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DbOp {
    /// Validate's session lookup by id.
    Read,
    /// A login's session insert (one durable commit).
    Insert,
    /// Refresh's compare-and-set on the generation (one durable commit).
    Rotate,
}

/// Runs a bench command.
pub fn run(settings: &Settings, command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Db {
            op,
            concurrency,
            seconds,
            max_ops,
        } => db_rate(settings, op, concurrency.max(1), seconds, max_ops),
        BenchCommand::Hash { threads, seconds } => hash_rate(
            settings,
            threads.unwrap_or_else(|| settings.hash_threads()),
            seconds,
        ),
        BenchCommand::Seed {
            users,
            sessions,
            keys,
            password_stdin,
        } => seed(settings, users, sessions, keys, password_stdin),
        BenchCommand::Describe => describe(settings),
        BenchCommand::CreateDatabase { admin_url, name } => {
            scratch_database(&admin_url, &format!("CREATE DATABASE {}", checked_name(&name)?))
        }
        BenchCommand::DropDatabase { admin_url, name } => scratch_database(
            &admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", checked_name(&name)?),
        ),
    }
}

fn describe(settings: &Settings) -> anyhow::Result<()> {
    let pool = pool(settings)?;
    let conn = &mut *pool.get()?;
    let mut text = |sql: &str| -> anyhow::Result<String> {
        let value: String =
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(sql)).get_result(conn)?;
        Ok(value.split_whitespace().collect::<Vec<_>>().join("_"))
    };
    let database = match settings_backend(settings) {
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
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        n => n,
    };
    println!(
        "backend={} pool_size={} http_workers={workers} hash_threads={} argon2=m{}_t{}_p{} {database}",
        settings_backend(settings),
        settings.database.pool_size,
        settings.hash_threads(),
        a.m_kib,
        a.t,
        a.p,
    );
    Ok(())
}

fn checked_name(name: &str) -> anyhow::Result<&str> {
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

fn scratch_database(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let mut admin = diesel::PgConnection::establish(admin_url)
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact(admin_url)))?;
    admin.batch_execute(sql)?;
    println!("ok");
    Ok(())
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if url[start + 3..at].contains(':') => {
            let user_end = start + 3 + url[start + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn pool(settings: &Settings) -> anyhow::Result<Pool> {
    let backend = Backend::from_url(settings.database.url.expose())?;
    let pool = db::build_pool(backend, settings.database.pool_size)?;
    db::run_migrations(&mut *pool.get()?)?;
    Ok(pool)
}

/// A session of the demo user in the demo unit, opened by the demo user's newest live key: the shape of the
/// rows a key login writes.
fn template(conn: &mut DbConnection, now: i64) -> anyhow::Result<Session> {
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
    })
}

fn fresh(template: &Session) -> Session {
    Session {
        id: new_id(),
        ..template.clone()
    }
}

fn db_rate(
    settings: &Settings,
    op: DbOp,
    concurrency: usize,
    seconds: f64,
    max_ops: u64,
) -> anyhow::Result<()> {
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
                while Instant::now() < deadline && ops.load(Ordering::Relaxed) < max_ops {
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
    let elapsed = started.elapsed().as_secs_f64();
    let ops = ops.into_inner();
    println!(
        "op={} backend={} concurrency={concurrency} pool_size={} seconds={elapsed:.3} ops={ops} errors={} ops_per_sec={:.1}",
        op.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned()),
        settings_backend(settings),
        settings.database.pool_size,
        errors.into_inner(),
        ops as f64 / elapsed
    );
    Ok(())
}

fn settings_backend(settings: &Settings) -> &'static str {
    Backend::from_url(settings.database.url.expose()).map_or("unknown", |b| b.name())
}

/// The password every hashing run checks.
const HASH_PASSWORD: &str = "correct horse battery staple";

fn hash_rate(settings: &Settings, threads: usize, seconds: f64) -> anyhow::Result<()> {
    let threads = threads.max(1);
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
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            let (hashes, failures, barrier, check) = (&hashes, &failures, &barrier, &check);
            handles.push(scope.spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread().build()?;
                // The first hash of a thread allocates its working memory; the server pays that once too.
                check(&rt);
                barrier.wait();
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
    let elapsed = started.elapsed().as_secs_f64();
    let hashes = hashes.into_inner();
    println!(
        "threads={threads} m_kib={} t={} p={} seconds={elapsed:.3} hashes={hashes} failures={} \
         hashes_per_sec={:.2} ms_per_hash={:.2}",
        argon2.m_kib,
        argon2.t,
        argon2.p,
        failures.into_inner(),
        hashes as f64 / elapsed,
        elapsed * 1000.0 * threads as f64 / hashes.max(1) as f64
    );
    Ok(())
}

fn seed(
    settings: &Settings,
    users: usize,
    sessions_wanted: usize,
    keys: usize,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let conn = &mut *pool(settings)?.get()?;
    let now = SystemClock.now();
    let template = template(conn, now)?;
    let started = Instant::now();
    if users > 0 {
        if !password_stdin {
            bail!("--users needs --password-stdin");
        }
        let mut password = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut password)?;
        let password = password.trim_end_matches(['\r', '\n']);
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
            DbConnection::Postgres(c) => diesel::insert_into(users::table).values(chunk).execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(users::table).values(chunk).execute(c),
        })?;
        insert_chunked(conn, &memberships, |conn, chunk| match conn {
            DbConnection::Postgres(c) => diesel::insert_into(user_units::table).values(chunk).execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(user_units::table).values(chunk).execute(c),
        })?;
    }
    let mut inserted = 0;
    while inserted < sessions_wanted {
        let n = (sessions_wanted - inserted).min(ROWS_PER_STATEMENT * STATEMENTS_PER_TRANSACTION);
        let rows: Vec<Session> = (0..n)
            .map(|i| {
                // Spread creation times over the last day, as a day of logins would.
                let created = now - ((inserted + i) % 86_000) as i64;
                Session {
                    id: new_id(),
                    created_at: created,
                    rotated_at: created,
                    expires_at: created + 7_200,
                    max_end_at: created + 86_400,
                    ..template.clone()
                }
            })
            .collect();
        insert_chunked(conn, &rows, |conn, chunk| match conn {
            DbConnection::Postgres(c) => diesel::insert_into(sessions::table)
                .values(chunk.to_vec())
                .execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(sessions::table)
                .values(chunk.to_vec())
                .execute(c),
        })?;
        inserted += n;
    }
    let mut inserted_keys = 0;
    while inserted_keys < keys {
        let n = (keys - inserted_keys).min(ROWS_PER_STATEMENT * STATEMENTS_PER_TRANSACTION);
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
                }
            })
            .collect();
        insert_chunked(conn, &rows, |conn, chunk| match conn {
            DbConnection::Postgres(c) => diesel::insert_into(api_keys::table).values(chunk).execute(c),
            DbConnection::Sqlite(c) => diesel::insert_into(api_keys::table).values(chunk).execute(c),
        })?;
        inserted_keys += n;
    }
    if sessions_wanted + keys > 0 {
        // Fresh statistics, as a database that grew over time would have,
        // and its write-ahead log checkpointed, as it would be after steady traffic rather than one burst.
        conn.batch_execute(match conn {
            DbConnection::Postgres(_) => "ANALYZE",
            DbConnection::Sqlite(_) => "PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE)",
        })?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "users={users} sessions={sessions_wanted} keys={keys} seconds={elapsed:.3} rows_per_sec={:.0}",
        (users + sessions_wanted + keys) as f64 / elapsed.max(1e-9)
    );
    Ok(())
}

/// Inserts `rows` in one transaction, [`ROWS_PER_STATEMENT`] rows per statement.
fn insert_chunked<T>(
    conn: &mut DbConnection,
    rows: &[T],
    insert: impl Fn(&mut DbConnection, &[T]) -> QueryResult<usize>,
) -> anyhow::Result<()> {
    conn.transaction(|conn| {
        rows.chunks(ROWS_PER_STATEMENT)
            .try_for_each(|chunk| insert(conn, chunk).map(drop))
    })?;
    Ok(())
}
