//! What the two batching threads share: how a batch is taken from a queue, and which queue it came from.
//!
//! Both the SQLite group commit and the PostgreSQL coalescer serve whatever has queued since they last looked,
//! without waiting for a batch to fill: under light load a batch is a single request.

use std::sync::mpsc;

/// The most requests one batch takes; more wait for the next one.
pub const MAX_BATCH: usize = 256;

/// A batching queue, the `queue` label of `crm_auth_db_batch_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// PostgreSQL's coalesced lookups.
    Read,
    /// PostgreSQL's coalesced inserts and rotations.
    Write,
    /// SQLite's group commit.
    Commit,
}

impl Queue {
    /// Every queue, in label order.
    pub const ALL: [Queue; 3] = [Queue::Read, Queue::Write, Queue::Commit];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Queue::Read => "read",
            Queue::Write => "write",
            Queue::Commit => "commit",
        }
    }
}

/// Waits for the next request, runs `prepare` (which may wait as well, for a connection say), then takes every
/// request queued meanwhile behind the first, up to [`MAX_BATCH`]. Requests that arrive while the thread
/// waits for its connection so join the batch instead of waiting for the next one. `None` once every sender
/// is gone.
pub fn next<T, P>(queue: &mpsc::Receiver<T>, prepare: impl FnOnce() -> P) -> Option<(P, Vec<T>)> {
    let first = queue.recv().ok()?;
    let prepared = prepare();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some((prepared, batch))
}
