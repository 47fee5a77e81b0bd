//! The administration API's bodies (`/admin/v1`), shared by the server and the client's admin client.
//!
//! Request bodies are JSON objects whose unknown members are refused (unlike the token endpoints', which
//! ignore them, as CRM.COM's clients send extras); each `from_json` names the first offending field and never
//! echoes a value. Times are unix seconds. No type here holds a password hash; the one that holds a password
//! or a key prints it as `***` in `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{
    DEFAULT_PAGE_ITEMS, MAX_HASH_CHARS, MAX_IMPORTED_KEY_CHARS, MAX_NAME_CHARS, MAX_PAGE_ITEMS,
    MAX_UNITS_PER_USER, MIN_IMPORTED_KEY_CHARS,
};
use crate::request::{
    RequestError, checked_password, json_object, optional_name, query_value, required_name, required_string,
    without_nul,
};
use crate::wire::{AuthMethod, Redacted, Role};

/// An organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Organisation {
    /// 32 upper-case hex digits.
    pub id: String,
    /// Its name, unique (compared case-insensitively).
    pub name: String,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// A unit of an organisation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unit {
    /// 32 upper-case hex digits.
    pub id: String,
    /// Its name, unique in the organisation.
    pub name: String,
    /// Its code, unique in the organisation, if it has one.
    pub code: Option<String>,
}

/// A user of an organisation. Never holds its password or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// 32 upper-case hex digits.
    pub id: String,
    /// The username, unique in the organisation.
    pub username: String,
    /// What the user may do.
    pub role: Role,
    /// Whether the user is disabled (no logins, no live sessions).
    pub disabled: bool,
    /// The units the user may log into.
    pub units: Vec<Unit>,
    /// The id of the unit a login that names none goes to.
    pub default_unit: Option<String>,
    /// Creation time, unix seconds.
    pub created_at: i64,
}

/// A Web API key, without the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Key {
    /// 32 upper-case hex digits; what `DELETE .../keys/{id}` takes.
    pub id: String,
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// The username of its user.
    pub username: String,
    /// When it stops logging in, unix seconds; `None`: never.
    pub expires_at: Option<i64>,
    /// Creation time, unix seconds.
    pub created_at: i64,
    /// Its last login, unix seconds.
    pub last_used_at: Option<i64>,
    /// When it was revoked, unix seconds; revoked keys log in no more.
    pub revoked_at: Option<i64>,
}

/// `data` of a key's creation: the key and, this once, its value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    /// The key.
    #[serde(flatten)]
    pub info: Key,
    /// The key itself: 32 upper-case hex digits, shown only in this answer and stored only as its digest.
    pub key: String,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("info", &self.info)
            .field("key", &Redacted)
            .finish()
    }
}

/// A live session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// The session id, its tokens' `jti`.
    pub id: String,
    /// Its user's username.
    pub username: String,
    /// The name of the unit it is logged into.
    pub unit: String,
    /// How it was authenticated.
    pub method: AuthMethod,
    /// Login time, unix seconds.
    pub created_at: i64,
    /// When its newest token expires, unix seconds.
    pub expires_at: i64,
    /// Its last refresh, unix seconds.
    pub refreshed_at: Option<i64>,
    /// The client address it logged in from.
    pub client: Option<String>,
}

/// One administrative change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// When, unix seconds.
    pub at: i64,
    /// Who: `username@organisation`, or `cli`.
    pub actor: String,
    /// What: `organisation.create`, `unit.create`, `user.create`, `user.update`, `user.disable`,
    /// `user.enable`, `key.create`, `key.revoke`, `session.revoke`, `import`, ...
    pub action: String,
    /// To what: a username, unit name, key id, session id or organisation name.
    pub target: String,
    /// The caller's address, for changes made through the API.
    pub client: Option<String>,
}

/// One page of a list, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `data` of a request that ended sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ended {
    /// How many live sessions ended.
    pub ended: u64,
}

/// `data` of `POST /admin/v1/import`: what the file created, or would create on a dry run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportReport {
    /// How many of each kind the import created.
    pub created: ImportCounts,
    /// How many lines matched what already existed and changed nothing.
    pub unchanged: u64,
    /// Whether this was a dry run, which checked the whole file and wrote nothing.
    pub dry_run: bool,
}

