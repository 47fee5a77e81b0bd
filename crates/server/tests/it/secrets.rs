//! Secrets at rest: after logins by password and by key, refreshes, releases and failed attempts, no column of
//! any table holds a password, a Web API key, a token or the signing secret; passwords are Argon2id PHC
//! strings and keys SHA-256 digests. And `Debug` of the configuration and of the pool shows no secret.

use crate::common::{Backend, ORG, PASSWORD, TestApp, USER};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_client::Credentials;
use crm_auth_server::db::DbConnection;
use crm_auth_server::service::admin;
use crm_auth_server::service::admin::Actor;
use crm_auth_server::settings::Settings;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

backend_tests!(no_secret_is_stored_in_clear);

const BOB_PASSWORD: &str = "bob's own passphrase 4711";
const WRONG_PASSWORD: &str = "a wrong guess 0815";
const UNKNOWN_KEY: &str = "0123456789ABCDEF0123456789ABCDEF";

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct TableColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

#[derive(QueryableByName)]
struct Cell {
    #[diesel(sql_type = Nullable<Text>)]
    value: Option<String>,
}

/// Every column of every table, the migrations' bookkeeping included, found in the database's catalogue so
/// that a column added later is covered too.
fn columns(conn: &mut DbConnection) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    match conn {
        DbConnection::Sqlite(c) => {
            let tables: Vec<Name> =
                diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table'").load(c)?;
            for Name { name: table } in tables {
                let cols: Vec<Name> =
                    diesel::sql_query(format!("SELECT name FROM pragma_table_info('{table}')")).load(c)?;
                out.extend(cols.into_iter().map(|col| (table.clone(), col.name)));
            }
        }
        DbConnection::Postgres(c) => {
            let cols: Vec<TableColumn> = diesel::sql_query(
                "SELECT CAST(table_name AS TEXT) AS table_name, CAST(column_name AS TEXT) AS column_name \
                 FROM information_schema.columns WHERE table_schema = current_schema()",
            )
            .load(c)?;
            out.extend(cols.into_iter().map(|c| (c.table_name, c.column_name)));
        }
    }
    Ok(out)
}

/// Every value of one column, as text.
fn values(conn: &mut DbConnection, table: &str, column: &str) -> anyhow::Result<Vec<String>> {
    let sql = format!(r#"SELECT CAST("{column}" AS TEXT) AS value FROM "{table}""#);
    let cells: Vec<Cell> = match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(sql).load(c)?,
        DbConnection::Postgres(c) => diesel::sql_query(sql).load(c)?,
    };
    Ok(cells.into_iter().filter_map(|c| c.value).collect())
}

/// Whether `s` is `$argon2id$v=19$m=M,t=T,p=P$SALT$HASH` with these parameters, a salt of at least 16
/// bytes and a hash of 32.
fn is_argon2id_phc(s: &str, m: u32, t: u32, p: u32) -> bool {
    let b64 = |part: &str| base64::engine::general_purpose::STANDARD_NO_PAD.decode(part).ok();
    let parts: Vec<&str> = s.split('$').collect();
    matches!(
        parts.as_slice(),
        ["", "argon2id", "v=19", params, salt, hash]
            if *params == format!("m={m},t={t},p={p}")
                && b64(salt).is_some_and(|b| b.len() >= 16)
                && b64(hash).is_some_and(|b| b.len() == 32)
    )
}

fn is_lower_hex_64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

