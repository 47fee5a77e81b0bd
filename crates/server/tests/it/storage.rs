//! Storage on SQLite and PostgreSQL: migrations both ways (and one set of them for both backends),
//! case-insensitive uniqueness, the one default unit, key lookup by digest, and configuration loading.

use crate::common::{Backend, TestDb};
use crm_auth_core::ApiKey;
use crm_auth_server::db::login_failure::LoginFailure;
use crm_auth_server::db::organisation::Organisation;
use crm_auth_server::db::unit::Unit;
use crm_auth_server::db::user::{Membership, User};
use crm_auth_server::db::{self, schema};
use crm_auth_server::service::admin::{self, Actor};
use crm_auth_server::settings::Settings;
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;

backend_tests!(
    migrations_apply_revert_and_reapply,
    names_are_unique_case_insensitively,
    a_user_has_exactly_one_default_unit,
    keys_are_found_by_digest_and_stored_without_the_key,
    bad_admin_input_changes_nothing,
    look_alike_names_are_one_name,
    names_that_hide_or_pose_are_refused,
    migration_rekeys_stored_names,
    migration_fails_on_colliding_names_naming_both,
    the_roles_migration_makes_existing_users_members_and_reverts,
    the_audit_is_listed_per_organisation_oldest_first_by_cursor,
    api_callers_are_audited_by_name_and_address_and_bounded_by_role,
);

pub fn connect(db: &TestDb) -> anyhow::Result<db::DbConnection> {
    Ok(db.manager()?.establish()?)
}

async fn migrations_apply_revert_and_reapply(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    assert_eq!(db::run_migrations(conn)?, migration_count()?);
    assert_eq!(db::run_migrations(conn)?, 0, "a second run applies nothing");
    admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    db::revert_all_migrations(conn)?;
    assert!(
        schema::organisations::table
            .count()
            .get_result::<i64>(conn)
            .is_err(),
        "tables are gone"
    );
    assert_eq!(db::run_migrations(conn)?, migration_count()?);
    assert_eq!(schema::organisations::table.count().get_result::<i64>(conn)?, 0);
    Ok(())
}

async fn names_are_unique_case_insensitively(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let acme = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    assert!(admin::add_organisation(conn, &Actor::Cli, "ACME", 1).is_err());
    // Names are per organisation: another organisation may reuse them.
    let other = admin::add_organisation(conn, &Actor::Cli, "Other", 1)?;
    admin::add_unit(conn, &Actor::Cli, &acme, "Main", Some("MN"), 1)?;
    assert!(admin::add_unit(conn, &Actor::Cli, &acme, "main", None, 1).is_err());
    assert!(admin::add_unit(conn, &Actor::Cli, &acme, "Second", Some("mn"), 1).is_err());
    admin::add_unit(conn, &Actor::Cli, &acme, "Third", None, 1)?;
    admin::add_unit(conn, &Actor::Cli, &acme, "Fourth", None, 1)?;
    admin::add_unit(conn, &Actor::Cli, &other, "Main", Some("MN"), 1)?;
    crate::common::add_user(conn, &acme, "Alice", &["Main".into()], None, None, 1)?;
    let err = crate::common::add_user(conn, &acme, "aLiCe", &["Main".into()], None, None, 1).err();
    assert!(err.is_some_and(|e| e.to_string().contains("already exists")));
    crate::common::add_user(conn, &other, "alice", &["main".into()], None, None, 1)?;
    assert_eq!(admin::find_user(conn, &acme, "ALICE")?.username, "Alice");
    assert_eq!(admin::find_organisation(conn, "acme")?.id, acme.id);
    assert_eq!(admin::find_organisation(conn, &acme.id)?.name, "Acme");
    Ok(())
}

