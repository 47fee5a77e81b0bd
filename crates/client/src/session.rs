//! A logged-in session that keeps its token fresh: refreshed before it expires, logged in again when the
//! session is over, with one request on the wire however many tasks ask at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use crate::client::with_unit;
use crate::{Client, Credentials, Error, Token};

/// Default of [`Session::margin`].
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(60);

/// A clock in unix seconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Keeps one session's token fresh for any number of tasks.
///
/// [`Session::token`] hands out the cached token while it has more than the margin left; otherwise it
/// refreshes it, or logs in when there is none yet or when the server says the session is over
/// (`SESSION_ENDED`, `TOKEN_EXPIRED`, `INVALID_TOKEN`). Concurrent callers share one renewal: exactly one request
/// goes out and every caller gets its result, token or error.
///
/// # When the server ends the session
///
/// The session learns that its session was revoked (a `crm-auth session revoke`, a disabled user, a revoked
/// key, an operator ending it through the administration API) at its next refresh, which logs in again. Until
/// then the cached token goes on being handed out, and the services it is sent to refuse it with
/// `SESSION_ENDED` if they ask the server. A caller that gets `SESSION_ENDED` (or `INVALID_TOKEN`,
/// `TOKEN_EXPIRED`) from such a service calls [`Session::invalidate`]: the next [`Session::token`] then
/// refreshes, and, the session being over, logs in again, so the revocation is seen at once.
///
/// Cloning is cheap and clones share the token. `Debug` shows who logs in, never the password or key.
///
/// ```no_run
/// # async fn run() -> Result<(), crm_auth_client::Error> {
/// use std::time::Duration;
/// use crm_auth_client::{Client, Credentials, Session};
///
/// let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
/// let credentials = Credentials::api_key("EE63A82C4FEBE02FF34E90DD1EBA5ABE");
/// let session = Session::new(client, credentials).margin(Duration::from_secs(120));
/// let token = session.token().await?;
/// // ... call the CRM with token.as_str(); if it answers SESSION_ENDED:
/// session.invalidate().await;
/// let token = session.token().await?; // a new session's token
/// session.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Session {
    client: Client,
    credentials: Arc<Credentials>,
    margin: Duration,
    clock: Clock,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Counts finished renewals; written with the lock held, read before waiting for it, so a caller can tell
    /// that a renewal finished while it waited.
    renewals: AtomicU64,
}

#[derive(Default)]
struct State {
    token: Option<Token>,
    /// [`Session::invalidate`] was called: the token is renewed at the next call whatever its time left.
    stale: bool,
    /// The failure of the last renewal, for the callers that waited on it.
    failure: Option<Error>,
}

