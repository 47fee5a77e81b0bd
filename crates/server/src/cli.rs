//! The `crm-auth` command line: serve, migrate, purge and the admin commands.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use crm_auth_core::limits::MAX_PASSWORD_BYTES;
use crm_auth_core::{Algorithm, Role};

use crate::clock::{Clock as _, SystemClock};
use crate::db::{self, DbConnection};
use crate::http::listeners::Listeners;
use crate::http::shutdown;
use crate::logging;
use crate::password::PasswordHasher;
use crate::service::admin::{self, Actor, ExistingDemoUser, NewUser};
use crate::service::{import, retention};
use crate::settings::Settings;
use crate::state::AppState;

/// `println!` that returns an error instead of panicking when standard output is closed (`crm-auth session
/// list | head`); the binary ends quietly on that error (see [`is_closed_output`]).
macro_rules! say {
    () => {
        writeln!(std::io::stdout())?
    };
    ($($arg:tt)*) => {
        writeln!(std::io::stdout(), $($arg)*)?
    };
}

/// Whether a command failed only because its standard output was closed, as by `| head`: not an error to
/// report.
pub fn is_closed_output(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A self-hostable authentication service speaking CRM.COM's Web API authentication protocol.
#[derive(Debug, Parser)]
#[command(name = "crm-auth", version, about)]
pub struct Cli {
    /// Configuration file (TOML); `CRM_AUTH__SECTION__KEY` variables override it.
    #[arg(long, global = true, env = "CRM_AUTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve the HTTP API.
    Serve {
        /// First create the demo organisation, unit, user and key, and print them.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending migrations.
    Migrate,
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Units of an organisation.
    #[command(subcommand)]
    Unit(UnitCommand),
    /// Users of an organisation.
    #[command(subcommand)]
    User(UserCommand),
    /// Web API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Sessions.
    #[command(subcommand)]
    Session(SessionCommand),
    /// Delete sessions past `session.retention_seconds` and failed-login records older than
    /// `auth.lockout.max_seconds` now (`serve` does it every `session.purge_interval_seconds`); print the
    /// counts.
    Purge {
        /// Only count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Import organisations, units, users and Web API keys from an NDJSON file (one JSON object per line; see
    /// the README); print the report as JSON. The whole file is checked first, then written in one
    /// transaction: an error names its line and field and changes nothing.
    Import {
        /// The NDJSON file; `-` reads standard input.
        file: PathBuf,
        /// Check the whole file and count what it would create; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Idempotently create organisation `demo`, unit `HQ`, user `admin` with a password and a key; print them.
    Demo,
    /// Print the OpenAPI document for the configured base path (`cargo xtask codegen` writes it to
    /// docs/openapi.json).
    #[command(hide = true)]
    Openapi,
}

/// `org` commands.
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organisation and print its id.
    Add {
        /// Unique name, compared after Unicode NFKC normalisation and case folding.
        name: String,
    },
    /// Disable an organisation: no more tokens for its users, and their sessions end.
    Disable {
        /// Organisation name or id.
        org: String,
    },
    /// Enable a disabled organisation.
    Enable {
        /// Organisation name or id.
        org: String,
    },
}

/// `unit` commands.
#[derive(Debug, Subcommand)]
pub enum UnitCommand {
    /// Create a unit and print its id.
    Add {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Unit name, unique in the organisation.
        name: String,
        /// Optional short code, unique in the organisation.
        #[arg(long)]
        code: Option<String>,
    },
    /// Disable a unit: no more tokens for it, and the sessions logged into it end.
    Disable {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Unit id, name or code.
        unit: String,
    },
    /// Enable a disabled unit.
    Enable {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Unit id, name or code.
        unit: String,
    },
}

/// Names a user.
#[derive(Debug, Args)]
pub struct UserRef {
    /// Organisation name or id.
    #[arg(long)]
    pub org: String,
    /// Username.
    pub username: String,
}

/// `user` commands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user in one or more units and print its id.
    Add {
        /// The user.
        #[command(flatten)]
        user: UserRef,
        /// A unit (id, name or code); repeat for several.
        #[arg(long = "unit", required = true)]
        units: Vec<String>,
        /// The default unit (else the first --unit).
        #[arg(long)]
        default_unit: Option<String>,
        /// Read a password from standard input; without it the user can only use keys.
        #[arg(long)]
        password_stdin: bool,
        /// The user's role: member (gets tokens), admin (administers its organisation) or operator
        /// (administers every organisation).
        #[arg(long, default_value = "member", value_name = "ROLE")]
        role: String,
    },
    /// Set a user's password, read from standard input.
    Passwd {
        /// The user.
        #[command(flatten)]
        user: UserRef,
        /// Read the password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Set a user's role: member, admin or operator.
    Role {
        /// The user.
        #[command(flatten)]
        user: UserRef,
        /// member, admin or operator.
        role: String,
    },
    /// Disable a user: no more tokens, and its sessions end.
    Disable {
        /// The user.
        #[command(flatten)]
        user: UserRef,
    },
    /// Enable a disabled user.
    Enable {
        /// The user.
        #[command(flatten)]
        user: UserRef,
    },
}

/// `key` commands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a Web API key; the key alone is the last line of the output, shown only this once.
    Create {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// The key's user.
        #[arg(long)]
        user: String,
        /// A name to tell the key apart in listings (names may repeat).
        #[arg(long)]
        name: Option<String>,
        /// When the key stops working: RFC 3339 (2027-01-31T12:00:00Z) or unix seconds.
        #[arg(long, value_name = "WHEN")]
        expires_at: Option<String>,
    },
    /// List an organisation's keys (never the keys themselves).
    List {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
    },
    /// Revoke a key; the sessions it opened end.
    Revoke {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// The key's id (from `key list`).
        key_id: String,
    },
}

/// `session` commands.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List live sessions.
    List {
        /// Organisation name or id.
        #[arg(long)]
        org: String,
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// End a session.
    Revoke {
        /// The session id (the token's jti).
        jti: String,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    logging::init(&settings.log)?;
    let now = SystemClock.now();
    match cli.command {
        Command::Serve { demo } => serve(settings, cli.config, demo),
        Command::Migrate => {
            let applied = db::run_migrations(&mut connect(&settings)?)?;
            say!("applied {applied} migration(s)");
            Ok(())
        }
        Command::Demo => print_demo(&settings, &mut migrated(&settings)?, ExistingDemoUser::Reset),
        Command::Openapi => {
            write!(
                std::io::stdout(),
                "{}",
                crate::http::openapi::to_json(&settings.http.base_path)?
            )?;
            Ok(())
        }
        Command::Org(command) => run_org(&settings, command, now),
        Command::Unit(command) => run_unit(&settings, command, now),
        Command::User(command) => run_user(&settings, command, now),
        Command::Key(command) => run_key(&settings, command, now),
        Command::Session(command) => run_session(&settings, command, now),
        Command::Purge { dry_run } => run_purge(&settings, dry_run, now),
        Command::Import { file, dry_run } => run_import(&settings, &file, dry_run, now),
    }
}

/// Says what an enable or disable did.
fn switched(name: &str, active: bool, ended: usize) -> anyhow::Result<()> {
    if active {
        say!("enabled {name}");
    } else {
        say!("disabled {name}; ended {ended} session(s)");
    }
    Ok(())
}

fn run_org(settings: &Settings, command: OrgCommand, now: i64) -> anyhow::Result<()> {
    let conn = &mut migrated(settings)?;
    let (org, active) = match command {
        OrgCommand::Add { name } => {
            let org = admin::add_organisation(conn, &Actor::Cli, &name, now)?;
            warn_look_alike(
                "organisation",
                &org.name,
                admin::look_alike_organisation(conn, &org),
            );
            say!("{}", org.id);
            return Ok(());
        }
        OrgCommand::Disable { org } => (org, false),
        OrgCommand::Enable { org } => (org, true),
    };
    let org = admin::find_organisation(conn, &org)?;
    let ended = admin::set_organisation_active(conn, &Actor::Cli, &org, active, now)?;
    switched(&org.name, active, ended)
}

fn run_unit(settings: &Settings, command: UnitCommand, now: i64) -> anyhow::Result<()> {
    let conn = &mut migrated(settings)?;
    let (org, unit, active) = match command {
        UnitCommand::Add { org, name, code } => {
            let org = admin::find_organisation(conn, &org)?;
            let unit = admin::add_unit(conn, &Actor::Cli, &org, &name, code.as_deref(), now)?;
            warn_look_alike("unit", &unit.name, admin::look_alike_unit(conn, &unit));
            say!("{}", unit.id);
            return Ok(());
        }
        UnitCommand::Disable { org, unit } => (org, unit, false),
        UnitCommand::Enable { org, unit } => (org, unit, true),
    };
    let org = admin::find_organisation(conn, &org)?;
    let unit = admin::find_unit(conn, &org, &unit)?;
    let ended = admin::set_unit_active(conn, &Actor::Cli, &org, &unit, active, now)?;
    switched(&unit.name, active, ended)
}

/// A role named on the command line.
fn parse_role(role: &str) -> anyhow::Result<Role> {
    role.parse().map_err(|e| anyhow::anyhow!("role {role:?}: {e}"))
}

fn run_user(settings: &Settings, command: UserCommand, now: i64) -> anyhow::Result<()> {
    let conn = &mut migrated(settings)?;
    let active = matches!(command, UserCommand::Enable { .. });
    match command {
        UserCommand::Add {
            user,
            units,
            default_unit,
            password_stdin,
            role,
        } => {
            let role = parse_role(&role)?;
            let org = admin::find_organisation(conn, &user.org)?;
            let password_hash = if password_stdin {
                Some(hash_stdin_password(settings)?)
            } else {
                None
            };
            let new = NewUser {
                username: &user.username,
                units: &units,
                default_unit: default_unit.as_deref(),
                password_hash,
                role,
            };
            let created = admin::add_user(conn, &Actor::Cli, &org, new, now)?;
            warn_look_alike("user", &created.username, admin::look_alike_user(conn, &created));
            say!("{}", created.id);
        }
        UserCommand::Passwd { user, .. } => {
            let org = admin::find_organisation(conn, &user.org)?;
            let found = admin::find_user(conn, &org, &user.username)?;
            let hash = hash_stdin_password(settings)?;
            admin::set_password(conn, &Actor::Cli, &org, &found, &hash, now)?;
            say!("password set for {}", found.username);
        }
        UserCommand::Role { user, role } => {
            let role = parse_role(&role)?;
            let org = admin::find_organisation(conn, &user.org)?;
            let found = admin::find_user(conn, &org, &user.username)?;
            admin::set_role(conn, &Actor::Cli, &org, &found, role, now)?;
            say!("{} is now {role}", found.username);
        }
        UserCommand::Disable { user } | UserCommand::Enable { user } => {
            let org = admin::find_organisation(conn, &user.org)?;
            let found = admin::find_user(conn, &org, &user.username)?;
            let ended = admin::set_user_active(conn, &Actor::Cli, &org, &found, active, now)?;
            switched(&found.username, active, ended)?;
        }
    }
    Ok(())
}

/// A time given on the command line: RFC 3339 (`2027-01-31T12:00:00Z`) or unix seconds.
fn parse_when(flag: &str, when: &str) -> anyhow::Result<i64> {
    if let Ok(seconds) = when.parse::<i64>() {
        return Ok(seconds);
    }
    when.parse::<jiff::Timestamp>()
        .map(|at| at.as_second())
        .map_err(|_| anyhow::anyhow!("{flag} {when:?} is neither an RFC 3339 time nor unix seconds"))
}

/// A unix time as RFC 3339 for listings, `-` when absent.
fn time_or_dash(at: Option<i64>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| jiff::Timestamp::from_second(at).map_or_else(|_| at.to_string(), |t| t.to_string()),
    )
}

fn run_key(settings: &Settings, command: KeyCommand, now: i64) -> anyhow::Result<()> {
    let conn = &mut migrated(settings)?;
    match command {
        KeyCommand::Create {
            org,
            user,
            name,
            expires_at,
        } => {
            let expires_at = expires_at
                .map(|when| parse_when("--expires-at", &when))
                .transpose()?;
            let org = admin::find_organisation(conn, &org)?;
            let user = admin::find_user(conn, &org, &user)?;
            let details = (name.as_deref(), expires_at);
            let (row, key) = admin::create_key(conn, &Actor::Cli, &org, &user, details, now)?;
            say!(
                "key id {} for {} in {} (the key is shown only now):",
                row.id,
                user.username,
                org.name
            );
            say!("{}", key.expose());
        }
        KeyCommand::List { org } => {
            let org = admin::find_organisation(conn, &org)?;
            say!(
                "{:<32}  {:<8}  {:<20}  {:<10}  {:<10}  {:<10}  {:<20}  name",
                "id",
                "prefix",
                "user",
                "created",
                "revoked",
                "last_used",
                "expires"
            );
            for key in crate::db::api_key::find_by_organisation(conn, &org.id)? {
                let user = crate::db::user::find_by_id(conn, &key.user_id)?
                    .map(|u| u.username)
                    .unwrap_or_default();
                let or_dash = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), |t| t.to_string());
                say!(
                    "{:<32}  {:<8}  {:<20}  {:<10}  {:<10}  {:<10}  {:<20}  {}",
                    key.id,
                    key.prefix,
                    user,
                    key.created_at,
                    or_dash(key.revoked_at),
                    or_dash(key.last_used_at),
                    time_or_dash(key.expires_at),
                    key.name.as_deref().unwrap_or("-")
                );
            }
        }
        KeyCommand::Revoke { org, key_id } => {
            let org = admin::find_organisation(conn, &org)?;
            let ended = admin::revoke_key(conn, &Actor::Cli, &org, &key_id, now)?;
            say!("revoked {key_id}; ended {ended} session(s)");
        }
    }
    Ok(())
}

