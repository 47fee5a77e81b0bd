//! The `crm-auth` binary end to end as a subprocess, on SQLite and PostgreSQL: every admin command, then bad
//! input for each, which must exit non-zero with one line on stderr and change nothing.

use std::io::Read as _;
use std::process::{Output, Stdio};

use crm_auth_client::Credentials;
use crm_auth_core::{ErrorCode, Role};
use crm_auth_server::db::audit::AuditEvent;
use crm_auth_server::service::admin;

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
    roles_are_set_at_creation_and_changed,
    keys_get_a_name_and_an_expiry,
    session_list_shows_the_refresh_time_and_the_client,
    every_change_writes_one_audit_row_without_a_secret,
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
        .token(&Credentials::password("alice", "new-pass", "acme"))
        .await?;
    assert_eq!(token.claims().oun, "Second", "the default unit");
    let by_key = client.token(&Credentials::api_key(&key)).await?;
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
    assert!(client.token(&Credentials::api_key(&key)).await.is_err());
    cli.ok(&["user", "enable", "--org", "Acme", "bot"], None)?;
    client.token(&Credentials::api_key(&key)).await?;
    let key_id = listing
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_default()
        .to_owned();
    cli.ok(&["key", "revoke", "--org", "Acme", &key_id], None)?;
    assert!(client.token(&Credentials::api_key(&key)).await.is_err());
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
    // How a service verifies the tokens: the generated key's id and file.
    let key_file = db.dir.path().join("signing-key");
    assert!(
        second.contains(&format!(
            "HS256, key id \"generated\", secret in {}",
            key_file.display()
        )),
        "{second}"
    );
    assert!(
        second.contains("Keyring::from_key_file(\"generated\", PATH)"),
        "{second}"
    );
    // For an EdDSA key, the JWKS URL and no file to share.
    let other = TestDb::new(&backend)?;
    let mut command = crm_auth(other.dir.path(), &other.url);
    command.args(["demo"]).env("CRM_AUTH__TOKEN__ALGORITHM", "EdDSA");
    let out = run_with_stdin(command, "")?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("key id \"generated\", public keys at http://")
            && stdout.contains("/.well-known/jwks.json"),
        "{stdout}"
    );
    assert!(!stdout.contains("Keyring::from_key_file"), "{stdout}");
    assert_ne!(
        demo_field(&first, "demo password:"),
        demo_field(&second, "demo password:")
    );
    let orgs = cli.ok(&["key", "list", "--org", "demo"], None)?;
    assert_eq!(orgs.lines().count(), 3, "two keys, the first revoked: {orgs}");
    assert_eq!(role_of(&db, "demo", "admin")?, Role::Operator);
    // A reset makes the demo user an operator again.
    cli.ok(&["user", "role", "--org", "demo", "admin", "member"], None)?;
    cli.ok(&["demo"], None)?;
    assert_eq!(role_of(&db, "demo", "admin")?, Role::Operator);
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
        let token = client.token(&Credentials::api_key(&key)).await?;
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
            code(client.token(&Credentials::api_key(&key)).await),
            Some(refused),
            "{disable:?}"
        );
        cli.ok(enable, None)?;
        let again = client.token(&Credentials::api_key(&key)).await?;
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
    // As a demo user from before roles would be: a member.
    cli.ok(&["user", "role", "--org", "demo", "admin", "member"], None)?;
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
        code(
            client
                .token(&Credentials::password("admin", &password, "demo"))
                .await
        ),
        Some(ErrorCode::InvalidCredentials)
    );
    cli.ok(&["user", "enable", "--org", "demo", "admin"], None)?;
    // The same password and key as before.
    client
        .token(&Credentials::password("admin", &password, "demo"))
        .await?;
    client.token(&Credentials::api_key(&key)).await?;
    assert_eq!(
        role_of(&db, "demo", "admin")?,
        Role::Operator,
        "the demo user is an operator"
    );
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

