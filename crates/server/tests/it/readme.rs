//! The README's operator commands, run as printed (placeholders filled in) against a fresh database, so the
//! documentation cannot drift from the command line.

use crate::common::server::{Node, crm_auth, run_with_stdin};

/// The lines of the README's "Command line" block, without comments.
fn documented_commands() -> anyhow::Result<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))?;
    let section = readme
        .split("### Command line")
        .nth(1)
        .and_then(|rest| rest.split("```sh").nth(1))
        .and_then(|block| block.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("the README has no command-line block"))?;
    Ok(section
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
        .token_with_api_key(key, None)
        .await?
        .session_id()
        .to_owned())
}
