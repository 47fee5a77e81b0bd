//! Failed-login lockout. Only a password check that fails counts; a success resets the count. From
//! `auth.lockout.threshold` consecutive failures on, attempts are refused unchecked for a delay that doubles per
//! further failure.
//!
//! Parallel wrong guesses must not check more passwords than the threshold, on one node or many, so a check
//! first takes a *slot* of its organisation + username in the database (`login_checks`): at most
//! `threshold - failures` slots are taken at once (one once the account has been locked and its delay has
//! passed), so even if every check in flight fails, the failures stop at the threshold. Taking a slot is one
//! write transaction that first locks the account's counter row, then counts the live slots and inserts its
//! own in one statement, so takers are serialised per account across nodes. Ending a check frees the slot and
//! records the failure (a transaction that locks the counter first) or resets the count (one statement on
//! PostgreSQL, which keeps the counter row for the next login to lock). A slot older than
//! [`ABANDONED_AFTER_SECONDS`] was left by a node that stopped and no longer counts; the retention purge
//! deletes it.
//!
//! Logins that find every slot taken wait, up to `auth.lockout.max_wait_ms`, then get `UNAVAILABLE`. On each
//! node they wait in a fair queue per account (a semaphore of `threshold` permits), so only the few at its head
//! ask the database, and 256 callers of one account do not poll it 256 times over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crm_auth_core::new_id;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::db::login_check::{self, LoginCheck};
use crate::db::login_failure::{self, LoginFailure};
use crate::db::{DbConnection, Store};
use crate::error::ApiError;
use crate::settings::LockoutSettings;

/// A slot taken this long ago (seconds) belongs to a node that stopped mid-check: it no longer counts, and the
/// retention purge deletes it. A check holds its slot for one hash and two short transactions.
pub const ABANDONED_AFTER_SECONDS: i64 = 30;

/// The first pause before asking the database again when every slot is taken (by other nodes, or because
/// failures shrank the allowance); it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(5);

/// The longest pause between two attempts to take a slot.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(80);

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

/// Until when an account with `failures` consecutive failures at `now` is locked; 0 when it is not.
fn locked_until(failures: i64, now: i64, settings: &LockoutSettings) -> i64 {
    match delay_seconds(failures, settings) {
        0 => 0,
        delay => now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX)),
    }
}

/// An organisation + username, as folded by `db::name_key`.
type Account = (String, String);

/// This node's side of the lockout: a fair queue for each account with logins in progress, dropped when
/// its last login ends. Lives in `AppState`.
#[derive(Debug)]
pub struct Lockout {
    /// The settings.
    settings: LockoutSettings,
    /// The queues by account.
    queues: Mutex<HashMap<Account, Arc<Queue>>>,
}

/// One account's queue on this node.
#[derive(Debug)]
struct Queue {
    /// `threshold` permits: no more of this node's logins of the account ask for a slot at once. Fair, so
    /// logins take their turns in arrival order.
    turns: Arc<Semaphore>,
    /// Until when the database said the account is locked (unix seconds), so that the queue behind a
    /// refused login is refused without asking again. A lock is never lifted early: only a successful
    /// check resets the count, and none runs while the account is locked.
    locked_until: AtomicI64,
}

impl Lockout {
    /// An empty set of queues.
    pub fn new(settings: &LockoutSettings) -> Lockout {
        Lockout {
            settings: settings.clone(),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// How many accounts have logins in progress on this node.
    pub fn accounts_in_progress(&self) -> usize {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Joins the account's queue, creating it if this is the account's only login in progress here.
    fn join(&self, account: Account) -> Place<'_> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.entry(account.clone()).or_insert_with(|| {
            let permits = usize::try_from(self.settings.threshold)
                .unwrap_or(Semaphore::MAX_PERMITS)
                .min(Semaphore::MAX_PERMITS);
            Arc::new(Queue {
                turns: Arc::new(Semaphore::new(permits)),
                locked_until: AtomicI64::new(0),
            })
        });
        Place {
            lockout: self,
            account,
            queue: Some(Arc::clone(queue)),
            turn: None,
        }
    }

