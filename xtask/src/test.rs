//! `cargo xtask test`: every test of the workspace, on SQLite always and on PostgreSQL when one answers, then
//! the PostgreSQL tests a second time through a PgBouncer in transaction mode.
//!
//! The tests learn their backends from `CRM_AUTH_TEST_BACKENDS` (`sqlite` or `sqlite,postgres`) and find
//! PostgreSQL at `CRM_AUTH_TEST_POSTGRES_URL`; this task probes the database once and sets both. For the second
//! pass it starts a private PgBouncer (`pgbouncer.rs`) and names it in `CRM_AUTH_TEST_PGBOUNCER_URL`: the tests
//! then create their databases on the direct URL and have their servers reach them through the pooler with
//! `database.prepared_statements = false`.

use std::{
    env,
    io::ErrorKind,
    net::{TcpStream, ToSocketAddrs as _},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};

use crate::cmd::{Cmd, cmd, redact};
use crate::pgbouncer::PgBouncer;

/// Environment variable through which the tests learn which backends to run on.
pub const BACKENDS_VAR: &str = "CRM_AUTH_TEST_BACKENDS";

/// Environment variable naming the PostgreSQL server the tests use.
pub const POSTGRES_URL_VAR: &str = "CRM_AUTH_TEST_POSTGRES_URL";

/// Environment variable naming the PgBouncer (a URL without a database) the tests' servers go through.
pub const PGBOUNCER_URL_VAR: &str = "CRM_AUTH_TEST_PGBOUNCER_URL";

/// The tests of the pass through PgBouncer: the PostgreSQL half of every test declared for both backends
/// (`backend_tests!` puts it in a `postgres` module). Tests of a private PostgreSQL (`faults`, `failover`) and
/// of SQLite alone would only repeat the first pass.
const POOLED_FILTER: &str = "test(/(^|::)postgres::/)";

