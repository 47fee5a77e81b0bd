//! The administration API, `/admin/v1`, end to end on SQLite and PostgreSQL, through the SDK's admin client
//! and through raw HTTP where the wire shape matters (status codes, envelope, headers): who may call what (the
//! role matrix), every malformed body, query and path segment, keyset paging while users are being added,
//! changes that end sessions having ended them before they answer (also against racing logins), concurrent
//! duplicate creations, the audit trail, Web API keys and the session list.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crm_auth_client::Credentials;
use crm_auth_client::admin::{
    Admin, NewKey, NewOrganisation, NewUnit, NewUser as NewUserBody, PageQuery, TryStreamExt as _, User,
    UserChange,
};
use crm_auth_core::{AuthMethod, ErrorCode, Role, is_id, new_id};
use crm_auth_server::clock::Clock as _;
use crm_auth_server::db::organisation::Organisation;
use crm_auth_server::db::schema::{
    api_keys, audit_events, organisations, sessions, units, user_units, users,
};
use crm_auth_server::db::{self, DbConnection};
use crm_auth_server::password::PasswordHasher;
use crm_auth_server::service::admin::{self, Actor, AdminError, NewUser};
use diesel::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Backend, ORG, PASSWORD, TestApp, USER, code};

backend_tests!(
    role_matrix,
    a_changed_role_takes_effect_at_once,
    bad_input_answers_its_code_and_changes_nothing,
    paging_sees_every_user_once_in_order_while_users_are_added,
    changes_that_end_sessions_have_ended_them_when_they_answer,
    no_session_survives_a_disable_racing_logins,
    concurrent_duplicate_creations_have_one_winner,
    every_change_is_one_audit_row_without_secrets,
    keys_are_shown_once_log_in_and_expire,
    session_list_shows_client_and_refresh,
);

/// The second organisation, with its own admin.
const BETA: &str = "Beta";
/// An organisation that does not exist.
const MISSING_ORG: &str = "Nowhere";
/// The address every test request comes from.
const LOCALHOST: &str = "127.0.0.1";

/// Who calls: the matrix's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    /// alice, a member of Acme.
    Member,
    /// ann, an admin of Acme, logged in with her password.
    AdminA,
    /// ann again, logged in with her Web API key: a key session administers as well.
    AdminAKey,
    /// bob, an admin of Beta.
    AdminB,
    /// olga, an operator (of Acme, administering every organisation).
    Operator,
    /// No `Authorization` header.
    NoToken,
    /// A bearer token that is no JWT.
    Garbage,
    /// ann's token of a session she released.
    Ended,
}

impl Caller {
    const ALL: [Caller; 8] = [
        Caller::Member,
        Caller::AdminA,
        Caller::AdminAKey,
        Caller::AdminB,
        Caller::Operator,
        Caller::NoToken,
        Caller::Garbage,
        Caller::Ended,
    ];

    /// The organisation an admin caller administers.
    fn home(self) -> Option<&'static str> {
        match self {
            Caller::AdminA | Caller::AdminAKey => Some(ORG),
            Caller::AdminB => Some(BETA),
            _ => None,
        }
    }
}

/// The seeded server: Acme (from `TestApp`: units Main, Second, Other; alice, a member) with ann (admin) and
/// olga (operator), and Beta (unit Hub) with bob (admin); a token for each caller.
struct Fixture {
    app: TestApp,
    acme_id: String,
    member: String,
    admin_a: String,
    admin_a_key: String,
    admin_b: String,
    operator: String,
    ended: String,
    /// Numbers fresh names.
    seq: AtomicUsize,
}

/// Adds a user with a role through the service functions, as the command line does.
fn add(
    conn: &mut DbConnection,
    org: &Organisation,
    username: &str,
    role: Role,
    (unit, password_hash): (&str, Option<&str>),
    now: i64,
) -> Result<db::user::User, AdminError> {
    let units = [unit.to_owned()];
    let new = NewUser {
        username,
        units: &units,
        default_unit: None,
        password_hash: password_hash.map(str::to_owned),
        role,
    };
    admin::add_user(conn, &Actor::Cli, org, new, now)
}

/// The unit users of a seeded organisation are put in.
fn home_unit(org: &str) -> &'static str {
    if org == BETA { "Hub" } else { "Main" }
}

impl Fixture {
    async fn new(backend: &Backend) -> anyhow::Result<Fixture> {
        let app = TestApp::start(backend).await?;
        let now = app.clock.now();
        let hash = PasswordHasher::hash_blocking(&app.state.settings.auth.argon2, PASSWORD)?;
        let (acme_id, ann_key) = {
            let conn = &mut *app.conn()?;
            let acme = admin::find_organisation(conn, ORG)?;
            let ann = add(conn, &acme, "ann", Role::Admin, ("Main", Some(&hash)), now)?;
            add(conn, &acme, "olga", Role::Operator, ("Main", Some(&hash)), now)?;
            let beta = admin::add_organisation(conn, &Actor::Cli, BETA, now)?;
            admin::add_unit(conn, &Actor::Cli, &beta, "Hub", Some("HB"), now)?;
            add(conn, &beta, "bob", Role::Admin, ("Hub", Some(&hash)), now)?;
            let (_, key) = admin::create_key(conn, &Actor::Cli, &acme, &ann, (None, None), now)?;
            (acme.id, key.expose().to_owned())
        };
        let login = |user: &'static str, org: &'static str| {
            let client = app.client.clone();
            async move {
                Ok::<_, anyhow::Error>(
                    client
                        .token(&Credentials::password(user, PASSWORD, org))
                        .await?
                        .as_str()
                        .to_owned(),
                )
            }
        };
        let ended = login("ann", ORG).await?;
        app.client.release(&ended).await?;
        Ok(Fixture {
            member: login(USER, ORG).await?,
            admin_a: login("ann", ORG).await?,
            admin_a_key: app
                .client
                .token(&Credentials::api_key(&ann_key))
                .await?
                .as_str()
                .to_owned(),
            admin_b: login("bob", BETA).await?,
            operator: login("olga", ORG).await?,
            ended,
            acme_id,
            app,
            seq: AtomicUsize::new(0),
        })
    }

    fn token(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Member => Some(&self.member),
            Caller::AdminA => Some(&self.admin_a),
            Caller::AdminAKey => Some(&self.admin_a_key),
            Caller::AdminB => Some(&self.admin_b),
            Caller::Operator => Some(&self.operator),
            Caller::NoToken => None,
            Caller::Garbage => Some("not-a-token"),
            Caller::Ended => Some(&self.ended),
        }
    }

    /// The SDK's admin client acting as `caller` (an empty bearer token for no token).
    fn sdk(&self, caller: Caller) -> anyhow::Result<Admin> {
        Ok(self.app.client.admin(self.token(caller).unwrap_or_default())?)
    }

    fn next(&self) -> usize {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh user without a password in a seeded organisation; returns its username.
    fn user(&self, org: &str, role: Role) -> anyhow::Result<String> {
        let username = format!("{}{}", role.as_str(), self.next());
        let conn = &mut *self.app.conn()?;
        let found = admin::find_organisation(conn, org)?;
        add(
            conn,
            &found,
            &username,
            role,
            (home_unit(org), None),
            self.app.clock.now(),
        )?;
        Ok(username)
    }

    /// A fresh key of a user; returns its id and the key.
    fn key(&self, org: &str, username: &str) -> anyhow::Result<(String, String)> {
        let conn = &mut *self.app.conn()?;
        let found = admin::find_organisation(conn, org)?;
        let user = admin::find_user(conn, &found, username)?;
        let (row, key) = admin::create_key(
            conn,
            &Actor::Cli,
            &found,
            &user,
            (None, None),
            self.app.clock.now(),
        )?;
        Ok((row.id, key.expose().to_owned()))
    }

    /// A live session of a user, opened with a fresh key; returns its id.
    async fn session(&self, org: &str, username: &str) -> anyhow::Result<String> {
        let (_, key) = self.key(org, username)?;
        let token = self.app.client.token(&Credentials::api_key(&key)).await?;
        Ok(token.session_id().to_owned())
    }
}

/// One administrative request, with the path parameters and JSON body (as sent, valid or not) it carries.
#[derive(Clone, Debug)]
enum Call {
    ListOrgs,
    /// `(org)`.
    GetOrg(String),
    /// `(body)`.
    CreateOrg(String),
    ListUnits(String),
    /// `(org, body)`.
    CreateUnit(String, String),
    ListUsers(String),
    CreateUser(String, String),
    /// `(org, username)`.
    GetUser(String, String),
    /// `(org, username, body)`.
    PatchUser(String, String, String),
    EndSessions(String, String),
    ListKeys(String),
    CreateKey(String, String),
    /// `(org, id)`.
    RevokeKey(String, String),
    ListSessions(String),
    RevokeSession(String, String),
    ListAudit(String),
}

impl Call {
    /// The organisation the call names.
    fn org(&self) -> Option<&str> {
        match self {
            Call::ListOrgs | Call::CreateOrg(_) => None,
            Call::GetOrg(org)
            | Call::ListUnits(org)
            | Call::CreateUnit(org, _)
            | Call::ListUsers(org)
            | Call::CreateUser(org, _)
            | Call::GetUser(org, _)
            | Call::PatchUser(org, _, _)
            | Call::EndSessions(org, _)
            | Call::ListKeys(org)
            | Call::CreateKey(org, _)
            | Call::RevokeKey(org, _)
            | Call::ListSessions(org)
            | Call::RevokeSession(org, _)
            | Call::ListAudit(org) => Some(org),
        }
    }

