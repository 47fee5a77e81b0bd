//! The one server error type and its single mapping to HTTP status and envelope code.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use crm_auth_core::{Envelope, ErrorCode, RequestError, TokenError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Everything a request can fail with. Messages never carry a secret, SQL or a stack trace.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the description names the field.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Any credential failure; one message for every cause.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The unit is not in the organisation, the user is not a member, or there is no default.
    #[error("invalid unit")]
    InvalidUnit,
    /// The token does not verify or has expired.
    #[error("token rejected: {0}")]
    Token(#[from] TokenError),
    /// The session is over.
    #[error("session ended")]
    SessionEnded,
    /// The organisation + username is locked after failed logins.
    #[error("too many attempts")]
    TooManyAttempts {
        /// Seconds until the next attempt is checked.
        retry_after: u64,
    },
    /// The client address is over its rate.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until the next request is accepted.
        retry_after: u64,
    },
    /// No such path.
    #[error("not found")]
    NotFound,
    /// What an administration request names does not exist (or is another organisation's, which an admin
    /// may not know of); the description says what.
    #[error("not found: {0}")]
    Missing(String),
    /// The caller's role does not allow the administration request; the description says why.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The name is taken; the description says which.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The path exists; the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over `http.max_body_bytes`.
    #[error("payload too large")]
    PayloadTooLarge,
    /// The body did not fully arrive within `http.body_timeout_seconds`.
    #[error("request timeout")]
    RequestTimeout,
    /// The database cannot be reached; nothing was changed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Every password-check slot of the organisation + username stayed taken for `auth.lockout.max_wait_ms`;
    /// nothing was checked or counted. Answered as `UNAVAILABLE` with `Retry-After: 1`.
    #[error("password checks of this account are all taken")]
    Busy,
    /// A bug; the detail goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RequestError> for ApiError {
    fn from(err: RequestError) -> ApiError {
        ApiError::InvalidRequest(err.into_message())
    }
}

impl ApiError {
    /// The envelope code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ApiError::InvalidCredentials => ErrorCode::InvalidCredentials,
            ApiError::InvalidUnit => ErrorCode::InvalidUnit,
            ApiError::Token(e) => e.code(),
            ApiError::SessionEnded => ErrorCode::SessionEnded,
            ApiError::TooManyAttempts { .. } => ErrorCode::TooManyAttempts,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::NotFound | ApiError::Missing(_) => ErrorCode::NotFound,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::PayloadTooLarge => ErrorCode::PayloadTooLarge,
            ApiError::RequestTimeout => ErrorCode::RequestTimeout,
            ApiError::Unavailable(_) | ApiError::Busy => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::InternalError,
        }
    }

    /// What `status.description` says: the offending field or the token check that failed.
    fn description(&self) -> String {
        match self {
            ApiError::InvalidRequest(d)
            | ApiError::Missing(d)
            | ApiError::Forbidden(d)
            | ApiError::Conflict(d) => d.clone(),
            ApiError::Token(e) => e.to_string(),
            _ => String::new(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyAttempts { retry_after } | ApiError::RateLimited { retry_after } => {
                Some((*retry_after).max(1))
            }
            ApiError::Busy => Some(1),
            _ => None,
        }
    }

    /// The envelope response for a code, for errors raised outside handlers.
    pub fn response_for(code: ErrorCode, message: &str, description: &str) -> HttpResponse {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpResponse::build(status).json(Envelope::error(code, message, description))
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.code();
        let mut response = ApiError::response_for(code, code.default_message(), &self.description());
        if code == ErrorCode::RequestTimeout {
            // The rest of the body may still come; the connection cannot carry another request after it.
            response.head_mut().set_connection_type(ConnectionType::Close);
        }
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<DieselError> for ApiError {
    fn from(e: DieselError) -> ApiError {
        match &e {
            // The connection is lost, or reached a read-only server (a standby during a failover).
            e if crate::db::ends_connection(e) => ApiError::Unavailable(e.to_string()),
            // SQLite reports a writer that waited past the busy timeout as "database is locked".
            DieselError::DatabaseError(_, info) if info.message().contains("database is locked") => {
                ApiError::Unavailable(e.to_string())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<r2d2::Error> for ApiError {
    fn from(e: r2d2::Error) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::password::HashError> for ApiError {
    fn from(e: crate::password::HashError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::service::admin::AdminError> for ApiError {
    fn from(e: crate::service::admin::AdminError) -> ApiError {
        use crate::service::admin::AdminError;
        match e {
            AdminError::Invalid(m) => ApiError::InvalidRequest(m),
            AdminError::NotFound(m) => ApiError::Missing(m),
            AdminError::Conflict(m) => ApiError::Conflict(m),
            AdminError::Forbidden(m) => ApiError::Forbidden(m),
            AdminError::Db(e) => e.into(),
            AdminError::Random(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::service::import::ImportError> for ApiError {
    fn from(e: crate::service::import::ImportError) -> ApiError {
        use crate::service::import::ImportError;
        match e {
            ImportError::Invalid { .. } | ImportError::Empty => ApiError::InvalidRequest(e.to_string()),
            ImportError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            ImportError::Forbidden => ApiError::Forbidden(e.to_string()),
            ImportError::Db(e) => e.into(),
            ImportError::Hash(e) => e.into(),
        }
    }
}

/// Whether a database error is a unique-constraint violation (a concurrent insert won).
pub fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}
