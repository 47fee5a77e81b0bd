//! The field rules of every request body, written once: the server refuses a request with the
//! [`RequestError`] these constructors give, and the fuzz targets hold them to their word.
//!
//! A body is a JSON object whose unknown members are ignored; an empty (or all-blank) body is an empty object.
//! Every message names the offending field and never echoes its value, since the value may be a password.

use serde_json::{Map, Value};

use crate::limits::{MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
use crate::wire::{ApiKeyTokenRequest, PasswordTokenRequest, TokenRequest};

/// Why a request was refused: the `status.description` of its `INVALID_REQUEST` answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    message: String,
}

impl RequestError {
    pub(crate) fn new(message: impl Into<String>) -> RequestError {
        RequestError {
            message: message.into(),
        }
    }

    /// What was wrong, e.g. `username is missing`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message, owned.
    pub fn into_message(self) -> String {
        self.message
    }
}

/// A JSON object body; an empty (or all-blank) body is an empty object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RequestError::new("the body must be a JSON object")),
        Err(_) => Err(RequestError::new("the body is not valid JSON")),
    }
}

impl PasswordTokenRequest {
    /// Reads the body of a password login.
    pub fn from_json(body: &[u8]) -> Result<PasswordTokenRequest, RequestError> {
        PasswordTokenRequest::from_json_object(&json_object(body)?)
    }

    /// Reads a password login from its JSON object: `username` and `organisation` are names, `password` is
    /// a non-empty string of at most [`MAX_PASSWORD_BYTES`] bytes, `unit` an optional name. Fields are
    /// checked in that order, so the first wrong one is named.
    pub fn from_json_object(map: &Map<String, Value>) -> Result<PasswordTokenRequest, RequestError> {
        Ok(PasswordTokenRequest {
            username: required_name(map, "username")?,
            password: password(map)?,
            organisation: required_name(map, "organisation")?,
            unit: optional_name(map, "unit")?,
        })
    }
}

impl ApiKeyTokenRequest {
    /// Reads the optional body of a Web API key login.
    pub fn from_json(body: &[u8]) -> Result<ApiKeyTokenRequest, RequestError> {
        ApiKeyTokenRequest::from_json_object(&json_object(body)?)
    }

    /// Reads a Web API key login from its JSON object: `unit` is an optional name.
    pub fn from_json_object(map: &Map<String, Value>) -> Result<ApiKeyTokenRequest, RequestError> {
        Ok(ApiKeyTokenRequest {
            unit: optional_name(map, "unit")?,
        })
    }

    /// Reads the `unit` of the query string (a `GET` key login, or a `POST` whose body names none): at most
    /// [`MAX_NAME_CHARS`] characters, without NUL; absent or empty means none.
    pub fn from_query_unit(unit: Option<String>) -> Result<ApiKeyTokenRequest, RequestError> {
        let unit = query_value("unit", unit, MAX_NAME_CHARS)?
            .map(|unit| without_nul("unit", unit))
            .transpose()?;
        Ok(ApiKeyTokenRequest { unit })
    }
}

impl TokenRequest {
    /// Reads the optional body of a refresh, release or validate.
    pub fn from_json(body: &[u8]) -> Result<TokenRequest, RequestError> {
        TokenRequest::from_json_object(&json_object(body)?)
    }

    /// Reads a refresh, release or validate from its JSON object: `token` is an optional string of at most
    /// [`MAX_TOKEN_BYTES`] characters; absent, `null` or `""` means none.
    pub fn from_json_object(map: &Map<String, Value>) -> Result<TokenRequest, RequestError> {
        Ok(TokenRequest {
            token: optional_string(map, "token", MAX_TOKEN_BYTES)?,
        })
    }

    /// Reads the `token` of the query string: at most [`MAX_TOKEN_BYTES`] characters; absent or empty means
    /// none.
    pub fn from_query_token(token: Option<String>) -> Result<TokenRequest, RequestError> {
        Ok(TokenRequest {
            token: query_value("token", token, MAX_TOKEN_BYTES)?,
        })
    }

