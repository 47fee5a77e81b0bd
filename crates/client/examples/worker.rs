//! A long-running worker: keeps one session and asks it for a token before every unit of work, so the token is
//! refreshed shortly before it expires and the worker logs in again when its session ends.
//!
//! ```sh
//! CRM_AUTH_KEY=... cargo run -p crm-auth-client --example worker -- [URL] [SECONDS_BETWEEN_JOBS]
//! ```
//!
//! Logs in with `CRM_AUTH_KEY` when set, else with `CRM_AUTH_USERNAME`, `CRM_AUTH_PASSWORD` and
//! `CRM_AUTH_ORGANISATION`; `CRM_AUTH_UNIT` picks a unit. `URL` defaults to `$CRM_AUTH_URL`, else
//! `http://127.0.0.1:8080`. Stops on Ctrl-C, releasing the session.

mod common;

use std::time::Duration;

use anyhow::Context as _;
use crm_auth_client::{Client, Credentials, Session};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set CRM_AUTH_KEY, or {name} and the other login variables"))
}

fn session(client: Client) -> anyhow::Result<Session> {
    let credentials = match std::env::var("CRM_AUTH_KEY") {
        Ok(key) => Credentials::api_key(key),
        Err(_) => Credentials::password(
            env("CRM_AUTH_USERNAME")?,
            env("CRM_AUTH_PASSWORD")?,
            env("CRM_AUTH_ORGANISATION")?,
        ),
    };
    Ok(match std::env::var("CRM_AUTH_UNIT") {
        Ok(unit) => Session::new(client, credentials.unit(unit)),
        Err(_) => Session::new(client, credentials),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = common::server_url(&mut args);
    let pause = match args.next() {
        Some(seconds) => {
            Duration::from_secs(seconds.parse().context("SECONDS_BETWEEN_JOBS must be a number")?)
        }
        None => Duration::from_secs(10),
    };

    let client = Client::builder().base_url(url).build()?;
    let session = session(client)?.margin(Duration::from_secs(120));

    let mut ticks = tokio::time::interval(pause);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        match session.token().await {
            // A real worker would call the CRM here, sending token.as_str().
            Ok(token) => println!(
                "job with session {} (generation {}, expires at {})",
                token.session_id(),
                token.claims().r#gen,
                token.expires_at()
            ),
            // Transient (UNAVAILABLE, RATE_LIMITED, network): skip this job, the next tick tries again.
            Err(err) if err.is_retryable() => {
                eprintln!("no token this time: {err}");
                if let Some(wait) = err.retry_after() {
                    tokio::time::sleep(wait).await;
                }
            }
            // Wrong credentials or a disabled user: retrying will not help.
            Err(err) => return Err(err).context("cannot log in"),
        }
    }
    session.release().await?;
    println!("session released");
    Ok(())
}
