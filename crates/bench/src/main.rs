//! `crm-auth-bench`: the performance tooling of crm-auth, kept out of the shipped binary and out of xtask.
//!
//! `bench` measures throughput, latency and memory against floors taken in the same run; `soak` keeps a
//! release server under mixed load for minutes. `cargo xtask bench` and `cargo xtask soak` run this binary.

#![warn(clippy::missing_docs_in_private_items)]
#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall-clock time and names its scratch databases by it"
)]

mod api;
mod bench;
mod floors;
/// PgBouncer for `bench --only pgbouncer`: xtask's launcher, compiled here too (it needs only std and anyhow)
/// rather than kept twice.
#[path = "../../../xtask/src/pgbouncer.rs"]
mod pgbouncer;
mod server;
mod soak;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

/// Performance tooling for crm-auth.
#[derive(Debug, Parser)]
#[command(name = "crm-auth-bench", about)]
struct Cli {
    /// What to run.
    #[command(subcommand)]
    command: Task,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Task {
    /// Release build, then throughput, latency and memory on SQLite and PostgreSQL, each figure beside its
    /// floor; writes target/bench/report.json (and docs/BENCHMARKS.md with --write).
    Bench(bench::Args),
    /// A release server under mixed load for N minutes; fails on any error or memory growth.
    Soak(soak::Args),
}

/// Runs the task and turns its error into a one-line message and exit status 1.
fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Task::Bench(args) => bench::run(&args),
        Task::Soak(args) => soak::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: commands run from there, whatever the caller's working directory.
fn project_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .context("the bench package must sit two folders below the workspace root")
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
fn target_dir() -> Result<PathBuf> {
    let root = project_root()?;
    Ok(match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    })
}

/// Builds the release `crm-auth` binary on its own (so that its features are those it ships with) and
/// returns its path.
fn release_binary() -> Result<PathBuf> {
    let mut build = Command::new("cargo");
    build.args(["build", "--release", "-p", "crm-auth-server", "--bin", "crm-auth"]);
    run_echoed(build)?;
    Ok(target_dir()?
        .join("release")
        .join(format!("crm-auth{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `command` from the workspace root with the terminal's streams, after echoing it; fails unless it
/// succeeds.
fn run_echoed(mut command: Command) -> Result<()> {
    command.current_dir(project_root()?);
    let line = format!("{command:?}");
    eprintln!("$ {line}");
    let status = command.status().with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed: {status}");
    }
    Ok(())
}

/// The URL with its password, if any, replaced by `***`, for messages.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only a URL that cannot carry a password refuses one, and this one carries one.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    //! Messages must never show a database password.

    use super::*;

    /// A password in a URL is hidden; the rest stays readable.
    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/crm?sslmode=off"),
            "postgres://app:***@db:5432/crm?sslmode=off"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/postgres"),
            "postgres://postgres@127.0.0.1/postgres"
        );
    }
}
