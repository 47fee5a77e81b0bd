//! The log of the real binary, on SQLite and PostgreSQL: at the most verbose level it holds no password, key,
//! token or signing secret, in either format; in JSON every line is one object whose request and audit fields
//! have their types; the audit lines name the real client; `log.level` and `RUST_LOG` choose what is written,
//! and a bad log setting stops start-up with one line naming it.

use std::collections::HashSet;
use std::io::Read as _;
use std::process::{Output, Stdio};

use base64::Engine as _;
use crm_auth_client::{Client, Credentials};
use crm_auth_server::logging::Event;
use serde_json::{Map, Value};

use crate::common::server::{ServerProcess, crm_auth, demo_field, free_port, run_with_stdin};
use crate::common::{Backend, TestDb};

backend_tests!(
    a_trace_level_text_run_logs_no_secret,
    a_trace_level_json_run_logs_no_secret,
    json_lines_carry_typed_fields,
    the_audit_log_names_the_client_behind_a_trusted_proxy,
    log_level_and_rust_log_choose_what_is_written,
);

/// `serve --demo` on a port of its own, ready, with the demo credentials it printed.
struct Demo {
    server: ServerProcess,
    client: Client,
    base: String,
    port: u16,
    password: String,
    key: String,
}

impl Demo {
    /// Starts the server on `db` with `env` (a value of `None` removes the variable).
    async fn start(db: &TestDb, env: &[(&str, Option<&str>)]) -> anyhow::Result<Demo> {
        let port = free_port()?;
        let mut command = crm_auth(db.dir.path(), &db.url);
        command
            .args(["serve", "--demo"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut server = ServerProcess::spawn(command, port)?;
        let base = format!("http://127.0.0.1:{port}");
        let client = Client::builder().base_url(&base).build()?;
        server.wait_ready(&client).await?;
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
        Ok(Demo {
            server,
            client,
            base,
            port,
            password,
            key,
        })
    }

    /// Kills the server; returns everything it wrote to stderr.
    fn stop(mut self) -> anyhow::Result<String> {
        self.server.kill()?;
        let mut log = String::new();
        if let Some(mut stderr) = self.server.child.stderr.take() {
            stderr.read_to_string(&mut log)?;
        }
        Ok(log)
    }
}

/// What [`drive`] did.
struct Driven {
    /// Every secret that went over the wire.
    secrets: Vec<String>,
    /// A session still live at the end.
    live_session: String,
}

/// Everything the token endpoints do, successes and failures, plus an unknown path and a malformed body.
async fn drive(demo: &Demo) -> anyhow::Result<Driven> {
    let client = &demo.client;
    let by_password = client
        .token(&Credentials::password("admin", &demo.password, "demo"))
        .await?;
    let by_key = client.token(&Credentials::api_key(&demo.key).unit("HQ")).await?;
    let refreshed = client.refresh(by_key.as_str()).await?;
    client.validate(refreshed.as_str()).await?;
    client.validate(by_password.as_str()).await?;
    let _ = client
        .token(&Credentials::password("admin", "wrong-password-value", "demo"))
        .await;
    let _ = client
        .token(&Credentials::api_key("0123456789ABCDEF0123456789ABCDEF"))
        .await;
    client.release(by_password.as_str()).await?;
    let _ = client.refresh(by_password.as_str()).await;
    let http = reqwest::Client::new();
    let missing = http.get(format!("{}/nowhere", demo.base)).send().await?;
    anyhow::ensure!(missing.status() == 404, "unknown path: {}", missing.status());
    let bad = http
        .post(format!("{}/crmapi/rest/v2/authentication/token", demo.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    anyhow::ensure!(bad.status() == 400, "malformed body: {}", bad.status());
    Ok(Driven {
        secrets: vec![
            demo.password.clone(),
            demo.key.clone(),
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", demo.key)),
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
        ],
        live_session: refreshed.session_id().to_owned(),
    })
}

/// A command of the binary on the same database as `db`'s server, with `env` as in [`Demo::start`].
fn command(db: &TestDb, args: &[&str], env: &[(&str, Option<&str>)], stdin: &str) -> anyhow::Result<Output> {
    let mut command = crm_auth(db.dir.path(), &db.url);
    command.args(args);
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    run_with_stdin(command, stdin)
}

async fn a_trace_level_text_run_logs_no_secret(backend: Backend) -> anyhow::Result<()> {
    a_trace_level_run_logs_no_secret(backend, "text").await
}

async fn a_trace_level_json_run_logs_no_secret(backend: Backend) -> anyhow::Result<()> {
    a_trace_level_run_logs_no_secret(backend, "json").await
}

/// Logins, refreshes, validations, releases and failures of each, then a password change and a new key from
/// the command line, all at trace level: no secret reaches the log.
async fn a_trace_level_run_logs_no_secret(backend: Backend, format: &str) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let env = [
        ("RUST_LOG", Some("trace")),
        ("CRM_AUTH__LOG__FORMAT", Some(format)),
    ];
    let demo = Demo::start(&db, &env).await?;
    let driven = drive(&demo).await;
    let mut log = demo.stop()?;
    let mut secrets = driven?.secrets;
    let new_password = "a-new-password-for-the-log-test";
    let passwd = command(
        &db,
        &["user", "passwd", "--org", "demo", "admin", "--password-stdin"],
        &env,
        new_password,
    )?;
    let created = command(
        &db,
        &["key", "create", "--org", "demo", "--user", "admin"],
        &env,
        "",
    )?;
    anyhow::ensure!(
        passwd.status.success() && created.status.success(),
        "the commands failed"
    );
    let new_key = String::from_utf8(created.stdout)?
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    log.push_str(&String::from_utf8(passwd.stderr)?);
    log.push_str(&String::from_utf8(created.stderr)?);
    secrets.extend([new_password.to_owned(), new_key]);
    let signing_key = std::fs::read_to_string(db.dir.path().join("signing-key"))?;
    secrets.push(signing_key.trim().to_owned());
    assert!(
        log.contains("crm_auth::access") && log.contains("crm_auth::audit"),
        "the log was captured"
    );
    if format == "json" {
        // The other crates' records (actix, diesel, reqwest, ...) at their most verbose parse too.
        json_lines(&log)?;
    }
    for secret in &secrets {
        assert!(
            !secret.is_empty() && !log.contains(secret.as_str()),
            "the log contains a secret ({} characters)",
            secret.len()
        );
    }
    Ok(())
}

/// Every line of `log` as a JSON object with `ts` (RFC 3339), `level`, `target` and `msg`.
fn json_lines(log: &str) -> anyhow::Result<Vec<Map<String, Value>>> {
    let mut records = Vec::new();
    for line in log.lines() {
        let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else {
            anyhow::bail!("not a JSON object: {line}");
        };
        let ts = record.get("ts").and_then(Value::as_str).unwrap_or_default();
        anyhow::ensure!(
            ts.parse::<jiff::Timestamp>().is_ok(),
            "ts is not RFC 3339: {line}"
        );
        let level = record.get("level").and_then(Value::as_str).unwrap_or_default();
        anyhow::ensure!(
            ["error", "warn", "info", "debug", "trace"].contains(&level),
            "level: {line}"
        );
        let target = record.get("target").and_then(Value::as_str).unwrap_or_default();
        anyhow::ensure!(!target.is_empty(), "target: {line}");
        anyhow::ensure!(record.get("msg").is_some_and(Value::is_string), "msg: {line}");
        records.push(record);
    }
    anyhow::ensure!(!records.is_empty(), "an empty log");
    Ok(records)
}

fn text<'a>(record: &'a Map<String, Value>, key: &str) -> &'a str {
    record.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Whether a JSON value has a field's type.
type IsType = fn(&Value) -> bool;

/// The fields a record of ours may carry, with their JSON type.
const FIELD_TYPES: [(&str, IsType); 22] = [
    ("request_id", Value::is_string),
    ("method", Value::is_string),
    ("path", Value::is_string),
    ("status", Value::is_u64),
    ("duration_ms", Value::is_number),
    ("event", Value::is_string),
    ("actor", Value::is_string),
    ("organisation", Value::is_string),
    ("username", Value::is_string),
    ("unit", Value::is_string),
    ("session", Value::is_string),
    ("client", Value::is_string),
    ("auth_method", Value::is_string),
    ("reason", Value::is_string),
    ("key_id", Value::is_string),
    ("generation", Value::is_i64),
    ("presented_generation", Value::is_i64),
    ("current_generation", Value::is_i64),
    ("retry_after", Value::is_u64),
    ("ended", Value::is_u64),
    ("was_live", Value::is_boolean),
    ("address", Value::is_string),
];

/// A JSON run at the default level: every line parses; requests and audit events carry typed fields, never
/// `key=value` text in the message; audit events join their request's access line by `request_id`.
async fn json_lines_carry_typed_fields(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let env = [("RUST_LOG", None), ("CRM_AUTH__LOG__FORMAT", Some("json"))];
    let demo = Demo::start(&db, &env).await?;
    let port = demo.port;
    let driven = drive(&demo).await;
    let revoked = match &driven {
        Ok(driven) => Some(command(
            &db,
            &["session", "revoke", &driven.live_session],
            &env,
            "",
        )?),
        Err(_) => None,
    };
    let log = demo.stop()?;
    driven?;
    let revoked = revoked.ok_or_else(|| anyhow::anyhow!("no revocation"))?;
    anyhow::ensure!(revoked.status.success(), "session revoke failed");
    // A command that fails says so in one JSON line too.
    let failed = command(&db, &["org", "add", "demo"], &env, "")?;
    anyhow::ensure!(!failed.status.success(), "a second demo organisation was created");
    let failure = String::from_utf8(failed.stderr)?;
    assert_eq!(failure.trim().lines().count(), 1, "{failure}");
    let failure = &json_lines(&failure)?[0];
    assert_eq!(
        (text(failure, "level"), text(failure, "target")),
        ("error", "crm_auth::cli")
    );
    assert!(text(failure, "msg").contains("already exists"), "{failure:?}");

    let log = format!("{log}{}", String::from_utf8(revoked.stderr)?);
    let records = json_lines(&log)?;
    for record in &records {
        if !text(record, "target").starts_with("crm_auth") {
            continue;
        }
        assert!(
            !text(record, "msg").contains('='),
            "key=value text in msg: {record:?}"
        );
        for (key, is_type) in FIELD_TYPES {
            if let Some(value) = record.get(key) {
                assert!(is_type(value), "{key} has the wrong type: {record:?}");
            }
        }
    }

    let access: Vec<_> = records
        .iter()
        .filter(|r| text(r, "target") == "crm_auth::access")
        .collect();
    for record in &access {
        for key in ["request_id", "method", "path", "status", "duration_ms"] {
            assert!(record.contains_key(key), "no {key}: {record:?}");
        }
        assert_eq!(text(record, "request_id").len(), 32, "{record:?}");
    }
    let statuses: HashSet<u64> = access.iter().filter_map(|r| r["status"].as_u64()).collect();
    for status in [200, 400, 401, 404] {
        assert!(statuses.contains(&status), "no {status} in {statuses:?}");
    }
    assert!(
        access
            .iter()
            .any(|r| text(r, "method") == "GET" && text(r, "path") == "/nowhere"),
        "the unknown path was logged"
    );
    let request_ids: HashSet<&str> = access.iter().map(|r| text(r, "request_id")).collect();

    let audit: Vec<_> = records
        .iter()
        .filter(|r| text(r, "target") == "crm_auth::audit")
        .collect();
    let names: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
    let mut seen = HashSet::new();
    for record in &audit {
        let event = text(record, "event");
        assert!(
            names.contains(&event),
            "an event outside the vocabulary: {record:?}"
        );
        seen.insert((event, text(record, "auth_method")));
        if text(record, "actor") == "cli" {
            assert!(!record.contains_key("request_id"), "{record:?}");
        } else {
            assert!(
                request_ids.contains(text(record, "request_id")),
                "no access line for {record:?}"
            );
            assert_eq!(text(record, "client"), "127.0.0.1", "{record:?}");
        }
    }
    for expected in [
        ("login.ok", "password"),
        ("login.ok", "web_api_key"),
        ("login.failed", "password"),
        ("login.failed", "web_api_key"),
        ("session.refresh", ""),
        ("session.refresh_refused", ""),
        ("session.release", ""),
        ("session.revoke", ""),
    ] {
        assert!(seen.contains(&expected), "no {expected:?} in {seen:?}");
    }
    let ok = audit
        .iter()
        .find(|r| text(r, "event") == "login.ok" && text(r, "auth_method") == "password")
        .ok_or_else(|| anyhow::anyhow!("no password login"))?;
    assert_eq!(
        (text(ok, "organisation"), text(ok, "username"), text(ok, "unit")),
        ("demo", "admin", "HQ")
    );
    assert_eq!(text(ok, "session").len(), 32, "{ok:?}");

    let listening = records
        .iter()
        .find(|r| text(r, "msg") == "crm-auth listening")
        .ok_or_else(|| anyhow::anyhow!("no start-up line"))?;
    assert_eq!(text(listening, "address"), format!("127.0.0.1:{port}"));
    assert_eq!(text(listening, "base_path"), "/crmapi/rest/v2");
    Ok(())
}

/// Behind a trusted proxy the audit log names the client the proxies report, read as the rate limit reads it,
/// and never an address the client wrote to the left of its own.
async fn the_audit_log_names_the_client_behind_a_trusted_proxy(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let port = free_port()?;
    let mut command = crm_auth(db.dir.path(), &db.url);
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
        .filter(|line| line.contains("crm_auth::audit") && line.contains(" event=login.failed "))
        .collect();
    assert_eq!(failures.len(), cases.len(), "{log}");
    for (line, (forwarded, client)) in failures.iter().zip(cases) {
        let logged: Vec<&str> = line
            .split(' ')
            .filter_map(|word| word.strip_prefix("client="))
            .collect();
        assert_eq!(
            logged,
            [client],
            "{forwarded} should be logged as {client}: {line}"
        );
    }
    Ok(())
}

/// `RUST_LOG` chooses the level when it is set and not blank, `log.level` otherwise; the command line's audit
/// records follow it.
async fn log_level_and_rust_log_choose_what_is_written(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    // (RUST_LOG, log.level, whether the info-level audit record is written)
    let cases = [
        (None, Some("warn"), false),
        (Some("info"), Some("warn"), true),
        (Some(" "), Some("warn"), false),
        (Some("warn"), None, false),
        (None, None, true),
        (None, Some("warn,crm_auth::audit=info"), true),
    ];
    for (i, (rust_log, level, written)) in cases.into_iter().enumerate() {
        let name = format!("Org{i}");
        let env = [("RUST_LOG", rust_log), ("CRM_AUTH__LOG__LEVEL", level)];
        let out = command(&db, &["org", "add", &name], &env, "")?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(out.status.success(), "{stderr}");
        let expected = format!(
            "INFO  crm_auth::audit] organisation created event=organisation.create actor=cli organisation={name}\n"
        );
        assert_eq!(
            stderr.ends_with(&expected),
            written,
            "RUST_LOG {rust_log:?}, log.level {level:?}: {stderr:?}"
        );
        if !written {
            assert_eq!(stderr, "", "RUST_LOG {rust_log:?}, log.level {level:?}");
        }
    }
    Ok(())
}

/// A bad `log.format`, `log.level` or `RUST_LOG` stops start-up with one line naming it, before anything is
/// written.
#[test]
fn bad_log_settings_stop_start_up_with_one_line() -> anyhow::Result<()> {
    for (name, value, named) in [
        ("CRM_AUTH__LOG__FORMAT", "xml", "log.format"),
        ("CRM_AUTH__LOG__LEVEL", "info,crm_auth=loud", "log.level"),
        ("CRM_AUTH__LOG__LEVEL", "a=b=c", "log.level"),
        ("RUST_LOG", "info/a/b", "RUST_LOG"),
    ] {
        let dir = tempfile::tempdir()?;
        let database = dir.path().join("db.sqlite");
        let mut command = crm_auth(dir.path(), &format!("sqlite://{}", database.display()));
        command.arg("serve").env_remove("RUST_LOG").env(name, value);
        let out = run_with_stdin(command, "")?;
        let stderr = String::from_utf8(out.stderr)?;
        assert!(!out.status.success(), "{name}={value} started");
        assert_eq!(stderr.lines().count(), 1, "{name}={value}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(named),
            "{name}={value}: {stderr}"
        );
        assert!(!database.exists(), "{name}={value}: the database was created");
    }
    Ok(())
}

/// The README's operator section lists every audit event the code can write.
#[test]
fn every_audit_event_is_documented() -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))?;
    for event in Event::ALL {
        assert!(
            readme.contains(&format!("`{event}`")),
            "the README does not list {event}"
        );
    }
    Ok(())
}
