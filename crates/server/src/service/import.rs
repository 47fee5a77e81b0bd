//! The import: organisations, units, users and Web API keys from NDJSON, one JSON object per line, as
//! `crm-auth import FILE` and `POST /admin/v1/import` both run it (see [`run`]).
//!
//! Three steps, so that nothing is written unless the whole file holds:
//!
//! 1. `parse`: every line read with core's [`ImportLine`] rules and checked on its own (names by
//!    `check_name`, hashes by [`foreign::check`], a key not twice in the file).
//! 2. `prepare_passwords`: clear passwords hashed on the hashing pool (a new user's) or checked against the
//!    stored hash (an existing user's), before any transaction, so no write lock waits on Argon2.
//! 3. `apply`, in one transaction: every reference resolved against the file and the database, every line
//!    that exists compared with what is stored (equal: `unchanged`; different: a conflict naming the line),
//!    then everything new written with multi-row inserts and one `import` audit row.
//!
//! An error names its line and field and leaves the database as it was; a dry run does all of it but the
//! writes.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crm_auth_core::admin::{ImportCounts, ImportLine, ImportPassword, ImportReport, ImportUser};
use crm_auth_core::{ApiKey, Role, digest_key, is_id, new_id};
use diesel::Connection as _;

use crate::db::api_key::{self, ApiKeyRow};
use crate::db::organisation::{self, Organisation};
use crate::db::unit::{self, Unit};
use crate::db::user::{self, Membership, User};
use crate::db::{self, DbConnection, name_key};
use crate::logging::{self, Event};
use crate::password::{HashError, PasswordHasher, foreign};
use crate::service::admin::{Actor, check_name, record_row};

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line is malformed, breaks a naming rule, repeats another line, or names what neither the file nor
    /// the database has (`INVALID_REQUEST`). The message begins with the field.
    #[error("line {line}: {message}")]
    Invalid {
        /// The line's number, from 1.
        line: usize,
        /// The field and what is wrong with it.
        message: String,
    },
    /// A line disagrees with what is stored: another unit list, hash, role, code, owner of a key
    /// (`CONFLICT`). The message begins with the field.
    #[error("line {line}: {message}")]
    Conflict {
        /// The line's number, from 1.
        line: usize,
        /// The field and what is stored instead.
        message: String,
    },
    /// The file holds no line but blank ones.
    #[error("the file holds no line")]
    Empty,
    /// The actor is not an operator.
    #[error("only an operator imports")]
    Forbidden,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] diesel::result::Error),
    /// The hashing pool failed.
    #[error(transparent)]
    Hash(#[from] HashError),
}

impl ImportError {
    /// The number of the line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ImportError::Invalid { line, .. } | ImportError::Conflict { line, .. } => Some(*line),
            _ => None,
        }
    }
}

fn invalid(line: usize, message: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        line,
        message: message.into(),
    }
}

fn conflict(line: usize, message: impl Into<String>) -> ImportError {
    ImportError::Conflict {
        line,
        message: message.into(),
    }
}

/// Imports `body` (NDJSON) as `actor`, an operator: parses and checks every line, prepares the clear passwords
/// on `hasher`'s threads, then resolves, compares and writes in one transaction (none on a dry run). Runs on a
/// blocking thread or the command line, never on an async worker; `conn` must not be in a transaction.
pub fn run(
    conn: &mut DbConnection,
    hasher: &PasswordHasher,
    actor: &Actor,
    body: &[u8],
    dry_run: bool,
    now: i64,
) -> Result<ImportReport, ImportError> {
    if actor.role() != Role::Operator {
        return Err(ImportError::Forbidden);
    }
    let plan = parse(body)?;
    let passwords = prepare_passwords(conn, hasher, &plan, dry_run)?;
    let (report, audit) = if dry_run {
        conn.transaction(|conn| apply(conn, actor, &plan, &passwords, dry_run, now))?
    } else {
        db::write_transaction(conn, |conn| apply(conn, actor, &plan, &passwords, dry_run, now))?
    };
    if !dry_run {
        log_import(actor, &report, &audit);
    }
    Ok(report)
}

