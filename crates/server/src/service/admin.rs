//! Every administrative change, as plain functions on a connection that the command line, the admin API and
//! the tests share. Each change takes the [`Actor`] making it and writes, in the change's own transaction, one
//! row of the audit table; once it has committed, the same event goes to the audit log.

use std::fmt;
use std::net::IpAddr;

use crm_auth_core::limits::MAX_NAME_CHARS;
use crm_auth_core::{ApiKey, Role, new_id, new_session_id};
use diesel::Connection as _;

use crate::db::api_key::{self, ApiKeyRow};
use crate::db::audit::{self, AuditEvent};
use crate::db::organisation::{self, Organisation};
use crate::db::session::{self, EndReason, Owner, Session};
use crate::db::unit::{self, Unit};
use crate::db::user::{self, User};
use crate::db::{DbConnection, name_key};
use crate::error::is_unique_violation;
use crate::logging::{self, Event};

/// Why an admin change failed; the message is one line fit for an operator. The kinds are the admin API's
/// answers: `NotFound` is `NOT_FOUND`, `Conflict` `CONFLICT`, `Forbidden` `FORBIDDEN`, `Invalid`
/// `INVALID_REQUEST`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input: an empty or malformed value.
    #[error("{0}")]
    Invalid(String),
    /// What the change names does not exist (an organisation, unit, user, key or session).
    #[error("{0}")]
    NotFound(String),
    /// A name that must be unique is taken.
    #[error("{0}")]
    Conflict(String),
    /// The actor may not make this change (see [`may_change`], [`may_grant`]).
    #[error("{0}")]
    Forbidden(String),
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

fn not_found(message: impl Into<String>) -> AdminError {
    AdminError::NotFound(message.into())
}

fn conflict(message: impl Into<String>) -> AdminError {
    AdminError::Conflict(message.into())
}

/// Who makes a change: the command line (run on the host, so trusted with everything), or a user calling the
/// admin API with its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// `crm-auth` on the command line.
    Cli,
    /// An API caller.
    User {
        /// Its username.
        username: String,
        /// Its organisation's name.
        organisation: String,
        /// Its organisation's id: an `admin` sees no other.
        organisation_id: String,
        /// Its role, which bounds what it may change.
        role: Role,
        /// The client address the request came from.
        client: Option<IpAddr>,
    },
}

impl Actor {
    /// The client address of an API caller.
    pub fn client(&self) -> Option<IpAddr> {
        match self {
            Actor::Cli => None,
            Actor::User { client, .. } => *client,
        }
    }

    /// The role the actor acts with; the command line acts as an operator.
    pub fn role(&self) -> Role {
        match self {
            Actor::Cli => Role::Operator,
            Actor::User { role, .. } => *role,
        }
    }
}

/// `cli`, or `username@organisation`: the audit's `actor`.
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Cli => f.write_str("cli"),
            Actor::User {
                username,
                organisation,
                ..
            } => write!(f, "{username}@{organisation}"),
        }
    }
}

/// Whether a user of role `actor` may change a user whose role is `target` (its password, state, units or
/// role): an operator any user, an admin any but an operator, a member none.
pub fn may_change(actor: Role, target: Role) -> bool {
    match actor {
        Role::Operator => true,
        Role::Admin => target != Role::Operator,
        Role::Member => false,
    }
}

/// Whether a user of role `actor` may give a user the role `granted` (at creation or by a change): an
/// operator any role, an admin any but `operator`, a member none.
pub fn may_grant(actor: Role, granted: Role) -> bool {
    match actor {
        Role::Operator => true,
        Role::Admin => granted != Role::Operator,
        Role::Member => false,
    }
}

/// [`may_change`] (when a user is changed) and [`may_grant`] (when a role is given), as the error a refused
/// change answers.
fn authorise(actor: &Actor, target: Option<&User>, granted: Option<Role>) -> Result<(), AdminError> {
    let role = actor.role();
    if let Some(target) = target.filter(|t| !may_change(role, t.role)) {
        return Err(AdminError::Forbidden(format!(
            "an {role} may not change the {} {:?}",
            target.role, target.username
        )));
    }
    if let Some(granted) = granted.filter(|&g| !may_grant(role, g)) {
        return Err(AdminError::Forbidden(format!(
            "an {role} may not grant the role {granted}"
        )));
    }
    Ok(())
}