fn run_session(settings: &Settings, command: SessionCommand, now: i64) -> anyhow::Result<()> {
    let conn = &mut migrated(settings)?;
    match command {
        SessionCommand::List { org, user } => {
            let org = admin::find_organisation(conn, &org)?;
            let user = user.map(|u| admin::find_user(conn, &org, &u)).transpose()?;
            say!(
                "{:<32}  {:<20}  {:<16}  {:<11}  {:>3}  {:<10}  {:<10}  {:<10}  client",
                "jti",
                "user",
                "unit",
                "method",
                "gen",
                "created",
                "expires",
                "refreshed"
            );
            for s in admin::list_sessions(conn, &org, user.as_ref(), now)? {
                say!(
                    "{:<32}  {:<20}  {:<16}  {:<11}  {:>3}  {:<10}  {:<10}  {:<10}  {}",
                    s.id,
                    s.username,
                    s.unit_name,
                    s.method,
                    s.generation,
                    s.created_at,
                    s.expires_at,
                    s.refreshed_at.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                    s.client.as_deref().unwrap_or("-")
                );
            }
        }
        SessionCommand::Revoke { jti } => {
            let was_live = admin::revoke_session(conn, &Actor::Cli, None, &jti, now)?;
            say!(
                "{}",
                if was_live {
                    "session ended"
                } else {
                    "session had already ended"
                }
            );
        }
    }
    Ok(())
}

