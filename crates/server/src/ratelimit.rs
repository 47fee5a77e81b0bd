//! A token bucket per client address for the token endpoints (off unless `http.rate_limit.per_second` > 0).
//! An IPv4 client has a bucket of its own; an IPv6 client shares its /64's, the smallest block a site is
//! given, so one host cannot take a fresh bucket per request from its own 2^64 addresses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use crate::settings::RateLimitSettings;

/// Addresses tracked before idle buckets are swept.
const SWEEP_AT: usize = 10_000;

/// The limiter; one per server.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, f64)>>,
}

impl RateLimiter {
    /// A limiter with these settings.
    pub fn new(settings: &RateLimitSettings) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(settings.per_second),
            burst: f64::from(settings.burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `addr`'s bucket at time `now` (seconds, fractional). `Err` carries the
    /// seconds to wait.
    pub fn check(&self, addr: IpAddr, now: f64) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= SWEEP_AT {
            let full_after = self.burst / self.per_second;
            buckets.retain(|_, (_, last)| now - *last < full_after);
        }
        let (tokens, last) = buckets.entry(client_key(addr)).or_insert((self.burst, now));
        *tokens = (*tokens + (now - *last).max(0.0) * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_second).ceil().max(1.0) as u64)
        }
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

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(&RateLimitSettings {
            per_second: 1,
            burst: 2,
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert_eq!(limiter.check(ip, 100.0), Ok(()));
        assert_eq!(limiter.check(ip, 100.0), Ok(()));
        assert_eq!(limiter.check(ip, 100.0), Err(1));
        // Another address has its own bucket.
        assert_eq!(limiter.check([10, 0, 0, 2].into(), 100.0), Ok(()));
        assert_eq!(limiter.check(ip, 101.0), Ok(()));
    }

    /// Rotating through one's own /64 or writing one's IPv4 address as IPv6 does not earn a fresh bucket.
    #[test]
    fn ipv6_shares_its_64_and_mapped_ipv4_is_ipv4() {
        let limiter = RateLimiter::new(&RateLimitSettings {
            per_second: 1,
            burst: 2,
        });
        let ip = |text: &str| text.parse::<IpAddr>().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(limiter.check(ip("2001:db8:0:7::1"), 100.0), Ok(()));
        assert_eq!(
            limiter.check(ip("2001:db8:0:7:ffff:ffff:ffff:ffff"), 100.0),
            Ok(())
        );
        assert_eq!(limiter.check(ip("2001:db8:0:7:1234::"), 100.0), Err(1));
        assert_eq!(limiter.check(ip("2001:db8:0:8::1"), 100.0), Ok(()));
        assert_eq!(limiter.check(ip("198.51.100.1"), 100.0), Ok(()));
        assert_eq!(limiter.check(ip("::ffff:198.51.100.1"), 100.0), Ok(()));
        assert_eq!(limiter.check(ip("198.51.100.1"), 100.0), Err(1));
        // Neighbouring IPv4 addresses are different clients.
        assert_eq!(limiter.check(ip("198.51.100.2"), 100.0), Ok(()));
    }

    #[test]
    fn off_by_default() {
        let limiter = RateLimiter::new(&RateLimitSettings::default());
        for _ in 0..1000 {
            assert_eq!(limiter.check([10, 0, 0, 1].into(), 0.0), Ok(()));
        }
    }
}
