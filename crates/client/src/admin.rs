//! The administration API (`/admin/v1`): organisations, units, users, keys, sessions, the audit and the import,
//! called with an `admin`'s or `operator`'s token.
//!
//! [`Client::admin`] gives an [`Admin`] handle holding the client and the token; each of its methods is one
//! endpoint. Lists come two ways: `list_*` fetches one [`Page`] for a [`PageQuery`] (the caller carries the
//! cursor), `all_*` is a [`Stream`] of every item that follows `next_cursor` by itself.
//!
//! ```no_run
//! use crm_auth_client::{Client, Credentials};
//! use crm_auth_client::admin::{NewKey, NewUnit, NewUser};
//! use crm_auth_client::admin::TryStreamExt as _;
//!
//! # async fn run() -> Result<(), crm_auth_client::Error> {
//! let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
//! let token = client.token(&Credentials::password("operator", "secret", "demo")).await?;
//! let admin = client.admin(token.as_str())?;
//!
//! let org = admin.create_organisation("Acme").await?;
//! let unit = NewUnit { name: "Headquarters".into(), code: Some("HQ".into()) };
//! admin.create_unit(&org.id, &unit).await?;
//! let user = NewUser {
//!     username: "billing".into(),
//!     password: None,
//!     units: vec!["HQ".into()],
//!     default_unit: None,
//!     role: None,
//! };
//! admin.create_user(&org.id, &user).await?;
//! let key = NewKey { username: "billing".into(), name: Some("invoices".into()), expires_at: None };
//! let created = admin.create_key(&org.id, &key).await?;
//! println!("key {} (shown once): {}", created.info.id, created.key);
//!
//! let mut users = admin.all_users("Acme");
//! while let Some(user) = users.try_next().await? {
//!     println!("{} ({})", user.username, user.role);
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;

use crm_auth_core::limits::MAX_PAGE_ITEMS;
use crm_auth_core::routes;
use futures_util::stream::{self, BoxStream};
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, RequestBuilder, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::bearer;
use crate::retry::Policy;
use crate::{Client, Error};

pub use crm_auth_core::admin::{
    AuditEvent, CreatedKey, Ended, ImportCounts, ImportReport, Key, NewKey, NewOrganisation, NewUnit,
    NewUser, Organisation, Page, PageQuery, Session, Unit, User, UserChange,
};
pub use crm_auth_core::{AuthMethod, Role};
/// The traits to read an `all_*` stream with (`try_next`, `try_collect`, ...), so callers need no dependency of
/// their own.
#[doc(no_inline)]
pub use futures_util::{Stream, StreamExt, TryStreamExt};

/// How many items each page of an `all_*` stream asks for: the most the server gives, so the fewest requests.
pub const STREAM_PAGE_ITEMS: usize = MAX_PAGE_ITEMS;

/// The content type of an import's body.
const NDJSON: &str = crm_auth_core::admin::IMPORT_CONTENT_TYPE;

impl Client {
    /// A handle on the administration API (`/admin/v1`, at the server's root whatever the base path) that sends
    /// `token` with every call: a token of an `admin` (its own organisation) or an `operator` (every
    /// organisation), from [`Client::token`].
    ///
    /// Fails with [`Error::InvalidArgument`] when the token cannot travel in a header. The handle holds a clone
    /// of the client (sharing its connection pool) and the token; make a new one after a refresh.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::{Client, Credentials};
    /// use crm_auth_client::admin::PageQuery;
    ///
    /// let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
    /// let token = client.token(&Credentials::password("operator", "secret", "demo")).await?;
    /// let admin = client.admin(token.as_str())?;
    /// let page = admin.list_organisations(&PageQuery::default()).await?;
    /// for org in page.items {
    ///     println!("{} {}", org.id, org.name);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn admin(&self, token: &str) -> Result<Admin, Error> {
        Ok(Admin {
            client: self.clone(),
            auth: bearer(token)?,
        })
    }
}