async fn a_user_has_exactly_one_default_unit(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    admin::add_unit(conn, &Actor::Cli, &org, "A", None, 1)?;
    let b = admin::add_unit(conn, &Actor::Cli, &org, "B", Some("bee"), 1)?;
    let user = crate::common::add_user(conn, &org, "u", &["A".into(), "bee".into()], Some("B"), None, 1)?;
    let memberships = db::user::find_memberships(conn, &user.id)?;
    assert_eq!(memberships.len(), 2);
    assert_eq!(memberships.iter().filter(|m| m.is_default).count(), 1);
    assert_eq!(
        db::user::find_default_unit(conn, &user.id)?.map(|u| u.id),
        Some(b.id.clone())
    );
    // The database itself refuses a second default.
    let c = admin::add_unit(conn, &Actor::Cli, &org, "C", None, 1)?;
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
    assert!(crate::common::add_user(conn, &org, "v", &["A".into()], Some("B"), None, 1).is_err());
    assert!(admin::find_user(conn, &org, "v").is_err());
    Ok(())
}

async fn keys_are_found_by_digest_and_stored_without_the_key(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    admin::add_unit(conn, &Actor::Cli, &org, "A", None, 1)?;
    let user = crate::common::add_user(conn, &org, "u", &["A".into()], None, None, 1)?;
    let (row, key) = admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), 1)?;
    assert_eq!(row.digest, key.digest());
    assert_ne!(row.digest, key.expose());
    assert!(!row.digest.contains(key.expose()));
    let found = db::api_key::find_active_by_digest(conn, &key.digest())?;
    assert_eq!(found.map(|k| k.id), Some(row.id.clone()));
    let other = ApiKey::generate()?;
    assert!(db::api_key::find_active_by_digest(conn, &other.digest())?.is_none());
    admin::revoke_key(conn, &Actor::Cli, &org, &row.id, 2)?;
    assert!(db::api_key::find_active_by_digest(conn, &key.digest())?.is_none());
    Ok(())
}

async fn bad_admin_input_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    assert!(admin::add_organisation(conn, &Actor::Cli, "", 1).is_err());
    assert!(admin::add_organisation(conn, &Actor::Cli, &"x".repeat(257), 1).is_err());
    assert!(admin::add_unit(conn, &Actor::Cli, &org, " ", None, 1).is_err());
    assert!(crate::common::add_user(conn, &org, "u", &["missing".into()], None, None, 1).is_err());
    assert!(crate::common::add_user(conn, &org, "u", &[], None, None, 1).is_err());
    assert!(admin::revoke_key(conn, &Actor::Cli, &org, "00000000000000000000000000000000", 1).is_err());
    assert!(admin::revoke_session(conn, &Actor::Cli, None, "00000000000000000000000000000000", 1).is_err());
    assert_eq!(schema::organisations::table.count().get_result::<i64>(conn)?, 1);
    assert_eq!(schema::units::table.count().get_result::<i64>(conn)?, 0);
    assert_eq!(schema::users::table.count().get_result::<i64>(conn)?, 0);
    Ok(())
}

/// How many migrations there are (one folder each).
pub fn migration_count() -> anyhow::Result<usize> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    Ok(std::fs::read_dir(dir)?.count())
}

/// `josé` precomposed.
const JOSE_NFC: &str = "jos\u{e9}";
/// `josé` with a combining acute accent.
const JOSE_NFD: &str = "jose\u{301}";