fn run_purge(settings: &Settings, dry_run: bool, now: i64) -> anyhow::Result<()> {
    let conn = &mut migrated(settings)?;
    let cutoffs = retention::Cutoffs::at(settings, now);
    if dry_run {
        let found = retention::count(conn, cutoffs)?;
        say!(
            "would purge {} session(s) and {} failed-login record(s) (dry run: nothing deleted)",
            found.sessions,
            found.login_failures
        );
    } else {
        // Asked to purge now, so it waits for a node's batch in progress rather than skipping.
        let purged = retention::purge(conn, cutoffs, retention::Contention::Wait)?.purged();
        say!(
            "purged {} session(s) and {} failed-login record(s)",
            purged.sessions,
            purged.login_failures
        );
    }
    Ok(())
}

fn run_import(settings: &Settings, file: &std::path::Path, dry_run: bool, now: i64) -> anyhow::Result<()> {
    let body = if file.as_os_str() == "-" {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .context("cannot read the file from standard input")?;
        body
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let conn = &mut migrated(settings)?;
    // Clear passwords are hashed on as many threads as the server would use.
    let hasher = PasswordHasher::start(
        &settings.auth.argon2,
        settings.hash_threads(),
        Arc::new(crate::password::NoObserver),
    )?;
    let report = import::run(conn, &hasher, &Actor::Cli, &body, dry_run, now)?;
    say!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Tells the operator, on stderr, that a name just created could be taken for an existing one. The name was
/// created either way, so a failure to look is not an error of the command.
fn warn_look_alike(kind: &str, name: &str, found: Result<Option<String>, admin::AdminError>) {
    if let Ok(Some(other)) = found {
        logging::notice(
            log::Level::Warn,
            format_args!("{kind} {name:?} looks like the existing {other:?}"),
        );
    }
}

fn connect(settings: &Settings) -> anyhow::Result<DbConnection> {
    Ok(db::ConnectionManager::from_settings(&settings.database)?.establish()?)
}

fn migrated(settings: &Settings) -> anyhow::Result<DbConnection> {
    let mut conn = connect(settings)?;
    db::run_migrations(&mut conn)?;
    Ok(conn)
}

fn hash_stdin_password(settings: &Settings) -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the password from standard input")?;
    let password = input
        .strip_suffix('\n')
        .map_or(input.as_str(), |p| p.strip_suffix('\r').unwrap_or(p));
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes");
    }
    Ok(PasswordHasher::hash_blocking(&settings.auth.argon2, password)?)
}

