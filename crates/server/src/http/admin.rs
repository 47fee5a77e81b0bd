//! The administration API, `/admin/v1` at the root: organisations, units, users, keys, sessions and the audit
//! over HTTP, for an `admin` (its own organisation) or an `operator` (every organisation).
//!
//! Each handler checks its caller first (`caller`: the bearer token's session must be live, as validate
//! checks it, and its user an admin or operator), then runs the change through `service::admin`, the same
//! functions the command line calls, so both keep one set of rules and one audit. Lists are keyset-paged by
//! `(created_at, id)`: a page starts after the last row of the page before, so rows added meanwhile neither
//! shift nor repeat what follows.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use crm_auth_core::admin::{
    AuditEvent, CreatedKey, Ended, IMPORT_CONTENT_TYPE, ImportReport, Key, NewKey, NewOrganisation, NewUnit,
    NewUser, Organisation, Page, PageQuery, Session, Unit, User, UserChange,
};
use crm_auth_core::limits::MAX_NAME_CHARS;
use crm_auth_core::{Empty, Envelope, Role, TokenError, is_id, parse_bearer_authorization, routes};
use serde::Serialize;

use crate::db::{self, DbConnection};
use crate::error::ApiError;
use crate::http::method_not_allowed;
use crate::http::openapi::TAG_ADMIN;
use crate::http::request::{client_addr, query_field, read_body};
use crate::service::admin::{self as service, Actor};
use crate::service::import;
use crate::service::session::validate;
use crate::state::AppState;

/// Registers the administration routes (at the root).
pub fn configure(cfg: &mut web::ServiceConfig) {
    let resource = |path: &str| web::resource(path.to_owned()).default_service(web::to(method_not_allowed));
    cfg.service(
        resource(routes::ADMIN_ORGANISATIONS)
            .route(web::get().to(admin_list_organisations))
            .route(web::post().to(admin_create_organisation)),
    )
    .service(resource(routes::ADMIN_ORGANISATION).route(web::get().to(admin_get_organisation)))
    .service(
        resource(routes::ADMIN_UNITS)
            .route(web::get().to(admin_list_units))
            .route(web::post().to(admin_create_unit)),
    )
    .service(
        resource(routes::ADMIN_USERS)
            .route(web::get().to(admin_list_users))
            .route(web::post().to(admin_create_user)),
    )
    .service(
        resource(routes::ADMIN_USER)
            .route(web::get().to(admin_get_user))
            .route(web::patch().to(admin_update_user)),
    )
    .service(resource(routes::ADMIN_USER_SESSIONS).route(web::delete().to(admin_end_user_sessions)))
    .service(
        resource(routes::ADMIN_KEYS)
            .route(web::get().to(admin_list_keys))
            .route(web::post().to(admin_create_key)),
    )
    .service(resource(routes::ADMIN_KEY).route(web::delete().to(admin_revoke_key)))
    .service(resource(routes::ADMIN_SESSIONS).route(web::get().to(admin_list_sessions)))
    .service(resource(routes::ADMIN_SESSION).route(web::delete().to(admin_revoke_session)))
    .service(resource(routes::ADMIN_AUDIT).route(web::get().to(admin_list_audit)))
    .service(resource(routes::ADMIN_IMPORT).route(web::post().to(admin_import)));
}

/// The caller, as the actor of its changes: its bearer token must verify and its session be live (checked as
/// validate checks it: no token or a bad one answers Part 1's token codes), and its user be an `admin` or
/// `operator` now (a role taken away takes effect at once). A `member` is `FORBIDDEN`.
async fn caller(req: &HttpRequest, state: &AppState) -> Result<Actor, ApiError> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_bearer_authorization)
        .ok_or(ApiError::Token(TokenError::Malformed))?;
    let live = validate(state, token).await?;
    let (user, organisation_id, organisation) = state
        .store
        .read(move |conn| {
            let found = db::session::find_by_id(conn, &live.id)?.ok_or(ApiError::SessionEnded)?;
            let user = db::user::find_by_id(conn, &found.user_id)?.ok_or(ApiError::SessionEnded)?;
            let organisation =
                db::organisation::find_by_id(conn, &found.organisation_id)?.ok_or(ApiError::SessionEnded)?;
            Ok((user, found.organisation_id, organisation.name))
        })
        .await?;
    if user.role == Role::Member {
        return Err(ApiError::Forbidden(
            "a member may not use the administration API".into(),
        ));
    }
    Ok(Actor::User {
        username: user.username,
        organisation,
        organisation_id,
        role: user.role,
        client: Some(client_addr(req, state)),
    })
}