/// Where the tests look for PostgreSQL when `CRM_AUTH_TEST_POSTGRES_URL` is unset.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long the probe waits for PostgreSQL before running without it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs doctests, then every other test target under nextest (or `cargo test` when nextest is missing), with
/// `extra` passed to the latter, then (with PostgreSQL, nextest and no `extra`) the PostgreSQL tests through
/// PgBouncer, then builds the README's quick start as a new project. All always run; the task fails if any
/// did.
pub fn run(extra: &[String]) -> Result<()> {
    let url = env::var(POSTGRES_URL_VAR).ok().filter(|url| !url.is_empty());
    let url = url.unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
    let mut skipped = None;
    if let Err(why) = probe_postgres(&url) {
        let why = format!("PostgreSQL does not answer at {} ({why:#})", redact(&url));
        if is_ci() {
            bail!("{why}; CI requires it");
        }
        eprintln!("note: {why}; running the tests on SQLite only (with CI=true this is a failure)");
        skipped = Some(why);
    }
    let backends: &[&str] = if skipped.is_none() {
        &["sqlite", "postgres"]
    } else {
        &["sqlite"]
    };

    // Doctests first, so that nextest's own closing summary stays right above ours.
    let doctests = cmd("cargo", ["test", "--workspace", "--all-features", "--doc"])
        .env(BACKENDS_VAR, backends.join(","))
        .env(POSTGRES_URL_VAR, &url)
        .run();
    let (runner, tests) = if nextest_installed() {
        ("cargo nextest", nextest_run())
    } else {
        eprintln!(
            "note: cargo-nextest is not installed (cargo install cargo-nextest --locked); using cargo test"
        );
        (
            "cargo test",
            cmd(
                "cargo",
                [
                    "test",
                    "--workspace",
                    "--all-targets",
                    "--all-features",
                    "--no-fail-fast",
                ],
            ),
        )
    };
    let tests = tests
        .args(extra)
        .env(BACKENDS_VAR, backends.join(","))
        .env(POSTGRES_URL_VAR, &url)
        .env_remove(PGBOUNCER_URL_VAR)
        .run();

    let pooled = if skipped.is_some() {
        None
    } else if !extra.is_empty() {
        println!("note: arguments were given; the pass through PgBouncer is left out");
        None
    } else if runner != "cargo nextest" {
        println!("note: the pass through PgBouncer needs cargo-nextest; left out");
        None
    } else {
        Some(through_pgbouncer(&url))
    };

    let quickstart = crate::project_root().and_then(|root| crate::quickstart::run(&root));

    let mut failed = Vec::new();
    println!();
    let pooled_name = "postgres tests through PgBouncer";
    let mut outcomes = vec![("doctests", &doctests), (runner, &tests)];
    if let Some(pooled) = &pooled {
        outcomes.push((pooled_name, pooled));
    }
    outcomes.push(("README quick start build", &quickstart));
    for (name, outcome) in outcomes {
        match outcome {
            Ok(()) => println!("{name}: ok"),
            Err(_) => {
                println!("{name}: FAILED (see above)");
                failed.push(name);
            }
        }
    }
    if let Some(why) = skipped {
        println!("postgres: skipped, {why}");
    }
    println!("backends: {}", backends.join(", "));
    if !failed.is_empty() {
        bail!("tests failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Starts a private PgBouncer in front of the PostgreSQL at `url` and runs the PostgreSQL tests through it.
/// Without PgBouncer installed, or with a PostgreSQL URL that carries a password (the generated configuration
/// authenticates by trust), this is a note, or a failure in CI.
fn through_pgbouncer(url: &str) -> Result<()> {
    let why_not = match (PgBouncer::program(), user_without_password(url)) {
        (None, _) => "pgbouncer is not installed (apt-get install pgbouncer)".to_owned(),
        (_, None) => format!("{} carries a password", redact(url)),
        (Some(program), Some(user)) => {
            let (host, port) = host_and_port(url)?;
            let target = crate::project_root()?.join("target");
            let bouncer = PgBouncer::start(&program, &target, &host, port, &user)?;
            eprintln!(
                "running the PostgreSQL tests through PgBouncer (transaction mode) at {}",
                bouncer.url(&user)
            );
            return nextest_run()
                .args(["-E", POOLED_FILTER])
                .env(BACKENDS_VAR, "postgres")
                .env(POSTGRES_URL_VAR, url)
                .env(PGBOUNCER_URL_VAR, bouncer.url(&user))
                .run();
        }
    };
    if is_ci() {
        bail!("cannot test through PgBouncer: {why_not}; CI requires it");
    }
    println!("note: the pass through PgBouncer is left out: {why_not}");
    Ok(())
}

/// The user a `postgres://` URL names (`postgres` when it names none), or `None` when it carries a password.
fn user_without_password(url: &str) -> Option<String> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        None => Some("postgres".to_owned()),
        Some((info, _)) if info.contains(':') => None,
        Some(("", _)) => Some("postgres".to_owned()),
        Some((user, _)) => Some(user.to_owned()),
    }
}

/// Whether this run is CI, where a missing PostgreSQL is an error: `CI` set to anything but empty, `0` or `false`.
pub fn is_ci() -> bool {
    env::var("CI").is_ok_and(|ci| !ci.is_empty() && ci != "0" && !ci.eq_ignore_ascii_case("false"))
}

/// `cargo nextest run` over every test of the workspace, running on past failures.
fn nextest_run() -> Cmd {
    cmd(
        "cargo",
        [
            "nextest",
            "run",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--no-fail-fast",
        ],
    )
}

/// Whether `cargo nextest` runs here.
fn nextest_installed() -> bool {
    Command::new("cargo")
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Checks that PostgreSQL answers at `url`: a TCP connection within [`PROBE_TIMEOUT`], then, when `psql` is on
/// the PATH, `select 1` through it, which also proves the credentials and the database name.
fn probe_postgres(url: &str) -> Result<()> {
    let (host, port) = host_and_port(url)?;
    eprintln!("probing PostgreSQL at {}", redact(url));
    let addresses = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?;
    let mut last_error = anyhow!("{host} resolves to no address");
    let connected =
        addresses.into_iter().any(
            |address| match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
                Ok(_) => true,
                Err(err) => {
                    last_error = anyhow!("cannot connect to {address}: {err}");
                    false
                }
            },
        );
    if !connected {
        return Err(last_error);
    }

    let output = Command::new("psql")
        .args([url, "--no-password", "--no-psqlrc", "-tAc", "select 1"])
        .env("PGCONNECT_TIMEOUT", PROBE_TIMEOUT.as_secs().to_string())
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        other => other.context("cannot start psql")?,
    };
    if !output.status.success() {
        // psql's first line says why, e.g. `psql: error: connection to server ... failed: FATAL: ...`.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr.lines().map(str::trim).find(|line| !line.is_empty());
        match why {
            Some(why) => bail!("psql: {}", redact(why.strip_prefix("psql: ").unwrap_or(why))),
            None => bail!("psql: {}", output.status),
        }
    }
    if String::from_utf8_lossy(&output.stdout).trim() != "1" {
        bail!("psql answered `select 1` with something other than 1");
    }
    Ok(())
}