fn random_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("the random generator failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn print_demo(
    settings: &Settings,
    conn: &mut DbConnection,
    existing: ExistingDemoUser,
) -> anyhow::Result<()> {
    let new_password = || -> anyhow::Result<(String, String)> {
        let password = random_password()?;
        let hash = PasswordHasher::hash_blocking(&settings.auth.argon2, &password)?;
        Ok((password, hash))
    };
    let demo = admin::demo(conn, &Actor::Cli, new_password, existing, SystemClock.now())?;
    let Some((password, key)) = demo.credentials else {
        say!(
            "demo user {} exists in organisation {}; its password and keys are unchanged (`crm-auth demo` \
             gives it new ones)",
            demo.username,
            demo.organisation
        );
        return Ok(());
    };
    let addr = settings.bind_addr()?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    let host = if addr.is_ipv6() && !addr.ip().is_unspecified() {
        format!("[{host}]")
    } else {
        host
    };
    let root = format!("http://{host}:{}", addr.port());
    let base = format!("{root}{}", settings.http.base_path);
    say!("demo organisation: {}", demo.organisation);
    say!("demo unit:         {}", demo.unit);
    say!("demo user:         {}", demo.username);
    say!("demo password:     {password}");
    say!("demo Web API key:  {}", key.expose());
    say!();
    say!("# a token by username and password:");
    say!(
        "curl -s -X POST {base}/authentication/token -H 'Content-Type: application/json' \\\n  -d '{{\"username\":\"{}\",\"password\":\"{}\",\"organisation\":\"{}\"}}'",
        demo.username,
        password,
        demo.organisation
    );
    say!("# a token by Web API key:");
    say!(
        "curl -s -X POST -u '{}:' {base}/authentication/web_api_key/token",
        key.expose()
    );
    say!("# is a token's session live? (paste the token)");
    say!("curl -s {base}/authentication/token/validate -H 'Authorization: Bearer TOKEN'");
    say!("# the admin console in a browser (sign in with the organisation, user and password above):");
    say!("{root}{}", crm_auth_core::routes::CONSOLE);
    for line in verifying_hint(settings, &root) {
        say!("{line}");
    }
    say!();
    Ok(())
}

