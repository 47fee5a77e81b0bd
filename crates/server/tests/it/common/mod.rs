//! Test support: one fresh database per test on each backend, a `TestApp` that runs the real server on a
//! free port with a manual clock, seeded with an organisation, units, a user and a key, and the small helpers
//! every module uses (error codes, raw requests, the test signing key). Running servers are in `server`.

use std::sync::Arc;

use crm_auth_client::{Client, Credentials};
use crm_auth_core::{ErrorCode, Keyring, SigningKey};
use crm_auth_server::clock::{Clock, ManualClock, SystemClock};
use crm_auth_server::db::user::User;
use crm_auth_server::db::{self, ConnectionManager, DbConnection, PooledConnection};
use crm_auth_server::password::PasswordHasher;
use crm_auth_server::service::admin::{self, Actor, AdminError, NewUser};
use crm_auth_server::settings::{Secret, Settings};
use crm_auth_server::state::AppState;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use self::server::Node;

pub mod load;
pub mod pg;
pub mod server;

/// Declares each listed `async fn name(backend: Backend) -> anyhow::Result<()>` as a test on SQLite and
/// on PostgreSQL.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    match $crate::common::Backend::postgres() {
                        Some(backend) => super::$name(backend).await,
                        None => Ok(()),
                    }
                }
            )*
        }
    };
}

/// Where a test's database lives.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The admin URL of a PostgreSQL server.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL if `cargo xtask test` said it runs (`CRM_AUTH_TEST_BACKENDS`), or, without that variable,
    /// if one answers at `CRM_AUTH_TEST_POSTGRES_URL`.
    pub fn postgres() -> Option<Backend> {
        let url = std::env::var("CRM_AUTH_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        match std::env::var("CRM_AUTH_TEST_BACKENDS") {
            Ok(list) => list
                .split(',')
                .any(|b| b.trim() == "postgres")
                .then_some(Backend::Postgres(url)),
            Err(_) => PgConnection::establish(&url).ok().map(|_| Backend::Postgres(url)),
        }
    }
}

/// Environment variable naming a PgBouncer in transaction mode (`postgres://USER@HOST:PORT`, no database) in
/// front of the server at `CRM_AUTH_TEST_POSTGRES_URL`: when set, servers and their connections reach each
/// test's PostgreSQL database through it, with `database.prepared_statements = false`, while the database
/// itself is created and dropped on the direct URL. `cargo xtask test` runs the PostgreSQL tests so a second
/// time.
pub const PGBOUNCER_URL_VAR: &str = "CRM_AUTH_TEST_PGBOUNCER_URL";

/// The PgBouncer that servers go through, if this run has one.
pub fn pooler_url() -> Option<String> {
    std::env::var(PGBOUNCER_URL_VAR)
        .ok()
        .filter(|url| !url.is_empty())
}

/// A database of its own for one test; PostgreSQL ones are dropped when this is.
pub struct TestDb {
    /// What servers connect to: the database, directly or through the run's PgBouncer.
    pub url: String,
    pub dir: tempfile::TempDir,
    /// Whether `url` goes through a pooler in transaction mode.
    pub pooled: bool,
    admin_url: Option<String>,
    name: String,
}

const PG_PREFIX: &str = "crm_auth_t_";

/// Test databases are named by their creation time, so that stale ones can be swept.
fn unix_now() -> u64 {
    u64::try_from(SystemClock.now()).unwrap_or(0)
}

impl TestDb {
    pub fn new(backend: &Backend) -> anyhow::Result<TestDb> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("crm-auth.db").display());
                Ok(TestDb {
                    url,
                    dir,
                    pooled: false,
                    admin_url: None,
                    name: String::new(),
                })
            }
            Backend::Postgres(admin_url) => {
                let mut admin = PgConnection::establish(admin_url)?;
                sweep_stale(&mut admin)?;
                let name = format!(
                    "{PG_PREFIX}{}_{}",
                    unix_now(),
                    crm_auth_core::new_id().to_lowercase()
                );
                admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
                let pooler = pooler_url();
                let base = pooler.as_deref().unwrap_or_else(|| {
                    admin_url
                        .rsplit_once('/')
                        .map_or(admin_url.as_str(), |(base, _)| base)
                });
                Ok(TestDb {
                    url: format!("{}/{name}", base.trim_end_matches('/')),
                    dir,
                    pooled: pooler.is_some(),
                    admin_url: Some(admin_url.clone()),
                    name,
                })
            }
        }
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::for_test(self.dir.path());
        settings.database.url = Secret::new(self.url.clone());
        settings.database.prepared_statements = !self.pooled;
        settings
    }

    /// Opens connections to this database as a server with [`TestDb::settings`] would.
    pub fn manager(&self) -> anyhow::Result<ConnectionManager> {
        Ok(ConnectionManager::new(db::Backend::from_url(&self.url)?)?.prepared_statements(!self.pooled))
    }
}

