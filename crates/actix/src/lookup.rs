//! Where the token is found: `Authorization: Bearer`, then the JSON body's `token`, then the query's `token`,
//! as the contract has it for refresh, release and validate.
//!
//! The body is read without being taken away from what comes after: the payload is split so that the token
//! lookup and the replacement payload left in its place share one source. Every chunk read, by either side, is
//! queued for the replacement, and also shown to the lookup until it has seen [`BODY_TOKEN_LIMIT`] bytes.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker, ready};

use actix_web::HttpRequest;
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use crm_auth_core::{TokenRequest, parse_bearer_authorization};
use futures_util::{Stream, StreamExt as _};

/// The largest body searched for a `token` field, in bytes: the server's default `http.max_body_bytes`. A
/// longer body is passed on untouched and the lookup moves on to the query.
pub const BODY_TOKEN_LIMIT: usize = 16 * 1024;

/// The token's places, looked up in the contract's order.
pub(crate) struct Lookup {
    header: Option<String>,
    body: Option<BodyToken>,
    query: Option<String>,
}

impl Lookup {
    /// Starts looking: the header and the query are read at once, the body (only when there is no bearer
    /// token, the payload is still there and may be small enough) as the returned lookup is awaited.
    pub(crate) fn start(req: &HttpRequest, payload: &mut Payload) -> Lookup {
        if let Some(token) = bearer(req) {
            return Lookup {
                header: Some(token),
                body: None,
                query: None,
            };
        }
        Lookup {
            header: None,
            body: BodyToken::split(req, payload),
            query: query(req),
        }
    }

    /// The first token found, if any.
    pub(crate) async fn token(self) -> Option<String> {
        if self.header.is_some() {
            return self.header;
        }
        if let Some(body) = self.body
            && let Some(token) = body.await
        {
            return Some(token);
        }
        self.query
    }
}

/// `Authorization: Bearer <token>`, the scheme in any letter case; any other scheme is no token.
fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    parse_bearer_authorization(value).map(str::to_owned)
}

/// The query's `token`; a query string that does not parse holds none.
fn query(req: &HttpRequest) -> Option<String> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string()).ok()?;
    pairs
        .into_inner()
        .into_iter()
        .find(|(name, value)| name == "token" && !value.is_empty())
        .map(|(_, value)| value)
}

/// What became of the original payload.
enum Source {
    /// More may come.
    Open,
    /// Every chunk has been read.
    Ended,
    /// Reading failed; the error is handed on to the replacement payload once.
    Failed(Option<PayloadError>),
}

/// The original payload, shared by the token lookup and the replacement payload.
struct Tee {
    source: Payload,
    state: Source,
    /// Chunks read and not yet handed on.
    queued: VecDeque<Bytes>,
    /// The body as far as the lookup has seen it; `None` once the lookup has finished or given up.
    seen: Option<BytesMut>,
    /// The lookup's waker, when it waits: a chunk read by the other side is news to it.
    lookup_waker: Option<Waker>,
}

impl Tee {
    /// Reads one chunk (or the end, or an error) from the source.
    fn pull(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !matches!(self.state, Source::Open) {
            return Poll::Ready(());
        }
        match ready!(self.source.poll_next_unpin(cx)) {
            Some(Ok(chunk)) => {
                if let Some(seen) = &mut self.seen {
                    if seen.len() + chunk.len() > BODY_TOKEN_LIMIT {
                        self.seen = None;
                    } else {
                        seen.extend_from_slice(&chunk);
                    }
                }
                self.queued.push_back(chunk);
            }
            Some(Err(err)) => {
                self.state = Source::Failed(Some(err));
                self.seen = None;
            }
            None => self.state = Source::Ended,
        }
        if let Some(waker) = self.lookup_waker.take() {
            waker.wake();
        }
        Poll::Ready(())
    }
}

/// The body's `token`, once the body has been read.
struct BodyToken(Rc<RefCell<Tee>>);

impl BodyToken {
    /// Splits the payload, leaving a replacement that yields the same bytes in its place; `None` (the payload
    /// untouched) when there is no payload or its declared length is 0 or over [`BODY_TOKEN_LIMIT`].
    fn split(req: &HttpRequest, payload: &mut Payload) -> Option<BodyToken> {
        if matches!(payload, Payload::None) {
            return None;
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok());
        if declared.is_some_and(|len| len == 0 || len > BODY_TOKEN_LIMIT as u64) {
            return None;
        }
        let tee = Rc::new(RefCell::new(Tee {
            source: payload.take(),
            state: Source::Open,
            queued: VecDeque::new(),
            seen: Some(BytesMut::new()),
            lookup_waker: None,
        }));
        *payload = Payload::Stream {
            payload: Box::pin(Replay(Rc::clone(&tee))),
        };
        Some(BodyToken(tee))
    }
}

impl Future for BodyToken {
    type Output = Option<String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        let mut tee = self.0.borrow_mut();
        tee.lookup_waker = None;
        loop {
            if tee.seen.is_none() {
                return Poll::Ready(None);
            }
            if matches!(tee.state, Source::Ended) {
                return Poll::Ready(
                    tee.seen
                        .take()
                        .and_then(|body| TokenRequest::token_in_json(&body)),
                );
            }
            if tee.pull(cx).is_pending() {
                tee.lookup_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
    }
}

impl Drop for BodyToken {
    /// A lookup abandoned half-way needs no more copies of the body.
    fn drop(&mut self) {
        if let Ok(mut tee) = self.0.try_borrow_mut() {
            tee.seen = None;
            tee.lookup_waker = None;
        }
    }
}

/// The payload left for the extractors and handler after [`Authenticated`](crate::Authenticated): the
/// original bytes, in order, whoever read them first.
struct Replay(Rc<RefCell<Tee>>);

impl Stream for Replay {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut guard = self.0.borrow_mut();
        let tee = &mut *guard;
        loop {
            if let Some(chunk) = tee.queued.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            match &mut tee.state {
                Source::Open => ready!(tee.pull(cx)),
                Source::Ended => return Poll::Ready(None),
                Source::Failed(err) => return Poll::Ready(err.take().map(Err)),
            }
        }
    }
}