    /// The same call naming another organisation.
    fn in_org(&self, other: &str) -> Call {
        let o = other.to_owned();
        match self.clone() {
            Call::ListOrgs => Call::ListOrgs,
            Call::CreateOrg(b) => Call::CreateOrg(b),
            Call::GetOrg(_) => Call::GetOrg(o),
            Call::ListUnits(_) => Call::ListUnits(o),
            Call::CreateUnit(_, b) => Call::CreateUnit(o, b),
            Call::ListUsers(_) => Call::ListUsers(o),
            Call::CreateUser(_, b) => Call::CreateUser(o, b),
            Call::GetUser(_, u) => Call::GetUser(o, u),
            Call::PatchUser(_, u, b) => Call::PatchUser(o, u, b),
            Call::EndSessions(_, u) => Call::EndSessions(o, u),
            Call::ListKeys(_) => Call::ListKeys(o),
            Call::CreateKey(_, b) => Call::CreateKey(o, b),
            Call::RevokeKey(_, id) => Call::RevokeKey(o, id),
            Call::ListSessions(_) => Call::ListSessions(o),
            Call::RevokeSession(_, id) => Call::RevokeSession(o, id),
            Call::ListAudit(_) => Call::ListAudit(o),
        }
    }

    /// The method, the path's segments after `/admin/v1`, and the body.
    fn http(&self) -> (Method, Vec<&str>, Option<&str>) {
        let orgs = "organisations";
        match self {
            Call::ListOrgs => (Method::GET, vec![orgs], None),
            Call::CreateOrg(b) => (Method::POST, vec![orgs], Some(b)),
            Call::GetOrg(o) => (Method::GET, vec![orgs, o], None),
            Call::ListUnits(o) => (Method::GET, vec![orgs, o, "units"], None),
            Call::CreateUnit(o, b) => (Method::POST, vec![orgs, o, "units"], Some(b)),
            Call::ListUsers(o) => (Method::GET, vec![orgs, o, "users"], None),
            Call::CreateUser(o, b) => (Method::POST, vec![orgs, o, "users"], Some(b)),
            Call::GetUser(o, u) => (Method::GET, vec![orgs, o, "users", u], None),
            Call::PatchUser(o, u, b) => (Method::PATCH, vec![orgs, o, "users", u], Some(b)),
            Call::EndSessions(o, u) => (Method::DELETE, vec![orgs, o, "users", u, "sessions"], None),
            Call::ListKeys(o) => (Method::GET, vec![orgs, o, "keys"], None),
            Call::CreateKey(o, b) => (Method::POST, vec![orgs, o, "keys"], Some(b)),
            Call::RevokeKey(o, id) => (Method::DELETE, vec![orgs, o, "keys", id], None),
            Call::ListSessions(o) => (Method::GET, vec![orgs, o, "sessions"], None),
            Call::RevokeSession(o, id) => (Method::DELETE, vec![orgs, o, "sessions", id], None),
            Call::ListAudit(o) => (Method::GET, vec![orgs, o, "audit"], None),
        }
    }

    /// The same request through the SDK; the outer error is the test's own (a body the SDK's types cannot
    /// carry).
    async fn sdk(&self, admin: &Admin) -> anyhow::Result<Result<(), crm_auth_client::Error>> {
        let page = PageQuery::default();
        Ok(match self {
            Call::ListOrgs => admin.list_organisations(&page).await.map(drop),
            Call::CreateOrg(b) => {
                let new: NewOrganisation = serde_json::from_str(b)?;
                admin.create_organisation(&new.name).await.map(drop)
            }
            Call::GetOrg(o) => admin.organisation(o).await.map(drop),
            Call::ListUnits(o) => admin.list_units(o, &page).await.map(drop),
            Call::CreateUnit(o, b) => admin
                .create_unit(o, &serde_json::from_str::<NewUnit>(b)?)
                .await
                .map(drop),
            Call::ListUsers(o) => admin.list_users(o, &page).await.map(drop),
            Call::CreateUser(o, b) => admin
                .create_user(o, &serde_json::from_str::<NewUserBody>(b)?)
                .await
                .map(drop),
            Call::GetUser(o, u) => admin.user(o, u).await.map(drop),
            Call::PatchUser(o, u, b) => admin
                .update_user(o, u, &serde_json::from_str::<UserChange>(b)?)
                .await
                .map(drop),
            Call::EndSessions(o, u) => admin.end_user_sessions(o, u).await.map(drop),
            Call::ListKeys(o) => admin.list_keys(o, &page).await.map(drop),
            Call::CreateKey(o, b) => admin
                .create_key(o, &serde_json::from_str::<NewKey>(b)?)
                .await
                .map(drop),
            Call::RevokeKey(o, id) => admin.revoke_key(o, id).await,
            Call::ListSessions(o) => admin.list_sessions(o, None, &page).await.map(drop),
            Call::RevokeSession(o, id) => admin.revoke_session(o, id).await,
            Call::ListAudit(o) => admin.list_audit(o, &page).await.map(drop),
        })
    }
}

/// An answer read raw, its envelope checked against the contract.
#[derive(Debug)]
struct Answer {
    status: u16,
    code: String,
    description: String,
    message: String,
    data: Value,
    /// The body as sent.
    text: String,
}

/// Reads an answer and checks what every admin answer must be: JSON in the envelope, `OK` with empty
/// `description` and `message`, or an error code with `data` `{}` and a message; never a 500.
async fn answer(res: reqwest::Response) -> anyhow::Result<Answer> {
    let status = res.status().as_u16();
    let content_type = crate::common::header(&res, "content-type").unwrap_or_default();
    let text = res.text().await?;
    anyhow::ensure!(
        content_type.starts_with("application/json"),
        "{status} answered {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text)?;
    let field = |name: &str| {
        body["status"][name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("status.{name} is not a string: {text}"))
    };
    let (code, description, message) = (field("code")?, field("description")?, field("message")?);
    anyhow::ensure!(status != 500 && code != "INTERNAL_ERROR", "a 500: {text}");
    if code == "OK" {
        anyhow::ensure!(
            (200..300).contains(&status) && description.is_empty() && message.is_empty(),
            "{status}: {text}"
        );
    } else {
        let known = ErrorCode::ALL
            .iter()
            .find(|c| c.as_str() == code)
            .ok_or_else(|| anyhow::anyhow!("unknown code: {text}"))?;
        anyhow::ensure!(known.http_status() == status, "{status} with {code}");
        anyhow::ensure!(
            body["data"] == json!({}) && !message.is_empty(),
            "error envelope: {text}"
        );
    }
    Ok(Answer {
        status,
        code,
        description,
        message,
        data: body["data"].clone(),
        text,
    })
}

/// Sends `call` raw with a bearer token and a query.
async fn send(
    app: &TestApp,
    token: Option<&str>,
    call: &Call,
    query: &[(&str, &str)],
) -> anyhow::Result<Answer> {
    let (method, segments, body) = call.http();
    let mut url = reqwest::Url::parse(&app.url)?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("base url"))?
        .pop_if_empty()
        .extend(["admin", "v1"])
        .extend(segments);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    answer(req.send().await?).await
}

/// A raw request to a path at the server's root.
async fn send_path(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<Answer> {
    let res = reqwest::Client::new()
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await?;
    answer(res).await
}

/// The HTTP status and `status.code` an answer should have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Want(u16, &'static str);

const OK: Want = Want(200, "OK");
const CREATED: Want = Want(201, "OK");
const FORBIDDEN: Want = Want(403, "FORBIDDEN");
const NOT_FOUND: Want = Want(404, "NOT_FOUND");
const INVALID: Want = Want(400, "INVALID_REQUEST");
const CONFLICT: Want = Want(409, "CONFLICT");

impl Want {
    fn is_success(self) -> bool {
        self.0 < 300
    }
}

/// Everything an administrative request could change, to show that a refused one changed nothing.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    organisations: Vec<(String, String, bool)>,
    units: Vec<(String, String, Option<String>, bool)>,
    users: Vec<(String, String, String, bool, Option<String>)>,
    memberships: Vec<(String, String, bool)>,
    keys: Vec<(String, Option<i64>, Option<i64>)>,
    live_sessions: Vec<String>,
    audit: i64,
}

fn snapshot(app: &TestApp) -> anyhow::Result<Snapshot> {
    let conn = &mut *app.conn()?;
    Ok(Snapshot {
        organisations: organisations::table
            .select((organisations::id, organisations::name, organisations::is_active))
            .order(organisations::id)
            .load(conn)?,
        units: units::table
            .select((units::id, units::name, units::code, units::is_active))
            .order(units::id)
            .load(conn)?,
        users: users::table
            .select((
                users::id,
                users::username,
                users::role,
                users::is_active,
                users::password_hash,
            ))
            .order(users::id)
            .load(conn)?,
        memberships: user_units::table
            .select((user_units::user_id, user_units::unit_id, user_units::is_default))
            .order((user_units::user_id, user_units::unit_id))
            .load(conn)?,
        keys: api_keys::table
            .select((api_keys::id, api_keys::revoked_at, api_keys::expires_at))
            .order(api_keys::id)
            .load(conn)?,
        live_sessions: sessions::table
            .filter(sessions::ended_at.is_null())
            .select(sessions::id)
            .order(sessions::id)
            .load(conn)?,
        audit: audit_events::table.count().get_result(conn)?,
    })
}

/// An endpoint of the matrix, with what its request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    ListOrgs,
    GetOrgA,
    GetOrgAById,
    GetOrgB,
    GetMissingOrg,
    CreateOrg,
    ListUnitsA,
    ListUnitsB,
    CreateUnitA,
    ListUsersA,
    ListUsersB,
    CreateMemberA,
    CreateAdminA,
    CreateOperatorA,
    GetUserA,
    GetMissingUserA,
    PromoteMemberA,
    DisableOperatorA,
    GrantOperatorA,
    EndSessionsA,
    EndOperatorSessionsA,
    ListKeysA,
    CreateKeyA,
    CreateOperatorKeyA,
    RevokeKeyA,
    RevokeOperatorKeyA,
    RevokeKeyOfBViaA,
    RevokeMissingKeyA,
    ListSessionsA,
    RevokeSessionA,
    RevokeOperatorSessionA,
    RevokeSessionOfBViaA,
    RevokeMissingSessionA,
    ListAuditA,
    ListAuditB,
}

