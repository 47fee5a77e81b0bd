//! `bench [--quick] [--write] [--backend sqlite|postgres]` (`cargo xtask bench`): the service's throughput,
//! latency and memory, each figure set beside a floor measured in the same run.
//!
//! Floors: B, the throughput of `GET /health/live` (same binary, same load generator, same concurrency);
//! D_read / D_insert / D_rotate, the database's own rate for the query or commit an endpoint needs, run through
//! a pool built like the server's ([`floors::db_rate`]); H, the Argon2id rate of this machine at the
//! configured parameters ([`floors::hash_rate`]). The server runs on SQLite, then on a fresh PostgreSQL
//! database that is dropped afterwards. wrk drives the load; a figure never depends on another run.

mod load;
mod report;

use crm_auth_core::routes;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use reqwest::blocking::Client;
use reqwest::header::AUTHORIZATION;

use self::load::{Load, Run, Script, Wrk};
use self::report::{BackendReport, Check, Comparison, CoreRatios, Floor, Machine, Report};
use crate::api;
use crate::floors::{self, DbOp, Seed};
use crate::server::{Demo, Instance, Memory, ScratchDatabase, Server};
use crm_auth_server::settings::Settings;

/// Where the bench finds PostgreSQL's maintenance database: the variable the tests read.
const POSTGRES_URL_VAR: &str = "CRM_AUTH_TEST_POSTGRES_URL";

/// The maintenance database when [`POSTGRES_URL_VAR`] is unset, as for the tests.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Clients of every throughput run but the password logins.
const CLIENTS: usize = 32;

/// Clients of the two password-login runs.
const LOGIN_CLIENTS: [usize; 2] = [8, 256];

/// Bench users: each password-login client cycles through its share, so that the logins spread over many
/// accounts. A further run sends every login of [`LOGIN_CLIENTS`]`[1]` clients to one user, as the workers of an
/// integration sharing one service user do: those take turns at the lockout's check slots.
const BENCH_USERS: usize = 1024;

/// The retention run's settings: a session lives 5 s and stays stored 5 s after, and the purge runs every
/// second, so what is stored levels off at about 11 s of logins, well within the first half of the run.
const RETENTION_SETTINGS: [(&str, &str); 3] = [
    ("CRM_AUTH__SESSION__MAX_LIFETIME_SECONDS", "5"),
    ("CRM_AUTH__SESSION__RETENTION_SECONDS", "5"),
    ("CRM_AUTH__SESSION__PURGE_INTERVAL_SECONDS", "1"),
];

/// How long a session stays stored under [`RETENTION_SETTINGS`]: its lifetime, its retention and up to one
/// purge interval.
const RETENTION_WINDOW_SECONDS: u64 = 11;

/// Key logins with 1,000,000 sessions stored, against the empty database (B-normalised): the least
/// acceptable ratio. Time-ordered session ids keep the insert at the end of the id index.
const KEY_LOGIN_GROWTH_TARGET: f64 = 0.9;

/// Validate with the sessions stored, against the empty database (B-normalised): the least acceptable ratio.
const VALIDATE_GROWTH_TARGET: f64 = 0.8;

/// Users in the import run's file, each with a bcrypt `password_hash` line.
const IMPORT_USERS: usize = 100_000;

/// The longest the import of [`IMPORT_USERS`] users may take, seconds (the contract's figure).
const IMPORT_SECONDS_LIMIT: f64 = 60.0;

/// Users stored for the administration API's list run.
const ADMIN_USERS: usize = 100_000;

/// Clients creating users: each creation hashes a password, so this is the narrow password-login run's count.
const CREATE_CLIENTS: usize = LOGIN_CLIENTS[0];

/// The least acceptable ratio of the users list (a page of 50) to D_list: the endpoint also checks the
/// caller's token, session, role and organisation, four short reads besides the floor's two.
const LIST_USERS_TARGET: f64 = 0.5;

/// The least acceptable ratio of user creation to H: one Argon2id hash and one transaction of a few rows.
const CREATE_USER_TARGET: f64 = 0.85;

/// Largest resident memory allowed while 256 clients log in.
const LOGIN_RSS_LIMIT_MIB: f64 = 512.0;

/// How long each kind of run lasts.
struct Plan {
    /// `quick` or `full`.
    mode: &'static str,
    /// Each throughput run and floor, seconds.
    seconds: u64,
    /// Password logins at 8 clients, seconds.
    login_seconds: u64,
    /// Password logins at 256 clients, seconds.
    login_wide_seconds: u64,
    /// Tokens validated in turn.
    validate_tokens: usize,
    /// Sessions refreshed in turn (each answer's token goes back into the queue).
    refresh_tokens: usize,
    /// Sessions and keys stored for the growth runs.
    growth: (usize, usize),
    /// The retention run: key-login runs back to back, and the seconds of each.
    retention: (usize, u64),
    /// Requests after which RSS is compared.
    memory_points: (u64, u64),
    /// Arguments for criterion.
    criterion: &'static [&'static str],
}

/// The quick plan: under three minutes.
const QUICK: Plan = Plan {
    mode: "quick",
    seconds: 3,
    login_seconds: 3,
    login_wide_seconds: 5,
    validate_tokens: 256,
    refresh_tokens: 512,
    growth: (100_000, 10_000),
    // Long enough that the window (about 11 s of logins) stays under a third of all the logins it checks.
    retention: (9, 5),
    memory_points: (20_000, 200_000),
    criterion: &["--warm-up-time", "0.3", "--measurement-time", "0.6"],
};

/// The full plan: under fifteen minutes.
const FULL: Plan = Plan {
    mode: "full",
    seconds: 8,
    login_seconds: 10,
    login_wide_seconds: 15,
    validate_tokens: 1024,
    refresh_tokens: 2048,
    growth: (1_000_000, 100_000),
    retention: (10, 6),
    memory_points: (100_000, 1_000_000),
    criterion: &["--warm-up-time", "1", "--measurement-time", "3"],
};

/// The command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Short runs (under three minutes) instead of the full plan (under fifteen).
    #[arg(long)]
    quick: bool,
    /// Also update docs/BENCHMARKS.md and docs/benchmarks.svg.
    #[arg(long)]
    write: bool,
    /// Only this backend (default: both).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Only this part, on a fresh database: print its figures, write no report.
    #[arg(long, value_enum)]
    only: Option<Part>,
    /// With --only: run this `crm-auth` binary instead of building the workspace's (to compare two builds).
    #[arg(long, requires = "only")]
    binary: Option<PathBuf>,
}

/// A part of the bench that can run alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// The password logins (of many users and of one) and the hashing floor around them.
    Logins,
    /// The administration API: listing users with many stored, creating users.
    Admin,
    /// The import of users with foreign password hashes.
    Import,
    /// Validate and key logins per signing algorithm.
    Algorithms,
    /// Validate, key logins and refresh on PostgreSQL directly and through PgBouncer in transaction mode
    /// (`database.prepared_statements = false`).
    Pgbouncer,
}

/// Which database the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// An SQLite file (WAL, `synchronous = FULL`).
    Sqlite,
    /// A fresh database on the PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The name used in the report.
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Whether this runs under CI, where a PostgreSQL that does not answer fails the run instead of being skipped.
fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "0" && !ci.eq_ignore_ascii_case("false"))
}

/// What every backend's run shares.
struct Context {
    /// The release `crm-auth` binary.
    bin: PathBuf,
    /// `target/bench`.
    out: PathBuf,
    /// The plan.
    plan: &'static Plan,
    /// The load generator.
    wrk: Wrk,
    /// PostgreSQL's maintenance database.
    admin_url: String,
}