async fn look_alike_names_are_one_name(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, "Straße", 1)?;
    for twin in ["STRASSE", "strasse", "Ｓｔｒａｓｓｅ"] {
        let err = admin::add_organisation(conn, &Actor::Cli, twin, 1).err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("already exists")),
            "{twin}"
        );
        assert_eq!(admin::find_organisation(conn, twin)?.id, org.id, "{twin}");
    }
    admin::add_unit(conn, &Actor::Cli, &org, JOSE_NFC, Some("ＭＮ"), 1)?;
    assert!(admin::add_unit(conn, &Actor::Cli, &org, JOSE_NFD, None, 1).is_err());
    assert!(admin::add_unit(conn, &Actor::Cli, &org, "Other", Some("mn"), 1).is_err());
    assert_eq!(admin::find_unit(conn, &org, "JOSE\u{301}")?.name, JOSE_NFC);
    assert_eq!(admin::find_unit(conn, &org, "Mn")?.name, JOSE_NFC);
    crate::common::add_user(conn, &org, "admin", &["mn".into()], None, None, 1)?;
    for twin in ["ａｄｍｉｎ", "ADMIN", "ＡＤＭＩＮ"] {
        let err = crate::common::add_user(conn, &org, twin, &["mn".into()], None, None, 1).err();
        assert!(
            err.is_some_and(|e| e.to_string().contains("already exists")),
            "{twin}"
        );
        assert_eq!(admin::find_user(conn, &org, twin)?.username, "admin", "{twin}");
    }
    crate::common::add_user(conn, &org, JOSE_NFD, &["mn".into()], None, None, 1)?;
    assert_eq!(admin::find_user(conn, &org, "JOSÉ")?.username, JOSE_NFD);
    // Cyrillic `а` is another letter under any folding: another name, as the contract says.
    let cyrillic = crate::common::add_user(conn, &org, "\u{430}dmin", &["mn".into()], None, None, 1)?;
    assert_ne!(admin::find_user(conn, &org, "admin")?.id, cyrillic.id);
    assert_eq!(schema::users::table.count().get_result::<i64>(conn)?, 3);
    Ok(())
}

async fn names_that_hide_or_pose_are_refused(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    admin::add_unit(conn, &Actor::Cli, &org, "Main", None, 1)?;
    let upper_id = org.id.clone();
    let lower_id = org.id.to_lowercase();
    let wide_id: String = org
        .id
        .chars()
        .map(|c| char::from_u32(u32::from(c) + 0xFEE0).unwrap_or(c))
        .collect();
    let bad = [
        ("admin ", "whitespace"),
        (" admin", "whitespace"),
        ("admin\u{3000}", "whitespace"),
        ("ad\u{200b}min", "U+200B"),
        ("admin\u{202e}", "U+202E"),
        ("ad\u{ad}min", "U+00AD"),
        ("ad\tmin", "U+0009"),
        ("\u{feff}admin", "U+FEFF"),
        (upper_id.as_str(), "id"),
        (lower_id.as_str(), "id"),
        (wide_id.as_str(), "id"),
    ];
    for (name, why) in bad {
        for result in [
            admin::add_organisation(conn, &Actor::Cli, name, 1).map(drop),
            admin::add_unit(conn, &Actor::Cli, &org, name, None, 1).map(drop),
            admin::add_unit(conn, &Actor::Cli, &org, "Unit", Some(name), 1).map(drop),
            crate::common::add_user(conn, &org, name, &["Main".into()], None, None, 1).map(drop),
        ] {
            let message = result.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(why), "{name:?}: {message:?}");
        }
    }
    // `--org` with Acme's id still finds Acme, and nothing was created.
    assert_eq!(admin::find_organisation(conn, &org.id)?.name, "Acme");
    assert_eq!(schema::organisations::table.count().get_result::<i64>(conn)?, 1);
    assert_eq!(schema::units::table.count().get_result::<i64>(conn)?, 1);
    assert_eq!(schema::users::table.count().get_result::<i64>(conn)?, 0);
    Ok(())
}

/// Makes the name-key migration pending again, as on a database the previous version wrote.
pub fn unapply_rekey(conn: &mut db::DbConnection) -> anyhow::Result<()> {
    let deleted = diesel::sql_query(format!(
        "DELETE FROM __diesel_schema_migrations WHERE version = '{}'",
        db::rekey::VERSION
    ))
    .execute(conn)?;
    anyhow::ensure!(deleted == 1, "the migration was applied");
    Ok(())
}

