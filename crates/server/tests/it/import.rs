//! The import (`crm-auth import`, `POST /admin/v1/import`) on SQLite and PostgreSQL: 10,000 users with every
//! kind of foreign hash, a sample of each logging in through the real server (and its hash replaced by
//! Argon2id at that first login); files refused by one line, which write nothing and name the line; re-runs,
//! conflicting re-runs, dry runs; the endpoint's roles and limits; the command line through the real binary.

use std::time::Duration;

use argon2::password_hash::{PasswordHasher as _, SaltString};
use crm_auth_client::{Client, Credentials};
use crm_auth_core::admin::ImportReport;
use crm_auth_core::{ErrorCode, Role};
use crm_auth_server::clock::{Clock as _, ManualClock};
use crm_auth_server::db::api_key::ApiKeyRow;
use crm_auth_server::db::organisation::Organisation;
use crm_auth_server::db::schema;
use crm_auth_server::db::unit::Unit;
use crm_auth_server::db::user::{Membership, User};
use crm_auth_server::service::admin::{self, Actor, NewUser};
use crm_auth_server::service::import::{self, ImportError};
use crm_auth_server::state::AppState;
use diesel::prelude::*;

use crate::common::server::{Node, crm_auth, run_with_stdin};
use crate::common::{Backend, ORG, PASSWORD, TestApp, TestDb, code};

backend_tests!(
    ten_thousand_users_of_every_hash_kind_import_and_log_in,
    a_foreign_hash_is_replaced_at_the_first_login_only,
    a_bad_last_line_writes_nothing_and_is_named,
    the_same_file_again_changes_nothing,
    a_line_that_disagrees_with_what_is_stored_is_a_conflict,
    hashes_over_their_cost_bounds_are_refused,
    malformed_lines_are_refused_naming_line_and_field,
    a_dry_run_writes_nothing,
    the_endpoint_is_for_operators_within_its_limits,
    the_command_line_imports_and_names_the_bad_line,
    the_readme_example_imports_as_documented,
);

/// Runs the import as the command line does, on a blocking thread (it waits on the hashing pool).
async fn run(app: &TestApp, body: impl Into<Vec<u8>>, dry_run: bool) -> Result<ImportReport, ImportError> {
    run_on(&app.state, body, dry_run, app.clock.now()).await
}

/// [`run`] on any server's state.
async fn run_on(
    state: &AppState,
    body: impl Into<Vec<u8>>,
    dry_run: bool,
    now: i64,
) -> Result<ImportReport, ImportError> {
    let (state, body) = (state.clone(), body.into());
    tokio::task::spawn_blocking(move || {
        let conn = &mut *state
            .store
            .pool()
            .get()
            .map_err(|e| ImportError::Db(diesel::result::Error::QueryBuilderError(e.into())))?;
        import::run(conn, &state.hasher, &Actor::Cli, &body, dry_run, now)
    })
    .await
    .map_err(|e| ImportError::Db(diesel::result::Error::QueryBuilderError(e.into())))?
}

/// Every row an import could write, and the number of audit rows.
#[derive(Debug, PartialEq)]
struct Snapshot {
    organisations: Vec<Organisation>,
    units: Vec<Unit>,
    users: Vec<User>,
    memberships: Vec<Membership>,
    keys: Vec<ApiKeyRow>,
    audit: i64,
}

fn snapshot(app: &TestApp) -> anyhow::Result<Snapshot> {
    let conn = &mut *app.conn()?;
    Ok(Snapshot {
        organisations: schema::organisations::table
            .order(schema::organisations::id)
            .select(Organisation::as_select())
            .load(conn)?,
        units: schema::units::table
            .order(schema::units::id)
            .select(Unit::as_select())
            .load(conn)?,
        users: schema::users::table
            .order(schema::users::id)
            .select(User::as_select())
            .load(conn)?,
        memberships: schema::user_units::table
            .order((schema::user_units::user_id, schema::user_units::unit_id))
            .select(Membership::as_select())
            .load(conn)?,
        keys: schema::api_keys::table
            .order(schema::api_keys::id)
            .select(ApiKeyRow::as_select())
            .load(conn)?,
        audit: schema::audit_events::table.count().get_result(conn)?,
    })
}

/// The stored hash of a user of organisation `org`.
fn stored_hash(app: &TestApp, org: &str, username: &str) -> anyhow::Result<Option<String>> {
    let conn = &mut *app.conn()?;
    let org = admin::find_organisation(conn, org)?;
    Ok(admin::find_user(conn, &org, username)?.password_hash)
}

fn salt() -> anyhow::Result<SaltString> {
    SaltString::encode_b64(b"import test salt").map_err(|e| anyhow::anyhow!("{e}"))
}