impl Session {
    /// A session that logs in with `credentials`. Nothing is sent until [`Session::token`].
    pub fn new(client: Client, credentials: Credentials) -> Session {
        Session {
            client,
            credentials: Arc::new(credentials),
            margin: DEFAULT_MARGIN,
            clock: Arc::new(system_time),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                renewals: AtomicU64::new(0),
            }),
        }
    }

    /// A session that logs in with a username and password in an organisation; `unit` is a unit id, name or
    /// code, `None` the user's default unit.
    #[deprecated(
        note = "use `Session::new(client, Credentials::password(username, password, organisation))`"
    )]
    pub fn with_password(
        client: Client,
        username: impl Into<String>,
        password: impl Into<String>,
        organisation: impl Into<String>,
        unit: Option<String>,
    ) -> Session {
        let credentials = Credentials::password(username, password, organisation);
        Session::new(client, with_unit(credentials, unit.as_deref()))
    }

    /// A session that logs in with a Web API key; `unit` is a unit id, name or code, `None` the user's
    /// default unit.
    #[deprecated(note = "use `Session::new(client, Credentials::api_key(key))`")]
    pub fn with_api_key(client: Client, key: impl Into<String>, unit: Option<String>) -> Session {
        Session::new(client, with_unit(Credentials::api_key(key), unit.as_deref()))
    }

    /// How long a token [`Session::token`] returns stays valid at least, [`DEFAULT_MARGIN`] unless set.
    ///
    /// When the server's tokens live less than twice the margin, a token is renewed once half its lifetime
    /// has passed instead, so that not every call goes to the server.
    #[must_use]
    pub fn margin(mut self, margin: Duration) -> Session {
        self.margin = margin;
        self
    }

    /// The clock, in unix seconds, that decides when the token needs renewing; the system clock unless set.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Session {
        self.clock = clock;
        self
    }

    /// The client this session sends its requests with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A token valid for at least the margin: the cached one, else a refreshed one, else a new login.
    ///
    /// A failed refresh keeps the cached token for the next call, unless the server said the session is over,
    /// in which case the session logs in again at once.
    pub async fn token(&self) -> Result<Token, Error> {
        let seen = self.shared.renewals.load(Ordering::Acquire);
        let mut state = self.shared.state.lock().await;
        if let Some(token) = &state.token
            && !state.stale
            && self.is_fresh(token, (self.clock)())
        {
            return Ok(token.clone());
        }
        if self.shared.renewals.load(Ordering::Acquire) != seen
            && let Some(failure) = &state.failure
        {
            // A renewal failed while this caller waited for it: its result is this caller's result.
            return Err(failure.clone());
        }
        let result = self.renew(state.token.clone()).await;
        match &result {
            Ok(token) => {
                state.token = Some(token.clone());
                state.stale = false;
                state.failure = None;
            }
            Err(err) => {
                if err.is_session_over() {
                    state.token = None;
                }
                state.failure = Some(err.clone());
            }
        }
        self.shared.renewals.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Marks the cached token as no longer good, without sending anything: the next [`Session::token`]
    /// refreshes it, and logs in again if the server says the session is over.
    ///
    /// Call it when a service refused the token with `SESSION_ENDED`, `INVALID_TOKEN` or `TOKEN_EXPIRED`
    /// (see [`Error::is_session_over`]): the server revoked the session, and this session would otherwise
    /// hand the token out until its next refresh. Each call costs one renewal, shared by the callers that
    /// ask for a token meanwhile.
    pub async fn invalidate(&self) {
        let mut state = self.shared.state.lock().await;
        state.stale = state.token.is_some();
    }

    /// Ends the session on the server and forgets its token; the next [`Session::token`] logs in again.
    ///
    /// Nothing is sent when there is no token. When the release fails in a way worth retrying (see
    /// [`Error::is_retryable`]) the token is kept, so calling `release` again can still end the session.
    pub async fn release(&self) -> Result<(), Error> {
        let mut state = self.shared.state.lock().await;
        let Some(token) = state.token.take() else {
            return Ok(());
        };
        state.failure = None;
        state.stale = false;
        match self.client.release(token.as_str()).await {
            Ok(()) => Ok(()),
            Err(err) => {
                if err.is_retryable() {
                    state.token = Some(token);
                }
                Err(err)
            }
        }
    }

    /// Whether `token` may be handed out at `now`.
    fn is_fresh(&self, token: &Token, now: i64) -> bool {
        token.remaining(now) > self.threshold(token)
    }

    /// Seconds of validity under which a token is renewed: the margin, or half the token's lifetime when that
    /// is shorter.
    fn threshold(&self, token: &Token) -> i64 {
        self.margin_secs().min(token.lifetime() / 2)
    }

    fn margin_secs(&self) -> i64 {
        i64::try_from(self.margin.as_secs()).unwrap_or(i64::MAX)
    }

    /// Refreshes `current`, or logs in when there is none or its session is over.
    async fn renew(&self, current: Option<Token>) -> Result<Token, Error> {
        let Some(current) = current else {
            return self.login().await;
        };
        match self.client.refresh(current.as_str()).await {
            Ok(token) => {
                // Near the session's maximum lifetime the server shortens each new token to the session's end:
                // a new session is then the only way to a token valid for the margin.
                let cut_short = token.remaining((self.clock)()) <= self.margin_secs()
                    && token.lifetime() < current.lifetime();
                if cut_short {
                    Ok(self.login().await.unwrap_or(token))
                } else {
                    Ok(token)
                }
            }
            Err(err) if err.is_session_over() => self.login().await,
            Err(err) => Err(err),
        }
    }

    async fn login(&self) -> Result<Token, Error> {
        self.client.token(&self.credentials).await
    }
}

