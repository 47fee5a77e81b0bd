//! Prometheus metrics: one registry per [`AppState`](crate::state::AppState), rendered by `GET /metrics`.
//!
//! Every label takes its values from a closed set (matched route patterns, outcome names), so a client
//! cannot grow the number of series. Counters with outcome labels start at zero for every outcome, so a
//! dashboard sees a series before its first event.

use std::time::Duration;

use crm_auth_core::AuthMethod;
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::db::Pool;
use crate::db::batch::{MAX_BATCH, Queue};
use crate::error::ApiError;
use crate::password::HashObserver;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The `route` label of a request no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Buckets for waits that are usually instant but may queue: 100 µs to about 6.5 s.
const WAIT_BUCKETS: [f64; 17] = [
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 6.5,
];

/// Powers of two from 1 to [`MAX_BATCH`]: the batch-size buckets.
fn batch_buckets() -> Vec<f64> {
    std::iter::successors(Some(1.0), |size| Some(size * 2.0))
        .take_while(|size| *size <= MAX_BATCH as f64)
        .collect()
}

/// How a token request ended, the `outcome` label of `crm_auth_token_grants_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantOutcome {
    /// A token was issued.
    Ok,
    /// `INVALID_CREDENTIALS`.
    InvalidCredentials,
    /// `INVALID_UNIT`.
    InvalidUnit,
    /// `TOO_MANY_ATTEMPTS`: refused by the failed-login lockout.
    Locked,
    /// `UNAVAILABLE` after waiting `auth.lockout.max_wait_ms` for a password-check slot of the account.
    Busy,
    /// Anything else (database unavailable, internal error).
    Error,
}

impl GrantOutcome {
    /// Every outcome, in label order.
    pub const ALL: [GrantOutcome; 6] = [
        GrantOutcome::Ok,
        GrantOutcome::InvalidCredentials,
        GrantOutcome::InvalidUnit,
        GrantOutcome::Locked,
        GrantOutcome::Busy,
        GrantOutcome::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantOutcome::Ok => "ok",
            GrantOutcome::InvalidCredentials => "invalid_credentials",
            GrantOutcome::InvalidUnit => "invalid_unit",
            GrantOutcome::Locked => "locked",
            GrantOutcome::Busy => "busy",
            GrantOutcome::Error => "error",
        }
    }

    /// The outcome of a token request that ended with this result.
    pub fn of<T>(result: &Result<T, ApiError>) -> GrantOutcome {
        match result {
            Ok(_) => GrantOutcome::Ok,
            Err(ApiError::InvalidCredentials) => GrantOutcome::InvalidCredentials,
            Err(ApiError::InvalidUnit) => GrantOutcome::InvalidUnit,
            Err(ApiError::TooManyAttempts { .. }) => GrantOutcome::Locked,
            Err(ApiError::Busy) => GrantOutcome::Busy,
            Err(_) => GrantOutcome::Error,
        }
    }
}

/// How a refresh ended, the `outcome` label of `crm_auth_refreshes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The session moved to its next generation.
    Rotated,
    /// The token a refresh had just replaced got the newest token back (within the reuse interval).
    Reused,
    /// A superseded token came back after the reuse interval: the session was ended as stolen.
    Theft,
    /// `TOKEN_EXPIRED`: past the refresh grace.
    Expired,
    /// `SESSION_ENDED`: released, revoked, past its lifetime, or its user, key, unit or organisation
    /// disabled.
    Ended,
    /// `INVALID_TOKEN`.
    Invalid,
    /// Anything else (database unavailable, internal error).
    Error,
}

impl RefreshOutcome {
    /// Every outcome, in label order.
    pub const ALL: [RefreshOutcome; 7] = [
        RefreshOutcome::Rotated,
        RefreshOutcome::Reused,
        RefreshOutcome::Theft,
        RefreshOutcome::Expired,
        RefreshOutcome::Ended,
        RefreshOutcome::Invalid,
        RefreshOutcome::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Rotated => "rotated",
            RefreshOutcome::Reused => "reused",
            RefreshOutcome::Theft => "theft",
            RefreshOutcome::Expired => "expired",
            RefreshOutcome::Ended => "ended",
            RefreshOutcome::Invalid => "invalid",
            RefreshOutcome::Error => "error",
        }
    }

    /// The outcome of a refresh refused with this error (theft is told apart by the caller, which knows).
    pub fn of_error(error: &ApiError) -> RefreshOutcome {
        match error {
            ApiError::Token(crm_auth_core::TokenError::Expired) => RefreshOutcome::Expired,
            ApiError::Token(_) => RefreshOutcome::Invalid,
            ApiError::SessionEnded => RefreshOutcome::Ended,
            _ => RefreshOutcome::Error,
        }
    }
}