/// Runs the task.
pub fn run(options: &Args) -> Result<()> {
    let started = Instant::now();
    let plan = if options.quick { &QUICK } else { &FULL };
    let backends = match options.backend {
        Some(backend) => vec![backend],
        None => vec![Backend::Sqlite, Backend::Postgres],
    };
    let root = crate::project_root()?;
    let out = root.join("target").join("bench");
    std::fs::create_dir_all(&out)?;
    let admin_url = std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
    if let Some(part) = options.only {
        let bin = match &options.binary {
            Some(bin) => bin.clone(),
            None => crate::release_binary()?,
        };
        return run_part(part, plan, &backends, bin, out, admin_url);
    }
    load::ensure_wrk()?;
    let bin = crate::release_binary()?;

    let mut report = Report {
        mode: plan.mode.to_owned(),
        started: utc_now(),
        machine: machine(&out)?,
        ..Report::default()
    };
    let cores = report.machine.cores;
    report.parameters = vec![
        (
            "clients".into(),
            format!("{CLIENTS} (password logins: 8 and 256, and 256 of one user)"),
        ),
        (
            "load generator threads".into(),
            format!("{} (one per core)", cores.min(CLIENTS)),
        ),
        (
            "run length".into(),
            format!(
                "{} s per figure; password logins {} s at 8 and {} s at 256 clients, of many users and of one",
                plan.seconds, plan.login_seconds, plan.login_wide_seconds
            ),
        ),
        (
            "token pools".into(),
            format!(
                "{} sessions validated in turn, {} sessions refreshed in turn, {BENCH_USERS} users for password logins \
                 (and the demo user alone)",
                plan.validate_tokens, plan.refresh_tokens
            ),
        ),
        (
            "growth".into(),
            format!("{} sessions and {} keys stored", plan.growth.0, plan.growth.1),
        ),
        (
            "retention".into(),
            format!(
                "key logins, {CLIENTS} clients, {} runs of {} s back to back on a fresh database with {}",
                plan.retention.0,
                plan.retention.1,
                RETENTION_SETTINGS
                    .iter()
                    .map(|(k, v)| format!(
                        "{} = {v}",
                        k.trim_start_matches("CRM_AUTH__")
                            .replace("__", ".")
                            .to_lowercase()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "import".into(),
            format!(
                "`crm-auth import` of {IMPORT_USERS} users with bcrypt `password_hash` lines in 10 units into a \
                 fresh database, then of the same file again"
            ),
        ),
        (
            "memory".into(),
            format!(
                "RSS after {} and after {} validate requests",
                plan.memory_points.0, plan.memory_points.1
            ),
        ),
        (
            "server".into(),
            "default configuration (log level info, to a file) but for the database URL and listen address"
                .into(),
        ),
    ];

    report.core = core_ratios(plan)?;

    let ctx = Context {
        bin,
        out: out.clone(),
        plan,
        wrk: Wrk {
            script_dir: out.clone(),
            threads: cores.max(1),
        },
        admin_url,
    };
    for backend in &backends {
        if *backend == Backend::Postgres && !floors::postgres_answers(&ctx.admin_url) {
            let why = format!("PostgreSQL does not answer at {}", crate::redact(&ctx.admin_url));
            if is_ci() {
                bail!("{why}");
            }
            eprintln!("note: {why}; skipping the PostgreSQL run");
            continue;
        }
        report.backends.push(run_backend(&ctx, *backend)?);
    }
    report.seconds = started.elapsed().as_secs_f64();

    let json = out.join("report.json");
    std::fs::write(&json, report.to_json()?)?;
    std::fs::write(out.join("benchmarks.svg"), report.to_svg())?;
    let block = report.to_markdown("benchmarks.svg");
    std::fs::write(out.join("BENCHMARKS.md"), &block)?;
    println!("{block}");
    for (backend, what, met) in report.verdicts() {
        if !met {
            println!("not met: [{backend}] {what}");
        }
    }
    eprintln!("wrote {}", json.display());
    if options.write {
        let docs = root.join("docs");
        std::fs::write(docs.join("benchmarks.svg"), report.to_svg())?;
        write_block(&docs.join("BENCHMARKS.md"), &block)?;
        eprintln!("wrote docs/BENCHMARKS.md and docs/benchmarks.svg");
    }
    eprintln!("bench took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The markers around the generated part of docs/BENCHMARKS.md; the text outside them is kept.
const BEGIN: &str = "<!-- cargo xtask bench --write: generated from here -->";
/// See [`BEGIN`].
const END: &str = "<!-- cargo xtask bench --write: generated up to here -->";

/// Replaces the generated block of `path` (or creates the file around it).
fn write_block(path: &Path, block: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{BEGIN}\n\n{block}\n{}", &old[..b], &old[e..]),
        _ => format!("# Benchmarks\n\n{BEGIN}\n\n{block}\n{END}\n{old}"),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// The current time in UTC as RFC 3339, from the `date` command (std has no calendar).
fn utc_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// What the machine is.
fn machine(out: &Path) -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
    let memory_mib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    Ok(Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory_mib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        rustc,
        wrk: load::wrk_version().unwrap_or_default(),
        fsyncs_per_sec: fsync_rate(out)?,
    })
}

/// fdatasync calls per second for one second of 4 KiB appends, bounded in count too.
fn fsync_rate(dir: &Path) -> Result<f64> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(1) && n < 100_000 {
        file.write_all(&block)?;
        file.sync_data()?;
        n += 1;
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// Runs the core library's criterion bench and reads the ratios it prints.
fn core_ratios(plan: &Plan) -> Result<CoreRatios> {
    let mut command = Command::new("cargo");
    command
        .args(["bench", "-p", "crm-auth-core", "--bench", "token", "--"])
        .args(plan.criterion)
        .current_dir(crate::project_root()?);
    let line = format!("{command:?}");
    eprintln!("$ {line}");
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    if !output.status.success() {
        bail!("{line} failed: {}", output.status);
    }
    let out = String::from_utf8_lossy(&output.stdout);
    let mut ratios = CoreRatios::default();
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("hmac_sha256_floor:") {
            ratios.floor_ns = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if let Some((name, rest)) = line.split_once(": ")
            && rest.contains("x the HMAC floor")
        {
            let ns = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            let ratio = rest
                .split_once("= ")
                .and_then(|(_, r)| r.trim_start().split('x').next())
                .and_then(|v| v.trim().parse().ok());
            let target = rest
                .split_once("(target ")
                .and_then(|(_, t)| t.split('x').next())
                .and_then(|v| v.parse().ok());
            if let (Some(ns), Some(ratio), Some(target)) = (ns, ratio, target) {
                eprintln!("core: {name} {ns} ns = {ratio}x HMAC (target {target}x)");
                ratios.ops.push((name.trim().to_owned(), ns, ratio, target));
            }
        }
    }
    if ratios.ops.is_empty() {
        bail!("the core bench printed no ratios:\n{out}");
    }
    Ok(ratios)
}

/// Opens `n` sessions by key login on 8 connections and returns their tokens.
fn key_tokens(base: &str, key: &str, n: usize) -> Result<Vec<String>> {
    let auth = api::basic(key);
    let url = format!("{base}{}", api::path(routes::API_KEY_TOKEN));
    let workers = 8;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (auth, url) = (&auth, &url);
                scope.spawn(move || -> Result<Vec<String>> {
                    let client = Client::builder().timeout(Duration::from_secs(60)).build()?;
                    let mut tokens = Vec::new();
                    for _ in (w..n).step_by(workers) {
                        let response = client.post(url).header(AUTHORIZATION, auth).send()?;
                        let status = response.status();
                        let body = response.text()?;
                        let token = api::token_of(&body)
                            .with_context(|| format!("key login answered {status}: {body}"))?;
                        tokens.push(token);
                    }
                    Ok(tokens)
                })
            })
            .collect();
        let mut all = Vec::with_capacity(n);
        for handle in handles {
            all.extend(
                handle
                    .join()
                    .map_err(|_| anyhow::anyhow!("a login thread panicked"))??,
            );
        }
        Ok(all)
    })
}

/// Waits until the server at `base` has hashed every password still queued and closed every connection of the
/// runs before (its `crm_auth_password_hashes_in_flight` gauge reads 0 and `crm_auth_http_connections_open` at
/// most 1, this wait's own, twice 200 ms apart), for at most `limit`. Requests that the load generator stopped
/// waiting for are still answered: a figure taken meanwhile would share the cores with them, and their
/// connections would count against the next run's at the per-address limit.
fn wait_idle(base: &str, limit: Duration) -> Result<()> {
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    let deadline = Instant::now() + limit;
    let mut idle_reads = 0;
    while idle_reads < 2 {
        if Instant::now() > deadline {
            bail!("the server at {base} was still answering earlier requests after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
        let metrics = client.get(format!("{base}/metrics")).send()?.text()?;
        let gauge = |name: &str| -> Result<i64> {
            let value = metrics
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("no {name} in /metrics"))?;
            value
                .trim()
                .parse()
                .with_context(|| format!("{name} reads {value:?}"))
        };
        let idle = gauge("crm_auth_password_hashes_in_flight")? == 0
            && gauge("crm_auth_http_connections_open")? <= 1;
        idle_reads = if idle { idle_reads + 1 } else { 0 };
    }
    Ok(())
}

/// An empty `dir` and, on PostgreSQL, a scratch database (dropped with it), with a server instance on both.
fn fresh_instance(
    ctx: &Context,
    backend: Backend,
    dir: &Path,
) -> Result<(Option<ScratchDatabase>, Instance)> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(ScratchDatabase::create(&ctx.admin_url)?),
    };
    let instance = Instance::new(
        &ctx.bin,
        &dir.join("data"),
        database.as_ref().map(|d| d.url.as_str()),
    )?;
    Ok((database, instance))
}

