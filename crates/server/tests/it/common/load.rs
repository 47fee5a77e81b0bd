//! Load for fault tests: workers that call the server in a loop and record every answer (its outcome, how
//! long it took and when it came), and the checks made on those answers afterwards.

#![expect(
    clippy::disallowed_methods,
    reason = "outages and recoveries are measured in wall-clock time"
)]

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crm_auth_client::{Client, Error};
use crm_auth_core::ErrorCode;

/// No answer may take longer than this, outage or not.
pub const MAX_ANSWER: Duration = Duration::from_secs(5);

/// The client gives up after this; a request still open then has hung.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `done` until it holds, for at most `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls `attempt` until it succeeds, for at most `limit`; returns how long that took.
pub async fn poll_until_ok<F, Fut, T>(what: &str, limit: Duration, mut attempt: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    loop {
        match attempt().await {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) if started.elapsed() > limit => {
                anyhow::bail!("{what}: still failing after {limit:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

pub fn client(url: &str) -> anyhow::Result<Client> {
    // No retries: every answer the server gives is seen as given.
    Ok(Client::builder()
        .base_url(url)
        .retries(0)
        .timeout(CLIENT_TIMEOUT)
        .build()?)
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 503 `UNAVAILABLE`.
    Unavailable,
    /// Anything else: another code, no answer, a timeout.
    Other(String),
}

pub fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) if e.code() == Some(ErrorCode::Unavailable) && e.http_status() == Some(503) => {
            Outcome::Unavailable
        }
        Err(e) => Outcome::Other(e.to_string()),
    }
}

/// One answer the load got.
pub struct Answer {
    pub worker: usize,
    pub phase: usize,
    pub op: &'static str,
    pub outcome: Outcome,
    /// When the call was made.
    pub sent: Instant,
    pub took: Duration,
}

/// What the load saw, shared by its workers and the test.
#[derive(Default)]
pub struct Load {
    pub phase: AtomicUsize,
    pub stop: AtomicBool,
    pub answers: Mutex<Vec<Answer>>,
    /// Tokens whose release was answered OK.
    pub released: Mutex<Vec<String>>,
    /// Tokens answered OK by a login or a refresh, of sessions never released.
    pub issued: Mutex<Vec<String>>,
}

impl Load {
    /// Times `call` and records its outcome.
    pub async fn call<T>(
        &self,
        worker: usize,
        op: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let phase = self.phase.load(Ordering::SeqCst);
        let started = Instant::now();
        let result = call.await;
        let answer = Answer {
            worker,
            phase,
            op,
            outcome: outcome(&result),
            sent: started,
            took: started.elapsed(),
        };
        if let Ok(mut answers) = self.answers.lock() {
            answers.push(answer);
        }
        result
    }

    pub fn count(&self, worker: usize, phase: usize, outcome: &Outcome) -> usize {
        self.answers.lock().map_or(0, |answers| {
            answers
                .iter()
                .filter(|a| a.worker == worker && a.phase == phase && a.outcome == *outcome)
                .count()
        })
    }

    pub fn all(&self, workers: usize, phase: usize, outcome: &Outcome, at_least: usize) -> bool {
        (0..workers).all(|w| self.count(w, phase, outcome) >= at_least)
    }

    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    pub fn push(list: &Mutex<Vec<String>>, token: String) {
        if let Ok(mut list) = list.lock() {
            list.push(token);
        }
    }
}

/// Each answer was OK or 503 `UNAVAILABLE`, within [`MAX_ANSWER`].
pub fn check_answers(load: &Load) -> anyhow::Result<()> {
    let answers = load.answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let bad: Vec<String> = answers
        .iter()
        .filter(|a| matches!(a.outcome, Outcome::Other(_)) || a.took > MAX_ANSWER)
        .map(|a| {
            format!(
                "worker {} phase {} {}: {:?} after {:?}",
                a.worker, a.phase, a.op, a.outcome, a.took
            )
        })
        .collect();
    anyhow::ensure!(
        bad.is_empty(),
        "{} of {} answers were neither OK nor a prompt UNAVAILABLE:\n{}",
        bad.len(),
        answers.len(),
        bad.join("\n")
    );
    Ok(())
}