/// A file whose lines have each been read and checked, by kind, in file order.
#[derive(Debug, Default)]
struct Plan {
    organisations: Vec<OrgLine>,
    units: Vec<UnitLine>,
    users: Vec<UserLine>,
    keys: Vec<KeyLine>,
}

#[derive(Debug)]
struct OrgLine {
    line: usize,
    name: String,
}

#[derive(Debug)]
struct UnitLine {
    line: usize,
    organisation: String,
    name: String,
    code: Option<String>,
}

#[derive(Debug)]
struct UserLine {
    line: usize,
    user: ImportUser,
}

/// A key line; the key itself is kept only as its digest and display prefix.
#[derive(Debug)]
struct KeyLine {
    line: usize,
    organisation: String,
    username: String,
    digest: String,
    prefix: String,
    name: Option<String>,
}

/// Reads every line: blank lines are skipped (still counted), a UTF-8 byte order mark and `\r\n` ends are
/// accepted. Checks what one line shows by itself: its fields, the naming rules of new names, the hash's
/// scheme and costs, and that no key appears twice.
fn parse(body: &[u8]) -> Result<Plan, ImportError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut plan = Plan::default();
    let mut digests: HashMap<String, usize> = HashMap::new();
    let mut lines = 0;
    for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        lines += 1;
        let named = |e: crate::service::admin::AdminError| invalid(line, e.to_string());
        match ImportLine::from_json(raw).map_err(|e| invalid(line, e.into_message()))? {
            ImportLine::Organisation { name } => {
                check_name("name", &name).map_err(named)?;
                plan.organisations.push(OrgLine { line, name });
            }
            ImportLine::Unit {
                organisation,
                name,
                code,
            } => {
                check_name("name", &name).map_err(named)?;
                if let Some(code) = &code {
                    check_name("code", code).map_err(named)?;
                }
                plan.units.push(UnitLine {
                    line,
                    organisation,
                    name,
                    code,
                });
            }
            ImportLine::User(user) => {
                check_name("username", &user.username).map_err(named)?;
                if let Some(ImportPassword::Hash(hash)) = &user.password {
                    foreign::check(hash).map_err(|e| invalid(line, format!("password_hash: {e}")))?;
                }
                plan.users.push(UserLine { line, user });
            }
            ImportLine::WebApiKey(key) => {
                if let Some(name) = &key.name {
                    check_name("name", name).map_err(named)?;
                }
                let digest = digest_key(&key.key);
                if let Some(first) = digests.insert(digest.clone(), line) {
                    return Err(invalid(line, format!("key: the same key is on line {first}")));
                }
                plan.keys.push(KeyLine {
                    line,
                    organisation: key.organisation,
                    username: key.username,
                    prefix: ApiKey::new(key.key).prefix(),
                    digest,
                    name: key.name,
                });
            }
        }
    }
    if lines == 0 {
        return Err(ImportError::Empty);
    }
    Ok(plan)
}

/// What step 2 made of a clear password, by line.
enum Prepared {
    /// A new user's password, hashed.
    Hashed(String),
    /// A new user's password on a dry run: not hashed, as nothing is written.
    Unhashed,
    /// The existing user's stored hash, which the password matches.
    Matches(String),
    /// The existing user has no password, or another one.
    Differs,
}

/// The clear passwords of a plan as step 2 prepared them, by line. `Debug` shows no hash.
struct Passwords(HashMap<usize, Prepared>);

impl fmt::Debug for Passwords {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Passwords({} lines)", self.0.len())
    }
}