/// One backend: fresh database, server, token pools, every figure and floor, growth, memory.
fn run_backend(ctx: &Context, backend: Backend) -> Result<BackendReport> {
    let name = backend.name();
    let plan = ctx.plan;
    let dir = ctx.out.join(name);
    let (mut database, instance) = fresh_instance(ctx, backend, &dir)?;
    let demo = instance.demo()?;
    let server_settings = instance.settings()?;
    floors::seed(
        &server_settings,
        &Seed {
            users: Some((BENCH_USERS, &demo.password)),
            ..Seed::default()
        },
    )?;
    let settings = floors::describe(&server_settings)?;
    eprintln!("[{name}] {settings}");

    // The server's default log level: the bench measures the configuration it ships with.
    let server = instance.start(false, &dir.join("server.log"), None)?;
    let addr = server.addr;
    let base = server.url();
    std::thread::sleep(Duration::from_secs(1));
    let idle = server.memory()?;

    let validate_file = dir.join("validate-tokens.txt");
    let refresh_file = dir.join("refresh-tokens.txt");
    load::write_lines(
        &validate_file,
        &key_tokens(&base, &demo.key, plan.validate_tokens)?,
    )?;
    load::write_lines(&refresh_file, &key_tokens(&base, &demo.key, plan.refresh_tokens)?)?;

    let live = Script::Fixed {
        method: "GET",
        headers: Vec::new(),
    };
    let validate = Script::Bearer {
        tokens: validate_file.clone(),
    };
    let key_login = Script::Fixed {
        method: "POST",
        headers: vec![("Authorization".into(), api::basic(&demo.key))],
    };
    let refresh = Script::Rotating { tokens: refresh_file };
    let validate_path = api::path(routes::VALIDATE_TOKEN);
    let key_path = api::path(routes::API_KEY_TOKEN);
    let refresh_path = api::path(routes::REFRESH_TOKEN);

    let wrk = |label: &str, path: &str, script: &Script, connections: usize, seconds: u64, timeout: u64| {
        drive(
            ctx,
            name,
            label,
            &Run {
                addr,
                path,
                script,
                connections,
                seconds,
                timeout_seconds: timeout,
            },
        )
    };
    // A floor counts only the operations that succeeded; failures (SQLite's busy timeout under contention)
    // are reported beside it.
    let db_floor = |op: DbOp| -> Result<(f64, u64)> {
        let rate = floors::db_rate(&server_settings, op, CLIENTS, plan.seconds as f64)?;
        eprintln!("[{name}] D_{}: {rate}", op.name());
        Ok((rate.ops_per_sec(), rate.errors))
    };

    let mut r = BackendReport {
        backend: name.to_owned(),
        settings,
        ..BackendReport::default()
    };

    // Each endpoint runs right beside its floors, so that a change in the machine's load between pairs
    // moves both.
    let b = wrk(
        "health-live",
        routes::HEALTH_LIVE,
        &live,
        CLIENTS,
        plan.seconds,
        10,
    )?;
    let v = wrk("validate", &validate_path, &validate, CLIENTS, plan.seconds, 10)?;
    let (d_read, d_read_errors) = db_floor(DbOp::Read)?;
    let k = wrk(
        "web-api-key-token",
        &key_path,
        &key_login,
        CLIENTS,
        plan.seconds,
        10,
    )?;
    let (d_insert, d_insert_errors) = db_floor(DbOp::Insert)?;
    let f = wrk("refresh", &refresh_path, &refresh, CLIENTS, plan.seconds, 10)?;
    let (d_rotate, d_rotate_errors) = db_floor(DbOp::Rotate)?;
    let Logins {
        h_before,
        h_after,
        narrow: login_narrow,
        wide: login_wide,
        one_user: login_one_user,
        after: after_logins,
    } = password_logins(ctx, name, &server, &server_settings, &demo, &dir)?;
    let (h, ms_per_hash) = if h_after.0 > h_before.0 { h_after } else { h_before };

    let is_sqlite = backend == Backend::Sqlite;
    r.floors = vec![
        Floor {
            name: "B".into(),
            rate: b.rate(),
            what: format!("`GET /health/live`, {CLIENTS} clients"),
            detail: format!("p50 {:.2} ms, p99 {:.2} ms", b.p50_ms, b.p99_ms),
        },
        Floor {
            name: "D_read".into(),
            rate: d_read,
            what: format!("validate's session lookup by id, {CLIENTS} threads on the server's pool"),
            detail: format!("{d_read_errors} failed"),
        },
        Floor {
            name: "D_insert".into(),
            rate: d_insert,
            what: format!("a key login's session insert (one durable commit), {CLIENTS} threads"),
            detail: format!("{d_insert_errors} failed"),
        },
        Floor {
            name: "D_rotate".into(),
            rate: d_rotate,
            what: format!(
                "refresh's compare-and-set on the generation (one durable commit), {CLIENTS} threads"
            ),
            detail: format!("{d_rotate_errors} failed"),
        },
        Floor {
            name: "H".into(),
            rate: h,
            what: "Argon2id verifications per second on one hashing thread per core".into(),
            detail: format!(
                "{ms_per_hash:.1} ms per hash per core; the higher of {:.1} (before the logins) and {:.1} (after)",
                h_before.0, h_after.0
            ),
        },
    ];
    let compare =
        |endpoint: &str, load: &Load, clients: usize, floor: &str, floor_rate: f64, target: f64| Comparison {
            endpoint: endpoint.to_owned(),
            load: load.clone(),
            clients,
            floor: floor.to_owned(),
            floor_rate,
            target,
        };
    r.comparisons = vec![
        compare(
            "validate",
            &v,
            CLIENTS,
            "B",
            b.rate(),
            if is_sqlite { 0.35 } else { 0.20 },
        ),
        compare("validate", &v, CLIENTS, "D_read", d_read, 0.6),
        compare("web_api_key/token", &k, CLIENTS, "D_insert", d_insert, 0.6),
        compare("refresh", &f, CLIENTS, "D_rotate", d_rotate, 0.6),
    ];
    if is_sqlite {
        r.comparisons
            .push(compare("web_api_key/token", &k, CLIENTS, "B", b.rate(), 0.15));
        r.comparisons
            .push(compare("refresh", &f, CLIENTS, "B", b.rate(), 0.15));
    }
    r.comparisons.push(compare(
        "authentication/token",
        &login_narrow,
        LOGIN_CLIENTS[0],
        "H",
        h,
        0.85,
    ));
    r.comparisons.push(compare(
        "authentication/token",
        &login_wide,
        LOGIN_CLIENTS[1],
        "H",
        h,
        0.85,
    ));
    r.comparisons.push(compare(
        "authentication/token (one user)",
        &login_one_user,
        LOGIN_CLIENTS[1],
        "H",
        h,
        0.85,
    ));

    for (label, load) in [("validate", &v), ("web_api_key/token", &k), ("refresh", &f)] {
        r.checks.push(Check {
            what: format!("{label}: no errors at {CLIENTS} clients"),
            measured: format!("{} errors of {}", load.errors(), load.requests),
            required: "0".into(),
            met: load.errors() == 0,
        });
    }
    r.checks.push(Check {
        what: format!("validate p99 at {CLIENTS} clients <= 3x p99 of /health/live"),
        measured: format!(
            "{:.2} ms vs {:.2} ms ({:.2}x)",
            v.p99_ms,
            b.p99_ms,
            v.p99_ms / b.p99_ms.max(1e-9)
        ),
        required: "<= 3x".into(),
        met: v.p99_ms <= 3.0 * b.p99_ms,
    });
    for (clients, of, load) in [
        (LOGIN_CLIENTS[0], "", &login_narrow),
        (LOGIN_CLIENTS[1], "", &login_wide),
        (LOGIN_CLIENTS[1], " of one user", &login_one_user),
    ] {
        r.checks.push(Check {
            what: format!("password login{of} at {clients} clients: no errors or timeouts"),
            measured: format!(
                "{} errors ({} timeouts) of {}; p99 {:.0} ms",
                load.errors(),
                load.timeouts,
                load.requests,
                load.p99_ms
            ),
            required: "0".into(),
            met: load.errors() == 0 && load.requests > 0,
        });
    }
    let peak_mib = after_logins.peak_kib as f64 / 1024.0;
    r.checks.push(Check {
        what: "peak server RSS up to the end of the 256-client password logins".into(),
        measured: format!("{peak_mib:.1} MiB"),
        required: format!("< {LOGIN_RSS_LIMIT_MIB} MiB"),
        met: peak_mib < LOGIN_RSS_LIMIT_MIB,
    });
    let idle_mib = idle.rss_kib as f64 / 1024.0;
    r.checks.push(Check {
        what: "idle RSS (started, migrated, one second after its first answer)".into(),
        measured: format!("{idle_mib:.1} MiB"),
        required: "<= 30 MiB".into(),
        met: idle_mib <= 30.0,
    });

    // Memory: RSS after a first and after ten times as many requests (validate, the busiest endpoint).
    let (small, large) = plan.memory_points;
    let mut served = 0u64;
    let mut rss_at = Vec::new();
    for goal in [small, large] {
        let mut rounds = 0;
        while served < goal && rounds < 20 {
            let rate = v.rate().max(1000.0);
            let seconds = (((goal - served) as f64 / rate) * 1.05).ceil() as u64 + 1;
            let load = ctx.wrk.run(
                &format!("{name}-memory"),
                &Run {
                    addr,
                    path: &validate_path,
                    script: &validate,
                    connections: CLIENTS,
                    seconds: seconds.min(300),
                    timeout_seconds: 10,
                },
            )?;
            served += load.requests;
            rounds += 1;
        }
        let mem = server.memory()?;
        eprintln!(
            "[{name}] memory: RSS {:.1} MiB after {served} requests",
            mem.rss_kib as f64 / 1024.0
        );
        rss_at.push((served, mem.rss_kib as f64 / 1024.0));
    }
    if let [(n1, m1), (n2, m2)] = rss_at[..] {
        r.checks.push(Check {
            what: format!("RSS after {n2} requests within 10% of RSS after {n1}"),
            measured: format!("{m2:.1} MiB vs {m1:.1} MiB ({:+.1}%)", (m2 / m1 - 1.0) * 100.0),
            required: "within 10%".into(),
            met: (m2 / m1 - 1.0).abs() <= 0.10,
        });
    }

    // Growth: the same endpoints with many sessions and keys stored, each beside a fresh B.
    let (sessions, keys) = plan.growth;
    let seed_line = floors::seed(
        &server_settings,
        &Seed {
            users: None,
            sessions,
            keys,
        },
    )?;
    eprintln!("[{name}] seeded: {seed_line}");
    let b2 = wrk(
        "health-live-grown",
        routes::HEALTH_LIVE,
        &live,
        CLIENTS,
        plan.seconds,
        10,
    )?;
    let v2 = wrk(
        "validate-grown",
        &validate_path,
        &validate,
        CLIENTS,
        plan.seconds,
        10,
    )?;
    let k2 = wrk(
        "web-api-key-token-grown",
        &key_path,
        &key_login,
        CLIENTS,
        plan.seconds,
        10,
    )?;
    for (label, empty, grown, target) in [
        ("validate", &v, &v2, VALIDATE_GROWTH_TARGET),
        ("web_api_key/token", &k, &k2, KEY_LOGIN_GROWTH_TARGET),
    ] {
        let raw = grown.rate() / empty.rate().max(1e-9);
        let normalised = raw / (b2.rate() / b.rate().max(1e-9)).max(1e-9);
        r.checks.push(Check {
            what: format!(
                "{label} with {sessions} sessions and {keys} keys stored, against the empty database"
            ),
            measured: format!(
                "{:.0} vs {:.0} req/s = {raw:.2}; {normalised:.2} against B measured beside each",
                grown.rate(),
                empty.rate()
            ),
            required: format!(">= {target} (against B)"),
            met: normalised >= target,
        });
    }

    drop(server);
    if let Some(database) = &mut database {
        database.drop_now()?;
    }
    let admin = admin_run(ctx, backend)?;
    r.floors.extend(admin.floors);
    r.comparisons.extend(admin.comparisons);
    r.checks.extend(admin.checks);
    r.checks.extend(retention_run(ctx, backend)?);
    r.checks.extend(import_run(ctx, backend)?);
    r.checks.extend(algorithm_run(ctx, backend)?);
    Ok(r)
}

