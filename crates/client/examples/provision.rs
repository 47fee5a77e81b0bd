//! Sets up a new customer through the administration API: an organisation, a unit in it, a user in that unit
//! and a Web API key for the user, printing each (the key once, since that is the point).
//!
//! ```sh
//! CRM_AUTH_USERNAME=admin CRM_AUTH_PASSWORD=... CRM_AUTH_ORGANISATION=demo \
//!     cargo run -p crm-auth-client --example provision -- [URL] [ORGANISATION] [UNIT] [USERNAME]
//! ```
//!
//! The credentials are an `operator`'s (only operators create organisations); the password is read from the
//! environment rather than the command line, where other users of the machine could see it. `URL` is the
//! server's root (default `$CRM_AUTH_URL`, else `http://127.0.0.1:8080`); the new organisation, unit and user
//! default to `Example`, `Headquarters` and `integration`. The user gets no password: it logs in with its key,
//! which the example tries once.

mod common;

use anyhow::Context as _;
use crm_auth_client::admin::{NewKey, NewUnit, NewUser};
use crm_auth_client::{Client, Credentials, ErrorCode};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("set {name}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = common::server_url(&mut args);
    let organisation = args.next().unwrap_or_else(|| "Example".to_owned());
    let unit = args.next().unwrap_or_else(|| "Headquarters".to_owned());
    let username = args.next().unwrap_or_else(|| "integration".to_owned());
    let operator = env("CRM_AUTH_USERNAME")?;
    let password = env("CRM_AUTH_PASSWORD")?;
    let operator_organisation = env("CRM_AUTH_ORGANISATION")?;

    let client = Client::builder().base_url(url).build()?;
    let token = client
        .token(&Credentials::password(
            &operator,
            password,
            &operator_organisation,
        ))
        .await
        .context("log in as the operator")?;
    println!("logged in:    {operator} in {operator_organisation}");
    let admin = client.admin(token.as_str())?;

    let org = match admin.create_organisation(&organisation).await {
        Ok(org) => org,
        Err(err) if err.code() == Some(ErrorCode::Conflict) => {
            anyhow::bail!("an organisation named {organisation:?} exists already")
        }
        Err(err) if err.code() == Some(ErrorCode::Forbidden) => {
            anyhow::bail!("{operator} is not an operator, so it cannot create organisations")
        }
        Err(err) => return Err(err.into()),
    };
    println!("organisation: {} ({})", org.name, org.id);

    let new_unit = NewUnit {
        name: unit,
        code: None,
    };
    let unit = admin.create_unit(&org.id, &new_unit).await?;
    println!("unit:         {} ({})", unit.name, unit.id);

    let new_user = NewUser {
        username,
        password: None,
        units: vec![unit.id.clone()],
        default_unit: None,
        role: None,
    };
    let user = admin.create_user(&org.id, &new_user).await?;
    println!("user:         {} ({}, {})", user.username, user.id, user.role);

    let new_key = NewKey {
        username: user.username.clone(),
        name: Some("provisioned".to_owned()),
        expires_at: None,
    };
    let created = admin.create_key(&org.id, &new_key).await?;
    println!(
        "key:          {} (prefix {})",
        created.info.id, created.info.prefix
    );
    println!("web api key:  {}", created.key);
    println!("              shown once: store it now, the server keeps only its digest");

    let key_token = client.token(&Credentials::api_key(&created.key)).await?;
    let claims = key_token.claims();
    println!("key login:    {} in {} / {}", claims.usr, claims.org, claims.oun);
    client.release(key_token.as_str()).await?;

    client.release(token.as_str()).await?;
    Ok(())
}