/// The stored role of a user.
fn role_of(db: &TestDb, org: &str, username: &str) -> anyhow::Result<Role> {
    let conn = &mut crate::storage::connect(db)?;
    let org = admin::find_organisation(conn, org)?;
    Ok(admin::find_user(conn, &org, username)?.role)
}

/// Every audit row, oldest first.
fn audit_rows(db: &TestDb) -> anyhow::Result<Vec<AuditEvent>> {
    use crm_auth_server::db::schema::audit_events;
    use diesel::prelude::*;
    let conn = &mut crate::storage::connect(db)?;
    Ok(audit_events::table
        .order((audit_events::at, audit_events::id))
        .select(AuditEvent::as_select())
        .load(conn)?)
}

/// `--role` at creation (member by default), `user role` later; a bad role or user changes nothing.
async fn roles_are_set_at_creation_and_changed(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["org", "add", "Acme"], None)?;
    cli.ok(&["unit", "add", "--org", "Acme", "Main"], None)?;
    cli.ok(&["user", "add", "--org", "Acme", "mia", "--unit", "Main"], None)?;
    cli.ok(
        &[
            "user", "add", "--org", "Acme", "ann", "--unit", "Main", "--role", "admin",
        ],
        None,
    )?;
    assert_eq!(role_of(&db, "Acme", "mia")?, Role::Member);
    assert_eq!(role_of(&db, "Acme", "ann")?, Role::Admin);
    let out = cli.ok(&["user", "role", "--org", "acme", "MIA", "operator"], None)?;
    assert!(out.contains("mia is now operator"), "{out}");
    assert_eq!(role_of(&db, "Acme", "mia")?, Role::Operator);
    let rows = audit_rows(&db)?.len();
    for bad in [
        [
            "user", "add", "--org", "Acme", "bob", "--unit", "Main", "--role", "root",
        ]
        .as_slice(),
        &[
            "user", "add", "--org", "Acme", "bob", "--unit", "Main", "--role", "Admin",
        ],
        &["user", "role", "--org", "Acme", "mia", "superuser"],
        &["user", "role", "--org", "Acme", "mia", ""],
        &["user", "role", "--org", "Acme", "nobody", "admin"],
        &["user", "role", "--org", "Nowhere", "mia", "admin"],
    ] {
        let stderr = cli.fails(bad, None)?;
        assert!(stderr.starts_with("error: "), "{bad:?}: {stderr}");
    }
    assert!(
        cli.fails(&["user", "disable", "--org", "Acme", "bob"], None)?
            .contains("no user")
    );
    assert_eq!(role_of(&db, "Acme", "mia")?, Role::Operator);
    assert_eq!(audit_rows(&db)?.len(), rows, "nothing was audited");
    Ok(())
}

