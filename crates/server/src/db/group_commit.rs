//! Group commit for SQLite.
//!
//! SQLite lets one writer in at a time and, with `synchronous = FULL`, makes every commit durable with an
//! fsync. With each request committing on its own connection, a burst of N logins costs N fsyncs in a row, and
//! the writers that find the lock taken poll for it with sleeps of up to 100 ms (SQLite's busy handler), so the
//! lock often sits free while they sleep. Here one thread owns a connection, takes every write job queued since
//! its last commit, runs each in its own savepoint inside one `BEGIN IMMEDIATE` transaction, commits once, and
//! only then answers each job: every answered write is as durable as before, and a burst shares one fsync. A job
//! that fails is rolled back to its savepoint and leaves the others alone.
//!
//! Inside the batch every job sees every write committed before the batch began (the transaction holds the
//! write lock from its first statement), so a check made in a job after its own write, such as a login's check
//! that the user was not disabled meanwhile, sees any revocation that could have missed the write.
//!
//! Only the SQLite store runs one: PostgreSQL lets writers run side by side and groups their commits itself.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, mpsc};

use diesel::connection::SimpleConnection as _;
use diesel::r2d2::R2D2Connection as _;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use tokio::sync::oneshot;

use super::batch::{self, Queue};
use super::{Backend, ConnectionManager, DbConnection, DbError};
use crate::metrics::Metrics;

/// Where write jobs go; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    /// The committing thread's queue.
    queue: mpsc::Sender<Box<dyn Queued>>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Opens the committing connection to the SQLite file at `path` and starts its thread, which ends when the
    /// last clone is dropped.
    pub fn start(path: &Path, metrics: &Arc<Metrics>) -> Result<GroupCommit, DbError> {
        let manager = ConnectionManager::new(Backend::Sqlite(path.to_owned()))?;
        let conn = manager.establish()?;
        let (queue, jobs) = mpsc::channel::<Box<dyn Queued>>();
        let metrics = Arc::clone(metrics);
        std::thread::Builder::new()
            .name("sqlite-commit".into())
            .spawn(move || serve(&manager, conn, &jobs, &metrics))
            .map_err(|e| DbError::Connect(e.to_string()))?;
        Ok(GroupCommit { queue })
    }

    /// Queues a write job for the next batch and returns at once: the answer arrives when the job's writes are
    /// durable (nobody's thread waits meanwhile). The job runs inside the batch's transaction, so it must not
    /// open a transaction itself.
    pub fn submit<T, E, F>(&self, job: F) -> Answer<T, E>
    where
        F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DieselError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        // A send fails only when the thread has stopped; the dropped reply then answers `closed`.
        let _ = self.queue.send(Box::new(Task { job, reply }));
        Answer(answer)
    }
}

/// The answer to a submitted job: its result once the batch has committed.
pub struct Answer<T, E>(oneshot::Receiver<Result<T, E>>);

impl<T, E: From<DieselError>> std::future::Future for Answer<T, E> {
    type Output = Result<T, E>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<T, E>> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or_else(|_| Err(closed().into())))
    }
}

impl<T, E: From<DieselError>> Answer<T, E> {
    /// Waits for the answer on this thread, for callers with a thread of their own (the purge job). Never call
    /// it on an async runtime's thread, which it would block.
    pub fn wait(self) -> Result<T, E> {
        self.0.blocking_recv().unwrap_or_else(|_| Err(closed().into()))
    }
}

/// The error a job gets when the committing thread is gone.
fn closed() -> DieselError {
    DieselError::DatabaseError(
        DatabaseErrorKind::ClosedConnection,
        Box::new("the SQLite commit thread has stopped".to_owned()),
    )
}

/// A queued job, its result type erased.
trait Queued: Send {
    /// Runs the job in its own savepoint of the open transaction. Returns how to answer it once the commit's
    /// outcome is known, and whether the transaction is still usable.
    fn run(self: Box<Self>, conn: &mut DbConnection) -> (Box<dyn Reply>, bool);
    /// Answers without running: the batch could not start.
    fn refuse(self: Box<Self>, failure: &Failure);
}

/// A job that ran, waiting for the commit.
trait Reply: Send {
    /// Sends the job's result if the batch committed, else the commit's failure.
    fn send(self: Box<Self>, committed: Result<(), &Failure>);
}

/// Why a batch did not commit, re-created as a diesel error for each of its jobs.
struct Failure {
    /// The database's error kind, when there is one.
    kind: DatabaseErrorKind,
    /// Its message.
    message: String,
}

