//! The README's operator commands and administration API calls, run as printed (placeholders filled in)
//! against a fresh database, so the documentation cannot drift from the command line or the API.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crm_auth_client::Credentials;
use crm_auth_core::{ErrorCode, routes};
use serde_json::Value;

use crate::common::server::{Node, crm_auth, demo_field, run_with_stdin};
use crate::common::{Backend, TestDb, code};

backend_tests!(every_documented_admin_call_works_as_printed);

/// The README's text.
fn readme() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../README.md"
    ))?)
}

/// The text of the README's section `heading`, up to the next heading of level 2 or 3.
fn section<'a>(readme: &'a str, heading: &str) -> anyhow::Result<&'a str> {
    let rest = readme
        .split_once(&format!("\n{heading}\n"))
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("the README has no section {heading:?}"))?;
    Ok(rest.split("\n##").next().unwrap_or(rest))
}

/// The first block fenced as `lang` in `text`.
fn block<'a>(text: &'a str, lang: &str) -> anyhow::Result<&'a str> {
    text.split(&format!("```{lang}\n"))
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("no ```{lang} block"))
}

/// The lines of the README's "Command line" block, without comments.
fn documented_commands() -> anyhow::Result<Vec<String>> {
    let readme = readme()?;
    let commands = block(section(&readme, "### Command line")?, "sh")?;
    Ok(commands
        .lines()
        .map(|line| line.split(" # ").next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect())
}

/// Runs `crm-auth` with `args` on the test's SQLite database; returns its standard output.
fn run(dir: &std::path::Path, args: &[String], stdin: &str) -> anyhow::Result<String> {
    let mut command = crm_auth(dir, &database_url(dir));
    command.args(args);
    let out = run_with_stdin(command, stdin)?;
    anyhow::ensure!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn every_documented_operator_command_works_as_printed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let commands = documented_commands()?;
    assert!(commands.len() >= 8, "{commands:?}");
    let mut key_id = String::new();
    let mut jti = String::new();
    for line in &commands {
        // `printf '%s' "$PASSWORD" | crm-auth ...` feeds a password on standard input.
        let (stdin, command) = match line.split_once(" | ") {
            Some((_, command)) => ("a documented password", command),
            None => ("", line.as_str()),
        };
        let mut args: Vec<String> = command
            .split_whitespace()
            .skip(1)
            .map(|word| word.trim_matches(['[', ']']).to_owned())
            .collect();
        for arg in &mut args {
            match arg.as_str() {
                "KEY_ID" => arg.clone_from(&key_id),
                "JTI" => arg.clone_from(&jti),
                _ => {}
            }
        }
        let out = run(dir.path(), &args, stdin)?;
        if args.starts_with(&["key".into(), "create".into()]) {
            // A session to revoke later, opened with the key just created.
            let key = out.trim().lines().last().unwrap_or_default().to_owned();
            jti = open_session(dir.path(), &key).await?;
        }
        if args.starts_with(&["key".into(), "list".into()]) {
            key_id = out
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
        }
    }
    assert!(crm_auth_core::is_id(&key_id) && crm_auth_core::is_id(&jti));
    Ok(())
}

/// The SQLite database in `dir` that the commands and the server share.
fn database_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("db.sqlite").display())
}

/// Logs in with `key` on a server over the same database; returns the session id.
async fn open_session(dir: &std::path::Path, key: &str) -> anyhow::Result<String> {
    let mut settings = crm_auth_server::settings::Settings::for_test(dir);
    settings.database.url = crm_auth_server::settings::Secret::new(database_url(dir));
    settings.token.keys.clear();
    let node = Node::start(crm_auth_server::state::AppState::from_settings(settings)?)?;
    let client = node.client()?;
    Ok(client
        .token(&Credentials::api_key(key))
        .await?
        .session_id()
        .to_owned())
}

/// The placeholders the administration API section documents: the two the reader sets, then those taken
/// from answers.
const ADMIN_PLACEHOLDERS: [&str; 6] = ["BASE", "PASSWORD", "TOKEN", "CURSOR", "SESSION_ID", "KEY_ID"];

/// The curl commands of the README's administration API block, each as printed (continuation lines
/// included), without the comment lines.
fn documented_admin_calls(section: &str) -> anyhow::Result<Vec<String>> {
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block(section, "sh")?.lines() {
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            continue;
        }
        current.push_str(line);
        if line.ends_with('\\') {
            current.push('\n');
        } else {
            commands.push(std::mem::take(&mut current));
        }
    }
    anyhow::ensure!(current.is_empty(), "the block ends inside a command");
    Ok(commands)
}