/// The service's metrics, in a registry of their own (not the process-global one), so that several servers in
/// one process (as in the tests) keep separate counts.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    http_connections: IntGauge,
    token_grants: IntCounterVec,
    refreshes: IntCounterVec,
    reuse_detections: IntCounter,
    releases: IntCounter,
    lockouts: IntCounter,
    hashes_in_flight: IntGauge,
    hash_wait: Histogram,
    pool_connections: IntGaugeVec,
    pool_wait: Histogram,
    db_batch_size: HistogramVec,
    sessions_purged: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "crm_auth_http_requests_total",
                "HTTP requests answered, by route pattern, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "crm_auth_http_request_duration_seconds",
                "Time to answer an HTTP request, by route",
            ),
            &["route"],
        )?;
        let http_connections = IntGauge::new(
            "crm_auth_http_connections_open",
            "Client connections open on the main listener",
        )?;
        let token_grants = IntCounterVec::new(
            Opts::new(
                "crm_auth_token_grants_total",
                "Token requests by login method and outcome",
            ),
            &["method", "outcome"],
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new("crm_auth_refreshes_total", "Refresh requests by outcome"),
            &["outcome"],
        )?;
        let reuse_detections = IntCounter::new(
            "crm_auth_reuse_detections_total",
            "Superseded tokens presented after the reuse interval; each ended its session",
        )?;
        let releases = IntCounter::new("crm_auth_releases_total", "Release (logout) requests answered OK")?;
        let lockouts = IntCounter::new(
            "crm_auth_lockouts_total",
            "Failed password logins that locked an organisation + username (or extended its lock)",
        )?;
        let hashes_in_flight = IntGauge::new(
            "crm_auth_password_hashes_in_flight",
            "Argon2id hashes running right now",
        )?;
        let hash_wait = Histogram::with_opts(
            HistogramOpts::new(
                "crm_auth_password_hash_wait_seconds",
                "Time a password hash waited for a free slot",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
        )?;
        let pool_connections = IntGaugeVec::new(
            Opts::new(
                "crm_auth_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )?;
        let pool_wait = Histogram::with_opts(
            HistogramOpts::new(
                "crm_auth_db_pool_wait_seconds",
                "Time to check a connection out of the pool",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
        )?;

        let db_batch_size = HistogramVec::new(
            HistogramOpts::new(
                "crm_auth_db_batch_size",
                "Requests served together by one batch of a database queue (coalesced statements on \
                 PostgreSQL, a group commit on SQLite)",
            )
            .buckets(batch_buckets()),
            &["queue"],
        )?;

        let sessions_purged = IntCounter::new(
            "crm_auth_sessions_purged_total",
            "Sessions deleted by the purge job once past session.retention_seconds",
        )?;

        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(http_connections.clone()))?;
        registry.register(Box::new(token_grants.clone()))?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(reuse_detections.clone()))?;
        registry.register(Box::new(releases.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(hashes_in_flight.clone()))?;
        registry.register(Box::new(hash_wait.clone()))?;
        registry.register(Box::new(pool_connections.clone()))?;
        registry.register(Box::new(pool_wait.clone()))?;
        registry.register(Box::new(db_batch_size.clone()))?;
        registry.register(Box::new(sessions_purged.clone()))?;

        for method in [AuthMethod::Password, AuthMethod::WebApiKey] {
            for outcome in GrantOutcome::ALL {
                token_grants.with_label_values(&[method.as_str(), outcome.as_str()]);
            }
        }
        for outcome in RefreshOutcome::ALL {
            refreshes.with_label_values(&[outcome.as_str()]);
        }
        for state in ["in_use", "idle"] {
            pool_connections.with_label_values(&[state]);
        }
        for queue in Queue::ALL {
            db_batch_size.with_label_values(&[queue.as_str()]);
        }

        Ok(Metrics {
            registry,
            http_requests,
            http_duration,
            http_connections,
            token_grants,
            refreshes,
            reuse_detections,
            releases,
            lockouts,
            hashes_in_flight,
            hash_wait,
            pool_connections,
            pool_wait,
            db_batch_size,
            sessions_purged,
        })
    }

    /// The gauge of open client connections, which each counted connection moves.
    pub fn http_connections(&self) -> IntGauge {
        self.http_connections.clone()
    }

    /// Counts one answered HTTP request. `route` is the matched pattern or [`UNMATCHED_ROUTE`], never the raw
    /// path.
    pub fn http_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one token request.
    pub fn token_grant(&self, method: AuthMethod, outcome: GrantOutcome) {
        self.token_grants
            .with_label_values(&[method.as_str(), outcome.as_str()])
            .inc();
    }

    /// Counts one refresh; a theft also counts as a reuse detection.
    pub fn refresh(&self, outcome: RefreshOutcome) {
        self.refreshes.with_label_values(&[outcome.as_str()]).inc();
        if outcome == RefreshOutcome::Theft {
            self.reuse_detections.inc();
        }
    }

    /// Counts one release answered OK.
    pub fn release(&self) {
        self.releases.inc();
    }

    /// Counts one failed login that locked (or kept locking) its organisation + username.
    pub fn lockout(&self) {
        self.lockouts.inc();
    }

    /// Records the time one pool checkout took.
    pub fn pool_waited(&self, wait: Duration) {
        self.pool_wait.observe(wait.as_secs_f64());
    }

    /// Records the size of one batch a database queue served.
    pub fn db_batch(&self, queue: Queue, size: usize) {
        self.db_batch_size
            .with_label_values(&[queue.as_str()])
            .observe(size as f64);
    }

    /// How many batches a database queue has served, and how many requests they held in all.
    pub fn db_batches(&self, queue: Queue) -> (u64, u64) {
        let histogram = self.db_batch_size.with_label_values(&[queue.as_str()]);
        // Batch sizes are whole numbers, so their sum is exact in an f64.
        (histogram.get_sample_count(), histogram.get_sample_sum() as u64)
    }

    /// How many password hashes the hashing pool has started.
    pub fn hashes(&self) -> u64 {
        self.hash_wait.get_sample_count()
    }

    /// Counts sessions the purge job deleted.
    pub fn sessions_purged(&self, count: usize) {
        self.sessions_purged
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Sessions the purge job has deleted since start-up.
    pub fn sessions_purged_total(&self) -> u64 {
        self.sessions_purged.get()
    }

    /// The text exposition of every metric, with the pool gauges read from `pool` now.
    pub fn render(&self, pool: &Pool) -> Result<String, prometheus::Error> {
        let state = pool.state();
        let idle = i64::from(state.idle_connections);
        let in_use = i64::from(state.connections) - idle;
        self.pool_connections.with_label_values(&["in_use"]).set(in_use);
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

impl HashObserver for Metrics {
    fn waited(&self, wait: Duration) {
        self.hash_wait.observe(wait.as_secs_f64());
    }

    fn in_flight(&self, delta: i64) {
        self.hashes_in_flight.add(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_start_at_zero_and_count() -> anyhow::Result<()> {
        let metrics = Metrics::new()?;
        let families = metrics.registry.gather();
        let grants = families
            .iter()
            .find(|f| f.name() == "crm_auth_token_grants_total")
            .map_or(0, |f| f.get_metric().len());
        // Every method x outcome pair is exported before its first event.
        assert_eq!(grants, 2 * GrantOutcome::ALL.len());

        metrics.refresh(RefreshOutcome::Theft);
        assert_eq!(metrics.refreshes.with_label_values(&["theft"]).get(), 1);
        assert_eq!(metrics.reuse_detections.get(), 1);
        metrics.in_flight(1);
        metrics.in_flight(1);
        metrics.in_flight(-1);
        assert_eq!(metrics.hashes_in_flight.get(), 1);
        Ok(())
    }

    #[test]
    fn error_outcomes() {
        use crm_auth_core::TokenError;
        assert_eq!(
            GrantOutcome::of::<()>(&Err(ApiError::TooManyAttempts { retry_after: 1 })),
            GrantOutcome::Locked
        );
        assert_eq!(
            GrantOutcome::of::<()>(&Err(ApiError::Unavailable("down".into()))),
            GrantOutcome::Error
        );
        assert_eq!(GrantOutcome::of::<()>(&Err(ApiError::Busy)), GrantOutcome::Busy);
        assert_eq!(
            RefreshOutcome::of_error(&ApiError::Token(TokenError::Expired)),
            RefreshOutcome::Expired
        );
        assert_eq!(
            RefreshOutcome::of_error(&ApiError::Token(TokenError::Malformed)),
            RefreshOutcome::Invalid
        );
        assert_eq!(
            RefreshOutcome::of_error(&ApiError::SessionEnded),
            RefreshOutcome::Ended
        );
    }
}
