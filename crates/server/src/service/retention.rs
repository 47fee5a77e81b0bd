//! Retention: sessions that ended, or passed their maximum lifetime, more than `session.retention_seconds`
//! ago are deleted, and so are failed-login counters last changed more than `auth.lockout.max_seconds` ago and
//! password-check slots left by a node that stopped mid-check (older than
//! [`lockout::ABANDONED_AFTER_SECONDS`], when they stopped counting).
//! Without it every login would stay stored for ever: an integration that logs in once per call adds
//! millions of rows a day.
//!
//! Deletes run at most [`PURGE_BATCH`] rows per statement, through indexes on the columns compared, until a
//! statement deletes fewer. On PostgreSQL each batch is a transaction that first takes a transaction-level
//! advisory lock ([`PURGE_LOCK`]), so one node purges at a time (two would pick the same rows and wait on each
//! other's row locks), and a transaction pooler in front of the database keeps working; SQLite has one writer
//! anyway. `crm-auth serve` runs a round every `session.purge_interval_seconds`
//! on a thread of its own ([`PurgeJob`]); `crm-auth purge` runs one at once.

use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use diesel::prelude::*;

use crate::db::session::{self, PastRetention};
use crate::db::{DbConnection, PURGE_BATCH, login_check, login_failure};
use crate::error::ApiError;
use crate::service::lockout;
use crate::settings::Settings;
use crate::state::AppState;

/// The PostgreSQL advisory lock key of the purge ("crm-purg" in ASCII), the same on every node.
pub const PURGE_LOCK: i64 = 0x6372_6d2d_7075_7267;

/// Rows last valid before these times are past retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Sessions that ended, or whose maximum lifetime ended, before this are deleted.
    pub sessions: i64,
    /// Failed-login counters last changed before this are deleted.
    pub login_failures: i64,
    /// Password-check slots taken at or before this are deleted.
    pub login_checks: i64,
}

impl Cutoffs {
    /// The cutoffs at `now` under `settings`: `now` less the retention, and less the longest lockout.
    pub fn at(settings: &Settings, now: i64) -> Cutoffs {
        let before = |seconds: u64| now.saturating_sub(i64::try_from(seconds).unwrap_or(i64::MAX));
        Cutoffs {
            sessions: before(settings.session.retention_seconds),
            login_failures: before(settings.auth.lockout.max_seconds),
            login_checks: now.saturating_sub(lockout::ABANDONED_AFTER_SECONDS),
        }
    }
}

/// Rows a purge deleted, or a dry run found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Sessions.
    pub sessions: u64,
    /// Failed-login records: counters, and abandoned password-check slots.
    pub login_failures: u64,
}

/// How a purge round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything past retention is gone.
    Done(Purged),
    /// Another node held the purge lock, so this one left the rest to it after deleting what it says.
    Busy(Purged),
    /// The server is stopping; the round ended between two batches.
    Stopped(Purged),
}

impl Outcome {
    /// What the round deleted, however it ended.
    pub fn purged(self) -> Purged {
        match self {
            Outcome::Done(p) | Outcome::Busy(p) | Outcome::Stopped(p) => p,
        }
    }
}

/// What a purge does when another node holds the purge lock (PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contention {
    /// End the round: the other node is doing the work (the background job).
    Skip,
    /// Wait for the lock, batch by batch (`crm-auth purge`, which was asked to purge now).
    Wait,
}

/// One kind of delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Sessions past retention for this reason.
    Sessions(PastRetention),
    /// Stale failed-login counters.
    LoginFailures,
    /// Abandoned password-check slots.
    AbandonedChecks,
}

impl Batch {
    /// Every kind, in the order a round runs them.
    const ALL: [Batch; 4] = [
        Batch::Sessions(PastRetention::Lifetime),
        Batch::Sessions(PastRetention::Ended),
        Batch::LoginFailures,
        Batch::AbandonedChecks,
    ];
}

/// Runs one batch: deletes at most [`PURGE_BATCH`] rows. `None` when, on PostgreSQL, another node holds the
/// purge lock and `contention` says to skip. On SQLite the statement runs in the caller's transaction (the
/// group commit's) or on its own.
fn run_batch(
    conn: &mut DbConnection,
    batch: Batch,
    cutoffs: Cutoffs,
    contention: Contention,
) -> QueryResult<Option<usize>> {
    let delete = |conn: &mut DbConnection| match batch {
        Batch::Sessions(why) => session::delete_past_retention(conn, why, cutoffs.sessions),
        Batch::LoginFailures => login_failure::delete_stale(conn, cutoffs.login_failures),
        Batch::AbandonedChecks => login_check::delete_abandoned(conn, cutoffs.login_checks),
    };
    match conn {
        DbConnection::Sqlite(_) => delete(conn).map(Some),
        DbConnection::Postgres(_) => conn.transaction(|conn| {
            if let DbConnection::Postgres(pg) = conn
                && !lock(pg, contention)?
            {
                return Ok(None);
            }
            delete(conn).map(Some)
        }),
    }
}

