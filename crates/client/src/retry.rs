//! When a failed call is repeated, and after how long: only where repeating cannot do harm, with bounded
//! exponential backoff.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::time::Duration;

use crm_auth_core::ErrorCode;

use crate::Error;
use crate::error::TransportKind;

/// First backoff delay.
const BASE_DELAY: Duration = Duration::from_millis(100);

/// Longest backoff delay.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Longest `Retry-After` the client waits out by itself; a longer one is handed to the caller.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Which failures an endpoint may repeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Calls that change nothing, or whose repetition the server recognises (validate, health, release, and
    /// refresh, whose reuse interval hands a repeated refresh the same new token): `UNAVAILABLE` answers and
    /// transport failures other than a timeout once the request was sent or a host name that does not resolve.
    /// After such a timeout the server may still be working on the request, and a refresh repeated past the
    /// reuse interval would end the session.
    Idempotent,
    /// Logins: only a refused connection, since then the request never reached the server. Anything else might
    /// count a failed attempt towards the lockout or open a second session.
    ConnectionRefused,
}

/// How long to wait before attempt `retry + 1` after `err`, or `None` when `err` must not be repeated.
///
/// `retry` counts the retries already made, from 0.
pub(crate) fn delay(policy: Policy, err: &Error, retry: u32) -> Option<Duration> {
    match (policy, err) {
        (Policy::Idempotent, Error::Api { retry_after, .. })
            if err.code() == Some(ErrorCode::Unavailable) =>
        {
            match retry_after {
                Some(wait) if *wait > MAX_RETRY_AFTER => None,
                Some(wait) => Some(*wait),
                None => Some(backoff(retry)),
            }
        }
        (Policy::Idempotent, Error::Transport { kind, .. }) => match kind {
            // After a timeout the server may still be working on the request; a name that does not resolve
            // will not resolve in a second either.
            TransportKind::Timeout | TransportKind::NameNotResolved | TransportKind::Build => None,
            _ => Some(backoff(retry)),
        },
        (
            Policy::ConnectionRefused,
            Error::Transport {
                kind: TransportKind::ConnectionRefused,
                ..
            },
        ) => Some(backoff(retry)),
        _ => None,
    }
}

/// The backoff before retry number `retry` (from 0): 100 ms doubling up to 2 s, each delay drawn at random from
/// its upper half so clients that failed together do not come back together.
pub(crate) fn backoff(retry: u32) -> Duration {
    let ceiling = BASE_DELAY
        .saturating_mul(2u32.saturating_pow(retry))
        .min(MAX_DELAY);
    let half = ceiling / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = match nanos {
        0 => 0,
        n => random_u64() % n,
    };
    half + Duration::from_nanos(jitter)
}

/// A random number without a dependency: `RandomState` is seeded from the operating system's randomness.
fn random_u64() -> u64 {
    RandomState::new().hash_one(0u8)
}

#[cfg(test)]
mod tests {
    use crm_auth_core::Status;

    use super::*;

    fn api(code: ErrorCode, retry_after: Option<u64>) -> Error {
        Error::Api {
            status: Status::error(code, "m", ""),
            http_status: code.http_status(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn backoff_doubles_within_bounds_and_caps_at_two_seconds() {
        for retry in 0..40 {
            let ceiling = Duration::from_millis(100 * 2u64.pow(retry.min(5))).min(MAX_DELAY);
            for _ in 0..20 {
                let d = backoff(retry);
                assert!(d >= ceiling / 2 && d <= ceiling, "retry {retry}: {d:?}");
            }
        }
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(u32::MAX) <= MAX_DELAY);
    }

    #[test]
    fn unavailable_is_repeated_only_where_safe() {
        let err = api(ErrorCode::Unavailable, None);
        assert!(delay(Policy::Idempotent, &err, 0).is_some());
        // A login answered UNAVAILABLE is not repeated by the client: the caller decides.
        assert_eq!(delay(Policy::ConnectionRefused, &err, 0), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_five_seconds() {
        let err = api(ErrorCode::Unavailable, Some(3));
        assert_eq!(delay(Policy::Idempotent, &err, 0), Some(Duration::from_secs(3)));
        let err = api(ErrorCode::Unavailable, Some(5));
        assert_eq!(delay(Policy::Idempotent, &err, 0), Some(Duration::from_secs(5)));
        let err = api(ErrorCode::Unavailable, Some(6));
        assert_eq!(delay(Policy::Idempotent, &err, 0), None);
    }

    #[test]
    fn refusals_are_never_repeated() {
        for &code in ErrorCode::ALL {
            if code == ErrorCode::Unavailable {
                continue;
            }
            for policy in [Policy::Idempotent, Policy::ConnectionRefused] {
                assert_eq!(delay(policy, &api(code, Some(1)), 0), None, "{code} {policy:?}");
            }
        }
        let decode = Error::Decode {
            http_status: 502,
            reason: "body is not json".to_owned(),
        };
        assert_eq!(delay(Policy::Idempotent, &decode, 0), None);
        assert_eq!(delay(Policy::Idempotent, &Error::invalid_argument("x"), 0), None);
    }
}