/// `key create --name --expires-at` (RFC 3339 or unix seconds), shown by `key list`; names may repeat; bad
/// values change nothing.
async fn keys_get_a_name_and_an_expiry(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["org", "add", "Acme"], None)?;
    cli.ok(&["unit", "add", "--org", "Acme", "Main"], None)?;
    cli.ok(&["user", "add", "--org", "Acme", "bot", "--unit", "Main"], None)?;
    let create = |extra: &[&str]| -> anyhow::Result<String> {
        let mut args = vec!["key", "create", "--org", "Acme", "--user", "bot"];
        args.extend_from_slice(extra);
        Ok(last_line(&cli.ok(&args, None)?))
    };
    create(&["--name", "billing", "--expires-at", "2999-01-01T00:00:00Z"])?;
    create(&["--name", "billing", "--expires-at", "32503680000"])?;
    create(&["--expires-at", "2999-06-01T12:00:00+02:00"])?;
    create(&[])?;
    let listing = cli.ok(&["key", "list", "--org", "Acme"], None)?;
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 5, "{listing}");
    assert!(
        lines[0].contains("expires") && lines[0].trim_end().ends_with("name"),
        "{listing}"
    );
    let last_two = |line: &str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields[fields.len() - 2..].join(" ")
    };
    let mut shown: Vec<String> = lines[1..].iter().map(|l| last_two(l)).collect();
    shown.sort();
    assert_eq!(
        shown,
        [
            "- -",
            "2999-01-01T00:00:00Z billing",
            "2999-06-01T10:00:00Z -",
            "3000-01-01T00:00:00Z billing",
        ],
        "{listing}"
    );
    let rows = audit_rows(&db)?.len();
    for bad in [
        ["--expires-at", "tomorrow"].as_slice(),
        &["--expires-at", "2999-13-01T00:00:00Z"],
        &["--expires-at", ""],
        &["--expires-at", "2000-01-01T00:00:00Z"],
        &["--expires-at", "0"],
        &["--name", ""],
        &["--name", " billing"],
        &["--name", "bill\u{200b}ing"],
        &["--name", &"x".repeat(300)],
    ] {
        let mut args = vec!["key", "create", "--org", "Acme", "--user", "bot"];
        args.extend_from_slice(bad);
        let stderr = cli.fails(&args, None)?;
        assert!(stderr.starts_with("error: "), "{bad:?}: {stderr}");
        assert!(
            stderr.contains("--expires-at") || stderr.contains("expiry") || stderr.contains("key name"),
            "{bad:?}: {stderr}"
        );
    }
    assert_eq!(
        cli.ok(&["key", "list", "--org", "Acme"], None)?,
        listing,
        "no key was made"
    );
    assert_eq!(audit_rows(&db)?.len(), rows, "nothing was audited");
    Ok(())
}

/// `session list` shows when a session was last refreshed (`-` before its first refresh) and the address it
/// logged in from.
async fn session_list_shows_the_refresh_time_and_the_client(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    cli.ok(&["org", "add", "Acme"], None)?;
    cli.ok(&["unit", "add", "--org", "Acme", "Main"], None)?;
    cli.ok(&["user", "add", "--org", "Acme", "bot", "--unit", "Main"], None)?;
    let key = last_line(&cli.ok(&["key", "create", "--org", "Acme", "--user", "bot"], None)?);
    let node = node(&db)?;
    let client = node.client()?;
    let token = client.token(&Credentials::api_key(&key)).await?;
    let jti = token.claims().jti.clone();
    let row = || -> anyhow::Result<Vec<String>> {
        let listing = cli.ok(&["session", "list", "--org", "Acme"], None)?;
        let header: Vec<&str> = listing
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header[header.len() - 2..], ["refreshed", "client"], "{listing}");
        let line = listing
            .lines()
            .find(|l| l.starts_with(&jti))
            .ok_or_else(|| anyhow::anyhow!("no {jti} in {listing}"))?;
        Ok(line.split_whitespace().map(str::to_owned).collect())
    };
    let before = row()?;
    assert_eq!(before[before.len() - 2..], ["-", "127.0.0.1"]);
    let refreshed = client.refresh(token.as_str()).await?;
    let after = row()?;
    assert_eq!(after[after.len() - 1], "127.0.0.1");
    assert_eq!(
        after[after.len() - 2],
        refreshed.claims().iat.to_string(),
        "the refresh time is the new token's iat"
    );
    Ok(())
}