/// Drives the server with one wrk run and prints its figures.
fn drive(ctx: &Context, backend: &str, label: &str, run: &Run<'_>) -> Result<Load> {
    let load = ctx.wrk.run(&format!("{backend}-{label}"), run)?;
    eprintln!(
        "[{backend}] {label}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors ({} socket, {} status, {} timeouts)",
        load.rate(),
        load.p50_ms,
        load.p99_ms,
        load.errors(),
        load.socket_errors,
        load.status_errors,
        load.timeouts
    );
    Ok(load)
}

/// The password-login runs and the hashing floor taken on both sides of them.
struct Logins {
    /// H before the logins: hashes per second and ms per hash per core.
    h_before: (f64, f64),
    /// H after the logins (and after the server has hashed what was still queued).
    h_after: (f64, f64),
    /// [`LOGIN_CLIENTS`]`[0]` clients cycling through the bench users.
    narrow: Load,
    /// [`LOGIN_CLIENTS`]`[1]` clients cycling through the bench users.
    wide: Load,
    /// [`LOGIN_CLIENTS`]`[1]` clients logging in as the demo user.
    one_user: Load,
    /// The server's memory right after the last run.
    after: Memory,
}

/// Password logins at 8 clients and 256 clients of the [`BENCH_USERS`] seeded users, then 256 clients of the
/// demo user alone, with H taken before and after (the logins run long, so the higher one counts).
fn password_logins(
    ctx: &Context,
    name: &str,
    server: &Server,
    server_settings: &Settings,
    demo: &Demo,
    dir: &Path,
) -> Result<Logins> {
    let plan = ctx.plan;
    let base = server.url();
    let users_file = dir.join("users.txt");
    let one_user_file = dir.join("one-user.txt");
    load::write_lines(
        &users_file,
        &(0..BENCH_USERS)
            .map(|i| format!("bench-{i:05}"))
            .collect::<Vec<_>>(),
    )?;
    // wrk gives each of its threads every n-th line, so the one user is written once per client.
    load::write_lines(&one_user_file, &vec![demo.username.clone(); LOGIN_CLIENTS[1]])?;
    let logins = Script::Logins {
        users: users_file,
        password: demo.password.clone(),
        organisation: demo.organisation.clone(),
    };
    let one_user_logins = Script::Logins {
        users: one_user_file,
        password: demo.password.clone(),
        organisation: demo.organisation.clone(),
    };
    let path = api::path(routes::PASSWORD_TOKEN);
    let run = |label: &str, script: &Script, connections: usize, seconds: u64| {
        drive(
            ctx,
            name,
            label,
            &Run {
                addr: server.addr,
                path: &path,
                script,
                connections,
                seconds,
                timeout_seconds: 60,
            },
        )
    };
    let hash_floor = || hash_floor(name, server_settings, plan.seconds);
    let h_before = hash_floor()?;
    let narrow = run("password-login-8", &logins, LOGIN_CLIENTS[0], plan.login_seconds)?;
    // The logins still queued when wrk stopped would share the cores with the next run, and their connections
    // would count against the next run's 256 at the per-address limit (wrk then counts refused connections).
    wait_idle(&base, Duration::from_secs(60))?;
    let wide = run(
        "password-login-256",
        &logins,
        LOGIN_CLIENTS[1],
        plan.login_wide_seconds,
    )?;
    wait_idle(&base, Duration::from_secs(60))?;
    let one_user = run(
        "password-login-256-one-user",
        &one_user_logins,
        LOGIN_CLIENTS[1],
        plan.login_wide_seconds,
    )?;
    let after = server.memory()?;
    wait_idle(&base, Duration::from_secs(60))?;
    let h_after = hash_floor()?;
    Ok(Logins {
        h_before,
        h_after,
        narrow,
        wide,
        one_user,
        after,
    })
}