/// Hashes the clear passwords of new users (not on a dry run) and checks those of existing users against
/// their stored hashes, all on the hashing pool, outside any transaction. Step 3 compares each stored hash
/// again, so a password changed in between is a conflict, never overwritten.
fn prepare_passwords(
    conn: &mut DbConnection,
    hasher: &PasswordHasher,
    plan: &Plan,
    dry_run: bool,
) -> Result<Passwords, ImportError> {
    let mut prepared = HashMap::new();
    let mut to_hash = Vec::new();
    let mut to_verify = Vec::new();
    let mut organisations: HashMap<String, Option<Organisation>> = HashMap::new();
    for UserLine { line, user } in &plan.users {
        let Some(ImportPassword::Clear(password)) = &user.password else {
            continue;
        };
        let org = match organisations.get(&user.organisation) {
            Some(org) => org.clone(),
            None => {
                let found = organisation::find_by_id_or_name(conn, &user.organisation)?;
                organisations.insert(user.organisation.clone(), found.clone());
                found
            }
        };
        let existing = match &org {
            Some(org) => user::find_by_username(conn, &org.id, &user.username)?,
            None => None,
        };
        match existing.map(|u| u.password_hash) {
            Some(Some(stored)) => to_verify.push((*line, password.clone(), stored)),
            Some(None) => {
                prepared.insert(*line, Prepared::Differs);
            }
            None if dry_run => {
                prepared.insert(*line, Prepared::Unhashed);
            }
            None => to_hash.push((*line, password.clone())),
        }
    }
    let (lines, passwords): (Vec<usize>, Vec<String>) = to_hash.into_iter().unzip();
    for (line, hash) in lines.into_iter().zip(hasher.hash_all_blocking(passwords)?) {
        prepared.insert(line, Prepared::Hashed(hash));
    }
    let pairs = to_verify
        .iter()
        .map(|(_, password, stored)| (password.clone(), stored.clone()))
        .collect();
    for ((line, _, stored), matches) in to_verify.into_iter().zip(hasher.verify_all_blocking(pairs)?) {
        prepared.insert(
            line,
            if matches {
                Prepared::Matches(stored)
            } else {
                Prepared::Differs
            },
        );
    }
    Ok(Passwords(prepared))
}

/// An organisation the file names: from the database, or new from the file's line `line`.
#[derive(Debug, Clone)]
struct Org {
    id: String,
    name: String,
    line: Option<usize>,
}

/// A unit as references find it: from the database, or new from the file's line `line`.
#[derive(Debug, Clone)]
struct UnitRef {
    id: String,
    name: String,
    code_key: Option<String>,
    line: Option<usize>,
}

/// The units of one organisation, by id, name key and code key.
#[derive(Debug, Default)]
struct Units {
    by_id: HashMap<String, UnitRef>,
    by_name: HashMap<String, UnitRef>,
    by_code: HashMap<String, UnitRef>,
}

impl Units {
    fn add(&mut self, unit: UnitRef, name_key: String) {
        if let Some(code) = &unit.code_key {
            self.by_code.insert(code.clone(), unit.clone());
        }
        self.by_name.insert(name_key, unit.clone());
        self.by_id.insert(unit.id.clone(), unit);
    }

    /// A unit reference as logins resolve it: an id (of a stored unit), else a name, else a code.
    fn find(&self, wanted: &str) -> Option<&UnitRef> {
        let key = name_key(wanted);
        self.by_id
            .get(wanted)
            .or_else(|| self.by_name.get(&key))
            .or_else(|| self.by_code.get(&key))
    }
}

/// What the audit row and record of an import name.
#[derive(Debug)]
struct Audited {
    /// The organisation, when the file concerns exactly one.
    organisation: Option<(String, String)>,
    /// How many organisations the file concerns.
    organisations: usize,
}

