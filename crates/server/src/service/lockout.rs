//! Failed-login lockout. An attempt is counted as a failure *before* its password is checked (and the count
//! forgotten if it succeeds), with a compare-and-set on the counter, so parallel attempts cannot check more
//! passwords than the threshold allows, on one node or many.

use crate::db::DbConnection;
use crate::db::login_failure::{self, LoginFailure};
use crate::error::{ApiError, is_unique_violation};
use crate::settings::LockoutSettings;

/// Compare-and-set rounds before giving up under extreme contention.
const MAX_ROUNDS: usize = 16;

/// How long attempts are refused after `failures` consecutive failures.
pub fn delay_seconds(failures: i64, settings: &LockoutSettings) -> u64 {
    let threshold = i64::from(settings.threshold);
    if failures < threshold {
        return 0;
    }
    let doublings = u32::try_from(failures - threshold).unwrap_or(u32::MAX).min(63);
    1u64.checked_shl(doublings)
        .unwrap_or(u64::MAX)
        .min(settings.max_seconds)
}

/// Reserves one attempt for this organisation + username at `now`: counts it as a failure and answers
/// `TooManyAttempts` while the counter is locked. Returns the failure count this attempt brings the counter
/// to, which stands if its password turns out wrong.
pub fn reserve_attempt(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    now: i64,
    settings: &LockoutSettings,
) -> Result<i64, ApiError> {
    let lock_for = |failures: i64| match delay_seconds(failures, settings) {
        0 => 0,
        d => now.saturating_add(i64::try_from(d).unwrap_or(i64::MAX)),
    };
    for _ in 0..MAX_ROUNDS {
        match login_failure::find(conn, organisation_key, username_key)? {
            None => {
                let row = LoginFailure {
                    organisation_key: organisation_key.to_owned(),
                    username_key: username_key.to_owned(),
                    failures: 1,
                    locked_until: lock_for(1),
                    updated_at: now,
                };
                match login_failure::create(conn, &row) {
                    Ok(()) => return Ok(1),
                    Err(e) if is_unique_violation(&e) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Some(current) => {
                if current.failures >= i64::from(settings.threshold) && now < current.locked_until {
                    let retry_after = u64::try_from(current.locked_until - now).unwrap_or(1);
                    return Err(ApiError::TooManyAttempts { retry_after });
                }
                let failures = current.failures + 1;
                let next = LoginFailure {
                    failures,
                    locked_until: lock_for(failures),
                    updated_at: now,
                    ..current
                };
                if login_failure::update_from(conn, next.failures - 1, &next)? {
                    return Ok(failures);
                }
            }
        }
    }
    Err(ApiError::TooManyAttempts { retry_after: 1 })
}

/// Forgets the failures after a successful login.
pub fn reset(conn: &mut DbConnection, organisation_key: &str, username_key: &str) -> Result<(), ApiError> {
    login_failure::delete(conn, organisation_key, username_key)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_starts_at_one_second_and_doubles_to_the_cap() {
        let s = LockoutSettings {
            threshold: 5,
            max_seconds: 900,
        };
        assert_eq!(delay_seconds(4, &s), 0);
        assert_eq!(delay_seconds(5, &s), 1);
        assert_eq!(delay_seconds(6, &s), 2);
        assert_eq!(delay_seconds(9, &s), 16);
        assert_eq!(delay_seconds(15, &s), 900);
        assert_eq!(delay_seconds(i64::MAX, &s), 900);
    }
}