/// What a change concerns, for its audit row and its log record; a field left `None` is left out of the
/// record.
#[derive(Debug, Default)]
struct Subject<'a> {
    /// The organisation's id (the row's `organisation_id`).
    organisation_id: Option<&'a str>,
    /// The organisation's name (the log's `organisation`).
    organisation: Option<&'a str>,
    unit: Option<&'a str>,
    username: Option<&'a str>,
    key_id: Option<&'a str>,
    session: Option<&'a str>,
    role: Option<Role>,
}

impl<'a> Subject<'a> {
    fn of(org: &'a Organisation) -> Subject<'a> {
        Subject {
            organisation_id: Some(&org.id),
            organisation: Some(&org.name),
            ..Subject::default()
        }
    }
}

/// Writes the audit row of a change; call it inside the change's transaction. Its `target` is the most
/// specific thing the subject names (a session, key, username, unit or organisation), never a secret.
fn record(
    conn: &mut DbConnection,
    actor: &Actor,
    event: Event,
    subject: &Subject<'_>,
    now: i64,
) -> Result<(), AdminError> {
    let target = [
        subject.session,
        subject.key_id,
        subject.username,
        subject.unit,
        subject.organisation,
    ]
    .into_iter()
    .flatten()
    .next()
    .unwrap_or_default();
    Ok(record_row(
        conn,
        actor,
        event,
        subject.organisation_id,
        target,
        now,
    )?)
}

/// Writes an audit row naming `target` in the organisation (if any); call it inside the change's transaction.
/// For a change that concerns no one object (an import); others go through [`record`].
pub(crate) fn record_row(
    conn: &mut DbConnection,
    actor: &Actor,
    event: Event,
    organisation_id: Option<&str>,
    target: &str,
    now: i64,
) -> diesel::QueryResult<()> {
    audit::create(
        conn,
        &AuditEvent {
            // Time-ordered, so that the events of one second list in the order they were written.
            id: new_session_id(),
            organisation_id: organisation_id.map(str::to_owned),
            at: now,
            actor: actor.to_string(),
            action: event.as_str().to_owned(),
            target: target.to_owned(),
            client: actor.client().map(|c| c.to_string()),
        },
    )
}

/// The audit log record of a committed change; `ended` counts the sessions it ended.
fn log_change(actor: &Actor, event: Event, message: &str, subject: &Subject<'_>, ended: Option<usize>) {
    let actor_name = actor.to_string();
    log::info!(
        target: logging::AUDIT,
        event = event,
        actor = actor_name.as_str(),
        organisation = subject.organisation,
        unit = subject.unit,
        username = subject.username,
        key_id = subject.key_id,
        session = subject.session,
        role = subject.role.map(|r| r.as_str()),
        ended = ended,
        client = actor.client();
        "{message}"
    );
}

/// Runs `change` and its audit row in one transaction, then logs the event.
fn audited<T>(
    conn: &mut DbConnection,
    actor: &Actor,
    (event, message): (Event, &str),
    subject: &Subject<'_>,
    now: i64,
    change: impl FnOnce(&mut DbConnection) -> Result<T, AdminError>,
    ended: impl FnOnce(&T) -> Option<usize>,
) -> Result<T, AdminError> {
    let done = conn.transaction(|conn| {
        let done = change(conn)?;
        record(conn, actor, event, subject, now)?;
        Ok::<_, AdminError>(done)
    })?;
    log_change(actor, event, message, subject, ended(&done));
    Ok(done)
}

/// The rules every new organisation name, username, unit name and unit code follows. Names are compared by
/// [`name_key`], so these refuse what would make two different-looking names one, or one name look like
/// another: invisible characters (controls, and format characters such as U+200B or the U+202E that reverses
/// the text after it), edge whitespace, and the shape of an id, which `--org` and unit lookups try first.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), AdminError> {
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
    organisation::find_by_id_or_name(conn, org)?.ok_or_else(|| not_found(format!("no organisation {org:?}")))
}

