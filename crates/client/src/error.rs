//! The one error type of the SDK: the server's refusal, a transport failure, an unreadable answer or a bad
//! argument, told apart so callers know whether to retry, re-authenticate or give up.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crm_auth_core::{ErrorCode, Status};
use reqwest::Url;

/// Why a call failed.
///
/// `Display` and `Debug` never contain a token, a Web API key or a password: tokens and keys travel in headers,
/// never in URLs, and nothing here keeps a copy of them. `Clone` is cheap, so one failed refresh can be handed
/// to every caller that waited for it.
///
/// A failure to reach the server names the host and port it was for, and says whether trying again may help:
///
/// ```
/// use crm_auth_client::{Client, TransportKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), crm_auth_client::Error> {
/// // `.invalid` names never resolve: a mistyped base URL stays mistyped.
/// let client = Client::builder().base_url("http://no-such-host.invalid:8080").build()?;
/// let err = client.health().await.expect_err("no such host");
/// assert_eq!(err.transport_kind(), Some(TransportKind::NameNotResolved));
/// assert!(!err.is_retryable());
/// assert_eq!(
///     err.to_string(),
///     "could not connect to no-such-host.invalid:8080: the host name does not resolve"
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error envelope.
    #[error("{}", api_display(status, *http_status))]
    Api {
        /// The envelope's `status`, as sent: the code (see [`Error::code`]), a message fit to show an end user,
        /// and a description that may name the offending field.
        status: Status,
        /// The HTTP status of the answer.
        http_status: u16,
        /// The `Retry-After` header, when the answer carried one in seconds.
        retry_after: Option<Duration>,
    },
    /// No answer came: the name did not resolve, the connection was refused, reset or timed out.
    #[error("{}", transport_display(*kind, host, *port))]
    Transport {
        /// What went wrong.
        kind: TransportKind,
        /// The host the request was for, as the URL names it (an IPv6 address in brackets).
        host: String,
        /// The port the request was for (the scheme's default when the URL names none).
        port: u16,
        /// What the HTTP stack reported; its text names the URL, which never carries a secret.
        #[source]
        source: Arc<dyn StdError + Send + Sync>,
    },
    /// An answer came, but not the JSON envelope expected of it.
    #[error("unexpected answer with http status {http_status}: {reason}")]
    Decode {
        /// The HTTP status of the answer.
        http_status: u16,
        /// What was wrong with it; never a part of the body.
        reason: String,
    },
    /// An argument was refused before anything was sent: a bad base URL, a malformed token.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong; never the value itself when it may be a secret.
        reason: String,
    },
    /// A call of the blocking client was made inside an async runtime (a `#[tokio::main]` function or a
    /// task), where it would block the runtime's thread; nothing was sent. Use the async client there.
    #[cfg(feature = "blocking")]
    #[error("the blocking client was called inside an async runtime; use the async client there")]
    InsideAsyncRuntime,
    /// The blocking client could not start its runtime.
    #[cfg(feature = "blocking")]
    #[error("could not start the runtime of the blocking client")]
    Runtime {
        /// What the operating system reported.
        #[source]
        source: Arc<io::Error>,
    },
}

fn api_display(status: &Status, http_status: u16) -> String {
    let mut out = format!("server answered {} with http status {http_status}", status.code);
    if !status.description.is_empty() {
        out.push_str(": ");
        out.push_str(&status.description);
    }
    out
}

/// Why no answer came, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// The host name did not resolve: a wrong base URL, or no name service. Not retryable.
    NameNotResolved,
    /// The server refused the connection: the request never reached it.
    ConnectionRefused,
    /// Connecting failed otherwise: it timed out, the network is unreachable, the TLS handshake failed.
    Connect,
    /// The request went out and no answer came in time; the server may have acted on it.
    Timeout,
    /// The connection broke after the request went out, before the answer was read.
    Interrupted,
    /// The request could not be built. Not retryable.
    Build,
}

fn transport_display(kind: TransportKind, host: &str, port: u16) -> String {
    let to = if host.is_empty() {
        "the server".to_owned()
    } else {
        format!("{host}:{port}")
    };
    match kind {
        TransportKind::NameNotResolved => {
            format!("could not connect to {to}: the host name does not resolve")
        }
        TransportKind::ConnectionRefused => format!("could not connect to {to}: connection refused"),
        TransportKind::Connect => format!("could not connect to {to}"),
        TransportKind::Timeout => format!("the request to {to} timed out"),
        TransportKind::Interrupted => format!("the request to {to} failed before an answer arrived"),
        TransportKind::Build => format!("the request to {to} could not be built"),
    }
}