/// The system clock in unix seconds; 0 before 1970.
#[expect(
    clippy::disallowed_methods,
    reason = "the system clock, used unless a clock is injected"
)]
pub(crate) fn system_time() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("credentials", &self.credentials)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicI64;

    use crm_auth_core::ErrorCode;

    use super::*;
    use crate::testserver::{Reply, TestServer, claims, mint, mint_claims};

    const JTI: &str = "EE63A82C4FEBE02FF34E90DD1EBA5ABE";
    const OTHER_JTI: &str = "0123456789ABCDEF0123456789ABCDEF";
    const KEY: &str = "FEDCBA9876543210FEDCBA9876543210";

    /// A clock the test moves by hand.
    fn manual_clock(start: i64) -> (Arc<AtomicI64>, Clock) {
        let now = Arc::new(AtomicI64::new(start));
        let read = Arc::clone(&now);
        (now, Arc::new(move || read.load(Ordering::SeqCst)))
    }

    fn key_session(server: &TestServer, clock: Clock) -> anyhow::Result<Session> {
        let client = Client::builder().base_url(server.url()).retries(0).build()?;
        Ok(Session::new(client, Credentials::api_key(KEY).unit("HQ")).clock(clock))
    }

    #[tokio::test]
    async fn logs_in_once_then_serves_the_cache_then_refreshes_before_the_margin() -> anyhow::Result<()> {
        let first = mint(JTI, 1000, 8200)?;
        let second = mint_claims(&claims(JTI, 8100, 15_300, 1))?;
        let server = TestServer::start(vec![Reply::token(&first), Reply::token(&second)])?;
        let (now, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;

        assert_eq!(session.token().await?.as_str(), first);
        now.store(8200 - 61, Ordering::SeqCst);
        assert_eq!(
            session.token().await?.as_str(),
            first,
            "61 s left is more than the margin"
        );
        assert_eq!(server.requests().len(), 1);

        now.store(8200 - 60, Ordering::SeqCst);
        let refreshed = session.token().await?;
        assert_eq!(refreshed.as_str(), second);
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(
            requests[0].path(),
            "/crmapi/rest/v2/authentication/web_api_key/token"
        );
        assert_eq!(requests[0].body, br#"{"unit":"HQ"}"#);
        assert_eq!(requests[1].path(), "/crmapi/rest/v2/authentication/token/refresh");
        assert_eq!(
            requests[1].header("authorization"),
            Some(format!("Bearer {first}"))
        );
        // A clone shares the cache.
        assert_eq!(session.clone().token().await?.as_str(), second);
        assert_eq!(server.requests().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn an_ended_session_logs_in_again() -> anyhow::Result<()> {
        for code in [
            ErrorCode::SessionEnded,
            ErrorCode::TokenExpired,
            ErrorCode::InvalidToken,
        ] {
            let first = mint(JTI, 1000, 8200)?;
            let fresh = mint(OTHER_JTI, 9000, 16_200)?;
            let server = TestServer::start(vec![
                Reply::token(&first),
                Reply::error(code, None),
                Reply::token(&fresh),
            ])?;
            let (now, clock) = manual_clock(1000);
            let session = key_session(&server, clock)?;
            session.token().await?;
            now.store(9000, Ordering::SeqCst);
            assert_eq!(session.token().await?.session_id(), OTHER_JTI, "{code}");
            let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_owned()).collect();
            assert_eq!(
                paths,
                [
                    "/crmapi/rest/v2/authentication/web_api_key/token",
                    "/crmapi/rest/v2/authentication/token/refresh",
                    "/crmapi/rest/v2/authentication/web_api_key/token",
                ]
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn other_refresh_failures_keep_the_token_and_do_not_log_in() -> anyhow::Result<()> {
        let first = mint(JTI, 1000, 8200)?;
        let second = mint_claims(&claims(JTI, 8170, 15_370, 1))?;
        let server = TestServer::start(vec![
            Reply::token(&first),
            Reply::error(ErrorCode::Unavailable, None),
        ])?;
        let (now, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        session.token().await?;
        now.store(8170, Ordering::SeqCst);
        let err = session.token().await.err();
        assert_eq!(err.and_then(|e| e.code()), Some(ErrorCode::Unavailable));
        assert_eq!(server.requests().len(), 2);

        server.script(vec![Reply::token(&second)]);
        assert_eq!(session.token().await?.as_str(), second);
        let last = server
            .requests()
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!(last.path(), "/crmapi/rest/v2/authentication/token/refresh");
        assert_eq!(last.header("authorization"), Some(format!("Bearer {first}")));
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_request_and_its_token() -> anyhow::Result<()> {
        let token = mint(JTI, 1000, 8200)?;
        let server = TestServer::start(vec![Reply::token(&token).after(Duration::from_millis(300))])?;
        let (_, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let session = session.clone();
                tokio::spawn(async move { session.token().await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await??.as_str(), token);
        }
        assert_eq!(server.requests().len(), 1);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_failure() -> anyhow::Result<()> {
        let server = TestServer::start(vec![
            Reply::error(ErrorCode::InvalidCredentials, None).after(Duration::from_millis(300)),
        ])?;
        let (_, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let session = session.clone();
                tokio::spawn(async move { session.token().await })
            })
            .collect();
        for task in tasks {
            assert_eq!(
                task.await?.err().and_then(|e| e.code()),
                Some(ErrorCode::InvalidCredentials)
            );
        }
        assert_eq!(server.requests().len(), 1);
        // A later call tries again rather than repeating an old failure.
        assert!(session.token().await.is_err());
        assert_eq!(server.requests().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_refresh_cut_short_by_the_session_end_starts_a_new_session() -> anyhow::Result<()> {
        let first = mint(JTI, 1000, 8200)?;
        // The session ends at 8170: the refreshed token lives 30 s only.
        let short = mint_claims(&claims(JTI, 8140, 8170, 1))?;
        let fresh = mint(OTHER_JTI, 8140, 15_340)?;
        let server = TestServer::start(vec![
            Reply::token(&first),
            Reply::token(&short),
            Reply::token(&fresh),
        ])?;
        let (now, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        session.token().await?;
        now.store(8140, Ordering::SeqCst);
        assert_eq!(session.token().await?.as_str(), fresh);
        assert_eq!(server.requests().len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn short_lived_tokens_are_renewed_at_half_life_not_on_every_call() -> anyhow::Result<()> {
        // Tokens living 60 s with a 60 s margin: without the half-life rule every call would refresh.
        let first = mint(JTI, 1000, 1060)?;
        let second = mint_claims(&claims(JTI, 1031, 1091, 1))?;
        let server = TestServer::start(vec![Reply::token(&first), Reply::token(&second)])?;
        let (now, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        session.token().await?;
        now.store(1029, Ordering::SeqCst);
        assert_eq!(session.token().await?.as_str(), first);
        assert_eq!(server.requests().len(), 1);
        now.store(1031, Ordering::SeqCst);
        assert_eq!(session.token().await?.as_str(), second);
        assert_eq!(server.requests().len(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn after_invalidate_the_next_call_refreshes_then_logs_in_if_the_session_is_over()
    -> anyhow::Result<()> {
        let first = mint(JTI, 1000, 8200)?;
        let fresh = mint(OTHER_JTI, 1000, 8200)?;
        let server = TestServer::start(vec![
            Reply::token(&first),
            Reply::error(ErrorCode::SessionEnded, None),
            Reply::token(&fresh),
        ])?;
        let (_, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        session.invalidate().await;
        assert_eq!(
            session.token().await?.as_str(),
            first,
            "nothing to invalidate yet"
        );
        // Two hours left: without `invalidate` the cached token would be handed out.
        session.invalidate().await;
        assert_eq!(session.token().await?.as_str(), fresh);
        assert_eq!(session.token().await?.as_str(), fresh, "fresh again: cached");
        let paths: Vec<String> = server.requests().iter().map(|r| r.path().to_owned()).collect();
        assert_eq!(
            paths,
            [
                "/crmapi/rest/v2/authentication/web_api_key/token",
                "/crmapi/rest/v2/authentication/token/refresh",
                "/crmapi/rest/v2/authentication/web_api_key/token",
            ]
        );
        Ok(())
    }

    #[tokio::test]
    async fn release_ends_the_session_and_the_next_call_logs_in() -> anyhow::Result<()> {
        let first = mint(JTI, 1000, 8200)?;
        let fresh = mint(OTHER_JTI, 1000, 8200)?;
        let server = TestServer::start(vec![Reply::token(&first), Reply::empty(), Reply::token(&fresh)])?;
        let (_, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        session.release().await?;
        assert!(server.requests().is_empty(), "nothing to release yet");

        session.token().await?;
        session.release().await?;
        let release = server
            .requests()
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!(release.path(), "/crmapi/rest/v2/authentication/token/release");
        assert_eq!(release.header("authorization"), Some(format!("Bearer {first}")));
        assert_eq!(session.token().await?.as_str(), fresh);
        assert_eq!(server.requests().len(), 3);
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_release_keeps_the_token_when_worth_retrying() -> anyhow::Result<()> {
        let first = mint(JTI, 1000, 8200)?;
        let server = TestServer::start(vec![
            Reply::token(&first),
            Reply::error(ErrorCode::Unavailable, None),
        ])?;
        let (_, clock) = manual_clock(1000);
        let session = key_session(&server, clock)?;
        session.token().await?;
        assert!(session.release().await.is_err());
        server.script(vec![Reply::empty()]);
        session.release().await?;
        let release = server
            .requests()
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no request"))?;
        assert_eq!(release.header("authorization"), Some(format!("Bearer {first}")));
        Ok(())
    }

    #[test]
    fn debug_hides_credentials() -> anyhow::Result<()> {
        let client = Client::builder().base_url("http://127.0.0.1:8080").build()?;
        let credentials = Credentials::password("alice", "hunter2-secret", "Acme");
        let session = Session::new(client.clone(), credentials);
        let debug = format!("{session:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(
            debug.contains(r#"username: "alice""#) && debug.contains("password: ***"),
            "{debug}"
        );

        let session = Session::new(client, Credentials::api_key(KEY).unit("HQ"));
        let debug = format!("{session:?}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(
            debug.contains("key: ***") && debug.contains(r#"unit: Some("HQ")"#),
            "{debug}"
        );
        Ok(())
    }

    #[test]
    fn the_system_clock_is_unix_seconds() {
        // 2020-01-01 and 2100-01-01: catches milliseconds or a zero clock.
        let now = system_time();
        assert!((1_577_836_800..4_102_444_800).contains(&now), "{now}");
    }
}
