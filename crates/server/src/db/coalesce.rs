//! Coalesced statements for PostgreSQL.
//!
//! On PostgreSQL every statement is a round trip to a server process that shares the machine's cores, and the
//! statements the token endpoints make are small: validate's session lookup, a key login's key lookup and
//! session insert, refresh's read and compare-and-set. Per statement, the round trip and PostgreSQL's
//! per-statement work cost more than the rows. Here requests go to two queues, lookups and writes, and a
//! queue's thread takes every request queued since it last looked and serves all requests of one kind with one
//! statement: `= ANY($1)` for lookups, one multi-row `INSERT` for new sessions, one `UPDATE ... FROM
//! unnest(...)` for rotations. Nothing waits to fill a batch: a thread takes what is queued and goes, so under
//! light load a batch is a single request.
//!
//! Each request gets what its own statement would have given it:
//! - a write is an autocommitted statement, and its request is answered only after that commit, so an answer
//!   is as durable as before;
//! - a new session is re-checked after its commit, as a single login's is (one statement for the batch), and
//!   ended if its user, key, unit or organisation was revoked meanwhile: a revocation that committed before
//!   the re-check is seen by it, one that commits after the session's commit ends the session itself;
//! - one multi-row insert fails as a whole if one row fails, so then each row is inserted on its own and only
//!   the bad row's request gets the error;
//! - of several requests that rotate one session from the same generation exactly one is told it won, and
//!   every loser is answered after the winner's commit, so its next read sees the winner's write.
//!
//! Only the PostgreSQL store runs a coalescer: SQLite is in process (no round trips) and commits writes in
//! groups already (`group_commit`).

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};

use diesel::PgConnection;
use diesel::result::{Error as DieselError, QueryResult};
use tokio::sync::oneshot;

use super::api_key::{self, KeyWithOwner};
use super::batch::{self, Queue};
use super::session::{self, Rotation, Session, Standing};
use super::{DbConnection, Pool};
use crate::clock::Stopwatch;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Where a request's answer goes.
type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A queued request.
enum Request {
    /// A session by id.
    Session(String, Reply<Option<Session>>),
    /// A session by id, with its standing.
    Standing(String, Reply<Option<(Session, Standing)>>),
    /// An unrevoked key by digest, with its owner.
    Key(String, Reply<Option<KeyWithOwner>>),
    /// A new session to insert and re-check.
    Insert(Box<Session>, Reply<Session>),
    /// A compare-and-set on a session's generation.
    Rotate(Rotation, Reply<bool>),
}

/// The queues of coalesced statements, one for lookups and one for writes (so that a lookup never waits
/// behind a commit's fsync), each served by one thread; cheap to clone. The threads end when the last clone
/// is dropped.
///
/// One thread per queue makes the biggest batches: on 2 cores it served more validations, key logins and
/// refreshes than two or four (docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct Coalescer {
    /// Lookups.
    reads: mpsc::Sender<Request>,
    /// Inserts and rotations.
    writes: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl Coalescer {
    /// Starts the thread of each queue; a thread checks a connection out of `pool` for each batch. The pool
    /// must be PostgreSQL's.
    pub fn start(pool: &Pool, metrics: &Arc<Metrics>) -> std::io::Result<Coalescer> {
        Ok(Coalescer {
            reads: lane(Queue::Read, pool, metrics)?,
            writes: lane(Queue::Write, pool, metrics)?,
        })
    }

    /// The session with this id.
    pub async fn session(&self, id: String) -> Result<Option<Session>, ApiError> {
        self.ask(&self.reads, |reply| Request::Session(id, reply)).await
    }

    /// The session with this id and its standing.
    pub async fn session_with_standing(&self, id: String) -> Result<Option<(Session, Standing)>, ApiError> {
        self.ask(&self.reads, |reply| Request::Standing(id, reply)).await
    }

    /// The unrevoked key with this digest and its owner.
    pub async fn key_with_owner(&self, digest: String) -> Result<Option<KeyWithOwner>, ApiError> {
        self.ask(&self.reads, |reply| Request::Key(digest, reply)).await
    }

    /// Inserts a session and re-checks its standing after the commit; `INVALID_CREDENTIALS` if the re-check
    /// ended it.
    pub async fn insert(&self, row: Session) -> Result<Session, ApiError> {
        self.ask(&self.writes, |reply| Request::Insert(Box::new(row), reply))
            .await
    }

    /// Rotates a session from `from_gen`; whether this request won.
    pub async fn rotate(&self, rotation: Rotation) -> Result<bool, ApiError> {
        self.ask(&self.writes, |reply| Request::Rotate(rotation, reply))
            .await
    }

    async fn ask<T>(
        &self,
        queue: &mpsc::Sender<Request>,
        request: impl FnOnce(Reply<T>) -> Request,
    ) -> Result<T, ApiError> {
        let (reply, answer) = oneshot::channel();
        // A send fails only when every thread has stopped; the dropped reply then answers below.
        let _ = queue.send(request(reply));
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::Internal(
                "a coalesced statement was not answered".into(),
            ))
        })
    }
}

