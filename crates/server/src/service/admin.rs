//! What the admin commands do, as plain functions on a connection (the command line and the tests call them).

use crm_auth_core::limits::MAX_NAME_CHARS;
use crm_auth_core::{ApiKey, new_id};
use diesel::Connection as _;

use crate::db::api_key::{self, ApiKeyRow};
use crate::db::organisation::{self, Organisation};
use crate::db::session::{self, EndReason, Owner, Session};
use crate::db::unit::{self, Unit};
use crate::db::user::{self, User};
use crate::db::{DbConnection, name_key};
use crate::error::is_unique_violation;

/// Why an admin command failed; the message is one line fit for an operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input: unknown or duplicate name, empty value.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    /// Generating a key failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

fn invalid(message: impl Into<String>) -> AdminError {
    AdminError::Invalid(message.into())
}

/// The rules every new organisation name, username, unit name and unit code follows. Names are compared by
/// [`name_key`], so these refuse what would make two different-looking names one, or one name look like
/// another: invisible characters (controls, and format characters such as U+200B or the U+202E that reverses
/// the text after it), edge whitespace, and the shape of an id, which `--org` and unit lookups try first.
fn check_name(kind: &str, name: &str) -> Result<(), AdminError> {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;

    if name.trim().is_empty() {
        return Err(invalid(format!("{kind} must not be empty")));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(format!(
            "{kind} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if name.trim() != name {
        return Err(invalid(format!("{kind} must not begin or end with whitespace")));
    }
    let categories = CodePointMapData::<GeneralCategory>::new();
    if let Some(c) = name.chars().find(|&c| {
        matches!(
            categories.get(c),
            GeneralCategory::Control | GeneralCategory::Format
        )
    }) {
        return Err(invalid(format!(
            "{kind} must not contain control or format characters (U+{:04X})",
            u32::from(c)
        )));
    }
    if looks_like_id(name) {
        return Err(invalid(format!(
            "{kind} must not have the shape of an id (32 hex digits)"
        )));
    }
    Ok(())
}

/// Whether a name, once folded, is 32 hex digits in either case: it would read as an id wherever ids and
/// names are both accepted.
fn looks_like_id(name: &str) -> bool {
    crm_auth_core::is_id(&name_key(name).to_ascii_uppercase())
}

/// The UTS #39 confusable skeleton of a name's key: names that a reader could take for each other (Cyrillic
/// `а` and Latin `a`, `rn` and `m`) share it.
fn skeleton(name: &str) -> String {
    unicode_security::confusable_detection::skeleton(&name_key(name)).collect()
}

/// The first of `existing` that looks like `name` without being the same name. Such names stay allowed (a
/// Cyrillic `аdmin` is a real, different name), but an operator creating one is told.
fn look_alike(name: &str, existing: impl IntoIterator<Item = String>) -> Option<String> {
    let (key, wanted) = (name_key(name), skeleton(name));
    existing
        .into_iter()
        .find(|other| name_key(other) != key && skeleton(other) == wanted)
}

/// An existing organisation name that the organisation's name could be taken for.
pub fn look_alike_organisation(
    conn: &mut DbConnection,
    org: &Organisation,
) -> Result<Option<String>, AdminError> {
    let others = organisation::all_names(conn)?;
    Ok(look_alike(
        &org.name,
        others
            .into_iter()
            .filter(|(id, _)| *id != org.id)
            .map(|(_, name)| name),
    ))
}

/// An existing unit name or code of its organisation that the unit's name or code could be taken for.
pub fn look_alike_unit(conn: &mut DbConnection, unit: &Unit) -> Result<Option<String>, AdminError> {
    let others: Vec<String> = unit::all_names_in(conn, &unit.organisation_id)?
        .into_iter()
        .filter(|(id, _, _)| *id != unit.id)
        .flat_map(|(_, name, code)| std::iter::once(name).chain(code))
        .collect();
    let mine = std::iter::once(&unit.name).chain(unit.code.as_ref());
    Ok(mine
        .into_iter()
        .find_map(|name| look_alike(name, others.iter().cloned())))
}

/// An existing username of its organisation that the user's name could be taken for.
pub fn look_alike_user(conn: &mut DbConnection, user: &User) -> Result<Option<String>, AdminError> {
    let others = user::all_names_in(conn, &user.organisation_id)?;
    Ok(look_alike(
        &user.username,
        others
            .into_iter()
            .filter(|(id, _)| *id != user.id)
            .map(|(_, name)| name),
    ))
}

/// Finds an organisation by id or name (compared by [`name_key`]).
pub fn find_organisation(conn: &mut DbConnection, org: &str) -> Result<Organisation, AdminError> {
    organisation::find_by_id_or_name(conn, org)?.ok_or_else(|| invalid(format!("no organisation {org:?}")))
}

/// Finds a unit of the organisation by id, name or code.
pub fn find_unit(conn: &mut DbConnection, org: &Organisation, wanted: &str) -> Result<Unit, AdminError> {
    unit::find_in_organisation(conn, &org.id, wanted)?
        .ok_or_else(|| invalid(format!("no unit {wanted:?} in organisation {:?}", org.name)))
}

/// Finds a user of the organisation by username (compared by [`name_key`]).
pub fn find_user(conn: &mut DbConnection, org: &Organisation, username: &str) -> Result<User, AdminError> {
    user::find_by_username(conn, &org.id, username)?
        .ok_or_else(|| invalid(format!("no user {username:?} in organisation {:?}", org.name)))
}

/// Creates an organisation.
pub fn add_organisation(conn: &mut DbConnection, name: &str, now: i64) -> Result<Organisation, AdminError> {
    check_name("organisation name", name)?;
    let org = Organisation {
        id: new_id(),
        name: name.to_owned(),
        name_key: name_key(name),
        is_active: true,
        created_at: now,
    };
    organisation::create(conn, &org).map_err(|e| match e {
        e if is_unique_violation(&e) => invalid(format!("organisation {name:?} already exists")),
        e => e.into(),
    })?;
    Ok(org)
}

/// Creates a unit in an organisation.
pub fn add_unit(
    conn: &mut DbConnection,
    org: &Organisation,
    name: &str,
    code: Option<&str>,
    now: i64,
) -> Result<Unit, AdminError> {
    check_name("unit name", name)?;
    if let Some(code) = code {
        check_name("unit code", code)?;
    }
    let unit = Unit {
        id: new_id(),
        organisation_id: org.id.clone(),
        name: name.to_owned(),
        name_key: name_key(name),
        code: code.map(str::to_owned),
        code_key: code.map(name_key),
        is_active: true,
        created_at: now,
    };
    unit::create(conn, &unit).map_err(|e| match e {
        e if is_unique_violation(&e) => match code {
            Some(code) => invalid(format!(
                "a unit named {name:?} or coded {code:?} already exists in {:?}",
                org.name
            )),
            None => invalid(format!("a unit named {name:?} already exists in {:?}", org.name)),
        },
        e => e.into(),
    })?;
    Ok(unit)
}

/// Creates a user in the given units; the default is `default_unit`, else the first.
pub fn add_user(
    conn: &mut DbConnection,
    org: &Organisation,
    username: &str,
    units: &[String],
    default_unit: Option<&str>,
    password_hash: Option<String>,
    now: i64,
) -> Result<User, AdminError> {
    check_name("username", username)?;
    if units.is_empty() {
        return Err(invalid("a user needs at least one --unit"));
    }
    let mut unit_ids = Vec::with_capacity(units.len());
    for wanted in units {
        let id = find_unit(conn, org, wanted)?.id;
        if !unit_ids.contains(&id) {
            unit_ids.push(id);
        }
    }
    let default_id = match default_unit {
        Some(wanted) => {
            let id = find_unit(conn, org, wanted)?.id;
            if !unit_ids.contains(&id) {
                return Err(invalid(format!(
                    "--default-unit {wanted:?} is not among the --unit values"
                )));
            }
            id
        }
        None => unit_ids[0].clone(),
    };
    let user = User {
        id: new_id(),
        organisation_id: org.id.clone(),
        username: username.to_owned(),
        username_key: name_key(username),
        password_hash,
        is_active: true,
        created_at: now,
    };
    user::create(conn, &user, &unit_ids, &default_id).map_err(|e| match e {
        e if is_unique_violation(&e) => {
            invalid(format!("user {username:?} already exists in {:?}", org.name))
        }
        e => e.into(),
    })?;
    Ok(user)
}

/// Sets a user's password hash.
pub fn set_password(conn: &mut DbConnection, user: &User, hash: &str) -> Result<(), AdminError> {
    user::update_password(conn, &user.id, hash)?;
    Ok(())
}

/// Enables or disables a user; disabling ends its live sessions. Returns the sessions ended.
pub fn set_user_active(
    conn: &mut DbConnection,
    user: &User,
    active: bool,
    now: i64,
) -> Result<usize, AdminError> {
    set_active(conn, Owner::User(&user.id), active, now)
}

/// Enables or disables a user, an organisation (all its users) or a unit (the sessions logged into it);
/// disabling also ends the owner's live sessions. Returns the sessions ended. The owner's row is updated (so
/// locked) before its sessions are ended, in one transaction: a login's post-insert re-check waits for that
/// lock (see `db::session::lock_standing`).
pub fn set_active(
    conn: &mut DbConnection,
    owner: Owner<'_>,
    active: bool,
    now: i64,
) -> Result<usize, AdminError> {
    type Update = fn(&mut DbConnection, &str, bool) -> diesel::QueryResult<usize>;
    let (update, id, reason): (Update, _, _) = match owner {
        Owner::User(id) => (user::update_active, id, EndReason::UserDisabled),
        Owner::Organisation(id) => (organisation::update_active, id, EndReason::OrganisationDisabled),
        Owner::Unit(id) => (unit::update_active, id, EndReason::UnitDisabled),
        Owner::Key(_) => return Err(invalid("a key is revoked, not disabled")),
    };
    conn.transaction(|conn| {
        update(conn, id, active)?;
        if active {
            Ok(0)
        } else {
            session::update_end_for(conn, owner, now, reason)
        }
    })
    .map_err(AdminError::from)
}

/// Creates a Web API key for a user; the key itself is returned once and never stored.
pub fn create_key(conn: &mut DbConnection, user: &User, now: i64) -> Result<(ApiKeyRow, ApiKey), AdminError> {
    let key = ApiKey::generate().map_err(|e| AdminError::Random(e.to_string()))?;
    let row = ApiKeyRow {
        id: new_id(),
        organisation_id: user.organisation_id.clone(),
        user_id: user.id.clone(),
        digest: key.digest(),
        prefix: key.prefix(),
        created_at: now,
        revoked_at: None,
        last_used_at: None,
    };
    api_key::create(conn, &row)?;
    Ok((row, key))
}

/// Revokes a key of the organisation and ends the sessions it opened. Returns the sessions ended.
pub fn revoke_key(
    conn: &mut DbConnection,
    org: &Organisation,
    key_id: &str,
    now: i64,
) -> Result<usize, AdminError> {
    let key = api_key::find_by_id(conn, key_id)?
        .filter(|k| k.organisation_id == org.id)
        .ok_or_else(|| invalid(format!("no key {key_id:?} in organisation {:?}", org.name)))?;
    conn.transaction(|conn| {
        api_key::update_revoked(conn, &key.id, now)?;
        session::update_end_for(conn, Owner::Key(&key.id), now, EndReason::KeyRevoked)
    })
    .map_err(AdminError::from)
}

/// Ends a session by id. Returns whether it was live.
pub fn revoke_session(conn: &mut DbConnection, jti: &str, now: i64) -> Result<bool, AdminError> {
    if session::find_by_id(conn, jti)?.is_none() {
        return Err(invalid(format!("no session {jti:?}")));
    }
    Ok(session::update_end(conn, jti, now, EndReason::Revoked)?)
}

/// The live sessions of an organisation, optionally of one user.
pub fn list_sessions(
    conn: &mut DbConnection,
    org: &Organisation,
    user: Option<&User>,
    now: i64,
) -> Result<Vec<Session>, AdminError> {
    Ok(session::find_live(
        conn,
        &org.id,
        user.map(|u| u.id.as_str()),
        now,
    )?)
}

/// What `demo` set up.
pub struct Demo {
    /// Organisation name.
    pub organisation: String,
    /// Unit name.
    pub unit: String,
    /// Username.
    pub username: String,
    /// The demo user's new password and a new Web API key; `None` when an existing demo user was kept as it
    /// was.
    pub credentials: Option<(String, ApiKey)>,
}

/// What [`demo`] does with a demo user that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingDemoUser {
    /// Give it the new password, enable it and replace its keys (`crm-auth demo`).
    Reset,
    /// Leave its password, keys and state alone (`serve --demo`, which runs at every start).
    Keep,
}

/// Idempotently creates organisation `demo`, unit `HQ` and user `admin`, gives a new user (or, with
/// [`ExistingDemoUser::Reset`], an existing one) a password and its hash from `new_password` and a fresh key
/// (older demo keys are revoked). `new_password` runs only when a password is needed: hashing costs a start-up
/// of `serve --demo` nothing once the demo user exists.
pub fn demo<E: From<AdminError>>(
    conn: &mut DbConnection,
    new_password: impl FnOnce() -> Result<(String, String), E>,
    existing: ExistingDemoUser,
    now: i64,
) -> Result<Demo, E> {
    let org = match organisation::find_by_name(conn, "demo").map_err(AdminError::from)? {
        Some(org) => org,
        None => add_organisation(conn, "demo", now)?,
    };
    let unit = match unit::find_in_organisation(conn, &org.id, "HQ").map_err(AdminError::from)? {
        Some(unit) => unit,
        None => add_unit(conn, &org, "HQ", Some("HQ"), now)?,
    };
    let (user, password) = match user::find_by_username(conn, &org.id, "admin").map_err(AdminError::from)? {
        Some(user) if existing == ExistingDemoUser::Keep => {
            return Ok(Demo {
                organisation: org.name,
                unit: unit.name,
                username: user.username,
                credentials: None,
            });
        }
        Some(user) => {
            let (password, hash) = new_password()?;
            set_password(conn, &user, &hash)?;
            set_user_active(conn, &user, true, now)?;
            (user, password)
        }
        None => {
            let (password, hash) = new_password()?;
            let units = std::slice::from_ref(&unit.id);
            (
                add_user(conn, &org, "admin", units, None, Some(hash), now)?,
                password,
            )
        }
    };
    for old in api_key::find_by_organisation(conn, &org.id).map_err(AdminError::from)? {
        if old.user_id == user.id && old.revoked_at.is_none() {
            revoke_key(conn, &org, &old.id, now)?;
        }
    }
    let (_, key) = create_key(conn, &user, now)?;
    Ok(Demo {
        organisation: org.name,
        unit: unit.name,
        username: user.username,
        credentials: Some((password, key)),
    })
}