/// A path segment naming an organisation, user or unit: at most [`MAX_NAME_CHARS`] characters, no NUL.
fn name_segment(field: &str, value: String) -> Result<String, ApiError> {
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "{field} is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    if value.contains('\0') {
        return Err(ApiError::InvalidRequest(format!(
            "{field} contains a NUL character"
        )));
    }
    Ok(value)
}

/// A path segment naming a key or session by id; anything but an id names nothing.
fn id_segment(kind: &str, value: String) -> Result<String, ApiError> {
    if is_id(&value) {
        Ok(value)
    } else {
        let shown: String = value.chars().take(MAX_NAME_CHARS).collect();
        Err(ApiError::Missing(format!("no {kind} {shown:?}")))
    }
}

/// A list's paging: how many items, and after which row.
struct Paging {
    /// Most items on the page.
    limit: usize,
    /// The `(time, id)` of the last row of the page before.
    after: Option<(i64, String)>,
}

impl Paging {
    /// Reads `?limit=` and `?cursor=`.
    fn of(req: &HttpRequest) -> Result<Paging, ApiError> {
        let query = PageQuery::from_query(query_field(req, "limit")?, query_field(req, "cursor")?)?;
        let after = query
            .cursor
            .map(|cursor| {
                cursor
                    .split_once('.')
                    .and_then(|(time, id)| Some((time.parse::<i64>().ok()?, id)))
                    .filter(|(_, id)| is_id(id))
                    .map(|(time, id)| (time, id.to_owned()))
                    .ok_or_else(|| ApiError::InvalidRequest("cursor is not one this server gave".into()))
            })
            .transpose()?;
        Ok(Paging {
            limit: query.limit,
            after,
        })
    }

    /// Where the page starts, for the query.
    fn after(&self) -> db::After<'_> {
        self.after.as_ref().map(|(time, id)| (*time, id.as_str()))
    }

    /// How many rows to read: one more than the page holds, to know whether another page follows.
    fn fetch(&self) -> i64 {
        i64::try_from(self.limit).map_or(i64::MAX, |limit| limit.saturating_add(1))
    }

    /// The page's rows, and the cursor of the next page if rows remain; `key` gives a row's `(time, id)`.
    fn split<R>(&self, mut rows: Vec<R>, key: impl Fn(&R) -> (i64, &str)) -> (Vec<R>, Option<String>) {
        if rows.len() <= self.limit {
            return (rows, None);
        }
        rows.truncate(self.limit);
        let next = rows.last().map(|row| {
            let (time, id) = key(row);
            format!("{time}.{id}")
        });
        (rows, next)
    }
}

fn ok<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Ok().json(Envelope::ok(data))
}

fn created<T: Serialize>(data: T) -> HttpResponse {
    HttpResponse::Created().json(Envelope::ok(data))
}

fn organisation_out(org: db::organisation::Organisation) -> Organisation {
    Organisation {
        id: org.id,
        name: org.name,
        created_at: org.created_at,
    }
}

fn unit_out(unit: db::unit::Unit) -> Unit {
    Unit {
        id: unit.id,
        name: unit.name,
        code: unit.code,
    }
}

/// Users as the API shows them, with their units (read in one statement for all of them).
fn users_out(conn: &mut DbConnection, users: Vec<db::user::User>) -> Result<Vec<User>, ApiError> {
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let memberships = db::user::units_of(conn, &ids)?;
    Ok(users
        .into_iter()
        .map(|user| {
            let mine = memberships.iter().filter(|(id, _, _)| *id == user.id);
            let default_unit = mine
                .clone()
                .find(|(_, is_default, _)| *is_default)
                .map(|(_, _, unit)| unit.id.clone());
            User {
                units: mine.map(|(_, _, unit)| unit_out(unit.clone())).collect(),
                default_unit,
                id: user.id,
                username: user.username,
                role: user.role,
                disabled: !user.is_active,
                created_at: user.created_at,
            }
        })
        .collect())
}

