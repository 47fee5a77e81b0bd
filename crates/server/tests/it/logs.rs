//! A full run of the real binary at the most verbose log level leaves no password, key, token or signing
//! secret in its log, and its audit lines name the real client.

use std::io::Read as _;
use std::process::Stdio;

use base64::Engine as _;
use crm_auth_client::Client;

use crate::common::server::{ServerProcess, crm_auth, demo_field, free_port};

/// The binary on an SQLite database in `dir`.
fn on_sqlite(dir: &std::path::Path) -> std::process::Command {
    crm_auth(dir, &format!("sqlite://{}", dir.join("db.sqlite").display()))
}

#[tokio::test]
async fn a_trace_level_run_logs_no_secret() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut command = on_sqlite(dir.path());
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

/// Behind a trusted proxy the audit log names the client the proxies report, read as the rate limit reads it,
/// and never an address the client wrote to the left of its own.
#[tokio::test]
async fn the_audit_log_names_the_client_behind_a_trusted_proxy() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut command = on_sqlite(dir.path());
    command
        .arg("serve")
        .env("RUST_LOG", "info")
        .env("CRM_AUTH__HTTP__TRUSTED_PROXIES", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut server = ServerProcess::spawn(command, port)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = Client::builder().base_url(&base).build()?;
    let ready = server.wait_ready(&client).await;
    // (what the proxy forwards, the client the audit line must name)
    let cases = [
        ("junk, 203.0.113.9:5678", "203.0.113.9"),
        ("198.51.100.1, [2001:db8::7]:443", "2001:db8::7"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        ("203.0.113.10, unknown", "127.0.0.1"),
    ];
    let outcome = async {
        ready?;
        let http = reqwest::Client::new();
        let auth = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("0123456789ABCDEF0123456789ABCDEF:")
        );
        for (forwarded, _) in cases {
            let res = http
                .post(format!("{base}/crmapi/rest/v2/authentication/web_api_key/token"))
                .header("authorization", &auth)
                .header("x-forwarded-for", forwarded)
                .send()
                .await?;
            anyhow::ensure!(res.status() == 401, "{forwarded}: {}", res.status());
        }
        anyhow::Ok(())
    }
    .await;
    server.kill()?;
    let mut log = String::new();
    if let Some(mut stderr) = server.child.stderr.take() {
        stderr.read_to_string(&mut log)?;
    }
    outcome?;
    let failures: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("crm_auth::audit") && line.contains("login failed"))
        .collect();
    assert_eq!(failures.len(), cases.len(), "{log}");
    for (line, (forwarded, client)) in failures.iter().zip(cases) {
        assert!(
            line.ends_with(&format!(" client={client}")),
            "{forwarded} should be logged as {client}: {line}"
        );
    }
    Ok(())
}
