//! Reading requests by hand, so every malformed input gets a precise `INVALID_REQUEST` (naming the field,
//! never echoing its value) instead of actix's plain-text extractor errors. The field rules themselves are
//! core's ([`crm_auth_core::request`]); this module reads the body (within its time limit), the query and the
//! client's address.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpMessage as _, HttpRequest};
use crm_auth_core::{TokenRequest, parse_bearer_authorization};
use futures_util::{Stream, StreamExt as _};
use tokio::time::Sleep;

use crate::error::ApiError;
use crate::state::AppState;

/// Reads the body up to `limit` bytes; more is `PAYLOAD_TOO_LARGE`, a body that does not arrive within
/// `http.body_timeout_seconds` (see [`limit_body_time`]) is `REQUEST_TIMEOUT`.
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
        let chunk = chunk.map_err(|e| match e {
            PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut => ApiError::RequestTimeout,
            _ => ApiError::InvalidRequest("the body could not be read".into()),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Makes the request's body fail with a `TimedOut` I/O error once `timeout` has passed, so that whatever reads
/// it (the handler, an extractor) gives up instead of holding the connection and its buffers for as long as
/// the client cares to trickle bytes. A request that declares no body is left alone.
pub fn limit_body_time(req: &mut ServiceRequest, timeout: Duration) {
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|len| len.as_bytes() != b"0");
    if !has_body {
        return;
    }
    let inner = req.take_payload();
    let timed = TimedPayload {
        inner,
        deadline: Box::pin(tokio::time::sleep(timeout)),
        expired: false,
    };
    req.set_payload(Payload::from(Box::pin(timed) as Pin<Box<dyn Stream<Item = _>>>));
}

/// A body stream that ends with a `TimedOut` error at its deadline.
struct TimedPayload {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    expired: bool,
}

impl Stream for TimedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.poll_next_unpin(cx) {
            return Poll::Ready(item);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                let err = io::Error::new(io::ErrorKind::TimedOut, "the body did not arrive in time");
                Poll::Ready(Some(Err(PayloadError::Io(err))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
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