/// How a service verifies this server's tokens offline: the signing key's id, and the file to share with it
/// (HS256) or the JWKS URL (EdDSA, ES256).
fn verifying_hint(settings: &Settings, root: &str) -> Vec<String> {
    let jwks = format!("{root}{}", crm_auth_core::routes::JWKS);
    let share = |id: &str, file: &std::path::Path| {
        vec![
            format!(
                "# verifying tokens offline: HS256, key id \"{id}\", secret in {}",
                file.display()
            ),
            format!(
                "#   copy that file to the service (keep it secret) and read it with \
                 Keyring::from_key_file(\"{id}\", PATH)"
            ),
        ]
    };
    let public = |id: &str| {
        vec![
            format!("# verifying tokens offline: key id \"{id}\", public keys at {jwks}"),
            "#   no secret to share: AuthConfig::jwks(URL) (crm-auth-actix) or any JWT library with a JWKS"
                .to_owned(),
        ]
    };
    match settings.token.keys.first() {
        None if settings.token.algorithm.unwrap_or_default() == Algorithm::Hs256 => share(
            crate::signing::GENERATED_KEY_ID,
            &settings.data_dir.join("signing-key"),
        ),
        None => public(crate::signing::GENERATED_KEY_ID),
        Some(key) => match (&key.secret_file, &key.private_key_file) {
            (_, Some(_)) => public(&key.id),
            (Some(file), None) => share(&key.id, file),
            (None, None) => vec![format!(
                "# verifying tokens offline: HS256, key id \"{}\", its secret as configured in token.keys",
                key.id
            )],
        },
    }
}