    /// Waits for a slot of this organisation + username for at most `auth.lockout.max_wait_ms` and takes it.
    ///
    /// `TooManyAttempts` when the account is locked at `now`, `Busy` when no slot came free in time; then
    /// nothing was counted. The returned [`Check`] frees its slot when it ends, or when it is dropped.
    pub async fn begin(
        &self,
        store: &Store,
        organisation_key: &str,
        username_key: &str,
        now: i64,
    ) -> Result<Check<'_>, ApiError> {
        let mut place = self.join((organisation_key.to_owned(), username_key.to_owned()));
        place.refuse_if_locked(now)?;
        // The deadline only ever interrupts waiting, never a transaction: a slot taken by a transaction
        // whose answer was abandoned would stay taken until it counted as abandoned.
        let deadline = tokio::time::sleep(Duration::from_millis(self.settings.max_wait_ms));
        tokio::pin!(deadline);
        tokio::select! {
            biased;
            turn = place.wait() => turn?,
            () = &mut deadline => return Err(ApiError::Busy),
        }
        place.refuse_if_locked(now)?;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let (org, user, settings) = (
                organisation_key.to_owned(),
                username_key.to_owned(),
                self.settings.clone(),
            );
            let taken = store
                .transaction(move |conn| take_slot(conn, &org, &user, now, &settings))
                .await?;
            match taken {
                Taken::Slot { id } => {
                    return Ok(Check {
                        place,
                        slot: Slot {
                            store: store.clone(),
                            organisation_key: organisation_key.to_owned(),
                            username_key: username_key.to_owned(),
                            id,
                            held: true,
                        },
                    });
                }
                Taken::Locked { until } => {
                    place.note_lock(until);
                    return Err(too_many_attempts(until, now));
                }
                Taken::Full => {
                    tokio::select! {
                        biased;
                        () = tokio::time::sleep(pause) => {}
                        () = &mut deadline => return Err(ApiError::Busy),
                    }
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
        }
    }
}

/// `TooManyAttempts` for an account locked until `until`, seen at `now`.
fn too_many_attempts(until: i64, now: i64) -> ApiError {
    ApiError::TooManyAttempts {
        retry_after: u64::try_from(until.saturating_sub(now)).unwrap_or(1),
    }
}

/// A login's place in its account's queue on this node, then its turn. Leaving (on drop) removes the queue
/// once no login of the account is left in it.
struct Place<'a> {
    /// Whose queues.
    lockout: &'a Lockout,
    /// Which queue.
    account: Account,
    /// The queue; taken out only when leaving.
    queue: Option<Arc<Queue>>,
    /// The permit, once it is this login's turn.
    turn: Option<OwnedSemaphorePermit>,
}

impl Place<'_> {
    /// Waits for this login's turn. The wait's future holds the queue and is owned by this borrow, so it is
    /// gone before the place is dropped.
    async fn wait(&mut self) -> Result<(), ApiError> {
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| ApiError::Internal("a login left its queue before its turn".into()))?;
        let turn = Arc::clone(&queue.turns)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal("a login queue was closed".into()))?;
        self.turn = Some(turn);
        Ok(())
    }

    /// `TooManyAttempts` when this node already knows the account to be locked at `now`.
    fn refuse_if_locked(&self, now: i64) -> Result<(), ApiError> {
        let until = self
            .queue
            .as_ref()
            .map_or(0, |q| q.locked_until.load(Ordering::Relaxed));
        if now < until {
            return Err(too_many_attempts(until, now));
        }
        Ok(())
    }

    /// Remembers that the account is locked until `until`.
    fn note_lock(&self, until: i64) {
        if let Some(queue) = &self.queue {
            queue.locked_until.fetch_max(until, Ordering::Relaxed);
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        // The turn goes first, then the queue is let go of under the lock that `join` takes, so the last login
        // to leave sees only the map's reference besides its own and removes the queue.
        drop(self.turn.take());
        let mut queues = self.lockout.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = self.queue.take()
            && Arc::strong_count(&queue) == 2
        {
            queues.remove(&self.account);
        }
    }
}

/// A slot in the database; freed (without counting anything) by a task of its own if the check is dropped
/// before it ends, as when the client goes away mid-check.
struct Slot {
    /// Where it lives.
    store: Store,
    /// Its account.
    organisation_key: String,
    /// Its account.
    username_key: String,
    /// Its id.
    id: String,
    /// Whether it is still taken.
    held: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (org, user, id) = (
            std::mem::take(&mut self.organisation_key),
            std::mem::take(&mut self.username_key),
            std::mem::take(&mut self.id),
        );
        let store = self.store.clone();
        // Without a runtime (shutting down) the slot is left to count as abandoned after 30 s.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let freed = store
                    .write(move |conn| Ok(login_check::delete(conn, &org, &user, &id)?))
                    .await;
                if let Err(e) = freed {
                    log::warn!(error:% = e; "a password-check slot stays taken until it counts as abandoned");
                }
            });
        }
    }
}

/// A password check in progress: its turn on this node and its slot in the database.
pub struct Check<'a> {
    /// Held until the check ends.
    place: Place<'a>,
    /// Freed when the check ends.
    slot: Slot,
}