/// How many of each kind an import created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportCounts {
    /// Organisations.
    pub organisations: u64,
    /// Units.
    pub units: u64,
    /// Users.
    pub users: u64,
    /// Web API keys.
    pub web_api_keys: u64,
}

/// Body of `POST /admin/v1/organisations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewOrganisation {
    /// The name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub name: String,
}

/// Body of `POST /admin/v1/organisations/{org}/units`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUnit {
    /// The name.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub name: String,
    /// A code, as CRM.COM's clients may name units by code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub code: Option<String>,
}

/// Body of `POST /admin/v1/organisations/{org}/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// The username.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub username: String,
    /// A password; without one the user logs in only with keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub password: Option<String>,
    /// Its units (ids, names or codes); at least one.
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 256))]
    pub units: Vec<String>,
    /// Its default unit, one of `units`; absent: the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub default_unit: Option<String>,
    /// Its role; absent: `member`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("units", &self.units)
            .field("default_unit", &self.default_unit)
            .field("role", &self.role)
            .finish()
    }
}

/// Body of `PATCH /admin/v1/organisations/{org}/users/{username}`: what to change, at least one field.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    /// A new password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub password: Option<String>,
    /// `true` disables the user and ends its live sessions before the answer; `false` enables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// A new role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Its units from now on (ids, names or codes); sessions in units it leaves end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 256))]
    pub units: Option<Vec<String>>,
    /// Its default unit, one of its units (of `units` if given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub default_unit: Option<String>,
}

impl fmt::Debug for UserChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserChange")
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("disabled", &self.disabled)
            .field("role", &self.role)
            .field("units", &self.units)
            .field("default_unit", &self.default_unit)
            .finish()
    }
}

/// Body of `POST /admin/v1/organisations/{org}/keys`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// The username of the key's user.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub username: String,
    /// A name, to tell keys apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub name: Option<String>,
    /// When the key stops logging in, unix seconds, in the future; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// Refuses a member that is not one of `known`, naming it (cut to its first 64 characters).
fn known_fields(map: &Map<String, Value>, known: &[&str]) -> Result<(), RequestError> {
    match map.keys().find(|field| !known.contains(&field.as_str())) {
        None => Ok(()),
        Some(field) => {
            let shown: String = field.chars().take(64).filter(|c| !c.is_control()).collect();
            Err(RequestError::new(format!("unknown field {shown:?}")))
        }
    }
}

/// A JSON object body with only `known` members; an empty body is an empty object.
fn object_of(body: &[u8], known: &[&str]) -> Result<Map<String, Value>, RequestError> {
    let map = json_object(body)?;
    known_fields(&map, known)?;
    Ok(map)
}

/// An optional role: absent or `null` is `None`.
fn optional_role(map: &Map<String, Value>, field: &str) -> Result<Option<Role>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| RequestError::new(format!("{field} must be member, admin or operator"))),
        Some(_) => Err(RequestError::new(format!("{field} must be a string"))),
    }
}

/// An optional boolean: absent or `null` is `None`.
fn optional_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(RequestError::new(format!("{field} must be true or false"))),
    }
}

/// An optional password: absent or `null` is `None`; otherwise a non-empty string within the limit.
fn optional_password(map: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    match map.get("password") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(RequestError::new("password is empty")),
        Some(Value::String(s)) => checked_password(s.clone()).map(Some),
        Some(_) => Err(RequestError::new("password must be a string")),
    }
}

/// An optional integer: absent or `null` is `None`.
fn optional_integer(map: &Map<String, Value>, field: &str) -> Result<Option<i64>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| RequestError::new(format!("{field} must be a whole number of unix seconds"))),
        Some(_) => Err(RequestError::new(format!(
            "{field} must be a whole number of unix seconds"
        ))),
    }
}

