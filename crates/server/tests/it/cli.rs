//! The `crm-auth` binary end to end as a subprocess, on SQLite and PostgreSQL: every admin command, then bad
//! input for each, which must exit non-zero with one line on stderr and change nothing.

use std::io::Read as _;
use std::process::{Output, Stdio};

use crm_auth_core::ErrorCode;

use crate::common::server::{Node, ServerProcess, crm_auth, demo_field, free_port, run_with_stdin};
use crate::common::{Backend, TestDb, code};

backend_tests!(
    admin_commands_set_up_a_working_organisation,
    bad_input_exits_non_zero_with_one_line,
    demo_is_idempotent,
    org_and_unit_disable_end_sessions_and_enable_lets_logins_in,
    output_to_a_closed_pipe_ends_quietly,
    serve_demo_keeps_an_existing_demo_user,
    look_alike_and_posing_names_are_refused_and_found,
    migrate_names_both_colliding_names,
);

struct Cli<'a> {
    db: &'a TestDb,
}

impl Cli<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut command = crm_auth(self.db.dir.path(), &self.db.url);
        command.args(args).env("RUST_LOG", "warn");
        run_with_stdin(command, stdin.unwrap_or_default())
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.run(args, stdin)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "{args:?} failed: {stderr}");
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Runs a command that must fail with one line on stderr.
    fn fails(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.run(args, stdin)?;
        let stderr = String::from_utf8(out.stderr)?;
        anyhow::ensure!(!out.status.success(), "{args:?} succeeded");
        anyhow::ensure!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
        anyhow::ensure!(
            stderr.trim().lines().count() == 1,
            "{args:?} printed more than one line: {stderr}"
        );
        Ok(stderr)
    }
}

fn last_line(s: &str) -> String {
    s.trim().lines().last().unwrap_or_default().to_owned()
}

async fn admin_commands_set_up_a_working_organisation(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    let applied = format!("applied {}", crate::storage::migration_count()?);
    assert!(cli.ok(&["migrate"], None)?.contains(&applied));
    let org_id = last_line(&cli.ok(&["org", "add", "Acme"], None)?);
    assert!(crm_auth_core::is_id(&org_id), "{org_id}");
    let unit_id = last_line(&cli.ok(&["unit", "add", "--org", "acme", "Main", "--code", "MN"], None)?);
    assert!(crm_auth_core::is_id(&unit_id));
    cli.ok(&["unit", "add", "--org", &org_id, "Second"], None)?;
    let user_id = last_line(&cli.ok(
        &[
            "user",
            "add",
            "--org",
            "Acme",
            "alice",
            "--unit",
            "MN",
            "--unit",
            "Second",
            "--default-unit",
            "second",
            "--password-stdin",
        ],
        Some("s3cret-pass\n"),
    )?);
    assert!(crm_auth_core::is_id(&user_id));
    cli.ok(
        &["user", "passwd", "--org", "Acme", "ALICE", "--password-stdin"],
        Some("new-pass"),
    )?;
    cli.ok(&["user", "add", "--org", "Acme", "bot", "--unit", &unit_id], None)?;
    let key = last_line(&cli.ok(&["key", "create", "--org", "Acme", "--user", "bot"], None)?);
    assert!(
        crm_auth_core::is_id(&key),
        "the key alone is the last line: {key}"
    );
    let listing = cli.ok(&["key", "list", "--org", "Acme"], None)?;
    assert!(!listing.contains(&key), "key list never shows a key");
    assert!(listing.contains("bot") && listing.contains(&key[..6]));
    // The server accepts what the command line created.
    let mut settings = db.settings();
    settings.auth.argon2 = crm_auth_server::settings::Argon2Settings {
        m_kib: 256,
        t: 1,
        p: 1,
    };
    let node = Node::start(crm_auth_server::state::AppState::from_settings(settings)?)?;
    let client = node.client()?;
    let token = client
        .token_with_password("alice", "new-pass", "acme", None)
        .await?;
    assert_eq!(token.claims().oun, "Second", "the default unit");
    let by_key = client.token_with_api_key(&key, None).await?;
    assert_eq!(by_key.claims().usr, "bot");
    let sessions = cli.ok(&["session", "list", "--org", "Acme"], None)?;
    assert!(sessions.contains(&token.claims().jti) && sessions.contains(&by_key.claims().jti));
    let only_bot = cli.ok(&["session", "list", "--org", "Acme", "--user", "bot"], None)?;
    assert!(!only_bot.contains(&token.claims().jti));
    cli.ok(&["session", "revoke", &token.claims().jti], None)?;
    assert_eq!(
        code(client.validate(token.as_str()).await),
        Some(crm_auth_core::ErrorCode::SessionEnded)
    );
    // Disabling a user ends its sessions; revoking a key refuses it.
    cli.ok(&["user", "disable", "--org", "Acme", "bot"], None)?;
    assert!(client.validate(by_key.as_str()).await.is_err());
    assert!(client.token_with_api_key(&key, None).await.is_err());
    cli.ok(&["user", "enable", "--org", "Acme", "bot"], None)?;
    client.token_with_api_key(&key, None).await?;
    let key_id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    cli.ok(&["key", "revoke", "--org", "Acme", &key_id], None)?;
    assert!(client.token_with_api_key(&key, None).await.is_err());
    Ok(())
}