fn serve(settings: Settings, config: Option<PathBuf>, demo: bool) -> anyhow::Result<()> {
    let state = AppState::from_settings(settings)?;
    if demo {
        print_demo(
            &state.settings,
            &mut *state.store.pool().get()?,
            ExistingDemoUser::Keep,
        )?;
    }
    let listeners = Listeners::bind(&state.settings)?;
    let management = match &listeners.management {
        Some(listener) => Some(listener.local_addr()?.to_string()),
        None => None,
    };
    log::info!(
        address:% = listeners.main.local_addr()?,
        management_address = management,
        base_path = state.settings.http.base_path.as_str(),
        database = state.store.backend().name();
        "crm-auth listening"
    );
    actix_web::rt::System::new().block_on(async move {
        let signals = shutdown::Signals::listen()?;
        #[cfg(unix)]
        actix_web::rt::spawn(crate::signing::reload_on_hangup(&state, config)?);
        #[cfg(not(unix))]
        let _ = config;
        let drain = Arc::clone(&state.drain);
        let http = state.settings.http.clone();
        let gates = listeners.gates()?;
        // From here the server's workers hold the only copies of the state, so the batching and hashing
        // threads, which end when their queues' last sender goes, end with them.
        let server = crate::http::serve(listeners, state)?;
        actix_web::rt::spawn(shutdown::stop_on(signals, server.handle(), drain, http, gates));
        server.await
    })?;
    log::info!("crm-auth stopped");
    Ok(())
}