fn user_out(conn: &mut DbConnection, user: db::user::User) -> Result<User, ApiError> {
    users_out(conn, vec![user])?
        .pop()
        .ok_or_else(|| ApiError::Internal("a user went missing".into()))
}

fn key_out((key, username): (db::api_key::ApiKeyRow, String)) -> Key {
    Key {
        id: key.id,
        prefix: key.prefix,
        name: key.name,
        username,
        expires_at: key.expires_at,
        created_at: key.created_at,
        last_used_at: key.last_used_at,
        revoked_at: key.revoked_at,
    }
}

fn session_out(session: db::session::Session) -> Session {
    Session {
        id: session.id,
        username: session.username,
        unit: session.unit_name,
        method: session.method,
        created_at: session.created_at,
        expires_at: session.expires_at,
        refreshed_at: session.refreshed_at,
        client: session.client,
    }
}

fn audit_out(event: db::audit::AuditEvent) -> AuditEvent {
    AuditEvent {
        at: event.at,
        actor: event.actor,
        action: event.action,
        target: event.target,
        client: event.client,
    }
}

/// The `{org}` path parameter.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    /// An organisation id, or its name (case-insensitive).
    pub org: String,
}

/// The `{org}` and `{username}` path parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    /// An organisation id, or its name (case-insensitive).
    pub org: String,
    /// A username in it (case-insensitive).
    pub username: String,
}

/// The `{org}` and `{id}` path parameters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// An organisation id, or its name (case-insensitive).
    pub org: String,
    /// The id: 32 upper-case hex digits.
    pub id: String,
}

/// A list's query.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Most items on the page, 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the page before; absent: the first page.
    #[param(max_length = 256, nullable = false)]
    pub cursor: Option<String>,
}

/// The session list's query.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionParams {
    /// Only this user's sessions.
    #[param(max_length = 256, nullable = false)]
    pub username: Option<String>,
}

/// `GET /admin/v1/organisations`.
#[utoipa::path(
    get,
    path = routes::ADMIN_ORGANISATIONS,
    tag = TAG_ADMIN,
    summary = "List organisations",
    description = "Every organisation, oldest first; an admin's list holds its own only.",
    security(("bearer_token" = [])),
    params(PageParams),
    responses((status = 200, description = "A page of organisations", body = Envelope<Page<Organisation>>)),
)]
pub async fn admin_list_organisations(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let paging = Paging::of(&req)?;
    let page = state
        .store
        .read(move |conn| {
            let only = match &actor {
                Actor::User {
                    role: Role::Admin,
                    organisation_id,
                    ..
                } => Some(organisation_id.as_str()),
                _ => None,
            };
            let rows = db::organisation::page(conn, only, paging.after(), paging.fetch())?;
            let (rows, next_cursor) = paging.split(rows, |o| (o.created_at, &o.id));
            Ok(Page {
                items: rows.into_iter().map(organisation_out).collect(),
                next_cursor,
            })
        })
        .await?;
    Ok(ok(page))
}

/// `POST /admin/v1/organisations`.
#[utoipa::path(
    post,
    path = routes::ADMIN_ORGANISATIONS,
    tag = TAG_ADMIN,
    summary = "Create an organisation",
    description = "Operators only. Names are unique, compared case-insensitively.",
    security(("bearer_token" = [])),
    request_body(content = NewOrganisation, description = "A JSON object; unknown fields are refused."),
    responses((status = 201, description = "The new organisation", body = Envelope<Organisation>)),
)]
pub async fn admin_create_organisation(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    let new = NewOrganisation::from_json(&body)?;
    let now = state.clock.now();
    let org = state
        .store
        .admin(move |conn| Ok(service::add_organisation(conn, &actor, &new.name, now)?))
        .await?;
    Ok(created(organisation_out(org)))
}

/// `GET /admin/v1/organisations/{org}`.
#[utoipa::path(
    get,
    path = routes::ADMIN_ORGANISATION,
    tag = TAG_ADMIN,
    summary = "Get an organisation",
    security(("bearer_token" = [])),
    params(OrgPath),
    responses((status = 200, description = "The organisation", body = Envelope<Organisation>)),
)]
pub async fn admin_get_organisation(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let found = state
        .store
        .read(move |conn| Ok(service::find_organisation_as(conn, &actor, &org)?))
        .await?;
    Ok(ok(organisation_out(found)))
}