/// [`find_organisation`] as the actor may see it: an `admin` finds only its own organisation, and another
/// is not found, exactly as if it did not exist.
pub fn find_organisation_as(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &str,
) -> Result<Organisation, AdminError> {
    let found = find_organisation(conn, org)?;
    match actor {
        Actor::User {
            role: Role::Admin,
            organisation_id,
            ..
        } if *organisation_id != found.id => Err(not_found(format!("no organisation {org:?}"))),
        _ => Ok(found),
    }
}

/// Finds a unit of the organisation by id, name or code.
pub fn find_unit(conn: &mut DbConnection, org: &Organisation, wanted: &str) -> Result<Unit, AdminError> {
    unit::find_in_organisation(conn, &org.id, wanted)?
        .ok_or_else(|| not_found(format!("no unit {wanted:?} in organisation {:?}", org.name)))
}

/// Finds a user of the organisation by username (compared by [`name_key`]).
pub fn find_user(conn: &mut DbConnection, org: &Organisation, username: &str) -> Result<User, AdminError> {
    user::find_by_username(conn, &org.id, username)?
        .ok_or_else(|| not_found(format!("no user {username:?} in organisation {:?}", org.name)))
}

/// Creates an organisation.
pub fn add_organisation(
    conn: &mut DbConnection,
    actor: &Actor,
    name: &str,
    now: i64,
) -> Result<Organisation, AdminError> {
    check_name("organisation name", name)?;
    if actor.role() != Role::Operator {
        return Err(AdminError::Forbidden(
            "only an operator creates organisations".to_owned(),
        ));
    }
    let org = Organisation {
        id: new_id(),
        name: name.to_owned(),
        name_key: name_key(name),
        is_active: true,
        created_at: now,
    };
    let event = (Event::OrganisationCreate, "organisation created");
    let create = |conn: &mut DbConnection| {
        organisation::create(conn, &org).map_err(|e| match e {
            e if is_unique_violation(&e) => conflict(format!("organisation {name:?} already exists")),
            e => e.into(),
        })
    };
    audited(conn, actor, event, &Subject::of(&org), now, create, |_| None)?;
    Ok(org)
}

/// Creates a unit in an organisation.
pub fn add_unit(
    conn: &mut DbConnection,
    actor: &Actor,
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
    let subject = Subject {
        unit: Some(&unit.name),
        ..Subject::of(org)
    };
    let create = |conn: &mut DbConnection| {
        unit::create(conn, &unit).map_err(|e| match e {
            e if is_unique_violation(&e) => conflict(match code {
                Some(code) => format!(
                    "a unit named {name:?} or coded {code:?} already exists in {:?}",
                    org.name
                ),
                None => format!("a unit named {name:?} already exists in {:?}", org.name),
            }),
            e => e.into(),
        })
    };
    let event = (Event::UnitCreate, "unit created");
    audited(conn, actor, event, &subject, now, create, |_| None)?;
    Ok(unit)
}

/// What a new user is made of.
#[derive(Clone, Default)]
pub struct NewUser<'a> {
    /// Its username, unique in the organisation.
    pub username: &'a str,
    /// Its units (id, name or code); at least one.
    pub units: &'a [String],
    /// Its default unit, one of `units`; `None`: the first.
    pub default_unit: Option<&'a str>,
    /// Its password's Argon2id PHC string; `None`: the user can only use keys.
    pub password_hash: Option<String>,
    /// Its role.
    pub role: Role,
}

impl fmt::Debug for NewUser<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("units", &self.units)
            .field("default_unit", &self.default_unit)
            .field("has_password", &self.password_hash.is_some())
            .field("role", &self.role)
            .finish()
    }
}

