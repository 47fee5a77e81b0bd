//! The per-address rate limit of the token endpoints (off unless `http.rate_limit.per_second` > 0).
//!
//! Each node keeps a token bucket per client address with `governor`'s keyed limiter (GCRA: one timestamp per
//! address in a sharded map, no lock over all of them): `burst` requests at once, then `per_second`. An IPv4
//! client has a bucket of its own; an IPv6 client shares its /64's, the smallest block a site is given, so one
//! host cannot take a fresh bucket per request from its own 2^64 addresses.
//!
//! With `http.rate_limit.shared`, nodes behind one load balancer also count each address's requests in the
//! database ([`SharedCounts`]): an address may make at most `max(burst, per_second × window)` requests in any
//! `window` of `max(1, ⌈burst ÷ per_second⌉)` seconds, whichever nodes they reach. A request is never held up by
//! the database: the check reads this node's copy of the totals, and a thread adds the node's new counts and
//! reads back the totals a few times a second ([`FLUSH_INTERVAL`]), in one write. Between two flushes a node
//! does not see the other nodes' newest requests, so N nodes may let through up to N - 1 flush intervals' worth
//! of an address's requests more than the limit; a client that keeps going is held to it from the next flush.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::Clock as GovernorClock;
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter as Gcra};

use crate::clock::Clock;
use crate::db::{self, Store};
use crate::settings::RateLimitSettings;

/// How often a node adds its counts to the shared ones and reads back the totals.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Checks between two sweeps of idle buckets.
const SWEEP_EVERY: u64 = 4_096;

/// Buckets tracked before a sweep drops the full ones.
const SWEEP_AT: usize = 10_000;

/// The server's clock as `governor` reads it: nanoseconds since the epoch, from the injected clock.
#[derive(Clone)]
struct GovernorTime(Arc<dyn Clock>);

impl GovernorClock for GovernorTime {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from((self.0.now_precise().max(0.0) * 1e9) as u64)
    }
}

type Buckets = Gcra<
    IpAddr,
    governor::state::keyed::DashMapStateStore<IpAddr>,
    GovernorTime,
    governor::middleware::NoOpMiddleware<Nanos>,
>;