async fn no_secret_is_stored_in_clear(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    app.add_user("bob", Some(BOB_PASSWORD), &["Main"])?;
    let bob_key = {
        let conn = &mut *app.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let bob = admin::find_user(conn, &org, "bob")?;
        admin::create_key(conn, &Actor::Cli, &org, &bob, (None, None), 0)?
            .1
            .expose()
            .to_owned()
    };

    // A full run: logins by password and by key, refreshes, releases, failures of every kind.
    let mut tokens = Vec::new();
    let alice = app.login().await?;
    let bob = app
        .client
        .token(&Credentials::password("bob", BOB_PASSWORD, ORG).unit("MN"))
        .await?;
    let by_key = app
        .client
        .token(&Credentials::api_key(&app.key).unit("Second"))
        .await?;
    let bob_by_key = app.client.token(&Credentials::api_key(&bob_key)).await?;
    let refreshed = app.client.refresh(alice.as_str()).await?;
    let again = app.client.refresh(refreshed.as_str()).await?;
    let key_refreshed = app.client.refresh(by_key.as_str()).await?;
    app.client.validate(again.as_str()).await?;
    app.client.release(bob.as_str()).await?;
    app.client.release(key_refreshed.as_str()).await?;
    let _ = app
        .client
        .token(&Credentials::password(USER, WRONG_PASSWORD, ORG))
        .await;
    let _ = app
        .client
        .token(&Credentials::password("nobody", WRONG_PASSWORD, ORG))
        .await;
    let _ = app.client.token(&Credentials::api_key(UNKNOWN_KEY)).await;
    for token in [
        &alice,
        &bob,
        &by_key,
        &bob_by_key,
        &refreshed,
        &again,
        &key_refreshed,
    ] {
        tokens.push(token.as_str().to_owned());
    }

    let mut secrets: Vec<String> = vec![
        PASSWORD.into(),
        BOB_PASSWORD.into(),
        WRONG_PASSWORD.into(),
        app.key.clone(),
        app.key.to_lowercase(),
        bob_key.clone(),
        bob_key.to_lowercase(),
        UNKNOWN_KEY.into(),
        STANDARD.encode(format!("{}:", app.key)),
        STANDARD.encode(format!("{bob_key}:")),
        // The signing secret of `Settings::for_test`.
        crm_auth_server::settings::TEST_SIGNING_SECRET.into(),
    ];
    for token in &tokens {
        secrets.push(token.clone());
        // The signature is what makes a token usable; the claims are no secret on their own.
        secrets.push(token.rsplit('.').next().unwrap_or_default().to_owned());
    }

    let conn = &mut *app.conn()?;
    let columns = columns(conn)?;
    let has = |table: &str, column: &str| columns.iter().any(|(t, c)| t == table && c == column);
    assert!(
        has("users", "password_hash") && has("api_keys", "digest") && has("sessions", "id"),
        "the catalogue lists the tables: {columns:?}"
    );
    let argon2 = &app.state.settings.auth.argon2;
    let (mut hashes, mut digests) = (Vec::new(), Vec::new());
    for (table, column) in &columns {
        for value in values(conn, table, column)? {
            for secret in &secrets {
                assert!(
                    !value.contains(secret.as_str()),
                    "{table}.{column} holds a secret ({} characters)",
                    secret.len()
                );
            }
            // No JWT of any kind: every token starts with the base64 of `{"`.
            assert!(
                !value.contains("eyJ"),
                "{table}.{column} holds something like a token"
            );
            match (table.as_str(), column.as_str()) {
                ("users", "password_hash") => {
                    assert!(
                        is_argon2id_phc(&value, argon2.m_kib, argon2.t, argon2.p),
                        "{table}.{column} is not an Argon2id PHC string: {value}"
                    );
                    hashes.push(value);
                }
                ("api_keys", "digest") => {
                    assert!(
                        is_lower_hex_64(&value),
                        "{table}.{column} is not 64 lower hex: {value}"
                    );
                    digests.push(value);
                }
                ("api_keys", "prefix") => assert_eq!(value.chars().count(), 6, "{table}.{column}"),
                _ => {}
            }
        }
    }
    assert_eq!(hashes.len(), 2, "alice's and bob's password hashes");
    assert_ne!(hashes[0], hashes[1]);
    digests.sort();
    let mut want = vec![
        crm_auth_core::digest_key(&app.key),
        crm_auth_core::digest_key(&bob_key),
    ];
    want.sort();
    assert_eq!(digests, want, "each key is stored as the SHA-256 of itself");
    Ok(())
}

#[test]
fn debug_of_settings_and_pool_shows_no_secret() -> anyhow::Result<()> {
    const DB_PASSWORD: &str = "db-password-0123456789";
    const SIGNING_SECRET: &str = "signing-secret-0123456789-abcdefghij";
    const ENV_DB_PASSWORD: &str = "env-db-password-9876543210";
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("crm-auth.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[database]
url = "postgres://crm:{DB_PASSWORD}@db.internal:5432/crm"

[[token.keys]]
id = "main"
secret = "{SIGNING_SECRET}"

[[token.keys]]
id = "next"
secret_file = "/run/secrets/next-signing-key"
"#
        ),
    )?;
    let from_file = Settings::load_from(Some(&file), Vec::new())?;
    let env = vec![(
        "CRM_AUTH__DATABASE__URL".to_owned(),
        format!("postgresql://crm:{ENV_DB_PASSWORD}@db.internal/crm?sslmode=require"),
    )];
    let from_env = Settings::load_from(Some(&file), env)?;
    for settings in [&from_file, &from_env] {
        for shown in [format!("{settings:?}"), format!("{settings:#?}")] {
            assert!(
                shown.contains("main") && shown.contains("next"),
                "key ids are shown: {shown}"
            );
            for secret in [DB_PASSWORD, SIGNING_SECRET, ENV_DB_PASSWORD] {
                assert!(!shown.contains(secret), "Debug shows a secret: {shown}");
            }
        }
    }
    // The pool's Debug shows its connection manager, which holds the URL.
    let backend = crm_auth_server::db::Backend::from_url(from_env.database.url.expose())?;
    let shown = format!("{backend:?}");
    assert!(
        !shown.contains(ENV_DB_PASSWORD),
        "Debug of the backend shows the password: {shown}"
    );
    let manager = crm_auth_server::db::ConnectionManager::new(backend)?;
    let shown = format!("{manager:?}");
    assert!(
        !shown.contains(ENV_DB_PASSWORD),
        "Debug of the manager shows the password: {shown}"
    );
    // A URL that cannot be used is refused without being repeated.
    let bad = vec![(
        "CRM_AUTH__DATABASE__URL".to_owned(),
        format!("mysql://crm:{DB_PASSWORD}@db.internal/crm"),
    )];
    let err = Settings::load_from(None, bad)
        .err()
        .ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert!(!format!("{err} {err:?}").contains(DB_PASSWORD), "{err}");
    Ok(())
}
