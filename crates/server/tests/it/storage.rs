//! Storage on SQLite and PostgreSQL: migrations both ways (and one set of them for both backends),
//! case-insensitive uniqueness, the one default unit, key lookup by digest, and configuration loading.

use std::path::{Path, PathBuf};

use crate::common::{Backend, TestDb};
use crm_auth_core::ApiKey;
use crm_auth_server::db::user::Membership;
use crm_auth_server::db::{self, Backend as DbBackend, ConnectionManager, schema};
use crm_auth_server::service::admin;
use crm_auth_server::settings::Settings;
use diesel::prelude::*;

backend_tests!(
    migrations_apply_revert_and_reapply,
    names_are_unique_case_insensitively,
    a_user_has_exactly_one_default_unit,
    keys_are_found_by_digest_and_stored_without_the_key,
    bad_admin_input_changes_nothing,
);

fn connect(db: &TestDb) -> anyhow::Result<db::DbConnection> {
    Ok(ConnectionManager::new(DbBackend::from_url(&db.url)?)?.establish()?)
}

async fn migrations_apply_revert_and_reapply(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    assert_eq!(db::run_migrations(conn)?, 1);
    assert_eq!(db::run_migrations(conn)?, 0, "a second run applies nothing");
    admin::add_organisation(conn, "Acme", 1)?;
    db::revert_all_migrations(conn)?;
    assert!(
        schema::organisations::table
            .count()
            .get_result::<i64>(conn)
            .is_err(),
        "tables are gone"
    );
    assert_eq!(db::run_migrations(conn)?, 1);
    assert_eq!(schema::organisations::table.count().get_result::<i64>(conn)?, 0);
    Ok(())
}

async fn names_are_unique_case_insensitively(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let acme = admin::add_organisation(conn, "Acme", 1)?;
    assert!(admin::add_organisation(conn, "ACME", 1).is_err());
    // Names are per organisation: another organisation may reuse them.
    let other = admin::add_organisation(conn, "Other", 1)?;
    admin::add_unit(conn, &acme, "Main", Some("MN"), 1)?;
    assert!(admin::add_unit(conn, &acme, "main", None, 1).is_err());
    assert!(admin::add_unit(conn, &acme, "Second", Some("mn"), 1).is_err());
    admin::add_unit(conn, &acme, "Third", None, 1)?;
    admin::add_unit(conn, &acme, "Fourth", None, 1)?;
    admin::add_unit(conn, &other, "Main", Some("MN"), 1)?;
    admin::add_user(conn, &acme, "Alice", &["Main".into()], None, None, 1)?;
    let err = admin::add_user(conn, &acme, "aLiCe", &["Main".into()], None, None, 1).err();
    assert!(err.is_some_and(|e| e.to_string().contains("already exists")));
    admin::add_user(conn, &other, "alice", &["main".into()], None, None, 1)?;
    assert_eq!(admin::find_user(conn, &acme, "ALICE")?.username, "Alice");
    assert_eq!(admin::find_organisation(conn, "acme")?.id, acme.id);
    assert_eq!(admin::find_organisation(conn, &acme.id)?.name, "Acme");
    Ok(())
}

async fn a_user_has_exactly_one_default_unit(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, "Acme", 1)?;
    admin::add_unit(conn, &org, "A", None, 1)?;
    let b = admin::add_unit(conn, &org, "B", Some("bee"), 1)?;
    let user = admin::add_user(conn, &org, "u", &["A".into(), "bee".into()], Some("B"), None, 1)?;
    let memberships = db::user::find_memberships(conn, &user.id)?;
    assert_eq!(memberships.len(), 2);
    assert_eq!(memberships.iter().filter(|m| m.is_default).count(), 1);
    assert_eq!(
        db::user::find_default_unit(conn, &user.id)?.map(|u| u.id),
        Some(b.id.clone())
    );
    // The database itself refuses a second default.
    let c = admin::add_unit(conn, &org, "C", None, 1)?;
    let second_default = Membership {
        user_id: user.id.clone(),
        unit_id: c.id,
        is_default: true,
    };
    let inserted = diesel::insert_into(schema::user_units::table)
        .values(&second_default)
        .execute(conn);
    assert!(inserted.is_err());
    // A default outside the user's units is refused before anything is written.
    assert!(admin::add_user(conn, &org, "v", &["A".into()], Some("B"), None, 1).is_err());
    assert!(admin::find_user(conn, &org, "v").is_err());
    Ok(())
}

async fn keys_are_found_by_digest_and_stored_without_the_key(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, "Acme", 1)?;
    admin::add_unit(conn, &org, "A", None, 1)?;
    let user = admin::add_user(conn, &org, "u", &["A".into()], None, None, 1)?;
    let (row, key) = admin::create_key(conn, &user, 1)?;
    assert_eq!(row.digest, key.digest());
    assert_ne!(row.digest, key.expose());
    assert!(!row.digest.contains(key.expose()));
    let found = db::api_key::find_active_by_digest(conn, &key.digest())?;
    assert_eq!(found.map(|k| k.id), Some(row.id.clone()));
    let other = ApiKey::generate()?;
    assert!(db::api_key::find_active_by_digest(conn, &other.digest())?.is_none());
    admin::revoke_key(conn, &org, &row.id, 2)?;
    assert!(db::api_key::find_active_by_digest(conn, &key.digest())?.is_none());
    Ok(())
}