/// H on `backend`'s settings for `seconds`, printed: hashes per second and ms per hash per core.
fn hash_floor(backend: &str, settings: &Settings, seconds: u64) -> Result<(f64, f64)> {
    let rate = floors::hash_rate(settings, seconds as f64)?;
    eprintln!("[{backend}] H: {rate}");
    Ok((rate.hashes_per_sec(), rate.ms_per_hash()))
}

/// Runs one part of the bench alone on each backend and prints its checks; no report is written.
fn run_part(
    part: Part,
    plan: &'static Plan,
    backends: &[Backend],
    bin: PathBuf,
    out: PathBuf,
    admin_url: String,
) -> Result<()> {
    if part != Part::Import {
        load::ensure_wrk()?;
    }
    let ctx = Context {
        bin,
        out: out.clone(),
        plan,
        wrk: Wrk {
            script_dir: out,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        },
        admin_url,
    };
    if part == Part::Pgbouncer {
        for check in pgbouncer_run(&ctx)? {
            let verdict = if check.met { "met" } else { "NOT MET" };
            println!(
                "[postgres] {}: {} (required {}; {verdict})",
                check.what, check.measured, check.required
            );
        }
        return Ok(());
    }
    for &backend in backends {
        let checks = match part {
            Part::Import => import_run(&ctx, backend)?,
            Part::Admin => {
                let figures = admin_run(&ctx, backend)?;
                let mut checks: Vec<Check> = figures
                    .comparisons
                    .iter()
                    .map(|c| Check {
                        what: format!("{} against {}", c.endpoint, c.floor),
                        measured: format!("{:.1}/s of {:.1} = {:.2}", c.load.rate(), c.floor_rate, c.ratio()),
                        required: format!(">= {}", c.target),
                        met: c.met(),
                    })
                    .collect();
                checks.extend(figures.checks);
                checks
            }
            Part::Logins => logins_run(&ctx, backend)?,
            Part::Algorithms => algorithm_run(&ctx, backend)?,
            Part::Pgbouncer => Vec::new(),
        };
        for check in checks {
            let verdict = if check.met { "met" } else { "NOT MET" };
            println!(
                "[{}] {}: {} (required {}; {verdict})",
                backend.name(),
                check.what,
                check.measured,
                check.required
            );
        }
    }
    Ok(())
}

/// The password logins alone on a fresh database, each figure as a check against 0.85 H.
fn logins_run(ctx: &Context, backend: Backend) -> Result<Vec<Check>> {
    let name = backend.name();
    let dir = ctx.out.join(format!("{name}-logins"));
    let (mut database, instance) = fresh_instance(ctx, backend, &dir)?;
    let demo = instance.demo()?;
    let server_settings = instance.settings()?;
    floors::seed(
        &server_settings,
        &Seed {
            users: Some((BENCH_USERS, &demo.password)),
            ..Seed::default()
        },
    )?;
    let server = instance.start(false, &dir.join("server.log"), None)?;
    let logins = password_logins(ctx, name, &server, &server_settings, &demo, &dir)?;
    drop(server);
    if let Some(database) = &mut database {
        database.drop_now()?;
    }
    let h = logins.h_before.0.max(logins.h_after.0);
    Ok([
        ("8 clients", &logins.narrow),
        ("256 clients", &logins.wide),
        ("256 clients of one user", &logins.one_user),
    ]
    .into_iter()
    .map(|(what, load)| Check {
        what: format!("password logins at {what}, against H"),
        measured: format!(
            "{:.1}/s of H {h:.1} = {:.2}; {} errors",
            load.rate(),
            load.rate() / h.max(1e-9),
            load.errors()
        ),
        required: ">= 0.85, no errors".into(),
        met: load.rate() >= 0.85 * h && load.errors() == 0,
    })
    .collect())
}