/// Whether an I/O error somewhere in the chain says the connection was refused, so the request never reached
/// the server.
fn is_connection_refused(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// Whether the failure was the host name's resolution. hyper-util's connector, which reqwest connects with,
/// reports every resolver failure as an error whose text is `dns error`, with the resolver's error as its
/// source; nothing else in the chain has a type to test. `a_name_that_does_not_resolve_is_not_retried`
/// (below), the doctest of [`Error`] and the server's client tests check it against the real resolver.
fn is_name_not_resolved(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(err) = source {
        if err.to_string() == "dns error" {
            return true;
        }
        source = err.source();
    }
    false
}

impl Error {
    /// A transport failure of a request to `url`.
    pub(crate) fn transport(url: &Url, source: reqwest::Error) -> Error {
        let kind = if source.is_builder() {
            TransportKind::Build
        } else if source.is_connect() {
            if is_name_not_resolved(&source) {
                TransportKind::NameNotResolved
            } else if is_connection_refused(&source) {
                TransportKind::ConnectionRefused
            } else {
                TransportKind::Connect
            }
        } else if source.is_timeout() {
            TransportKind::Timeout
        } else {
            TransportKind::Interrupted
        };
        Error::Transport {
            kind,
            host: url.host_str().unwrap_or_default().to_owned(),
            port: url.port_or_known_default().unwrap_or_default(),
            source: Arc::new(source),
        }
    }

    /// What went wrong on the way, when no answer came.
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self {
            Error::Transport { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// An argument refused before sending.
    pub(crate) fn invalid_argument(reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }

    /// The contract's error code, when the server answered with an error envelope whose code this crate knows.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api { status, .. } => status.error_code(),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered at all.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::Api { http_status, .. } | Error::Decode { http_status, .. } => Some(*http_status),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again (`Retry-After`), for `TOO_MANY_ATTEMPTS` and
    /// `RATE_LIMITED` in particular.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The envelope's `status.message`: a sentence fit to show an end user. `None` when the server did not
    /// answer with an error envelope.
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Api { status, .. } => Some(&status.message),
            _ => None,
        }
    }

    /// The envelope's `status.description`, which may name the offending field; `None` when the server did not
    /// answer with an error envelope.
    pub fn description(&self) -> Option<&str> {
        match self {
            Error::Api { status, .. } => Some(&status.description),
            _ => None,
        }
    }

    /// Whether the same call may succeed later without any change: `UNAVAILABLE`, `RATE_LIMITED`,
    /// `TOO_MANY_ATTEMPTS` and `REQUEST_TIMEOUT` answers (wait [`Error::retry_after`] first when given), and
    /// transport failures, except a host name that does not resolve (a wrong base URL stays wrong) and a
    /// request that could not be built.
    ///
    /// This says nothing about whether repeating the call is safe: the client retries only where it is, by
    /// itself (see [`ClientBuilder::retries`](crate::ClientBuilder::retries)).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { .. } => matches!(
                self.code(),
                Some(
                    ErrorCode::Unavailable
                        | ErrorCode::RateLimited
                        | ErrorCode::TooManyAttempts
                        | ErrorCode::RequestTimeout
                )
            ),
            Error::Transport { kind, .. } => {
                !matches!(kind, TransportKind::NameNotResolved | TransportKind::Build)
            }
            _ => false,
        }
    }

    /// Whether the token or its session is over, so only a new login helps: `INVALID_TOKEN`, `TOKEN_EXPIRED`,
    /// `SESSION_ENDED`.
    pub fn is_session_over(&self) -> bool {
        matches!(
            self.code(),
            Some(ErrorCode::InvalidToken | ErrorCode::TokenExpired | ErrorCode::SessionEnded)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;
    use crate::testserver::{Reply, TestServer};

    fn api(code: ErrorCode) -> Error {
        Error::Api {
            status: Status::error(code, code.default_message(), ""),
            http_status: code.http_status(),
            retry_after: None,
        }
    }

    #[test]
    fn only_transient_answers_are_retryable() {
        let transient = [
            ErrorCode::Unavailable,
            ErrorCode::RateLimited,
            ErrorCode::TooManyAttempts,
            ErrorCode::RequestTimeout,
        ];
        for &code in ErrorCode::ALL {
            assert_eq!(api(code).is_retryable(), transient.contains(&code), "{code}");
        }
        let decode = Error::Decode {
            http_status: 503,
            reason: "the body is not json".to_owned(),
        };
        assert!(!decode.is_retryable());
        assert!(!Error::invalid_argument("x").is_retryable());
    }

    #[test]
    fn session_over_is_exactly_the_three_token_codes() {
        let over = [
            ErrorCode::InvalidToken,
            ErrorCode::TokenExpired,
            ErrorCode::SessionEnded,
        ];
        for &code in ErrorCode::ALL {
            assert_eq!(api(code).is_session_over(), over.contains(&code), "{code}");
        }
    }

    #[test]
    fn accessors_are_empty_without_an_answer() {
        let err = Error::invalid_argument("the base url must use http or https");
        assert_eq!(
            err.to_string(),
            "invalid argument: the base url must use http or https"
        );
        assert_eq!(
            (err.code(), err.http_status(), err.retry_after()),
            (None, None, None)
        );
        assert_eq!((err.message(), err.description()), (None, None));
        let err = api(ErrorCode::InvalidUnit);
        assert_eq!(err.code(), Some(ErrorCode::InvalidUnit));
        assert_eq!(err.http_status(), Some(403));
        assert_eq!(err.message(), Some(ErrorCode::InvalidUnit.default_message()));
        assert_eq!(err.description(), Some(""));
    }

    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_not_retried() -> anyhow::Result<()> {
        let client = Client::builder()
            .base_url("http://no-such-host.invalid:8080")
            .build()?;
        let err = client.validate("a.b.c").await.err();
        let err = err.ok_or_else(|| anyhow::anyhow!("a host that does not exist answered"))?;
        assert_eq!(err.transport_kind(), Some(TransportKind::NameNotResolved));
        assert!(matches!(&err, Error::Transport { host, port: 8080, .. } if host == "no-such-host.invalid"));
        assert!(!err.is_retryable());
        for policy in [
            crate::retry::Policy::Idempotent,
            crate::retry::Policy::ConnectionRefused,
        ] {
            assert_eq!(crate::retry::delay(policy, &err, 0), None, "{policy:?}");
        }
        // A refused connection, by contrast, is retryable, and names where it went.
        let port = TestServer::closed_port()?;
        let client = Client::builder()
            .base_url(format!("http://127.0.0.1:{port}"))
            .retries(0)
            .build()?;
        let err = client.health().await.err();
        let err = err.ok_or_else(|| anyhow::anyhow!("a closed port answered"))?;
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            format!("could not connect to 127.0.0.1:{port}: connection refused")
        );
        Ok(())
    }

    #[tokio::test]
    async fn errors_never_show_the_secrets_sent() -> anyhow::Result<()> {
        const PASSWORD: &str = "hunter2-password";
        const KEY: &str = "0123456789ABCDEF0123456789ABCDEF";
        const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.eyJqdGkiOiJYIn0.c2lnbmF0dXJl";
        let server = TestServer::start(vec![Reply::error(ErrorCode::InvalidCredentials, None)])?;
        let refused = format!("http://127.0.0.1:{}", TestServer::closed_port()?);
        for url in [server.url(), refused] {
            let client = Client::builder().base_url(url).retries(0).build()?;
            let errors = [
                client
                    .token(&crate::Credentials::password("alice", PASSWORD, "Acme"))
                    .await
                    .err(),
                client.token(&crate::Credentials::api_key(KEY)).await.err(),
                client.refresh(TOKEN).await.err(),
                client.validate(TOKEN).await.err(),
                client.release(TOKEN).await.err(),
            ];
            for err in errors {
                let err = err.ok_or_else(|| anyhow::anyhow!("a call succeeded"))?;
                let shown = format!("{err} {err:?}");
                for secret in [PASSWORD, KEY, TOKEN] {
                    assert!(!shown.contains(secret), "{shown}");
                }
            }
        }
        Ok(())
    }
}