/// `GET /admin/v1/organisations/{org}/units`.
#[utoipa::path(
    get,
    path = routes::ADMIN_UNITS,
    tag = TAG_ADMIN,
    summary = "List an organisation's units",
    security(("bearer_token" = [])),
    params(OrgPath, PageParams),
    responses((status = 200, description = "A page of units", body = Envelope<Page<Unit>>)),
)]
pub async fn admin_list_units(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let paging = Paging::of(&req)?;
    let page = state
        .store
        .read(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let rows = db::unit::page_in(conn, &org.id, paging.after(), paging.fetch())?;
            let (rows, next_cursor) = paging.split(rows, |u| (u.created_at, &u.id));
            Ok(Page {
                items: rows.into_iter().map(unit_out).collect(),
                next_cursor,
            })
        })
        .await?;
    Ok(ok(page))
}

/// `POST /admin/v1/organisations/{org}/units`.
#[utoipa::path(
    post,
    path = routes::ADMIN_UNITS,
    tag = TAG_ADMIN,
    summary = "Create a unit",
    description = "Names and codes are unique in the organisation, compared case-insensitively.",
    security(("bearer_token" = [])),
    params(OrgPath),
    request_body(content = NewUnit, description = "A JSON object; unknown fields are refused."),
    responses((status = 201, description = "The new unit", body = Envelope<Unit>)),
)]
pub async fn admin_create_unit(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    let new = NewUnit::from_json(&body)?;
    let now = state.clock.now();
    let unit = state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            Ok(service::add_unit(
                conn,
                &actor,
                &org,
                &new.name,
                new.code.as_deref(),
                now,
            )?)
        })
        .await?;
    Ok(created(unit_out(unit)))
}

/// `GET /admin/v1/organisations/{org}/users`.
#[utoipa::path(
    get,
    path = routes::ADMIN_USERS,
    tag = TAG_ADMIN,
    summary = "List an organisation's users",
    security(("bearer_token" = [])),
    params(OrgPath, PageParams),
    responses((status = 200, description = "A page of users", body = Envelope<Page<User>>)),
)]
pub async fn admin_list_users(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let paging = Paging::of(&req)?;
    let page = state
        .store
        .read(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let rows = db::user::page_in(conn, &org.id, paging.after(), paging.fetch())?;
            let (rows, next_cursor) = paging.split(rows, |u| (u.created_at, &u.id));
            Ok(Page {
                items: users_out(conn, rows)?,
                next_cursor,
            })
        })
        .await?;
    Ok(ok(page))
}

/// `POST /admin/v1/organisations/{org}/users`.
#[utoipa::path(
    post,
    path = routes::ADMIN_USERS,
    tag = TAG_ADMIN,
    summary = "Create a user",
    description = "Usernames are unique in the organisation, compared case-insensitively. An admin cannot \
        create an operator. Without a password the user logs in with Web API keys only.",
    security(("bearer_token" = [])),
    params(OrgPath),
    request_body(content = NewUser, description = "A JSON object; unknown fields are refused."),
    responses((status = 201, description = "The new user", body = Envelope<User>)),
)]
pub async fn admin_create_user(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    let new = NewUser::from_json(&body)?;
    let role = new.role.unwrap_or_default();
    if !service::may_grant(actor.role(), role) {
        return Err(ApiError::Forbidden(format!(
            "an {} may not grant the role {role}",
            actor.role()
        )));
    }
    let password_hash = match new.password {
        Some(password) => Some(state.hasher.hash(password).await?),
        None => None,
    };
    let now = state.clock.now();
    let user = state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let user = service::add_user(
                conn,
                &actor,
                &org,
                service::NewUser {
                    username: &new.username,
                    units: &new.units,
                    default_unit: new.default_unit.as_deref(),
                    password_hash,
                    role,
                },
                now,
            )?;
            user_out(conn, user)
        })
        .await?;
    Ok(created(user))
}