/// A client of the administration API acting with one token; made by [`Client::admin`].
///
/// `{org}` arguments take an organisation's id or name, `username` a username (or the user's id), `id` a key's
/// or session's id; each travels as one percent-encoded path segment, so names with spaces, slashes or any
/// other character are sent as they are. `"."`, `".."` and names holding a tab or line break cannot be put in
/// a URL path and are refused with [`Error::InvalidArgument`]: name such an entity by its id.
///
/// Refusals come as [`Error::Api`] with the contract's codes ([`Error::code`]): `FORBIDDEN` for a `member`'s
/// token or an `admin` creating organisations or importing, `NOT_FOUND` for what does not exist or belongs to
/// another organisation than an `admin`'s, `CONFLICT` for a name already taken, `INVALID_REQUEST` naming the
/// offending field, and `INVALID_TOKEN`, `TOKEN_EXPIRED`, `SESSION_ENDED` for the token.
///
/// Reads (`GET`) are retried like [`Client::validate`]; changes (`POST`, `PATCH`, `DELETE`) only after a
/// refused connection, since then they never reached the server (see [`ClientBuilder::retries`]).
///
/// Cloning is cheap; `Debug` does not show the token.
///
/// [`ClientBuilder::retries`]: crate::ClientBuilder::retries
#[derive(Clone)]
pub struct Admin {
    client: Client,
    auth: HeaderValue,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("client", &self.client)
            .field("token", &"***")
            .finish()
    }
}

impl Admin {
    /// The organisations the token may see (an `admin`: its own only), one page:
    /// `GET /admin/v1/organisations`.
    pub async fn list_organisations(&self, page: &PageQuery) -> Result<Page<Organisation>, Error> {
        self.page(self.url(routes::ADMIN_ORGANISATIONS, &[])?, page).await
    }

