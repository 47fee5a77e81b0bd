//! The HTTP client: one method per endpoint, the envelope decoded into a value or an [`Error`], and safe retries.

use std::sync::Arc;
use std::time::Duration;

use crm_auth_core::routes;
use crm_auth_core::{
    ApiKeyTokenRequest, Empty, Envelope, PasswordTokenRequest, SessionInfo, Status, TokenResponse,
    ValidateResponse,
};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::credentials::Secret;
use crate::retry::{self, Policy};
use crate::{Credentials, Error, Token};

/// The API base path the server uses unless configured otherwise (`http.base_path`).
pub const DEFAULT_BASE_PATH: &str = routes::DEFAULT_BASE_PATH;

/// Default time allowed for a whole request, from connecting until the body has arrived.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time allowed to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default number of retries after a failure that is safe to repeat.
pub const DEFAULT_RETRIES: u32 = 2;

/// The `User-Agent` sent unless configured otherwise.
pub const DEFAULT_USER_AGENT: &str = concat!("crm-auth-client/", env!("CARGO_PKG_VERSION"));

/// Largest answer read from the token endpoints and the health check; their answers are a few hundred bytes.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Largest answer read from the administration API: a page of 500 users, each in 256 units with short names,
/// is about 10 MiB.
const MAX_ADMIN_RESPONSE_BYTES: usize = 32 << 20;

/// Configures a [`Client`]; start with [`Client::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder {
    base_url: Option<String>,
    base_path: String,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
    http_client: Option<reqwest::Client>,
    retries: u32,
}

impl Default for ClientBuilder {
    fn default() -> ClientBuilder {
        ClientBuilder {
            base_url: None,
            base_path: DEFAULT_BASE_PATH.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            http_client: None,
            retries: DEFAULT_RETRIES,
        }
    }
}

impl ClientBuilder {
    /// The server's root URL, e.g. `http://127.0.0.1:8080` or `https://auth.example.com/prefix`; a trailing
    /// slash is tolerated. Required. `http` or `https` only, with no user name, password, query or fragment.
    pub fn base_url(mut self, url: impl Into<String>) -> ClientBuilder {
        self.base_url = Some(url.into());
        self
    }

    /// The path of the API under the root, [`DEFAULT_BASE_PATH`] unless set; leading and trailing slashes are
    /// tolerated, and `""` puts the API at the root. The health check is always at the root.
    pub fn base_path(mut self, path: impl Into<String>) -> ClientBuilder {
        self.base_path = path.into();
        self
    }

    /// The time allowed for a whole request, [`DEFAULT_TIMEOUT`] unless set.
    pub fn timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.timeout = timeout;
        self
    }

    /// The time allowed to establish a connection, [`DEFAULT_CONNECT_TIMEOUT`] unless set.
    pub fn connect_timeout(mut self, timeout: Duration) -> ClientBuilder {
        self.connect_timeout = timeout;
        self
    }

    /// The `User-Agent` header, [`DEFAULT_USER_AGENT`] unless set.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> ClientBuilder {
        self.user_agent = user_agent.into();
        self
    }

    /// Sends requests through this reqwest client (to share its connection pool, proxies or TLS settings).
    ///
    /// The builder's timeouts and user agent are then not applied: configure them on `client`. Turning redirects
    /// off on it is advisable, as the client this builder makes does: an authentication endpoint has no reason
    /// to redirect, and a redirected login would carry the password elsewhere.
    pub fn http_client(mut self, client: reqwest::Client) -> ClientBuilder {
        self.http_client = Some(client);
        self
    }

    /// How many times a failure that is safe to repeat is retried, [`DEFAULT_RETRIES`] unless set; 0 turns
    /// retries off.
    ///
    /// Refresh, release, validate, health and the administration API's reads (`GET`) are repeated after an
    /// `UNAVAILABLE` answer and after a transport failure other than a timeout once the request was sent or a
    /// host name that does not resolve; logins
    /// and the administration API's changes (`POST`, `PATCH`, `DELETE`) only after a refused connection, since
    /// then the request never reached the server. Waits start at 100 ms and double up to 2 s; an
    /// `UNAVAILABLE` answer's `Retry-After` is waited out instead when it is at most 5 s, and ends the retries
    /// when it is longer. Nothing else is repeated: not `INVALID_*`, `TOKEN_EXPIRED`, `SESSION_ENDED`,
    /// `TOO_MANY_ATTEMPTS` or `RATE_LIMITED` answers.
    pub fn retries(mut self, retries: u32) -> ClientBuilder {
        self.retries = retries;
        self
    }

    /// Builds the client. Fails with [`Error::InvalidArgument`] when no base URL was given, when it or the base
    /// path is not usable, or when the user agent is not a valid header value.
    pub fn build(self) -> Result<Client, Error> {
        let base_url = self
            .base_url
            .ok_or_else(|| Error::invalid_argument("a base url is required"))?;
        let endpoints = Endpoints::new(&base_url, &self.base_path)?;
        let http = match self.http_client {
            Some(http) => http,
            None => {
                let user_agent = HeaderValue::from_str(&self.user_agent)
                    .map_err(|_| Error::invalid_argument("the user agent is not a valid header value"))?;
                reqwest::Client::builder()
                    .timeout(self.timeout)
                    .connect_timeout(self.connect_timeout)
                    .user_agent(user_agent)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| {
                        Error::invalid_argument(format!("could not build the http client: {}", chain(&e)))
                    })?
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                endpoints,
                retries: self.retries,
            }),
        })
    }
}