/// One hash of `password` of each kind an import accepts, made by the schemes' own libraries at cheap costs:
/// `(kind, hash)`. The Argon2id one is at other parameters than the test server's, so it is foreign too.
fn hashes_of(password: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    let pw = password.as_bytes();
    let argon2 = |algorithm, m| -> anyhow::Result<String> {
        let params = argon2::Params::new(m, 1, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(argon2::Argon2::new(algorithm, argon2::Version::V0x13, params)
            .hash_password(pw, &salt()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string())
    };
    let scrypt_params = scrypt::Params::new(4, 8, 1, 32).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pbkdf2 = |algorithm: pbkdf2::Algorithm| -> anyhow::Result<String> {
        let params = pbkdf2::Params {
            rounds: 1_000,
            output_length: 32,
        };
        Ok(pbkdf2::Pbkdf2
            .hash_password_customized(pw, Some(algorithm.ident()), None, params, &salt()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string())
    };
    let bcrypt = bcrypt::hash_with_result(password, 4)?;
    Ok(vec![
        ("bcrypt-2b", bcrypt.format_for_version(bcrypt::Version::TwoB)),
        ("bcrypt-2a", bcrypt.format_for_version(bcrypt::Version::TwoA)),
        ("bcrypt-2y", bcrypt.format_for_version(bcrypt::Version::TwoY)),
        ("argon2id", argon2(argon2::Algorithm::Argon2id, 64)?),
        ("argon2i", argon2(argon2::Algorithm::Argon2i, 64)?),
        (
            "scrypt",
            scrypt::Scrypt
                .hash_password_customized(pw, None, None, scrypt_params, &salt()?)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .to_string(),
        ),
        ("pbkdf2-sha256", pbkdf2(pbkdf2::Algorithm::Pbkdf2Sha256)?),
        ("pbkdf2-sha512", pbkdf2(pbkdf2::Algorithm::Pbkdf2Sha512)?),
    ])
}

/// An operator (`olga`) and an admin (`ann`) of Acme, and their clients' admin handles.
async fn callers(app: &TestApp) -> anyhow::Result<(crm_auth_client::Admin, crm_auth_client::Admin)> {
    let hash =
        crm_auth_server::password::PasswordHasher::hash_blocking(&app.state.settings.auth.argon2, PASSWORD)?;
    {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        for (username, role) in [("olga", Role::Operator), ("ann", Role::Admin)] {
            let units = ["Main".to_owned()];
            let new = NewUser {
                username,
                units: &units,
                password_hash: Some(hash.clone()),
                role,
                ..NewUser::default()
            };
            admin::add_user(conn, &Actor::Cli, &org, new, app.clock.now())?;
        }
    }
    // A large import takes seconds in a debug build.
    let client = Client::builder()
        .base_url(&app.url)
        .base_path(app.state.settings.http.base_path.clone())
        .timeout(Duration::from_secs(300))
        .build()?;
    let operator = client
        .token(&Credentials::password("olga", PASSWORD, ORG))
        .await?;
    let admin = client.token(&Credentials::password("ann", PASSWORD, ORG)).await?;
    Ok((client.admin(operator.as_str())?, client.admin(admin.as_str())?))
}

/// 10,000 users over ten units, each with a hash of one kind (a few with a clear password, a few with none),
/// and 200 keys, imported through the endpoint in one request; then two users of every kind log in with their
/// passwords, and every key's sample with its key, through the real server.
async fn ten_thousand_users_of_every_hash_kind_import_and_log_in(backend: Backend) -> anyhow::Result<()> {
    const USERS: usize = 10_000;
    const VARIANTS: usize = 8;
    let app = TestApp::start(&backend).await?;
    let (operator, _) = callers(&app).await?;
    // Eight passwords per kind, so that the file holds 10,000 hashes for the price of 64.
    let mut hashes: Vec<Vec<(&str, String)>> = Vec::new();
    for variant in 0..VARIANTS {
        hashes.push(hashes_of(&format!("password {variant}"))?);
    }
    let kinds = hashes[0].len();
    let mut file = String::from("{\"type\":\"organisation\",\"name\":\"Imported\"}\n");
    for unit in 0..10 {
        file += &format!(
            "{{\"type\":\"unit\",\"organisation\":\"Imported\",\"name\":\"Unit {unit}\",\"code\":\"U{unit}\"}}\n"
        );
    }
    // (username, password, kind) of each user, for the logins.
    let mut users: Vec<(String, Option<String>, &str)> = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let username = format!("user{i:05}");
        let (variant, kind) = (i / kinds % VARIANTS, i % kinds);
        let password = format!("password {variant}");
        let units = format!("[\"U{}\",\"Unit {}\"]", i % 10, (i + 1) % 10);
        let (secret, field, kind_name) = if i % 500 == 7 {
            (
                Some(password.clone()),
                format!("\"password\":{password:?}"),
                "clear",
            )
        } else if i % 97 == 5 {
            (None, String::new(), "none")
        } else {
            let (name, hash) = &hashes[variant][kind];
            (
                Some(password.clone()),
                format!("\"password_hash\":{hash:?}"),
                *name,
            )
        };
        let comma = if field.is_empty() { "" } else { "," };
        file += &format!(
            "{{\"type\":\"user\",\"organisation\":\"Imported\",\"username\":\"{username}\"{comma}{field},\"units\":{units}}}\n"
        );
        users.push((username, secret, kind_name));
    }
    let key = |i: usize| format!("LEGACY-KEY-{i:08}-CRMCOM");
    for i in (0..USERS).step_by(50) {
        file += &format!(
            "{{\"type\":\"web_api_key\",\"organisation\":\"imported\",\"username\":\"USER{i:05}\",\"key\":\"{}\",\"name\":\"k{i}\"}}\n",
            key(i)
        );
    }
    let started = crm_auth_server::clock::Stopwatch::start();
    let report = operator.import(&file, false).await?;
    eprintln!(
        "imported {USERS} users on {} in {:?} (debug build)",
        backend_name(&backend),
        started.elapsed()
    );
    let counts = report.created;
    assert_eq!(
        (
            counts.organisations,
            counts.units,
            counts.users,
            counts.web_api_keys
        ),
        (1, 10, USERS as u64, (USERS / 50) as u64)
    );
    assert_eq!((report.unchanged, report.dry_run), (0, false));

    // Two users of every kind log in; a foreign hash is Argon2id at the server's parameters afterwards.
    let own = "$argon2id$v=19$m=256,t=1,p=1$";
    let mut per_kind: std::collections::BTreeMap<&str, usize> = Default::default();
    for (i, (username, password, kind)) in users.iter().enumerate() {
        let Some(password) = password else { continue };
        let logged_in = per_kind.entry(kind).or_default();
        if *logged_in == 2 {
            continue;
        }
        *logged_in += 1;
        let before = stored_hash(&app, "Imported", username)?.unwrap_or_default();
        let token = app
            .client
            .token(&Credentials::password(username, password, "Imported"))
            .await?;
        assert_eq!(
            token.claims().oun,
            format!("Unit {}", i % 10),
            "{username} ({kind})"
        );
        let after = stored_hash(&app, "Imported", username)?.unwrap_or_default();
        assert!(after.starts_with(own), "{username} ({kind}): {after}");
        // A clear password was hashed at import, at the server's parameters already.
        assert_eq!(before == after, *kind == "clear", "{username} ({kind})");
        app.client
            .token(&Credentials::password(username, password, "Imported").unit("U1"))
            .await
            .or_else(|e| match e.code() {
                Some(ErrorCode::InvalidUnit) if i % 10 != 1 && (i + 1) % 10 != 1 => Ok(token),
                _ => Err(e),
            })?;
    }
    assert_eq!(per_kind.len(), kinds + 1, "{per_kind:?}");
    assert!(per_kind.values().all(|&n| n == 2), "{per_kind:?}");
    // A user without a password logs in with no password at all.
    let (keyless, _, _) = users
        .iter()
        .find(|(_, password, _)| password.is_none())
        .ok_or_else(|| anyhow::anyhow!("no user without a password"))?;
    assert_eq!(
        code(
            app.client
                .token(&Credentials::password(keyless, "password 0", "Imported"))
                .await
        ),
        Some(ErrorCode::InvalidCredentials)
    );
    // Old CRM.COM keys log in as they are, as their users, in their default units.
    for i in [0, 50, 9_950] {
        let token = app.client.token(&Credentials::api_key(key(i))).await?;
        assert_eq!(token.claims().usr, format!("user{i:05}"));
        assert_eq!(token.claims().oun, format!("Unit {}", i % 10));
    }
    Ok(())
}

fn backend_name(backend: &Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres(_) => "postgres",
    }
}

/// The first successful login replaces a foreign hash; the next login checks the new one; a failed login
/// changes nothing.
async fn a_foreign_hash_is_replaced_at_the_first_login_only(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let hashes = hashes_of("old secret")?;
    let mut file = String::new();
    for (kind, hash) in &hashes {
        file += &format!(
            "{{\"type\":\"user\",\"organisation\":\"Acme\",\"username\":\"{kind}\",\"password_hash\":{hash:?},\"units\":[\"MN\"]}}\n"
        );
    }
    run(&app, file, false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for (kind, imported) in hashes {
        assert_eq!(stored_hash(&app, ORG, kind)?.as_deref(), Some(imported.as_str()));
        assert_eq!(
            code(
                app.client
                    .token(&Credentials::password(kind, "wrong secret", ORG))
                    .await
            ),
            Some(ErrorCode::InvalidCredentials)
        );
        assert_eq!(
            stored_hash(&app, ORG, kind)?.as_deref(),
            Some(imported.as_str()),
            "{kind}: a failed login changed the hash"
        );
        app.client
            .token(&Credentials::password(kind, "old secret", ORG))
            .await?;
        let replaced = stored_hash(&app, ORG, kind)?.unwrap_or_default();
        assert!(
            replaced.starts_with("$argon2id$v=19$m=256,t=1,p=1$"),
            "{kind}: {replaced}"
        );
        app.client
            .token(&Credentials::password(kind, "old secret", ORG))
            .await?;
        assert_eq!(
            stored_hash(&app, ORG, kind)?.unwrap_or_default(),
            replaced,
            "{kind}: a second login rehashed"
        );
        assert_eq!(
            code(
                app.client
                    .token(&Credentials::password(kind, "wrong secret", ORG))
                    .await
            ),
            Some(ErrorCode::InvalidCredentials)
        );
    }
    Ok(())
}

/// A file of good lines whose last line is bad: refused naming that line, and nothing written.
async fn a_bad_last_line_writes_nothing_and_is_named(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let before = snapshot(&app)?;
    let mut file = String::from("{\"type\":\"organisation\",\"name\":\"Fresh\"}\n");
    file += "{\"type\":\"unit\",\"organisation\":\"Fresh\",\"name\":\"Head office\",\"code\":\"HO\"}\n";
    for i in 0..500 {
        file += &format!(
            "{{\"type\":\"user\",\"organisation\":\"Fresh\",\"username\":\"u{i}\",\"units\":[\"HO\"]}}\n"
        );
    }
    file += "{\"type\":\"user\",\"organisation\":\"Fresh\",\"username\":\"last\",\"units\":[\"Nowhere\"]}\n";
    let error = run(&app, file, false).await.err();
    assert_eq!(error.as_ref().and_then(ImportError::line), Some(503));
    let message = error.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.starts_with("line 503: units: no unit \"Nowhere\""),
        "{message}"
    );
    assert_eq!(snapshot(&app)?, before);
    Ok(())
}

/// The sample file of the contract, on top of the seeded Acme.
const SAMPLE: &str = r#"{"type":"organisation","name":"Acme"}
{"type":"unit","organisation":"Acme","name":"Headquarters","code":"HQ"}
{"type":"user","organisation":"Acme","username":"bob","password_hash":"$2b$04$abcdefghijklmnopqrstuu5Zq2XiTbpYxdAXFjVx0WnD5Crsd/gT.","units":["HQ","Main"],"default_unit":"HQ","role":"member","disabled":false}
{"type":"user","organisation":"acme","username":"carol","password":"carol's secret","units":["Second"],"role":"admin","disabled":true}
{"type":"user","organisation":"Acme","username":"dave","units":["HQ"]}
{"type":"web_api_key","organisation":"Acme","username":"bob","key":"20B3EF1D0EDB4E7C9CE85059B1356AF5","name":"billing"}
{"type":"web_api_key","organisation":"Acme","username":"alice","key":"0123456789abcdef"}
"#;

/// Importing a file again changes nothing and counts every line unchanged; the seeded organisation counts so
/// from the start.
async fn the_same_file_again_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let first = run(&app, SAMPLE, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = first.created;
    assert_eq!((c.organisations, c.units, c.users, c.web_api_keys), (0, 1, 3, 2));
    assert_eq!(first.unchanged, 1);
    let after_first = snapshot(&app)?;
    let again = run(&app, SAMPLE, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(again.created, Default::default());
    assert_eq!(again.unchanged, 7);
    let after_again = snapshot(&app)?;
    // Only the audit grew: every import that runs is recorded.
    assert_eq!(after_again.audit, after_first.audit + 1);
    assert_eq!(
        Snapshot {
            audit: 0,
            ..after_again
        },
        Snapshot {
            audit: 0,
            ..after_first
        }
    );
    // The imported key logs in; the imported user is disabled, its clear password hashed as Argon2id.
    let token = app
        .client
        .token(&Credentials::api_key("20B3EF1D0EDB4E7C9CE85059B1356AF5"))
        .await?;
    assert_eq!(
        (token.claims().usr.as_str(), token.claims().oun.as_str()),
        ("bob", "Headquarters")
    );
    let carol = stored_hash(&app, ORG, "carol")?.unwrap_or_default();
    assert!(carol.starts_with("$argon2id$"), "{carol}");
    assert_eq!(
        code(
            app.client
                .token(&Credentials::password("carol", "carol's secret", ORG))
                .await
        ),
        Some(ErrorCode::InvalidCredentials)
    );
    // The key's listing shows its first characters.
    let conn = &mut *app.conn()?;
    let org = admin::find_organisation(conn, ORG)?;
    let prefixes: Vec<String> = crm_auth_server::db::api_key::find_by_organisation(conn, &org.id)?
        .into_iter()
        .map(|k| k.prefix)
        .collect();
    assert!(prefixes.contains(&"20B3EF".to_owned()) && prefixes.contains(&"012345".to_owned()));
    // One audit row for the import, naming its organisation.
    let audit = crm_auth_server::db::audit::list_for_organisation(conn, &org.id, None, 100)?;
    let imports: Vec<_> = audit.iter().filter(|e| e.action == "import").collect();
    assert_eq!(imports.len(), 2);
    assert!(imports.iter().all(|e| e.actor == "cli" && e.target == ORG));
    Ok(())
}

/// Each line of the sample changed to disagree with what the first import stored is refused naming the line
/// and the field, and the re-run writes nothing.
async fn a_line_that_disagrees_with_what_is_stored_is_a_conflict(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    run(&app, SAMPLE, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let before = snapshot(&app)?;
    let bcrypt_other = bcrypt::hash("another", 4)?;
    let cases: Vec<(usize, &str, String, &str)> = vec![
        (2, "\"code\":\"HQ\"", "\"code\":\"HQ2\"".into(), "line 2: code:"),
        (
            3,
            "\"units\":[\"HQ\",\"Main\"]",
            "\"units\":[\"HQ\"]".into(),
            "line 3: units:",
        ),
        (
            3,
            "\"default_unit\":\"HQ\"",
            "\"default_unit\":\"Main\"".into(),
            "line 3: default_unit:",
        ),
        (
            3,
            "\"role\":\"member\"",
            "\"role\":\"admin\"".into(),
            "line 3: role:",
        ),
        (
            3,
            "\"disabled\":false",
            "\"disabled\":true".into(),
            "line 3: disabled:",
        ),
        (
            3,
            "$2b$04$abcdefghijklmnopqrstuu5Zq2XiTbpYxdAXFjVx0WnD5Crsd/gT.",
            bcrypt_other,
            "line 3: password_hash:",
        ),
        (
            4,
            "carol's secret",
            "carol's other secret".into(),
            "line 4: password:",
        ),
        (
            5,
            "\"units\":[\"HQ\"]",
            "\"password\":\"x\",\"units\":[\"HQ\"]".into(),
            "line 5: password:",
        ),
        (
            6,
            "\"username\":\"bob\"",
            "\"username\":\"dave\"".into(),
            "line 6: key:",
        ),
        (
            6,
            "\"name\":\"billing\"",
            "\"name\":\"payroll\"".into(),
            "line 6: name:",
        ),
    ];
    for (line, from, to, expected) in cases {
        let file: String = SAMPLE
            .lines()
            .enumerate()
            .map(|(i, l)| if i + 1 == line { l.replacen(from, &to, 1) } else { l.to_owned() } + "\n")
            .collect();
        assert_ne!(file, SAMPLE, "{from}");
        let error = run(&app, file, false).await.err();
        assert!(
            matches!(error, Some(ImportError::Conflict { .. })),
            "{from}: {error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with(expected), "{from}: {message}");
        assert_eq!(snapshot(&app)?, before, "{from}");
    }
    // A key stored for alice, given to bob.
    let file = format!(
        "{{\"type\":\"web_api_key\",\"organisation\":\"Acme\",\"username\":\"bob\",\"key\":{:?}}}\n",
        app.key
    );
    let message = run(&app, file, false)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.starts_with("line 1: key: the key is another user's"),
        "{message}"
    );
    // A revoked key comes back as a conflict, not as a new key.
    let key_id = {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let id = crm_auth_server::db::api_key::find_by_organisation(conn, &org.id)?
            .into_iter()
            .find(|k| k.prefix == "20B3EF")
            .map(|k| k.id)
            .unwrap_or_default();
        admin::revoke_key(conn, &Actor::Cli, &org, &id, app.clock.now())?;
        id
    };
    assert!(!key_id.is_empty());
    let message = run(&app, SAMPLE, false)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.starts_with("line 6: key: the key was revoked"),
        "{message}"
    );
    Ok(())
}

/// Hashes over the cost bounds, and hashes of other schemes, are refused with their line number.
async fn hashes_over_their_cost_bounds_are_refused(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let before = snapshot(&app)?;
    let bcrypt_15 = bcrypt::hash_with_salt("pw", 4, [9; 16])?
        .to_string()
        .replacen("$04$", "$15$", 1);
    let salt = "MDEyMzQ1Njc4OWFiY2RlZg";
    let output = "6Ob1n8HxBIhiCg3FZxgqL63jWbPW+z4AV7xSwdqWqOE";
    for (hash, expected) in [
        (bcrypt_15, "bcrypt cost 15 is outside 4 to 14"),
        (
            format!("$argon2id$v=19$m=262145,t=1,p=1${salt}${output}"),
            "argon2 memory",
        ),
        (
            format!("$argon2i$v=19$m=65536,t=11,p=1${salt}${output}"),
            "argon2 passes",
        ),
        (
            format!("$argon2id$v=19$m=65536,t=1,p=17${salt}${output}"),
            "argon2 lanes",
        ),
        (format!("$scrypt$ln=21,r=8,p=1${salt}${output}"), "scrypt ln=21"),
        (format!("$scrypt$ln=20,r=8,p=1${salt}${output}"), "scrypt memory"),
        (
            format!("$pbkdf2-sha256$i=2000001,l=32${salt}${output}"),
            "pbkdf2 rounds",
        ),
        (format!("$pbkdf2-sha512$i=3000000,l=64${salt}${output}"), "pbkdf2"),
        ("$1$saltsalt$qjXMvbEw8oaL.CzflDugX/".to_owned(), "not a hash of"),
        (
            format!("$argon2d$v=19$m=64,t=1,p=1${salt}${output}"),
            "not a hash of",
        ),
        (format!("$pbkdf2$i=1000,l=32${salt}${output}"), "not a hash of"),
    ] {
        let file = format!(
            "{{\"type\":\"user\",\"organisation\":\"Acme\",\"username\":\"new\",\"units\":[\"MN\"]}}\n\
             {{\"type\":\"user\",\"organisation\":\"Acme\",\"username\":\"x\",\"password_hash\":{hash:?},\"units\":[\"MN\"]}}\n"
        );
        let error = run(&app, file, false).await.err();
        assert!(
            matches!(error, Some(ImportError::Invalid { line: 2, .. })),
            "{hash}: {error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.starts_with("line 2: password_hash: ") && message.contains(expected),
            "{hash}: {message}"
        );
    }
    assert_eq!(snapshot(&app)?, before);
    Ok(())
}

/// Each bad line, at line 2 after a good one, is refused naming its line and field; nothing is written.
async fn malformed_lines_are_refused_naming_line_and_field(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let before = snapshot(&app)?;
    let good = r#"{"type":"organisation","name":"New Co"}"#;
    let key = r#""key":"0123456789ABCDEF0123""#;
    let cases = [
        (r#"{"type":"organisation","name":"New Co""#.to_owned(), "the line is not valid JSON"),
        ("[1, 2]".to_owned(), "the line must be a JSON object"),
        (r#"{"name":"X"}"#.to_owned(), "type is missing"),
        (r#"{"type":"group","name":"X"}"#.to_owned(), "type must be organisation, unit, user or web_api_key"),
        (r#"{"type":"organisation","name":"X","country":"CY"}"#.to_owned(), "unknown field \"country\""),
        (r#"{"type":"unit","organisation":"Acme"}"#.to_owned(), "name is missing"),
        (r#"{"type":"user","organisation":"Acme","username":"u"}"#.to_owned(), "units is missing"),
        (r#"{"type":"user","username":"u","units":["MN"]}"#.to_owned(), "organisation is missing"),
        (r#"{"type":"user","organisation":"Acme","username":"u","units":["Nowhere"]}"#.to_owned(), "units: no unit \"Nowhere\""),
        (r#"{"type":"user","organisation":"Acme","username":"u","units":["MN"],"default_unit":"SC"}"#.to_owned(), "default_unit: \"SC\" is not among units"),
        (r#"{"type":"user","organisation":"Nowhere","username":"u","units":["MN"]}"#.to_owned(), "organisation: no organisation \"Nowhere\""),
        (r#"{"type":"user","organisation":"Acme","username":" u","units":["MN"]}"#.to_owned(), "username must not begin or end with whitespace"),
        (r#"{"type":"unit","organisation":"Acme","name":"0123456789ABCDEF0123456789ABCDEF"}"#.to_owned(), "name must not have the shape of an id"),
        (r#"{"type":"organisation","name":"Bad\u200bName"}"#.to_owned(), "name must not contain control or format characters"),
        (r#"{"type":"user","organisation":"Acme","username":"u","units":["MN"],"password":"a","password_hash":"b"}"#.to_owned(), "password_hash and password are both given"),
        (r#"{"type":"user","organisation":"Acme","username":"u","units":["MN"],"role":"root"}"#.to_owned(), "role must be member, admin or operator"),
        (r#"{"type":"user","organisation":"Acme","username":"u","units":["MN"],"disabled":"no"}"#.to_owned(), "disabled must be true or false"),
        (format!(r#"{{"type":"web_api_key","organisation":"Acme","username":"nobody",{key}}}"#), "username: no user \"nobody\""),
        (r#"{"type":"web_api_key","organisation":"Acme","username":"alice","key":"short"}"#.to_owned(), "key must have 16 to 64 characters"),
        (r#"{"type":"web_api_key","organisation":"Acme","username":"alice","key":"0123456789:ABCDEF"}"#.to_owned(), "key must consist of visible ASCII"),
        (r#"{"type":"organisation","name":"new co"}"#.to_owned(), "name: organisation \"new co\" is already on line 1"),
    ];
    for (line, expected) in cases {
        let error = run(&app, format!("{good}\n{line}\n"), false).await.err();
        assert!(
            matches!(error, Some(ImportError::Invalid { line: 2, .. })),
            "{line}: {error:?}"
        );
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.starts_with("line 2: ") && message.contains(expected),
            "{line}: {message}"
        );
    }
    // A key twice, a user twice, a unit twice: the second line is named with the first.
    for (twice, expected) in [
        (
            format!(r#"{{"type":"web_api_key","organisation":"Acme","username":"alice",{key}}}"#),
            "key: the same key is on line 2",
        ),
        (
            r#"{"type":"user","organisation":"Acme","username":"Ulla","units":["MN"]}"#.to_owned(),
            "username: user \"Ulla\" of organisation \"Acme\" is already on line 2",
        ),
        (
            r#"{"type":"unit","organisation":"Acme","name":"Annex"}"#.to_owned(),
            "name: unit \"Annex\" of organisation \"Acme\" is already on line 2",
        ),
    ] {
        let error = run(&app, format!("{good}\n{twice}\n\n{twice}\n"), false)
            .await
            .err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.starts_with(&format!("line 4: {expected}")),
            "{twice}: {message}"
        );
    }
    let empty = run(&app, " \n\n", false).await.err();
    assert!(matches!(empty, Some(ImportError::Empty)), "{empty:?}");
    assert_eq!(snapshot(&app)?, before);
    Ok(())
}

/// A dry run checks and counts everything, and writes nothing, not even an audit row.
async fn a_dry_run_writes_nothing(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let before = snapshot(&app)?;
    let report = run(&app, SAMPLE, true)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = report.created;
    assert_eq!((c.organisations, c.units, c.users, c.web_api_keys), (0, 1, 3, 2));
    assert_eq!((report.unchanged, report.dry_run), (1, true));
    assert_eq!(snapshot(&app)?, before);
    // A dry run finds the same errors a real one would.
    let bad = SAMPLE.replace("\"HQ\",\"Main\"", "\"HQ\",\"Attic\"");
    let message = run(&app, bad, true)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.starts_with("line 3: units: no unit \"Attic\""),
        "{message}"
    );
    Ok(())
}

/// Operators import; admins and members are refused before the body is read; `?dry_run=true`; conflicts
/// answer `CONFLICT`; another content type or a body over `http.max_import_bytes` is refused.
async fn the_endpoint_is_for_operators_within_its_limits(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start_with(&backend, |s| s.http.max_import_bytes = 4096).await?;
    let (operator, admin) = callers(&app).await?;
    let before = snapshot(&app)?;
    assert_eq!(
        code(admin.import(SAMPLE, false).await),
        Some(ErrorCode::Forbidden)
    );
    assert_eq!(code(admin.import(SAMPLE, true).await), Some(ErrorCode::Forbidden));
    let dry = operator.import(SAMPLE, true).await?;
    assert_eq!((dry.created.users, dry.dry_run), (3, true));
    assert_eq!(snapshot(&app)?, before);
    let done = operator.import(SAMPLE, false).await?;
    assert_eq!((done.created.users, done.unchanged, done.dry_run), (3, 1, false));
    let again = operator.import(SAMPLE, false).await?;
    assert_eq!((again.created.users, again.unchanged), (0, 7));
    let conflict = operator
        .import(SAMPLE.replace("\"role\":\"admin\"", "\"role\":\"member\""), false)
        .await;
    let error = conflict
        .err()
        .ok_or_else(|| anyhow::anyhow!("a conflicting import passed"))?;
    assert_eq!(error.code(), Some(ErrorCode::Conflict));
    assert!(
        error
            .description()
            .is_some_and(|d| d.starts_with("line 4: role:")),
        "{error:?}"
    );
    let invalid = operator.import("{\"type\":\"nothing\"}\n", false).await.err();
    assert_eq!(
        invalid.as_ref().and_then(|e| e.code()),
        Some(ErrorCode::InvalidRequest)
    );
    assert!(
        invalid
            .as_ref()
            .and_then(|e| e.description())
            .is_some_and(|d| d.starts_with("line 1: type"))
    );
    let too_large = "\n".repeat(4097);
    assert_eq!(
        code(operator.import(too_large, false).await),
        Some(ErrorCode::PayloadTooLarge)
    );

    // Raw requests: the content type, the query, a member's token.
    let url = format!("{}/admin/v1/import", app.url);
    let token = app.login().await?;
    let send = |query: &str, content_type: &str, bearer: String| {
        reqwest::Client::new()
            .post(format!("{url}{query}"))
            .header("content-type", content_type.to_owned())
            .bearer_auth(bearer)
            .body(SAMPLE)
            .send()
    };
    let operator_token = app
        .client
        .token(&Credentials::password("olga", PASSWORD, ORG))
        .await?
        .as_str()
        .to_owned();
    for (query, content_type, bearer, status, expected) in [
        (
            "",
            "application/json",
            operator_token.clone(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "?dry_run=yes",
            "application/x-ndjson",
            operator_token.clone(),
            400,
            "INVALID_REQUEST",
        ),
        (
            "?dry_run=true",
            "application/x-ndjson; charset=utf-8",
            operator_token.clone(),
            200,
            "OK",
        ),
        (
            "",
            "application/x-ndjson",
            token.as_str().to_owned(),
            403,
            "FORBIDDEN",
        ),
    ] {
        let res = send(query, content_type, bearer).await?;
        assert_eq!(res.status().as_u16(), status, "{query} {content_type}");
        let body: serde_json::Value = res.json().await?;
        assert_eq!(body["status"]["code"], expected, "{query} {content_type}");
    }
    Ok(())
}

/// `crm-auth import FILE [--dry-run]` through the real binary: the report as JSON on stdout, `-` for
/// standard input, and a bad line as one line on stderr, exit non-zero, nothing written.
async fn the_command_line_imports_and_names_the_bad_line(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(&backend)?;
    let file = db.dir.path().join("users.ndjson");
    let sample = r#"{"type":"organisation","name":"Globex"}
{"type":"unit","organisation":"Globex","name":"Headquarters","code":"HQ"}
{"type":"user","organisation":"Globex","username":"bob","password_hash":"$2b$04$abcdefghijklmnopqrstuu5Zq2XiTbpYxdAXFjVx0WnD5Crsd/gT.","units":["HQ"]}
{"type":"user","organisation":"Globex","username":"carol","password":"carol's secret","units":["HQ"],"role":"admin","disabled":true}
{"type":"user","organisation":"Globex","username":"dave","units":["HQ"]}
{"type":"web_api_key","organisation":"Globex","username":"bob","key":"20B3EF1D0EDB4E7C9CE85059B1356AF5","name":"billing"}
{"type":"web_api_key","organisation":"Globex","username":"dave","key":"0123456789abcdef0000"}
"#;
    std::fs::write(&file, sample)?;
    let cli = |args: &[&str], stdin: &str| {
        let mut command = crm_auth(db.dir.path(), &db.url);
        command.args(args).env("RUST_LOG", "warn");
        run_with_stdin(command, stdin)
    };
    let path = file.to_str().unwrap_or_default();
    let report = |out: &std::process::Output| -> anyhow::Result<ImportReport> {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(out.status.success(), "import failed: {stderr}");
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let dry = report(&cli(&["import", path, "--dry-run"], "")?)?;
    assert_eq!(
        (dry.created.organisations, dry.created.users, dry.dry_run),
        (1, 3, true)
    );
    let done = report(&cli(&["import", path], "")?)?;
    assert_eq!(
        (
            done.created.organisations,
            done.created.users,
            done.created.web_api_keys
        ),
        (1, 3, 2)
    );
    let again = report(&cli(&["import", "-"], sample)?)?;
    assert_eq!((again.created, again.unchanged), (Default::default(), 7));
    let bad = format!(
        "{sample}{{\"type\":\"user\",\"organisation\":\"Globex\",\"username\":\"eve\",\"units\":[]}}\n"
    );
    let out = cli(&["import", "-"], &bad)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("line 8: units is empty"), "{stderr}");
    let listed = cli(&["key", "list", "--org", "Globex"], "")?;
    assert_eq!(String::from_utf8(listed.stdout)?.lines().count(), 3);
    let missing = cli(&["import", "/nonexistent/file.ndjson"], "")?;
    assert!(!missing.status.success());
    Ok(())
}

/// The README's example file imports into a fresh database with the counts and the error it documents.
async fn the_readme_example_imports_as_documented(backend: Backend) -> anyhow::Result<()> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))?;
    let section = readme
        .split("### Migrating from CRM.COM")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("the README has no migration section"))?;
    let example = section
        .split("```ndjson\n")
        .nth(1)
        .and_then(|block| block.split("```").next())
        .ok_or_else(|| anyhow::anyhow!("the migration section has no example file"))?;
    // A database without the tests' seeded Acme, as a migration starts from.
    let db = TestDb::new(&backend)?;
    let state = AppState::build(db.settings(), std::sync::Arc::new(ManualClock::new()))?;
    let now = ManualClock::new().now();
    // Without the line of unit LIM, the user line that names it is refused as documented.
    let without_lim: String = example
        .lines()
        .map(|line| {
            if line.contains("\"LIM\"}") {
                "\n".to_owned()
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let error = run_on(&state, without_lim, false, now)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(section.contains(&format!("`{error}`")), "{error}");
    let report = run_on(&state, example, false, now)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let documented = r#"{"created": {"organisations": 1, "units": 2, "users": 2, "web_api_keys": 1},
  "unchanged": 0, "dry_run": false}"#;
    assert!(section.contains(documented));
    assert_eq!(report, serde_json::from_str(documented)?);
    let node = Node::start(state)?;
    let token = node
        .client()?
        .token(&Credentials::api_key("20B3EF1D0EDB4E7C9CE85059B1356AF5"))
        .await?;
    assert_eq!(token.claims().usr, "billing-robot");
    Ok(())
}
