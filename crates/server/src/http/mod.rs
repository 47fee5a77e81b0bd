//! The HTTP layer: routes, the request-id / access-log / panic middleware, and the envelope for every
//! response, actix's own errors included.

pub mod admin;
pub mod connections;
pub mod console;
pub mod health;
pub mod listeners;
pub mod openapi;
pub mod ops;
pub mod protocol;
pub mod request;
pub mod shutdown;
pub mod token;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service, ServiceRequest, ServiceResponse};
use actix_web::http::{ConnectionType, Method, StatusCode};
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, ResponseError, web};
use crm_auth_core::{ErrorCode, routes};
use futures_util::FutureExt as _;
use futures_util::future::{self, Either};

use crate::clock::Stopwatch;
use crate::db::Backend;
use crate::error::ApiError;
use crate::http::connections::ConnectionLimit;
use crate::http::listeners::{Listeners, Split};
use crate::http::shutdown::Drain;
use crate::logging;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::ratelimit::FlushJob;
use crate::service::retention::PurgeJob;
use crate::settings::{ErrorStatus, HttpSettings};
use crate::state::AppState;

/// The id of one request, shown in `INTERNAL_ERROR` messages and on every log line about it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Registers every route on an app.
pub fn configure(cfg: &mut web::ServiceConfig, state: &AppState) {
    cfg.app_data(web::Data::new(state.clone()))
        .service(web::scope(&state.settings.http.base_path).configure(token::configure))
        .configure(admin::configure)
        .configure(|cfg| console::configure(cfg, state))
        .configure(health::configure)
        .configure(|cfg| ops::configure(cfg, &state.settings.http.base_path))
        .default_service(web::to(not_found));
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

/// The handler for a known path with an unknown method.
pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Starts the server on bound listeners (a lone `TcpListener` serves everything), with the background purge
/// ([`PurgeJob`]), which stops with it. It handles no signal itself: the command line stops it through
/// [`shutdown::stop_on`], tests through its handle.
pub fn serve(listeners: impl Into<Listeners>, state: AppState) -> std::io::Result<Server> {
    let listeners = listeners.into();
    let workers = match state.settings.http.workers {
        0 => std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        n => n,
    };
    // Every blocking task is database work holding one of the pool's connections, so a worker's share of the
    // pool bounds its useful blocking threads; more threads only queue on the pool, and each extra wake-up
    // costs context switches (with tokio's default of 512 threads per worker, validate took half as much CPU
    // again per request). On SQLite the blocking threads only read (writes go to the commit thread, which
    // answers asynchronously) and a read never waits for anything but the CPU, so two per worker suffice.
    let pool_share = usize::try_from(state.settings.database.pool_size)
        .unwrap_or(1)
        .div_ceil(workers)
        .max(1);
    let blocking_threads = match state.store.backend() {
        Backend::Sqlite(_) => pool_share.min(2),
        Backend::Postgres(_) => pool_share,
    };
    // The headers get the body's time limit too: a client that trickles either holds a connection as long.
    let timeout = Duration::from_secs(state.settings.http.body_timeout_seconds);
    let limit = ConnectionLimit::new(
        state.settings.http.max_connections_per_address,
        &state.settings.http.trusted_proxies,
        state.metrics.http_connections(),
    );
    let observer = Observer {
        metrics: Arc::clone(&state.metrics),
        split: Split::of(&listeners)?,
        drain: Arc::clone(&state.drain),
        error_status: ErrorStatusRule::new(&state.settings.http),
    };
    let shutdown_timeout = state.settings.http.shutdown_timeout_seconds;
    // The app factory is the one value the server keeps until it has stopped, and every worker's copy is
    // dropped when its worker ends; the job, shared by the copies, stops when the last one goes.
    let purge = Arc::new(PurgeJob::start(state.clone())?);
    let shared_limit = Arc::new(FlushJob::start(&state)?);
    let server = HttpServer::new(move || {
        let _running = (&purge, &shared_limit);
        let observer = observer.clone();
        App::new()
            .wrap_fn(move |mut req, srv| {
                request::limit_body_time(&mut req, timeout);
                observe(&observer, req, srv)
            })
            .configure(|cfg| configure(cfg, &state))
    })
    .workers(workers)
    .worker_max_blocking_threads(blocking_threads)
    .client_request_timeout(timeout)
    .on_connect(move |io, ext| limit.on_connect(io, ext))
    .disable_signals()
    .shutdown_timeout(shutdown_timeout)
    .listen(listeners.main)?;
    let server = match listeners.management {
        Some(management) => server.listen(management)?,
        None => server,
    };
    Ok(server.run())
}

/// What the middleware needs besides the request.
#[derive(Clone, Debug)]
struct Observer {
    /// Where requests are counted.
    metrics: Arc<Metrics>,
    /// Which listener serves which routes.
    split: Split,
    /// Whether answers must close their connections.
    drain: Arc<Drain>,
    /// Which error answers go out as HTTP 200.
    error_status: ErrorStatusRule,
}

/// Where `http.error_status = "always_200"` applies: every path under the base path (the token API, unknown
/// paths there included), never the operator paths (`/health/*`, `/metrics`, `/openapi.json`) nor the
/// administration API, whose callers (load balancers, Prometheus, the console, scripts) read the HTTP status.
#[derive(Clone, Debug, Default)]
struct ErrorStatusRule {
    /// The base path when errors under it are sent as 200; `None` when every error keeps its status.
    always_200_under: Option<Arc<str>>,
}

impl ErrorStatusRule {
    fn new(http: &HttpSettings) -> ErrorStatusRule {
        let always_200_under = match http.error_status {
            ErrorStatus::Standard => None,
            ErrorStatus::Always200 => Some(Arc::from(http.base_path.as_str())),
        };
        ErrorStatusRule { always_200_under }
    }

    /// Whether an error answer to a request for `path` is sent with HTTP 200.
    fn sends_200(&self, path: &str) -> bool {
        let Some(base) = self.always_200_under.as_deref() else {
            return false;
        };
        // The root as base path puts every path under it; the root's own paths still keep their statuses.
        let under_base = base == "/"
            || path
                .strip_prefix(base)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        let root_path = [
            routes::HEALTH_LIVE,
            routes::HEALTH_READY,
            routes::METRICS,
            routes::OPENAPI,
        ]
        .contains(&path)
            || path == "/admin"
            || path.starts_with("/admin/");
        under_base && !root_path
    }
}

/// An answer's status as sent: an error's own, or 200 where [`ErrorStatusRule`] says so.
fn sent_status(status: StatusCode, as_200: bool) -> StatusCode {
    if as_200 && (status.is_client_error() || status.is_server_error()) {
        StatusCode::OK
    } else {
        status
    }
}

/// The middleware every request passes: gives it a request id, answers `NOT_FOUND` for a route the
/// listener does not serve, catches a handler's panic, turns any error into the envelope, sends errors with
/// HTTP 200 where [`ErrorStatusRule`] says so, closes the connection after the answer while draining, counts
/// it in the metrics and writes the access-log line. The metrics and the log carry an error's own status, so
/// error rates stay visible under `always_200`.
fn observe<S>(
    observer: &Observer,
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse, Error = actix_web::Error>,
    S::Future: 'static,
{
    let started = Stopwatch::start();
    let request_id = RequestId(crm_auth_core::new_id());
    req.extensions_mut().insert(request_id.clone());
    let method = req.method().clone();
    let path = req.path().to_owned();
    // The pattern, never the raw path, so that the label's values stay few.
    let route = req.match_pattern();
    let served = observer.split.serves(&req, route.as_deref());
    let route = route
        .filter(|_| served)
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let metrics = Arc::clone(&observer.metrics);
    let drain = Arc::clone(&observer.drain);
    let as_200 = observer.error_status.sends_200(&path);
    // Refused here rather than by a handler so that every route, unknown ones included, answers alike.
    let refused = match protocol::check_headers(req.request()) {
        Err(refused) => Some(refused),
        Ok(()) if !served => Some(ApiError::NotFound),
        Ok(()) => None,
    };
    let fut = match refused {
        None => Either::Left(srv.call(req)),
        Some(refused) => Either::Right(future::ready(Ok(req.error_response(refused)))),
    };
    let fut = logging::with_request_id(request_id.0.clone(), AssertUnwindSafe(fut).catch_unwind());
    async move {
        let (status, outcome) = match fut.await {
            Ok(Ok(res)) => {
                let mut res = finish(res, &request_id);
                let status = res.status();
                // Only the status line changes: the envelope and the headers (`Retry-After`, a
                // `Connection: close`) stay as they are.
                *res.response_mut().status_mut() = sent_status(status, as_200);
                if drain.is_draining() {
                    res.response_mut()
                        .head_mut()
                        .set_connection_type(ConnectionType::Close);
                }
                (status, Ok(res))
            }
            Ok(Err(err)) => {
                let status = err.as_response_error().status_code();
                let failure = Failure::for_status(status, &request_id).sent_as_200(as_200);
                (status, Err(failure.closing(drain.is_draining()).into()))
            }
            Err(_) => {
                log::error!(
                    request_id = request_id.0.as_str(),
                    method = method.as_str(),
                    path = path.as_str();
                    "handler panicked"
                );
                let failure = Failure::internal(&request_id).sent_as_200(as_200);
                let failure = failure.closing(drain.is_draining());
                (StatusCode::INTERNAL_SERVER_ERROR, Err(failure.into()))
            }
        };
        metrics.http_request(&route, method_label(&method), status.as_u16(), started.elapsed());
        log::info!(
            target: logging::ACCESS,
            method = method.as_str(),
            path = path.as_str(),
            status = status.as_u16(),
            duration_ms = logging::millis(started.elapsed()),
            request_id = request_id.0.as_str();
            "request"
        );
        outcome
    }
}

/// The method as a metrics label: the standard ones by name, anything else as `OTHER`, so that clients cannot
/// add label values.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::PATCH,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("OTHER", |known| known.as_str())
}

/// Turns a 500 into the contract's `INTERNAL_ERROR` carrying the request id, logging the cause once.
fn finish(res: ServiceResponse, request_id: &RequestId) -> ServiceResponse {
    if res.status() != StatusCode::INTERNAL_SERVER_ERROR {
        return res;
    }
    let cause = res
        .response()
        .error()
        .map(ToString::to_string)
        .unwrap_or_default();
    log::error!(request_id = request_id.0.as_str(), error = cause.as_str(); "internal error");
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, Failure::internal(request_id).error_response())
}