/// `GET /admin/v1/organisations/{org}/users/{username}`.
#[utoipa::path(
    get,
    path = routes::ADMIN_USER,
    tag = TAG_ADMIN,
    summary = "Get a user",
    security(("bearer_token" = [])),
    params(UserPath),
    responses((status = 200, description = "The user", body = Envelope<User>)),
)]
pub async fn admin_get_user(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let (org, username) = path.into_inner();
    let (org, username) = (name_segment("org", org)?, name_segment("username", username)?);
    let user = state
        .store
        .read(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let user = service::find_user(conn, &org, &username)?;
            user_out(conn, user)
        })
        .await?;
    Ok(ok(user))
}

/// `PATCH /admin/v1/organisations/{org}/users/{username}`.
#[utoipa::path(
    patch,
    path = routes::ADMIN_USER,
    tag = TAG_ADMIN,
    summary = "Change a user",
    description = "Any of password, disabled, role, units and default unit, in one transaction. Disabling \
        ends the user's live sessions, and leaving units ends its sessions in them, before the answer. An \
        admin can neither change an operator nor grant `operator`.",
    security(("bearer_token" = [])),
    params(UserPath),
    request_body(content = UserChange, description = "A JSON object naming at least one change; unknown \
        fields are refused."),
    responses((status = 200, description = "The user as changed", body = Envelope<User>)),
)]
pub async fn admin_update_user(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let (org, username) = path.into_inner();
    let (org, username) = (name_segment("org", org)?, name_segment("username", username)?);
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    let change = UserChange::from_json(&body)?;
    let password_hash = match change.password.clone() {
        Some(password) => Some(state.hasher.hash(password).await?),
        None => None,
    };
    let now = state.clock.now();
    let user = state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let user = service::find_user(conn, &org, &username)?;
            update_user(
                conn,
                &actor,
                (&org, &user),
                &change,
                password_hash.as_deref(),
                now,
            )?;
            let changed = db::user::find_by_id(conn, &user.id)?
                .ok_or_else(|| ApiError::Internal("a changed user went missing".into()))?;
            user_out(conn, changed)
        })
        .await?;
    Ok(ok(user))
}

/// Applies a user's change, each part as its own audited change, inside the caller's transaction.
fn update_user(
    conn: &mut DbConnection,
    actor: &Actor,
    (org, user): (&db::organisation::Organisation, &db::user::User),
    change: &UserChange,
    password_hash: Option<&str>,
    now: i64,
) -> Result<(), ApiError> {
    if let Some(role) = change.role {
        service::set_role(conn, actor, org, user, role, now)?;
    }
    if change.units.is_some() || change.default_unit.is_some() {
        let units = match &change.units {
            Some(units) => units.clone(),
            None => db::user::find_memberships(conn, &user.id)?
                .into_iter()
                .map(|m| m.unit_id)
                .collect(),
        };
        let default_unit = change.default_unit.as_deref();
        service::set_units(conn, actor, org, user, (&units, default_unit), now)?;
    }
    if let Some(hash) = password_hash {
        service::set_password(conn, actor, org, user, hash, now)?;
    }
    if let Some(disabled) = change.disabled {
        service::set_user_active(conn, actor, org, user, !disabled, now)?;
    }
    Ok(())
}

/// `DELETE /admin/v1/organisations/{org}/users/{username}/sessions`.
#[utoipa::path(
    delete,
    path = routes::ADMIN_USER_SESSIONS,
    tag = TAG_ADMIN,
    summary = "End a user's sessions",
    description = "Every live session of the user has ended when this answers.",
    security(("bearer_token" = [])),
    params(UserPath),
    responses((status = 200, description = "How many sessions ended", body = Envelope<Ended>)),
)]
pub async fn admin_end_user_sessions(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let (org, username) = path.into_inner();
    let (org, username) = (name_segment("org", org)?, name_segment("username", username)?);
    let now = state.clock.now();
    let ended = state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let user = service::find_user(conn, &org, &username)?;
            Ok(service::end_user_sessions(conn, &actor, &org, &user, now)?)
        })
        .await?;
    Ok(ok(Ended {
        ended: u64::try_from(ended).unwrap_or(u64::MAX),
    }))
}