/// An error and its causes, joined by `": "`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

/// The URL of every endpoint, joined once at build time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoints {
    pub(crate) token: Url,
    pub(crate) api_key_token: Url,
    pub(crate) refresh: Url,
    pub(crate) release: Url,
    pub(crate) validate: Url,
    pub(crate) health: Url,
    /// The server's root, below which the administration paths sit whatever the base path.
    pub(crate) root: Url,
}

impl Endpoints {
    pub(crate) fn new(base_url: &str, base_path: &str) -> Result<Endpoints, Error> {
        let url = Url::parse(base_url.trim())
            .map_err(|e| Error::invalid_argument(format!("the base url is not a valid url: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_argument("the base url must use http or https"));
        }
        // reqwest error messages show the URL: it must not carry a secret.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Error::invalid_argument("the base url must not carry credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(Error::invalid_argument(
                "the base url must not have a query or fragment",
            ));
        }
        let path = base_path.trim().trim_matches('/');
        if path.contains(['?', '#']) || path.chars().any(char::is_whitespace) {
            return Err(Error::invalid_argument(
                "the base path must not contain '?', '#' or whitespace",
            ));
        }
        let root = url.as_str().trim_end_matches('/');
        let api = if path.is_empty() {
            root.to_owned()
        } else {
            format!("{root}/{path}")
        };
        let join = |base: &str, rest: &str| {
            Url::parse(&format!("{base}{rest}"))
                .map_err(|e| Error::invalid_argument(format!("the base path does not form a valid url: {e}")))
        };
        Ok(Endpoints {
            token: join(&api, routes::PASSWORD_TOKEN)?,
            api_key_token: join(&api, routes::API_KEY_TOKEN)?,
            refresh: join(&api, routes::REFRESH_TOKEN)?,
            release: join(&api, routes::RELEASE_TOKEN)?,
            validate: join(&api, routes::VALIDATE_TOKEN)?,
            health: join(root, routes::HEALTH_READY)?,
            root: join(root, "/")?,
        })
    }
}

/// A client of the crm-auth service.
///
/// Cloning is cheap and clones share one connection pool; the client is `Send + Sync`, so one instance can
/// serve a whole application. Tokens and keys are sent in the `Authorization` header, never in a URL.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    endpoints: Endpoints,
    retries: u32,
}

impl Client {
    /// A builder with the defaults: base path [`DEFAULT_BASE_PATH`], timeouts of 30 s (request) and 5 s
    /// (connect), [`DEFAULT_RETRIES`] retries. [`ClientBuilder::base_url`] must be set.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Logs in: `POST {base}/authentication/token` with a username and password,
    /// `POST {base}/authentication/web_api_key/token` with a Web API key (the key as the HTTP Basic user name,
    /// the unit, when asked for, as `{"unit": ...}`).
    ///
    /// Typical refusals are `INVALID_CREDENTIALS`, `INVALID_UNIT` and `TOO_MANY_ATTEMPTS` (see
    /// [`Error::retry_after`]). A login is repeated only after a refused connection, which it never passed.
    pub async fn token(&self, credentials: &Credentials) -> Result<Token, Error> {
        let unit = credentials.unit.as_deref();
        match &credentials.secret {
            Secret::Password {
                username,
                password,
                organisation,
            } => {
                let body = PasswordTokenRequest {
                    username: username.clone(),
                    password: password.clone(),
                    organisation: organisation.clone(),
                    unit: unit.map(str::to_owned),
                };
                self.token_call(Policy::ConnectionRefused, || self.password_request(&body))
                    .await
            }
            Secret::ApiKey { key } => {
                self.token_call(Policy::ConnectionRefused, || self.api_key_request(key, unit))
                    .await
            }
        }
    }