impl Op {
    const ALL: [Op; 35] = [
        Op::ListOrgs,
        Op::GetOrgA,
        Op::GetOrgAById,
        Op::GetOrgB,
        Op::GetMissingOrg,
        Op::CreateOrg,
        Op::ListUnitsA,
        Op::ListUnitsB,
        Op::CreateUnitA,
        Op::ListUsersA,
        Op::ListUsersB,
        Op::CreateMemberA,
        Op::CreateAdminA,
        Op::CreateOperatorA,
        Op::GetUserA,
        Op::GetMissingUserA,
        Op::PromoteMemberA,
        Op::DisableOperatorA,
        Op::GrantOperatorA,
        Op::EndSessionsA,
        Op::EndOperatorSessionsA,
        Op::ListKeysA,
        Op::CreateKeyA,
        Op::CreateOperatorKeyA,
        Op::RevokeKeyA,
        Op::RevokeOperatorKeyA,
        Op::RevokeKeyOfBViaA,
        Op::RevokeMissingKeyA,
        Op::ListSessionsA,
        Op::RevokeSessionA,
        Op::RevokeOperatorSessionA,
        Op::RevokeSessionOfBViaA,
        Op::RevokeMissingSessionA,
        Op::ListAuditA,
        Op::ListAuditB,
    ];

    /// The answer for each caller: the table itself.
    fn want(self, caller: Caller) -> Want {
        use Op::*;
        // Member, admin of Acme, admin of Beta, operator.
        let row = match self {
            ListOrgs => [FORBIDDEN, OK, OK, OK],
            GetOrgA | GetOrgAById | ListUnitsA | ListUsersA | GetUserA | PromoteMemberA | EndSessionsA
            | ListKeysA | RevokeKeyA | ListSessionsA | RevokeSessionA | ListAuditA => {
                [FORBIDDEN, OK, NOT_FOUND, OK]
            }
            GetOrgB | ListUnitsB | ListUsersB | ListAuditB => [FORBIDDEN, NOT_FOUND, OK, OK],
            GetMissingOrg
            | GetMissingUserA
            | RevokeKeyOfBViaA
            | RevokeMissingKeyA
            | RevokeSessionOfBViaA
            | RevokeMissingSessionA => [FORBIDDEN, NOT_FOUND, NOT_FOUND, NOT_FOUND],
            // Only operators create organisations.
            CreateOrg => [FORBIDDEN, FORBIDDEN, FORBIDDEN, CREATED],
            CreateUnitA | CreateMemberA | CreateAdminA | CreateKeyA => {
                [FORBIDDEN, CREATED, NOT_FOUND, CREATED]
            }
            // The role is checked before the organisation is looked up, for any organisation alike: an admin
            // never grants `operator`, so Beta's admin learns nothing about Acme.
            CreateOperatorA => [FORBIDDEN, FORBIDDEN, FORBIDDEN, CREATED],
            // An admin neither changes an operator (its state, sessions, keys) nor grants `operator`.
            DisableOperatorA
            | GrantOperatorA
            | EndOperatorSessionsA
            | RevokeOperatorKeyA
            | RevokeOperatorSessionA => [FORBIDDEN, FORBIDDEN, NOT_FOUND, OK],
            CreateOperatorKeyA => [FORBIDDEN, FORBIDDEN, NOT_FOUND, CREATED],
        };
        match caller {
            Caller::Member => row[0],
            Caller::AdminA | Caller::AdminAKey => row[1],
            Caller::AdminB => row[2],
            Caller::Operator => row[3],
            Caller::NoToken | Caller::Garbage => Want(401, "INVALID_TOKEN"),
            Caller::Ended => Want(401, "SESSION_ENDED"),
        }
    }

    /// The request, with whatever it acts on freshly made (a user, key or session of its own), so that each
    /// case starts from the same standing.
    async fn prepare(self, fx: &Fixture) -> anyhow::Result<Call> {
        use Op::*;
        let n = fx.next();
        let (a, b) = (ORG.to_owned(), BETA.to_owned());
        Ok(match self {
            ListOrgs => Call::ListOrgs,
            GetOrgA => Call::GetOrg(a),
            GetOrgAById => Call::GetOrg(fx.acme_id.clone()),
            GetOrgB => Call::GetOrg(b),
            GetMissingOrg => Call::GetOrg(MISSING_ORG.into()),
            CreateOrg => Call::CreateOrg(json!({"name": format!("Org {n}")}).to_string()),
            ListUnitsA => Call::ListUnits(a),
            ListUnitsB => Call::ListUnits(b),
            CreateUnitA => Call::CreateUnit(
                a,
                json!({"name": format!("Unit {n}"), "code": format!("U{n}")}).to_string(),
            ),
            ListUsersA => Call::ListUsers(a),
            ListUsersB => Call::ListUsers(b),
            CreateMemberA => Call::CreateUser(
                a,
                json!({"username": format!("new{n}"), "units": ["Main"]}).to_string(),
            ),
            CreateAdminA => Call::CreateUser(
                a,
                json!({"username": format!("new{n}"), "password": "pw of a new admin", "units": ["MN", "Second"],
                    "default_unit": "SC", "role": "admin"})
                .to_string(),
            ),
            CreateOperatorA => Call::CreateUser(
                a,
                json!({"username": format!("new{n}"), "units": ["Main"], "role": "operator"}).to_string(),
            ),
            GetUserA => Call::GetUser(a, USER.into()),
            GetMissingUserA => Call::GetUser(a, "nobody".into()),
            PromoteMemberA => Call::PatchUser(
                a,
                fx.user(ORG, Role::Member)?,
                json!({"role": "admin"}).to_string(),
            ),
            DisableOperatorA => Call::PatchUser(
                a,
                fx.user(ORG, Role::Operator)?,
                json!({"disabled": true}).to_string(),
            ),
            GrantOperatorA => Call::PatchUser(
                a,
                fx.user(ORG, Role::Member)?,
                json!({"role": "operator"}).to_string(),
            ),
            EndSessionsA | EndOperatorSessionsA => {
                let role = if self == EndSessionsA {
                    Role::Member
                } else {
                    Role::Operator
                };
                let username = fx.user(ORG, role)?;
                fx.session(ORG, &username).await?;
                Call::EndSessions(a, username)
            }
            ListKeysA => Call::ListKeys(a),
            CreateKeyA => Call::CreateKey(
                a,
                json!({"username": USER, "name": format!("key {n}")}).to_string(),
            ),
            CreateOperatorKeyA => Call::CreateKey(
                a,
                json!({"username": fx.user(ORG, Role::Operator)?}).to_string(),
            ),
            RevokeKeyA | RevokeOperatorKeyA | RevokeKeyOfBViaA => {
                let (org, role) = match self {
                    RevokeKeyA => (ORG, Role::Member),
                    RevokeOperatorKeyA => (ORG, Role::Operator),
                    _ => (BETA, Role::Member),
                };
                let (id, _) = fx.key(org, &fx.user(org, role)?)?;
                Call::RevokeKey(a, id)
            }
            RevokeMissingKeyA => Call::RevokeKey(a, new_id()),
            ListSessionsA => Call::ListSessions(a),
            RevokeSessionA | RevokeOperatorSessionA | RevokeSessionOfBViaA => {
                let (org, role) = match self {
                    RevokeSessionA => (ORG, Role::Member),
                    RevokeOperatorSessionA => (ORG, Role::Operator),
                    _ => (BETA, Role::Member),
                };
                Call::RevokeSession(a, fx.session(org, &fx.user(org, role)?).await?)
            }
            RevokeMissingSessionA => Call::RevokeSession(a, new_id()),
            ListAuditA => Call::ListAudit(a),
            ListAuditB => Call::ListAudit(b),
        })
    }
}