/// The administration API's figures on one backend.
struct AdminFigures {
    /// D_list and H.
    floors: Vec<Floor>,
    /// The users list against D_list, user creation against H.
    comparisons: Vec<Comparison>,
    /// No errors in either run.
    checks: Vec<Check>,
}

/// The administration API on a fresh database holding [`ADMIN_USERS`] users, with the demo operator's
/// token: the first page of 50 users against D_list (the same two statements through a pool built like the
/// server's), then users created with a password and a unit against H taken before and after.
fn admin_run(ctx: &Context, backend: Backend) -> Result<AdminFigures> {
    let name = backend.name();
    let plan = ctx.plan;
    let dir = ctx.out.join(format!("{name}-admin"));
    let (mut database, instance) = fresh_instance(ctx, backend, &dir)?;
    let demo = instance.demo()?;
    let server_settings = instance.settings()?;
    let seeded = floors::seed(
        &server_settings,
        &Seed {
            users: Some((ADMIN_USERS, &demo.password)),
            ..Seed::default()
        },
    )?;
    eprintln!("[{name}] seeded: {seeded}");
    let server = instance.start(false, &dir.join("server.log"), None)?;
    let base = server.url();
    let token = key_tokens(&base, &demo.key, 1)?
        .pop()
        .context("no token for the demo operator")?;
    let users_path = routes::ADMIN_USERS.replace("{org}", &demo.organisation);
    let unit = first_unit(&base, &token, &demo.organisation)?;

    let token_file = dir.join("admin-token.txt");
    // wrk gives each of its threads every n-th line, so the token is written once per client.
    load::write_lines(&token_file, &vec![token.clone(); CLIENTS])?;
    let list_path = format!("{users_path}?limit=50");
    let list = drive(
        ctx,
        name,
        "admin-list-users",
        &Run {
            addr: server.addr,
            path: &list_path,
            script: &Script::Bearer { tokens: token_file },
            connections: CLIENTS,
            seconds: plan.seconds,
            timeout_seconds: 10,
        },
    )?;
    let d_list = floors::db_rate(&server_settings, DbOp::ListUsers, CLIENTS, plan.seconds as f64)?;
    eprintln!("[{name}] D_list_users: {d_list}");

    let hash_floor = || hash_floor(name, &server_settings, plan.seconds).map(|(rate, _)| rate);
    let h_before = hash_floor()?;
    let create = drive(
        ctx,
        name,
        "admin-create-user",
        &Run {
            addr: server.addr,
            path: &users_path,
            script: &Script::Creating {
                token,
                prefix: "created-".into(),
                password: demo.password.clone(),
                unit,
            },
            connections: CREATE_CLIENTS,
            seconds: plan.login_seconds,
            timeout_seconds: 60,
        },
    )?;
    wait_idle(&base, Duration::from_secs(60))?;
    let h_after = hash_floor()?;
    let h = h_before.max(h_after);
    drop(server);
    if let Some(database) = &mut database {
        database.drop_now()?;
    }

    let checks = [
        ("list users", &list, CLIENTS),
        ("create user", &create, CREATE_CLIENTS),
    ]
    .into_iter()
    .map(|(what, load, clients)| Check {
        what: format!("admin {what} at {clients} clients: no errors"),
        measured: format!(
            "{} errors of {}; p99 {:.1} ms",
            load.errors(),
            load.requests,
            load.p99_ms
        ),
        required: "0".into(),
        met: load.errors() == 0 && load.requests > 0,
    })
    .collect();
    Ok(AdminFigures {
        floors: vec![
            Floor {
                name: "D_list".into(),
                rate: d_list.ops_per_sec(),
                what: format!(
                    "the users list's two statements (a page of 50 of {ADMIN_USERS} users, their units), \
                     {CLIENTS} threads on the server's pool"
                ),
                detail: format!("{} failed", d_list.errors),
            },
            Floor {
                name: "H_admin".into(),
                rate: h,
                what: "H measured again around the user creation run, on its own database".into(),
                detail: format!(
                    "the higher of {h_before:.1} (before user creation) and {h_after:.1} (after)"
                ),
            },
        ],
        comparisons: vec![
            Comparison {
                endpoint: format!("admin: list users (page of 50, {ADMIN_USERS} stored)"),
                load: list,
                clients: CLIENTS,
                floor: "D_list".into(),
                floor_rate: d_list.ops_per_sec(),
                target: LIST_USERS_TARGET,
            },
            Comparison {
                endpoint: "admin: create user (password hashed)".into(),
                load: create,
                clients: CREATE_CLIENTS,
                floor: "H_admin".into(),
                floor_rate: h,
                target: CREATE_USER_TARGET,
            },
        ],
        checks,
    })
}