/// Creates a user in the given units; the default is `default_unit`, else the first.
pub fn add_user(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    new: NewUser<'_>,
    now: i64,
) -> Result<User, AdminError> {
    let NewUser {
        username,
        units,
        default_unit,
        password_hash,
        role,
    } = new;
    check_name("username", username)?;
    authorise(actor, None, Some(role))?;
    let (unit_ids, default_id) = resolve_units(conn, org, units, default_unit)?;
    let user = User {
        id: new_id(),
        organisation_id: org.id.clone(),
        username: username.to_owned(),
        username_key: name_key(username),
        password_hash,
        is_active: true,
        created_at: now,
        role,
    };
    let subject = Subject {
        username: Some(&user.username),
        role: Some(role),
        ..Subject::of(org)
    };
    let create = |conn: &mut DbConnection| {
        user::create(conn, &user, &unit_ids, &default_id).map_err(|e| match e {
            e if is_unique_violation(&e) => {
                conflict(format!("user {username:?} already exists in {:?}", org.name))
            }
            e => e.into(),
        })
    };
    let event = (Event::UserCreate, "user created");
    audited(conn, actor, event, &subject, now, create, |_| None)?;
    Ok(user)
}

/// The ids of `units` (each an id, name or code, duplicates dropped) and of the default among them:
/// `default_unit`, else the first.
fn resolve_units(
    conn: &mut DbConnection,
    org: &Organisation,
    units: &[String],
    default_unit: Option<&str>,
) -> Result<(Vec<String>, String), AdminError> {
    let mut unit_ids: Vec<String> = Vec::with_capacity(units.len());
    for wanted in units {
        let id = find_unit(conn, org, wanted)?.id;
        if !unit_ids.contains(&id) {
            unit_ids.push(id);
        }
    }
    let Some(first) = unit_ids.first().cloned() else {
        return Err(invalid("a user needs at least one --unit"));
    };
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
        None => first,
    };
    Ok((unit_ids, default_id))
}

/// Replaces a user's units (each an id, name or code; the default is `default_unit`, else the first); the
/// user's live sessions in units it leaves end before this returns. Returns the sessions ended.
pub fn set_units(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    user: &User,
    (units, default_unit): (&[String], Option<&str>),
    now: i64,
) -> Result<usize, AdminError> {
    authorise(actor, Some(user), None)?;
    let (unit_ids, default_id) = resolve_units(conn, org, units, default_unit)?;
    let subject = Subject {
        username: Some(&user.username),
        ..Subject::of(org)
    };
    let set = |conn: &mut DbConnection| {
        Ok(user::update_memberships(
            conn,
            &user.id,
            &unit_ids,
            &default_id,
            now,
        )?)
    };
    let event = (Event::UserUpdate, "units set");
    audited(conn, actor, event, &subject, now, set, |ended| Some(*ended))
}

/// Sets a user's password hash.
pub fn set_password(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    user: &User,
    hash: &str,
    now: i64,
) -> Result<(), AdminError> {
    authorise(actor, Some(user), None)?;
    let subject = Subject {
        username: Some(&user.username),
        ..Subject::of(org)
    };
    let set = |conn: &mut DbConnection| Ok(user::update_password(conn, &user.id, hash)?);
    let event = (Event::UserUpdate, "password set");
    audited(conn, actor, event, &subject, now, set, |_| None)?;
    Ok(())
}

/// Sets a user's role (an `admin` neither grants `operator` nor changes an operator).
pub fn set_role(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    user: &User,
    role: Role,
    now: i64,
) -> Result<(), AdminError> {
    authorise(actor, Some(user), Some(role))?;
    let subject = Subject {
        username: Some(&user.username),
        role: Some(role),
        ..Subject::of(org)
    };
    let set = |conn: &mut DbConnection| Ok(user::update_role(conn, &user.id, role)?);
    let event = (Event::UserUpdate, "role set");
    audited(conn, actor, event, &subject, now, set, |_| None)?;
    Ok(())
}

/// Enables or disables a user; disabling ends its live sessions before this returns. Returns the sessions
/// ended.
pub fn set_user_active(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    user: &User,
    active: bool,
    now: i64,
) -> Result<usize, AdminError> {
    authorise(actor, Some(user), None)?;
    let subject = Subject {
        username: Some(&user.username),
        ..Subject::of(org)
    };
    let events = [Event::UserEnable, Event::UserDisable];
    set_active(
        conn,
        actor,
        Owner::User(&user.id),
        active,
        now,
        (events, &subject),
    )
}