impl Check<'_> {
    /// Ends the check in one transaction: frees the slot and resets the count if `passed`, else counts one
    /// more failure (locking the account from the threshold on). Returns the count after it.
    pub async fn end(mut self, passed: bool, now: i64) -> Result<i64, ApiError> {
        let (org, user, id) = (
            self.slot.organisation_key.clone(),
            self.slot.username_key.clone(),
            self.slot.id.clone(),
        );
        let settings = self.place.lockout.settings.clone();
        let store = &self.slot.store;
        let failures = if passed {
            // On PostgreSQL the common case is one statement instead of a transaction of three; on SQLite
            // `write` and `transaction` are the same group commit.
            store
                .write(move |conn| match conn {
                    DbConnection::Postgres(pg) => {
                        login_check::delete_and_reset(pg, &org, &user, &id, now)?;
                        Ok(0)
                    }
                    DbConnection::Sqlite(_) => end_check(conn, &org, &user, &id, passed, now, &settings),
                })
                .await?
        } else {
            store
                .transaction(move |conn| end_check(conn, &org, &user, &id, passed, now, &settings))
                .await?
        };
        self.slot.held = false;
        let until = locked_until(failures, now, &self.place.lockout.settings);
        if until > 0 {
            self.place.note_lock(until);
        }
        Ok(failures)
    }
}

/// What an attempt to take a slot found.
enum Taken {
    /// A slot.
    Slot {
        /// The slot's id.
        id: String,
    },
    /// The account is locked until then.
    Locked {
        /// Unix seconds.
        until: i64,
    },
    /// Every slot the account's failures leave is taken.
    Full,
}

/// Takes a slot of this organisation + username at `now` if one is free. Run it in one transaction.
fn take_slot(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    now: i64,
    settings: &LockoutSettings,
) -> Result<Taken, ApiError> {
    let counter = login_failure::lock(conn, organisation_key, username_key, now)?;
    let threshold = i64::from(settings.threshold);
    let allowed = if counter.failures < threshold {
        threshold - counter.failures
    } else if now < counter.locked_until {
        return Ok(Taken::Locked {
            until: counter.locked_until,
        });
    } else {
        // Locked before and the delay has passed: one check at a time, each failure locking again.
        1
    };
    let id = new_id();
    let row = LoginCheck {
        organisation_key: organisation_key.to_owned(),
        username_key: username_key.to_owned(),
        id: id.clone(),
        taken_at: now,
    };
    let abandoned = now.saturating_sub(ABANDONED_AFTER_SECONDS);
    if !login_check::take_if_room(conn, &row, abandoned, allowed)? {
        return Ok(Taken::Full);
    }
    Ok(Taken::Slot { id })
}

/// Frees the slot `id` and resets the count (`passed`) or counts one more failure. Run it in one
/// transaction, so that a login taking a slot sees both or neither. Returns the count after it.
fn end_check(
    conn: &mut DbConnection,
    organisation_key: &str,
    username_key: &str,
    id: &str,
    passed: bool,
    now: i64,
    settings: &LockoutSettings,
) -> Result<i64, ApiError> {
    // The counter is locked first, as when a slot is taken.
    let counter = login_failure::lock(conn, organisation_key, username_key, now)?;
    login_check::delete(conn, organisation_key, username_key, id)?;
    if passed {
        login_failure::delete(conn, organisation_key, username_key)?;
        return Ok(0);
    }
    let failures = counter.failures.saturating_add(1);
    login_failure::update(
        conn,
        &LoginFailure {
            failures,
            locked_until: locked_until(failures, now, settings),
            updated_at: now,
            ..counter
        },
    )?;
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LockoutSettings {
        LockoutSettings {
            threshold: 5,
            max_seconds: 900,
            max_wait_ms: 5_000,
        }
    }

    #[test]
    fn delay_starts_at_one_second_and_doubles_to_the_cap() {
        let s = settings();
        assert_eq!(delay_seconds(4, &s), 0);
        assert_eq!(delay_seconds(5, &s), 1);
        assert_eq!(delay_seconds(6, &s), 2);
        assert_eq!(delay_seconds(9, &s), 16);
        assert_eq!(delay_seconds(15, &s), 900);
        assert_eq!(delay_seconds(i64::MAX, &s), 900);
        assert_eq!(locked_until(4, 100, &s), 0);
        assert_eq!(locked_until(6, 100, &s), 102);
    }

    /// A queue lives while a login of its account is in it, and goes with the last one, even one that
    /// gave up waiting.
    #[tokio::test]
    async fn queues_go_with_their_last_login() {
        let lockout = Lockout::new(&LockoutSettings {
            threshold: 1,
            ..settings()
        });
        let account = || ("acme".to_owned(), "alice".to_owned());
        let mut first = lockout.join(account());
        assert!(first.wait().await.is_ok());
        let mut second = lockout.join(account());
        let waited = tokio::time::timeout(Duration::from_millis(10), second.wait()).await;
        assert!(waited.is_err(), "one permit, taken by the first");
        assert_eq!(lockout.accounts_in_progress(), 1);
        drop(first);
        assert_eq!(lockout.accounts_in_progress(), 1);
        drop(second);
        assert_eq!(lockout.accounts_in_progress(), 0);
        let third = lockout.join(account());
        third.note_lock(200);
        assert!(matches!(
            third.refuse_if_locked(199),
            Err(ApiError::TooManyAttempts { retry_after: 1 })
        ));
        assert!(third.refuse_if_locked(200).is_ok());
    }
}
