//! The crate's documented example, run: the code between the markers below is the example of the crate's
//! documentation (`src/lib.rs`) and of the README's "Backend teams" section, character for character (the
//! last test compares them), and the first test runs it against the real server, with its generated key and
//! with a configured key file.

use std::net::TcpListener;

use actix_web::rt;
use crm_auth_server::settings::{KeySettings, Settings};

use crate::common::RealServer;

// example:start
use actix_web::{App, HttpServer, Responder, get};
use crm_auth_actix::{AuthConfig, Authenticated, KeyFileError, Keyring, Verifier};

#[get("/whoami")]
async fn whoami(user: Authenticated) -> impl Responder {
    format!("{} of {} in {}", user.username, user.organisation, user.unit)
}

/// Tokens checked offline with the server's HS256 key, read from a copy of its key file: the generated
/// `{data_dir}/signing-key` has the key id `generated`, a `token.keys` entry the `id` it is given there.
fn auth_config(key_id: &str, key_file: &str) -> Result<AuthConfig, KeyFileError> {
    let keyring = Keyring::from_key_file(key_id, key_file)?;
    let verifier = Verifier::new(keyring, "crm-auth").with_leeway(30);
    Ok(AuthConfig::offline(verifier))
}

/// The service, listening at `addr`; `main` awaits
/// `server(auth_config("generated", "signing-key")?, "127.0.0.1:8081")?`.
fn server(auth: AuthConfig, addr: &str) -> std::io::Result<actix_web::dev::Server> {
    let app = move || {
        App::new()
            .configure(crm_auth_actix::configure(auth.clone()))
            .service(whoami)
    };
    Ok(HttpServer::new(app).bind(addr)?.run())
}
// example:end

#[actix_web::test]
async fn the_documented_example_accepts_the_real_servers_tokens() -> anyhow::Result<()> {
    // The generated key, as `crm-auth serve` writes it when no key is configured.
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys.clear();
    run_example(settings, "generated", &dir.path().join("signing-key")).await?;
    // A configured key file, as a deployment of several nodes has, its secret written as the README says.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("shared-key");
    std::fs::write(&file, "base64:2dGJDPIaX5Yx0ZxK3S2+ZBqCkz1YK4bIkAO1lMPnM/E=\n")?;
    let mut settings = Settings::for_test(dir.path());
    let mut key = KeySettings::hs256("2026-12", "unused");
    key.secret = None;
    key.secret_file = Some(file.clone());
    settings.token.keys = vec![key];
    run_example(settings, "2026-12", &file).await
}

/// Starts the server with `settings`, logs in with a key, and has the documented service, given a copy of
/// `key_file` under `key_id`, accept the token and refuse no token and a bad one with their challenges.
async fn run_example(settings: Settings, key_id: &str, key_file: &std::path::Path) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let real = RealServer::start(settings)?;
    let token = real.token().await?;

    // The service, as documented, on the copy of the server's key file.
    let copy = dir.path().join("copy-of-signing-key");
    std::fs::copy(key_file, &copy)?;
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let service = server(
        auth_config(key_id, copy.to_str().unwrap_or_default())?,
        &addr.to_string(),
    )?;
    let handle = service.handle();
    rt::spawn(service);
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/whoami");
    let resp = http.get(&url).bearer_auth(token.as_str()).send().await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await?, "alice of Acme in HQ");
    let resp = http.get(&url).send().await?;
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    let resp = http.get(&url).bearer_auth("x.y.z").send().await?;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    handle.stop(true).await;
    real.stop().await;
    Ok(())
}

/// The example between the markers of this file.
fn tested_example() -> String {
    let source = include_str!("docs.rs");
    let start = "// example:start\n";
    let begin = source.find(start).map_or(0, |at| at + start.len());
    let end = source.find("// example:end").unwrap_or(begin);
    source[begin..end].to_owned()
}

/// The code of the first Rust block after `heading` in `text`, with `prefix` (`//! `) taken off every line.
fn block_after(text: &str, heading: &str, prefix: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(|line| {
            line.strip_prefix(prefix)
                .or_else(|| line.strip_prefix(prefix.trim_end()))
                .unwrap_or(line)
        })
        .collect();
    let at = lines.iter().position(|line| line.starts_with(heading))?;
    let open = at + lines[at..].iter().position(|line| line.starts_with("```rust"))?;
    let close = open + 1 + lines[open + 1..].iter().position(|line| *line == "```")?;
    Some(
        lines[open + 1..close]
            .iter()
            .map(|line| format!("{line}\n"))
            .collect(),
    )
}

#[test]
fn the_docs_show_the_tested_example() {
    let example = tested_example();
    assert!(example.contains("fn auth_config"), "the markers are found");
    let crate_docs = include_str!("../../src/lib.rs");
    assert_eq!(
        block_after(crate_docs, "# Protect a route", "//! ").as_deref(),
        Some(example.as_str()),
        "src/lib.rs's example differs from the tested one"
    );
    let readme = include_str!("../../../../README.md");
    assert_eq!(
        block_after(readme, "## Backend teams", "").as_deref(),
        Some(example.as_str()),
        "the README's example differs from the tested one"
    );
}
