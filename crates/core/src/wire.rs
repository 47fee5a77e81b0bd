//! Request and response bodies of the API, shared by the server and the client so the two cannot drift.
//!
//! Types that carry a secret (a password, a token) print it as `***` in `Debug`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Printed in place of a secret.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Body of `POST {base}/authentication/token`. Extra fields are ignored.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasswordTokenRequest {
    /// The username, matched case-insensitively within the organisation.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub username: String,
    /// The password in clear; at most 1024 bytes of UTF-8.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub password: String,
    /// The organisation name, matched case-insensitively.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 256))]
    pub organisation: String,
    /// A unit id, else name, else code (name and code case-insensitively); absent, `null` or `""` means the
    /// user's default unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub unit: Option<String>,
}

impl fmt::Debug for PasswordTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordTokenRequest")
            .field("username", &self.username)
            .field("password", &Redacted)
            .field("organisation", &self.organisation)
            .field("unit", &self.unit)
            .finish()
    }
}

/// Optional body of `{base}/authentication/web_api_key/token`; the key itself travels in the `Authorization`
/// header.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyTokenRequest {
    /// A unit id, else name, else code; absent, `null` or `""` means the user's default unit (GET: the `unit`
    /// query parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub unit: Option<String>,
}

/// `data` of a successful token request or refresh.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// A compact JWT, HS256, header `{"typ":"JWT","alg":"HS256","kid":...}`, claims `jti` (session id), `usr`,
    /// `org`, `oun`, `iat`, `exp`, `iss`, `gen`.
    pub token: String,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse").field("token", &Redacted).finish()
    }
}

/// Body of refresh, release and validate, for clients that send the token in the body rather than in an
/// `Authorization: Bearer` header.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRequest {
    /// The compact JWT: base64url segments joined by dots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 8192, pattern = "^[A-Za-z0-9_.-]*$"))]
    pub token: Option<String>,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = self.token.as_ref().map(|_| Redacted);
        f.debug_struct("TokenRequest").field("token", &token).finish()
    }
}

/// How a session was authenticated. Later versions may add methods, so a `match` on it needs a wildcard arm.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(description = "How a session was authenticated."))]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// Username and password.
    Password,
    /// A Web API key.
    WebApiKey,
}

impl AuthMethod {
    /// The wire name: `"password"` or `"web_api_key"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::Password => "password",
            AuthMethod::WebApiKey => "web_api_key",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of the [`AuthMethod`] wire names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown authentication method")]
pub struct UnknownAuthMethod;

impl FromStr for AuthMethod {
    type Err = UnknownAuthMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "password" => Ok(AuthMethod::Password),
            "web_api_key" => Ok(AuthMethod::WebApiKey),
            _ => Err(UnknownAuthMethod),
        }
    }
}

/// What a user may do: every user gets tokens; an `admin` also administers its own organisation, an
/// `operator` every organisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Gets tokens, nothing else (the default).
    #[default]
    Member,
    /// Administers its own organisation.
    Admin,
    /// Administers every organisation, creates organisations, imports.
    Operator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Member, Role::Admin, Role::Operator];

    /// The wire name: `"member"`, `"admin"` or `"operator"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not one of the [`Role`] wire names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown role (member, admin or operator)")]
pub struct UnknownRole;

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or(UnknownRole)
    }
}

/// A live session as the validate endpoint describes it.
///
/// Later versions may add fields, so outside this crate it is made with [`SessionInfo::new`] and read by its
/// fields.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(description = "A live session as the validate endpoint describes it.")
)]
pub struct SessionInfo {
    /// The session id, the tokens' `jti`: 32 upper-case hex digits.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9A-F]{32}$"))]
    pub id: String,
    /// The username as stored.
    pub username: String,
    /// The organisation name as stored.
    pub organisation: String,
    /// The name of the unit the session is logged into, whatever the token's `oun` holds (the server's
    /// `token.unit_claim` may make that the unit's code or id).
    pub unit: String,
    /// How the session was authenticated.
    pub method: AuthMethod,
    /// Issue time of the presented token, unix seconds.
    pub issued_at: i64,
    /// Expiry time of the presented token, unix seconds.
    pub expires_at: i64,
}

impl SessionInfo {
    /// A session's description: who (`username` in `organisation`, logged into `unit`), how, and the times
    /// of the token presented (unix seconds).
    pub fn new(
        id: impl Into<String>,
        username: impl Into<String>,
        organisation: impl Into<String>,
        unit: impl Into<String>,
        method: AuthMethod,
        issued_at: i64,
        expires_at: i64,
    ) -> SessionInfo {
        SessionInfo {
            id: id.into(),
            username: username.into(),
            organisation: organisation.into(),
            unit: unit.into(),
            method,
            issued_at,
            expires_at,
        }
    }
}

/// `data` of a successful validate call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateResponse {
    /// The token's session.
    pub session: SessionInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_names() {
        for m in [AuthMethod::Password, AuthMethod::WebApiKey] {
            assert_eq!(m.as_str().parse::<AuthMethod>(), Ok(m));
            assert_eq!(
                serde_json::to_value(m).ok(),
                Some(serde_json::Value::from(m.as_str()))
            );
        }
        assert_eq!("Password".parse::<AuthMethod>(), Err(UnknownAuthMethod));
    }

    #[test]
    fn role_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).ok(),
                Some(serde_json::Value::from(role.as_str()))
            );
        }
        assert_eq!(Role::default(), Role::Member);
        assert_eq!("Admin".parse::<Role>(), Err(UnknownRole));
        assert_eq!("".parse::<Role>(), Err(UnknownRole));
    }

    #[test]
    fn token_request_debug_hides_token() {
        let some = TokenRequest {
            token: Some("eyJ.secret.sig".into()),
        };
        assert_eq!(format!("{some:?}"), "TokenRequest { token: Some(***) }");
        assert_eq!(
            format!("{:?}", TokenRequest::default()),
            "TokenRequest { token: None }"
        );
    }
}