/// Each caller against each endpoint, raw and through the SDK: the exact status and code, nothing changed by
/// a refusal, and an admin naming another organisation answered exactly as for one that does not exist.
async fn role_matrix(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let mut failures = Vec::new();
    let mut cases = 0;
    for op in Op::ALL {
        for caller in Caller::ALL {
            let want = op.want(caller);
            // A refused request leaves what it names as it was, so the SDK's turn can name it again.
            let mut call = op.prepare(&fx).await?;
            for raw in [true, false] {
                cases += 1;
                if !raw && want.is_success() {
                    call = op.prepare(&fx).await?;
                }
                let before = if want.is_success() {
                    None
                } else {
                    Some(snapshot(&fx.app)?)
                };
                let case = format!("{op:?} by {caller:?} ({})", if raw { "raw" } else { "sdk" });
                if raw {
                    let got = send(&fx.app, fx.token(caller), &call, &[]).await?;
                    if (got.status, got.code.as_str()) != (want.0, want.1) {
                        failures.push(format!("{case}: want {want:?}, got {} {}", got.status, got.text));
                    }
                    failures.extend(
                        matrix_checks(&fx, caller, &call, &got)
                            .await?
                            .map(|f| format!("{case}: {f}")),
                    );
                } else {
                    let got = call.sdk(&fx.sdk(caller)?).await?;
                    let matched = match &got {
                        Ok(()) => want.is_success(),
                        Err(e) => {
                            e.http_status() == Some(want.0) && e.code().map(|c| c.as_str()) == Some(want.1)
                        }
                    };
                    if !matched {
                        failures.push(format!("{case}: want {want:?}, got {got:?}"));
                    }
                }
                if before.is_some_and(|before| snapshot(&fx.app).ok() != Some(before)) {
                    failures.push(format!("{case}: a refused request changed something"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cases, Op::ALL.len() * Caller::ALL.len() * 2);
    Ok(())
}

/// What the matrix checks beyond the code of a raw answer: what a list of organisations holds for each caller,
/// and that another organisation's `NOT_FOUND` reads exactly as a missing one's.
async fn matrix_checks(
    fx: &Fixture,
    caller: Caller,
    call: &Call,
    got: &Answer,
) -> anyhow::Result<Option<String>> {
    if matches!(call, Call::ListOrgs) && got.status == 200 {
        let names: Vec<&str> = got.data["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|o| o["name"].as_str()).collect())
            .unwrap_or_default();
        let fits = match caller.home() {
            Some(home) => names == [home],
            None => names.contains(&ORG) && names.contains(&BETA),
        };
        return Ok((!fits).then(|| format!("{caller:?} listed {names:?}")));
    }
    let (Some(home), Some(named)) = (caller.home(), call.org()) else {
        return Ok(None);
    };
    let own = named == home || (home == ORG && named == fx.acme_id);
    if own || got.status != 404 {
        return Ok(None);
    }
    let missing = if is_id(named) {
        new_id()
    } else {
        MISSING_ORG.to_owned()
    };
    let twin = send(&fx.app, fx.token(caller), &call.in_org(&missing), &[]).await?;
    let same = twin.status == got.status
        && twin.code == got.code
        && twin.message == got.message
        && twin.description == got.description.replace(named, &missing);
    Ok((!same).then(|| format!("answered {} but a missing organisation {}", got.text, twin.text)))
}

/// A role changed through the API bounds the very next call of the user's live session.
async fn a_changed_role_takes_effect_at_once(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let operator = fx.sdk(Caller::Operator)?;
    let page = PageQuery::default();
    let dina = NewUserBody {
        username: "dina".into(),
        password: Some("dina's password".into()),
        units: vec!["Main".into()],
        default_unit: None,
        role: Some(Role::Admin),
    };
    operator.create_user(ORG, &dina).await?;
    let token = fx
        .app
        .client
        .token(&Credentials::password("dina", "dina's password", ORG))
        .await?;
    let as_dina = fx.app.client.admin(token.as_str())?;
    as_dina.list_users(ORG, &page).await?;
    let demote = UserChange {
        role: Some(Role::Member),
        ..UserChange::default()
    };
    assert_eq!(
        operator.update_user(ORG, "dina", &demote).await?.role,
        Role::Member
    );
    assert_eq!(
        code(as_dina.list_users(ORG, &page).await),
        Some(ErrorCode::Forbidden)
    );
    // The session itself lives on: only the administration is taken away.
    fx.app.client.validate(token.as_str()).await?;
    let promote = UserChange {
        role: Some(Role::Admin),
        ..UserChange::default()
    };
    operator.update_user(ORG, "DINA", &promote).await?;
    as_dina.list_users(ORG, &page).await?;
    // A member promoted acts at once too, with the token it already has.
    let as_alice = fx.sdk(Caller::Member)?;
    assert_eq!(
        code(as_alice.list_keys(ORG, &page).await),
        Some(ErrorCode::Forbidden)
    );
    operator.update_user(ORG, USER, &promote).await?;
    as_alice.list_keys(ORG, &page).await?;
    // Disabled: the session is over, so the next call is SESSION_ENDED, not FORBIDDEN.
    let disable = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    operator.update_user(ORG, "dina", &disable).await?;
    assert_eq!(
        code(as_dina.list_users(ORG, &page).await),
        Some(ErrorCode::SessionEnded)
    );
    Ok(())
}

/// One request of the bad-input table: who sends it, what, and the answer it must get.
struct Bad {
    caller: Caller,
    call: Call,
    query: Vec<(&'static str, String)>,
    want: Want,
}

fn bad(call: Call, want: Want) -> Bad {
    Bad {
        caller: Caller::Operator,
        call,
        query: Vec::new(),
        want,
    }
}

/// The bad bodies of each endpoint that takes one, for the operator (who may do everything, so only the
/// input is at fault).
fn bad_bodies(now: i64) -> Vec<Bad> {
    let a = || ORG.to_owned();
    let long = "x".repeat(257);
    let id_shaped = "0123456789abcdef0123456789ABCDEF";
    let mut cases = Vec::new();
    // Bodies that are no JSON object, for every endpoint with a body.
    for body in ["{", "[]", "\"text\"", "null", "{\"name\": }", "\u{feff}{}"] {
        let body = body.to_owned();
        cases.push(bad(Call::CreateOrg(body.clone()), INVALID));
        cases.push(bad(Call::CreateUnit(a(), body.clone()), INVALID));
        cases.push(bad(Call::CreateUser(a(), body.clone()), INVALID));
        cases.push(bad(Call::PatchUser(a(), USER.into(), body.clone()), INVALID));
        cases.push(bad(Call::CreateKey(a(), body), INVALID));
    }
    let org = |v: Value, want| bad(Call::CreateOrg(v.to_string()), want);
    cases.extend([
        org(json!({}), INVALID),
        org(json!({"name": 5}), INVALID),
        org(json!({"name": null}), INVALID),
        org(json!({"name": ["Acme2"]}), INVALID),
        org(json!({"name": ""}), INVALID),
        org(json!({"name": "   "}), INVALID),
        org(json!({"name": " Padded"}), INVALID),
        org(json!({"name": long}), INVALID),
        org(json!({"name": "Nul\u{0}Org"}), INVALID),
        org(json!({"name": "Tab\tOrg"}), INVALID),
        org(json!({"name": "Evil\u{202e}Org"}), INVALID),
        org(json!({"name": id_shaped}), INVALID),
        org(json!({"name": "Fine", "extra": 1}), INVALID),
        org(json!({"name": "Fine", "Name": "Fine"}), INVALID),
        org(json!({"name": "acme"}), CONFLICT),
        org(json!({"name": "ACME"}), CONFLICT),
        org(json!({"name": "bEtA"}), CONFLICT),
    ]);
    let unit = |v: Value, want| bad(Call::CreateUnit(a(), v.to_string()), want);
    cases.extend([
        unit(json!({}), INVALID),
        unit(json!({"code": "NC"}), INVALID),
        unit(json!({"name": 1}), INVALID),
        unit(json!({"name": "New", "code": 5}), INVALID),
        unit(json!({"name": "New", "code": ["NC"]}), INVALID),
        unit(json!({"name": ""}), INVALID),
        unit(json!({"name": long}), INVALID),
        unit(json!({"name": "New", "code": long}), INVALID),
        unit(json!({"name": "Ne\u{0}w"}), INVALID),
        unit(json!({"name": "New", "code": "N\u{0}C"}), INVALID),
        unit(json!({"name": "New", "code": " NC"}), INVALID),
        unit(json!({"name": id_shaped}), INVALID),
        unit(json!({"name": "New", "colour": "red"}), INVALID),
        unit(json!({"name": "main"}), CONFLICT),
        unit(json!({"name": "SECOND", "code": "NEW"}), CONFLICT),
        unit(json!({"name": "New", "code": "mn"}), CONFLICT),
        unit(json!({"name": "New", "code": "Sc"}), CONFLICT),
        bad(
            Call::CreateUnit(MISSING_ORG.into(), json!({"name": "New"}).to_string()),
            NOT_FOUND,
        ),
    ]);
    let user = |mut v: Value, want| {
        if let Some(map) = v.as_object_mut() {
            map.entry("username").or_insert(json!("newbie"));
            map.entry("units").or_insert(json!(["Main"]));
        }
        bad(Call::CreateUser(a(), v.to_string()), want)
    };
    let many: Vec<String> = (0..257).map(|i| format!("U{i}")).collect();
    cases.extend([
        bad(Call::CreateUser(a(), json!({}).to_string()), INVALID),
        bad(
            Call::CreateUser(a(), json!({"units": ["Main"]}).to_string()),
            INVALID,
        ),
        bad(
            Call::CreateUser(a(), json!({"username": "newbie"}).to_string()),
            INVALID,
        ),
        user(json!({"units": []}), INVALID),
        user(json!({"units": null}), INVALID),
        user(json!({"units": "Main"}), INVALID),
        user(json!({"units": [1]}), INVALID),
        user(json!({"units": [""]}), INVALID),
        user(json!({"units": [long]}), INVALID),
        user(json!({"units": ["Ma\u{0}in"]}), INVALID),
        user(json!({"units": many}), INVALID),
        user(json!({"units": ["Nope"]}), NOT_FOUND),
        user(json!({"units": ["Main", "Nope"]}), NOT_FOUND),
        user(json!({"username": 5}), INVALID),
        user(json!({"username": ""}), INVALID),
        user(json!({"username": long}), INVALID),
        user(json!({"username": "new\u{0}bie"}), INVALID),
        user(json!({"username": "new\u{200b}bie"}), INVALID),
        user(json!({"username": id_shaped}), INVALID),
        user(json!({"role": "root"}), INVALID),
        user(json!({"role": ""}), INVALID),
        user(json!({"role": 1}), INVALID),
        user(json!({"role": ["admin"]}), INVALID),
        user(json!({"password": ""}), INVALID),
        user(json!({"password": 5}), INVALID),
        user(json!({"password": "p".repeat(1025)}), INVALID),
        user(json!({"default_unit": "Second"}), INVALID),
        user(json!({"default_unit": 5}), INVALID),
        user(json!({"default_unit": "Nope"}), NOT_FOUND),
        user(json!({"admin": true}), INVALID),
        user(
            json!({"password_hash": "$argon2id$v=19$m=256,t=1,p=1$c2FsdA$aGFzaA"}),
            INVALID,
        ),
        user(json!({"username": "ALICE"}), CONFLICT),
        user(
            json!({"username": "Alice", "password": "another", "role": "admin"}),
            CONFLICT,
        ),
        bad(
            Call::CreateUser(
                MISSING_ORG.into(),
                json!({"username": "newbie", "units": ["Main"]}).to_string(),
            ),
            NOT_FOUND,
        ),
    ]);
    let patch = |v: Value, want| bad(Call::PatchUser(a(), USER.into(), v.to_string()), want);
    cases.extend([
        patch(json!({}), INVALID),
        patch(json!({"disabled": null}), INVALID),
        patch(json!({"disabled": "yes"}), INVALID),
        patch(json!({"disabled": 1}), INVALID),
        patch(json!({"role": "root"}), INVALID),
        patch(json!({"role": true}), INVALID),
        patch(json!({"units": []}), INVALID),
        patch(json!({"units": [1]}), INVALID),
        patch(json!({"units": "Main"}), INVALID),
        patch(json!({"units": ["Nope"]}), NOT_FOUND),
        patch(json!({"password": ""}), INVALID),
        patch(json!({"password": 5}), INVALID),
        patch(json!({"password": "p".repeat(1025)}), INVALID),
        patch(json!({"default_unit": "Other"}), INVALID),
        patch(json!({"default_unit": long}), INVALID),
        patch(json!({"username": "bob"}), INVALID),
        patch(json!({"disabled": true, "extra": 1}), INVALID),
        // A change of several parts is all or nothing: the parts that come before the bad one are not kept.
        patch(json!({"role": "admin", "units": ["Nope"]}), NOT_FOUND),
        patch(json!({"role": "admin", "default_unit": "Other"}), INVALID),
        patch(
            json!({"role": "admin", "units": ["Second"], "default_unit": "Main"}),
            INVALID,
        ),
        patch(
            json!({"role": "admin", "units": ["Main"], "disabled": "no"}),
            INVALID,
        ),
        bad(
            Call::PatchUser(a(), "nobody".into(), json!({"disabled": true}).to_string()),
            NOT_FOUND,
        ),
        bad(
            Call::PatchUser(
                MISSING_ORG.into(),
                USER.into(),
                json!({"disabled": true}).to_string(),
            ),
            NOT_FOUND,
        ),
    ]);
    let key = |mut v: Value, want| {
        if let Some(map) = v.as_object_mut() {
            map.entry("username").or_insert(json!(USER));
        }
        bad(Call::CreateKey(a(), v.to_string()), want)
    };
    cases.extend([
        bad(Call::CreateKey(a(), json!({}).to_string()), INVALID),
        bad(Call::CreateKey(a(), json!({"name": "k"}).to_string()), INVALID),
        key(json!({"username": 5}), INVALID),
        key(json!({"username": ""}), INVALID),
        key(json!({"username": "nobody"}), NOT_FOUND),
        key(json!({"username": "bob"}), NOT_FOUND),
        key(json!({"name": 5}), INVALID),
        key(json!({"name": long}), INVALID),
        key(json!({"name": "k\u{0}"}), INVALID),
        key(json!({"name": " k"}), INVALID),
        key(json!({"expires_at": "soon"}), INVALID),
        key(json!({"expires_at": 1.5}), INVALID),
        key(json!({"expires_at": true}), INVALID),
        key(json!({"expires_at": 1e30}), INVALID),
        key(json!({"expires_at": now - 1}), INVALID),
        key(json!({"expires_at": now}), INVALID),
        key(json!({"expires_at": -1}), INVALID),
        key(json!({"scope": "all"}), INVALID),
        key(json!({"key": "20B3EF1D0EDB4E7C9CE85059B1356AF5"}), INVALID),
    ]);
    cases
}

/// Bad paths and queries: ids that are none, over-long or NUL segments, and bad paging on every list.
fn bad_paths(unknown_session: &str) -> Vec<Bad> {
    let a = || ORG.to_owned();
    let long = "x".repeat(257);
    let lower = new_id().to_lowercase();
    let mut cases = Vec::new();
    for id in [
        "abc",
        "",
        "\u{0}",
        &lower,
        &format!("{}0", new_id()),
        &new_id(),
        "../keys",
    ] {
        cases.push(bad(Call::RevokeKey(a(), id.to_owned()), NOT_FOUND));
        cases.push(bad(Call::RevokeSession(a(), id.to_owned()), NOT_FOUND));
    }
    // A real session, but named under another organisation.
    cases.push(bad(
        Call::RevokeSession(BETA.into(), unknown_session.to_owned()),
        NOT_FOUND,
    ));
    cases.extend([
        bad(Call::GetOrg(long.clone()), INVALID),
        bad(Call::GetOrg("Ac\u{0}me".into()), INVALID),
        bad(Call::ListUsers(long.clone()), INVALID),
        bad(Call::GetUser(a(), long.clone()), INVALID),
        bad(Call::GetUser(a(), "ali\u{0}ce".into()), INVALID),
        bad(Call::EndSessions(a(), long.clone()), INVALID),
        bad(Call::EndSessions(a(), "nobody".into()), NOT_FOUND),
        bad(Call::EndSessions(MISSING_ORG.into(), USER.into()), NOT_FOUND),
        bad(
            Call::PatchUser(a(), long.clone(), json!({"disabled": true}).to_string()),
            INVALID,
        ),
        bad(Call::RevokeKey(long.clone(), new_id()), INVALID),
    ]);
    let lists = [
        Call::ListOrgs,
        Call::ListUnits(a()),
        Call::ListUsers(a()),
        Call::ListKeys(a()),
        Call::ListSessions(a()),
        Call::ListAudit(a()),
    ];
    let queries = [
        ("limit", "0"),
        ("limit", "501"),
        ("limit", "x"),
        ("limit", "-1"),
        ("limit", "1.5"),
        ("limit", "99999999999999999999"),
        ("limit", " 5"),
        ("cursor", "garbage"),
        ("cursor", "1.abc"),
        ("cursor", "x.0123456789ABCDEF0123456789ABCDEF"),
        ("cursor", "1.0123456789abcdef0123456789abcdef"),
        ("cursor", "."),
    ];
    for list in lists {
        for (name, value) in queries {
            cases.push(Bad {
                query: vec![(name, value.to_owned())],
                ..bad(list.clone(), INVALID)
            });
        }
        cases.push(Bad {
            query: vec![("cursor", long.clone())],
            ..bad(list.clone(), INVALID)
        });
        // Accepted: empty values are the defaults, the bounds are in.
        for (name, value) in [("limit", ""), ("cursor", ""), ("limit", "1"), ("limit", "500")] {
            cases.push(Bad {
                query: vec![(name, value.to_owned())],
                ..bad(list.clone(), OK)
            });
        }
    }
    for (username, want) in [
        ("nobody", NOT_FOUND),
        (long.as_str(), INVALID),
        ("al\u{0}ice", INVALID),
    ] {
        cases.push(Bad {
            query: vec![("username", username.to_owned())],
            ..bad(Call::ListSessions(a()), want)
        });
    }
    // The caller is checked before the input: no token and a member learn nothing about the body.
    for (caller, want) in [
        (Caller::NoToken, Want(401, "INVALID_TOKEN")),
        (Caller::Member, FORBIDDEN),
        (Caller::Ended, Want(401, "SESSION_ENDED")),
    ] {
        for call in [
            Call::CreateOrg("{".into()),
            Call::CreateUser(a(), json!({"units": []}).to_string()),
            Call::RevokeKey(a(), "abc".into()),
            Call::ListUsers(long.clone()),
        ] {
            cases.push(Bad {
                caller,
                ..bad(call, want)
            });
        }
        cases.push(Bad {
            caller,
            query: vec![("limit", "0".into())],
            ..bad(Call::ListOrgs, want)
        });
    }
    cases
}

/// Every bad body, path and query of every endpoint answers its own code, never a 500, and changes nothing.
async fn bad_input_answers_its_code_and_changes_nothing(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let session = fx.session(ORG, USER).await?;
    let mut cases = bad_bodies(fx.app.clock.now());
    cases.extend(bad_paths(&session));
    let mut failures = Vec::new();
    for case in &cases {
        let before = snapshot(&fx.app)?;
        let query: Vec<(&str, &str)> = case.query.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let got = send(&fx.app, fx.token(case.caller), &case.call, &query).await;
        let label = format!("{:?} {:?} by {:?}", case.call, case.query, case.caller);
        match got {
            Err(e) => failures.push(format!("{label}: {e}")),
            Ok(got) if (got.status, got.code.as_str()) != (case.want.0, case.want.1) => {
                failures.push(format!(
                    "{label}: want {:?}, got {} {}",
                    case.want, got.status, got.text
                ));
            }
            Ok(_) => {}
        }
        if snapshot(&fx.app)? != before {
            failures.push(format!("{label}: changed something"));
        }
    }
    // The transport's own refusals answer the envelope too.
    let op = fx.token(Caller::Operator).unwrap_or_default();
    let checks = [
        (
            Method::PUT,
            "/admin/v1/organisations",
            "{}",
            Want(405, "METHOD_NOT_ALLOWED"),
        ),
        (
            Method::DELETE,
            "/admin/v1/organisations/Acme",
            "",
            Want(405, "METHOD_NOT_ALLOWED"),
        ),
        (Method::GET, "/admin/v1/nothing", "", NOT_FOUND),
        (Method::GET, "/admin/v2/organisations", "", NOT_FOUND),
        (
            Method::GET,
            "/admin/v1/organisations/Acme/users/alice/keys",
            "",
            NOT_FOUND,
        ),
    ];
    for (method, path, body, want) in checks {
        let got = send_path(&fx.app, method.clone(), path, op, body).await?;
        if (got.status, got.code.as_str()) != (want.0, want.1) {
            failures.push(format!("{method} {path}: want {want:?}, got {}", got.text));
        }
    }
    let before = snapshot(&fx.app)?;
    let huge = json!({"name": "y".repeat(20_000)}).to_string();
    let got = send_path(&fx.app, Method::POST, "/admin/v1/organisations", op, &huge).await?;
    assert_eq!((got.status, got.code.as_str()), (413, "PAYLOAD_TOO_LARGE"));
    assert_eq!(snapshot(&fx.app)?, before);
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The names at the limit are fine: 256 characters (not bytes) is the bound, the refusals above were not.
    let at_limit = "é".repeat(256);
    let made = send(
        &fx.app,
        Some(op),
        &Call::CreateOrg(json!({"name": at_limit}).to_string()),
        &[],
    )
    .await?;
    assert_eq!(made.status, 201, "{}", made.text);
    Ok(())
}

/// Users of organisation `Big`, seeded fast: one transaction of the service function, no password, so no
/// hashing. Their creation times are spread over 600 s out of order, so the list's order is its own.
const SEEDED_USERS: i64 = 1_200;

/// Walks the user list of `org` raw, `limit` at a time; returns `(created_at, id)` of every item.
async fn walk_users(fx: &Fixture, org: &str, limit: usize) -> anyhow::Result<Vec<(i64, String)>> {
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    let limit_text = limit.to_string();
    for _ in 0..1_000 {
        let mut query = vec![("limit", limit_text.as_str())];
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.as_str()));
        }
        let page = send(
            &fx.app,
            fx.token(Caller::Operator),
            &Call::ListUsers(org.into()),
            &query,
        )
        .await?;
        anyhow::ensure!(page.status == 200, "{}", page.text);
        let items = page.data["items"]
            .as_array()
            .ok_or_else(|| anyhow::anyhow!("no items"))?;
        anyhow::ensure!(items.len() <= limit, "{} items on a page of {limit}", items.len());
        for item in items {
            let at = item["created_at"]
                .as_i64()
                .ok_or_else(|| anyhow::anyhow!("created_at"))?;
            let id = item["id"].as_str().ok_or_else(|| anyhow::anyhow!("id"))?;
            seen.push((at, id.to_owned()));
        }
        match &page.data["next_cursor"] {
            Value::Null => return Ok(seen),
            Value::String(next) => {
                anyhow::ensure!(items.len() == limit, "a short page with a next cursor");
                cursor = Some(next.clone());
            }
            other => anyhow::bail!("next_cursor {other}"),
        }
    }
    anyhow::bail!("the walk did not end")
}

/// Adds users to `org` through the API until told to stop; returns how many it added.
fn spawn_adder(
    admin: Admin,
    org: &'static str,
    prefix: &'static str,
    stop: Arc<AtomicBool>,
    added: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let n = added.load(Ordering::SeqCst);
            let new = NewUserBody {
                username: format!("{prefix}{n}"),
                password: None,
                units: vec!["Floor".into()],
                default_unit: None,
                role: None,
            };
            admin.create_user(org, &new).await?;
            added.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    })
}

/// Runs `walk` while users are being added; returns what it saw.
async fn walk_while_adding<F>(
    fx: &Fixture,
    prefix: &'static str,
    walk: F,
) -> anyhow::Result<Vec<(i64, String)>>
where
    F: Future<Output = anyhow::Result<Vec<(i64, String)>>>,
{
    let (stop, added) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let adder = spawn_adder(
        fx.sdk(Caller::Operator)?,
        "Big",
        prefix,
        Arc::clone(&stop),
        Arc::clone(&added),
    );
    // The walk starts once adding is under way, so the two overlap.
    while added.load(Ordering::SeqCst) == 0 && !adder.is_finished() {
        pause().await;
    }
    let seen = walk.await;
    stop.store(true, Ordering::SeqCst);
    adder.await??;
    seen
}

/// Paging over 1,200 users, 50 and 500 at a time and through the SDK's stream, while another task adds users
/// through the API: every user that existed before is seen exactly once, nothing repeats, and the order is
/// `(created_at, id)` ascending.
async fn paging_sees_every_user_once_in_order_while_users_are_added(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let t0 = fx.app.clock.now();
    let mut expected: Vec<(i64, String)> = {
        let conn = &mut *fx.app.conn()?;
        let big = admin::add_organisation(conn, &Actor::Cli, "Big", t0)?;
        let floor = admin::add_unit(conn, &Actor::Cli, &big, "Floor", None, t0)?;
        let units = [floor.id];
        conn.transaction(|conn| {
            (0..SEEDED_USERS)
                .map(|i| {
                    let username = format!("user{i:04}");
                    let new = NewUser {
                        username: &username,
                        units: &units,
                        ..NewUser::default()
                    };
                    let user = admin::add_user(conn, &Actor::Cli, &big, new, t0 + i * 7_919 % 600)?;
                    Ok::<_, AdminError>((user.created_at, user.id))
                })
                .collect::<Result<Vec<_>, _>>()
        })?
    };
    expected.sort();
    // Users added from now on land amid the seeded ones (and share some of their seconds).
    fx.app.clock.advance(300);
    let check = |seen: &[(i64, String)], how: &str| {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{how}: not strictly ascending by (created_at, id)"
        );
        let ids: HashSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids.len(), seen.len(), "{how}: an item repeats");
        let old: HashSet<&str> = expected.iter().map(|(_, id)| id.as_str()).collect();
        let seen_old: Vec<&(i64, String)> = seen.iter().filter(|(_, id)| old.contains(id.as_str())).collect();
        assert_eq!(seen_old.len(), expected.len(), "{how}: a seeded user missed");
        assert!(
            seen_old.into_iter().eq(expected.iter()),
            "{how}: seeded users out of order"
        );
    };
    let by_50 = walk_while_adding(&fx, "fifty", walk_users(&fx, "Big", 50)).await?;
    check(&by_50, "pages of 50");
    let by_500 = walk_while_adding(&fx, "fivehundred", walk_users(&fx, "Big", 500)).await?;
    check(&by_500, "pages of 500");
    let sdk = fx.sdk(Caller::Operator)?;
    let streamed = walk_while_adding(&fx, "stream", async {
        let users: Vec<User> = sdk.all_users("Big").try_collect().await?;
        Ok(users.into_iter().map(|u| (u.created_at, u.id)).collect())
    })
    .await?;
    check(&streamed, "the SDK stream");
    // Once the adding has stopped, every walk sees the same list.
    let now_50 = walk_users(&fx, "Big", 50).await?;
    let now_500 = walk_users(&fx, "Big", 500).await?;
    let now_sdk: Vec<User> = sdk.all_users("Big").try_collect().await?;
    assert_eq!(now_50, now_500);
    assert!(
        now_sdk
            .iter()
            .map(|u| (u.created_at, u.id.clone()))
            .eq(now_500.into_iter())
    );
    assert!(now_50.len() > expected.len(), "users were added meanwhile");
    Ok(())
}