    /// Every organisation the token may see, page after page; see [`Admin::all_users`].
    pub fn all_organisations(&self) -> BoxStream<'static, Result<Organisation, Error>> {
        self.all(self.url(routes::ADMIN_ORGANISATIONS, &[]))
    }

    /// One organisation, by id or name: `GET /admin/v1/organisations/{org}`.
    pub async fn organisation(&self, org: &str) -> Result<Organisation, Error> {
        self.get(self.url(routes::ADMIN_ORGANISATION, &[("org", org)])?)
            .await
    }

    /// Creates an organisation (an `operator` only): `POST /admin/v1/organisations`.
    ///
    /// `CONFLICT` when the name is taken (names compare case-insensitively).
    pub async fn create_organisation(&self, name: &str) -> Result<Organisation, Error> {
        let body = NewOrganisation {
            name: name.to_owned(),
        };
        self.change(
            Method::POST,
            self.url(routes::ADMIN_ORGANISATIONS, &[])?,
            Some(&body),
        )
        .await
    }

    /// An organisation's units, one page: `GET /admin/v1/organisations/{org}/units`.
    pub async fn list_units(&self, org: &str, page: &PageQuery) -> Result<Page<Unit>, Error> {
        self.page(self.url(routes::ADMIN_UNITS, &[("org", org)])?, page)
            .await
    }

    /// Every unit of an organisation, page after page; see [`Admin::all_users`].
    pub fn all_units(&self, org: &str) -> BoxStream<'static, Result<Unit, Error>> {
        self.all(self.url(routes::ADMIN_UNITS, &[("org", org)]))
    }

    /// Creates a unit: `POST /admin/v1/organisations/{org}/units`.
    ///
    /// `CONFLICT` when the name or code is taken in the organisation.
    pub async fn create_unit(&self, org: &str, unit: &NewUnit) -> Result<Unit, Error> {
        self.change(
            Method::POST,
            self.url(routes::ADMIN_UNITS, &[("org", org)])?,
            Some(unit),
        )
        .await
    }

    /// An organisation's users, one page: `GET /admin/v1/organisations/{org}/users`.
    ///
    /// ```no_run
    /// # async fn run(admin: crm_auth_client::Admin) -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::admin::PageQuery;
    ///
    /// let mut query = PageQuery { limit: 100, cursor: None };
    /// loop {
    ///     let page = admin.list_users("Acme", &query).await?;
    ///     for user in &page.items {
    ///         println!("{}", user.username);
    ///     }
    ///     match page.next_cursor {
    ///         Some(cursor) => query.cursor = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_users(&self, org: &str, page: &PageQuery) -> Result<Page<User>, Error> {
        self.page(self.url(routes::ADMIN_USERS, &[("org", org)])?, page)
            .await
    }

    /// Every user of an organisation, oldest first, fetched [`STREAM_PAGE_ITEMS`] at a time as the stream is
    /// read.
    ///
    /// The stream follows `next_cursor` until the last page; it ends after yielding an error, including the
    /// error of an argument refused before any request. Reads are retried like [`Admin::list_users`].
    ///
    /// ```no_run
    /// # async fn run(admin: crm_auth_client::Admin) -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::admin::TryStreamExt as _;
    ///
    /// let mut users = admin.all_users("Acme");
    /// while let Some(user) = users.try_next().await? {
    ///     if user.disabled {
    ///         println!("{} is disabled", user.username);
    ///     }
    /// }
    /// // Or all at once:
    /// let users: Vec<_> = admin.all_users("Acme").try_collect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn all_users(&self, org: &str) -> BoxStream<'static, Result<User, Error>> {
        self.all(self.url(routes::ADMIN_USERS, &[("org", org)]))
    }

    /// Creates a user: `POST /admin/v1/organisations/{org}/users`.
    ///
    /// Without a password the user logs in with keys only. `CONFLICT` when the username is taken;
    /// `FORBIDDEN` when an `admin` asks for the `operator` role.
    ///
    /// ```no_run
    /// # async fn run(admin: crm_auth_client::Admin) -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::ErrorCode;
    /// use crm_auth_client::admin::{NewUser, Role};
    ///
    /// let new = NewUser {
    ///     username: "alice".into(),
    ///     password: Some("correct horse battery staple".into()),
    ///     units: vec!["HQ".into(), "Branch".into()],
    ///     default_unit: Some("HQ".into()),
    ///     role: Some(Role::Admin),
    /// };
    /// match admin.create_user("Acme", &new).await {
    ///     Ok(user) => println!("created {} ({})", user.username, user.id),
    ///     Err(err) if err.code() == Some(ErrorCode::Conflict) => println!("alice exists already"),
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_user(&self, org: &str, user: &NewUser) -> Result<User, Error> {
        self.change(
            Method::POST,
            self.url(routes::ADMIN_USERS, &[("org", org)])?,
            Some(user),
        )
        .await
    }

    /// One user: `GET /admin/v1/organisations/{org}/users/{username}`.
    pub async fn user(&self, org: &str, username: &str) -> Result<User, Error> {
        self.get(self.url(routes::ADMIN_USER, &[("org", org), ("username", username)])?)
            .await
    }

    /// Changes a user: `PATCH /admin/v1/organisations/{org}/users/{username}`, and answers the user as it is
    /// now.
    ///
    /// Disabling the user, or taking units from it, has ended the sessions concerned before this returns.
    ///
    /// ```no_run
    /// # async fn run(admin: crm_auth_client::Admin) -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::admin::UserChange;
    ///
    /// let change = UserChange { disabled: Some(true), ..UserChange::default() };
    /// let user = admin.update_user("Acme", "alice", &change).await?;
    /// assert!(user.disabled);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn update_user(&self, org: &str, username: &str, change: &UserChange) -> Result<User, Error> {
        self.change(
            Method::PATCH,
            self.url(routes::ADMIN_USER, &[("org", org), ("username", username)])?,
            Some(change),
        )
        .await
    }

    /// Ends every live session of a user, and answers how many there were:
    /// `DELETE /admin/v1/organisations/{org}/users/{username}/sessions`.
    pub async fn end_user_sessions(&self, org: &str, username: &str) -> Result<u64, Error> {
        let ended: Ended = self
            .change(
                Method::DELETE,
                self.url(
                    routes::ADMIN_USER_SESSIONS,
                    &[("org", org), ("username", username)],
                )?,
                None::<&()>,
            )
            .await?;
        Ok(ended.ended)
    }

    /// An organisation's Web API keys (never the keys themselves), one page:
    /// `GET /admin/v1/organisations/{org}/keys`.
    pub async fn list_keys(&self, org: &str, page: &PageQuery) -> Result<Page<Key>, Error> {
        self.page(self.url(routes::ADMIN_KEYS, &[("org", org)])?, page)
            .await
    }

    /// Every Web API key of an organisation, page after page; see [`Admin::all_users`].
    pub fn all_keys(&self, org: &str) -> BoxStream<'static, Result<Key, Error>> {
        self.all(self.url(routes::ADMIN_KEYS, &[("org", org)]))
    }

    /// Creates a Web API key for a user: `POST /admin/v1/organisations/{org}/keys`.
    ///
    /// The answer's [`CreatedKey::key`] is the key itself, which no other answer ever shows: hand it over now.
    /// `Debug` of the answer prints it as `***`.
    ///
    /// ```no_run
    /// # async fn run(admin: crm_auth_client::Admin) -> Result<(), crm_auth_client::Error> {
    /// use crm_auth_client::admin::NewKey;
    ///
    /// let new = NewKey { username: "billing".into(), name: Some("invoices".into()), expires_at: None };
    /// let created = admin.create_key("Acme", &new).await?;
    /// println!("key {} for {}: {}", created.info.id, created.info.username, created.key);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn create_key(&self, org: &str, key: &NewKey) -> Result<CreatedKey, Error> {
        self.change(
            Method::POST,
            self.url(routes::ADMIN_KEYS, &[("org", org)])?,
            Some(key),
        )
        .await
    }

    /// Revokes a key, by its id (not the key itself), and ends its sessions before answering:
    /// `DELETE /admin/v1/organisations/{org}/keys/{id}`.
    pub async fn revoke_key(&self, org: &str, id: &str) -> Result<(), Error> {
        self.delete(self.url(routes::ADMIN_KEY, &[("org", org), ("id", id)])?)
            .await
    }

    /// An organisation's live sessions, of one user when `username` is given, one page:
    /// `GET /admin/v1/organisations/{org}/sessions?username=`.
    pub async fn list_sessions(
        &self,
        org: &str,
        username: Option<&str>,
        page: &PageQuery,
    ) -> Result<Page<Session>, Error> {
        self.page(self.sessions_url(org, username)?, page).await
    }

    /// Every live session of an organisation (of one user when `username` is given), page after page; see
    /// [`Admin::all_users`].
    pub fn all_sessions(
        &self,
        org: &str,
        username: Option<&str>,
    ) -> BoxStream<'static, Result<Session, Error>> {
        self.all(self.sessions_url(org, username))
    }

    /// Ends a session, by its id (its tokens' `jti`): `DELETE /admin/v1/organisations/{org}/sessions/{id}`.
    pub async fn revoke_session(&self, org: &str, id: &str) -> Result<(), Error> {
        self.delete(self.url(routes::ADMIN_SESSION, &[("org", org), ("id", id)])?)
            .await
    }

    /// An organisation's audit events, oldest first, one page: `GET /admin/v1/organisations/{org}/audit`.
    pub async fn list_audit(&self, org: &str, page: &PageQuery) -> Result<Page<AuditEvent>, Error> {
        self.page(self.url(routes::ADMIN_AUDIT, &[("org", org)])?, page)
            .await
    }

    /// Every audit event of an organisation, page after page; see [`Admin::all_users`].
    pub fn all_audit(&self, org: &str) -> BoxStream<'static, Result<AuditEvent, Error>> {
        self.all(self.url(routes::ADMIN_AUDIT, &[("org", org)]))
    }

    /// Imports organisations, units, users and keys from NDJSON, one object per line (an `operator` only):
    /// `POST /admin/v1/import`, with `?dry_run=true` when `dry_run` is set.
    ///
    /// The server checks the whole file before writing anything, then writes it in one transaction; a refused
    /// line is an `INVALID_REQUEST` (malformed, or naming what neither the file nor the server has) or a
    /// `CONFLICT` (disagreeing with what is stored), whose [`Error::description`] names the line and the field.
    /// A dry run checks and counts without writing. A large file takes time: give the client a
    /// [`timeout`](crate::ClientBuilder::timeout) to match.
    ///
    /// ```no_run
    /// # async fn run(admin: crm_auth_client::Admin) -> Result<(), crm_auth_client::Error> {
    /// let ndjson = r#"{"type":"organisation","name":"Acme"}
    /// {"type":"unit","organisation":"Acme","name":"Headquarters","code":"HQ"}
    /// "#;
    /// let report = admin.import(ndjson, true).await?;
    /// println!("would create {} users, {} lines unchanged", report.created.users, report.unchanged);
    /// let report = admin.import(ndjson, false).await?;
    /// println!("created {} users", report.created.users);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn import(&self, ndjson: impl AsRef<[u8]>, dry_run: bool) -> Result<ImportReport, Error> {
        let mut url = self.url(routes::ADMIN_IMPORT, &[])?;
        if dry_run {
            url.query_pairs_mut().append_pair("dry_run", "true");
        }
        let body = ndjson.as_ref();
        self.client
            .admin_call(Policy::ConnectionRefused, || {
                self.request(Method::POST, &url)
                    .header(header::CONTENT_TYPE, NDJSON)
                    .body(body.to_vec())
            })
            .await
    }

    /// The URL of the administration path `template` (a `routes::ADMIN_*` constant) at the server's root, each
    /// `{name}` placeholder replaced by its value in `params` as one percent-encoded segment.
    fn url(&self, template: &str, params: &[(&str, &str)]) -> Result<Url, Error> {
        let mut url = self.client.root().clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| Error::invalid_argument("the base url cannot have a path"))?;
            segments.pop_if_empty();
            for part in template.split('/').filter(|part| !part.is_empty()) {
                match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                    None => {
                        segments.push(part);
                    }
                    Some(name) => {
                        let value = params
                            .iter()
                            .find(|(param, _)| *param == name)
                            .map(|(_, value)| *value)
                            .ok_or_else(|| Error::invalid_argument(format!("no value for {{{name}}}")))?;
                        segments.push(checked_segment(name, value)?);
                    }
                }
            }
        }
        Ok(url)
    }

    fn sessions_url(&self, org: &str, username: Option<&str>) -> Result<Url, Error> {
        let mut url = self.url(routes::ADMIN_SESSIONS, &[("org", org)])?;
        if let Some(username) = username {
            url.query_pairs_mut().append_pair("username", username);
        }
        Ok(url)
    }

    fn request(&self, method: Method, url: &Url) -> RequestBuilder {
        self.client
            .with_token(self.client.http().request(method, url.clone()), &self.auth)
    }

    /// A read: repeated where safe.
    async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T, Error> {
        self.client
            .admin_call(Policy::Idempotent, || self.request(Method::GET, &url))
            .await
    }

    /// A change: never repeated once it may have reached the server.
    async fn change<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, Error> {
        self.client
            .admin_call(Policy::ConnectionRefused, || {
                let request = self.request(method.clone(), &url);
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await
    }

    /// A change whose answer is `{}`.
    async fn delete(&self, url: Url) -> Result<(), Error> {
        let _: crm_auth_core::Empty = self.change(Method::DELETE, url, None::<&()>).await?;
        Ok(())
    }

    /// One page of the list at `url`.
    async fn page<T: DeserializeOwned>(&self, mut url: Url, page: &PageQuery) -> Result<Page<T>, Error> {
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("limit", &page.limit.to_string());
            if let Some(cursor) = &page.cursor {
                pairs.append_pair("cursor", cursor);
            }
        }
        self.get(url).await
    }

    /// Every item of the list at `url`, as a stream; an unusable `url` is the stream's one item.
    fn all<T: DeserializeOwned + Send + 'static>(
        &self,
        url: Result<Url, Error>,
    ) -> BoxStream<'static, Result<T, Error>> {
        match url {
            Ok(url) => {
                let pager = Pager::new(self.clone(), url);
                stream::try_unfold(pager, |mut pager| async move {
                    Ok(pager.next().await?.map(|item| (item, pager)))
                })
                .boxed()
            }
            Err(err) => stream::iter([Err(err)]).boxed(),
        }
    }
}