/// Enables or disables an organisation (all its users); disabling ends their live sessions before this
/// returns. Returns the sessions ended.
pub fn set_organisation_active(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    active: bool,
    now: i64,
) -> Result<usize, AdminError> {
    if actor.role() != Role::Operator {
        return Err(AdminError::Forbidden(
            "only an operator disables or enables organisations".to_owned(),
        ));
    }
    let events = [Event::OrganisationEnable, Event::OrganisationDisable];
    let subject = Subject::of(org);
    set_active(
        conn,
        actor,
        Owner::Organisation(&org.id),
        active,
        now,
        (events, &subject),
    )
}

/// Enables or disables a unit; disabling ends the live sessions logged into it before this returns. Returns
/// the sessions ended.
pub fn set_unit_active(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    unit: &Unit,
    active: bool,
    now: i64,
) -> Result<usize, AdminError> {
    let subject = Subject {
        unit: Some(&unit.name),
        ..Subject::of(org)
    };
    let events = [Event::UnitEnable, Event::UnitDisable];
    set_active(
        conn,
        actor,
        Owner::Unit(&unit.id),
        active,
        now,
        (events, &subject),
    )
}

/// Enables or disables a user, an organisation or a unit, audited as one of `events` (enable, disable);
/// disabling also ends the owner's live sessions. Returns the sessions ended. The owner's row is updated (so
/// locked) before its sessions are ended, in one transaction: a login's post-insert re-check waits for that
/// lock (see `db::session::lock_standing`).
fn set_active(
    conn: &mut DbConnection,
    actor: &Actor,
    owner: Owner<'_>,
    active: bool,
    now: i64,
    (events, subject): ([Event; 2], &Subject<'_>),
) -> Result<usize, AdminError> {
    type Update = fn(&mut DbConnection, &str, bool) -> diesel::QueryResult<usize>;
    let (update, id, reason): (Update, _, _) = match owner {
        Owner::User(id) => (user::update_active, id, EndReason::UserDisabled),
        Owner::Organisation(id) => (organisation::update_active, id, EndReason::OrganisationDisabled),
        Owner::Unit(id) => (unit::update_active, id, EndReason::UnitDisabled),
        Owner::Key(_) => return Err(invalid("a key is revoked, not disabled")),
    };
    let change = |conn: &mut DbConnection| {
        update(conn, id, active)?;
        if active {
            Ok(0)
        } else {
            Ok(session::update_end_for(conn, owner, now, reason)?)
        }
    };
    if active {
        audited(conn, actor, (events[0], "enabled"), subject, now, change, |_| {
            None
        })
    } else {
        audited(
            conn,
            actor,
            (events[1], "disabled"),
            subject,
            now,
            change,
            |ended| Some(*ended),
        )
    }
}

/// Creates a Web API key for a user, optionally named and expiring at `expires_at` (unix seconds, after
/// `now`); the key itself is returned once and never stored.
pub fn create_key(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    user: &User,
    (name, expires_at): (Option<&str>, Option<i64>),
    now: i64,
) -> Result<(ApiKeyRow, ApiKey), AdminError> {
    if let Some(name) = name {
        check_name("key name", name)?;
    }
    if let Some(at) = expires_at.filter(|&at| at <= now) {
        return Err(invalid(format!(
            "the expiry {at} is not in the future (now is {now})"
        )));
    }
    authorise(actor, Some(user), None)?;
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
        name: name.map(str::to_owned),
        expires_at,
    };
    let subject = Subject {
        username: Some(&user.username),
        key_id: Some(&row.id),
        ..Subject::of(org)
    };
    let create = |conn: &mut DbConnection| Ok(api_key::create(conn, &row)?);
    let event = (Event::KeyCreate, "key created");
    audited(conn, actor, event, &subject, now, create, |_| None)?;
    Ok((row, key))
}