/// Makes a user with a password and a key in Acme; returns its key.
fn user_with_key(fx: &Fixture, username: &str) -> anyhow::Result<String> {
    let hash = PasswordHasher::hash_blocking(&fx.app.state.settings.auth.argon2, PASSWORD)?;
    {
        let conn = &mut *fx.app.conn()?;
        let acme = admin::find_organisation(conn, ORG)?;
        add(
            conn,
            &acme,
            username,
            Role::Member,
            ("Main", Some(&hash)),
            fx.app.clock.now(),
        )?;
    }
    fx.key(ORG, username).map(|(_, key)| key)
}

/// Disabling a user, ending its sessions and revoking a key have ended the sessions they cover as soon as they
/// answered: validate and refresh say `SESSION_ENDED` at once.
async fn changes_that_end_sessions_have_ended_them_when_they_answer(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let admin = fx.sdk(Caller::AdminA)?;
    let c = &fx.app.client;
    let key = user_with_key(&fx, "sam")?;
    let ended = Some(ErrorCode::SessionEnded);

    // PATCH {"disabled": true}.
    let by_password = c.token(&Credentials::password("sam", PASSWORD, ORG)).await?;
    let by_key = c.token(&Credentials::api_key(&key)).await?;
    let refreshed = c.refresh(by_password.as_str()).await?;
    let disable = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    assert!(admin.update_user(ORG, "sam", &disable).await?.disabled);
    for token in [&by_password, &by_key, &refreshed] {
        assert_eq!(code(c.validate(token.as_str()).await), ended);
        assert_eq!(code(c.refresh(token.as_str()).await), ended);
    }
    assert_eq!(
        code(c.token(&Credentials::password("sam", PASSWORD, ORG)).await),
        Some(ErrorCode::InvalidCredentials)
    );
    assert_eq!(
        code(c.token(&Credentials::api_key(&key)).await),
        Some(ErrorCode::InvalidCredentials)
    );
    assert!(
        admin
            .list_sessions(ORG, Some("sam"), &PageQuery::default())
            .await?
            .items
            .is_empty()
    );
    let enable = UserChange {
        disabled: Some(false),
        ..UserChange::default()
    };
    assert!(!admin.update_user(ORG, "sam", &enable).await?.disabled);
    assert_eq!(
        code(c.validate(by_key.as_str()).await),
        ended,
        "enabling revives nothing"
    );

    // DELETE .../users/sam/sessions.
    let by_password = c.token(&Credentials::password("sam", PASSWORD, ORG)).await?;
    let by_key = c.token(&Credentials::api_key(&key)).await?;
    let other = c.token(&Credentials::password(USER, PASSWORD, ORG)).await?;
    assert_eq!(admin.end_user_sessions(ORG, "Sam").await?, 2);
    for token in [&by_password, &by_key] {
        assert_eq!(code(c.validate(token.as_str()).await), ended);
    }
    c.validate(other.as_str()).await?;
    assert_eq!(admin.end_user_sessions(ORG, "sam").await?, 0);

    // DELETE .../keys/{id}: the key's sessions end, the same user's password session does not.
    let by_password = c.token(&Credentials::password("sam", PASSWORD, ORG)).await?;
    let by_key = c.token(&Credentials::api_key(&key)).await?;
    let page = admin.list_keys(ORG, &PageQuery::default()).await?;
    let row = page
        .items
        .iter()
        .find(|k| k.username == "sam")
        .ok_or_else(|| anyhow::anyhow!("sam's key is listed"))?;
    assert!(key.starts_with(&row.prefix));
    admin.revoke_key(ORG, &row.id).await?;
    assert_eq!(code(c.validate(by_key.as_str()).await), ended);
    c.validate(by_password.as_str()).await?;
    assert_eq!(
        code(c.token(&Credentials::api_key(&key)).await),
        Some(ErrorCode::InvalidCredentials)
    );
    let revoked = admin.list_keys(ORG, &PageQuery::default()).await?;
    assert!(
        revoked
            .items
            .iter()
            .any(|k| k.id == row.id && k.revoked_at.is_some())
    );

    // DELETE .../sessions/{id}, twice: ending an ended session is OK.
    admin.revoke_session(ORG, by_password.session_id()).await?;
    assert_eq!(code(c.validate(by_password.as_str()).await), ended);
    admin.revoke_session(ORG, by_password.session_id()).await?;
    Ok(())
}

