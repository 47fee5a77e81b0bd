//! Failover of PostgreSQL under load: a primary with a synchronous streaming standby (private clusters of
//! this test, `common::pg`), two `crm-auth` nodes (the real binary) on a multi-host URL with
//! `target_session_attrs=read-write`, and clients logging in with a key, refreshing and validating on both
//! nodes while the primary is stopped hard and the standby promoted.

#![expect(
    clippy::disallowed_methods,
    reason = "outages and recoveries are measured in wall-clock time"
)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::load::{Load, MAX_ANSWER, Outcome, check_answers, wait_until};
use crate::common::pg::PrivatePg;
use crate::common::seed_database;
use crate::common::server::{ServerProcess, free_port};
use crm_auth_client::{Client, Credentials, Token};

/// Clients under load, each alternating between the two nodes.
const WORKERS: usize = 4;

/// Every request must be answered OK again this long after the promotion at the latest.
const RECOVERY: Duration = Duration::from_secs(10);

/// The newest token of every session a login or refresh answered OK, by session id.
#[derive(Default)]
struct Acknowledged(Mutex<HashMap<String, (u64, String)>>);

impl Acknowledged {
    fn record(&self, token: &Token) {
        if let Ok(mut sessions) = self.0.lock() {
            let newest = sessions
                .entry(token.session_id().to_owned())
                .or_insert_with(|| (0, String::new()));
            if newest.1.is_empty() || token.claims().r#gen >= newest.0 {
                *newest = (token.claims().r#gen, token.as_str().to_owned());
            }
        }
    }
}

/// A client that gives up after [`MAX_ANSWER`] and never retries, so that every answer is seen as given.
fn client(url: &str) -> anyhow::Result<Client> {
    Ok(Client::builder()
        .base_url(url)
        .retries(0)
        .timeout(MAX_ANSWER)
        .build()?)
}