/// The shell variables `command` uses (`$NAME`).
fn variables(command: &str) -> BTreeSet<String> {
    command
        .split('$')
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// A documented call: its method (`-X`, else GET), the path after `$BASE` with the placeholders as
/// printed, and its query.
fn request_of(command: &str) -> anyhow::Result<(String, String, String)> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let method = words
        .iter()
        .position(|w| *w == "-X")
        .and_then(|i| words.get(i + 1))
        .map_or("GET", |m| m);
    let url = command
        .split_once("\"$BASE")
        .and_then(|(_, rest)| rest.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no \"$BASE...\" URL in {command}"))?;
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    Ok((method.to_owned(), path.to_owned(), query.to_owned()))
}

/// The route `path` matches, placeholders and names standing for the template's `{...}` segments.
fn route_of(path: &str) -> Option<&'static str> {
    let password_token = format!("{}{}", routes::DEFAULT_BASE_PATH, routes::PASSWORD_TOKEN);
    if path == password_token {
        return Some(routes::PASSWORD_TOKEN);
    }
    [
        routes::ADMIN_ORGANISATIONS,
        routes::ADMIN_ORGANISATION,
        routes::ADMIN_UNITS,
        routes::ADMIN_USERS,
        routes::ADMIN_USER,
        routes::ADMIN_USER_SESSIONS,
        routes::ADMIN_KEYS,
        routes::ADMIN_KEY,
        routes::ADMIN_SESSIONS,
        routes::ADMIN_SESSION,
        routes::ADMIN_AUDIT,
        routes::ADMIN_IMPORT,
    ]
    .into_iter()
    .find(|template| {
        let (a, b): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
        a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
    })
}