/// `GET /admin/v1/organisations/{org}/keys`.
#[utoipa::path(
    get,
    path = routes::ADMIN_KEYS,
    tag = TAG_ADMIN,
    summary = "List an organisation's Web API keys",
    description = "Revoked keys included. The keys themselves are never shown, only their prefixes.",
    security(("bearer_token" = [])),
    params(OrgPath, PageParams),
    responses((status = 200, description = "A page of keys", body = Envelope<Page<Key>>)),
)]
pub async fn admin_list_keys(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let paging = Paging::of(&req)?;
    let page = state
        .store
        .read(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let rows = db::api_key::page_in(conn, &org.id, paging.after(), paging.fetch())?;
            let (rows, next_cursor) = paging.split(rows, |(k, _)| (k.created_at, &k.id));
            Ok(Page {
                items: rows.into_iter().map(key_out).collect(),
                next_cursor,
            })
        })
        .await?;
    Ok(ok(page))
}

/// `POST /admin/v1/organisations/{org}/keys`.
#[utoipa::path(
    post,
    path = routes::ADMIN_KEYS,
    tag = TAG_ADMIN,
    summary = "Create a Web API key",
    description = "The answer holds the key itself, once; only its digest is stored.",
    security(("bearer_token" = [])),
    params(OrgPath),
    request_body(content = NewKey, description = "A JSON object; unknown fields are refused."),
    responses((status = 201, description = "The new key and its value", body = Envelope<CreatedKey>)),
)]
pub async fn admin_create_key(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let body = read_body(&req, payload, state.settings.http.max_body_bytes).await?;
    let new = NewKey::from_json(&body)?;
    let now = state.clock.now();
    let created_key = state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let user = service::find_user(conn, &org, &new.username)?;
            let (row, key) = service::create_key(
                conn,
                &actor,
                &org,
                &user,
                (new.name.as_deref(), new.expires_at),
                now,
            )?;
            Ok(CreatedKey {
                info: key_out((row, user.username)),
                key: key.expose().to_owned(),
            })
        })
        .await?;
    Ok(created(created_key))
}

/// `DELETE /admin/v1/organisations/{org}/keys/{id}`.
#[utoipa::path(
    delete,
    path = routes::ADMIN_KEY,
    tag = TAG_ADMIN,
    summary = "Revoke a Web API key",
    description = "The key logs in no more, and every session it opened has ended when this answers.",
    security(("bearer_token" = [])),
    params(IdPath),
    responses((status = 200, description = "The key is revoked", body = Envelope<Empty>)),
)]
pub async fn admin_revoke_key(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let (org, id) = path.into_inner();
    let (org, id) = (name_segment("org", org)?, id_segment("key", id)?);
    let now = state.clock.now();
    state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            Ok(service::revoke_key(conn, &actor, &org, &id, now)?)
        })
        .await?;
    Ok(ok(Empty {}))
}

/// `GET /admin/v1/organisations/{org}/sessions`.
#[utoipa::path(
    get,
    path = routes::ADMIN_SESSIONS,
    tag = TAG_ADMIN,
    summary = "List an organisation's live sessions",
    security(("bearer_token" = [])),
    params(OrgPath, SessionParams, PageParams),
    responses((status = 200, description = "A page of live sessions", body = Envelope<Page<Session>>)),
)]
pub async fn admin_list_sessions(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let username = query_field(&req, "username")?
        .filter(|u| !u.is_empty())
        .map(|u| name_segment("username", u))
        .transpose()?;
    let paging = Paging::of(&req)?;
    let now = state.clock.now();
    let page = state
        .store
        .read(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let user = match username {
                Some(username) => Some(service::find_user(conn, &org, &username)?),
                None => None,
            };
            let owner = (org.id.as_str(), user.as_ref().map(|u| u.id.as_str()));
            let rows = db::session::page_live(conn, owner, now, paging.after(), paging.fetch())?;
            let (rows, next_cursor) = paging.split(rows, |s| (s.created_at, &s.id));
            Ok(Page {
                items: rows.into_iter().map(session_out).collect(),
                next_cursor,
            })
        })
        .await?;
    Ok(ok(page))
}