const RACE_ROUNDS: usize = 8;
const RACERS: usize = 4;

/// Logins of a user, by password and by key, race a `PATCH {"disabled": true}`: once it has answered, every
/// token any of them got, before or after, is `SESSION_ENDED`, and no session of the user is live.
async fn no_session_survives_a_disable_racing_logins(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let admin = fx.sdk(Caller::AdminA)?;
    let disable = UserChange {
        disabled: Some(true),
        ..UserChange::default()
    };
    for round in 0..RACE_ROUNDS {
        let username = format!("racer{round}");
        let key = user_with_key(&fx, &username)?;
        let (stop, tokens) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(std::sync::Mutex::new(Vec::new())),
        );
        let attempts = Arc::new(AtomicUsize::new(0));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let (client, key, username) = (fx.app.client.clone(), key.clone(), username.clone());
                let (stop, tokens, attempts) =
                    (Arc::clone(&stop), Arc::clone(&tokens), Arc::clone(&attempts));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        let got = if i % 2 == 0 {
                            client.token(&Credentials::api_key(&key)).await
                        } else {
                            client
                                .token(&Credentials::password(&username, PASSWORD, ORG))
                                .await
                        };
                        match got {
                            Ok(token) => tokens
                                .lock()
                                .map_err(|_| anyhow::anyhow!("poisoned"))?
                                .push(token.as_str().to_owned()),
                            // Refused once disabled (and, after a few refused passwords, locked out).
                            Err(e)
                                if matches!(
                                    e.code(),
                                    Some(ErrorCode::InvalidCredentials | ErrorCode::TooManyAttempts)
                                ) => {}
                            Err(e) => return Err(anyhow::Error::from(e)),
                        }
                        attempts.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(())
                })
            })
            .collect();
        let racing =
            |racers: &[tokio::task::JoinHandle<anyhow::Result<()>>]| racers.iter().all(|r| !r.is_finished());
        while attempts.load(Ordering::SeqCst) < 2 * RACERS && racing(&racers) {
            pause().await;
        }
        admin.update_user(ORG, &username, &disable).await?;
        // Logins that were under way when the change answered finish now; more are refused.
        let answered = attempts.load(Ordering::SeqCst);
        while attempts.load(Ordering::SeqCst) < answered + 2 * RACERS && racing(&racers) {
            pause().await;
        }
        stop.store(true, Ordering::SeqCst);
        for racer in racers {
            racer.await??;
        }
        let tokens = tokens.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
        assert!(!tokens.is_empty(), "round {round}: some login succeeded");
        for token in &tokens {
            assert_eq!(
                code(fx.app.client.validate(token).await),
                Some(ErrorCode::SessionEnded),
                "round {round}: a session outlived the disable"
            );
        }
        let user = {
            let conn = &mut *fx.app.conn()?;
            let acme = admin::find_organisation(conn, ORG)?;
            admin::find_user(conn, &acme, &username)?
        };
        let live: i64 = sessions::table
            .filter(sessions::user_id.eq(&user.id))
            .filter(sessions::ended_at.is_null())
            .count()
            .get_result(&mut *fx.app.conn()?)?;
        assert_eq!(live, 0, "round {round}");
    }
    Ok(())
}