impl Failure {
    fn of(e: &DieselError) -> Failure {
        match e {
            DieselError::DatabaseError(kind, info) => Failure {
                kind: *kind,
                message: info.message().to_owned(),
            },
            other => Failure {
                kind: DatabaseErrorKind::Unknown,
                message: other.to_string(),
            },
        }
    }

    fn error(&self) -> DieselError {
        DieselError::DatabaseError(self.kind, Box::new(self.message.clone()))
    }
}

/// A job and where its result goes.
struct Task<F, T, E> {
    /// The work.
    job: F,
    /// The waiting caller.
    reply: oneshot::Sender<Result<T, E>>,
}

/// A job's result, held until the commit.
struct Done<T, E> {
    /// What the job returned.
    outcome: Result<T, E>,
    /// The waiting caller.
    reply: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Queued for Task<F, T, E>
where
    F: FnOnce(&mut DbConnection) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: From<DieselError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut DbConnection) -> (Box<dyn Reply>, bool) {
        let Task { job, reply } = *self;
        let (outcome, healthy) = match conn.batch_execute("SAVEPOINT job") {
            Err(e) => (Err(e.into()), false),
            Ok(()) => {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(conn))).unwrap_or_else(|_| {
                    Err(DieselError::QueryBuilderError("a write job panicked".into()).into())
                });
                let end = if outcome.is_ok() {
                    conn.batch_execute("RELEASE job")
                } else {
                    conn.batch_execute("ROLLBACK TO job; RELEASE job")
                };
                match end {
                    Ok(()) => (outcome, true),
                    Err(e) => (Err(e.into()), false),
                }
            }
        };
        (Box::new(Done { outcome, reply }), healthy)
    }

    fn refuse(self: Box<Self>, failure: &Failure) {
        let _ = self.reply.send(Err(failure.error().into()));
    }
}

impl<T: Send, E: From<DieselError> + Send> Reply for Done<T, E> {
    fn send(self: Box<Self>, committed: Result<(), &Failure>) {
        let result = match committed {
            Ok(()) => self.outcome,
            Err(failure) => Err(failure.error().into()),
        };
        let _ = self.reply.send(result);
    }
}

/// The committing thread: batch after batch until every [`GroupCommit`] is dropped.
fn serve(
    manager: &ConnectionManager,
    conn: DbConnection,
    jobs: &mpsc::Receiver<Box<dyn Queued>>,
    metrics: &Metrics,
) {
    let mut conn = Some(conn);
    // The connection is opened again after one broke.
    while let Some((current, batch)) =
        batch::next(jobs, || conn.take().map_or_else(|| manager.establish(), Ok))
    {
        metrics.db_batch(Queue::Commit, batch.len());
        let mut current = match current {
            Ok(c) => c,
            Err(e) => {
                let failure = Failure {
                    kind: DatabaseErrorKind::ClosedConnection,
                    message: e.to_string(),
                };
                batch.into_iter().for_each(|job| job.refuse(&failure));
                continue;
            }
        };
        if commit(&mut current, batch) && !current.is_broken() {
            conn = Some(current);
        }
    }
}

/// Runs one batch in one transaction and answers its jobs. Returns whether the connection may be reused.
fn commit(conn: &mut DbConnection, batch: Vec<Box<dyn Queued>>) -> bool {
    if let Err(e) = conn.batch_execute("BEGIN IMMEDIATE") {
        let failure = Failure::of(&e);
        batch.into_iter().for_each(|job| job.refuse(&failure));
        return false;
    }
    let mut replies = Vec::with_capacity(batch.len());
    let mut healthy = true;
    for job in batch {
        if healthy {
            let (reply, ok) = job.run(conn);
            healthy = ok;
            replies.push(reply);
        } else {
            job.refuse(&Failure::of(&DieselError::RollbackTransaction));
        }
    }
    let committed = if healthy {
        conn.batch_execute("COMMIT")
    } else {
        Err(DieselError::RollbackTransaction)
    };
    match committed {
        Ok(()) => {
            replies.into_iter().for_each(|r| r.send(Ok(())));
            true
        }
        Err(e) => {
            let rolled_back = conn.batch_execute("ROLLBACK").is_ok();
            let failure = Failure::of(&e);
            replies.into_iter().for_each(|r| r.send(Err(&failure)));
            rolled_back
        }
    }
}