/// The limiter; one per server.
pub struct RateLimiter {
    /// This node's buckets; `None` when the limit is off.
    buckets: Option<Buckets>,
    /// The counts shared with the other nodes, when `http.rate_limit.shared` is on.
    shared: Option<Arc<SharedCounts>>,
    clock: Arc<dyn Clock>,
    checks: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("on", &self.buckets.is_some())
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter with these settings, reading time from `clock`.
    pub fn new(settings: &RateLimitSettings, clock: Arc<dyn Clock>) -> RateLimiter {
        let quota = NonZeroU32::new(settings.per_second).map(|rate| {
            Quota::per_second(rate).allow_burst(NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN))
        });
        RateLimiter {
            buckets: quota.map(|quota| Gcra::dashmap_with_clock(quota, GovernorTime(Arc::clone(&clock)))),
            shared: (settings.shared && settings.per_second > 0)
                .then(|| Arc::new(SharedCounts::new(settings))),
            clock,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one request of `addr` now. `Err` carries the whole seconds to wait.
    pub fn check(&self, addr: IpAddr) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        let key = client_key(addr);
        if (self.checks.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(SWEEP_EVERY)
            && buckets.len() >= SWEEP_AT
        {
            buckets.retain_recent();
        }
        if let Err(not_until) = buckets.check_key(&key) {
            let wait = not_until.wait_time_from(buckets.clock().now());
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        match &self.shared {
            Some(shared) => shared.take(key, self.clock.now()),
            None => Ok(()),
        }
    }

    /// The counts shared through the database, when `http.rate_limit.shared` is on.
    pub fn shared(&self) -> Option<&Arc<SharedCounts>> {
        self.shared.as_ref()
    }
}

/// One address's requests as this node knows them.
#[derive(Debug, Default)]
struct Tally {
    /// Every node's requests in the window, as the last flush read them.
    known: u64,
    /// This node's requests being written by the flush in progress (not in `known` yet).
    in_flight: u64,
    /// This node's requests not yet written, per second.
    pending: Vec<(i64, u64)>,
    /// Checked since the last flush: the next one reads its total back.
    touched: bool,
    /// The last second it was checked.
    last_seen: i64,
}

/// The shared limit's counts on this node: a copy of every node's totals for the addresses it has seen, and its
/// own requests since the last flush.
#[derive(Debug)]
pub struct SharedCounts {
    /// The window, in seconds.
    window: i64,
    /// Requests allowed per address in any window.
    limit: u64,
    tallies: DashMap<IpAddr, Tally>,
}

/// What one flush writes and reads back.
#[derive(Debug, Default, PartialEq, Eq)]
struct Flush {
    /// Per address checked since the last flush, its new requests per second.
    written: Vec<(IpAddr, Vec<(i64, u64)>)>,
    /// The addresses whose totals to read back.
    read: Vec<IpAddr>,
}

impl SharedCounts {
    fn new(settings: &RateLimitSettings) -> SharedCounts {
        let per_second = u64::from(settings.per_second.max(1));
        let burst = u64::from(settings.burst.max(1));
        let window = burst.div_ceil(per_second).max(1);
        SharedCounts {
            window: i64::try_from(window).unwrap_or(i64::MAX),
            limit: burst.max(per_second.saturating_mul(window)),
            tallies: DashMap::new(),
        }
    }

    /// Counts one request of `client` in the second `now` if the window has room for it.
    fn take(&self, client: IpAddr, now: i64) -> Result<(), u64> {
        let mut tally = self.tallies.entry(client).or_default();
        tally.touched = true;
        tally.last_seen = now;
        let oldest = now - self.window;
        let pending: u64 = tally
            .pending
            .iter()
            .filter(|(slot, _)| *slot > oldest)
            .map(|(_, n)| n)
            .sum();
        if tally.known + tally.in_flight + pending >= self.limit {
            // A second leaves the window every second.
            return Err(1);
        }
        match tally.pending.last_mut() {
            Some((slot, hits)) if *slot == now => *hits += 1,
            _ => tally.pending.push((now, 1)),
        }
        Ok(())
    }

    /// Takes the requests to write from every address checked since the last flush, and lists the addresses
    /// whose totals to read back: every one seen in the last window (another node's requests count against
    /// it too). Forgets the others.
    fn start_flush(&self, now: i64) -> Flush {
        let mut flush = Flush::default();
        self.tallies.retain(|client, tally| {
            let recent = tally.last_seen > now - self.window;
            if tally.touched {
                tally.touched = false;
                let pending = std::mem::take(&mut tally.pending);
                tally.in_flight += pending.iter().map(|(_, n)| n).sum::<u64>();
                flush.written.push((*client, pending));
            } else if !recent && tally.in_flight == 0 && tally.pending.is_empty() {
                return false;
            }
            flush.read.push(*client);
            true
        });
        flush
    }

    /// Takes in the totals read back by a flush.
    fn finish_flush(&self, flush: Flush, totals: &HashMap<String, i64>) {
        for (client, written) in flush.written {
            if let Some(mut tally) = self.tallies.get_mut(&client) {
                tally.in_flight -= written.iter().map(|(_, n)| n).sum::<u64>();
            }
        }
        for client in flush.read {
            if let Some(mut tally) = self.tallies.get_mut(&client) {
                let total = totals.get(&client.to_string()).copied().unwrap_or(0);
                tally.known = u64::try_from(total).unwrap_or(0);
            }
        }
    }

    /// Gives back the requests of a flush that failed, to be written by the next one.
    fn abandon_flush(&self, flush: Flush) {
        for (client, written) in flush.written {
            if let Some(mut tally) = self.tallies.get_mut(&client) {
                tally.in_flight -= written.iter().map(|(_, n)| n).sum::<u64>();
                tally.touched = true;
                let mut all = written;
                all.append(&mut tally.pending);
                tally.pending = all;
            }
        }
    }

    /// One flush: adds this node's new requests to the shared counts and reads back every node's totals for
    /// the addresses seen in the last window, in one write (the group commit on SQLite, a transaction on
    /// PostgreSQL). Nothing is asked of the database while no address is being counted.
    pub fn flush(&self, store: &Store, now: i64) -> Result<(), crate::error::ApiError> {
        let mut flush = self.start_flush(now);
        if flush.read.is_empty() {
            return Ok(());
        }
        // The same order on every node, so that two flushes on PostgreSQL never wait for each other's rows
        // in opposite orders.
        flush.written.sort_by_key(|(client, _)| *client);
        let rows: Vec<(String, i64, i64)> = flush
            .written
            .iter()
            .flat_map(|(client, written)| {
                written
                    .iter()
                    .map(move |(slot, n)| (client.to_string(), *slot, i64::try_from(*n).unwrap_or(i64::MAX)))
            })
            .collect();
        let clients: Vec<String> = flush.read.iter().map(IpAddr::to_string).collect();
        let after = now - self.window;
        let written = store.write_blocking(move |conn| {
            let work = |conn: &mut db::DbConnection| -> diesel::QueryResult<HashMap<String, i64>> {
                for (client, slot, hits) in &rows {
                    db::rate_limit::add(conn, client, *slot, *hits)?;
                }
                db::rate_limit::totals(conn, &clients, after)
            };
            Ok(match conn {
                db::DbConnection::Postgres(_) => diesel::Connection::transaction(conn, |conn| work(conn))?,
                db::DbConnection::Sqlite(_) => work(conn)?,
            })
        });
        match written {
            Ok(totals) => {
                self.finish_flush(flush, &totals);
                Ok(())
            }
            Err(e) => {
                self.abandon_flush(flush);
                Err(e)
            }
        }
    }

    /// Deletes the counts that have left every window; returns how many rows went.
    pub fn forget_old(&self, store: &Store, now: i64) -> Result<usize, crate::error::ApiError> {
        let until = now - self.window - 1;
        store.write_blocking(move |conn| Ok(db::rate_limit::forget_until(conn, until)?))
    }
}

/// The thread that flushes the shared counts, for `crm-auth serve`; dropping it stops the thread.
#[derive(Debug)]
pub struct FlushJob {
    /// Dropped with the job: the thread sees the channel close.
    _stop: mpsc::Sender<()>,
}

impl FlushJob {
    /// Starts the thread if the limit is shared.
    pub fn start(state: &crate::state::AppState) -> std::io::Result<Option<FlushJob>> {
        let Some(shared) = state.rate_limiter.shared().cloned() else {
            return Ok(None);
        };
        let store = state.store.clone();
        let clock = Arc::clone(&state.clock);
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("rate-limit".into())
            .spawn(move || {
                let mut flushes: u64 = 0;
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(FLUSH_INTERVAL) {
                    let now = clock.now();
                    if let Err(e) = shared.flush(&store, now) {
                        log::warn!(error:% = e; "rate limit: counts not shared");
                    }
                    flushes += 1;
                    // Every ten seconds or so.
                    if flushes.is_multiple_of(100)
                        && let Err(e) = shared.forget_old(&store, now)
                    {
                        log::warn!(error:% = e; "rate limit: old counts not deleted");
                    }
                }
            })?;
        Ok(Some(FlushJob { _stop: stop }))
    }
}

/// What one client is counted under, by the rate limit and the connection limit alike: an IPv4 address
/// (IPv4-mapped IPv6 included) as it is, an IPv6 address by its /64.
pub fn client_key(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX)).into(),
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limiter(per_second: u32, burst: u32) -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new();
        let settings = RateLimitSettings {
            per_second,
            burst,
            shared: false,
        };
        (RateLimiter::new(&settings, Arc::new(clock.clone())), clock)
    }

    #[test]
    fn burst_then_refill() {
        let (limiter, clock) = limiter(1, 2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(limiter.check(ip), Ok(()));
        assert_eq!(limiter.check(ip), Ok(()));
        assert_eq!(limiter.check(ip), Err(1));
        // Another address has its own bucket.
        assert_eq!(limiter.check([10, 0, 0, 2].into()), Ok(()));
        clock.advance(1);
        assert_eq!(limiter.check(ip), Ok(()));
        assert_eq!(limiter.check(ip), Err(1));
    }

    #[test]
    fn the_wait_is_whole_seconds_until_a_request_is_allowed() {
        let (limiter, _clock) = limiter(1, 1);
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(limiter.check(ip), Ok(()));
        assert_eq!(limiter.check(ip), Err(1));
        let (slow, _clock) = limiter_per_minute();
        assert_eq!(slow.check(ip), Ok(()));
        assert!(
            matches!(slow.check(ip), Err(wait) if wait > 1),
            "{:?}",
            slow.check(ip)
        );
    }

    /// A limit slower than one per second: `per_second` is whole, so a burst of 1 at 1/s then a bucket that
    /// has not refilled after 0 s.
    fn limiter_per_minute() -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new();
        let mut limiter = limiter(1, 1).0;
        limiter.buckets = Some(Gcra::dashmap_with_clock(
            Quota::per_minute(NonZeroU32::MIN),
            GovernorTime(Arc::new(clock.clone())),
        ));
        limiter.clock = Arc::new(clock.clone());
        (limiter, clock)
    }

    /// Rotating through one's own /64 or writing one's IPv4 address as IPv6 does not earn a fresh bucket.
    #[test]
    fn ipv6_shares_its_64_and_mapped_ipv4_is_ipv4() {
        let (limiter, _clock) = limiter(1, 2);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(limiter.check(ip("2001:db8:0:7::1")), Ok(()));
        assert_eq!(limiter.check(ip("2001:db8:0:7:ffff:ffff:ffff:ffff")), Ok(()));
        assert_eq!(limiter.check(ip("2001:db8:0:7:1234::")), Err(1));
        assert_eq!(limiter.check(ip("2001:db8:0:8::1")), Ok(()));
        assert_eq!(limiter.check(ip("198.51.100.1")), Ok(()));
        assert_eq!(limiter.check(ip("::ffff:198.51.100.1")), Ok(()));
        assert_eq!(limiter.check(ip("198.51.100.1")), Err(1));
        // Neighbouring IPv4 addresses are different clients.
        assert_eq!(limiter.check(ip("198.51.100.2")), Ok(()));
    }

    #[test]
    fn off_by_default() {
        let limiter = RateLimiter::new(&RateLimitSettings::default(), Arc::new(ManualClock::new()));
        for _ in 0..1000 {
            assert_eq!(limiter.check([10, 0, 0, 1].into()), Ok(()));
        }
    }

    #[test]
    fn idle_buckets_are_swept() {
        let (limiter, clock) = limiter(1, 1);
        for i in 0..SWEEP_AT as u32 {
            assert_eq!(limiter.check(IpAddr::from(i.to_be_bytes())), Ok(()));
        }
        clock.advance(2);
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.check([192, 0, 2, 1].into());
        }
        let buckets = limiter.buckets.as_ref().map_or(usize::MAX, Buckets::len);
        assert!(buckets < SWEEP_AT, "{buckets} buckets kept");
    }

    #[test]
    fn shared_window_and_limit() {
        let counts = |per_second, burst| {
            let shared = SharedCounts::new(&RateLimitSettings {
                per_second,
                burst,
                shared: true,
            });
            (shared.window, shared.limit)
        };
        assert_eq!(counts(1, 30), (30, 30));
        assert_eq!(counts(10, 20), (2, 20));
        assert_eq!(counts(100, 1), (1, 100));
        assert_eq!(counts(3, 5), (2, 6));
    }

    #[test]
    fn shared_counts_hold_the_window_between_flushes() {
        let shared = SharedCounts::new(&RateLimitSettings {
            per_second: 1,
            burst: 3,
            shared: true,
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..3 {
            assert_eq!(shared.take(ip, 100), Ok(()));
        }
        assert_eq!(shared.take(ip, 101), Err(1));
        // Being written, the requests still count; read back with another node's 2, the total holds.
        let flush = shared.start_flush(101);
        assert_eq!(flush.written, vec![(ip, vec![(100, 3)])]);
        assert_eq!(flush.read, vec![ip]);
        assert_eq!(shared.take(ip, 101), Err(1));
        shared.finish_flush(flush, &HashMap::from([(ip.to_string(), 5)]));
        assert_eq!(shared.take(ip, 101), Err(1));
        // A failed flush gives its requests back to the next one.
        let flush = shared.start_flush(101);
        assert_eq!(flush.written, vec![(ip, vec![])]);
        shared.abandon_flush(flush);
        // Once the window has passed and another flush read a smaller total, requests pass again.
        let flush = shared.start_flush(104);
        shared.finish_flush(flush, &HashMap::from([(ip.to_string(), 0)]));
        assert_eq!(shared.take(ip, 104), Ok(()));
        // An address not seen for a window is forgotten.
        let flush = shared.start_flush(104);
        shared.finish_flush(flush, &HashMap::from([(ip.to_string(), 1)]));
        assert_eq!(shared.tallies.len(), 1);
        // Still read back while in the window, though not checked.
        assert_eq!(shared.start_flush(106).read, vec![ip]);
        assert_eq!(shared.start_flush(107), Flush::default());
        assert!(shared.tallies.is_empty());
    }
}