/// Revokes a key of the organisation and ends the sessions it opened before this returns. Returns the
/// sessions ended.
pub fn revoke_key(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    key_id: &str,
    now: i64,
) -> Result<usize, AdminError> {
    let key = api_key::find_by_id(conn, key_id)?
        .filter(|k| k.organisation_id == org.id)
        .ok_or_else(|| not_found(format!("no key {key_id:?} in organisation {:?}", org.name)))?;
    let owner = user::find_by_id(conn, &key.user_id)?;
    authorise(actor, owner.as_ref(), None)?;
    let subject = Subject {
        key_id: Some(&key.id),
        ..Subject::of(org)
    };
    let revoke = |conn: &mut DbConnection| {
        api_key::update_revoked(conn, &key.id, now)?;
        Ok(session::update_end_for(
            conn,
            Owner::Key(&key.id),
            now,
            EndReason::KeyRevoked,
        )?)
    };
    let event = (Event::KeyRevoke, "key revoked");
    audited(conn, actor, event, &subject, now, revoke, |ended| Some(*ended))
}

/// Ends a session by id; with `org`, only a session of that organisation (another's is not found). An
/// `admin` may not end an operator's session, as it may not end all of them ([`end_user_sessions`]).
/// Returns whether it was live.
pub fn revoke_session(
    conn: &mut DbConnection,
    actor: &Actor,
    org: Option<&Organisation>,
    jti: &str,
    now: i64,
) -> Result<bool, AdminError> {
    let found = session::find_by_id(conn, jti)?
        .filter(|s| org.is_none_or(|org| org.id == s.organisation_id))
        .ok_or_else(|| not_found(format!("no session {jti:?}")))?;
    let owner = user::find_by_id(conn, &found.user_id)?;
    authorise(actor, owner.as_ref(), None)?;
    let subject = Subject {
        organisation_id: Some(&found.organisation_id),
        organisation: Some(&found.organisation_name),
        session: Some(&found.id),
        ..Subject::default()
    };
    let end = |conn: &mut DbConnection| Ok(session::update_end(conn, &found.id, now, EndReason::Revoked)?);
    let event = (Event::SessionRevoke, "session revoked");
    audited(conn, actor, event, &subject, now, end, |&was_live| {
        Some(usize::from(was_live))
    })
}

/// Ends every live session of a user before this returns. Returns the sessions ended.
pub fn end_user_sessions(
    conn: &mut DbConnection,
    actor: &Actor,
    org: &Organisation,
    user: &User,
    now: i64,
) -> Result<usize, AdminError> {
    authorise(actor, Some(user), None)?;
    let subject = Subject {
        username: Some(&user.username),
        ..Subject::of(org)
    };
    let end = |conn: &mut DbConnection| {
        Ok(session::update_end_for(
            conn,
            Owner::User(&user.id),
            now,
            EndReason::Revoked,
        )?)
    };
    let event = (Event::SessionRevoke, "sessions revoked");
    audited(conn, actor, event, &subject, now, end, |ended| Some(*ended))
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
    /// Give it the new password, enable it, make it an operator and replace its keys (`crm-auth demo`).
    Reset,
    /// Leave its password, keys and state alone, only making it an operator if it is not
    /// (`serve --demo`, which runs at every start).
    Keep,
}