/// How the previous version keyed names.
fn old_key(name: &str) -> String {
    name.to_lowercase()
}

pub fn old_org(name: &str) -> Organisation {
    Organisation {
        id: crm_auth_core::new_id(),
        name: name.to_owned(),
        name_key: old_key(name),
        is_active: true,
        created_at: 1,
    }
}

fn old_unit(org: &Organisation, name: &str, code: Option<&str>) -> Unit {
    Unit {
        id: crm_auth_core::new_id(),
        organisation_id: org.id.clone(),
        name: name.to_owned(),
        name_key: old_key(name),
        code: code.map(str::to_owned),
        code_key: code.map(old_key),
        is_active: true,
        created_at: 1,
    }
}

fn old_user(
    conn: &mut db::DbConnection,
    org: &Organisation,
    unit: &Unit,
    name: &str,
) -> anyhow::Result<User> {
    let user = User {
        id: crm_auth_core::new_id(),
        organisation_id: org.id.clone(),
        username: name.to_owned(),
        username_key: old_key(name),
        password_hash: None,
        is_active: true,
        created_at: 1,
        role: crm_auth_core::Role::Member,
    };
    db::user::create(conn, &user, std::slice::from_ref(&unit.id), &unit.id)?;
    Ok(user)
}

fn failures(org: &str, user: &str, failures: i64, locked_until: i64) -> LoginFailure {
    LoginFailure {
        organisation_key: old_key(org),
        username_key: old_key(user),
        failures,
        locked_until,
        updated_at: 1,
    }
}

async fn migration_rekeys_stored_names(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let acme = old_org("ＡＣＭＥ");
    db::organisation::create(conn, &acme)?;
    let strasse = old_org("Straße");
    db::organisation::create(conn, &strasse)?;
    let unit = old_unit(&acme, "Ｍａｉｎ", Some("ＭＮ"));
    db::unit::create(conn, &unit)?;
    let plain = old_unit(&acme, "Second", None);
    db::unit::create(conn, &plain)?;
    let admin_user = old_user(conn, &acme, &unit, "ＡＤＭＩＮ")?;
    let jose = old_user(conn, &acme, &unit, JOSE_NFD)?;
    for row in [
        failures("ＡＣＭＥ", "ＡＤＭＩＮ", 3, 10),
        failures("acme", "admin", 4, 5),
        failures("Straße", "x", 1, 0),
    ] {
        db::login_failure::create(conn, &row)?;
    }
    // Under the old keys, these spellings find nothing.
    assert!(admin::find_organisation(conn, "acme").is_err());
    unapply_rekey(conn)?;
    assert_eq!(db::run_migrations(conn)?, 1);

    assert_eq!(admin::find_organisation(conn, "Acme")?.id, acme.id);
    assert_eq!(admin::find_organisation(conn, "STRASSE")?.id, strasse.id);
    assert_eq!(admin::find_unit(conn, &acme, "main")?.id, unit.id);
    assert_eq!(admin::find_unit(conn, &acme, "mn")?.id, unit.id);
    assert_eq!(admin::find_unit(conn, &acme, "SECOND")?.id, plain.id);
    assert_eq!(admin::find_user(conn, &acme, "admin")?.id, admin_user.id);
    assert_eq!(admin::find_user(conn, &acme, JOSE_NFC)?.id, jose.id);
    // The two counters of one name merged, keeping the higher count and the later lock.
    let merged = db::login_failure::find(conn, "acme", "admin")?;
    assert_eq!(merged.map(|r| (r.failures, r.locked_until)), Some((4, 10)));
    assert!(db::login_failure::find(conn, "strasse", "x")?.is_some());
    assert_eq!(schema::login_failures::table.count().get_result::<i64>(conn)?, 2);
    // Every key is now what a new row would get.
    let keys: Vec<(String, String)> = schema::organisations::table
        .select((schema::organisations::name, schema::organisations::name_key))
        .load(conn)?;
    for (name, key) in keys {
        assert_eq!(key, db::name_key(&name));
    }
    Ok(())
}

