//! Reading requests by hand, so every malformed input gets a precise `INVALID_REQUEST` (naming the field,
//! never echoing its value) instead of actix's plain-text extractor errors. The field rules themselves are
//! core's ([`crm_auth_core::request`]); this module reads the body (within its time limit), the query and the
//! client's address.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
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

/// The client's address, as the rate limit and the audit log see it: the socket peer, or, when the peer is a
/// trusted proxy, what the proxies report (see [`forwarded_client`]).
pub fn client_addr(req: &HttpRequest, state: &AppState) -> IpAddr {
    let peer = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    let lines: Vec<&[u8]> = req
        .headers()
        .get_all("x-forwarded-for")
        .map(HeaderValue::as_bytes)
        .collect();
    forwarded_client(peer, &lines, &state.settings.http.trusted_proxies)
}

/// Walks `X-Forwarded-For` (its header lines in order of arrival) from the peer towards the client, through
/// trusted hops only. Each entry was written by the hop to its right, so an entry is believed only while that
/// hop is trusted: the first untrusted address is the client, and an unparsable entry ends the walk at the
/// trusted hop that wrote it. The client controls only the entries left of what the first trusted proxy
/// appended, so it can neither choose another client's bucket nor escape its own (a forged or garbled prefix
/// is never read). A chain of trusted hops only is a trusted client: the left-most of them.
///
/// Addresses are compared as canonical addresses, so `::ffff:9.9.9.9` is `9.9.9.9`, in the trusted list too.
pub fn forwarded_client(peer: IpAddr, forwarded: &[&[u8]], trusted: &[IpAddr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|t| t.to_canonical() == ip);
    let mut nearest = peer.to_canonical();
    let entries = forwarded
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|&byte| byte == b','));
    for entry in entries {
        if !is_trusted(nearest) {
            return nearest;
        }
        match parse_hop(entry) {
            Some(ip) => nearest = ip,
            None => return nearest,
        }
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`1.2.3.4:5678`, `[::1]:80`, `[::1]`),
/// as its canonical address. Anything else (`unknown`, obfuscated names, non-ASCII, empty) is `None`.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim_matches([' ', '\t']);
    let ip = if let Ok(ip) = text.parse::<IpAddr>() {
        ip
    } else if let Ok(socket) = text.parse::<SocketAddr>() {
        socket.ip()
    } else {
        text.strip_prefix('[')?
            .strip_suffix(']')?
            .parse::<Ipv6Addr>()
            .ok()?
            .into()
    };
    Some(ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// Every way a header can name (or fail to name) the client, behind the proxies 10.0.0.1 and 10.0.0.2.
    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let trusted = [ip("10.0.0.1"), ip("::ffff:10.0.0.2")];
        let proxy = ip("10.0.0.1");
        let cases: &[(IpAddr, &[&str], &str)] = &[
            // An untrusted peer is the client whatever it says.
            (ip("203.0.113.9"), &["198.51.100.1"], "203.0.113.9"),
            (ip("::ffff:203.0.113.9"), &[], "203.0.113.9"),
            // A trusted peer with nothing to say is the client.
            (proxy, &[], "10.0.0.1"),
            (proxy, &["198.51.100.1"], "198.51.100.1"),
            (ip("::ffff:10.0.0.1"), &["198.51.100.1"], "198.51.100.1"),
            // Forged entries left of the one the proxy appended are never read, garbled or not.
            (proxy, &["1.1.1.1, 198.51.100.1"], "198.51.100.1"),
            (proxy, &["junk, 198.51.100.1"], "198.51.100.1"),
            (proxy, &["1.1.1.1:99:99, 198.51.100.1"], "198.51.100.1"),
            (proxy, &["\u{e9}, 198.51.100.1"], "198.51.100.1"),
            (proxy, &["junk", "198.51.100.1"], "198.51.100.1"),
            // Ports are stripped.
            (proxy, &["198.51.100.1:5678"], "198.51.100.1"),
            (proxy, &["[2001:db8::1]:80"], "2001:db8::1"),
            (proxy, &["[2001:db8::1]"], "2001:db8::1"),
            (proxy, &[" 2001:db8::1\t"], "2001:db8::1"),
            // IPv4-mapped IPv6 is the IPv4 address.
            (proxy, &["::ffff:198.51.100.1"], "198.51.100.1"),
            (proxy, &["[::ffff:198.51.100.1]:443"], "198.51.100.1"),
            // Trusted hops are walked through, in one line or over several.
            (proxy, &["198.51.100.1, 10.0.0.2"], "198.51.100.1"),
            (proxy, &["198.51.100.1", "10.0.0.2"], "198.51.100.1"),
            (proxy, &["198.51.100.1, [::ffff:10.0.0.2]:8080"], "198.51.100.1"),
            // An IPv6 address with a port must be bracketed; unbracketed it is ambiguous, so unparsable.
            (proxy, &["198.51.100.1, ::ffff:10.0.0.2:8080"], "10.0.0.1"),
            // An entry a trusted hop wrote that names nobody leaves that hop as the client.
            (proxy, &["unknown"], "10.0.0.1"),
            (proxy, &[""], "10.0.0.1"),
            (proxy, &["198.51.100.1, "], "10.0.0.1"),
            (proxy, &["198.51.100.1, junk, 10.0.0.2"], "10.0.0.2"),
            (proxy, &["198.51.100.1, fe80::1%eth0"], "10.0.0.1"),
            // Only trusted hops: the furthest is the client.
            (proxy, &["10.0.0.2, 10.0.0.1"], "10.0.0.2"),
        ];
        for (peer, text, expected) in cases {
            let lines: Vec<&[u8]> = text.iter().map(|line| line.as_bytes()).collect();
            assert_eq!(
                forwarded_client(*peer, &lines, &trusted),
                ip(expected),
                "peer {peer}, {text:?}"
            );
        }
        // Bytes that are not UTF-8 are an unparsable entry like any other.
        let lines: [&[u8]; 1] = [b"198.51.100.1, \xff\xfe"];
        assert_eq!(forwarded_client(proxy, &lines, &trusted), proxy);
        let lines: [&[u8]; 1] = [b"\xff\xfe, 198.51.100.1"];
        assert_eq!(forwarded_client(proxy, &lines, &trusted), ip("198.51.100.1"));
    }
}
