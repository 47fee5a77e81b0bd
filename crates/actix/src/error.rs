//! Why a request was refused, and the contract's envelope it is answered with.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use crm_auth_core::{Envelope, ErrorCode, TokenError};

/// Why [`Authenticated`](crate::Authenticated) refused a request.
///
/// As an actix error it answers the contract's envelope, `{"data": {}, "status": {"code", "description",
/// "message"}}` with `Content-Type: application/json`, and the HTTP status of its [`ErrorCode`]: 401 for
/// `INVALID_TOKEN`, `TOKEN_EXPIRED` and `SESSION_ENDED`, 503 for `UNAVAILABLE`, 500 for `INTERNAL_ERROR`.
/// A 401 carries `WWW-Authenticate` as RFC 6750 has it: `Bearer` alone when no token was sent (section 3.1),
/// `Bearer error="invalid_token"` when the token was refused. Neither the message, the description nor
/// `Display` ever holds the token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token in the `Authorization: Bearer` header, the JSON body's `token` or the query's `token`.
    #[error("token missing")]
    Missing,
    /// The token failed verification, offline (or, online, was not even shaped like a token).
    #[error("token rejected: {0}")]
    Token(#[from] TokenError),
    /// The server's validate endpoint refused the token (online).
    #[error("token refused by the server: {code}")]
    Refused {
        /// `INVALID_TOKEN`, `TOKEN_EXPIRED` or `SESSION_ENDED`.
        code: ErrorCode,
        /// The server's `status.description`.
        description: String,
    },
    /// The server's validate endpoint could not be asked or gave no verdict (online).
    #[error("token validation unavailable: {0}")]
    Unavailable(String),
    /// The application registered no [`AuthConfig`](crate::AuthConfig); the envelope's message says so.
    #[error(
        "no crm_auth_actix::AuthConfig registered: add `App::configure(crm_auth_actix::configure(config))`"
    )]
    NotConfigured,
}

impl AuthError {
    /// The envelope's `status.code`.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Missing => ErrorCode::InvalidToken,
            AuthError::Token(err) => err.code(),
            AuthError::Refused { code, .. } => *code,
            AuthError::Unavailable(_) => ErrorCode::Unavailable,
            AuthError::NotConfigured => ErrorCode::InternalError,
        }
    }

    /// The envelope's `status.description`: the check that failed, as the server words it; empty when the
    /// cause lies with this service rather than with the token.
    pub fn description(&self) -> String {
        match self {
            AuthError::Missing => self.to_string(),
            AuthError::Token(err) => err.to_string(),
            AuthError::Refused { description, .. } => description.clone(),
            AuthError::Unavailable(_) | AuthError::NotConfigured => String::new(),
        }
    }
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let code = self.code();
        let message = match self {
            // The operator reads the envelope first: name what is missing.
            AuthError::NotConfigured => self.to_string(),
            _ => code.default_message().to_owned(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if self.status_code() == StatusCode::UNAUTHORIZED {
            let challenge = match self {
                AuthError::Missing => "Bearer",
                _ => r#"Bearer error="invalid_token""#,
            };
            response.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        response.json(Envelope::error(code, message, self.description()))
    }
}