async fn migration_fails_on_colliding_names_naming_both(backend: Backend) -> anyhow::Result<()> {
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let first = old_org("Straße");
    let second = old_org("STRASSE");
    db::organisation::create(conn, &first)?;
    db::organisation::create(conn, &second)?;
    let unit = old_unit(&first, "Main", None);
    db::unit::create(conn, &unit)?;
    let nfc = old_user(conn, &first, &unit, JOSE_NFC)?;
    let nfd = old_user(conn, &first, &unit, JOSE_NFD)?;
    let wide = old_org("ＡＣＭＥ");
    db::organisation::create(conn, &wide)?;
    unapply_rekey(conn)?;

    let applied_marker = |conn: &mut db::DbConnection| -> anyhow::Result<i64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let row: Count = diesel::sql_query(format!(
            "SELECT COUNT(*) AS n FROM __diesel_schema_migrations WHERE version = '{}'",
            db::rekey::VERSION
        ))
        .get_result(conn)?;
        Ok(row.n)
    };
    let message = db::run_migrations(conn)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    for part in ["Straße", "STRASSE", &first.id, &second.id] {
        assert!(message.contains(part), "{part} in {message:?}");
    }
    assert!(!message.contains('\n'), "one line: {message:?}");
    // Nothing changed: the migration is still pending and no key moved.
    assert_eq!(applied_marker(conn)?, 0);
    assert_eq!(
        db::organisation::find_by_id(conn, &wide.id)?.map(|o| o.name_key),
        Some(old_key("ＡＣＭＥ"))
    );

    // Once one organisation is renamed, the users' collision is the next one named.
    diesel::update(schema::organisations::table.find(&second.id))
        .set((
            schema::organisations::name.eq("Strasse 2"),
            schema::organisations::name_key.eq("strasse 2"),
        ))
        .execute(conn)?;
    let message = db::run_migrations(conn)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    // The names appear in their debug form, which shows the combining accent as an escape.
    for part in [
        format!("{JOSE_NFC:?}"),
        format!("{JOSE_NFD:?}"),
        nfc.id.clone(),
        nfd.id.clone(),
    ] {
        assert!(message.contains(&part), "{part} in {message:?}");
    }
    assert_eq!(applied_marker(conn)?, 0);

    diesel::delete(schema::user_units::table.filter(schema::user_units::user_id.eq(&nfd.id)))
        .execute(conn)?;
    diesel::delete(schema::users::table.find(&nfd.id)).execute(conn)?;
    assert_eq!(db::run_migrations(conn)?, 1);
    assert_eq!(applied_marker(conn)?, 1);
    assert_eq!(admin::find_organisation(conn, "acme")?.id, wide.id);
    assert_eq!(admin::find_organisation(conn, "strasse")?.id, first.id);
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
    assert_eq!(settings.log.format, defaults.log.format);
    assert_eq!(settings.log.level, defaults.log.level);
    assert_eq!(settings.http.management_bind, defaults.http.management_bind);
    assert_eq!(settings.http.rate_limit.shared, defaults.http.rate_limit.shared);
    assert_eq!(
        (
            settings.http.shutdown_drain_seconds,
            settings.http.shutdown_timeout_seconds
        ),
        (5, 30)
    );
    assert_eq!(
        settings.auth.lockout.max_wait_ms,
        defaults.auth.lockout.max_wait_ms
    );
    assert_eq!(
        settings.session.retention_seconds,
        defaults.session.retention_seconds
    );
    assert_eq!(
        settings.session.purge_interval_seconds,
        defaults.session.purge_interval_seconds
    );
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
        ("CRM_AUTH__LOG__FORMAT", "xml", "log.format"),
        ("CRM_AUTH__LOG__LEVEL", "info,crm_auth=loud", "log.level"),
        (
            "CRM_AUTH__HTTP__MANAGEMENT_BIND",
            "localhost",
            "http.management_bind",
        ),
        (
            "CRM_AUTH__HTTP__MANAGEMENT_BIND",
            "127.0.0.1:8080",
            "http.management_bind",
        ),
        (
            "CRM_AUTH__HTTP__SHUTDOWN_DRAIN_SECONDS",
            "301",
            "http.shutdown_drain_seconds",
        ),
        (
            "CRM_AUTH__HTTP__SHUTDOWN_TIMEOUT_SECONDS",
            "0",
            "http.shutdown_timeout_seconds",
        ),
        (
            "CRM_AUTH__HTTP__SHUTDOWN_TIMEOUT_SECONDS",
            "601",
            "http.shutdown_timeout_seconds",
        ),
        (
            "CRM_AUTH__AUTH__LOCKOUT__MAX_WAIT_MS",
            "60001",
            "auth.lockout.max_wait_ms",
        ),
        (
            "CRM_AUTH__HTTP__RATE_LIMIT__SHARED",
            "true",
            "http.rate_limit.shared",
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
    // A minute is the longest lockout wait.
    let settings = Settings::load_from(None, env("CRM_AUTH__AUTH__LOCKOUT__MAX_WAIT_MS", "60000"))?;
    assert_eq!(settings.auth.lockout.max_wait_ms, 60_000);
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
    let err = crm_auth_server::signing::load_keyring(&settings, 0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("k1") && err.contains("32"), "{err}");
    // Long enough but not random: 40 spaces, a word repeated.
    for weak in [" ".repeat(40), "secret".repeat(8)] {
        std::fs::write(
            &file,
            format!("[[token.keys]]\nid = \"k2\"\nsecret = \"{weak}\"\n"),
        )?;
        let settings = Settings::load_from(Some(&file), Vec::new())?;
        let err = crm_auth_server::signing::load_keyring(&settings, 0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("k2") && err.contains("distinct"), "{err}");
        assert!(!err.contains(&weak), "{err}");
    }
    Ok(())
}

