//! Typed configuration: built-in defaults, then the TOML file, then `CRM_AUTH__SECTION__KEY` variables.
//!
//! Loaded once at start-up and passed down; unknown keys and out-of-range values stop start-up with a message
//! that names the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crm_auth_core::{Algorithm, DateFormat};
use serde::Deserialize;

/// Environment variables with this prefix override the file: `CRM_AUTH__DATABASE__URL` sets `database.url`.
pub const ENV_PREFIX: &str = "CRM_AUTH";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or a variable could not be read or does not fit the schema (unknown key, wrong type).
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("configuration: {key}: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// A configuration value that must never be printed.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself; call it only where the secret is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Everything the server and the command line read from configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Folder for the generated signing key and the default SQLite database.
    pub data_dir: PathBuf,
    /// Where the data lives.
    pub database: DatabaseSettings,
    /// The HTTP listener.
    pub http: HttpSettings,
    /// Token lifetime, signing keys and verification rules.
    pub token: TokenSettings,
    /// Session limits.
    pub session: SessionSettings,
    /// Password hashing and lockout.
    pub auth: AuthSettings,
    /// The log's format and level.
    pub log: LogSettings,
}

/// `[database]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    pub url: Secret,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Whether PostgreSQL statements are prepared once per connection and kept (true), or sent with their
    /// parameters each time (false), which a pooler in transaction mode (PgBouncer `pool_mode = transaction`)
    /// needs: it hands each transaction to any of its server connections, where a statement prepared on
    /// another does not exist. Ignored on SQLite.
    pub prepared_statements: bool,
}

/// `[http]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on.
    pub bind: String,
    /// Prefix of the API paths.
    pub base_path: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted body of `POST /admin/v1/import` (an NDJSON file), instead of `max_body_bytes`; at
    /// most [`MAX_IMPORT_BYTES`].
    pub max_import_bytes: usize,
    /// Time a request's headers, and then its body, have to arrive; a body still incomplete then is answered
    /// `REQUEST_TIMEOUT` and its connection closed.
    pub body_timeout_seconds: u64,
    /// Connections one client address (an IPv6 /64) may hold open at once; further ones are closed as soon
    /// as they are accepted. Trusted proxies are not limited.
    pub max_connections_per_address: usize,
    /// Per-address request limit on the token endpoints.
    pub rate_limit: RateLimitSettings,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Address of a second listener serving only `/metrics`, `/health/live` and `/health/ready` (which the
    /// main listener then answers `NOT_FOUND`); empty: everything on the main listener.
    pub management_bind: String,
    /// After SIGTERM or SIGINT, how long requests are still served while `/health/ready` answers
    /// `UNAVAILABLE`, so that load balancers move traffic away before the listeners close; at most 300.
    pub shutdown_drain_seconds: u64,
    /// Once the listeners have closed, how long requests in flight have to finish before their connections
    /// are dropped; 1 to 600.
    pub shutdown_timeout_seconds: u64,
    /// The HTTP status of error answers under the base path: `standard` (each code's own) or `always_200`.
    pub error_status: ErrorStatus,
}

/// `http.error_status`: how error answers of the API under the base path are sent.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum ErrorStatus {
    /// Each code's own HTTP status (401, 429, ...).
    #[default]
    #[serde(rename = "standard")]
    Standard,
    /// HTTP 200 with the same envelope and headers, for CRM.COM integrations that read only `status.code`
    /// and fail on an HTTP error. The operator paths and `/admin/v1` keep their statuses.
    #[serde(rename = "always_200")]
    Always200,
}

/// `[http.rate_limit]`: a token bucket per client address.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained requests per second per address; 0 turns the limit off.
    pub per_second: u32,
    /// Requests an address may send at once before the rate applies.
    pub burst: u32,
    /// Count each address's requests in the database, so that the nodes sharing it allow the rate in total
    /// (at most `max(burst, per_second × window)` requests in any window of `max(1, ⌈burst ÷ per_second⌉)`
    /// seconds) instead of each node allowing it.
    pub shared: bool,
}

/// One `[[token.keys]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    /// The key id, written into each token's `kid`.
    pub id: String,
    /// An HS256 secret itself (at least 32 bytes).
    pub secret: Option<Secret>,
    /// A file holding an HS256 secret: `base64:` followed by standard base64 (as the generated
    /// `{data_dir}/signing-key` is written), or else the raw bytes, trailing line breaks ignored.
    pub secret_file: Option<PathBuf>,
    /// A PKCS#8 PEM file holding an EdDSA (Ed25519) or ES256 (P-256) private key.
    pub private_key_file: Option<PathBuf>,
    /// RFC 3339 time from which the key signs; it is published and verifies at once.
    pub not_before: Option<String>,
}

