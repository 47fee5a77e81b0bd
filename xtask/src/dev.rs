//! `cargo xtask dev`: the server on SQLite under `data/`, with the demo organisation, user and key printed,
//! and debug logging.

use std::env;

use anyhow::Result;

use crate::cmd::cmd;

/// The log filter unless `RUST_LOG` says otherwise: the service at debug level, actix's internals at info.
const DEFAULT_LOG: &str = "debug,actix=info";

/// The shutdown drain unless the environment sets one: no load balancer waits on a development server, so
/// Ctrl-C stops it at once.
const DRAIN: (&str, &str) = ("CRM_AUTH__HTTP__SHUTDOWN_DRAIN_SECONDS", "0");

/// Runs `crm-auth serve --demo` until it is stopped.
pub fn run() -> Result<()> {
    let log = env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_LOG.to_owned());
    let drain = env::var(DRAIN.0).unwrap_or_else(|_| DRAIN.1.to_owned());
    cmd(
        "cargo",
        ["run", "--package", "crm-auth-server", "--", "serve", "--demo"],
    )
    .env("RUST_LOG", log)
    .env(DRAIN.0, drain)
    .run()
}