#[test]
fn the_generated_signing_key_is_private_and_reused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut settings = Settings::for_test(dir.path());
    settings.token.keys.clear();
    let (first, generated) = crm_auth_server::signing::load_keyring(&settings, 0)?;
    assert!(generated);
    let path = dir.path().join("signing-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    }
    let (second, _) = crm_auth_server::signing::load_keyring(&settings, 0)?;
    let claims = crm_auth_core::Claims::new(crm_auth_core::new_id(), "u", "o", "n", 1, 2);
    let fmt = crm_auth_core::DateFormat::Numeric;
    assert_eq!(
        crm_auth_core::issue(&first, &claims, fmt),
        crm_auth_core::issue(&second, &claims, fmt)
    );
    Ok(())
}

/// The roles, key details and audit migration on a database the previous version wrote: its users become
/// members, its keys get no name or expiry, its sessions no refresh time or client; reverted, the columns
/// and the audit table are gone and the old rows still read.
async fn the_roles_migration_makes_existing_users_members_and_reverts(
    backend: Backend,
) -> anyhow::Result<()> {
    const VERSION: &str = "20261207000001";
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let newer = revert_through(conn, VERSION)?;
    // Rows as the previous schema had them, written in SQL since today's models know the new columns.
    let (org, unit, user, key, session) = (
        crm_auth_core::new_id(),
        crm_auth_core::new_id(),
        crm_auth_core::new_id(),
        crm_auth_core::new_id(),
        crm_auth_core::new_id(),
    );
    conn.batch_execute(&format!(
        "INSERT INTO organisations (id, name, name_key, is_active, created_at)
             VALUES ('{org}', 'Acme', 'acme', TRUE, 1);
         INSERT INTO units (id, organisation_id, name, name_key, is_active, created_at)
             VALUES ('{unit}', '{org}', 'Main', 'main', TRUE, 1);
         INSERT INTO users (id, organisation_id, username, username_key, is_active, created_at)
             VALUES ('{user}', '{org}', 'old', 'old', TRUE, 1);
         INSERT INTO user_units (user_id, unit_id, is_default) VALUES ('{user}', '{unit}', TRUE);
         INSERT INTO api_keys (id, organisation_id, user_id, digest, prefix, created_at)
             VALUES ('{key}', '{org}', '{user}', 'digest', 'ABCDEF', 1);
         INSERT INTO sessions (id, organisation_id, user_id, unit_id, api_key_id, method, username,
             organisation_name, unit_name, created_at, generation, rotated_at, expires_at, max_end_at)
             VALUES ('{session}', '{org}', '{user}', '{unit}', '{key}', 'web_api_key', 'old', 'Acme', 'Main',
             1, 0, 1, 7201, 86401);"
    ))?;
    assert_eq!(db::run_migrations(conn)?, newer + 1);
    let acme = admin::find_organisation(conn, "Acme")?;
    let old = admin::find_user(conn, &acme, "old")?;
    assert_eq!(old.role, crm_auth_core::Role::Member);
    let stored_key = db::api_key::find_by_id(conn, &key)?.ok_or_else(|| anyhow::anyhow!("key"))?;
    assert_eq!((stored_key.name, stored_key.expires_at), (None, None));
    let stored = db::session::find_by_id(conn, &session)?.ok_or_else(|| anyhow::anyhow!("session"))?;
    assert_eq!((stored.refreshed_at, stored.client), (None, None));
    // New rows use the new columns; reverting drops them and the audit table, and keeps the rest.
    admin::set_role(conn, &Actor::Cli, &acme, &old, crm_auth_core::Role::Admin, 2)?;
    assert_eq!(schema::audit_events::table.count().get_result::<i64>(conn)?, 1);
    revert_through(conn, VERSION)?;
    assert!(
        schema::audit_events::table
            .count()
            .get_result::<i64>(conn)
            .is_err()
    );
    assert!(
        schema::users::table
            .select(schema::users::role)
            .load::<String>(conn)
            .is_err()
    );
    let usernames: Vec<String> = schema::users::table.select(schema::users::username).load(conn)?;
    assert_eq!(usernames, ["old"]);
    assert_eq!(db::run_migrations(conn)?, newer + 1);
    assert_eq!(
        admin::find_user(conn, &acme, "old")?.role,
        crm_auth_core::Role::Member
    );
    Ok(())
}