/// Step 3, inside the caller's transaction: resolves, compares and (unless `dry_run`) writes.
fn apply(
    conn: &mut DbConnection,
    actor: &Actor,
    plan: &Plan,
    passwords: &Passwords,
    dry_run: bool,
    now: i64,
) -> Result<(ImportReport, Audited), ImportError> {
    let mut created = ImportCounts::default();
    let mut unchanged = 0u64;
    let mut concerned: HashSet<String> = HashSet::new();

    // Organisations.
    let references: Vec<&str> = (plan.units.iter().map(|u| u.organisation.as_str()))
        .chain(plan.users.iter().map(|u| u.user.organisation.as_str()))
        .chain(plan.keys.iter().map(|k| k.organisation.as_str()))
        .collect();
    let ids: Vec<String> = references
        .iter()
        .filter(|r| is_id(r))
        .map(|r| (*r).to_owned())
        .collect();
    let keys: Vec<String> = references
        .iter()
        .copied()
        .chain(plan.organisations.iter().map(|o| o.name.as_str()))
        .map(name_key)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut orgs_by_id: HashMap<String, Org> = HashMap::new();
    let mut orgs_by_key: HashMap<String, Org> = HashMap::new();
    for found in organisation::find_by_ids_or_keys(conn, &ids, &keys)? {
        let org = Org {
            id: found.id.clone(),
            name: found.name,
            line: None,
        };
        orgs_by_key.insert(found.name_key, org.clone());
        orgs_by_id.insert(found.id, org);
    }
    let mut new_orgs = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for OrgLine { line, name } in &plan.organisations {
        let key = name_key(name);
        if let Some(first) = seen.insert(key.clone(), *line) {
            return Err(invalid(
                *line,
                format!("name: organisation {name:?} is already on line {first}"),
            ));
        }
        match orgs_by_key.get(&key) {
            Some(existing) => {
                concerned.insert(existing.id.clone());
                unchanged += 1;
            }
            None => {
                let org = Organisation {
                    id: new_id(),
                    name: name.clone(),
                    name_key: key.clone(),
                    is_active: true,
                    created_at: now,
                };
                let found = Org {
                    id: org.id.clone(),
                    name: org.name.clone(),
                    line: Some(*line),
                };
                concerned.insert(org.id.clone());
                orgs_by_id.insert(org.id.clone(), found.clone());
                orgs_by_key.insert(key, found);
                new_orgs.push(org);
                created.organisations += 1;
            }
        }
    }
    let resolve_org = |line: usize, wanted: &str| -> Result<Org, ImportError> {
        orgs_by_id
            .get(wanted)
            .filter(|org| org.line.is_none())
            .or_else(|| orgs_by_key.get(&name_key(wanted)))
            .cloned()
            .ok_or_else(|| {
                invalid(
                    line,
                    format!("organisation: no organisation {wanted:?} in the file or the database"),
                )
            })
    };

    // Units: those stored in the organisations the file names, then the file's.
    let mut stored_orgs: HashSet<String> = HashSet::new();
    for (line, wanted) in (plan.units.iter().map(|u| (u.line, u.organisation.as_str())))
        .chain(plan.users.iter().map(|u| (u.line, u.user.organisation.as_str())))
        .chain(plan.keys.iter().map(|k| (k.line, k.organisation.as_str())))
    {
        let org = resolve_org(line, wanted)?;
        concerned.insert(org.id.clone());
        if org.line.is_none() {
            stored_orgs.insert(org.id);
        }
    }
    let stored_orgs: Vec<String> = stored_orgs.into_iter().collect();
    let mut units: HashMap<String, Units> = HashMap::new();
    for found in unit::find_in_organisations(conn, &stored_orgs)? {
        let unit = UnitRef {
            id: found.id,
            name: found.name,
            code_key: found.code_key,
            line: None,
        };
        units
            .entry(found.organisation_id)
            .or_default()
            .add(unit, found.name_key);
    }
    let mut new_units = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for UnitLine {
        line,
        organisation: wanted,
        name,
        code,
    } in &plan.units
    {
        let org = resolve_org(*line, wanted)?;
        let of_org = units.entry(org.id.clone()).or_default();
        let (key, code_key) = (name_key(name), code.as_deref().map(name_key));
        if let Some(first) = seen.insert((org.id.clone(), key.clone()), *line) {
            return Err(invalid(
                *line,
                format!(
                    "name: unit {name:?} of organisation {:?} is already on line {first}",
                    org.name
                ),
            ));
        }
        if let Some(existing) = of_org.by_name.get(&key) {
            match existing.line {
                Some(first) => {
                    return Err(invalid(
                        *line,
                        format!("name: unit {name:?} is already on line {first}"),
                    ));
                }
                None if existing.code_key == code_key => {
                    unchanged += 1;
                    continue;
                }
                None => {
                    return Err(conflict(
                        *line,
                        format!(
                            "code: unit {:?} of organisation {:?} exists with another code",
                            existing.name, org.name
                        ),
                    ));
                }
            }
        }
        if let Some(existing) = code_key.as_ref().and_then(|c| of_org.by_code.get(c)) {
            let code = code.as_deref().unwrap_or_default();
            return Err(match existing.line {
                Some(first) => invalid(
                    *line,
                    format!("code: {code:?} is the code of the unit on line {first}"),
                ),
                None => conflict(
                    *line,
                    format!(
                        "code: {code:?} is the code of the unit {:?} of organisation {:?}",
                        existing.name, org.name
                    ),
                ),
            });
        }
        let unit = Unit {
            id: new_id(),
            organisation_id: org.id.clone(),
            name: name.clone(),
            name_key: key.clone(),
            code: code.clone(),
            code_key: code_key.clone(),
            is_active: true,
            created_at: now,
        };
        let found = UnitRef {
            id: unit.id.clone(),
            name: unit.name.clone(),
            code_key,
            line: Some(*line),
        };
        of_org.add(found, key);
        new_units.push(unit);
        created.units += 1;
    }

    // Users: those the user and key lines name that are stored, then the file's.
    let mut wanted_users: HashMap<String, HashSet<String>> = HashMap::new();
    for (line, org, username) in (plan
        .users
        .iter()
        .map(|u| (u.line, u.user.organisation.as_str(), u.user.username.as_str())))
    .chain(
        plan.keys
            .iter()
            .map(|k| (k.line, k.organisation.as_str(), k.username.as_str())),
    ) {
        let org = resolve_org(line, org)?;
        if org.line.is_none() {
            wanted_users.entry(org.id).or_default().insert(name_key(username));
        }
    }
    let mut stored_users: HashMap<(String, String), User> = HashMap::new();
    for (org_id, keys) in wanted_users {
        let keys: Vec<String> = keys.into_iter().collect();
        for found in user::find_by_keys(conn, &org_id, &keys)? {
            stored_users.insert((org_id.clone(), found.username_key.clone()), found);
        }
    }
    let compared: Vec<String> = plan
        .users
        .iter()
        .filter_map(|u| {
            let org = resolve_org(u.line, &u.user.organisation).ok()?;
            stored_users
                .get(&(org.id, name_key(&u.user.username)))
                .map(|s| s.id.clone())
        })
        .collect();
    let mut memberships: HashMap<String, Vec<Membership>> = HashMap::new();
    for membership in user::find_memberships_of(conn, &compared)? {
        memberships
            .entry(membership.user_id.clone())
            .or_default()
            .push(membership);
    }
    // Every user the file names, stored or new: (organisation id, username key) to the user's id and the line
    // that named it.
    let mut users: HashMap<(String, String), (String, usize)> = HashMap::new();
    let mut new_users = Vec::new();
    let mut new_memberships = Vec::new();
    for UserLine { line, user: wanted } in &plan.users {
        let line = *line;
        let org = resolve_org(line, &wanted.organisation)?;
        let key = (org.id.clone(), name_key(&wanted.username));
        if let Some((_, first)) = users.get(&key) {
            return Err(invalid(
                line,
                format!(
                    "username: user {:?} of organisation {:?} is already on line {first}",
                    wanted.username, org.name
                ),
            ));
        }
        let of_org = units.get(&org.id);
        let find_unit = |field: &str, reference: &str| {
            of_org
                .and_then(|u| u.find(reference))
                .map(|u| u.id.clone())
                .ok_or_else(|| {
                    invalid(
                        line,
                        format!(
                            "{field}: no unit {reference:?} in organisation {:?}, in the file or the database",
                            org.name
                        ),
                    )
                })
        };
        let mut unit_ids: Vec<String> = Vec::with_capacity(wanted.units.len());
        for reference in &wanted.units {
            let id = find_unit("units", reference)?;
            if !unit_ids.contains(&id) {
                unit_ids.push(id);
            }
        }
        let default_id = match &wanted.default_unit {
            Some(reference) => {
                let id = find_unit("default_unit", reference)?;
                if !unit_ids.contains(&id) {
                    return Err(invalid(
                        line,
                        format!("default_unit: {reference:?} is not among units"),
                    ));
                }
                id
            }
            None => unit_ids.first().cloned().unwrap_or_default(),
        };
        if let Some(stored) = stored_users.get(&key) {
            let stored_units = memberships.get(&stored.id).map(Vec::as_slice).unwrap_or_default();
            compare_user(
                line,
                wanted,
                stored,
                stored_units,
                (&unit_ids, &default_id),
                passwords,
            )?;
            users.insert(key, (stored.id.clone(), line));
            unchanged += 1;
            continue;
        }
        let password_hash = match &wanted.password {
            None => None,
            Some(ImportPassword::Hash(hash)) => Some(hash.clone()),
            Some(ImportPassword::Clear(_)) => match passwords.0.get(&line) {
                Some(Prepared::Hashed(hash)) => Some(hash.clone()),
                Some(Prepared::Unhashed) => None,
                _ => {
                    return Err(conflict(
                        line,
                        "password: the user changed while the file was read; import it again",
                    ));
                }
            },
        };
        let row = User {
            id: new_id(),
            organisation_id: org.id.clone(),
            username: wanted.username.clone(),
            username_key: key.1.clone(),
            password_hash,
            is_active: !wanted.disabled,
            created_at: now,
            role: wanted.role,
        };
        new_memberships.extend(unit_ids.iter().map(|unit_id| Membership {
            user_id: row.id.clone(),
            unit_id: unit_id.clone(),
            is_default: *unit_id == default_id,
        }));
        users.insert(key, (row.id.clone(), line));
        new_users.push(row);
        created.users += 1;
    }

    // Keys.
    let digests: Vec<String> = plan.keys.iter().map(|k| k.digest.clone()).collect();
    let stored_keys: HashMap<String, ApiKeyRow> = api_key::find_by_digests(conn, &digests)?
        .into_iter()
        .map(|k| (k.digest.clone(), k))
        .collect();
    let mut new_keys = Vec::new();
    for key in &plan.keys {
        let org = resolve_org(key.line, &key.organisation)?;
        let wanted = (org.id.clone(), name_key(&key.username));
        let user_id = users
            .get(&wanted)
            .map(|(id, _)| id.clone())
            .or_else(|| stored_users.get(&wanted).map(|u| u.id.clone()))
            .ok_or_else(|| {
                invalid(
                    key.line,
                    format!(
                        "username: no user {:?} in organisation {:?}, in the file or the database",
                        key.username, org.name
                    ),
                )
            })?;
        if let Some(stored) = stored_keys.get(&key.digest) {
            let differs = if stored.user_id != user_id {
                Some("key: the key is another user's")
            } else if stored.revoked_at.is_some() {
                Some("key: the key was revoked")
            } else if stored.name != key.name {
                Some("name: the key exists with another name")
            } else {
                None
            };
            match differs {
                Some(message) => return Err(conflict(key.line, message)),
                None => {
                    unchanged += 1;
                    continue;
                }
            }
        }
        new_keys.push(ApiKeyRow {
            id: new_id(),
            organisation_id: org.id.clone(),
            user_id,
            digest: key.digest.clone(),
            prefix: key.prefix.clone(),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
            name: key.name.clone(),
            expires_at: None,
        });
        created.web_api_keys += 1;
    }

    let audited = Audited {
        organisation: match concerned.iter().next() {
            Some(id) if concerned.len() == 1 => orgs_by_id.get(id).map(|o| (o.id.clone(), o.name.clone())),
            _ => None,
        },
        organisations: concerned.len(),
    };
    if !dry_run {
        organisation::create_batch(conn, &new_orgs)?;
        unit::create_batch(conn, &new_units)?;
        user::create_batch(conn, &new_users, &new_memberships)?;
        api_key::create_batch(conn, &new_keys)?;
        let (organisation_id, target) = match &audited.organisation {
            Some((id, name)) => (Some(id.as_str()), name.clone()),
            None => (None, format!("{} organisations", audited.organisations)),
        };
        record_row(conn, actor, Event::Import, organisation_id, &target, now)?;
    }
    let report = ImportReport {
        created,
        unchanged,
        dry_run,
    };
    Ok((report, audited))
}