/// `DELETE /admin/v1/organisations/{org}/sessions/{id}`.
#[utoipa::path(
    delete,
    path = routes::ADMIN_SESSION,
    tag = TAG_ADMIN,
    summary = "End a session",
    description = "Idempotent: ending an ended session is `OK`; a session of another organisation is not \
        found. An admin may not end an operator's session.",
    security(("bearer_token" = [])),
    params(IdPath),
    responses((status = 200, description = "The session has ended", body = Envelope<Empty>)),
)]
pub async fn admin_revoke_session(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let (org, id) = path.into_inner();
    let (org, id) = (name_segment("org", org)?, id_segment("session", id)?);
    let now = state.clock.now();
    state
        .store
        .admin(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            Ok(service::revoke_session(conn, &actor, Some(&org), &id, now)?)
        })
        .await?;
    Ok(ok(Empty {}))
}

/// `GET /admin/v1/organisations/{org}/audit`.
#[utoipa::path(
    get,
    path = routes::ADMIN_AUDIT,
    tag = TAG_ADMIN,
    summary = "List an organisation's audit events",
    description = "Every change made through this API or the command line, oldest first.",
    security(("bearer_token" = [])),
    params(OrgPath, PageParams),
    responses((status = 200, description = "A page of audit events", body = Envelope<Page<AuditEvent>>)),
)]
pub async fn admin_list_audit(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    let org = name_segment("org", path.into_inner())?;
    let paging = Paging::of(&req)?;
    let page = state
        .store
        .read(move |conn| {
            let org = service::find_organisation_as(conn, &actor, &org)?;
            let rows = db::audit::list_for_organisation(conn, &org.id, paging.after(), paging.fetch())?;
            let (rows, next_cursor) = paging.split(rows, |e| (e.at, &e.id));
            Ok(Page {
                items: rows.into_iter().map(audit_out).collect(),
                next_cursor,
            })
        })
        .await?;
    Ok(ok(page))
}

/// The import's query.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `true`: check the whole file and count what it would create, writing nothing.
    #[param(nullable = false)]
    pub dry_run: Option<bool>,
}

/// `POST /admin/v1/import`.
#[utoipa::path(
    post,
    path = routes::ADMIN_IMPORT,
    tag = TAG_ADMIN,
    summary = "Import organisations, units, users and Web API keys",
    description = "Operators only. The body is NDJSON (`Content-Type: application/x-ndjson`), one JSON object \
        per line whose `type` is `organisation`, `unit`, `user` or `web_api_key`, up to \
        `http.max_import_bytes`. The whole file is checked before anything is written, then written in one \
        transaction: a refused line changes nothing, and `status.description` names the line and the field \
        (`INVALID_REQUEST` for a line that is malformed, breaks a naming rule, repeats another or names what \
        neither the file nor the database has; `CONFLICT` for one that disagrees with what is stored). A line \
        equal to what is stored is counted `unchanged`, so the same file can be imported again. Users bring a \
        `password_hash` (bcrypt, Argon2, scrypt or PBKDF2, within cost bounds; replaced by Argon2id at the \
        user's first login), a clear `password`, or neither; keys keep their value.",
    security(("bearer_token" = [])),
    params(ImportParams),
    request_body(
        content = String,
        content_type = "application/x-ndjson",
        description = "NDJSON: one JSON object per line.",
    ),
    responses((
        status = 200,
        description = "What the file created, or would create on a dry run",
        body = Envelope<ImportReport>,
    )),
)]
pub async fn admin_import(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let actor = caller(&req, &state).await?;
    // Before the body is read: an admin's file is not worth reading.
    if actor.role() != Role::Operator {
        return Err(ApiError::Forbidden("only an operator imports".into()));
    }
    let dry_run = match query_field(&req, "dry_run")?.as_deref() {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::InvalidRequest("dry_run must be true or false".into())),
    };
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(IMPORT_CONTENT_TYPE));
    if !ndjson {
        return Err(ApiError::InvalidRequest(format!(
            "the body must be NDJSON, sent as Content-Type: {IMPORT_CONTENT_TYPE}"
        )));
    }
    let body = read_body(&req, payload, state.settings.http.max_import_bytes).await?;
    let hasher = state.hasher.clone();
    let now = state.clock.now();
    let report: ImportReport = state
        .store
        .blocking(move |conn| Ok(import::run(conn, &hasher, &actor, &body, dry_run, now)?))
        .await?;
    Ok(ok(report))
}