    /// Logs in with a username and password in an organisation; `unit` is a unit id, name or code, `None`
    /// the user's default unit.
    #[deprecated(note = "use `Client::token(&Credentials::password(username, password, organisation))`")]
    pub async fn token_with_password(
        &self,
        username: &str,
        password: &str,
        organisation: &str,
        unit: Option<&str>,
    ) -> Result<Token, Error> {
        self.token(&with_unit(
            Credentials::password(username, password, organisation),
            unit,
        ))
        .await
    }

    /// Logs in with a Web API key; `unit` is a unit id, name or code, `None` the user's default unit.
    ///
    /// Superseded by [`Client::token`] with [`Credentials::api_key`], which this calls.
    #[deprecated(note = "use `Client::token(&Credentials::api_key(key))`")]
    pub async fn token_with_api_key(&self, key: &str, unit: Option<&str>) -> Result<Token, Error> {
        self.token(&with_unit(Credentials::api_key(key), unit)).await
    }

    /// A fresh token for the same session: `POST {base}/authentication/token/refresh`.
    ///
    /// Only a session's newest token refreshes; the token it replaced, presented again within the server's
    /// reuse interval, gets the same new token back, and any older one ends the session (`SESSION_ENDED`).
    pub async fn refresh(&self, token: &str) -> Result<Token, Error> {
        let auth = bearer(token)?;
        self.token_call(Policy::Idempotent, || {
            self.with_token(self.inner.http.post(self.inner.endpoints.refresh.clone()), &auth)
        })
        .await
    }

    /// Ends the token's session (logout): `POST {base}/authentication/token/release`.
    ///
    /// Releasing an ended session succeeds; an expired but genuine token can still be released.
    pub async fn release(&self, token: &str) -> Result<(), Error> {
        let auth = bearer(token)?;
        let _: Empty = self
            .call(Policy::Idempotent, || {
                self.with_token(self.inner.http.post(self.inner.endpoints.release.clone()), &auth)
            })
            .await?;
        Ok(())
    }

    /// Whether the token's session is live, and what it is: `GET {base}/authentication/token/validate`.
    ///
    /// Refusals: `INVALID_TOKEN`, `TOKEN_EXPIRED`, `SESSION_ENDED` (see [`Error::is_session_over`]).
    pub async fn validate(&self, token: &str) -> Result<SessionInfo, Error> {
        let auth = bearer(token)?;
        let data: ValidateResponse = self
            .call(Policy::Idempotent, || {
                self.with_token(self.inner.http.get(self.inner.endpoints.validate.clone()), &auth)
            })
            .await?;
        Ok(data.session)
    }

    /// Whether the service is ready, its database included: `GET /health/ready` at the root.
    pub async fn health(&self) -> Result<(), Error> {
        let _: Empty = self
            .call(Policy::Idempotent, || {
                self.json_request(self.inner.http.get(self.inner.endpoints.health.clone()))
            })
            .await?;
        Ok(())
    }

    fn json_request(&self, request: RequestBuilder) -> RequestBuilder {
        request.header(header::ACCEPT, "application/json")
    }

    pub(crate) fn with_token(&self, request: RequestBuilder, auth: &HeaderValue) -> RequestBuilder {
        self.json_request(request)
            .header(header::AUTHORIZATION, auth.clone())
    }

    fn password_request(&self, body: &PasswordTokenRequest) -> RequestBuilder {
        self.json_request(self.inner.http.post(self.inner.endpoints.token.clone()))
            .json(body)
    }

    fn api_key_request(&self, key: &str, unit: Option<&str>) -> RequestBuilder {
        let request = self
            .json_request(self.inner.http.post(self.inner.endpoints.api_key_token.clone()))
            .basic_auth(key, None::<&str>);
        match unit {
            Some(unit) => request.json(&ApiKeyTokenRequest {
                unit: Some(unit.to_owned()),
            }),
            None => request,
        }
    }

