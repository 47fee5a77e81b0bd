//! Every endpoint's path, written once for the server that routes them, the client that calls them, the
//! extractor and the OpenAPI document.
//!
//! The API paths are relative to the base path the server mounts them under (`http.base_path`,
//! [`DEFAULT_BASE_PATH`] unless configured); the operator paths sit at the root whatever the base path.

/// The base path of the API unless the server is configured otherwise (`http.base_path`).
pub const DEFAULT_BASE_PATH: &str = "/crmapi/rest/v2";

/// `POST`: a token for a username and password in an organisation.
pub const PASSWORD_TOKEN: &str = "/authentication/token";

/// `POST`, `GET`: a token for a Web API key sent as the HTTP Basic user name.
pub const API_KEY_TOKEN: &str = "/authentication/web_api_key/token";

/// `POST`: the session's next token.
pub const REFRESH_TOKEN: &str = "/authentication/token/refresh";

/// `POST`: ends the token's session (logout).
pub const RELEASE_TOKEN: &str = "/authentication/token/release";

/// `GET`, `POST`: whether the token's session is live, and what it is.
pub const VALIDATE_TOKEN: &str = "/authentication/token/validate";

/// Every API path, in the order the contract lists them.
pub const API: [&str; 5] = [
    PASSWORD_TOKEN,
    API_KEY_TOKEN,
    REFRESH_TOKEN,
    RELEASE_TOKEN,
    VALIDATE_TOKEN,
];

/// `GET` at the root: the process answers.
pub const HEALTH_LIVE: &str = "/health/live";

/// `GET` at the root: the process and its database answer.
pub const HEALTH_READY: &str = "/health/ready";

/// `GET` at the root: Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// `GET` at the root: the OpenAPI document.
pub const OPENAPI: &str = "/openapi.json";

/// `GET` at the root: the public keys of the EdDSA and ES256 signing keys, a JWKS (RFC 7517).
pub const JWKS: &str = "/.well-known/jwks.json";

/// The root of the administration API (at the root whatever the base path).
pub const ADMIN: &str = "/admin/v1";

/// `GET`, `POST`: organisations.
pub const ADMIN_ORGANISATIONS: &str = "/admin/v1/organisations";

/// `GET`: one organisation, by id or name.
pub const ADMIN_ORGANISATION: &str = "/admin/v1/organisations/{org}";

/// `GET`, `POST`: an organisation's units.
pub const ADMIN_UNITS: &str = "/admin/v1/organisations/{org}/units";

/// `GET`, `POST`: an organisation's users.
pub const ADMIN_USERS: &str = "/admin/v1/organisations/{org}/users";

/// `GET`, `PATCH`: one user, by username.
pub const ADMIN_USER: &str = "/admin/v1/organisations/{org}/users/{username}";

/// `DELETE`: ends every live session of a user.
pub const ADMIN_USER_SESSIONS: &str = "/admin/v1/organisations/{org}/users/{username}/sessions";

/// `GET`, `POST`: an organisation's Web API keys.
pub const ADMIN_KEYS: &str = "/admin/v1/organisations/{org}/keys";

/// `DELETE`: revokes a key and ends its sessions.
pub const ADMIN_KEY: &str = "/admin/v1/organisations/{org}/keys/{id}";

/// `GET`: an organisation's live sessions (`?username=`).
pub const ADMIN_SESSIONS: &str = "/admin/v1/organisations/{org}/sessions";

/// `DELETE`: ends a session.
pub const ADMIN_SESSION: &str = "/admin/v1/organisations/{org}/sessions/{id}";

/// `GET`: an organisation's audit events.
pub const ADMIN_AUDIT: &str = "/admin/v1/organisations/{org}/audit";

/// `POST`: imports NDJSON (`?dry_run=true`).
pub const ADMIN_IMPORT: &str = "/admin/v1/import";

/// `GET` at the root: redirects to [`CONSOLE`].
pub const CONSOLE_ROOT: &str = "/admin";

/// `GET` at the root: the admin console's page (HTML for a browser, not part of the API).
pub const CONSOLE: &str = "/admin/";

/// `GET` at the root: one of the console's files, by its name with its content hash (`app.0123456789abcdef.js`).
pub const CONSOLE_ASSET: &str = "/admin/assets/{name}";