/// Compares a user line with the stored user it names: equal in role, state, units, default unit and
/// password, or a conflict naming the first field that differs.
fn compare_user(
    line: usize,
    wanted: &ImportUser,
    stored: &User,
    stored_units: &[Membership],
    (unit_ids, default_id): (&[String], &str),
    passwords: &Passwords,
) -> Result<(), ImportError> {
    let exists = |field: &str, what: &str| {
        conflict(
            line,
            format!("{field}: user {:?} exists with {what}", stored.username),
        )
    };
    if stored.role != wanted.role {
        return Err(exists("role", &format!("the role {}", stored.role)));
    }
    if stored.is_active == wanted.disabled {
        let state = if stored.is_active { "enabled" } else { "disabled" };
        return Err(exists("disabled", &format!("the user {state}")));
    }
    let stored_ids: HashSet<&str> = stored_units.iter().map(|m| m.unit_id.as_str()).collect();
    let wanted_ids: HashSet<&str> = unit_ids.iter().map(String::as_str).collect();
    if stored_ids != wanted_ids {
        return Err(exists("units", "other units"));
    }
    let stored_default = stored_units
        .iter()
        .find(|m| m.is_default)
        .map(|m| m.unit_id.as_str());
    if stored_default != Some(default_id) {
        return Err(exists("default_unit", "another default unit"));
    }
    let stored_hash = stored.password_hash.as_deref();
    match &wanted.password {
        None if stored_hash.is_some() => Err(exists("password_hash", "a password, and the line has none")),
        None => Ok(()),
        Some(ImportPassword::Hash(hash)) if stored_hash == Some(hash.as_str()) => Ok(()),
        Some(ImportPassword::Hash(_)) => Err(exists(
            "password_hash",
            "another password hash (a foreign hash is replaced by Argon2id at the user's first login)",
        )),
        Some(ImportPassword::Clear(_)) => match passwords.0.get(&line) {
            Some(Prepared::Matches(seen)) if stored_hash == Some(seen.as_str()) => Ok(()),
            _ => Err(exists("password", "another password")),
        },
    }
}

/// The audit log record of an import that committed.
fn log_import(actor: &Actor, report: &ImportReport, audited: &Audited) {
    let actor_name = actor.to_string();
    let created = report.created;
    log::info!(
        target: logging::AUDIT,
        event = Event::Import,
        actor = actor_name.as_str(),
        organisation = audited.organisation.as_ref().map(|(_, name)| name.as_str()),
        organisations = created.organisations,
        units = created.units,
        users = created.users,
        web_api_keys = created.web_api_keys,
        unchanged = report.unchanged,
        client = actor.client();
        "import"
    );
}