async fn bad_admin_input_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, "Acme", 1)?;
    assert!(admin::add_organisation(conn, "", 1).is_err());
    assert!(admin::add_organisation(conn, &"x".repeat(257), 1).is_err());
    assert!(admin::add_unit(conn, &org, " ", None, 1).is_err());
    assert!(admin::add_user(conn, &org, "u", &["missing".into()], None, None, 1).is_err());
    assert!(admin::add_user(conn, &org, "u", &[], None, None, 1).is_err());
    assert!(admin::revoke_key(conn, &org, "00000000000000000000000000000000", 1).is_err());
    assert!(admin::revoke_session(conn, "00000000000000000000000000000000", 1).is_err());
    assert_eq!(schema::organisations::table.count().get_result::<i64>(conn)?, 1);
    assert_eq!(schema::units::table.count().get_result::<i64>(conn)?, 0);
    assert_eq!(schema::users::table.count().get_result::<i64>(conn)?, 0);
    Ok(())
}

/// Every file under `dir`, as (path relative to `dir`, contents), sorted by path.
fn files_under(dir: &Path) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((path.strip_prefix(dir)?.to_path_buf(), std::fs::read(&path)?));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The schema is written once in SQL both backends accept, and each backend embeds its own folder; a change
/// made to one folder only would give the two backends different schemas.
#[test]
fn both_backends_have_the_same_migrations() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let sqlite = files_under(&root.join("sqlite"))?;
    let postgres = files_under(&root.join("postgres"))?;
    let names = |files: &[(PathBuf, Vec<u8>)]| -> Vec<PathBuf> {
        files.iter().map(|(path, _)| path.clone()).collect()
    };
    assert_eq!(names(&sqlite), names(&postgres), "the same migration files");
    assert!(!sqlite.is_empty(), "migrations found under {}", root.display());
    for ((path, sqlite), (_, postgres)) in sqlite.iter().zip(&postgres) {
        assert!(
            sqlite == postgres,
            "migrations/sqlite/{0} and migrations/postgres/{0} differ",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn the_example_configuration_loads_and_matches_the_defaults() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/crm-auth.example.toml");
    let settings = Settings::load_from(Some(&path), Vec::new())?;
    let defaults = Settings::default();
    assert_eq!(settings.database.url.expose(), defaults.database.url.expose());
    assert_eq!(settings.http.base_path, "/crmapi/rest/v2");
    assert_eq!(settings.token.ttl_seconds, 7200);
    assert_eq!(
        settings.http.body_timeout_seconds,
        defaults.http.body_timeout_seconds
    );
    assert_eq!(
        settings.http.max_connections_per_address,
        defaults.http.max_connections_per_address
    );
    assert_eq!(settings.auth.argon2, defaults.auth.argon2);
    Ok(())
}

#[test]
fn unknown_keys_and_bad_values_stop_start_up_naming_the_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "[token]\nttl_secs = 5\n")?;
    let err = Settings::load_from(Some(&file), Vec::new())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("ttl_secs"), "{err}");
    let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    for (variable, value, named) in [
        ("CRM_AUTH__TOKEN__TTL_SECONDS", "0", "token.ttl_seconds"),
        ("CRM_AUTH__DATABASE__URL", "mysql://x", "database.url"),
        ("CRM_AUTH__TOKEN__LEEWAY_SECONDS", "61", "leeway"),
        (
            "CRM_AUTH__HTTP__BODY_TIMEOUT_SECONDS",
            "0",
            "http.body_timeout_seconds",
        ),
        (
            "CRM_AUTH__HTTP__MAX_CONNECTIONS_PER_ADDRESS",
            "0",
            "http.max_connections_per_address",
        ),
        ("CRM_AUTH__NOPE", "1", "nope"),
    ] {
        let err = Settings::load_from(None, env(variable, value))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_ref().is_some_and(|e| e.contains(named)),
            "{variable}={value}: {err:?}"
        );
    }
    // Environment overrides the file.
    std::fs::write(&file, "[database]\npool_size = 3\n")?;
    let settings = Settings::load_from(Some(&file), env("CRM_AUTH__DATABASE__POOL_SIZE", "5"))?;
    assert_eq!(settings.database.pool_size, 5);
    Ok(())
}

#[test]
fn short_secrets_stop_start_up_and_debug_hides_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "[[token.keys]]\nid = \"k1\"\nsecret = \"too-short-secret\"\n",
    )?;
    let settings = Settings::load_from(Some(&file), Vec::new())?;
    assert!(format!("{settings:?}").contains("***"));
    assert!(!format!("{settings:?}").contains("too-short-secret"));
    let err = crm_auth_server::signing::load_keyring(&settings)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("k1") && err.contains("32"), "{err}");
    Ok(())
}

#[test]
fn the_generated_signing_key_is_private_and_reused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys.clear();
    let (first, generated) = crm_auth_server::signing::load_keyring(&settings)?;
    assert!(generated);
    let path = dir.path().join("signing-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    }
    let (second, _) = crm_auth_server::signing::load_keyring(&settings)?;
    let claims = crm_auth_core::Claims {
        jti: crm_auth_core::new_id(),
        usr: "u".into(),
        org: "o".into(),
        oun: "n".into(),
        iat: 1,
        exp: 2,
        iss: None,
        r#gen: 0,
    };
    let fmt = crm_auth_core::DateFormat::Numeric;
    assert_eq!(
        crm_auth_core::issue(&first, &claims, fmt),
        crm_auth_core::issue(&second, &claims, fmt)
    );
    Ok(())
}