/// One client's loop. Even workers log in with the key and validate the new token, as a service that logs in
/// for each job does; odd ones log in, then validate and refresh their newest token three times, then log in
/// again (a refresh that failed is tried again with the same token). Each call goes to the other node than the
/// call before.
async fn work(worker: usize, load: Arc<Load>, nodes: [Client; 2], key: String, acked: Arc<Acknowledged>) {
    let mut turn = worker;
    let mut next_node = || {
        turn += 1;
        &nodes[turn % 2]
    };
    let credentials = Credentials::api_key(&key);
    let mut token: Option<String> = None;
    let mut refreshes = 0u32;
    while load.running() {
        let Some(current) = token.clone() else {
            let login = next_node().token(&credentials);
            if let Ok(new) = load.call(worker, "key login", login).await {
                acked.record(&new);
                if worker.is_multiple_of(2) {
                    let validate = next_node().validate(new.as_str());
                    let _ = load.call(worker, "validate", validate).await;
                } else {
                    token = Some(new.as_str().to_owned());
                }
            }
            continue;
        };
        let _ = load
            .call(worker, "validate", next_node().validate(&current))
            .await;
        if let Ok(next) = load.call(worker, "refresh", next_node().refresh(&current)).await {
            acked.record(&next);
            refreshes += 1;
            token = (!refreshes.is_multiple_of(3)).then(|| next.as_str().to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_synchronous_standby_under_load() -> anyhow::Result<()> {
    // Only the primary waits for a synchronous standby: once promoted, the standby has none to wait for.
    let Some(primary) = PrivatePg::start_with(&["synchronous_standby_names='*'"])? else {
        return Ok(());
    };
    let standby = primary.start_standby()?;
    let key = seed_database(&primary.url())?;
    let database_url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );

    let data = tempfile::tempdir()?;
    let log = data.path().join("server.log");
    let mut servers = Vec::new();
    let mut nodes = Vec::new();
    // Two nodes under load, and a third that gets no request until the failover is over.
    for _ in 0..3 {
        let port = free_port()?;
        let url = format!("http://127.0.0.1:{port}");
        // One after the other: the first generates the signing key the second then reads.
        let mut server = ServerProcess::serve_logging(data.path(), &database_url, port, &log)?;
        server.wait_ready(&client(&url)?).await?;
        servers.push(server);
        nodes.push(url);
    }

    let load = Arc::new(Load::default());
    let acked = Arc::new(Acknowledged::default());
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let clients = [client(&nodes[0])?, client(&nodes[1])?];
        workers.push(tokio::spawn(work(
            worker,
            Arc::clone(&load),
            clients,
            key.clone(),
            Arc::clone(&acked),
        )));
    }

    let failover = async {
        wait_until("load before the failover", Duration::from_secs(30), || {
            load.all(WORKERS, 0, &Outcome::Ok, 20)
        })
        .await?;
        load.phase.store(1, Ordering::SeqCst);
        let stopped = Instant::now();
        tokio::task::block_in_place(|| primary.stop_server())?;
        // A moment without a primary, as while a failover manager decides, so that every client sees it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| standby.promote())?;
        let promoted = Instant::now();
        load.phase.store(2, Ordering::SeqCst);
        wait_until("every client served after the promotion", RECOVERY, || {
            load.all(WORKERS, 2, &Outcome::Ok, 20)
        })
        .await?;
        // More load once recovered: a connection still bound to the old primary would show here.
        tokio::time::sleep(Duration::from_secs(2)).await;
        anyhow::Ok((stopped, promoted))
    }
    .await;
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await?;
    }
    // Every answer was OK or a prompt UNAVAILABLE, before the rest: a wrong one explains a failed phase.
    check_answers(&load)?;
    let (stopped, promoted) = failover?;

    let (window, last_failure) = {
        let answers = load.answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let failed: Vec<_> = answers.iter().filter(|a| a.outcome != Outcome::Ok).collect();
        let first = failed.iter().map(|a| a.sent).min();
        let last = failed.iter().map(|a| a.sent + a.took).max();
        let total = answers.len();
        let slowest = answers.iter().map(|a| a.took).max().unwrap_or_default();
        // The outage as clients lived it: the longest time in which no request was answered OK.
        let mut oks: Vec<Instant> = answers
            .iter()
            .filter(|a| a.outcome == Outcome::Ok)
            .map(|a| a.sent + a.took)
            .collect();
        oks.sort();
        let gap = oks.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        let ok_after = answers
            .iter()
            .filter(|a| a.outcome == Outcome::Ok && last.is_none_or(|last| a.sent > last))
            .count();
        match (first, last) {
            (Some(first), Some(last)) => {
                println!(
                    "failover: outage window {:?} (first failed request sent {:?} after the primary stopped, \
                     last failure answered {:?} after the promotion, which took {:?}); {} of {total} requests \
                     answered UNAVAILABLE, {ok_after} OK after the last; slowest answer {slowest:?}; \
                     longest time without an OK answer {gap:?}",
                    last - first,
                    first.saturating_duration_since(stopped),
                    last.saturating_duration_since(promoted),
                    promoted - stopped,
                    failed.len(),
                );
                (last - first, Some(last))
            }
            _ => (Duration::ZERO, None),
        }
    };
    assert!(
        window > Duration::ZERO,
        "the failover went unnoticed by every client"
    );
    if let Some(last) = last_failure {
        assert!(
            last.saturating_duration_since(promoted) <= RECOVERY,
            "requests still failed {:?} after the promotion",
            last.saturating_duration_since(promoted)
        );
    }

    // No session acknowledged to a client is lost: each one's newest token validates and refreshes, with the
    // load gone (no connection left to the old primary), on the nodes that had the load and on the one idle
    // until now, whose pooled connections were all to the old primary.
    let sessions: Vec<String> = acked
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .values()
        .map(|(_, token)| token.clone())
        .collect();
    assert!(sessions.len() >= WORKERS * 5, "{} sessions", sessions.len());
    let checks = [client(&nodes[0])?, client(&nodes[1])?];
    let idle = client(&nodes[2])?;
    for (i, token) in sessions.iter().enumerate() {
        idle.validate(token).await?;
        checks[i % 2].validate(token).await?;
        checks[(i + 1) % 2].refresh(token).await?;
    }
    drop(servers);
    Ok(())
}