/// Refuses what cannot travel as one path segment: `url` drops `.` and `..` segments and strips tabs and line
/// breaks, so such a value would address another path.
fn checked_segment<'a>(name: &str, value: &'a str) -> Result<&'a str, Error> {
    let what = match name {
        "org" => "the organisation",
        "username" => "the username",
        _ => "the id",
    };
    if value.is_empty() {
        return Err(Error::invalid_argument(format!("{what} is empty")));
    }
    if matches!(value, "." | "..") || value.contains(['\t', '\n', '\r']) {
        return Err(Error::invalid_argument(format!(
            "{what} cannot be sent in a url path (\".\", \"..\", a tab or a line break): name it by its id"
        )));
    }
    Ok(value)
}

/// Walks a list page by page, for the `all_*` streams.
struct Pager<T> {
    admin: Admin,
    url: Url,
    cursor: Option<String>,
    items: VecDeque<T>,
    done: bool,
}

impl<T: DeserializeOwned> Pager<T> {
    fn new(admin: Admin, url: Url) -> Pager<T> {
        Pager {
            admin,
            url,
            cursor: None,
            items: VecDeque::new(),
            done: false,
        }
    }

    /// The next item, fetching the next page when this one is used up; `None` after the last page and after an
    /// error.
    async fn next(&mut self) -> Result<Option<T>, Error> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(Some(item));
            }
            if self.done {
                return Ok(None);
            }
            // Set until the page has arrived, so that an error ends the walk.
            self.done = true;
            let query = PageQuery {
                limit: STREAM_PAGE_ITEMS,
                cursor: self.cursor.clone(),
            };
            let page: Page<T> = self.admin.page(self.url.clone(), &query).await?;
            if page.next_cursor.is_some() && page.next_cursor == self.cursor {
                // The same cursor again would be asked for forever.
                return Err(Error::Decode {
                    http_status: 200,
                    reason: "the next page's cursor is the one just sent".to_owned(),
                });
            }
            self.done = page.next_cursor.is_none();
            self.cursor = page.next_cursor;
            self.items = page.items.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use crm_auth_core::{Empty, ErrorCode};

    use super::*;
    use crate::testserver::{Recorded, Reply, TestServer};

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJBIn0.c2ln";

    fn admin(server: &TestServer) -> anyhow::Result<Admin> {
        Ok(Client::builder().base_url(server.url()).build()?.admin(TOKEN)?)
    }

    fn organisation(name: &str) -> Organisation {
        Organisation {
            id: "0123456789ABCDEF0123456789ABCDEF".to_owned(),
            name: name.to_owned(),
            created_at: 1_700_000_000,
        }
    }

    fn user(username: &str) -> User {
        User {
            id: "00000000000000000000000000000001".to_owned(),
            username: username.to_owned(),
            role: Role::Member,
            disabled: false,
            units: vec![Unit {
                id: "00000000000000000000000000000002".to_owned(),
                name: "Headquarters".to_owned(),
                code: Some("HQ".to_owned()),
            }],
            default_unit: Some("00000000000000000000000000000002".to_owned()),
            created_at: 1_700_000_000,
        }
    }

    fn page<T: Serialize>(items: Vec<T>, next_cursor: Option<&str>) -> Reply {
        Reply::data(
            200,
            &Page {
                items,
                next_cursor: next_cursor.map(str::to_owned),
            },
        )
    }

    fn head_lines(requests: &[Recorded]) -> Vec<String> {
        requests.iter().map(|r| r.head_line.clone()).collect()
    }

    #[tokio::test]
    async fn each_name_travels_as_one_encoded_segment_at_the_root() -> anyhow::Result<()> {
        let server = TestServer::start(vec![page(Vec::<Unit>::new(), None)])?;
        let admin = admin(&server)?;
        // A slash in a name must not split it into two segments, nor a space end the path.
        admin.list_units("a b/c", &PageQuery::default()).await?;
        server.script(vec![Reply::data(200, &user("x?y#z%"))]);
        admin.user("Zürich", "x?y#z%").await?;
        server.script(vec![Reply::data(200, &organisation("%2e%2E"))]);
        admin.organisation("%2e%2E").await?;
        assert_eq!(
            head_lines(&server.requests()),
            [
                "GET /admin/v1/organisations/a%20b%2Fc/units?limit=50 HTTP/1.1",
                "GET /admin/v1/organisations/Z%C3%BCrich/users/x%3Fy%23z%25 HTTP/1.1",
                "GET /admin/v1/organisations/%252e%252E HTTP/1.1",
            ]
        );

        // Below a proxy's prefix, and never under the API's base path.
        let client = Client::builder()
            .base_url(format!("{}crm/", server.url()))
            .base_path("/api/v9")
            .build()?;
        server.script(vec![page(vec![organisation("Acme")], None)]);
        let listed = client
            .admin(TOKEN)?
            .list_organisations(&PageQuery::default())
            .await?;
        assert_eq!(listed.items, [organisation("Acme")]);
        assert_eq!(
            server.requests().last().map(Recorded::path),
            Some("/crm/admin/v1/organisations?limit=50")
        );
        Ok(())
    }

    #[tokio::test]
    async fn names_a_url_cannot_carry_are_refused_before_sending() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::empty()])?;
        let admin = admin(&server)?;
        // `url` would drop these segments: `DELETE .../keys/..` would become `DELETE .../organisations/Acme`.
        for (org, id) in [
            ("Acme", ".."),
            ("Acme", "."),
            ("..", "K"),
            ("", "K"),
            ("Acme", ""),
            ("a\tb", "K"),
        ] {
            let err = admin.revoke_key(org, id).await.err();
            assert!(
                matches!(err, Some(Error::InvalidArgument { .. })),
                "{org:?} {id:?}: {err:?}"
            );
        }
        let err = admin
            .update_user("Acme", "a\nb", &UserChange::default())
            .await
            .err();
        assert!(matches!(err, Some(Error::InvalidArgument { .. })), "{err:?}");
        let mut users = admin.all_users("..");
        assert!(matches!(
            users.try_next().await,
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(users.try_next().await, Ok(None)));
        assert!(server.requests().is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn creation_sends_the_bearer_and_json_and_reads_201() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::data(201, &organisation("Acme"))])?;
        let admin = admin(&server)?;
        assert_eq!(admin.create_organisation("Acme").await?, organisation("Acme"));

        let created = CreatedKey {
            info: Key {
                id: "00000000000000000000000000000003".to_owned(),
                prefix: "EE63A8".to_owned(),
                name: Some("billing".to_owned()),
                username: "alice".to_owned(),
                expires_at: None,
                created_at: 1_700_000_000,
                last_used_at: None,
                revoked_at: None,
            },
            key: "EE63A82C4FEBE02FF34E90DD1EBA5ABE".to_owned(),
        };
        server.script(vec![Reply::data(201, &created)]);
        let new = NewKey {
            username: "alice".to_owned(),
            name: Some("billing".to_owned()),
            expires_at: None,
        };
        let got = admin.create_key("Acme", &new).await?;
        assert_eq!(got, created);
        assert!(!format!("{got:?}").contains(&created.key));

        let requests = server.requests();
        assert_eq!(
            head_lines(&requests),
            [
                "POST /admin/v1/organisations HTTP/1.1",
                "POST /admin/v1/organisations/Acme/keys HTTP/1.1",
            ]
        );
        let bodies: Vec<&[u8]> = requests.iter().map(|r| r.body.as_slice()).collect();
        assert_eq!(
            bodies,
            [
                &br#"{"name":"Acme"}"#[..],
                br#"{"username":"alice","name":"billing"}"#
            ]
        );
        for request in &requests {
            assert_eq!(
                request.header("authorization").as_deref(),
                Some(format!("Bearer {TOKEN}").as_str())
            );
            assert_eq!(
                request.header("content-type").as_deref(),
                Some("application/json")
            );
            assert_eq!(request.header("accept").as_deref(), Some("application/json"));
        }
        Ok(())
    }

    #[tokio::test]
    async fn streams_follow_next_cursor_until_null() -> anyhow::Result<()> {
        let server = TestServer::start(vec![
            page(vec![user("a"), user("b")], Some("c/1+")),
            page(Vec::<User>::new(), Some("c2")),
            page(vec![user("c")], None),
            // Never asked for: the stream stops at the null cursor.
            page(vec![user("d")], None),
        ])?;
        let admin = admin(&server)?;
        let users: Vec<User> = admin.all_users("Acme").try_collect().await?;
        let names: Vec<&str> = users.iter().map(|u| u.username.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_owned()).collect();
        assert_eq!(
            paths,
            [
                "/admin/v1/organisations/Acme/users?limit=500",
                "/admin/v1/organisations/Acme/users?limit=500&cursor=c%2F1%2B",
                "/admin/v1/organisations/Acme/users?limit=500&cursor=c2",
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn one_page_passes_limit_cursor_and_username() -> anyhow::Result<()> {
        let server = TestServer::start(vec![page(Vec::<Session>::new(), Some("next"))])?;
        let admin = admin(&server)?;
        let query = PageQuery {
            limit: 7,
            cursor: Some("x y".to_owned()),
        };
        let got = admin.list_sessions("Acme", Some("al ice"), &query).await?;
        assert_eq!(got.next_cursor.as_deref(), Some("next"));
        server.script(vec![page(Vec::<Session>::new(), None)]);
        let all: Vec<Session> = admin.all_sessions("Acme", None).try_collect().await?;
        assert!(all.is_empty());
        server.script(vec![page(Vec::<AuditEvent>::new(), None)]);
        admin.list_audit("Acme", &PageQuery::default()).await?;
        let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_owned()).collect();
        assert_eq!(
            paths,
            [
                "/admin/v1/organisations/Acme/sessions?username=al+ice&limit=7&cursor=x+y",
                "/admin/v1/organisations/Acme/sessions?limit=500",
                "/admin/v1/organisations/Acme/audit?limit=50",
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_stream_ends_after_an_error() -> anyhow::Result<()> {
        let server = TestServer::start(vec![
            page(vec![organisation("A")], Some("c1")),
            Reply::error(ErrorCode::Forbidden, None),
            page(vec![organisation("B")], None),
        ])?;
        let mut orgs = admin(&server)?.all_organisations();
        assert_eq!(orgs.try_next().await?, Some(organisation("A")));
        let err = orgs.try_next().await.err();
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Forbidden));
        assert!(matches!(orgs.try_next().await, Ok(None)));
        assert_eq!(server.requests().len(), 2);

        // A server handing back the cursor it was sent would be asked forever.
        let server = TestServer::start(vec![page(vec![organisation("A")], Some("same"))])?;
        let mut orgs = admin(&server)?.all_organisations();
        assert_eq!(orgs.try_next().await?, Some(organisation("A")));
        assert!(matches!(orgs.try_next().await, Err(Error::Decode { .. })));
        assert!(matches!(orgs.try_next().await, Ok(None)));
        assert_eq!(server.requests().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn refusals_surface_with_their_codes() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::error(ErrorCode::Forbidden, None)])?;
        let admin = admin(&server)?;
        let err = admin.create_organisation("Acme").await.err();
        assert_eq!(err.as_ref().and_then(Error::code), Some(ErrorCode::Forbidden));
        assert_eq!(err.as_ref().and_then(Error::http_status), Some(403));

        server.script(vec![Reply::error(ErrorCode::Conflict, None)]);
        let new = NewUser {
            username: "alice".to_owned(),
            password: Some("hunter2-password".to_owned()),
            units: vec!["HQ".to_owned()],
            default_unit: None,
            role: Some(Role::Admin),
        };
        let err = admin.create_user("Acme", &new).await.err();
        assert_eq!(err.as_ref().and_then(Error::code), Some(ErrorCode::Conflict));
        assert_eq!(err.as_ref().and_then(Error::http_status), Some(409));
        assert!(err.is_some_and(|e| !format!("{e} {e:?}").contains("hunter2")));
        let sent: serde_json::Value = serde_json::from_slice(
            &server
                .requests()
                .last()
                .map(|r| r.body.clone())
                .unwrap_or_default(),
        )?;
        assert_eq!(
            sent,
            serde_json::json!({"username": "alice", "password": "hunter2-password", "units": ["HQ"], "role": "admin"})
        );
        Ok(())
    }

    #[tokio::test]
    async fn changes_are_not_repeated_after_an_answer_but_reads_are() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::error(ErrorCode::Unavailable, Some(0))])?;
        let admin = admin(&server)?;
        let unit = NewUnit {
            name: "Branch".to_owned(),
            code: None,
        };
        let change = UserChange {
            disabled: Some(true),
            ..UserChange::default()
        };
        let errors = [
            admin.create_organisation("Acme").await.err(),
            admin.create_unit("Acme", &unit).await.err(),
            admin.update_user("Acme", "alice", &change).await.err(),
            admin.end_user_sessions("Acme", "alice").await.err(),
            admin.revoke_key("Acme", "K").await.err(),
            admin.revoke_session("Acme", "S").await.err(),
            admin.import("{}\n", true).await.err(),
        ];
        for err in errors {
            assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Unavailable));
        }
        // One request per change: a 503 may follow a change the server made.
        let methods: Vec<String> = server
            .requests()
            .iter()
            .filter_map(|r| r.head_line.split(' ').next().map(str::to_owned))
            .collect();
        assert_eq!(
            methods,
            ["POST", "POST", "PATCH", "DELETE", "DELETE", "DELETE", "POST"]
        );

        // A read is repeated (the default two retries).
        let err = admin.list_units("Acme", &PageQuery::default()).await.err();
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Unavailable));
        assert_eq!(server.requests().len(), 7 + 3);
        Ok(())
    }

    #[tokio::test]
    async fn deletes_and_the_import_read_their_answers() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::data(200, &Ended { ended: 3 })])?;
        let admin = admin(&server)?;
        assert_eq!(admin.end_user_sessions("Acme", "alice").await?, 3);
        server.script(vec![Reply::data(200, &Empty {})]);
        admin
            .revoke_key("Acme", "00000000000000000000000000000003")
            .await?;
        admin
            .revoke_session("Acme", "0195A1B2C3D4E5F60718293A4B5C6D7E")
            .await?;

        let report = ImportReport {
            created: ImportCounts {
                organisations: 1,
                units: 2,
                users: 3,
                web_api_keys: 4,
            },
            unchanged: 5,
            dry_run: true,
        };
        server.script(vec![Reply::data(200, &report)]);
        let ndjson = "{\"type\":\"organisation\",\"name\":\"Acme\"}\n";
        assert_eq!(admin.import(ndjson, true).await?, report);
        admin.import(ndjson.as_bytes().to_vec(), false).await?;

        let requests = server.requests();
        assert_eq!(
            head_lines(&requests),
            [
                "DELETE /admin/v1/organisations/Acme/users/alice/sessions HTTP/1.1",
                "DELETE /admin/v1/organisations/Acme/keys/00000000000000000000000000000003 HTTP/1.1",
                "DELETE /admin/v1/organisations/Acme/sessions/0195A1B2C3D4E5F60718293A4B5C6D7E HTTP/1.1",
                "POST /admin/v1/import?dry_run=true HTTP/1.1",
                "POST /admin/v1/import HTTP/1.1",
            ]
        );
        for import in &requests[3..] {
            assert_eq!(
                import.header("content-type").as_deref(),
                Some("application/x-ndjson")
            );
            assert_eq!(import.body, ndjson.as_bytes());
        }
        for delete in &requests[..3] {
            assert!(delete.body.is_empty());
        }
        Ok(())
    }

    #[test]
    fn the_token_is_checked_and_hidden() -> anyhow::Result<()> {
        let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
        assert!(matches!(
            client.admin("a.b\r\nX: 1"),
            Err(Error::InvalidArgument { .. })
        ));
        let shown = format!("{:?}", client.admin(TOKEN)?);
        assert!(!shown.contains(TOKEN), "{shown}");
        Ok(())
    }
}