/// Lets the other tasks make progress while this one waits for them (a short sleep, not a busy loop: the
/// server shares the machine's cores with the test).
async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
}

/// The statuses of 32 concurrent raw requests.
async fn statuses(fx: &Fixture, calls: Vec<Call>) -> anyhow::Result<Vec<(u16, String)>> {
    let sent = calls
        .iter()
        .map(|call| send(&fx.app, fx.token(Caller::Operator), call, &[]));
    futures_util::future::join_all(sent)
        .await
        .into_iter()
        .map(|a| a.map(|a| (a.status, a.code)))
        .collect()
}

/// 32 concurrent creations of one name, in several letter cases: one 201, 31 `CONFLICT`, no 500, one row,
/// one audit event.
async fn concurrent_duplicate_creations_have_one_winner(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let spell = |i: usize, name: &str| match i % 3 {
        0 => name.to_owned(),
        1 => name.to_uppercase(),
        _ => name.to_lowercase(),
    };
    let races: [(&str, Vec<Call>); 3] = [
        (
            "user",
            (0..32)
                .map(|i| {
                    let body = json!({"username": spell(i, "Dup"), "password": "pw", "units": ["Main"]});
                    Call::CreateUser(ORG.into(), body.to_string())
                })
                .collect(),
        ),
        (
            "organisation",
            (0..32)
                .map(|i| Call::CreateOrg(json!({"name": spell(i, "Twin")}).to_string()))
                .collect(),
        ),
        (
            "unit",
            (0..32)
                .map(|i| {
                    let body = json!({"name": format!("Wing {i}"), "code": spell(i, "Wg")});
                    Call::CreateUnit(ORG.into(), body.to_string())
                })
                .collect(),
        ),
    ];
    for (what, calls) in races {
        let audit_before = snapshot(&fx.app)?.audit;
        let got = statuses(&fx, calls).await?;
        let created = got.iter().filter(|(s, c)| *s == 201 && c == "OK").count();
        let conflicts = got.iter().filter(|(s, c)| *s == 409 && c == "CONFLICT").count();
        assert_eq!((created, conflicts), (1, 31), "{what}: {got:?}");
        assert_eq!(
            snapshot(&fx.app)?.audit,
            audit_before + 1,
            "{what}: one audit event"
        );
    }
    let conn = &mut *fx.app.conn()?;
    let dup: i64 = users::table
        .filter(users::username_key.eq("dup"))
        .count()
        .get_result(conn)?;
    let twin: i64 = organisations::table
        .filter(organisations::name_key.eq("twin"))
        .count()
        .get_result(conn)?;
    let wings: i64 = units::table
        .filter(units::code_key.eq("wg"))
        .count()
        .get_result(conn)?;
    assert_eq!((dup, twin, wings), (1, 1, 1));
    Ok(())
}

/// The audit events of Acme after the first `skip`, as `(actor, action, target, client)`.
async fn audit_after(
    admin: &Admin,
    skip: usize,
) -> anyhow::Result<Vec<(String, String, String, Option<String>)>> {
    let events: Vec<_> = admin.all_audit(ORG).try_collect().await?;
    Ok(events
        .into_iter()
        .skip(skip)
        .map(|e| (e.actor, e.action, e.target, e.client))
        .collect())
}