/// The id of the first unit of `organisation`, read through the administration API.
fn first_unit(base: &str, token: &str, organisation: &str) -> Result<String> {
    let url = format!("{base}{}", routes::ADMIN_UNITS.replace("{org}", organisation));
    let body: serde_json::Value = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(&url)
        .bearer_auth(token)
        .send()?
        .json()?;
    body["data"]["items"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no unit in {url}: {body}"))
}

/// The signing algorithms of `token.algorithm`, HS256 (the default, the reference) first.
const ALGORITHMS: [&str; 3] = ["HS256", "EdDSA", "ES256"];

/// EdDSA and ES256 tokens' validate and key logins against HS256's (same run, same machine): the least
/// acceptable ratio. A validate verifies one signature and a key login makes one, beside a database round
/// trip that costs more than either.
const ALGORITHM_RATIO_TARGET: f64 = 0.5;

/// Validate and key logins on a fresh server per signing algorithm, each with its generated key
/// (`token.algorithm`), run back to back so that the machine's load moves them alike.
fn algorithm_run(ctx: &Context, backend: Backend) -> Result<Vec<Check>> {
    let name = backend.name();
    let seconds = ctx.plan.seconds;
    let mut rates = Vec::with_capacity(ALGORITHMS.len());
    for algorithm in ALGORITHMS {
        let label = algorithm.to_lowercase();
        let dir = ctx.out.join(format!("{name}-{label}"));
        let (mut database, instance) = fresh_instance(ctx, backend, &dir)?;
        let instance = instance.with(&[("CRM_AUTH__TOKEN__ALGORITHM", algorithm)]);
        let demo = instance.demo()?;
        let server = instance.start(false, &dir.join("server.log"), None)?;
        let base = server.url();
        let tokens = dir.join("validate-tokens.txt");
        load::write_lines(&tokens, &key_tokens(&base, &demo.key, ctx.plan.validate_tokens)?)?;
        let validate = Script::Bearer { tokens };
        let key_login = Script::Fixed {
            method: "POST",
            headers: vec![("Authorization".into(), api::basic(&demo.key))],
        };
        let run = |what: &str, path: &str, script: &Script| -> Result<Load> {
            let load = ctx.wrk.run(
                &format!("{name}-{label}-{what}"),
                &Run {
                    addr: server.addr,
                    path,
                    script,
                    connections: CLIENTS,
                    seconds,
                    timeout_seconds: 10,
                },
            )?;
            eprintln!(
                "[{name}] {algorithm} {what}: {:.0} req/s, p99 {:.2} ms, {} errors",
                load.rate(),
                load.p99_ms,
                load.errors()
            );
            Ok(load)
        };
        let v = run("validate", &api::path(routes::VALIDATE_TOKEN), &validate)?;
        let k = run("key-login", &api::path(routes::API_KEY_TOKEN), &key_login)?;
        drop(server);
        if let Some(database) = &mut database {
            database.drop_now()?;
        }
        rates.push((algorithm, v, k));
    }
    let Some((_, hs_validate, hs_login)) = rates.first() else {
        bail!("no algorithm run");
    };
    let (hs_validate, hs_login) = (hs_validate.rate(), hs_login.rate());
    let mut checks = Vec::new();
    for (algorithm, v, k) in &rates[1..] {
        for (what, load, reference) in [("validate", v, hs_validate), ("web_api_key/token", k, hs_login)] {
            let ratio = load.rate() / reference.max(1e-9);
            checks.push(Check {
                what: format!("{what} with {algorithm} tokens against HS256, {CLIENTS} clients"),
                measured: format!(
                    "{:.0} vs {reference:.0} req/s = {ratio:.2}x, p99 {:.2} ms; {} errors",
                    load.rate(),
                    load.p99_ms,
                    load.errors()
                ),
                required: format!(">= {ALGORITHM_RATIO_TARGET}x; 0 errors"),
                met: ratio >= ALGORITHM_RATIO_TARGET && load.errors() == 0,
            });
        }
    }
    Ok(checks)
}

/// Validate, key login and refresh with [`CLIENTS`] clients on one fresh PostgreSQL database, first with the
/// server connected directly, then through a private PgBouncer in transaction mode with
/// `database.prepared_statements = false`; each pooled figure is a check against the direct one (no target:
/// it shows what the pooler costs), failing only on errors.
fn pgbouncer_run(ctx: &Context) -> Result<Vec<Check>> {
    let Some(program) = crate::pgbouncer::PgBouncer::program() else {
        bail!("pgbouncer is not installed (apt-get install pgbouncer)");
    };
    let dir = ctx.out.join("postgres-pgbouncer");
    let (mut database, instance) = fresh_instance(ctx, Backend::Postgres, &dir)?;
    let direct_url = database
        .as_ref()
        .map(|d| d.url.clone())
        .context("a PostgreSQL run has a database")?;
    let mut pooled_url = reqwest::Url::parse(&direct_url)?;
    let admin = reqwest::Url::parse(&ctx.admin_url)?;
    let user = match admin.username() {
        "" => "postgres",
        user => user,
    };
    if admin.password().is_some() {
        bail!("the PgBouncer run authenticates by trust: use a PostgreSQL URL without a password");
    }
    let bouncer = crate::pgbouncer::PgBouncer::start(
        &program,
        &dir,
        admin.host_str().unwrap_or("127.0.0.1"),
        admin.port().unwrap_or(5432),
        user,
    )?;
    let bouncer_url = reqwest::Url::parse(&bouncer.url(user))?;
    pooled_url
        .set_port(bouncer_url.port())
        .map_err(|()| anyhow::anyhow!("cannot set the port"))?;
    pooled_url
        .set_host(bouncer_url.host_str())
        .context("cannot set the host")?;
    let demo = instance.demo()?;
    let pooled = instance.with(&[
        ("CRM_AUTH__DATABASE__URL", pooled_url.as_str()),
        ("CRM_AUTH__DATABASE__PREPARED_STATEMENTS", "false"),
    ]);
    let direct = Instance::new(&ctx.bin, &dir.join("data"), Some(&direct_url))?;
    let mut figures = Vec::new();
    for (label, instance) in [("direct", direct), ("pgbouncer", pooled)] {
        let server = instance.start(false, &dir.join(format!("{label}.log")), None)?;
        let base = server.url();
        let validate_file = dir.join(format!("{label}-validate-tokens.txt"));
        let refresh_file = dir.join(format!("{label}-refresh-tokens.txt"));
        load::write_lines(
            &validate_file,
            &key_tokens(&base, &demo.key, ctx.plan.validate_tokens)?,
        )?;
        load::write_lines(
            &refresh_file,
            &key_tokens(&base, &demo.key, ctx.plan.refresh_tokens)?,
        )?;
        let scripts = [
            (
                "validate",
                api::path(routes::VALIDATE_TOKEN),
                Script::Bearer {
                    tokens: validate_file,
                },
            ),
            (
                "web_api_key/token",
                api::path(routes::API_KEY_TOKEN),
                Script::Fixed {
                    method: "POST",
                    headers: vec![("Authorization".into(), api::basic(&demo.key))],
                },
            ),
            (
                "refresh",
                api::path(routes::REFRESH_TOKEN),
                Script::Rotating { tokens: refresh_file },
            ),
        ];
        for (what, path, script) in &scripts {
            let load = drive(
                ctx,
                "postgres",
                &format!("{label}-{}", what.replace('/', "-")),
                &Run {
                    addr: server.addr,
                    path,
                    script,
                    connections: CLIENTS,
                    seconds: ctx.plan.seconds,
                    timeout_seconds: 10,
                },
            )?;
            figures.push((label, *what, load));
        }
        drop(server);
    }
    drop(bouncer);
    if let Some(database) = &mut database {
        database.drop_now()?;
    }
    let mut checks = Vec::new();
    for (_, name, direct) in figures.iter().filter(|(label, ..)| *label == "direct") {
        let Some((.., pooled)) = figures
            .iter()
            .find(|(label, other, _)| *label == "pgbouncer" && other == name)
        else {
            continue;
        };
        let ratio = pooled.rate() / direct.rate().max(1e-9);
        checks.push(Check {
            what: format!("{name} through PgBouncer (transaction mode) against direct, {CLIENTS} clients"),
            measured: format!(
                "{:.0} vs {:.0} req/s = {ratio:.2}x, p99 {:.2} vs {:.2} ms; {} errors",
                pooled.rate(),
                direct.rate(),
                pooled.p99_ms,
                direct.p99_ms,
                pooled.errors() + direct.errors()
            ),
            required: "0 errors".into(),
            met: pooled.errors() == 0 && direct.errors() == 0,
        });
    }
    Ok(checks)
}

/// An import file of `users` users of organisation `Imported`, each in one or two of 10 units and with a
/// bcrypt hash of its own (stored, never computed, so any well-formed one does).
fn import_file(users: usize) -> String {
    const ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut file = String::with_capacity(users * 200);
    file.push_str("{\"type\":\"organisation\",\"name\":\"Imported\"}\n");
    for unit in 0..10 {
        file.push_str(&format!(
            "{{\"type\":\"unit\",\"organisation\":\"Imported\",\"name\":\"Unit {unit}\",\"code\":\"U{unit}\"}}\n"
        ));
    }
    for i in 0..users {
        // 53 characters of salt and hash, the index spelled in bcrypt's alphabet at the end.
        let mut tail = *b"abcdefghijklmnopqrstuu5Zq2XiTbpYxdAXFjVx0WnD5Crsd/gT.";
        let mut n = i;
        for byte in tail.iter_mut().rev().take(4) {
            *byte = ALPHABET[n % ALPHABET.len()];
            n /= ALPHABET.len();
        }
        let hash = format!("$2b$10${}", String::from_utf8_lossy(&tail));
        let units = if i % 3 == 0 {
            format!("[\"U{}\",\"U{}\"]", i % 10, (i + 1) % 10)
        } else {
            format!("[\"U{}\"]", i % 10)
        };
        file.push_str(&format!(
            "{{\"type\":\"user\",\"organisation\":\"Imported\",\"username\":\"user{i:06}\",\"password_hash\":\"{hash}\",\"units\":{units}}}\n"
        ));
    }
    file
}

/// `crm-auth import` of [`IMPORT_USERS`] users with `password_hash` lines into a fresh database, then of the
/// same file again (every line unchanged), each timed from the command's start to its exit.
fn import_run(ctx: &Context, backend: Backend) -> Result<Vec<Check>> {
    let name = backend.name();
    let dir = ctx.out.join(format!("{name}-import"));
    let (mut database, instance) = fresh_instance(ctx, backend, &dir)?;
    let file = dir.join("users.ndjson");
    let contents = import_file(IMPORT_USERS);
    std::fs::write(&file, &contents)?;
    let mib = contents.len() as f64 / (1024.0 * 1024.0);
    let path = file.to_str().context("the import file's path is not UTF-8")?;
    let mut passes = Vec::new();
    for pass in ["into a fresh database", "again, every line unchanged"] {
        let started = Instant::now();
        let output = instance.output(&["import", path])?;
        let seconds = started.elapsed().as_secs_f64();
        if !output.status.success() {
            bail!(
                "`crm-auth import` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let report: serde_json::Value =
            serde_json::from_slice(&output.stdout).context("`crm-auth import` did not print its report")?;
        eprintln!("[{name}] import {pass}: {seconds:.1} s, {report}");
        passes.push((pass, seconds, report));
    }
    if let Some(database) = &mut database {
        database.drop_now()?;
    }
    Ok(passes
        .into_iter()
        .enumerate()
        .map(|(i, (pass, seconds, report))| {
            let (count, expected) = match i {
                0 => (&report["created"]["users"], "every user created"),
                _ => (&report["unchanged"], "every line unchanged"),
            };
            let lines = IMPORT_USERS as u64 + if i == 0 { 0 } else { 11 };
            Check {
                what: format!("`crm-auth import` of {IMPORT_USERS} users ({mib:.1} MiB) {pass}"),
                measured: format!(
                    "{seconds:.1} s, {:.0} ms per 1,000 users; {count} counted",
                    seconds * 1000.0 / (IMPORT_USERS as f64 / 1000.0)
                ),
                required: format!("< {IMPORT_SECONDS_LIMIT} s, {expected}"),
                met: seconds < IMPORT_SECONDS_LIMIT && count.as_u64() == Some(lines),
            }
        })
        .collect())
}

/// Key logins without a pause on a fresh server with a short retention window ([`RETENTION_SETTINGS`]), in
/// runs back to back, counting the stored sessions after each: the count levels off once the window is full,
/// and the login rate at the end holds the rate at the start, the purge deleting as fast as logins insert.
fn retention_run(ctx: &Context, backend: Backend) -> Result<Vec<Check>> {
    let name = backend.name();
    let (runs, seconds) = ctx.plan.retention;
    let dir = ctx.out.join(format!("{name}-retention"));
    let (mut database, instance) = fresh_instance(ctx, backend, &dir)?;
    let instance = instance.with(&RETENTION_SETTINGS);
    let demo = instance.demo()?;
    let settings = instance.settings()?;
    let server = instance.start(false, &dir.join("server.log"), None)?;
    let key_login = Script::Fixed {
        method: "POST",
        headers: vec![("Authorization".into(), api::basic(&demo.key))],
    };
    let key_path = api::path(routes::API_KEY_TOKEN);
    // A first short run, not counted, warms the server and grows the SQLite file and its write-ahead log to
    // their working size, so that the first counted run is not slowed by what only a new database pays.
    ctx.wrk.run(
        &format!("{name}-retention-warm-up"),
        &Run {
            addr: server.addr,
            path: &key_path,
            script: &key_login,
            connections: CLIENTS,
            seconds: 2,
            timeout_seconds: 10,
        },
    )?;
    let mut loads = Vec::with_capacity(runs);
    let mut stored = Vec::with_capacity(runs);
    for i in 0..runs.max(2) {
        let load = ctx.wrk.run(
            &format!("{name}-retention-{i}"),
            &Run {
                addr: server.addr,
                path: &key_path,
                script: &key_login,
                connections: CLIENTS,
                seconds,
                timeout_seconds: 10,
            },
        )?;
        let rows = floors::session_count(&settings)?;
        eprintln!(
            "[{name}] retention {}/{runs}: {:.0} key logins/s, {} errors, {rows} sessions stored",
            i + 1,
            load.rate(),
            load.errors()
        );
        loads.push(load);
        stored.push(rows);
    }
    let purged = purged_total(&server.url())?;
    drop(server);
    if let Some(database) = &mut database {
        database.drop_now()?;
    }

    let logins: u64 = loads.iter().map(|l| l.requests).sum();
    let errors: u64 = loads.iter().map(|l| l.errors()).sum();
    // The rows stored divided by the login rate of the run just before: how many seconds of logins the table
    // holds. It does not move with the machine's speed, which on a shared machine changes within a minute;
    // levelled off, it stays near the window, where without the purge it would grow with the run.
    let held: Vec<f64> = stored
        .iter()
        .zip(&loads)
        .map(|(rows, load)| *rows as f64 / load.rate().max(1e-9))
        .collect();
    let last = stored[stored.len() - 1];
    let held_at_end = held[held.len() - 1];
    // Medians of the first and of the last three runs: on a shared machine one run's rate can move by a
    // third from the next one's, and a median of three does not follow one such run.
    let median = |runs: &[Load]| {
        let mut rates: Vec<f64> = runs.iter().map(Load::rate).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let ends = loads.len().min(3);
    let (first_rate, last_rate) = (median(&loads[..ends]), median(&loads[loads.len() - ends..]));
    let change = last_rate / first_rate.max(1e-9) - 1.0;
    let run_seconds = seconds * stored.len() as u64;
    Ok(vec![
        Check {
            what: format!(
                "sessions stored under {run_seconds} s of key logins with a retention window of about {RETENTION_WINDOW_SECONDS} s"
            ),
            measured: format!(
                "{} rows after each {seconds} s, that is {} s of logins; {logins} logins, {purged} purged; {errors} errors",
                stored.iter().map(i64::to_string).collect::<Vec<_>>().join(", "),
                held.iter()
                    .map(|s| format!("{s:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            required: format!(
                "at the end <= {} s of logins and < a third of all logins; 0 errors",
                2 * RETENTION_WINDOW_SECONDS
            ),
            met: held_at_end <= 2.0 * RETENTION_WINDOW_SECONDS as f64
                && (last as f64) < logins as f64 / 3.0
                && errors == 0,
        },
        Check {
            what: format!(
                "key logins at the end of the retention run against the start (median of {ends} runs each)"
            ),
            measured: format!(
                "{last_rate:.0} vs {first_rate:.0} req/s ({:+.1}%); each run: {}",
                change * 100.0,
                loads
                    .iter()
                    .map(|l| format!("{:.0}", l.rate()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            // The purge must not slow logins down; an end faster than the start is no failure.
            required: "no more than 10% slower".into(),
            met: change >= -0.10,
        },
    ])
}

/// The server's `crm_auth_sessions_purged_total`.
fn purged_total(base: &str) -> Result<u64> {
    let client = Client::builder().timeout(Duration::from_secs(10)).build()?;
    let metrics = client.get(format!("{base}/metrics")).send()?.text()?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("crm_auth_sessions_purged_total "))
        .and_then(|value| value.trim().parse().ok())
        .context("no crm_auth_sessions_purged_total in /metrics")
}