/// An optional list of unit references: absent or `null` is `None`; otherwise 1 to
/// [`MAX_UNITS_PER_USER`] names.
fn optional_units(map: &Map<String, Value>) -> Result<Option<Vec<String>>, RequestError> {
    let list = match map.get("units") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(RequestError::new("units must be a list of unit names")),
    };
    if list.is_empty() {
        return Err(RequestError::new("units is empty"));
    }
    if list.len() > MAX_UNITS_PER_USER {
        return Err(RequestError::new(format!(
            "units has more than {MAX_UNITS_PER_USER} entries"
        )));
    }
    let mut units = Vec::with_capacity(list.len());
    for unit in list {
        match unit {
            Value::String(s) if s.is_empty() => return Err(RequestError::new("units holds an empty name")),
            Value::String(s) if s.chars().count() > MAX_NAME_CHARS => {
                return Err(RequestError::new(format!(
                    "units holds a name longer than {MAX_NAME_CHARS} characters"
                )));
            }
            Value::String(s) => units.push(without_nul("units", s.clone())?),
            _ => return Err(RequestError::new("units must be a list of unit names")),
        }
    }
    Ok(Some(units))
}

impl NewOrganisation {
    /// Reads the body: `name`, a name; nothing else.
    pub fn from_json(body: &[u8]) -> Result<NewOrganisation, RequestError> {
        let map = object_of(body, &["name"])?;
        Ok(NewOrganisation {
            name: required_name(&map, "name")?,
        })
    }
}

impl NewUnit {
    /// Reads the body: `name`, a name, and an optional `code`; nothing else.
    pub fn from_json(body: &[u8]) -> Result<NewUnit, RequestError> {
        let map = object_of(body, &["name", "code"])?;
        Ok(NewUnit {
            name: required_name(&map, "name")?,
            code: optional_name(&map, "code")?,
        })
    }
}

impl NewUser {
    /// Reads the body: `username`, optional `password`, `units` (one or more), optional `default_unit` and
    /// `role`; nothing else.
    pub fn from_json(body: &[u8]) -> Result<NewUser, RequestError> {
        let map = object_of(body, &["username", "password", "units", "default_unit", "role"])?;
        Ok(NewUser {
            username: required_name(&map, "username")?,
            password: optional_password(&map)?,
            units: optional_units(&map)?.ok_or_else(|| RequestError::new("units is missing"))?,
            default_unit: optional_name(&map, "default_unit")?,
            role: optional_role(&map, "role")?,
        })
    }
}

impl UserChange {
    /// Reads the body: any of `password`, `disabled`, `role`, `units`, `default_unit`, at least one;
    /// nothing else.
    pub fn from_json(body: &[u8]) -> Result<UserChange, RequestError> {
        let map = object_of(body, &["password", "disabled", "role", "units", "default_unit"])?;
        let change = UserChange {
            password: optional_password(&map)?,
            disabled: optional_bool(&map, "disabled")?,
            role: optional_role(&map, "role")?,
            units: optional_units(&map)?,
            default_unit: optional_name(&map, "default_unit")?,
        };
        if change == UserChange::default() {
            return Err(RequestError::new(
                "the body changes nothing: give password, disabled, role, units or default_unit",
            ));
        }
        Ok(change)
    }
}

impl NewKey {
    /// Reads the body: `username`, optional `name` and `expires_at`; nothing else.
    pub fn from_json(body: &[u8]) -> Result<NewKey, RequestError> {
        let map = object_of(body, &["username", "name", "expires_at"])?;
        Ok(NewKey {
            username: required_name(&map, "username")?,
            name: optional_name(&map, "name")?,
            expires_at: optional_integer(&map, "expires_at")?,
        })
    }
}

/// The content type of an import's body: NDJSON, one JSON object per line.
pub const IMPORT_CONTENT_TYPE: &str = "application/x-ndjson";

/// One line of an import file (`crm-auth import`, `POST /admin/v1/import`): a JSON object whose `type` says
/// what it creates. Names are resolved later, against the rest of the file and the database; this is only
/// what one line says. `Debug` hides passwords, hashes and keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportLine {
    /// `{"type": "organisation", "name": ...}`.
    Organisation {
        /// Its name.
        name: String,
    },
    /// `{"type": "unit", "organisation": ..., "name": ..., "code": ...}`.
    Unit {
        /// Its organisation's name (or, for one in the database, id).
        organisation: String,
        /// Its name.
        name: String,
        /// Its code, if it has one.
        code: Option<String>,
    },
    /// `{"type": "user", ...}`.
    User(ImportUser),
    /// `{"type": "web_api_key", ...}`.
    WebApiKey(ImportKey),
}