/// Drops databases that crashed test runs left behind (older than an hour).
fn sweep_stale(admin: &mut PgConnection) -> anyhow::Result<()> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let names: Vec<Name> = diesel::sql_query(format!(
        "SELECT datname FROM pg_database WHERE datname LIKE '{PG_PREFIX}%'"
    ))
    .load(admin)?;
    let cutoff = unix_now().saturating_sub(3600);
    for Name { datname } in names {
        let created = datname
            .trim_start_matches(PG_PREFIX)
            .split('_')
            .next()
            .and_then(|t| t.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {datname} WITH (FORCE)"));
        }
    }
    Ok(())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(admin_url) = &self.admin_url
            && let Ok(mut admin) = PgConnection::establish(admin_url)
        {
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// The error code a client call was refused with; `None` when it succeeded or got no envelope.
pub fn code<T>(result: Result<T, crm_auth_client::Error>) -> Option<ErrorCode> {
    result.err().and_then(|e| e.code())
}

/// A raw JSON POST with an optional bearer token, for what the client crate would not send.
pub async fn post(
    url: &str,
    bearer: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<reqwest::Response> {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    Ok(req.send().await?)
}

/// A response header's value, when it is present and text.
pub fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The secret of the one signing key `Settings::for_test` configures.
pub const TEST_SECRET: &[u8] = crm_auth_server::settings::TEST_SIGNING_SECRET.as_bytes();

/// The keyring `Settings::for_test` configures: key `test` with [`TEST_SECRET`].
pub fn test_keyring() -> anyhow::Result<Keyring> {
    Ok(Keyring::new(vec![SigningKey::new(
        "test",
        TEST_SECRET.to_vec(),
    )?])?)
}

/// Refresh's and validate's answers for a token whose session has ended.
pub const ENDED: (Option<ErrorCode>, Option<ErrorCode>) =
    (Some(ErrorCode::SessionEnded), Some(ErrorCode::SessionEnded));

/// The error codes of a refresh of `token` and then a validate of it.
pub async fn refresh_then_validate(app: &TestApp, token: &str) -> (Option<ErrorCode>, Option<ErrorCode>) {
    (
        code(app.client.refresh(token).await),
        code(app.client.validate(token).await),
    )
}

/// The seeded data of a [`TestApp`].
pub const ORG: &str = "Acme";
pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";

/// The real server on a free port, with its own database and a clock the test moves.
pub struct TestApp {
    pub url: String,
    pub client: Client,
    pub clock: ManualClock,
    pub state: AppState,
    /// Alice's Web API key.
    pub key: String,
    pub main_unit_id: String,
    /// Stops the server when the test ends.
    _node: Node,
    /// Declared after the server, so that its database is dropped only once the server has stopped.
    _db: TestDb,
}

impl TestApp {
    pub async fn start(backend: &Backend) -> anyhow::Result<TestApp> {
        TestApp::start_with(backend, |_| {}).await
    }

    /// Starts with settings adjusted by `tweak`.
    pub async fn start_with(backend: &Backend, tweak: impl FnOnce(&mut Settings)) -> anyhow::Result<TestApp> {
        let db = TestDb::new(backend)?;
        let mut settings = db.settings();
        tweak(&mut settings);
        let clock = ManualClock::new();
        let state = AppState::build(settings, Arc::new(clock.clone()))?;
        let (key, main_unit_id) = seed(&state, clock.now())?;
        let node = Node::start(state.clone())?;
        let url = node.url.clone();
        let client = Client::builder()
            .base_url(&url)
            .base_path(state.settings.http.base_path.clone())
            .build()?;
        Ok(TestApp {
            url,
            client,
            clock,
            state,
            key,
            main_unit_id,
            _node: node,
            _db: db,
        })
    }

    /// Another server on the same database, keys and clock (another node behind the same load balancer),
    /// with settings adjusted by `tweak`.
    pub fn node_with(&self, tweak: impl FnOnce(&mut Settings)) -> anyhow::Result<Node> {
        let mut settings = (*self.state.settings).clone();
        tweak(&mut settings);
        Node::start(AppState::build(settings, Arc::new(self.clock.clone()))?)
    }

    pub fn conn(&self) -> anyhow::Result<PooledConnection> {
        Ok(self.state.store.pool().get()?)
    }

    /// The API base URL, for raw requests.
    pub fn api(&self, path: &str) -> String {
        format!("{}{}{}", self.url, self.state.settings.http.base_path, path)
    }

    /// Adds a user in the organisation with a password, in the given units (first is default).
    pub fn add_user(&self, username: &str, password: Option<&str>, units: &[&str]) -> anyhow::Result<()> {
        let conn = &mut *self.conn()?;
        let org = admin::find_organisation(conn, ORG)?;
        let hash = password
            .map(|p| PasswordHasher::hash_blocking(&self.state.settings.auth.argon2, p))
            .transpose()?;
        let units: Vec<String> = units.iter().map(|u| (*u).to_owned()).collect();
        add_user(conn, &org, username, &units, None, hash, self.clock.now())?;
        Ok(())
    }

    /// A password token for alice.
    pub async fn login(&self) -> Result<crm_auth_client::Token, crm_auth_client::Error> {
        self.client
            .token(&Credentials::password(USER, PASSWORD, ORG))
            .await
    }
}

/// Organisation Acme with units Main (code MN, alice's default), Second (SC) and Other (no members); user
/// alice with a password in Main and Second, and a key. Returns the key and Main's id.
pub fn seed(state: &AppState, now: i64) -> anyhow::Result<(String, String)> {
    let conn: &mut DbConnection = &mut *state.store.pool().get()?;
    let org = admin::add_organisation(conn, &Actor::Cli, ORG, now)?;
    let main = admin::add_unit(conn, &Actor::Cli, &org, "Main", Some("MN"), now)?;
    admin::add_unit(conn, &Actor::Cli, &org, "Second", Some("SC"), now)?;
    admin::add_unit(conn, &Actor::Cli, &org, "Other", None, now)?;
    let hash = PasswordHasher::hash_blocking(&state.settings.auth.argon2, PASSWORD)?;
    let user = add_user(
        conn,
        &org,
        USER,
        &["Main".into(), "Second".into()],
        None,
        Some(hash),
        now,
    )?;
    let (_, key) = admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), now)?;
    Ok((key.expose().to_owned(), main.id))
}

