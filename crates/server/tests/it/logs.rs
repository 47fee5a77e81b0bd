//! A full run of the real binary at the most verbose log level leaves no password, key, token or signing
//! secret in its log.

use std::io::Read as _;
use std::process::Stdio;

use base64::Engine as _;
use crm_auth_client::Client;

use crate::common::server::{ServerProcess, crm_auth, demo_field, free_port};

#[tokio::test]
async fn a_trace_level_run_logs_no_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut command = crm_auth(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("db.sqlite").display()),
    );
    command
        .args(["serve", "--demo"])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = ServerProcess::spawn(command, port)?;
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()?;
    let ready = server.wait_ready(&client).await;
    let outcome = async {
        ready?;
        // The demo credentials go to stdout (that is their purpose), printed before the server listens.
        let mut stdout = server
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = stdout.read(&mut buf)?;
        let printed = String::from_utf8_lossy(&buf[..n]).into_owned();
        let password = demo_field(&printed, "demo password:");
        let key = demo_field(&printed, "demo Web API key:");
        anyhow::ensure!(!password.is_empty() && !key.is_empty(), "demo output: {printed}");
        let by_password = client
            .token_with_password("admin", &password, "demo", None)
            .await?;
        let by_key = client.token_with_api_key(&key, Some("HQ")).await?;
        let refreshed = client.refresh(by_key.as_str()).await?;
        client.validate(refreshed.as_str()).await?;
        client.validate(by_password.as_str()).await?;
        let _ = client
            .token_with_password("admin", "wrong-password-value", "demo", None)
            .await;
        let _ = client
            .token_with_api_key("0123456789ABCDEF0123456789ABCDEF", None)
            .await;
        client.release(by_password.as_str()).await?;
        let _ = client.refresh(by_password.as_str()).await;
        anyhow::Ok(vec![
            password,
            key.clone(),
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:")),
            "wrong-password-value".to_owned(),
            "0123456789ABCDEF0123456789ABCDEF".to_owned(),
            by_password.as_str().to_owned(),
            by_key.as_str().to_owned(),
            refreshed.as_str().to_owned(),
            // The signature alone is the token's secret part.
            refreshed
                .as_str()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_owned(),
        ])
    }
    .await;
    server.kill()?;
    let mut log = String::new();
    if let Some(mut stderr) = server.child.stderr.take() {
        stderr.read_to_string(&mut log)?;
    }
    let mut secrets = outcome?;
    let signing_key = std::fs::read_to_string(dir.path().join("signing-key"))?;
    secrets.push(signing_key.trim().to_owned());
    assert!(
        log.contains("crm_auth::access") && log.contains("crm_auth::audit"),
        "the log was captured"
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains a secret ({} characters)",
            secret.len()
        );
    }
    Ok(())
}