/// An error answered from the middleware, where no handler's [`ApiError`] exists.
#[derive(Debug)]
struct Failure {
    code: ErrorCode,
    message: String,
    /// Whether the answer closes its connection (while draining).
    close: bool,
    /// Whether the answer is sent with HTTP 200 (`http.error_status = "always_200"`).
    as_200: bool,
}

impl Failure {
    fn internal(request_id: &RequestId) -> Failure {
        let message = format!(
            "An internal error occurred. Quote request id {} when reporting it.",
            request_id.0
        );
        Failure {
            code: ErrorCode::InternalError,
            message,
            close: false,
            as_200: false,
        }
    }

    /// The envelope for an error actix raised itself, chosen by its status.
    fn for_status(status: StatusCode, request_id: &RequestId) -> Failure {
        let code = match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            s if s.is_client_error() => ErrorCode::InvalidRequest,
            _ => return Failure::internal(request_id),
        };
        Failure {
            code,
            message: code.default_message().to_owned(),
            close: false,
            as_200: false,
        }
    }

    /// This failure, closing its connection if `close`.
    fn closing(self, close: bool) -> Failure {
        Failure { close, ..self }
    }

    /// This failure, sent with HTTP 200 if `as_200`.
    fn sent_as_200(self, as_200: bool) -> Failure {
        Failure { as_200, ..self }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code.as_str())
    }
}