/// [`admin::add_user`] from the command line, a member, with the arguments spelled out.
pub fn add_user(
    conn: &mut DbConnection,
    org: &crm_auth_server::db::organisation::Organisation,
    username: &str,
    units: &[String],
    default_unit: Option<&str>,
    password_hash: Option<String>,
    now: i64,
) -> Result<User, AdminError> {
    let new = NewUser {
        username,
        units,
        default_unit,
        password_hash,
        ..NewUser::default()
    };
    admin::add_user(conn, &Actor::Cli, org, new, now)
}

/// Seeds the database at `url` for a server run as its own process, which no test clock reaches: migrations,
/// organisation Acme with unit Main (MN), alice in it with a password hashed cheaply, and a key of hers, all
/// written at time 0. Returns the key.
pub fn seed_database(url: &str) -> anyhow::Result<String> {
    let conn = &mut ConnectionManager::new(db::Backend::from_url(url)?)?.establish()?;
    db::run_migrations(conn)?;
    let org = admin::add_organisation(conn, &Actor::Cli, ORG, 0)?;
    admin::add_unit(conn, &Actor::Cli, &org, "Main", Some("MN"), 0)?;
    let hash = PasswordHasher::hash_blocking(
        &crm_auth_server::settings::Argon2Settings {
            m_kib: 256,
            t: 1,
            p: 1,
        },
        PASSWORD,
    )?;
    let user = add_user(conn, &org, USER, &["Main".into()], None, Some(hash), 0)?;
    let (_, key) = admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), 0)?;
    Ok(key.expose().to_owned())
}