impl KeySettings {
    /// An HS256 key with this secret, for tests.
    pub fn hs256(id: &str, secret: &str) -> KeySettings {
        KeySettings {
            id: id.to_owned(),
            secret: Some(Secret::new(secret.to_owned())),
            secret_file: None,
            private_key_file: None,
            not_before: None,
        }
    }

    /// A key read from a PKCS#8 PEM file.
    pub fn private_key(id: &str, file: &Path) -> KeySettings {
        KeySettings {
            id: id.to_owned(),
            secret: None,
            secret_file: None,
            private_key_file: Some(file.to_owned()),
            not_before: None,
        }
    }

    /// `not_before` as unix seconds, if set; an error names the key.
    pub fn not_before_seconds(&self) -> Result<Option<i64>, SettingsError> {
        self.not_before
            .as_deref()
            .map(|text| {
                text.parse::<jiff::Timestamp>()
                    .map(|t| t.as_second())
                    .map_err(|_| {
                        invalid(
                            "token.keys",
                            format!(
                                "key {:?}: not_before must be an RFC 3339 time such as 2026-01-31T12:00:00Z",
                                self.id
                            ),
                        )
                    })
            })
            .transpose()
    }
}

/// `[token]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    /// Token lifetime.
    pub ttl_seconds: u64,
    /// The `iss` claim written and required.
    pub issuer: String,
    /// `numeric` (RFC 7519) or `string` (CRM.COM's samples) for `iat` / `exp`.
    pub date_format: DateFormat,
    /// `HS256` (default), `EdDSA` or `ES256`: the generated key's algorithm; with keys configured, when set,
    /// the first key's algorithm.
    pub algorithm: Option<Algorithm>,
    /// Signing keys: the first that may sign signs, all verify. Empty: a generated key in
    /// `{data_dir}/signing-key`.
    pub keys: Vec<KeySettings>,
    /// Clock skew allowed on `exp` and `iat`, at most 60.
    pub leeway_seconds: u64,
    /// How long after `exp` a token may still be refreshed.
    pub refresh_grace_seconds: u64,
    /// How long the token a refresh replaced still gets the newest one back.
    pub reuse_interval_seconds: u64,
    /// Accept tokens without `iss` (minted by an existing CRM.COM deployment sharing the secret).
    pub accept_legacy: bool,
    /// What the `oun` claim holds: the unit's `name`, `code` or `id`.
    pub unit_claim: UnitClaim,
}

/// `token.unit_claim`: what a token's `oun` claim holds.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnitClaim {
    /// The unit's name.
    #[default]
    Name,
    /// The unit's code; its name for a unit without one.
    Code,
    /// The unit's id (32 upper-case hex digits), as in CRM.COM's samples.
    Id,
}

/// `[session]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// No session outlives this, however often it is refreshed.
    pub max_lifetime_seconds: u64,
    /// How long a session that ended, or passed its maximum lifetime, stays stored (for `session list`, audits
    /// and investigations) before the purge deletes it.
    pub retention_seconds: u64,
    /// Seconds between two purge rounds of `crm-auth serve`; each round deletes what is past retention (and
    /// failed-login counters older than `auth.lockout.max_seconds`) in batches of at most 1000 rows.
    pub purge_interval_seconds: u64,
}

/// `[auth]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// Argon2id cost.
    pub argon2: Argon2Settings,
    /// Hashes that may run at once; 0 means one per core.
    pub max_concurrent_hashes: usize,
    /// Failed-login lockout.
    pub lockout: LockoutSettings,
}

/// `[auth.argon2]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Argon2Settings {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// `[auth.lockout]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutSettings {
    /// Consecutive failures after which attempts are refused for a while.
    pub threshold: u32,
    /// The longest refusal.
    pub max_seconds: u64,
    /// How long a login waits for one of its account's password-check slots (at most `threshold - failures`
    /// checks of one organisation + username run at once, across nodes) before it is answered `UNAVAILABLE`
    /// with `Retry-After: 1`; at most 60000.
    pub max_wait_ms: u64,
}

/// `[log]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (one line per record: message, then `key=value` fields) or `json` (one JSON object per line).
    pub format: LogFormat,
    /// The filter, in `RUST_LOG`'s syntax (`info`, `info,crm_auth::access=warn`); `RUST_LOG` wins when set.
    pub level: String,
}

/// How log records are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `[ts LEVEL target] message key=value ...`, for people.
    #[default]
    Text,
    /// `{"ts": ..., "level": ..., "target": ..., "msg": ..., fields...}`, for log shippers.
    Json,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            data_dir: PathBuf::from("data"),
            database: DatabaseSettings::default(),
            http: HttpSettings::default(),
            token: TokenSettings::default(),
            session: SessionSettings::default(),
            auth: AuthSettings::default(),
            log: LogSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> DatabaseSettings {
        DatabaseSettings {
            url: Secret::new("sqlite://data/crm-auth.db"),
            pool_size: 16,
            prepared_statements: true,
        }
    }
}