/// Starts a queue's thread.
fn lane(queue: Queue, pool: &Pool, metrics: &Arc<Metrics>) -> std::io::Result<mpsc::Sender<Request>> {
    let (sender, requests) = mpsc::channel();
    let (pool, metrics) = (pool.clone(), Arc::clone(metrics));
    std::thread::Builder::new()
        .name(format!("pg-{}", queue.as_str()))
        .spawn(move || serve(queue, &pool, &requests, &metrics))?;
    Ok(sender)
}

/// One queue's thread: batch after batch until every [`Coalescer`] is dropped.
fn serve(queue: Queue, pool: &Pool, requests: &mpsc::Receiver<Request>, metrics: &Metrics) {
    let checkout = || {
        let started = Stopwatch::start();
        let conn = super::checkout(pool);
        metrics.pool_waited(started.elapsed());
        conn
    };
    while let Some((conn, batch)) = batch::next(requests, checkout) {
        metrics.db_batch(queue, batch.len());
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                // The database did not answer within the pool's timeout: what queued meanwhile, beyond the
                // batch too, gets the same answer at once instead of after a whole timeout more.
                let e = ApiError::from(e);
                batch.into_iter().for_each(|request| request.fail(&e));
                requests.try_iter().for_each(|request| request.fail(&e));
                continue;
            }
        };
        // A panic drops the batch's replies, whose requests then answer INTERNAL_ERROR; the thread goes on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| run(&mut conn, batch)));
    }
}

/// The PostgreSQL connection inside `conn`: multi-row inserts and `unnest` rotations are PostgreSQL's.
fn postgres(conn: &mut DbConnection) -> QueryResult<&mut PgConnection> {
    match conn {
        DbConnection::Postgres(pg) => Ok(pg),
        DbConnection::Sqlite(_) => Err(DieselError::QueryBuilderError(
            "coalesced writes need PostgreSQL".into(),
        )),
    }
}

impl Request {
    fn fail(self, e: &ApiError) {
        // A caller that has gone away no longer wants its answer.
        let _ = match self {
            Request::Session(_, reply) => reply.send(Err(e.clone())).is_ok(),
            Request::Standing(_, reply) => reply.send(Err(e.clone())).is_ok(),
            Request::Key(_, reply) => reply.send(Err(e.clone())).is_ok(),
            Request::Insert(_, reply) => reply.send(Err(e.clone())).is_ok(),
            Request::Rotate(_, reply) => reply.send(Err(e.clone())).is_ok(),
        };
    }
}