/// A user line of an import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportUser {
    /// Its organisation's name (or, for one in the database, id).
    pub organisation: String,
    /// Its username.
    pub username: String,
    /// Its password, as a hash or in clear; `None`: the user logs in only with keys.
    pub password: Option<ImportPassword>,
    /// Its units (names or codes; ids of units in the database); at least one.
    pub units: Vec<String>,
    /// Its default unit, one of `units`; `None`: the first.
    pub default_unit: Option<String>,
    /// Its role; `member` when the line has none.
    pub role: Role,
    /// Whether it is disabled.
    pub disabled: bool,
}

/// A user's password in an import: `password_hash` (a hash made by another system, stored as it is) or
/// `password` (in clear, hashed on import). `Debug` prints neither.
#[derive(Clone, PartialEq, Eq)]
pub enum ImportPassword {
    /// A PHC or bcrypt string.
    Hash(String),
    /// The password itself.
    Clear(String),
}

impl fmt::Debug for ImportPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportPassword::Hash(_) => f.debug_tuple("Hash").field(&Redacted).finish(),
            ImportPassword::Clear(_) => f.debug_tuple("Clear").field(&Redacted).finish(),
        }
    }
}

/// A Web API key line of an import: the key keeps its value, so clients configured with it go on working.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportKey {
    /// Its user's organisation's name (or, for one in the database, id).
    pub organisation: String,
    /// Its user's username.
    pub username: String,
    /// The key itself: [`MIN_IMPORTED_KEY_CHARS`] to [`MAX_IMPORTED_KEY_CHARS`] visible ASCII characters
    /// other than `:` (which would end the key in an `Authorization: Basic` header).
    pub key: String,
    /// A name to tell it apart.
    pub name: Option<String>,
}

impl fmt::Debug for ImportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportKey")
            .field("organisation", &self.organisation)
            .field("username", &self.username)
            .field("key", &Redacted)
            .field("name", &self.name)
            .finish()
    }
}

impl ImportLine {
    /// Reads one line: a JSON object with a `type` of `organisation`, `unit`, `user` or `web_api_key` and that
    /// type's fields, nothing else. The error names the field; the caller adds the line number.
    pub fn from_json(line: &[u8]) -> Result<ImportLine, RequestError> {
        let map = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(RequestError::new("the line must be a JSON object")),
            Err(_) => return Err(RequestError::new("the line is not valid JSON")),
        };
        let kind = required_string(&map, "type", 32)?;
        match kind.as_str() {
            "organisation" => {
                known_fields(&map, &["type", "name"])?;
                Ok(ImportLine::Organisation {
                    name: required_name(&map, "name")?,
                })
            }
            "unit" => {
                known_fields(&map, &["type", "organisation", "name", "code"])?;
                Ok(ImportLine::Unit {
                    organisation: required_name(&map, "organisation")?,
                    name: required_name(&map, "name")?,
                    code: optional_name(&map, "code")?,
                })
            }
            "user" => {
                let fields = [
                    "type",
                    "organisation",
                    "username",
                    "password_hash",
                    "password",
                    "units",
                    "default_unit",
                    "role",
                    "disabled",
                ];
                known_fields(&map, &fields)?;
                let organisation = required_name(&map, "organisation")?;
                let username = required_name(&map, "username")?;
                let password = match (optional_hash(&map)?, optional_password(&map)?) {
                    (Some(_), Some(_)) => {
                        return Err(RequestError::new(
                            "password_hash and password are both given: give one or neither",
                        ));
                    }
                    (Some(hash), None) => Some(ImportPassword::Hash(hash)),
                    (None, Some(password)) => Some(ImportPassword::Clear(password)),
                    (None, None) => None,
                };
                Ok(ImportLine::User(ImportUser {
                    organisation,
                    username,
                    password,
                    units: optional_units(&map)?.ok_or_else(|| RequestError::new("units is missing"))?,
                    default_unit: optional_name(&map, "default_unit")?,
                    role: optional_role(&map, "role")?.unwrap_or_default(),
                    disabled: optional_bool(&map, "disabled")?.unwrap_or(false),
                }))
            }
            "web_api_key" => {
                known_fields(&map, &["type", "organisation", "username", "key", "name"])?;
                Ok(ImportLine::WebApiKey(ImportKey {
                    organisation: required_name(&map, "organisation")?,
                    username: required_name(&map, "username")?,
                    key: imported_key(&map)?,
                    name: optional_name(&map, "name")?,
                }))
            }
            _ => Err(RequestError::new(
                "type must be organisation, unit, user or web_api_key",
            )),
        }
    }
}

