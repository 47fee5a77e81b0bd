//! `cargo xtask db up|down|reset`: the PostgreSQL of `docker-compose.yml`, for development and the tests.

use std::process::{Command, Stdio};

use anyhow::{Result, bail};

use crate::cmd::cmd;

/// The subcommands and what each does, for errors and `cargo xtask help`.
pub const USAGE: &str = "up|down|reset";

/// Runs one subcommand.
pub fn run(args: &[String]) -> Result<()> {
    let [action] = args else {
        bail!("`cargo xtask db` takes one of {USAGE}");
    };
    match action.as_str() {
        "up" => up(),
        "down" => compose(&["down"]),
        "reset" => {
            compose(&["down", "--volumes"])?;
            up()
        }
        other => bail!("unknown `cargo xtask db {other}`; expected one of {USAGE}"),
    }
}

/// Starts PostgreSQL in the background and says how the tests reach it.
fn up() -> Result<()> {
    compose(&["up", "--detach", "postgres"])?;
    eprintln!(
        "PostgreSQL listens on 127.0.0.1 (port POSTGRES_PORT of .env, default 5432); for the tests, with \
         POSTGRES_PASSWORD of .env:\n  export {}=postgres://crm_auth:PASSWORD@127.0.0.1:5432/crm_auth",
        crate::test::POSTGRES_URL_VAR
    );
    Ok(())
}

/// `docker compose ARGS`, after checking that Docker and its compose plugin are installed.
fn compose(args: &[&str]) -> Result<()> {
    let available = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    match available(&["--version"]) {
        Ok(status) if status.success() => {}
        _ => bail!(
            "docker is not installed or not on PATH; install Docker Engine with the compose plugin, \
             or point {} at a PostgreSQL server of your own",
            crate::test::POSTGRES_URL_VAR
        ),
    }
    if !available(&["compose", "version"]).is_ok_and(|status| status.success()) {
        bail!("docker is installed but its compose plugin is not; install docker-compose-plugin");
    }
    cmd("docker", ["compose"]).args(args).run()
}