async fn bad_input_exits_non_zero_with_one_line(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["org", "add", "Acme"], None)?;
    cli.ok(&["unit", "add", "--org", "Acme", "Main"], None)?;
    cli.ok(&["user", "add", "--org", "Acme", "alice", "--unit", "Main"], None)?;
    let bad: &[(&[&str], Option<&str>)] = &[
        (&["org", "add", "acme"], None),
        (&["org", "add", ""], None),
        (&["unit", "add", "--org", "Nowhere", "X"], None),
        (&["unit", "add", "--org", "Acme", "MAIN"], None),
        (&["user", "add", "--org", "Acme", "ALICE", "--unit", "Main"], None),
        (
            &["user", "add", "--org", "Acme", "bob", "--unit", "Nowhere"],
            None,
        ),
        (
            &[
                "user",
                "add",
                "--org",
                "Acme",
                "bob",
                "--unit",
                "Main",
                "--password-stdin",
            ],
            Some(""),
        ),
        (
            &["user", "passwd", "--org", "Acme", "alice", "--password-stdin"],
            Some("\n"),
        ),
        (
            &["user", "passwd", "--org", "Acme", "nobody", "--password-stdin"],
            Some("x"),
        ),
        (&["user", "disable", "--org", "Acme", "nobody"], None),
        (&["key", "create", "--org", "Acme", "--user", "nobody"], None),
        (&["key", "list", "--org", "Nowhere"], None),
        (
            &[
                "key",
                "revoke",
                "--org",
                "Acme",
                "00000000000000000000000000000000",
            ],
            None,
        ),
        (&["session", "list", "--org", "Acme", "--user", "nobody"], None),
        (&["session", "revoke", "00000000000000000000000000000000"], None),
        (&["unit", "add", "--org", "Acme", "main"], None),
        (&["org", "disable", "Nowhere"], None),
        (&["org", "enable", "Nowhere"], None),
        (&["unit", "disable", "--org", "Acme", "Nowhere"], None),
        (&["unit", "enable", "--org", "Nowhere", "Main"], None),
    ];
    for (args, stdin) in bad {
        let stderr = cli.fails(args, *stdin)?;
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        // An operator's message, never a Rust debug form.
        for debug in ["None", "Some(", "Err(", "Ok("] {
            assert!(!stderr.contains(debug), "{args:?}: {stderr}");
        }
    }
    // Nothing was created by the failures: bob does not exist, there is one organisation and one unit.
    let listing = cli.ok(&["session", "list", "--org", "Acme"], None)?;
    assert_eq!(listing.lines().count(), 1);
    cli.fails(&["user", "disable", "--org", "Acme", "bob"], None)?;
    // A bad configuration is one line too.
    let out = crm_auth(db.dir.path(), &db.url)
        .args(["migrate"])
        .env("CRM_AUTH__TOKEN__NOPE", "1")
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("nope"));
    Ok(())
}

async fn demo_is_idempotent(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    let first = cli.ok(&["demo"], None)?;
    let second = cli.ok(&["demo"], None)?;
    assert!(second.contains("curl -s -X POST"));
    assert_ne!(
        demo_field(&first, "demo password:"),
        demo_field(&second, "demo password:")
    );
    let orgs = cli.ok(&["key", "list", "--org", "demo"], None)?;
    assert_eq!(orgs.lines().count(), 3, "two keys, the first revoked: {orgs}");
    Ok(())
}

/// Starts a server on the CLI's database with cheap hashing.
fn node(db: &TestDb) -> anyhow::Result<Node> {
    let mut settings = db.settings();
    settings.auth.argon2 = crm_auth_server::settings::Argon2Settings {
        m_kib: 256,
        t: 1,
        p: 1,
    };
    Node::start(crm_auth_server::state::AppState::from_settings(settings)?)
}