/// An optional `password_hash`: absent or `null` is `None`; otherwise a non-empty string of ASCII without
/// blanks, at most [`MAX_HASH_CHARS`] characters. Which hashes are accepted is the server's to say.
fn optional_hash(map: &Map<String, Value>) -> Result<Option<String>, RequestError> {
    match map.get("password_hash") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(RequestError::new("password_hash is empty")),
        Some(Value::String(s)) if s.len() > MAX_HASH_CHARS => Err(RequestError::new(format!(
            "password_hash is longer than {MAX_HASH_CHARS} characters"
        ))),
        Some(Value::String(s)) if !s.bytes().all(|b| b.is_ascii_graphic()) => Err(RequestError::new(
            "password_hash holds a character that no supported hash has",
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::new("password_hash must be a string")),
    }
}

/// The `key` of a `web_api_key` line: [`MIN_IMPORTED_KEY_CHARS`] to [`MAX_IMPORTED_KEY_CHARS`] visible ASCII
/// characters other than `:`.
fn imported_key(map: &Map<String, Value>) -> Result<String, RequestError> {
    let key = match map.get("key") {
        None | Some(Value::Null) => return Err(RequestError::new("key is missing")),
        Some(Value::String(s)) => s,
        Some(_) => return Err(RequestError::new("key must be a string")),
    };
    let chars = key.chars().count();
    if !(MIN_IMPORTED_KEY_CHARS..=MAX_IMPORTED_KEY_CHARS).contains(&chars) {
        return Err(RequestError::new(format!(
            "key must have {MIN_IMPORTED_KEY_CHARS} to {MAX_IMPORTED_KEY_CHARS} characters"
        )));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(RequestError::new(
            "key must consist of visible ASCII characters other than ':'",
        ));
    }
    Ok(key.clone())
}

/// The query of a list: `?limit=` (1 to [`MAX_PAGE_ITEMS`], default [`DEFAULT_PAGE_ITEMS`]) and `?cursor=`
/// (the `next_cursor` of the page before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageQuery {
    /// Most items on the page.
    pub limit: usize,
    /// Where the page starts; `None`: at the oldest item.
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Reads `limit` and `cursor` as the query gave them (absent or empty: the default).
    pub fn from_query(limit: Option<String>, cursor: Option<String>) -> Result<PageQuery, RequestError> {
        let limit = match query_value("limit", limit, 8)? {
            None => DEFAULT_PAGE_ITEMS,
            Some(limit) => match limit.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE_ITEMS).contains(&n) => n,
                _ => {
                    return Err(RequestError::new(format!(
                        "limit must be a whole number from 1 to {MAX_PAGE_ITEMS}"
                    )));
                }
            },
        };
        let cursor = query_value("cursor", cursor, MAX_NAME_CHARS)?;
        Ok(PageQuery { limit, cursor })
    }
}