/// Serves one batch: one statement per kind of request in it.
fn run(conn: &mut DbConnection, batch: Vec<Request>) {
    let mut sessions = Vec::new();
    let mut standings = Vec::new();
    let mut keys = Vec::new();
    let mut inserts = Vec::new();
    let mut rotations = Vec::new();
    for request in batch {
        match request {
            Request::Session(id, reply) => sessions.push((id, reply)),
            Request::Standing(id, reply) => standings.push((id, reply)),
            Request::Key(digest, reply) => keys.push((digest, reply)),
            Request::Insert(row, reply) => inserts.push((*row, reply)),
            Request::Rotate(rotation, reply) => rotations.push((rotation, reply)),
        }
    }
    if !sessions.is_empty() {
        lookup(sessions, |ids| session::find_many(conn, ids), |s| &s.id);
    }
    if !standings.is_empty() {
        lookup(
            standings,
            |ids| session::find_many_with_standing(conn, ids),
            |(s, _)| &s.id,
        );
    }
    if !keys.is_empty() {
        lookup(
            keys,
            |digests| api_key::find_many_active_with_owner(conn, digests),
            |k| &k.0.digest,
        );
    }
    if !inserts.is_empty() {
        insert(conn, inserts);
    }
    if !rotations.is_empty() {
        rotate(conn, rotations);
    }
}

/// Answers lookups by key with one statement: `find` loads the rows of many keys, `key_of` tells a row's key.
fn lookup<T: Clone>(
    pending: Vec<(String, Reply<Option<T>>)>,
    find: impl FnOnce(&[&str]) -> QueryResult<Vec<T>>,
    key_of: impl Fn(&T) -> &String,
) {
    let keys: Vec<&str> = pending.iter().map(|(key, _)| key.as_str()).collect();
    match find(&keys) {
        Ok(rows) => {
            let rows: HashMap<&String, &T> = rows.iter().map(|row| (key_of(row), row)).collect();
            for (key, reply) in pending {
                let _ = reply.send(Ok(rows.get(&key).map(|row| (*row).clone())));
            }
        }
        Err(e) => {
            let e = ApiError::from(e);
            for (_, reply) in pending {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Inserts new sessions in one statement (one by one if that fails), then re-checks the committed ones in one
/// statement and ends those whose standing fell meanwhile.
fn insert(conn: &mut DbConnection, pending: Vec<(Session, Reply<Session>)>) {
    let (rows, replies): (Vec<Session>, Vec<Reply<Session>>) = pending.into_iter().unzip();
    let inserted: Vec<Result<(), ApiError>> =
        match postgres(conn).and_then(|pg| session::create_many(pg, &rows)) {
            Ok(()) => rows.iter().map(|_| Ok(())).collect(),
            Err(_) if rows.len() > 1 => rows
                .iter()
                .map(|row| Ok(session::create_many(postgres(conn)?, std::slice::from_ref(row))?))
                .collect(),
            Err(e) => vec![Err(e.into())],
        };
    let committed: Vec<&Session> = rows
        .iter()
        .zip(&inserted)
        .filter(|(_, done)| done.is_ok())
        .map(|(row, _)| row)
        .collect();
    let mut checked = if committed.is_empty() {
        Ok(Vec::new())
    } else {
        super::store::recheck(conn, &committed)
    }
    .map(Vec::into_iter);
    for ((row, reply), done) in rows.into_iter().zip(replies).zip(inserted) {
        let answer = done.and_then(|()| match &mut checked {
            Err(e) => Err(e.clone()),
            Ok(checked) => checked
                .next()
                .unwrap_or_else(|| Err(ApiError::Internal("a new session was not checked".into())))
                .map(|()| row),
        });
        let _ = reply.send(answer);
    }
}

/// Rotates sessions in one statement and answers each request whether it won.
fn rotate(conn: &mut DbConnection, pending: Vec<(Rotation, Reply<bool>)>) {
    // The same (session, generation) twice: only the first goes into the statement, the others lose.
    let mut seen = HashSet::new();
    let unique: Vec<Rotation> = pending
        .iter()
        .filter(|(r, _)| seen.insert((r.id.as_str(), r.from_gen)))
        .map(|(r, _)| r.clone())
        .collect();
    let moved = postgres(conn).and_then(|pg| session::update_rotate_many(pg, &unique));
    match moved {
        Ok(moved) => {
            let mut moved: HashSet<(String, i64)> = moved.into_iter().collect();
            for (rotation, reply) in pending {
                // `remove`: a duplicate after the winner finds its pair gone and loses.
                let _ = reply.send(Ok(moved.remove(&(rotation.id, rotation.from_gen))));
            }
        }
        Err(e) => {
            let e = ApiError::from(e);
            for (_, reply) in pending {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