async fn org_and_unit_disable_end_sessions_and_enable_lets_logins_in(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["org", "add", "Acme"], None)?;
    cli.ok(&["unit", "add", "--org", "Acme", "Main", "--code", "MN"], None)?;
    cli.ok(&["user", "add", "--org", "Acme", "bot", "--unit", "Main"], None)?;
    let key = last_line(&cli.ok(&["key", "create", "--org", "Acme", "--user", "bot"], None)?);
    let node = node(&db)?;
    let client = node.client()?;
    for (disable, enable, refused) in [
        (
            ["org", "disable", "acme"].as_slice(),
            ["org", "enable", "ACME"].as_slice(),
            ErrorCode::InvalidCredentials,
        ),
        (
            ["unit", "disable", "--org", "Acme", "mn"].as_slice(),
            ["unit", "enable", "--org", "Acme", "Main"].as_slice(),
            ErrorCode::InvalidUnit,
        ),
    ] {
        let token = client.token_with_api_key(&key, None).await?;
        let out = cli.ok(disable, None)?;
        assert!(out.contains("ended 1 session(s)"), "{disable:?}: {out}");
        // As soon as the command answered.
        assert_eq!(
            code(client.validate(token.as_str()).await),
            Some(ErrorCode::SessionEnded)
        );
        assert_eq!(
            code(client.refresh(token.as_str()).await),
            Some(ErrorCode::SessionEnded)
        );
        assert_eq!(
            code(client.token_with_api_key(&key, None).await),
            Some(refused),
            "{disable:?}"
        );
        cli.ok(enable, None)?;
        let again = client.token_with_api_key(&key, None).await?;
        client.release(again.as_str()).await?;
    }
    Ok(())
}

/// `crm-auth session list | head` and the like: the reader goes away before the output is written, and the
/// command still ends with status 0 and nothing on stderr.
async fn output_to_a_closed_pipe_ends_quietly(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["org", "add", "Acme"], None)?;
    for args in [
        ["key", "list", "--org", "Acme"].as_slice(),
        ["session", "list", "--org", "Acme"].as_slice(),
        ["demo"].as_slice(),
    ] {
        let mut child = crm_auth(db.dir.path(), &db.url)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Closed before the command has connected to its database, so its first line meets a closed pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {} {stderr}", out.status);
        assert!(stderr.trim().is_empty(), "{args:?}: {stderr}");
    }
    Ok(())
}

/// `serve --demo` runs at every start: an existing demo user keeps its password, keys and state.
async fn serve_demo_keeps_an_existing_demo_user(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    let first = cli.ok(&["demo"], None)?;
    let (password, key) = (
        demo_field(&first, "demo password:"),
        demo_field(&first, "demo Web API key:"),
    );
    cli.ok(&["user", "disable", "--org", "demo", "admin"], None)?;
    let port = free_port()?;
    let mut command = crm_auth(db.dir.path(), &db.url);
    command
        .args(["serve", "--demo"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let mut server = ServerProcess::spawn(command, port)?;
    let client = crm_auth_client::Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()?;
    server.wait_ready(&client).await?;
    let mut stdout = server
        .child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut buf = vec![0u8; 4096];
    let n = stdout.read(&mut buf)?;
    let printed = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(printed.contains("exists"), "{printed}");
    assert!(demo_field(&printed, "demo password:").is_empty(), "{printed}");
    // Still disabled.
    assert_eq!(
        code(client.token_with_password("admin", &password, "demo", None).await),
        Some(ErrorCode::InvalidCredentials)
    );
    cli.ok(&["user", "enable", "--org", "demo", "admin"], None)?;
    // The same password and key as before.
    client
        .token_with_password("admin", &password, "demo", None)
        .await?;
    client.token_with_api_key(&key, None).await?;
    Ok(())
}

/// The data folder, the SQLite database with its WAL and shared-memory files, and the generated signing key
/// are private to the owner even under the usual umask 022.
#[tokio::test]
async fn files_are_private_whatever_the_umask() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let port = free_port()?;
    let binary = crm_auth(&data, &format!("sqlite://{}", data.join("crm-auth.db").display()));
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "umask 022 && exec \"$0\" serve"])
        .arg(binary.get_program());
    for (name, value) in binary.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    command.env("RUST_LOG", "warn");
    let mut server = ServerProcess::spawn(command, port)?;
    let client = crm_auth_client::Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .build()?;
    server.wait_ready(&client).await?;
    let mode = |name: &str| -> anyhow::Result<u32> {
        Ok(std::fs::metadata(data.join(name))?.permissions().mode() & 0o777)
    };
    assert_eq!(mode("")?, 0o700, "the data folder");
    for file in ["crm-auth.db", "crm-auth.db-wal", "crm-auth.db-shm", "signing-key"] {
        assert_eq!(mode(file)?, 0o600, "{file}");
    }
    Ok(())
}