/// Reverts the migrations newer than `version`, then `version` itself; returns how many were newer.
fn revert_through(conn: &mut db::DbConnection, version: &str) -> anyhow::Result<usize> {
    let mut newer = 0;
    while db::revert_last_migration(conn)? != version {
        newer += 1;
    }
    Ok(newer)
}

/// The audit of an organisation pages oldest first by the cursor (at, id): events of one second are neither
/// skipped nor repeated, and another organisation's events never show.
async fn the_audit_is_listed_per_organisation_oldest_first_by_cursor(backend: Backend) -> anyhow::Result<()> {
    use crm_auth_server::db::audit::{self, AuditEvent};
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let acme = admin::add_organisation(conn, &Actor::Cli, "Acme", 10)?;
    let other = admin::add_organisation(conn, &Actor::Cli, "Other", 10)?;
    for (n, at) in [11, 12, 12, 12, 12, 13, 14].into_iter().enumerate() {
        admin::add_unit(conn, &Actor::Cli, &acme, &format!("Unit {n}"), None, at)?;
        admin::add_unit(conn, &Actor::Cli, &other, &format!("Unit {n}"), None, at)?;
    }
    let all = audit::list_for_organisation(conn, &acme.id, None, 500)?;
    assert_eq!(all.len(), 8, "the organisation's creation and its seven units");
    assert!(
        all.iter()
            .all(|e| e.organisation_id.as_deref() == Some(acme.id.as_str()))
    );
    let key = |e: &AuditEvent| (e.at, e.id.clone());
    assert!(
        all.windows(2).all(|w| key(&w[0]) < key(&w[1])),
        "oldest first, ids break ties"
    );
    assert_eq!(all[0].action, "organisation.create");
    for limit in [1, 2, 3, 8, 9] {
        let mut paged = Vec::new();
        let mut after: Option<(i64, String)> = None;
        loop {
            let cursor = after.as_ref().map(|(at, id)| (*at, id.as_str()));
            let page = audit::list_for_organisation(conn, &acme.id, cursor, limit)?;
            assert!(page.len() <= usize::try_from(limit)?);
            let Some(last) = page.last() else { break };
            after = Some(key(last));
            paged.extend(page);
        }
        assert_eq!(paged, all, "limit {limit}");
    }
    Ok(())
}