/// Each change through the API is one audit row naming `username@organisation`, the action, the target and
/// the client address; a change on the command line is `cli`'s; no row holds a password or a key.
async fn every_change_is_one_audit_row_without_secrets(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let ann = fx.sdk(Caller::AdminA)?;
    let olga = fx.sdk(Caller::Operator)?;
    let first_password = "first secret of carl";
    let second_password = "second secret of carl";
    let seeded = ann.all_audit(ORG).try_collect::<Vec<_>>().await?;
    // The seed is the command line's: actor `cli`, no client address.
    assert!(!seeded.is_empty());
    assert!(seeded.iter().all(|e| e.actor == "cli" && e.client.is_none()));
    assert!(seeded.windows(2).all(|w| w[0].at <= w[1].at));

    let unit = NewUnit {
        name: "Audit Unit".into(),
        code: Some("AU".into()),
    };
    ann.create_unit(ORG, &unit).await?;
    let carl = NewUserBody {
        username: "carl".into(),
        password: Some(first_password.into()),
        units: vec!["AU".into()],
        default_unit: None,
        role: None,
    };
    ann.create_user(ORG, &carl).await?;
    let changes = [
        json!({"role": "admin"}),
        json!({"password": second_password}),
        json!({"disabled": true}),
        json!({"disabled": false}),
        json!({"units": ["Main", "AU"], "default_unit": "Main"}),
    ];
    for change in &changes {
        let change: UserChange = serde_json::from_value(change.clone())?;
        ann.update_user(ORG, "carl", &change).await?;
    }
    let key = NewKey {
        username: "carl".into(),
        name: Some("billing".into()),
        expires_at: None,
    };
    let created = ann.create_key(ORG, &key).await?;
    let session = fx.app.client.token(&Credentials::api_key(&created.key)).await?;
    ann.revoke_session(ORG, session.session_id()).await?;
    fx.app
        .client
        .token(&Credentials::password("carl", second_password, ORG))
        .await?;
    assert_eq!(ann.end_user_sessions(ORG, "carl").await?, 1);
    ann.revoke_key(ORG, &created.info.id).await?;
    // An operator's organisation is audited in the new organisation.
    olga.create_organisation("Audited").await?;
    // The command line.
    {
        let conn = &mut *fx.app.conn()?;
        let acme = admin::find_organisation(conn, ORG)?;
        admin::add_unit(conn, &Actor::Cli, &acme, "Cli Unit", None, fx.app.clock.now())?;
    }

    let ann_at = |action: &str, target: &str| {
        (
            "ann@Acme".to_owned(),
            action.to_owned(),
            target.to_owned(),
            Some(LOCALHOST.to_owned()),
        )
    };
    let expected = vec![
        ann_at("unit.create", "Audit Unit"),
        ann_at("user.create", "carl"),
        ann_at("user.update", "carl"),
        ann_at("user.update", "carl"),
        ann_at("user.disable", "carl"),
        ann_at("user.enable", "carl"),
        ann_at("user.update", "carl"),
        ann_at("key.create", &created.info.id),
        ann_at("session.revoke", session.session_id()),
        ann_at("session.revoke", "carl"),
        ann_at("key.revoke", &created.info.id),
        (
            "cli".to_owned(),
            "unit.create".to_owned(),
            "Cli Unit".to_owned(),
            None,
        ),
    ];
    assert_eq!(audit_after(&ann, seeded.len()).await?, expected);
    let audited: Vec<_> = olga.all_audit("Audited").try_collect().await?;
    assert_eq!(audited.len(), 1);
    assert_eq!(
        (
            audited[0].actor.as_str(),
            audited[0].action.as_str(),
            audited[0].target.as_str(),
            audited[0].client.as_deref()
        ),
        ("olga@Acme", "organisation.create", "Audited", Some(LOCALHOST))
    );
    assert_eq!(audited[0].at, fx.app.clock.now());

    // No secret anywhere in the audit, in the table or on the wire.
    let rows: Vec<db::audit::AuditEvent> = audit_events::table
        .select(db::audit::AuditEvent::as_select())
        .load(&mut *fx.app.conn()?)?;
    let stored = format!("{rows:?}");
    let wire = send(
        &fx.app,
        fx.token(Caller::AdminA),
        &Call::ListAudit(ORG.into()),
        &[("limit", "500")],
    )
    .await?
    .text;
    let user_wire = send(
        &fx.app,
        fx.token(Caller::AdminA),
        &Call::GetUser(ORG.into(), "carl".into()),
        &[],
    )
    .await?
    .text;
    for secret in [
        first_password,
        second_password,
        &created.key,
        &fx.app.key,
        PASSWORD,
        "$argon2",
    ] {
        for (place, text) in [("table", &stored), ("audit list", &wire), ("user", &user_wire)] {
            assert!(!text.contains(secret), "the {place} holds a secret");
        }
    }
    // Items carry exactly the contract's fields.
    let listed: Value = serde_json::from_str(&wire)?;
    for item in listed["data"]["items"].as_array().into_iter().flatten() {
        let mut fields: Vec<&str> = item
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        fields.sort_unstable();
        assert_eq!(fields, ["action", "actor", "at", "client", "target"]);
    }
    Ok(())
}

/// A key is shown once, at its creation (201); it logs in; the list shows its name, expiry and prefix, never
/// the key; past its `expires_at` on the server's clock it logs in as an unknown key would.
async fn keys_are_shown_once_log_in_and_expire(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let now = fx.app.clock.now();
    let body = json!({"username": USER, "name": "billing", "expires_at": now + 3_600}).to_string();
    let made = send(
        &fx.app,
        fx.token(Caller::AdminA),
        &Call::CreateKey(ORG.into(), body),
        &[],
    )
    .await?;
    assert_eq!((made.status, made.code.as_str()), (201, "OK"), "{}", made.text);
    let key = made.data["key"].as_str().unwrap_or_default().to_owned();
    let id = made.data["id"].as_str().unwrap_or_default().to_owned();
    assert!(is_id(&key) && is_id(&id) && key != id, "{}", made.text);
    let prefix = made.data["prefix"].as_str().unwrap_or_default();
    assert!(!prefix.is_empty() && key.starts_with(prefix));
    assert_eq!(made.data["name"], "billing");
    assert_eq!(made.data["username"], USER);
    assert_eq!(made.data["expires_at"], now + 3_600);
    assert_eq!(made.data["created_at"], now);

    // It logs in, by POST and by GET.
    let token = fx.app.client.token(&Credentials::api_key(&key)).await?;
    assert_eq!(token.claims().usr, USER);
    fx.app.client.validate(token.as_str()).await?;
    let by_get = reqwest::Client::new()
        .get(fx.app.api("/authentication/web_api_key/token"))
        .basic_auth(&key, Some(""))
        .send()
        .await?;
    assert_eq!(by_get.status().as_u16(), 200);

    // Listed without the key, by the admin and the operator alike.
    for caller in [Caller::AdminA, Caller::Operator] {
        let listed = send(&fx.app, fx.token(caller), &Call::ListKeys(ORG.into()), &[]).await?;
        assert!(!listed.text.contains(&key), "the list shows the key");
        let items = listed.data["items"].as_array().cloned().unwrap_or_default();
        let item = items
            .iter()
            .find(|k| k["id"] == id.as_str())
            .ok_or_else(|| anyhow::anyhow!("the key is listed"))?;
        assert_eq!(item["name"], "billing");
        assert_eq!(item["expires_at"], now + 3_600);
        assert_eq!(item["prefix"], prefix);
        assert_eq!(item["username"], USER);
        assert!(item.get("key").is_none() && item.get("digest").is_none());
    }
    let sdk_keys = fx
        .sdk(Caller::AdminA)?
        .list_keys(ORG, &PageQuery::default())
        .await?;
    assert!(
        sdk_keys
            .items
            .iter()
            .any(|k| k.id == id && k.name.as_deref() == Some("billing"))
    );

    // Past its expiry it is an unknown key: the same answer, word for word.
    fx.app.clock.advance(3_601);
    let expired = fx.app.client.token(&Credentials::api_key(&key)).await.err();
    let unknown = fx.app.client.token(&Credentials::api_key(new_id())).await.err();
    assert_eq!(
        expired.as_ref().and_then(|e| e.code()),
        Some(ErrorCode::InvalidCredentials)
    );
    assert_eq!(
        expired.as_ref().and_then(|e| e.message().map(str::to_owned)),
        unknown.as_ref().and_then(|e| e.message().map(str::to_owned))
    );
    assert_eq!(
        expired.as_ref().and_then(|e| e.description().map(str::to_owned)),
        unknown.as_ref().and_then(|e| e.description().map(str::to_owned))
    );
    // A key without expiry still logs in at that time.
    fx.app.client.token(&Credentials::api_key(&fx.app.key)).await?;
    Ok(())
}

/// The session list shows each live session's client address and, after a refresh, when it was refreshed;
/// ended sessions leave it.
async fn session_list_shows_client_and_refresh(backend: Backend) -> anyhow::Result<()> {
    let fx = Fixture::new(&backend).await?;
    let admin = fx.sdk(Caller::AdminA)?;
    let page = PageQuery::default();
    let t0 = fx.app.clock.now();
    let token = fx.app.login().await?;
    let by_key = fx
        .app
        .client
        .token(&Credentials::api_key(&fx.app.key).unit("Second"))
        .await?;
    let mine = |items: Vec<crm_auth_client::admin::Session>, id: &str| items.into_iter().find(|s| s.id == id);
    let listed = admin.list_sessions(ORG, Some(USER), &page).await?.items;
    let session = mine(listed.clone(), token.session_id()).ok_or_else(|| anyhow::anyhow!("listed"))?;
    assert_eq!(session.username, USER);
    assert_eq!(session.unit, "Main");
    assert_eq!(session.method, AuthMethod::Password);
    assert_eq!(session.client.as_deref(), Some(LOCALHOST));
    assert_eq!(session.refreshed_at, None);
    assert_eq!((session.created_at, session.expires_at), (t0, t0 + 7_200));
    let keyed = mine(listed, by_key.session_id()).ok_or_else(|| anyhow::anyhow!("key session listed"))?;
    assert_eq!(
        (keyed.method, keyed.unit.as_str()),
        (AuthMethod::WebApiKey, "Second")
    );
    assert_eq!(keyed.client.as_deref(), Some(LOCALHOST));

    fx.app.clock.advance(100);
    fx.app.client.refresh(token.as_str()).await?;
    let listed = admin.list_sessions(ORG, Some(USER), &page).await?.items;
    let session = mine(listed, token.session_id()).ok_or_else(|| anyhow::anyhow!("listed"))?;
    assert_eq!(session.refreshed_at, Some(t0 + 100));
    assert_eq!((session.created_at, session.expires_at), (t0, t0 + 100 + 7_200));

    // The wire shape: exactly the contract's fields.
    let raw = send(
        &fx.app,
        fx.token(Caller::AdminA),
        &Call::ListSessions(ORG.into()),
        &[("username", USER)],
    )
    .await?;
    let items = raw.data["items"].as_array().cloned().unwrap_or_default();
    let item = items
        .iter()
        .find(|s| s["id"] == token.session_id())
        .ok_or_else(|| anyhow::anyhow!("listed raw"))?;
    let mut fields: Vec<&str> = item
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "client",
            "created_at",
            "expires_at",
            "id",
            "method",
            "refreshed_at",
            "unit",
            "username"
        ]
    );
    assert_eq!(item["refreshed_at"], t0 + 100);
    assert_eq!(item["client"], LOCALHOST);
    assert_eq!(item["method"], "password");
    // Only Acme's sessions, and only live ones.
    assert!(items.iter().all(|s| s["username"] == USER));
    fx.app.client.release(token.as_str()).await?;
    let listed = admin.list_sessions(ORG, None, &page).await?.items;
    assert!(mine(listed.clone(), token.session_id()).is_none());
    assert!(mine(listed.clone(), by_key.session_id()).is_some());
    let bob = fx.sdk(Caller::AdminB)?;
    assert!(
        bob.list_sessions(BETA, None, &page)
            .await?
            .items
            .iter()
            .all(|s| s.username == "bob")
    );
    Ok(())
}
