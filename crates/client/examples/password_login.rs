//! Gets a token with a username and password, then refreshes it once.
//!
//! ```sh
//! CRM_AUTH_USERNAME=admin CRM_AUTH_PASSWORD=... CRM_AUTH_ORGANISATION=demo \
//!     cargo run -p crm-auth-client --example password_login -- [URL] [UNIT]
//! ```
//!
//! `URL` is the server's root (default `$CRM_AUTH_URL`, else `http://127.0.0.1:8080`). The password is read from
//! the environment rather than the command line, where other users of the machine could see it.

mod common;

use anyhow::Context as _;
use crm_auth_client::{Client, Credentials, ErrorCode};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = common::server_url(&mut args);
    let unit = args.next();
    let username = env("CRM_AUTH_USERNAME")?;
    let password = env("CRM_AUTH_PASSWORD")?;
    let organisation = env("CRM_AUTH_ORGANISATION")?;

    let client = Client::builder().base_url(url).build()?;
    let credentials = Credentials::password(username, password, organisation);
    let credentials = match unit {
        Some(unit) => credentials.unit(unit),
        None => credentials,
    };
    let token = match client.token(&credentials).await {
        Ok(token) => token,
        Err(err) if err.code() == Some(ErrorCode::TooManyAttempts) => {
            let wait = err.retry_after().map_or(0, |d| d.as_secs());
            anyhow::bail!("too many failed logins, try again in {wait} s");
        }
        Err(err) => return Err(err.into()),
    };
    println!(
        "logged in:    {} in {} / {}",
        token.username(),
        token.organisation(),
        token.unit()
    );
    println!(
        "session:      {} (generation {})",
        token.session_id(),
        token.generation()
    );

    let refreshed = client.refresh(token.as_str()).await?;
    println!(
        "refreshed:    generation {}, expires in {} s",
        refreshed.generation(),
        refreshed.expires_in().as_secs()
    );
    Ok(())
}