/// Names that fold to an existing one, that hide characters or edge spaces, or that pose as an id (such as
/// another organisation's, which `--org` would then resolve to) are refused with one line; folded spellings
/// find the existing names.
async fn look_alike_and_posing_names_are_refused_and_found(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    let acme_id = last_line(&cli.ok(&["org", "add", "Straße"], None)?);
    cli.ok(
        &["unit", "add", "--org", "STRASSE", "jos\u{e9}", "--code", "ＭＮ"],
        None,
    )?;
    cli.ok(
        &[
            "user",
            "add",
            "--org",
            "ｓｔｒａｓｓｅ",
            "admin",
            "--unit",
            "JOSE\u{301}",
        ],
        None,
    )?;
    let lower_id = acme_id.to_lowercase();
    let cases: &[(&[&str], &str)] = &[
        (&["org", "add", "STRASSE"], "already exists"),
        (&["org", "add", "ｓｔｒａｓｓｅ"], "already exists"),
        (&["org", "add", "Acme "], "whitespace"),
        (&["org", "add", "Ac\u{200b}me"], "U+200B"),
        (&["org", "add", "Acme\u{202e}"], "U+202E"),
        (&["org", "add", &acme_id], "id"),
        (&["org", "add", &lower_id], "id"),
        (
            &["unit", "add", "--org", "strasse", "jose\u{301}"],
            "already exists",
        ),
        (
            &["unit", "add", "--org", "strasse", "Other", "--code", "mn"],
            "already exists",
        ),
        (&["unit", "add", "--org", "strasse", " Other"], "whitespace"),
        (
            &["unit", "add", "--org", "strasse", "Other", "--code", "M\u{200d}N"],
            "U+200D",
        ),
        (
            &["user", "add", "--org", "strasse", "ＡＤＭＩＮ", "--unit", "mn"],
            "already exists",
        ),
        (
            &["user", "add", "--org", "strasse", "ad\u{200b}min", "--unit", "mn"],
            "U+200B",
        ),
        (
            &["user", "add", "--org", "strasse", "admin\u{202e}", "--unit", "mn"],
            "U+202E",
        ),
        (
            &["user", "add", "--org", "strasse", &acme_id, "--unit", "mn"],
            "id",
        ),
    ];
    for (args, why) in cases {
        let stderr = cli.fails(args, None)?;
        assert!(
            stderr.starts_with("error: ") && stderr.contains(why),
            "{args:?}: {stderr}"
        );
    }
    // Folded spellings find what exists, and nothing was added: one user, whose key lists under every
    // spelling of the organisation.
    cli.ok(
        &["key", "create", "--org", "ＳＴＲＡＳＳＥ", "--user", "ＡＤＭＩＮ"],
        None,
    )?;
    for org in ["Straße", "strasse", &acme_id] {
        let listing = cli.ok(&["key", "list", "--org", org], None)?;
        assert_eq!(listing.lines().count(), 2, "{org}: {listing}");
    }
    cli.fails(&["user", "disable", "--org", "strasse", "ad\u{200b}min"], None)?;
    // A Cyrillic `аdmin` is another name: created, with a warning naming the one it looks like.
    let out = cli.run(
        &["user", "add", "--org", "strasse", "\u{430}dmin", "--unit", "mn"],
        None,
    )?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: ") && stderr.contains("\"admin\""),
        "{stderr}"
    );
    let out = cli.run(&["user", "add", "--org", "strasse", "bob", "--unit", "mn"], None)?;
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "no warning for a plain new name"
    );
    Ok(())
}

/// An upgrade over names that now collide stops with one line naming both rows, and migrates once one is
/// renamed.
async fn migrate_names_both_colliding_names(backend: Backend) -> anyhow::Result<()> {
    use crate::storage::{connect, old_org, unapply_rekey};
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["migrate"], None)?;
    let (first, second) = (old_org("ａｃｍｅ"), old_org("ACME"));
    {
        let conn = &mut connect(&db)?;
        crm_auth_server::db::organisation::create(conn, &first)?;
        crm_auth_server::db::organisation::create(conn, &second)?;
        unapply_rekey(conn)?;
    }
    let stderr = cli.fails(&["migrate"], None)?;
    for part in ["ａｃｍｅ", "ACME", &first.id, &second.id] {
        assert!(stderr.contains(part), "{part} in {stderr}");
    }
    cli.fails(&["key", "list", "--org", "acme"], None)?;
    {
        use crm_auth_server::db::schema::organisations;
        use diesel::prelude::*;
        let conn = &mut connect(&db)?;
        diesel::update(organisations::table.find(&second.id))
            .set((
                organisations::name.eq("ACME 2"),
                organisations::name_key.eq("acme 2"),
            ))
            .execute(conn)?;
    }
    assert!(cli.ok(&["migrate"], None)?.contains("applied 1"));
    assert_eq!(
        cli.ok(&["key", "list", "--org", "acme"], None)?.lines().count(),
        1
    );
    Ok(())
}
