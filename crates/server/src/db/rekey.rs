//! The Rust half of the `fold_name_keys` migration: recomputes every stored name key with [`name_key`].
//!
//! SQL cannot normalise Unicode, so the migration's SQL only marks the step and [`run`] re-keys the rows in the
//! migration's own transaction. Two existing names that fold to one key cannot both stay: the step fails,
//! naming both rows, and nothing changes until an operator renames one with the previous version.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use diesel::prelude::*;

use super::login_failure::LoginFailure;
use super::schema::{login_failures, organisations, units, users};
use super::{DbConnection, name_key};

/// The version of the migration whose SQL is a marker for [`run`].
pub const VERSION: &str = "20261201000001";

/// Why the re-keying stopped.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    /// Two rows would share a key.
    #[error("{0}")]
    Collision(String),
    /// The database failed.
    #[error("{0}")]
    Db(#[from] diesel::result::Error),
}

/// Placed in a changed key column before the new keys are written (see [`write_keys`]). No key can start with U+0001: control
/// characters were never accepted in names.
fn placeholder(id: &str) -> String {
    format!("\u{1}{id}")
}

/// One keyed row: its id, the scope its key is unique in, what the key is made from, and the stored key.
struct Keyed {
    id: String,
    scope: String,
    text: String,
    key: String,
}

/// Fails when two rows of one scope fold to one key; `what` names the rows in the message.
fn check_collisions(rows: &[Keyed], what: &str) -> Result<(), RekeyError> {
    let mut seen: HashMap<(&str, String), &Keyed> = HashMap::new();
    for row in rows {
        match seen.entry((row.scope.as_str(), name_key(&row.text))) {
            Entry::Vacant(slot) => {
                slot.insert(row);
            }
            Entry::Occupied(first) => {
                let first = first.get();
                return Err(RekeyError::Collision(format!(
                    "{what} {:?} (id {}) and {:?} (id {}) are the same name once normalised and case-folded; \
                     rename one with the previous version, then migrate again",
                    first.text, first.id, row.text, row.id
                )));
            }
        }
    }
    Ok(())
}

/// Re-keys organisations, units (names and codes), users and failed-login counters.
pub fn run(conn: &mut DbConnection) -> Result<(), RekeyError> {
    let orgs: Vec<Keyed> = organisations::table
        .select((organisations::id, organisations::name, organisations::name_key))
        .load::<(String, String, String)>(conn)?
        .into_iter()
        .map(|(id, text, key)| Keyed {
            id,
            scope: String::new(),
            text,
            key,
        })
        .collect();
    check_collisions(&orgs, "organisations")?;

    let unit_rows = units::table
        .select((
            units::id,
            units::organisation_id,
            units::name,
            units::name_key,
            units::code,
            units::code_key,
        ))
        .load::<(String, String, String, String, Option<String>, Option<String>)>(conn)?;
    let mut unit_names = Vec::with_capacity(unit_rows.len());
    let mut unit_codes = Vec::new();
    for (id, org, name, name_key, code, code_key) in unit_rows {
        if let (Some(text), Some(key)) = (code, code_key) {
            unit_codes.push(Keyed {
                id: id.clone(),
                scope: org.clone(),
                text,
                key,
            });
        }
        unit_names.push(Keyed {
            id,
            scope: org,
            text: name,
            key: name_key,
        });
    }
    check_collisions(&unit_names, "units named")?;
    check_collisions(&unit_codes, "units coded")?;

    let user_rows: Vec<Keyed> = users::table
        .select((
            users::id,
            users::organisation_id,
            users::username,
            users::username_key,
        ))
        .load::<(String, String, String, String)>(conn)?
        .into_iter()
        .map(|(id, scope, text, key)| Keyed { id, scope, text, key })
        .collect();
    check_collisions(&user_rows, "users")?;

    write_keys(conn, &orgs, |c, id, key| {
        diesel::update(organisations::table.find(id))
            .set(organisations::name_key.eq(key))
            .execute(c)
    })?;
    write_keys(conn, &unit_names, |c, id, key| {
        diesel::update(units::table.find(id))
            .set(units::name_key.eq(key))
            .execute(c)
    })?;
    write_keys(conn, &unit_codes, |c, id, key| {
        diesel::update(units::table.find(id))
            .set(units::code_key.eq(key))
            .execute(c)
    })?;
    write_keys(conn, &user_rows, |c, id, key| {
        diesel::update(users::table.find(id))
            .set(users::username_key.eq(key))
            .execute(c)
    })?;
    rekey_login_failures(conn)?;
    Ok(())
}

/// Writes the new key of every row whose key changes, through `set(conn, id, key)`: first a placeholder in all
/// of them, then the keys, since a row may take a key that another changed row still holds.
fn write_keys(
    conn: &mut DbConnection,
    rows: &[Keyed],
    set: impl Fn(&mut DbConnection, &str, String) -> QueryResult<usize>,
) -> QueryResult<()> {
    let changed: Vec<(&Keyed, String)> = rows
        .iter()
        .filter_map(|row| {
            let key = name_key(&row.text);
            (key != row.key).then_some((row, key))
        })
        .collect();
    for (row, _) in &changed {
        set(conn, &row.id, placeholder(&row.id))?;
    }
    for (row, key) in changed {
        set(conn, &row.id, key)?;
    }
    Ok(())
}

/// Counters are keyed by what was typed, so two of them may now be one; they merge, keeping the larger count
/// and the later lock, so no lockout is lifted by the upgrade.
fn rekey_login_failures(conn: &mut DbConnection) -> Result<(), RekeyError> {
    let rows = login_failures::table
        .select(LoginFailure::as_select())
        .load(conn)?;
    let mut merged: HashMap<(String, String), LoginFailure> = HashMap::new();
    let mut changed = false;
    for row in rows {
        let key = (name_key(&row.organisation_key), name_key(&row.username_key));
        changed |= key.0 != row.organisation_key || key.1 != row.username_key;
        match merged.entry(key) {
            Entry::Vacant(slot) => {
                let (organisation_key, username_key) = slot.key().clone();
                slot.insert(LoginFailure {
                    organisation_key,
                    username_key,
                    ..row
                });
            }
            Entry::Occupied(mut slot) => {
                let kept = slot.get_mut();
                kept.failures = kept.failures.max(row.failures);
                kept.locked_until = kept.locked_until.max(row.locked_until);
                kept.updated_at = kept.updated_at.max(row.updated_at);
            }
        }
    }
    if changed {
        diesel::delete(login_failures::table).execute(conn)?;
        for row in merged.values() {
            diesel::insert_into(login_failures::table)
                .values(row)
                .execute(conn)?;
        }
    }
    Ok(())
}