/// The first host and its port in a `postgres://` or `postgresql://` URL
/// (`postgres://[user[:password]@][host][:port][,host...][/db][?params]`); host `localhost` and port 5432
/// when left out.
fn host_and_port(url: &str) -> Result<(String, u16)> {
    let rest = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .ok_or_else(|| anyhow!("`{}` is not a postgres:// or postgresql:// URL", redact(url)))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, hosts)| hosts);
    let first = hosts.split(',').next().unwrap_or_default();
    let (host, port) = match first.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| anyhow!("unclosed `[` in host of `{}`", redact(url)))?;
            (host, after.strip_prefix(':'))
        }
        None => match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        },
    };
    let port = match port {
        None | Some("") => 5432,
        Some(port) => port
            .parse()
            .with_context(|| format!("bad port `{port}` in `{}`", redact(url)))?,
    };
    let host = if host.is_empty() { "localhost" } else { host };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    //! The probe must find the same host and port that libpq would connect to, or a live database is skipped.

    use super::*;

    /// Parses `url` and flattens the result for comparison.
    fn parsed(url: &str) -> Option<(String, u16)> {
        host_and_port(url).ok()
    }

    /// The default URL and its common variants.
    #[test]
    fn finds_host_and_port() {
        assert_eq!(parsed(DEFAULT_POSTGRES_URL), Some(("127.0.0.1".into(), 5432)));
        assert_eq!(
            parsed("postgresql://u:pw@db.example:6543/crm"),
            Some(("db.example".into(), 6543))
        );
        assert_eq!(
            parsed("postgres://db/crm?sslmode=disable"),
            Some(("db".into(), 5432))
        );
        assert_eq!(parsed("postgres://u@db:5433"), Some(("db".into(), 5433)));
    }

    /// A password may hold `:` and an encoded `@`; only the last `@` ends the user info.
    #[test]
    fn ignores_colons_in_passwords() {
        assert_eq!(
            parsed("postgres://u:a:b%40c@db:7000/x"),
            Some(("db".into(), 7000))
        );
    }

    /// IPv6 literals are bracketed; multi-host URLs use the first host; an empty host means localhost.
    #[test]
    fn handles_ipv6_multi_host_and_empty_host() {
        assert_eq!(parsed("postgres://u@[::1]:5433/x"), Some(("::1".into(), 5433)));
        assert_eq!(parsed("postgres://[::1]/x"), Some(("::1".into(), 5432)));
        assert_eq!(parsed("postgres://a:5001,b:5002/x"), Some(("a".into(), 5001)));
        assert_eq!(parsed("postgres:///x"), Some(("localhost".into(), 5432)));
    }

    /// The pass through PgBouncer authenticates by trust: it needs the user, and a password rules it out.
    #[test]
    fn finds_the_user_for_pgbouncer() {
        let user = |url: &str| user_without_password(url);
        assert_eq!(user(DEFAULT_POSTGRES_URL).as_deref(), Some("postgres"));
        assert_eq!(user("postgres://crm@db:5432/x").as_deref(), Some("crm"));
        assert_eq!(user("postgresql://db/x").as_deref(), Some("postgres"));
        assert_eq!(user("postgres://u:pw@db/x"), None);
        assert_eq!(user("mysql://u@db/x"), None);
    }

    /// Anything that is not a PostgreSQL URL, or has a port that is not a number, is an error, not a guess.
    #[test]
    fn rejects_what_it_cannot_read() {
        assert_eq!(parsed("mysql://db/x"), None);
        assert_eq!(parsed("127.0.0.1:5432"), None);
        assert_eq!(parsed("postgres://db:port/x"), None);
        assert_eq!(parsed("postgres://db:99999/x"), None);
        assert_eq!(parsed("postgres://[::1/x"), None);
    }
}
