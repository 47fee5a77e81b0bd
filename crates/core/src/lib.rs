//! Wire types, claims, keyring, HS256/EdDSA/ES256 sign/verify and JWKS for crm-auth.
//!
//! This crate is shared by the server, the client SDK and downstream services that verify tokens offline.
//! It does no I/O but for [`Keyring::from_key_file`], which reads one key file, and never reads the clock: every time-dependent function takes `now` in unix seconds.

pub mod admin;
pub mod apikey;
pub mod authorization;
pub mod envelope;
pub mod ids;
pub mod limits;
pub mod request;
pub mod routes;
pub mod token;
pub mod wire;

pub use apikey::{ApiKey, KeyGenError, digest_key, parse_basic_authorization};
pub use authorization::parse_bearer_authorization;
pub use envelope::{Empty, Envelope, ErrorCode, Status, UnknownErrorCode};
pub use ids::{is_id, new_id, new_session_id};
pub use limits::{MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
pub use request::RequestError;
pub use token::{
    Algorithm, Claims, DateFormat, Jwk, Jwks, KeyFileError, Keyring, KeyringError, SECRET_FILE_BASE64_PREFIX,
    SigningKey, TokenError, Verifier, VerifyOptions, decode_unverified, header_kid, issue, verify,
    verify_ignoring_expiry,
};
pub use wire::{
    ApiKeyTokenRequest, AuthMethod, PasswordTokenRequest, Role, SessionInfo, TokenRequest, TokenResponse,
    UnknownAuthMethod, UnknownRole, ValidateResponse,
};