impl Default for HttpSettings {
    fn default() -> HttpSettings {
        HttpSettings {
            bind: "127.0.0.1:8080".into(),
            base_path: crm_auth_core::routes::DEFAULT_BASE_PATH.into(),
            max_body_bytes: 16 * 1024,
            max_import_bytes: 64 * 1024 * 1024,
            body_timeout_seconds: 10,
            max_connections_per_address: 256,
            rate_limit: RateLimitSettings::default(),
            trusted_proxies: Vec::new(),
            workers: 0,
            management_bind: String::new(),
            shutdown_drain_seconds: 5,
            shutdown_timeout_seconds: 30,
            error_status: ErrorStatus::Standard,
        }
    }
}

impl Default for RateLimitSettings {
    fn default() -> RateLimitSettings {
        RateLimitSettings {
            per_second: 0,
            burst: 20,
            shared: false,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> TokenSettings {
        TokenSettings {
            ttl_seconds: 7_200,
            issuer: "crm-auth".into(),
            date_format: DateFormat::Numeric,
            algorithm: None,
            keys: Vec::new(),
            leeway_seconds: 30,
            refresh_grace_seconds: 600,
            reuse_interval_seconds: 10,
            accept_legacy: false,
            unit_claim: UnitClaim::Name,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> SessionSettings {
        SessionSettings {
            max_lifetime_seconds: 86_400,
            retention_seconds: 604_800,
            purge_interval_seconds: 60,
        }
    }
}

impl Default for Argon2Settings {
    fn default() -> Argon2Settings {
        Argon2Settings {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl Default for LockoutSettings {
    fn default() -> LockoutSettings {
        LockoutSettings {
            threshold: 5,
            max_seconds: 900,
            max_wait_ms: 5_000,
        }
    }
}

/// The longest `http.shutdown_drain_seconds`: longer than any load balancer's health-check period needs, short
/// enough that a typo does not keep a stopping node up for hours.
pub const MAX_DRAIN_SECONDS: u64 = 300;

/// The longest `http.shutdown_timeout_seconds`: no request of this service runs for minutes.
pub const MAX_SHUTDOWN_TIMEOUT_SECONDS: u64 = 600;

/// The largest `http.max_import_bytes` (1 GiB): the server holds an import's body, and what it reads from it,
/// in memory until the import is done.
pub const MAX_IMPORT_BYTES: usize = 1024 * 1024 * 1024;

/// The longest `auth.lockout.max_wait_ms`: a login held longer than a minute helps no caller, and every
/// waiting login holds a connection.
const MAX_LOCKOUT_WAIT_MS: u64 = 60_000;

/// The signing secret of [`Settings::for_test`], key id `test`.
pub const TEST_SIGNING_SECRET: &str = "crm-auth test signing key 0123456789";

impl Settings {
    /// Defaults, then `file` if given, then the environment; validated.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Settings::load_from(file, std::env::vars())
    }

    /// [`Settings::load`] with the environment given explicitly (tests use it).
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("http.trusted_proxies")
                .try_parsing(true)
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Settings for tests: an SQLite file in `dir`, cheap hashing, a fixed signing key.
    pub fn for_test(dir: &Path) -> Settings {
        let mut settings = Settings {
            data_dir: dir.to_owned(),
            ..Settings::default()
        };
        settings.database.url = Secret::new(format!("sqlite://{}", dir.join("crm-auth.db").display()));
        settings.database.pool_size = 8;
        settings.http.bind = "127.0.0.1:0".into();
        settings.auth.argon2 = Argon2Settings {
            m_kib: 256,
            t: 1,
            p: 1,
        };
        settings.auth.max_concurrent_hashes = 2;
        settings.token.keys = vec![KeySettings::hs256("test", TEST_SIGNING_SECRET)];
        settings
    }

    /// Checks ranges that types cannot express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        crate::db::Backend::from_url(self.database.url.expose())
            .map_err(|e| invalid("database.url", e.to_string()))?;
        if self.database.pool_size == 0 {
            return Err(invalid("database.pool_size", "must be at least 1"));
        }
        self.bind_addr()?;
        let base = &self.http.base_path;
        if !base.starts_with('/') || (base.len() > 1 && base.ends_with('/')) {
            return Err(invalid("http.base_path", "must start with / and not end with /"));
        }
        if self.http.max_body_bytes == 0 {
            return Err(invalid("http.max_body_bytes", "must be at least 1"));
        }
        if !(1..=MAX_IMPORT_BYTES).contains(&self.http.max_import_bytes) {
            return Err(invalid(
                "http.max_import_bytes",
                format!("must be from 1 to {MAX_IMPORT_BYTES}"),
            ));
        }
        if self.http.body_timeout_seconds == 0 {
            return Err(invalid("http.body_timeout_seconds", "must be at least 1"));
        }
        if self.http.max_connections_per_address == 0 {
            return Err(invalid("http.max_connections_per_address", "must be at least 1"));
        }
        if let Some(management) = self.management_addr()?
            && management.port() != 0
            && Some(management) == self.bind_addr().ok()
        {
            return Err(invalid("http.management_bind", "must differ from http.bind"));
        }
        if self.http.shutdown_drain_seconds > MAX_DRAIN_SECONDS {
            return Err(invalid(
                "http.shutdown_drain_seconds",
                format!("must be at most {MAX_DRAIN_SECONDS}"),
            ));
        }
        if !(1..=MAX_SHUTDOWN_TIMEOUT_SECONDS).contains(&self.http.shutdown_timeout_seconds) {
            return Err(invalid(
                "http.shutdown_timeout_seconds",
                format!("must be from 1 to {MAX_SHUTDOWN_TIMEOUT_SECONDS}"),
            ));
        }
        if self.http.rate_limit.per_second > 0 && self.http.rate_limit.burst == 0 {
            return Err(invalid(
                "http.rate_limit.burst",
                "must be at least 1 when the limit is on",
            ));
        }
        if self.http.rate_limit.shared && self.http.rate_limit.per_second == 0 {
            return Err(invalid(
                "http.rate_limit.shared",
                "needs http.rate_limit.per_second above 0 (the limit is off)",
            ));
        }
        if self.token.ttl_seconds == 0 {
            return Err(invalid("token.ttl_seconds", "must be at least 1"));
        }
        if self.token.issuer.is_empty() {
            return Err(invalid("token.issuer", "must not be empty"));
        }
        if self.token.leeway_seconds > 60 {
            return Err(invalid("token.leeway_seconds", "must be at most 60"));
        }
        for key in &self.token.keys {
            let sources = [
                key.secret.is_some(),
                key.secret_file.is_some(),
                key.private_key_file.is_some(),
            ];
            if sources.into_iter().filter(|set| *set).count() != 1 {
                return Err(invalid(
                    "token.keys",
                    format!(
                        "key {:?} needs exactly one of secret, secret_file, private_key_file",
                        key.id
                    ),
                ));
            }
            key.not_before_seconds()?;
        }
        if self.session.max_lifetime_seconds == 0 {
            return Err(invalid("session.max_lifetime_seconds", "must be at least 1"));
        }
        if self.session.retention_seconds == 0 {
            return Err(invalid("session.retention_seconds", "must be at least 1"));
        }
        if self.session.purge_interval_seconds == 0 {
            return Err(invalid("session.purge_interval_seconds", "must be at least 1"));
        }
        let a = &self.auth.argon2;
        argon2::Params::new(a.m_kib, a.t, a.p, None).map_err(|e| invalid("auth.argon2", e.to_string()))?;
        if self.auth.lockout.threshold == 0 {
            return Err(invalid("auth.lockout.threshold", "must be at least 1"));
        }
        if self.auth.lockout.max_seconds == 0 {
            return Err(invalid("auth.lockout.max_seconds", "must be at least 1"));
        }
        crate::logging::check_filter(&self.log.level).map_err(|reason| invalid("log.level", reason))?;
        if self.auth.lockout.max_wait_ms > MAX_LOCKOUT_WAIT_MS {
            return Err(invalid(
                "auth.lockout.max_wait_ms",
                format!("must be at most {MAX_LOCKOUT_WAIT_MS}"),
            ));
        }
        Ok(())
    }

    /// The listen address.
    pub fn bind_addr(&self) -> Result<SocketAddr, SettingsError> {
        self.http
            .bind
            .parse()
            .map_err(|_| invalid("http.bind", "must be an address like 127.0.0.1:8080"))
    }

    /// The management listener's address; `None` when the operator routes stay on the main listener.
    pub fn management_addr(&self) -> Result<Option<SocketAddr>, SettingsError> {
        match self.http.management_bind.as_str() {
            "" => Ok(None),
            addr => addr.parse().map(Some).map_err(|_| {
                invalid(
                    "http.management_bind",
                    "must be empty or an address like 127.0.0.1:9090",
                )
            }),
        }
    }

    /// How many hashes may run at once.
    pub fn hash_threads(&self) -> usize {
        match self.auth.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
            n => n,
        }
    }
}