/// Runs `command` with `sh` as a reader's shell would, `vars` set (an unset one is an error, not an empty
/// string), in `dir`; returns the HTTP status and the body. `dir`'s `.curlrc` (curl reads it through
/// `CURL_HOME`) makes curl print the status after the body and bypass any proxy, so the command itself
/// runs exactly as printed.
fn curl(dir: &Path, vars: &BTreeMap<&str, String>, command: &str) -> anyhow::Result<(u16, Value)> {
    let out = std::process::Command::new("sh")
        .args(["-u", "-c", command])
        .current_dir(dir)
        .env("CURL_HOME", dir)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()?;
    let stdout = String::from_utf8(out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "{command}\nfailed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, status) = stdout
        .rsplit_once('\n')
        .ok_or_else(|| anyhow::anyhow!("{command}\nprinted no status: {stdout}"))?;
    let body: Value = serde_json::from_str(body)
        .map_err(|e| anyhow::anyhow!("{command}\nanswered no JSON ({e}): {body}"))?;
    Ok((status.parse()?, body))
}

/// A string member of an answer, by JSON pointer.
fn text(body: &Value, pointer: &str) -> String {
    body.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The README's administration API block, run with `sh` and the real `curl` against the real server on a
/// database holding only the demo operator, as a reader who has just run `crm-auth demo` would: every call
/// answers its documented status and `OK`, each answer the next calls need holds what the prose says it
/// does, and the calls shown cover the API's routes.
async fn every_documented_admin_call_works_as_printed(backend: Backend) -> anyhow::Result<()> {
    let readme = readme()?;
    let admin_api = section(&readme, "### Administration API")?;
    let prose = admin_api.split("```sh").next().unwrap_or_default();
    let commands = documented_admin_calls(admin_api)?;
    let used: BTreeSet<String> = commands.iter().flat_map(|c| variables(c)).collect();
    let documented: BTreeSet<String> = ADMIN_PLACEHOLDERS.iter().map(|&p| p.to_owned()).collect();
    assert_eq!(used, documented, "the block's placeholders");
    for name in ADMIN_PLACEHOLDERS {
        assert!(
            prose.contains(&format!("`{name}`")),
            "the prose does not explain {name}"
        );
    }

    let db = TestDb::new(&backend)?;
    let mut demo = crm_auth(db.dir.path(), &db.url);
    demo.arg("demo");
    let out = run_with_stdin(demo, "")?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let password = demo_field(&String::from_utf8(out.stdout)?, "demo password:");
    let node = Node::start(crm_auth_server::state::AppState::from_settings(db.settings())?)?;
    let client = node.client()?;

    let work = tempfile::tempdir()?;
    let ndjson = block(section(&readme, "### Migrating from CRM.COM")?, "ndjson")?;
    std::fs::write(work.path().join("users.ndjson"), ndjson)?;
    std::fs::write(
        work.path().join(".curlrc"),
        "write-out = \"\\n%{http_code}\"\nnoproxy = \"*\"\n",
    )?;

    let mut vars = BTreeMap::from([("BASE", node.url.clone()), ("PASSWORD", password)]);
    let mut covered = BTreeSet::new();
    let mut first_page_user = String::new();
    let mut opened = Vec::new();
    for command in &commands {
        let (method, path, query) = request_of(command)?;
        let route = route_of(&path).ok_or_else(|| anyhow::anyhow!("{command}\nnames no route"))?;
        let (status, body) = curl(work.path(), &vars, command)?;
        let creates = method == "POST" && route != routes::PASSWORD_TOKEN && route != routes::ADMIN_IMPORT;
        assert_eq!(
            (status, text(&body, "/status/code").as_str()),
            (if creates { 201 } else { 200 }, "OK"),
            "{command}\n{body}"
        );
        let data = &body["data"];
        match (method.as_str(), route) {
            ("POST", routes::PASSWORD_TOKEN) if !vars.contains_key("TOKEN") => {
                vars.insert("TOKEN", text(data, "/token"));
            }
            ("POST", routes::PASSWORD_TOKEN) => opened.push(text(data, "/token")),
            ("GET", routes::ADMIN_USERS) if !query.contains("cursor=") => {
                assert_eq!(data["items"].as_array().map(Vec::len), Some(1), "{body}");
                first_page_user = text(data, "/items/0/username");
                vars.insert("CURSOR", text(data, "/next_cursor"));
            }
            ("GET", routes::ADMIN_USERS) => {
                // The page after the cursor is the last: the other user, and no cursor.
                assert_eq!(data["items"].as_array().map(Vec::len), Some(1), "{body}");
                assert_ne!(text(data, "/items/0/username"), first_page_user, "{body}");
                assert!(data["next_cursor"].is_null(), "{body}");
            }
            ("PATCH", routes::ADMIN_USER) => assert_eq!(data["disabled"], true, "{body}"),
            ("GET", routes::ADMIN_SESSIONS) => {
                vars.insert("SESSION_ID", text(data, "/items/0/id"));
            }
            ("DELETE", routes::ADMIN_SESSION) => {
                // The session listed has ended by the time the answer came.
                for token in &opened {
                    assert_eq!(code(client.validate(token).await), Some(ErrorCode::SessionEnded));
                }
            }
            ("DELETE", routes::ADMIN_USER_SESSIONS) => assert!(data["ended"].is_u64(), "{body}"),
            ("POST", routes::ADMIN_KEYS) => {
                assert!(crm_auth_core::is_id(&text(data, "/key")), "{body}");
                vars.insert("KEY_ID", text(data, "/id"));
            }
            ("GET", routes::ADMIN_KEYS) => {
                assert!(
                    data["items"][0]["key"].is_null(),
                    "a listed key shows its value: {body}"
                );
            }
            ("GET", routes::ADMIN_AUDIT) => {
                let actions: Vec<String> = data["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|event| format!("{} {}", text(event, "/actor"), text(event, "/action")))
                    .collect();
                for action in [
                    "user.create",
                    "user.disable",
                    "key.create",
                    "key.revoke",
                    "session.revoke",
                ] {
                    assert!(actions.contains(&format!("admin@demo {action}")), "{actions:?}");
                }
            }
            ("POST", routes::ADMIN_IMPORT) => {
                assert_eq!(data["dry_run"], query.contains("dry_run=true"), "{body}");
                assert_eq!(data["created"]["users"], 2, "{body}");
            }
            _ => {}
        }
        covered.insert(format!("{method} {route}"));
    }
    // The caller's token (the demo operator's), then each kind of change the API makes.
    let expected = [
        "POST /authentication/token",
        "POST /admin/v1/organisations",
        "POST /admin/v1/organisations/{org}/units",
        "POST /admin/v1/organisations/{org}/users",
        "GET /admin/v1/organisations/{org}/users",
        "PATCH /admin/v1/organisations/{org}/users/{username}",
        "GET /admin/v1/organisations/{org}/sessions",
        "DELETE /admin/v1/organisations/{org}/sessions/{id}",
        "DELETE /admin/v1/organisations/{org}/users/{username}/sessions",
        "POST /admin/v1/organisations/{org}/keys",
        "GET /admin/v1/organisations/{org}/keys",
        "DELETE /admin/v1/organisations/{org}/keys/{id}",
        "GET /admin/v1/organisations/{org}/audit",
        "POST /admin/v1/import",
    ];
    assert_eq!(covered, expected.into_iter().map(str::to_owned).collect());
    assert!(!opened.is_empty(), "no session was opened to end");
    Ok(())
}
