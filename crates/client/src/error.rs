//! The one error type of the SDK: the server's refusal, a transport failure, an unreadable answer or a bad
//! argument, told apart so callers know whether to retry, re-authenticate or give up.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use crm_auth_core::{ErrorCode, Status};

/// Why a call failed.
///
/// `Display` and `Debug` never contain a token, a Web API key or a password: tokens and keys travel in headers,
/// never in URLs, and nothing here keeps a copy of them. `Clone` is cheap, so one failed refresh can be handed
/// to every caller that waited for it.
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
    /// No answer came: the connection was refused, reset or timed out, or the name did not resolve.
    #[error("{}", transport_display(source))]
    Transport {
        /// What reqwest reported; its text names the URL, which never carries a secret.
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// An answer came, but not the JSON envelope expected of it.
    #[error("unexpected answer with http status {http_status}: {reason}")]
    Decode {
        /// The HTTP status of the answer.
        http_status: u16,
        /// What was wrong with it; never a part of the body.
        reason: String,
    },
    /// An argument was refused before anything was sent: a bad base URL, a malformed token, a blocking call made
    /// inside an async runtime.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What was wrong; never the value itself when it may be a secret.
        reason: String,
    },
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

fn transport_display(source: &reqwest::Error) -> &'static str {
    if source.is_connect() {
        if is_connection_refused(source) {
            "could not connect to the server: connection refused"
        } else {
            "could not connect to the server"
        }
    } else if source.is_timeout() {
        "the request timed out"
    } else if source.is_builder() {
        "the request could not be built"
    } else {
        "the request failed before an answer arrived"
    }
}

/// Whether an I/O error somewhere in the chain says the connection was refused, so the request never reached
/// the server.
pub(crate) fn is_connection_refused(err: &reqwest::Error) -> bool {
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

impl Error {
    /// A transport failure.
    pub(crate) fn transport(source: reqwest::Error) -> Error {
        Error::Transport {
            source: Arc::new(source),
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
    /// `TOO_MANY_ATTEMPTS` and `REQUEST_TIMEOUT` answers (wait [`Error::retry_after`] first when given), and transport failures.
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
            Error::Transport { source } => !source.is_builder(),
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
                    .token_with_password("alice", PASSWORD, "Acme", None)
                    .await
                    .err(),
                client.token_with_api_key(KEY, None).await.err(),
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
