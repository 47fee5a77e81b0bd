//! `cargo xtask`: the project's own tasks, written in Rust so they run wherever cargo does.
//!
//! Each task is a plain function in its own module; `main` only picks one from the command line. The crate keeps
//! its dependencies to `anyhow` so that `cargo xtask` builds in seconds on a fresh clone; the performance tools
//! (`bench`, `soak`) live in the `crm-auth-bench` package, which `cargo xtask` only runs.

#![warn(clippy::missing_docs_in_private_items)]

mod ci;
mod cmd;
mod codegen;
mod db;
mod deps;
mod dev;
mod fuzz;
mod pgbouncer;
mod quickstart;
mod schemathesis;
mod server;
mod test;

use std::{
    env,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};

/// The tasks `cargo xtask help` lists: usage and a one-line description.
const TASKS: &[(&str, &str)] = &[
    (
        "test [ARGS...]",
        "run every test on SQLite, and on PostgreSQL when it answers (ARGS go to cargo nextest run), then \
         without ARGS the PostgreSQL tests again through a private PgBouncer in transaction mode, and build \
         the README's quick starts as new projects",
    ),
    (
        "quickstart",
        "build the README's quick starts (Application teams, Backend teams) as new projects in target/quickstart",
    ),
    (
        "ci",
        "fmt, clippy, doc, deps, codegen --check, test and schemathesis, stopping at the first failure",
    ),
    (
        "deps",
        "check that crm-auth-core and crm-auth-client stay free of the server's dependencies",
    ),
    (
        "codegen [--check]",
        "write docs/openapi.json from the code; with --check, fail if the committed file differs",
    ),
    (
        "dev",
        "run the server with the demo data and debug logging (cargo run -- serve --demo)",
    ),
    (
        "db up|down|reset",
        "start, stop, or wipe and restart the PostgreSQL of docker-compose.yml",
    ),
    (
        "fuzz [--seconds N] [TARGET]",
        "run the cargo-fuzz targets of fuzz/ (or one) for N seconds each (default 60) on nightly",
    ),
    (
        "schemathesis [--examples N]",
        "check a running server against its OpenAPI document with schemathesis (default 100 cases each)",
    ),
    (
        "soak [--minutes N] [--threads N] [--postgres URL]",
        "a release server under mixed load for N minutes (default 10); fails on any error or memory growth",
    ),
    (
        "bench [--quick] [--write] [--backend sqlite|postgres] [--only logins|admin|import|algorithms|pgbouncer [--binary PATH]]",
        "release build, then throughput, latency and memory on SQLite and PostgreSQL, each figure beside \
         its floor; writes target/bench/report.json (and docs/BENCHMARKS.md with --write)",
    ),
    ("help", "print this list"),
];

/// Runs the task named on the command line and turns its error into a one-line message and exit status 1.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the command line and dispatches to the task it names.
fn run() -> Result<()> {
    let args = env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::anyhow!("argument {arg:?} is not UTF-8"))
        })
        .collect::<Result<Vec<_>>>()?;
    let Some((task, rest)) = args.split_first() else {
        bail!("no task given\n\n{}", help());
    };
    match task.as_str() {
        "test" => test::run(rest),
        "ci" => {
            no_arguments(task, rest)?;
            ci::run()
        }
        "deps" => {
            no_arguments(task, rest)?;
            deps::run()
        }
        "quickstart" => {
            no_arguments(task, rest)?;
            quickstart::run(&project_root()?)
        }
        "codegen" => codegen::run(rest),
        "dev" => {
            no_arguments(task, rest)?;
            dev::run()
        }
        "db" => db::run(rest),
        "bench" | "soak" => perf_tool(task, rest),
        "fuzz" => fuzz::run(rest),
        "schemathesis" => schemathesis::run(rest),
        "help" | "--help" | "-h" => {
            println!("{}", help());
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{}", help()),
    }
}

/// Runs `bench` or `soak` of the `crm-auth-bench` package in a release build, with the task's arguments.
fn perf_tool(task: &str, rest: &[String]) -> Result<()> {
    cmd::cmd("cargo", ["run", "--release", "-p", "crm-auth-bench", "--", task])
        .args(rest)
        .run()
}

/// Fails when a task that takes no arguments was given some.
fn no_arguments(task: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => bail!("`cargo xtask {task}` takes no arguments, got `{arg}`"),
    }
}

/// The tasks and the environment variables they read, as `cargo xtask help` prints them.
fn help() -> String {
    let width = TASKS.iter().map(|(usage, _)| usage.len()).max().unwrap_or(0);
    let tasks = TASKS
        .iter()
        .map(|(usage, about)| format!("  {usage:width$}  {about}\n"))
        .collect::<String>();
    format!(
        "usage: cargo xtask <task>\n\ntasks:\n{tasks}\nenvironment:\n  \
         {}  PostgreSQL for the tests (default {})\n  \
         CI=true                     a PostgreSQL that does not answer fails `test` and `ci` instead of being skipped",
        test::POSTGRES_URL_VAR,
        test::DEFAULT_POSTGRES_URL,
    )
}

/// The workspace root: every command runs from there, whatever the caller's working directory.
fn project_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask must sit one folder below the workspace root")
}