/// A change through the API is audited as `username@organisation` with the caller's address; an `admin`
/// neither grants `operator` nor changes an operator, and a refused change writes nothing.
async fn api_callers_are_audited_by_name_and_address_and_bounded_by_role(
    backend: Backend,
) -> anyhow::Result<()> {
    use crm_auth_core::Role;
    use crm_auth_server::db::audit;
    use crm_auth_server::service::admin::{AdminError, NewUser};
    let test_db = TestDb::new(&backend)?;
    let conn = &mut connect(&test_db)?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, "Acme", 1)?;
    admin::add_unit(conn, &Actor::Cli, &org, "Main", None, 1)?;
    let units = ["Main".to_owned()];
    let new = |username, role| NewUser {
        username,
        units: &units,
        role,
        ..NewUser::default()
    };
    let operator = admin::add_user(conn, &Actor::Cli, &org, new("olga", Role::Operator), 1)?;
    let ann = Actor::User {
        username: "ann".into(),
        organisation: "Acme".into(),
        organisation_id: org.id.clone(),
        role: Role::Admin,
        client: Some("2001:db8::7".parse()?),
    };
    let before = audit::list_for_organisation(conn, &org.id, None, 500)?.len();
    let forbidden = [
        admin::add_user(conn, &ann, &org, new("otto", Role::Operator), 2).map(drop),
        admin::set_role(conn, &ann, &org, &operator, Role::Member, 2),
        admin::set_user_active(conn, &ann, &org, &operator, false, 2).map(drop),
        admin::set_password(conn, &ann, &org, &operator, "$argon2id$not-a-real-hash", 2),
        admin::add_organisation(conn, &ann, "Elsewhere", 2).map(drop),
    ];
    for refused in forbidden {
        assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    }
    assert_eq!(admin::find_user(conn, &org, "olga")?.role, Role::Operator);
    assert!(admin::find_user(conn, &org, "otto").is_err());
    assert_eq!(
        audit::list_for_organisation(conn, &org.id, None, 500)?.len(),
        before
    );

    let member = admin::add_user(conn, &ann, &org, new("mia", Role::Member), 3)?;
    admin::set_role(conn, &ann, &org, &member, Role::Admin, 4)?;
    let events = audit::list_for_organisation(conn, &org.id, None, 500)?;
    let (created, updated) = (&events[events.len() - 2], &events[events.len() - 1]);
    for (event, action, at) in [(created, "user.create", 3), (updated, "user.update", 4)] {
        assert_eq!(event.actor, "ann@Acme");
        assert_eq!(event.client.as_deref(), Some("2001:db8::7"));
        assert_eq!(
            (event.action.as_str(), event.target.as_str(), event.at),
            (action, "mia", at)
        );
    }
    assert_eq!(admin::find_user(conn, &org, "mia")?.role, Role::Admin);
    Ok(())
}