    /// The body's `token` as a service that merely looks for a token reads it: a non-empty string member of a
    /// JSON object. Anything else, malformed bodies included, is no token, so that the query is tried next
    /// instead of the request being refused.
    pub fn token_in_json(body: &[u8]) -> Option<String> {
        match serde_json::from_slice::<Value>(body).ok()? {
            Value::Object(mut map) => match map.remove("token")? {
                Value::String(token) if !token.is_empty() => Some(token),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A mandatory, non-empty string field of at most `max_chars` characters.
pub(crate) fn required_string(
    map: &Map<String, Value>,
    field: &str,
    max_chars: usize,
) -> Result<String, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(RequestError::new(format!("{field} is missing"))),
        Some(Value::String(s)) if s.is_empty() => Err(RequestError::new(format!("{field} is empty"))),
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(RequestError::new(format!(
            "{field} is longer than {max_chars} characters"
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(RequestError::new(format!("{field} must be a string"))),
    }
}

/// An optional string field: absent, `null` and `""` are `None`.
pub(crate) fn optional_string(
    map: &Map<String, Value>,
    field: &str,
    max_chars: usize,
) -> Result<Option<String>, RequestError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(RequestError::new(format!(
            "{field} is longer than {max_chars} characters"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(RequestError::new(format!("{field} must be a string"))),
    }
}

/// A mandatory name (`username`, `organisation`): [`required_string`] of at most [`MAX_NAME_CHARS`]
/// characters, without NUL.
pub(crate) fn required_name(map: &Map<String, Value>, field: &str) -> Result<String, RequestError> {
    without_nul(field, required_string(map, field, MAX_NAME_CHARS)?)
}

/// An optional name (`unit`): [`optional_string`] of at most [`MAX_NAME_CHARS`] characters, without NUL.
pub(crate) fn optional_name(map: &Map<String, Value>, field: &str) -> Result<Option<String>, RequestError> {
    optional_string(map, field, MAX_NAME_CHARS)?
        .map(|name| without_nul(field, name))
        .transpose()
}

/// Refuses a name with a NUL character: no stored name holds one (PostgreSQL's text type cannot), and a query
/// carrying one fails on PostgreSQL instead of finding nothing.
pub(crate) fn without_nul(field: &str, name: String) -> Result<String, RequestError> {
    if name.contains('\0') {
        return Err(RequestError::new(format!("{field} contains a NUL character")));
    }
    Ok(name)
}

/// The password field: a non-empty string of at most [`MAX_PASSWORD_BYTES`] bytes.
fn password(map: &Map<String, Value>) -> Result<String, RequestError> {
    checked_password(required_string(map, "password", usize::MAX)?)
}

/// A password of at most [`MAX_PASSWORD_BYTES`] bytes.
pub(crate) fn checked_password(password: String) -> Result<String, RequestError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(RequestError::new(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(password)
}

/// A query parameter's value: at most `max_chars` characters; empty means none.
pub(crate) fn query_value(
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> Result<Option<String>, RequestError> {
    match value {
        Some(v) if v.chars().count() > max_chars => Err(RequestError::new(format!(
            "{field} is longer than {max_chars} characters"
        ))),
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    //! The messages are the contract's `status.description`; clients and tests match on them.

    use super::*;

    fn password_login(body: &str) -> Result<PasswordTokenRequest, String> {
        PasswordTokenRequest::from_json(body.as_bytes()).map_err(RequestError::into_message)
    }

    #[test]
    fn password_login_messages_name_the_field() {
        let long = "u".repeat(MAX_NAME_CHARS + 1);
        let cases = [
            ("{not json", "the body is not valid JSON"),
            ("[1,2]", "the body must be a JSON object"),
            ("", "username is missing"),
            (r#"{"username": null}"#, "username is missing"),
            (r#"{"username": ""}"#, "username is empty"),
            (r#"{"username": 5}"#, "username must be a string"),
            (
                &format!(r#"{{"username": "{long}"}}"#),
                "username is longer than 256 characters",
            ),
            (r#"{"username": "a\u0000b"}"#, "username contains a NUL character"),
            (r#"{"username": "a"}"#, "password is missing"),
            (
                r#"{"username": "a", "password": ["x"]}"#,
                "password must be a string",
            ),
            (
                &format!(r#"{{"username": "a", "password": "{}"}}"#, "p".repeat(1025)),
                "password is longer than 1024 bytes",
            ),
            (r#"{"username": "a", "password": "p"}"#, "organisation is missing"),
            (
                r#"{"username": "a", "password": "p", "organisation": "o", "unit": 7}"#,
                "unit must be a string",
            ),
        ];
        for (body, message) in cases {
            assert_eq!(password_login(body).err().as_deref(), Some(message), "{body}");
        }
    }

    #[test]
    fn password_login_reads_every_field() -> Result<(), String> {
        let login = password_login(r#"{"username": "a", "password": "p", "organisation": "o", "x": 1}"#)?;
        assert_eq!(
            (
                login.username.as_str(),
                login.password.as_str(),
                login.organisation.as_str()
            ),
            ("a", "p", "o")
        );
        assert_eq!(login.unit, None);
        // An empty unit is the default unit, not an error.
        let login = password_login(r#"{"username": "a", "password": "p", "organisation": "o", "unit": ""}"#)?;
        assert_eq!(login.unit, None);
        // The password limit counts bytes, the name limit characters.
        let password = "é".repeat(512);
        let body =
            serde_json::json!({"username": "é".repeat(256), "password": password, "organisation": "o"});
        assert!(password_login(&body.to_string()).is_ok());
        Ok(())
    }

    #[test]
    fn query_values() {
        let message = |r: Result<ApiKeyTokenRequest, RequestError>| r.map_err(RequestError::into_message);
        assert_eq!(
            message(ApiKeyTokenRequest::from_query_unit(Some(String::new()))),
            Ok(ApiKeyTokenRequest::default())
        );
        assert_eq!(
            message(ApiKeyTokenRequest::from_query_unit(Some("x".repeat(257)))),
            Err("unit is longer than 256 characters".to_owned())
        );
        assert_eq!(
            message(ApiKeyTokenRequest::from_query_unit(Some("\0".into()))),
            Err("unit contains a NUL character".to_owned())
        );
        assert_eq!(
            TokenRequest::from_query_token(Some("t".repeat(8193))).map_err(RequestError::into_message),
            Err("token is longer than 8192 characters".to_owned())
        );
    }

    #[test]
    fn token_bodies() {
        assert_eq!(TokenRequest::from_json(b" ").map(|r| r.token), Ok(None));
        assert_eq!(
            TokenRequest::from_json(br#"{"token": "t"}"#).map(|r| r.token),
            Ok(Some("t".into()))
        );
        assert_eq!(
            TokenRequest::from_json(br#"{"token": 1}"#).map_err(RequestError::into_message),
            Err("token must be a string".to_owned())
        );
        // A service that only looks for a token moves on where the server refuses.
        for body in [&b"{"[..], b"[]", br#"{"token": 1}"#, br#"{"token": ""}"#, b""] {
            assert_eq!(TokenRequest::token_in_json(body), None);
        }
        assert_eq!(
            TokenRequest::token_in_json(br#"{"token": "t"}"#),
            Some("t".into())
        );
    }
}