/// Takes the purge lock until the end of the current transaction; whether it was taken (always, when
/// waiting).
fn lock(conn: &mut diesel::PgConnection, contention: Contention) -> QueryResult<bool> {
    use diesel::sql_types::Bool;

    match contention {
        Contention::Skip => diesel::select(diesel::dsl::sql::<Bool>(&format!(
            "pg_try_advisory_xact_lock({PURGE_LOCK})"
        )))
        .get_result(conn),
        Contention::Wait => {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({PURGE_LOCK})")).execute(conn)?;
            Ok(true)
        }
    }
}

/// Runs every kind of batch until a statement deletes fewer than [`PURGE_BATCH`] rows, each through `exec`,
/// calling `deleted` after each batch; asks `stopping` between batches.
fn purge_with<E>(
    mut exec: impl FnMut(Batch) -> Result<Option<usize>, E>,
    mut deleted: impl FnMut(Batch, usize),
    stopping: impl Fn() -> bool,
) -> Result<Outcome, E> {
    let full = usize::try_from(PURGE_BATCH).unwrap_or(usize::MAX);
    let mut purged = Purged::default();
    for batch in Batch::ALL {
        loop {
            if stopping() {
                return Ok(Outcome::Stopped(purged));
            }
            let Some(count) = exec(batch)? else {
                return Ok(Outcome::Busy(purged));
            };
            let total = match batch {
                Batch::Sessions(_) => &mut purged.sessions,
                Batch::LoginFailures | Batch::AbandonedChecks => &mut purged.login_failures,
            };
            *total += u64::try_from(count).unwrap_or(u64::MAX);
            deleted(batch, count);
            if count < full {
                break;
            }
        }
    }
    Ok(Outcome::Done(purged))
}

/// Purges on one connection, each batch committed on its own (`crm-auth purge`). Do not call it inside a
/// transaction: on SQLite that would hold the writer for the whole purge.
pub fn purge(conn: &mut DbConnection, cutoffs: Cutoffs, contention: Contention) -> QueryResult<Outcome> {
    purge_with(
        |batch| run_batch(conn, batch, cutoffs, contention),
        |_, _| {},
        || false,
    )
}

/// What [`purge`] would delete now, deleting nothing (`crm-auth purge --dry-run`).
pub fn count(conn: &mut DbConnection, cutoffs: Cutoffs) -> QueryResult<Purged> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Purged {
        sessions: count(session::count_past_retention(conn, cutoffs.sessions)?),
        login_failures: count(login_failure::count_stale(conn, cutoffs.login_failures)?)
            + count(login_check::count_abandoned(conn, cutoffs.login_checks)?),
    })
}

/// One round of the background job at the state's `now`: each batch goes through the store's write path
/// (on SQLite a job of the group commit, so requests' writes interleave with the batches), skipping the round
/// when another node purges. Counts deleted sessions in `crm_auth_sessions_purged_total`. Blocks: call it on
/// a thread of its own.
pub fn purge_round(state: &AppState, stopping: impl Fn() -> bool) -> Result<Outcome, ApiError> {
    let cutoffs = Cutoffs::at(&state.settings, state.clock.now());
    purge_with(
        |batch| {
            state
                .store
                .write_blocking(move |conn| Ok(run_batch(conn, batch, cutoffs, Contention::Skip)?))
        },
        |batch, count| {
            if let Batch::Sessions(_) = batch {
                state.metrics.sessions_purged(count);
            }
        },
        stopping,
    )
}

/// The background purge of `crm-auth serve`: a round every `session.purge_interval_seconds` on a thread of its
/// own. Dropping it stops the thread, at once when idle or after the batch in progress.
#[derive(Debug)]
pub struct PurgeJob {
    /// Dropped with the job: the thread sees the channel close.
    _stop: mpsc::Sender<()>,
}

impl PurgeJob {
    /// Starts the thread.
    pub fn start(state: AppState) -> std::io::Result<PurgeJob> {
        let (stop, stopped) = mpsc::channel();
        std::thread::Builder::new()
            .name("purge".into())
            .spawn(move || run_job(&state, &stopped))?;
        Ok(PurgeJob { _stop: stop })
    }
}

/// The job's loop: waits an interval (or for the stop), runs a round, and again.
fn run_job(state: &AppState, stop: &mpsc::Receiver<()>) {
    let interval = Duration::from_secs(state.settings.session.purge_interval_seconds);
    let stopping = || !matches!(stop.try_recv(), Err(TryRecvError::Empty));
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match purge_round(state, stopping) {
            Ok(Outcome::Stopped(_)) => return,
            Ok(Outcome::Busy(purged)) => {
                report(purged);
                log::debug!("purge: another node holds the purge lock; this round is left to it");
            }
            Ok(Outcome::Done(purged)) => report(purged),
            // The next round tries again; a database that is away is what the health check reports.
            Err(e) => log::warn!(error:% = e; "purge failed"),
        }
    }
}

/// Logs what a round deleted, when it deleted anything.
fn report(purged: Purged) {
    if purged != Purged::default() {
        log::info!(
            sessions = purged.sessions,
            login_failures = purged.login_failures;
            "purged past retention"
        );
    }
}