/// Each command that changes something writes one audit row (actor `cli`, the contract's action, the
/// organisation, what it names), and no column of any row holds a password, hash, key or token.
async fn every_change_writes_one_audit_row_without_a_secret(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let cli = Cli { db: &db };
    let node = node(&db)?;
    let client = node.client()?;
    let password = "s3cret-Pass-0";
    let new_password = "an0ther-Pass-1";
    let expected: std::cell::RefCell<Vec<(String, String)>> = std::cell::RefCell::default();
    let run = |args: &[&str], stdin: Option<&str>, action: &str, target: &str| -> anyhow::Result<String> {
        let before = audit_rows(&db)?.len();
        let out = cli.ok(args, stdin)?;
        let rows = audit_rows(&db)?;
        assert_eq!(rows.len(), before + 1, "{args:?} writes one row");
        expected.borrow_mut().push((action.to_owned(), target.to_owned()));
        Ok(out)
    };
    run(&["org", "add", "Acme"], None, "organisation.create", "Acme")?;
    run(
        &["unit", "add", "--org", "Acme", "Main"],
        None,
        "unit.create",
        "Main",
    )?;
    let add_alice = [
        "user",
        "add",
        "--org",
        "Acme",
        "alice",
        "--unit",
        "Main",
        "--password-stdin",
    ];
    run(&add_alice, Some(password), "user.create", "alice")?;
    run(
        &["user", "passwd", "--org", "Acme", "alice", "--password-stdin"],
        Some(new_password),
        "user.update",
        "alice",
    )?;
    run(
        &["user", "role", "--org", "Acme", "alice", "admin"],
        None,
        "user.update",
        "alice",
    )?;
    let key_out = cli.ok(
        &[
            "key", "create", "--org", "Acme", "--user", "alice", "--name", "ci",
        ],
        None,
    )?;
    let key = last_line(&key_out);
    let key_id = key_out
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| anyhow::anyhow!("no key id in {key_out}"))?
        .to_owned();
    expected
        .borrow_mut()
        .push(("key.create".to_owned(), key_id.clone()));
    let token = client
        .token(&Credentials::password("alice", new_password, "Acme"))
        .await?;
    let jti = token.claims().jti.clone();
    run(&["session", "revoke", &jti], None, "session.revoke", &jti)?;
    for (verb, action) in [("disable", "unit.disable"), ("enable", "unit.enable")] {
        run(&["unit", verb, "--org", "Acme", "Main"], None, action, "Main")?;
    }
    for (verb, action) in [
        ("disable", "organisation.disable"),
        ("enable", "organisation.enable"),
    ] {
        run(&["org", verb, "Acme"], None, action, "Acme")?;
    }
    for (verb, action) in [("disable", "user.disable"), ("enable", "user.enable")] {
        run(&["user", verb, "--org", "Acme", "alice"], None, action, "alice")?;
    }
    run(
        &["key", "revoke", "--org", "Acme", &key_id],
        None,
        "key.revoke",
        &key_id,
    )?;

    let rows = audit_rows(&db)?;
    let org_id = {
        let conn = &mut crate::storage::connect(&db)?;
        admin::find_organisation(conn, "Acme")?.id
    };
    let mut found: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.action.clone(), r.target.clone()))
        .collect();
    found.sort();
    let mut expected = expected.into_inner();
    expected.sort();
    assert_eq!(found, expected);
    for row in &rows {
        assert_eq!(row.actor, "cli");
        assert_eq!(row.organisation_id.as_deref(), Some(org_id.as_str()), "{row:?}");
        assert_eq!(row.client, None, "{row:?}");
        assert!(crm_auth_core::is_id(&row.id), "{row:?}");
        assert!(row.at > 0, "{row:?}");
    }
    // No secret in any column: the passwords, their hash, the key and its digest, the token.
    let hash = {
        let conn = &mut crate::storage::connect(&db)?;
        let org = admin::find_organisation(conn, "Acme")?;
        admin::find_user(conn, &org, "alice")?
            .password_hash
            .unwrap_or_default()
    };
    let digest = crm_auth_core::digest_key(&key);
    let secrets = [password, new_password, &hash, &key, &digest, token.as_str()];
    for row in &rows {
        let columns = [
            Some(row.id.as_str()),
            row.organisation_id.as_deref(),
            Some(row.actor.as_str()),
            Some(row.action.as_str()),
            Some(row.target.as_str()),
            row.client.as_deref(),
        ];
        for (column, secret) in columns
            .iter()
            .flatten()
            .flat_map(|c| secrets.iter().map(move |s| (c, s)))
        {
            assert!(
                !secret.is_empty() && !column.contains(secret),
                "{row:?} holds a secret"
            );
        }
    }
    Ok(())
}