impl Default for PageQuery {
    fn default() -> PageQuery {
        PageQuery {
            limit: DEFAULT_PAGE_ITEMS,
            cursor: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The messages are the contract's `status.description`; clients and tests match on them.

    use super::*;

    fn message<T: fmt::Debug>(parsed: Result<T, RequestError>) -> String {
        parsed.err().map(RequestError::into_message).unwrap_or_default()
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        assert_eq!(
            message(NewOrganisation::from_json(br#"{"name": "A", "nme": 1}"#)),
            r#"unknown field "nme""#
        );
        assert_eq!(message(NewOrganisation::from_json(b"{}")), "name is missing");
        assert_eq!(
            message(NewOrganisation::from_json(br#"{"name": 5}"#)),
            "name must be a string"
        );
        assert_eq!(
            message(NewOrganisation::from_json(br#"{"name": "a\u0000"}"#)),
            "name contains a NUL character"
        );
        assert_eq!(
            message(NewUser::from_json(br#"{"username": "u"}"#)),
            "units is missing"
        );
        assert_eq!(
            message(NewUser::from_json(br#"{"username": "u", "units": []}"#)),
            "units is empty"
        );
        assert_eq!(
            message(NewUser::from_json(br#"{"username": "u", "units": [1]}"#)),
            "units must be a list of unit names"
        );
        assert_eq!(
            message(NewUser::from_json(
                br#"{"username": "u", "units": ["a"], "role": "root"}"#
            )),
            "role must be member, admin or operator"
        );
        assert_eq!(
            message(NewKey::from_json(br#"{"username": "u", "expires_at": "soon"}"#)),
            "expires_at must be a whole number of unix seconds"
        );
        assert_eq!(
            message(UserChange::from_json(br#"{"disabled": "yes"}"#)),
            "disabled must be true or false"
        );
        assert!(message(UserChange::from_json(b"{}")).starts_with("the body changes nothing"));
        assert_eq!(
            message(UserChange::from_json(br#"{"password": ""}"#)),
            "password is empty"
        );
    }

    #[test]
    fn bodies_read_every_field() -> Result<(), RequestError> {
        let user = NewUser::from_json(
            br#"{"username": "u", "password": "p", "units": ["HQ", "B"], "default_unit": "B", "role": "admin"}"#,
        )?;
        assert_eq!(user.units, ["HQ", "B"]);
        assert_eq!(user.default_unit.as_deref(), Some("B"));
        assert_eq!(user.role, Some(Role::Admin));
        assert!(!format!("{user:?}").contains("\"p\""));
        let change = UserChange::from_json(br#"{"disabled": true}"#)?;
        assert_eq!(change.disabled, Some(true));
        let key = NewKey::from_json(br#"{"username": "u", "name": "billing", "expires_at": 99}"#)?;
        assert_eq!((key.name.as_deref(), key.expires_at), (Some("billing"), Some(99)));
        // What the client sends, the server reads.
        let sent = serde_json::to_vec(&user).map_err(|_| RequestError::new("serialise"))?;
        assert_eq!(NewUser::from_json(&sent)?, user);
        Ok(())
    }

    #[test]
    fn import_report_reads_the_contract_shape() -> Result<(), serde_json::Error> {
        let report: ImportReport = serde_json::from_str(
            r#"{"created": {"organisations": 1, "units": 2, "users": 3, "web_api_keys": 4}, "unchanged": 5, "dry_run": true}"#,
        )?;
        let counts = report.created;
        assert_eq!(
            (
                counts.organisations,
                counts.units,
                counts.users,
                counts.web_api_keys
            ),
            (1, 2, 3, 4)
        );
        assert_eq!((report.unchanged, report.dry_run), (5, true));
        assert_eq!(
            serde_json::from_value::<ImportReport>(serde_json::to_value(report)?)?,
            report
        );
        Ok(())
    }

    #[test]
    fn import_lines_are_read_by_type() -> anyhow::Result<()> {
        let user = ImportLine::from_json(
            br#"{"type":"user","organisation":"Acme","username":"alice","password_hash":"$2b$04$x",
                "units":["HQ"],"default_unit":null,"role":"admin","disabled":true}"#,
        )?;
        assert_eq!(
            user,
            ImportLine::User(ImportUser {
                organisation: "Acme".into(),
                username: "alice".into(),
                password: Some(ImportPassword::Hash("$2b$04$x".into())),
                units: vec!["HQ".into()],
                default_unit: None,
                role: Role::Admin,
                disabled: true,
            })
        );
        let key = ImportLine::from_json(
            br#"{"type":"web_api_key","organisation":"Acme","username":"alice","key":"0123456789abcdef"}"#,
        )?;
        assert!(!format!("{key:?}").contains("0123456789abcdef"), "{key:?}");
        let clear = ImportLine::from_json(
            br#"{"type":"user","organisation":"A","username":"u","password":"hunter22","units":["U"]}"#,
        )?;
        assert!(!format!("{clear:?}").contains("hunter22"), "{clear:?}");
        assert_eq!(
            ImportLine::from_json(br#"{"type":"unit","organisation":"A","name":"N","code":""}"#)?,
            ImportLine::Unit {
                organisation: "A".into(),
                name: "N".into(),
                code: None
            }
        );
        Ok(())
    }

    #[test]
    fn bad_import_lines_name_the_field() {
        let user = |extra: &str| {
            format!(r#"{{"type":"user","organisation":"A","username":"u","units":["U"]{extra}}}"#)
        };
        for (line, expected) in [
            ("{".to_owned(), "the line is not valid JSON"),
            ("\"user\"".to_owned(), "the line must be a JSON object"),
            ("{}".to_owned(), "type is missing"),
            (r#"{"type":7}"#.to_owned(), "type must be a string"),
            (
                r#"{"type":"admin"}"#.to_owned(),
                "type must be organisation, unit, user or web_api_key",
            ),
            (
                r#"{"type":"organisation","name":"A","id":"x"}"#.to_owned(),
                r#"unknown field "id""#,
            ),
            (
                user(r#","password":"p","password_hash":"h""#),
                "password_hash and password are both given: give one or neither",
            ),
            (user(r#","password_hash":"""#), "password_hash is empty"),
            (
                user(r#","password_hash":"has space""#),
                "password_hash holds a character that no supported hash has",
            ),
            (
                user(&format!(
                    r#","password_hash":"{}""#,
                    "x".repeat(MAX_HASH_CHARS + 1)
                )),
                "password_hash is longer than 512 characters",
            ),
            (user(r#","disabled":1"#), "disabled must be true or false"),
            (
                r#"{"type":"user","organisation":"A","username":"u","units":[]}"#.to_owned(),
                "units is empty",
            ),
            (
                r#"{"type":"web_api_key","organisation":"A","username":"u"}"#.to_owned(),
                "key is missing",
            ),
            (
                r#"{"type":"web_api_key","organisation":"A","username":"u","key":"0123456789abcde"}"#
                    .to_owned(),
                "key must have 16 to 64 characters",
            ),
            (
                format!(
                    r#"{{"type":"web_api_key","organisation":"A","username":"u","key":"{}"}}"#,
                    "k".repeat(65)
                ),
                "key must have 16 to 64 characters",
            ),
            (
                r#"{"type":"web_api_key","organisation":"A","username":"u","key":"0123456789 abcdef"}"#
                    .to_owned(),
                "key must consist of visible ASCII characters other than ':'",
            ),
            (
                r#"{"type":"web_api_key","organisation":"A","username":"u","key":"0123456789ABCDEé"}"#
                    .to_owned(),
                "key must consist of visible ASCII characters other than ':'",
            ),
        ] {
            assert_eq!(
                message(ImportLine::from_json(line.as_bytes())),
                expected,
                "{line}"
            );
        }
        // The bounds themselves.
        let key = |n: usize| {
            format!(
                r#"{{"type":"web_api_key","organisation":"A","username":"u","key":"{}"}}"#,
                "k".repeat(n)
            )
        };
        assert!(ImportLine::from_json(key(MIN_IMPORTED_KEY_CHARS).as_bytes()).is_ok());
        assert!(ImportLine::from_json(key(MAX_IMPORTED_KEY_CHARS).as_bytes()).is_ok());
    }

    #[test]
    fn page_queries() {
        assert_eq!(PageQuery::from_query(None, None), Ok(PageQuery::default()));
        assert_eq!(
            PageQuery::from_query(Some("500".into()), Some("c".into())).map(|q| (q.limit, q.cursor)),
            Ok((500, Some("c".into())))
        );
        for bad in ["0", "501", "-1", "ten", "1.5"] {
            assert_eq!(
                message(PageQuery::from_query(Some(bad.into()), None)),
                "limit must be a whole number from 1 to 500",
                "{bad}"
            );
        }
    }
}
