//! Gets a token with a Web API key, shows its claims, validates it and releases the session.
//!
//! ```sh
//! CRM_AUTH_KEY=... cargo run -p crm-auth-client --example key_login -- [URL] [UNIT]
//! ```
//!
//! `URL` is the server's root (default `$CRM_AUTH_URL`, else `http://127.0.0.1:8080`); the key is read from
//! `CRM_AUTH_KEY` rather than the command line, where other users of the machine could see it.

mod common;

use anyhow::Context as _;
use crm_auth_client::{Client, Credentials};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = common::server_url(&mut args);
    let unit = args.next();
    let key = std::env::var("CRM_AUTH_KEY").context("set CRM_AUTH_KEY to a Web API key")?;

    let client = Client::builder().base_url(url).build()?;
    let credentials = match unit {
        Some(unit) => Credentials::api_key(key).unit(unit),
        None => Credentials::api_key(key),
    };
    let token = client.token(&credentials).await?;
    println!("session:      {}", token.session_id());
    println!(
        "user:         {} in {} / {}",
        token.username(),
        token.organisation(),
        token.unit()
    );
    println!("expires in:   {} s", token.expires_in().as_secs());

    let session = client.validate(token.as_str()).await?;
    println!("validated:    {} session, live", session.method);

    client.release(token.as_str()).await?;
    println!("released");
    Ok(())
}
