//! The response envelope every API path answers with, and the `status.code` values it can carry.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// The `status.code` of a successful response.
const OK: &str = "OK";

/// Why a request failed: the `status.code` of an error envelope. Each code has one HTTP status.
///
/// Later versions may add codes, so a `match` on it needs a wildcard arm; [`ErrorCode::ALL`] lists the codes
/// this version knows.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "Why a request failed: the `status.code` of an error envelope. Each code has one HTTP \
        status."
    )
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The body is not JSON, or a field is missing, empty, of the wrong type or over its limit.
    InvalidRequest,
    /// The credentials do not identify an active user or key; one code for every cause.
    InvalidCredentials,
    /// The unit asked for is not available to the user, or no unit was asked and the user has no default.
    InvalidUnit,
    /// The caller's role does not allow this administrative request.
    Forbidden,
    /// The name is taken: another object of the same kind already has it.
    Conflict,
    /// The token is missing, malformed, badly signed, of an unknown key or algorithm, or of another issuer.
    InvalidToken,
    /// The token is genuine but past its expiry (for refresh: past the refresh grace).
    TokenExpired,
    /// The token's session was released, revoked, superseded by refresh reuse or is otherwise over.
    SessionEnded,
    /// Too many failed logins for this organisation and username; retry after the `Retry-After` delay.
    TooManyAttempts,
    /// This client address sent too many requests; retry after the `Retry-After` delay.
    RateLimited,
    /// No such path.
    NotFound,
    /// The path exists but not with this method.
    MethodNotAllowed,
    /// The body is over the configured limit.
    PayloadTooLarge,
    /// The body did not fully arrive within the configured time; the request changed nothing and the
    /// connection is closed.
    RequestTimeout,
    /// The database cannot be reached; the request changed nothing.
    Unavailable,
    /// A bug; the message carries a request id that the log line also carries.
    InternalError,
}

impl ErrorCode {
    /// Every code, in the order of the contract's table.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidCredentials,
        ErrorCode::InvalidUnit,
        ErrorCode::Forbidden,
        ErrorCode::Conflict,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::SessionEnded,
        ErrorCode::TooManyAttempts,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::Unavailable,
        ErrorCode::InternalError,
    ];

    /// The code as it appears in `status.code`, e.g. `"INVALID_TOKEN"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidCredentials => "INVALID_CREDENTIALS",
            ErrorCode::InvalidUnit => "INVALID_UNIT",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::SessionEnded => "SESSION_ENDED",
            ErrorCode::TooManyAttempts => "TOO_MANY_ATTEMPTS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status a response with this code has.
    pub fn http_status(&self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::InvalidCredentials
            | ErrorCode::InvalidToken
            | ErrorCode::TokenExpired
            | ErrorCode::SessionEnded => 401,
            ErrorCode::InvalidUnit | ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict => 409,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::TooManyAttempts | ErrorCode::RateLimited => 429,
            ErrorCode::InternalError => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// A sentence fit to show an end user, used as `status.message` when nothing more specific applies.
    pub fn default_message(&self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "The request is not valid.",
            ErrorCode::InvalidCredentials => "The credentials are not valid.",
            ErrorCode::InvalidUnit => "The unit is not available to this user.",
            ErrorCode::Forbidden => "This account may not make this request.",
            ErrorCode::Conflict => "The name is already taken.",
            ErrorCode::InvalidToken => "The token is not valid.",
            ErrorCode::TokenExpired => "The token has expired.",
            ErrorCode::SessionEnded => "The session has ended.",
            ErrorCode::TooManyAttempts => "Too many failed attempts. Try again later.",
            ErrorCode::RateLimited => "Too many requests. Try again later.",
            ErrorCode::NotFound => "The requested resource does not exist.",
            ErrorCode::MethodNotAllowed => "The method is not allowed for this resource.",
            ErrorCode::PayloadTooLarge => "The request body is too large.",
            ErrorCode::RequestTimeout => "The request took too long to arrive. Try again.",
            ErrorCode::Unavailable => "The service is temporarily unavailable. Try again later.",
            ErrorCode::InternalError => "An internal error occurred.",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of the [`ErrorCode`] values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownErrorCode;

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == s)
            .ok_or(UnknownErrorCode)
    }
}

/// The `status` member of every envelope. `code` is `"OK"` on success, else an [`ErrorCode`] string; kept as a
/// string so a client can read codes it does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    /// `OK`, or an `ErrorCode`: what went wrong; each code has one HTTP status.
    pub code: String,
    /// What was wrong, e.g. the offending field; `""` on success.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub description: String,
    /// A sentence fit to show an end user; `""` on success.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub message: String,
}

impl Status {
    /// The status of a successful response: code `"OK"`, empty description and message.
    pub fn ok() -> Status {
        Status {
            code: OK.to_owned(),
            description: String::new(),
            message: String::new(),
        }
    }

    /// The status of a failed response.
    pub fn error(code: ErrorCode, message: impl Into<String>, description: impl Into<String>) -> Status {
        Status {
            code: code.as_str().to_owned(),
            description: description.into(),
            message: message.into(),
        }
    }

    /// Whether the code is `"OK"`.
    pub fn is_ok(&self) -> bool {
        self.code == OK
    }

    /// The error code, if the code is a known one (`None` for `"OK"` and unknown codes).
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code.parse().ok()
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// A response body: `{"data": ..., "status": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T> {
    /// The payload; [`Empty`] on failure.
    pub data: T,
    /// `"OK"` or what went wrong.
    pub status: Status,
}

impl<T> Envelope<T> {
    /// A successful response carrying `data`.
    pub fn ok(data: T) -> Envelope<T> {
        Envelope {
            data,
            status: Status::ok(),
        }
    }
}

impl Envelope<Empty> {
    /// A failed response: `data` is `{}`.
    pub fn error(
        code: ErrorCode,
        message: impl Into<String>,
        description: impl Into<String>,
    ) -> Envelope<Empty> {
        Envelope {
            data: Empty {},
            status: Status::error(code, message, description),
        }
    }
}

/// An empty payload: serialises as `{}`; deserialises from any object, ignoring its members, and from `null`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Empty {}

impl<'de> Deserialize<'de> for Empty {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EmptyVisitor;

        impl<'de> serde::de::Visitor<'de> for EmptyVisitor {
            type Value = Empty;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Empty, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Empty {})
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Empty, E> {
                Ok(Empty {})
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Empty, E> {
                Ok(Empty {})
            }
        }

        deserializer.deserialize_any(EmptyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_str_round_trips_every_code() {
        for &code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(code.to_string(), code.as_str());
        }
        assert_eq!("OK".parse::<ErrorCode>(), Err(UnknownErrorCode));
        assert_eq!("invalid_token".parse::<ErrorCode>(), Err(UnknownErrorCode));
    }

    #[test]
    fn messages_are_sentences() {
        for &code in ErrorCode::ALL {
            let m = code.default_message();
            assert!(m.ends_with('.'), "{m}");
            assert!(m.starts_with(|c: char| c.is_ascii_uppercase()), "{m}");
        }
    }

    #[test]
    fn status_error_code() {
        assert_eq!(Status::ok().error_code(), None);
        assert!(Status::ok().is_ok());
        let s = Status::error(ErrorCode::SessionEnded, "m", "d");
        assert!(!s.is_ok());
        assert_eq!(s.error_code(), Some(ErrorCode::SessionEnded));
    }
}
