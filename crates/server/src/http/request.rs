//! Reading requests by hand, so every malformed input gets a precise `INVALID_REQUEST` (naming the field,
//! never echoing its value) instead of actix's plain-text extractor errors.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use crm_auth_core::limits::{MAX_NAME_CHARS, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES};
use futures_util::StreamExt as _;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::AppState;

/// Reads the body up to `limit` bytes; more is `PAYLOAD_TOO_LARGE`.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::InvalidRequest("the body could not be read".into()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON object body; an empty (or all-blank) body is an empty object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidRequest("the body must be a JSON object".into())),
        Err(_) => Err(ApiError::InvalidRequest("the body is not valid JSON".into())),
    }
}

/// A mandatory, non-empty string field of at most `max_chars` characters.
pub fn required_string(map: &Map<String, Value>, field: &str, max_chars: usize) -> Result<String, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(ApiError::InvalidRequest(format!("{field} is missing"))),
        Some(Value::String(s)) if s.is_empty() => Err(ApiError::InvalidRequest(format!("{field} is empty"))),
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(ApiError::InvalidRequest(format!(
            "{field} is longer than {max_chars} characters"
        ))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::InvalidRequest(format!("{field} must be a string"))),
    }
}

/// An optional string field: absent, `null` and `""` are `None`.
pub fn optional_string(
    map: &Map<String, Value>,
    field: &str,
    max_chars: usize,
) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() > max_chars => Err(ApiError::InvalidRequest(format!(
            "{field} is longer than {max_chars} characters"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::InvalidRequest(format!("{field} must be a string"))),
    }
}

/// A mandatory name (`username`, `organisation`): [`required_string`] of at most 256 characters, without NUL.
pub fn required_name(map: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    without_nul(field, required_string(map, field, MAX_NAME_CHARS)?)
}

/// An optional name (`unit`): [`optional_string`] of at most 256 characters, without NUL.
pub fn optional_name(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    optional_string(map, field, MAX_NAME_CHARS)?
        .map(|name| without_nul(field, name))
        .transpose()
}

/// Refuses a name with a NUL character: no stored name holds one (PostgreSQL's text type cannot), and a query
/// carrying one fails on PostgreSQL instead of finding nothing.
pub fn without_nul(field: &str, name: String) -> Result<String, ApiError> {
    if name.contains('\0') {
        return Err(ApiError::InvalidRequest(format!(
            "{field} contains a NUL character"
        )));
    }
    Ok(name)
}

/// The password field: a non-empty string of at most 1024 bytes.
pub fn password(map: &Map<String, Value>) -> Result<String, ApiError> {
    let password = required_string(map, "password", usize::MAX)?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(password)
}

/// The `unit` of a query string (GET key logins).
pub fn query_field(req: &HttpRequest, field: &str) -> Result<Option<String>, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|_| ApiError::InvalidRequest("the query string is malformed".into()))?;
    let value = pairs
        .into_inner()
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v);
    let max = if field == "token" {
        MAX_TOKEN_BYTES
    } else {
        MAX_NAME_CHARS
    };
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::InvalidRequest(format!(
            "{field} is longer than {max} characters"
        ))),
        Some(v) if v.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// The token of a refresh, release or validate: `Authorization: Bearer`, then the body's `token`, then the
/// query's `token`.
pub fn token(req: &HttpRequest, body: &[u8]) -> Result<String, ApiError> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION)
        && let Ok(value) = value.to_str()
    {
        let value = value.trim();
        if let Some((scheme, rest)) = value.split_once(char::is_whitespace)
            && scheme.eq_ignore_ascii_case("bearer")
            && !rest.trim().is_empty()
        {
            return Ok(rest.trim().to_owned());
        }
    }
    let map = json_object(body)?;
    if let Some(token) = optional_string(&map, "token", MAX_TOKEN_BYTES)? {
        return Ok(token);
    }
    query_field(req, "token")?.ok_or(ApiError::Token(crm_auth_core::TokenError::Malformed))
}

/// The client's address: the socket peer, or the nearest untrusted `X-Forwarded-For` hop when the peer is
/// a trusted proxy.
pub fn client_addr(req: &HttpRequest, state: &AppState) -> IpAddr {
    let peer = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let trusted = &state.settings.http.trusted_proxies;
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in req.headers().get_all("x-forwarded-for") {
        let Ok(value) = value.to_str() else { return peer };
        for hop in value.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}