    /// A call whose answer is `{"token": ...}`.
    async fn token_call(&self, policy: Policy, build: impl Fn() -> RequestBuilder) -> Result<Token, Error> {
        let (http_status, data): (u16, TokenResponse) = self.call_with_status(policy, build).await?;
        Token::parse(data.token).map_err(|_| Error::Decode {
            http_status,
            reason: "the token in the answer is malformed".to_owned(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        policy: Policy,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, Error> {
        Ok(self.call_with_status(policy, build).await?.1)
    }

    /// A call of the administration API, whose answers may be longer.
    pub(crate) async fn admin_call<T: DeserializeOwned>(
        &self,
        policy: Policy,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, Error> {
        Ok(self
            .call_limited(policy, MAX_ADMIN_RESPONSE_BYTES, build)
            .await?
            .1)
    }

    /// The reqwest client requests go through.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The server's root URL.
    pub(crate) fn root(&self) -> &Url {
        &self.inner.endpoints.root
    }

    async fn call_with_status<T: DeserializeOwned>(
        &self,
        policy: Policy,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(u16, T), Error> {
        self.call_limited(policy, MAX_RESPONSE_BYTES, build).await
    }

    /// Sends the request `build` makes, repeating it as `policy` allows, and decodes the answer's `data`, read
    /// up to `max_bytes`.
    async fn call_limited<T: DeserializeOwned>(
        &self,
        policy: Policy,
        max_bytes: usize,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<(u16, T), Error> {
        let mut retry = 0;
        loop {
            let err = match send(build(), max_bytes).await {
                Ok(answer) => return Ok(answer),
                Err(err) => err,
            };
            if retry >= self.inner.retries {
                return Err(err);
            }
            let Some(wait) = retry::delay(policy, &err, retry) else {
                return Err(err);
            };
            tokio::time::sleep(wait).await;
            retry += 1;
        }
    }
}

/// `credentials` with `unit`, when there is one.
pub(crate) fn with_unit(credentials: Credentials, unit: Option<&str>) -> Credentials {
    match unit {
        Some(unit) => credentials.unit(unit),
        None => credentials,
    }
}

/// The `Authorization` header for a token, marked sensitive so it is not logged.
pub(crate) fn bearer(token: &str) -> Result<HeaderValue, Error> {
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| Error::invalid_argument("the token contains characters not allowed in a header"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// Sends one request and decodes its answer, refusing one over `max_bytes`.
async fn send<T: DeserializeOwned>(request: RequestBuilder, max_bytes: usize) -> Result<(u16, T), Error> {
    let (http, request) = request.build_split();
    let request = request.map_err(|e| {
        match e.url().cloned() {
            Some(url) => Error::transport(&url, e),
            // What reqwest says of a request it could not build may quote a header: not shown.
            None => Error::invalid_argument("the request could not be built"),
        }
    })?;
    let url = request.url().clone();
    let mut response = http
        .execute(request)
        .await
        .map_err(|e| Error::transport(&url, e))?;
    let http_status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    if response
        .content_length()
        .is_some_and(|len| len > max_bytes as u64)
    {
        return Err(too_large(http_status, max_bytes));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Error::transport(&url, e))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large(http_status, max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    decode(http_status, retry_after, &body).map(|data| (http_status, data))
}

fn too_large(http_status: u16, max_bytes: usize) -> Error {
    Error::Decode {
        http_status,
        reason: format!("the body is over {max_bytes} bytes"),
    }
}

/// `Retry-After` in seconds; the HTTP-date form, which the server does not send, is ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// Just the `status` of an envelope, whatever its `data`.
#[derive(Deserialize)]
struct Head {
    status: Status,
}

/// Turns an answer into its `data` or an error.
///
/// An envelope whose code is not `"OK"` is an [`Error::Api`] whatever the HTTP status; anything else that is
/// not an `"OK"` envelope with a 2xx status and the expected `data` is an [`Error::Decode`].
pub(crate) fn decode<T: DeserializeOwned>(
    http_status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<T, Error> {
    let head: Head = serde_json::from_slice(body).map_err(|e| json_error(http_status, &e))?;
    if !head.status.is_ok() {
        return Err(Error::Api {
            status: head.status,
            http_status,
            retry_after,
        });
    }
    if !(200..300).contains(&http_status) {
        return Err(Error::Decode {
            http_status,
            reason: "the envelope says OK but the http status is not a success".to_owned(),
        });
    }
    let envelope: Envelope<T> = serde_json::from_slice(body).map_err(|e| json_error(http_status, &e))?;
    Ok(envelope.data)
}

/// What was wrong with a body, without quoting it: serde_json messages can quote values, and a value may be a
/// token.
fn json_error(http_status: u16, err: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    let reason = match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => "the body is not json",
        Category::Data => "the body is not the expected envelope",
    };
    Error::Decode {
        http_status,
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use crm_auth_core::ErrorCode;

    use super::*;
    use crate::testserver::{Reply, TestServer};

    fn client(base: &str) -> anyhow::Result<Client> {
        Ok(Client::builder().base_url(base).build()?)
    }

    #[test]
    fn base_url_and_path_are_joined_tolerantly() -> anyhow::Result<()> {
        for (url, path) in [
            ("http://127.0.0.1:8080", "/crmapi/rest/v2"),
            ("http://127.0.0.1:8080/", "/crmapi/rest/v2"),
            ("http://127.0.0.1:8080//", "crmapi/rest/v2/"),
            (" http://127.0.0.1:8080/ ", "/crmapi/rest/v2/"),
        ] {
            let e = Endpoints::new(url, path)?;
            let api = "http://127.0.0.1:8080/crmapi/rest/v2/authentication";
            for (endpoint, expected) in [
                (&e.token, format!("{api}/token")),
                (&e.api_key_token, format!("{api}/web_api_key/token")),
                (&e.refresh, format!("{api}/token/refresh")),
                (&e.release, format!("{api}/token/release")),
                (&e.validate, format!("{api}/token/validate")),
                (&e.health, "http://127.0.0.1:8080/health/ready".to_owned()),
            ] {
                assert_eq!(endpoint.as_str(), expected, "{url} {path}");
            }
        }
        // A root below a path prefix (behind a reverse proxy) keeps the prefix for both API and health.
        let e = Endpoints::new("https://auth.example.com/crm/", "")?;
        assert_eq!(
            e.token.as_str(),
            "https://auth.example.com/crm/authentication/token"
        );
        assert_eq!(e.health.as_str(), "https://auth.example.com/crm/health/ready");
        let e = Endpoints::new("https://auth.example.com", "/")?;
        assert_eq!(
            e.validate.as_str(),
            "https://auth.example.com/authentication/token/validate"
        );
        Ok(())
    }

    #[test]
    fn unusable_base_urls_are_invalid_arguments() {
        for (url, path) in [
            ("", DEFAULT_BASE_PATH),
            ("127.0.0.1:8080", DEFAULT_BASE_PATH),
            ("ftp://example.com", DEFAULT_BASE_PATH),
            ("http://user:secret@example.com", DEFAULT_BASE_PATH),
            ("http://example.com/?a=b", DEFAULT_BASE_PATH),
            ("http://example.com/#top", DEFAULT_BASE_PATH),
            ("http://example.com", "/api?x"),
            ("http://example.com", "/a b"),
        ] {
            let err = Endpoints::new(url, path).err();
            assert!(
                matches!(err, Some(Error::InvalidArgument { .. })),
                "{url:?} {path:?}: {err:?}"
            );
            if let Some(err) = err {
                assert!(!err.to_string().contains("secret"), "{err}");
            }
        }
        assert!(matches!(
            Client::builder().build().err(),
            Some(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            Client::builder()
                .base_url("http://h")
                .user_agent("a\nb")
                .build()
                .err(),
            Some(Error::InvalidArgument { .. })
        ));
    }

    #[test]
    fn api_key_goes_in_basic_auth_and_unit_in_an_optional_body() -> anyhow::Result<()> {
        let client = client("http://127.0.0.1:8080")?;
        let request = client
            .api_key_request("EE63A82C4FEBE02FF34E90DD1EBA5ABE", None)
            .build()?;
        let auth = request
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or_else(|| anyhow::anyhow!("no auth"))?;
        // base64("EE63A82C4FEBE02FF34E90DD1EBA5ABE:")
        assert_eq!(auth, "Basic RUU2M0E4MkM0RkVCRTAyRkYzNEU5MEREMUVCQTVBQkU6");
        assert!(auth.is_sensitive());
        assert!(request.body().is_none());
        assert_eq!(request.method(), reqwest::Method::POST);

        let request = client.api_key_request("K", Some("HQ")).build()?;
        let body = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        assert_eq!(body, br#"{"unit":"HQ"}"#);
        Ok(())
    }

    #[test]
    fn password_login_is_a_json_body() -> anyhow::Result<()> {
        let client = client("http://127.0.0.1:8080")?;
        let body = PasswordTokenRequest {
            username: "alice".into(),
            password: "pw".into(),
            organisation: "Acme".into(),
            unit: None,
        };
        let request = client.password_request(&body).build()?;
        assert!(request.headers().get(header::AUTHORIZATION).is_none());
        let sent = request
            .body()
            .and_then(reqwest::Body::as_bytes)
            .unwrap_or_default();
        assert_eq!(
            sent,
            br#"{"username":"alice","password":"pw","organisation":"Acme"}"#
        );
        Ok(())
    }

    #[test]
    fn bearer_rejects_header_breaking_tokens() {
        assert!(bearer("a.b.c").is_ok_and(|v| v == "Bearer a.b.c" && v.is_sensitive()));
        let err = bearer("a.b\r\nX-Evil: 1").err();
        assert!(matches!(err, Some(Error::InvalidArgument { .. })));
        assert!(!err.map(|e| e.to_string()).unwrap_or_default().contains("Evil"));
    }

    #[test]
    fn decode_reads_data_and_error_envelopes() {
        let ok: Result<TokenResponse, Error> = decode(
            200,
            None,
            br#"{"data":{"token":"t"},"status":{"code":"OK","description":"","message":""}}"#,
        );
        assert_eq!(ok.map(|d| d.token).ok().as_deref(), Some("t"));

        let body = br#"{"data":{},"status":{"code":"TOO_MANY_ATTEMPTS","description":"","message":"Wait."}}"#;
        let err = decode::<TokenResponse>(429, Some(Duration::from_secs(8)), body).err();
        let err = err.as_ref();
        assert_eq!(err.and_then(Error::code), Some(ErrorCode::TooManyAttempts));
        assert_eq!(err.and_then(Error::http_status), Some(429));
        assert_eq!(err.and_then(Error::retry_after), Some(Duration::from_secs(8)));
        assert_eq!(err.and_then(Error::message), Some("Wait."));
        assert_eq!(
            err.map(ToString::to_string).as_deref(),
            Some("server answered TOO_MANY_ATTEMPTS with http status 429")
        );

        // A server configured with `http.error_status = "always_200"` sends errors with HTTP 200: the envelope's
        // code decides, with its `Retry-After`.
        let err = decode::<TokenResponse>(200, Some(Duration::from_secs(8)), body).err();
        let err = err.as_ref();
        assert_eq!(err.and_then(Error::code), Some(ErrorCode::TooManyAttempts));
        assert_eq!(err.and_then(Error::http_status), Some(200));
        assert_eq!(err.and_then(Error::retry_after), Some(Duration::from_secs(8)));

        // A code newer than this crate still reaches the caller, with its message.
        let body = br#"{"data":{},"status":{"code":"SOMETHING_NEW","description":"d","message":"m"}}"#;
        let err = decode::<Empty>(418, None, body).err();
        assert!(matches!(&err, Some(Error::Api { status, .. }) if status.code == "SOMETHING_NEW"));
        assert_eq!(err.as_ref().and_then(Error::code), None);
        assert_eq!(err.as_ref().and_then(Error::message), Some("m"));
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("server answered SOMETHING_NEW with http status 418: d")
        );
    }

    #[test]
    fn decode_never_quotes_the_body() {
        let secret = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2ln";
        let bodies = [
            format!("<html>{secret}</html>"),
            format!(r#"{{"data":"{secret}","status":{{"code":"OK","description":"","message":""}}}}"#),
            format!(r#"{{"data":{{"token":["{secret}"]}},"status":{{"code":"OK"}}}}"#),
            format!(r#"{{"token":"{secret}"}}"#),
        ];
        for body in bodies {
            let err = decode::<TokenResponse>(200, None, body.as_bytes()).err();
            assert!(
                matches!(err, Some(Error::Decode { http_status: 200, .. })),
                "{body}: {err:?}"
            );
            let shown = format!(
                "{err:?} {}",
                err.as_ref().map(ToString::to_string).unwrap_or_default()
            );
            assert!(!shown.contains(secret), "{shown}");
        }
        // A proxy's error page: the HTTP status survives.
        let err = decode::<Empty>(502, None, b"Bad Gateway").err();
        assert_eq!(err.as_ref().and_then(Error::http_status), Some(502));
        assert!(err.is_some_and(|e| !e.is_retryable()));
        // "OK" with a failure status is not taken as success.
        let ok_body = br#"{"data":{},"status":{"code":"OK","description":"","message":""}}"#;
        assert!(matches!(
            decode::<Empty>(500, None, ok_body),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_for_every_endpoint() -> anyhow::Result<()> {
        let port = TestServer::closed_port()?;
        let client = client(&format!("http://127.0.0.1:{port}"))?;
        let err = client.token(&Credentials::api_key("K")).await.err();
        let err = err.ok_or_else(|| anyhow::anyhow!("a closed port answered"))?;
        assert_eq!(
            err.transport_kind(),
            Some(crate::TransportKind::ConnectionRefused)
        );
        assert!(err.is_retryable());
        assert_eq!(err.code(), None);
        assert_eq!(err.http_status(), None);
        assert_eq!(
            err.to_string(),
            format!("could not connect to 127.0.0.1:{port}: connection refused")
        );
        for policy in [Policy::Idempotent, Policy::ConnectionRefused] {
            assert!(retry::delay(policy, &err, 0).is_some(), "{policy:?}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_timeout_after_sending_is_not_retried() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::Silent])?;
        let client = Client::builder()
            .base_url(server.url())
            .timeout(Duration::from_millis(300))
            .build()?;
        let err = client.refresh("a.b.c").await.err();
        let err = err.ok_or_else(|| anyhow::anyhow!("a silent server answered"))?;
        assert_eq!(err.transport_kind(), Some(crate::TransportKind::Timeout));
        assert!(err.is_retryable());
        let addr = server
            .url()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        assert_eq!(err.to_string(), format!("the request to {addr} timed out"));
        assert_eq!(retry::delay(Policy::Idempotent, &err, 0), None);
        assert_eq!(retry::delay(Policy::ConnectionRefused, &err, 0), None);
        assert_eq!(
            server.requests().len(),
            1,
            "a refresh that may have reached the server is not repeated"
        );
        Ok(())
    }

    #[tokio::test]
    async fn unavailable_is_retried_for_refresh_but_not_for_login() -> anyhow::Result<()> {
        let token = crate::testserver::mint("EE63A82C4FEBE02FF34E90DD1EBA5ABE", 1000, 8200)?;
        let server = TestServer::start(vec![
            Reply::error(ErrorCode::Unavailable, None),
            Reply::error(ErrorCode::Unavailable, Some(0)),
            Reply::token(&token),
        ])?;
        let client = client(&server.url())?;
        let refreshed = client.refresh(&token).await?;
        assert_eq!(refreshed.as_str(), token);
        let requests = server.requests();
        assert_eq!(requests.len(), 3);
        for request in &requests {
            assert_eq!(
                request.head_line,
                "POST /crmapi/rest/v2/authentication/token/refresh HTTP/1.1"
            );
            assert_eq!(
                request.header("authorization").as_deref(),
                Some(format!("Bearer {token}").as_str())
            );
            assert!(
                !request.head_line.contains(&token),
                "the token never goes into the URL"
            );
        }

        let server = TestServer::start(vec![
            Reply::error(ErrorCode::Unavailable, None),
            Reply::token(&token),
        ])?;
        let client = crate::Client::builder().base_url(server.url()).build()?;
        let err = client
            .token(&Credentials::password("alice", "pw", "Acme"))
            .await
            .err();
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Unavailable));
        assert_eq!(server.requests().len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn retries_are_bounded() -> anyhow::Result<()> {
        let server = TestServer::start(vec![Reply::error(ErrorCode::Unavailable, Some(0))])?;
        let client = Client::builder().base_url(server.url()).retries(3).build()?;
        let err = client.validate("a.b.c").await.err();
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Unavailable));
        assert_eq!(server.requests().len(), 4);

        let client = Client::builder().base_url(server.url()).retries(0).build()?;
        assert!(client.health().await.is_err());
        assert_eq!(server.requests().len(), 5);
        Ok(())
    }
}
