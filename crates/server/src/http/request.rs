//! Reading requests by hand, so every malformed input gets a precise `INVALID_REQUEST` (naming the field,
//! never echoing its value) instead of actix's plain-text extractor errors. The field rules themselves are
//! core's ([`crm_auth_core::request`]); this module reads the body, the query and the client's address.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use crm_auth_core::{TokenRequest, parse_bearer_authorization};
use futures_util::StreamExt as _;

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

/// The value of a query parameter (the first of that name), before the request's own rules are applied.
pub fn query_field(req: &HttpRequest, field: &str) -> Result<Option<String>, ApiError> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|_| ApiError::InvalidRequest("the query string is malformed".into()))?;
    Ok(pairs
        .into_inner()
        .into_iter()
        .find(|(k, _)| k == field)
        .map(|(_, v)| v))
}

/// The token of a refresh, release or validate: `Authorization: Bearer`, then the body's `token`, then the
/// query's `token`.
pub fn token(req: &HttpRequest, body: &[u8]) -> Result<String, ApiError> {
    if let Some(token) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_bearer_authorization)
    {
        return Ok(token.to_owned());
    }
    if let Some(token) = TokenRequest::from_json(body)?.token {
        return Ok(token);
    }
    TokenRequest::from_query_token(query_field(req, "token")?)?
        .token
        .ok_or(ApiError::Token(crm_auth_core::TokenError::Malformed))
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