/// Idempotently creates organisation `demo`, unit `HQ` and user `admin` (an `operator`), gives a new user
/// (or, with [`ExistingDemoUser::Reset`], an existing one) a password and its hash from `new_password` and a
/// fresh key (older demo keys are revoked). `new_password` runs only when a password is needed: hashing costs
/// a start-up of `serve --demo` nothing once the demo user exists. Each change it makes is audited as the
/// change it is (`organisation.create`, `user.update`, `key.revoke`, ...), so the audit keeps one vocabulary.
pub fn demo<E: From<AdminError>>(
    conn: &mut DbConnection,
    actor: &Actor,
    new_password: impl FnOnce() -> Result<(String, String), E>,
    existing: ExistingDemoUser,
    now: i64,
) -> Result<Demo, E> {
    let org = match organisation::find_by_name(conn, "demo").map_err(AdminError::from)? {
        Some(org) => org,
        None => add_organisation(conn, actor, "demo", now)?,
    };
    let unit = match unit::find_in_organisation(conn, &org.id, "HQ").map_err(AdminError::from)? {
        Some(unit) => unit,
        None => add_unit(conn, actor, &org, "HQ", Some("HQ"), now)?,
    };
    let (user, password) = match user::find_by_username(conn, &org.id, "admin").map_err(AdminError::from)? {
        Some(user) if existing == ExistingDemoUser::Keep => {
            // A demo user from before roles existed became a member; the demo user is an operator.
            if user.role != Role::Operator {
                set_role(conn, actor, &org, &user, Role::Operator, now)?;
            }
            return Ok(Demo {
                organisation: org.name,
                unit: unit.name,
                username: user.username,
                credentials: None,
            });
        }
        Some(user) => {
            let (password, hash) = new_password()?;
            set_password(conn, actor, &org, &user, &hash, now)?;
            if !user.is_active {
                set_user_active(conn, actor, &org, &user, true, now)?;
            }
            if user.role != Role::Operator {
                set_role(conn, actor, &org, &user, Role::Operator, now)?;
            }
            (user, password)
        }
        None => {
            let (password, hash) = new_password()?;
            let new = NewUser {
                username: "admin",
                units: std::slice::from_ref(&unit.id),
                default_unit: None,
                password_hash: Some(hash),
                role: Role::Operator,
            };
            (add_user(conn, actor, &org, new, now)?, password)
        }
    };
    for old in api_key::find_by_organisation(conn, &org.id).map_err(AdminError::from)? {
        if old.user_id == user.id && old.revoked_at.is_none() {
            revoke_key(conn, actor, &org, &old.id, now)?;
        }
    }
    let (_, key) = create_key(conn, actor, &org, &user, (None, None), now)?;
    Ok(Demo {
        organisation: org.name,
        unit: unit.name,
        username: user.username,
        credentials: Some((password, key)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_neither_grants_operator_nor_changes_an_operator() {
        use Role::{Admin, Member, Operator};
        for role in Role::ALL {
            assert!(may_change(Operator, role) && may_grant(Operator, role));
            assert!(!may_change(Member, role) && !may_grant(Member, role));
        }
        assert!(may_change(Admin, Member) && may_change(Admin, Admin));
        assert!(!may_change(Admin, Operator));
        assert!(may_grant(Admin, Member) && may_grant(Admin, Admin));
        assert!(!may_grant(Admin, Operator));
    }

    #[test]
    fn authorise_answers_forbidden_naming_the_rule() {
        let admin = Actor::User {
            username: "ann".into(),
            organisation: "Acme".into(),
            organisation_id: new_id(),
            role: Role::Admin,
            client: None,
        };
        let operator = User {
            id: new_id(),
            organisation_id: new_id(),
            username: "olga".into(),
            username_key: "olga".into(),
            password_hash: None,
            is_active: true,
            created_at: 0,
            role: Role::Operator,
        };
        let member = User {
            role: Role::Member,
            ..operator.clone()
        };
        assert!(matches!(
            authorise(&admin, Some(&operator), None),
            Err(AdminError::Forbidden(m)) if m.contains("operator")
        ));
        assert!(matches!(
            authorise(&admin, Some(&member), Some(Role::Operator)),
            Err(AdminError::Forbidden(_))
        ));
        assert!(authorise(&admin, Some(&member), Some(Role::Admin)).is_ok());
        assert!(authorise(&Actor::Cli, Some(&operator), Some(Role::Operator)).is_ok());
    }

    #[test]
    fn actors_are_named_as_the_audit_names_them() {
        assert_eq!(Actor::Cli.to_string(), "cli");
        let caller = Actor::User {
            username: "ann".into(),
            organisation: "Acme".into(),
            organisation_id: new_id(),
            role: Role::Admin,
            client: Some(IpAddr::from([192, 0, 2, 1])),
        };
        assert_eq!(caller.to_string(), "ann@Acme");
        assert_eq!(caller.client(), Some(IpAddr::from([192, 0, 2, 1])));
    }
}