impl ResponseError for Failure {
    fn status_code(&self) -> StatusCode {
        let status =
            StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        sent_status(status, self.as_200)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = ApiError::response_for(self.code, &self.message, "");
        *response.status_mut() = self.status_code();
        if self.close {
            response.head_mut().set_connection_type(ConnectionType::Close);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;
    use actix_web::dev::ServiceResponse;
    use actix_web::{App, test, web};
    use serde_json::Value;

    use super::*;

    /// What the server sends for a request: an error the middleware returns becomes its `error_response`.
    async fn answer<S, R, B>(app: &S, req: R) -> anyhow::Result<(StatusCode, Value)>
    where
        S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody + 'static,
    {
        let res = match test::try_call_service(app, req).await {
            Ok(res) => res.into_parts().1.map_into_boxed_body(),
            Err(e) => e.error_response(),
        };
        let status = res.status();
        let body = actix_web::body::to_bytes(res.into_body())
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok((status, serde_json::from_slice(&body)?))
    }

    /// Which paths `always_200` covers, for the default base path and for the root as base path.
    #[actix_web::test]
    async fn always_200_covers_the_paths_under_the_base_path_only() {
        let rule = |base: &str, error_status| {
            ErrorStatusRule::new(&HttpSettings {
                base_path: base.to_owned(),
                error_status,
                ..HttpSettings::default()
            })
        };
        let standard = rule("/crmapi/rest/v2", ErrorStatus::Standard);
        let legacy = rule("/crmapi/rest/v2", ErrorStatus::Always200);
        let root = rule("/", ErrorStatus::Always200);
        let cases = [
            ("/crmapi/rest/v2/authentication/token", true, true),
            ("/crmapi/rest/v2/no/such/path", true, true),
            ("/crmapi/rest/v2", true, true),
            ("/crmapi/rest/v2x/authentication/token", false, true),
            ("/crmapi/rest", false, true),
            ("/no/such/path", false, true),
            ("/authentication/token", false, true),
            ("/health/ready", false, false),
            ("/health/live", false, false),
            ("/metrics", false, false),
            ("/openapi.json", false, false),
            ("/admin/v1/organisations", false, false),
            ("/admin/", false, false),
        ];
        for (path, under_default, under_root) in cases {
            assert!(!standard.sends_200(path), "{path}");
            assert_eq!(legacy.sends_200(path), under_default, "{path}");
            assert_eq!(root.sends_200(path), under_root, "{path} under /");
        }
    }

    /// The middleware's own answers follow `always_200` too: a panic, a 500 and an error a service returned
    /// instead of a response are sent with 200 under the base path, and with their status elsewhere.
    #[actix_web::test]
    async fn always_200_covers_the_middlewares_own_answers() -> anyhow::Result<()> {
        let observer = Observer {
            metrics: Arc::new(Metrics::new()?),
            split: Split::default(),
            drain: Arc::new(Drain::new()),
            error_status: ErrorStatusRule::new(&HttpSettings {
                error_status: ErrorStatus::Always200,
                ..HttpSettings::default()
            }),
        };
        let refused = |_: ServiceRequest, _: &_| {
            future::ready(Err::<ServiceResponse, _>(actix_web::error::ErrorPayloadTooLarge(
                "too large",
            )))
        };
        let app = test::init_service(
            App::new()
                .wrap_fn(move |req, srv| observe(&observer, req, srv))
                .route("/crmapi/rest/v2/boom", web::get().to(boom))
                .route("/crmapi/rest/v2/fails", web::get().to(fails))
                .service(
                    web::scope("/crmapi/rest/v2/refused")
                        .wrap_fn(refused)
                        .route("", web::get().to(boom)),
                )
                .service(
                    web::scope("/admin/v1/refused")
                        .wrap_fn(refused)
                        .route("", web::get().to(boom)),
                )
                .route("/admin/v1/boom", web::get().to(boom))
                .route("/health/ready", web::get().to(fails))
                .default_service(web::to(not_found)),
        )
        .await;
        let cases = [
            ("/crmapi/rest/v2/boom", StatusCode::OK, "INTERNAL_ERROR"),
            ("/crmapi/rest/v2/fails", StatusCode::OK, "INTERNAL_ERROR"),
            ("/crmapi/rest/v2/refused", StatusCode::OK, "PAYLOAD_TOO_LARGE"),
            ("/crmapi/rest/v2/none", StatusCode::OK, "NOT_FOUND"),
            (
                "/admin/v1/boom",
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
            ),
            (
                "/admin/v1/refused",
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
            ),
            (
                "/health/ready",
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
            ),
        ];
        for (path, status, code) in cases {
            let (sent, body) = answer(&app, test::TestRequest::get().uri(path).to_request()).await?;
            assert_eq!(
                (sent, body["status"]["code"].as_str()),
                (status, Some(code)),
                "{path}"
            );
        }
        Ok(())
    }

    async fn boom() -> HttpResponse {
        panic!("a bug")
    }

    async fn fails() -> Result<HttpResponse, ApiError> {
        Err(ApiError::Internal(
            "a database said something it should not show".into(),
        ))
    }

    /// A bug must still answer the envelope, with a request id to quote, and never the cause.
    #[actix_web::test]
    async fn panics_and_internal_errors_answer_internal_error_with_a_request_id() -> anyhow::Result<()> {
        let observer = Observer {
            metrics: Arc::new(Metrics::new()?),
            split: Split::default(),
            drain: Arc::new(Drain::new()),
            error_status: ErrorStatusRule::default(),
        };
        let app = test::init_service(
            App::new()
                .wrap_fn(move |req, srv| observe(&observer, req, srv))
                .route("/boom", web::get().to(boom))
                .route("/fails", web::get().to(fails)),
        )
        .await;
        for path in ["/boom", "/fails"] {
            let (status, body) = answer(&app, test::TestRequest::get().uri(path).to_request()).await?;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(body["status"]["code"], "INTERNAL_ERROR");
            assert_eq!(body["data"], serde_json::json!({}));
            let message = body["status"]["message"].as_str().unwrap_or_default();
            let id = message
                .split_whitespace()
                .find(|w| w.len() >= 32)
                .unwrap_or_default();
            assert!(crm_auth_core::is_id(id.trim_end_matches('.')), "{message}");
            assert!(!body.to_string().contains("database said"));
        }
        // The server goes on answering after a panic.
        let res = test::call_service(&app, test::TestRequest::get().uri("/fails").to_request()).await;
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        Ok(())
    }
}
