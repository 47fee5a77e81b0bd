//! Faults under load: the database stopped and started again, and the server killed with SIGKILL and
//! restarted. PostgreSQL here is a private server that each test runs itself (`common::pg`), so the machine's
//! shared one is never stopped; the killed server is the real `crm-auth` binary.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::load::{CLIENT_TIMEOUT, Load, Outcome, check_answers, client, poll_until_ok, wait_until};
use crate::common::pg::PrivatePg;
use crate::common::server::{ServerProcess, free_port};
use crate::common::{Backend, ORG, PASSWORD, TestApp, TestDb, USER, code, seed_database};
use crm_auth_client::{Client, Credentials};
use crm_auth_core::ErrorCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load_answers_unavailable_and_recovers() -> anyhow::Result<()> {
    let Some(pg) = PrivatePg::start()? else {
        return Ok(());
    };
    let app = TestApp::start(&Backend::Postgres(pg.url())).await?;
    let base = app.state.settings.http.base_path.clone();
    let new_client = || -> anyhow::Result<Client> {
        Ok(Client::builder()
            .base_url(&app.url)
            .base_path(base.clone())
            .retries(0)
            .timeout(CLIENT_TIMEOUT)
            .build()?)
    };
    let load = Arc::new(Load::default());
    let first = app.login().await?;
    let second = app
        .client
        .token(&Credentials::api_key(&app.key).unit("SC"))
        .await?;
    let mut to_release = Vec::new();
    for _ in 0..36 {
        to_release.push(
            app.client
                .token(&Credentials::api_key(&app.key))
                .await?
                .as_str()
                .to_owned(),
        );
    }

    // Workers 0 and 1 validate and refresh their session's newest token; 2 logs in by key; 3 releases
    // tokens; 4 asks for readiness.
    const WORKERS: usize = 5;
    let mut refreshers = Vec::new();
    for (worker, token) in [(0, first.as_str().to_owned()), (1, second.as_str().to_owned())] {
        let (load, client) = (Arc::clone(&load), new_client()?);
        refreshers.push(tokio::spawn(async move {
            let mut token = token;
            while load.running() {
                let _ = load.call(worker, "validate", client.validate(&token)).await;
                if let Ok(next) = load.call(worker, "refresh", client.refresh(&token)).await {
                    token = next.as_str().to_owned();
                    Load::push(&load.issued, token.clone());
                }
            }
            token
        }));
    }
    let mut others = Vec::new();
    {
        let (load, client, key) = (Arc::clone(&load), new_client()?, app.key.clone());
        others.push(tokio::spawn(async move {
            while load.running() {
                if let Ok(token) = load
                    .call(2, "key login", client.token(&Credentials::api_key(&key)))
                    .await
                {
                    Load::push(&load.issued, token.as_str().to_owned());
                }
            }
        }));
    }
    {
        let (load, client) = (Arc::clone(&load), new_client()?);
        others.push(tokio::spawn(async move {
            // Releases before, during and after the outage: a few while the database is up, most into the
            // outage, and some kept back for after it however fast the outage's answers come.
            const LIMITS: [usize; 3] = [3, 30, 3];
            let mut released_in = [0usize; 3];
            while load.running() {
                let phase = load.phase.load(Ordering::SeqCst);
                if released_in[phase] >= LIMITS[phase] {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let Some(token) = to_release.pop() else { break };
                released_in[phase] += 1;
                if load.call(3, "release", client.release(&token)).await.is_ok() {
                    Load::push(&load.released, token);
                }
            }
        }));
    }
    {
        let (load, client) = (Arc::clone(&load), new_client()?);
        others.push(tokio::spawn(async move {
            while load.running() {
                let _ = load.call(4, "ready", client.health()).await;
            }
        }));
    }

    let outcome = async {
        wait_until(
            "every worker answered before the outage",
            Duration::from_secs(30),
            || load.all(WORKERS, 0, &Outcome::Ok, 3),
        )
        .await?;
        load.phase.store(1, Ordering::SeqCst);
        let pg = &pg;
        tokio::task::block_in_place(|| pg.stop_server())?;
        wait_until("every worker saw the outage", Duration::from_secs(60), || {
            load.all(WORKERS, 1, &Outcome::Unavailable, 2)
        })
        .await?;
        load.phase.store(2, Ordering::SeqCst);
        tokio::task::block_in_place(|| pg.start_server())?;
        // The service recovers by itself, without a restart.
        let probe = new_client()?;
        let key = Credentials::api_key(&app.key);
        poll_until_ok("a key login after the restart", Duration::from_secs(20), || {
            probe.token(&key)
        })
        .await?;
        wait_until(
            "every worker answered after the outage",
            Duration::from_secs(30),
            || load.all(WORKERS, 2, &Outcome::Ok, 3),
        )
        .await
    }
    .await;
    load.stop.store(true, Ordering::SeqCst);
    let mut newest = Vec::new();
    for worker in refreshers {
        newest.push(worker.await?);
    }
    for worker in others {
        worker.await?;
    }
    // The answers first: a wrong one explains a phase that never completed.
    check_answers(&load)?;
    outcome?;

    // A release answered OK was stored: its session is over, though the outage came right after.
    let released = load
        .released
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert!(released.len() >= 6, "{} releases answered OK", released.len());
    for token in &released {
        let code = code(app.client.validate(token).await);
        assert_eq!(code, Some(ErrorCode::SessionEnded), "a released token");
    }
    // A login or refresh answered OK was stored too: every such token validates, and each refresher's newest
    // token refreshes (had its rotation been lost, it would be taken for a stolen one).
    let issued = load
        .issued
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    for token in &issued {
        app.client.validate(token).await?;
    }
    for token in &newest {
        app.client.refresh(token).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_on_sqlite() -> anyhow::Result<()> {
    sigkill_under_load(&Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_nothing_on_postgres() -> anyhow::Result<()> {
    let Some(pg) = PrivatePg::start()? else {
        return Ok(());
    };
    sigkill_under_load(&Backend::Postgres(pg.url())).await
}

/// Kills the server with SIGKILL while clients log in and refresh, starts it again, and checks that every
/// answered token still holds, the signing key is the same, and rotation state survived.
async fn sigkill_under_load(backend: &Backend) -> anyhow::Result<()> {
    let db = TestDb::new(backend)?;
    let key = seed_database(&db.url)?;
    let port = free_port()?;
    let log = db.dir.path().join("server.log");
    let url = format!("http://127.0.0.1:{port}");
    let api = client(&url)?;
    // No token.keys: the generated key in the data folder must itself survive the kill.
    let mut server = ServerProcess::serve_logging(db.dir.path(), &db.url, port, &log)?;
    server.wait_ready(&api).await?;
    let key_file = db.dir.path().join("signing-key");
    let signing_key = std::fs::read(&key_file)?;

    // One session refreshed once before the kill: generation 1 is its newest token.
    let c0 = api.token(&Credentials::password(USER, PASSWORD, ORG)).await?;
    let c1 = api.refresh(c0.as_str()).await?;

    // Load: key logins, password logins, and a refresh chain, until the kill cuts them off.
    const WORKERS: usize = 3;
    let load = Arc::new(Load::default());
    let mut workers = Vec::new();
    for worker in 0..2 {
        let (load, client, key) = (Arc::clone(&load), client(&url)?, key.clone());
        workers.push(tokio::spawn(async move {
            while load.running() {
                let login = async {
                    if worker == 0 {
                        client.token(&Credentials::api_key(&key)).await
                    } else {
                        client.token(&Credentials::password(USER, PASSWORD, ORG)).await
                    }
                };
                if let Ok(token) = load.call(worker, "login", login).await {
                    Load::push(&load.issued, token.as_str().to_owned());
                }
            }
            None
        }));
    }
    {
        let (load, client) = (Arc::clone(&load), client(&url)?);
        let mut token = api.token(&Credentials::api_key(&key)).await?.as_str().to_owned();
        workers.push(tokio::spawn(async move {
            while load.running() {
                if let Ok(next) = load.call(2, "refresh", client.refresh(&token)).await {
                    token = next.as_str().to_owned();
                    Load::push(&load.issued, token.clone());
                }
            }
            Some(token)
        }));
    }
    let loaded = wait_until("load before the kill", Duration::from_secs(30), || {
        load.all(WORKERS, 0, &Outcome::Ok, 20)
    })
    .await;
    let killed = server.kill();
    load.phase.store(1, Ordering::SeqCst);
    load.stop.store(true, Ordering::SeqCst);
    let mut newest = None;
    for worker in workers {
        newest = newest.or(worker.await?);
    }
    loaded?;
    killed?;
    // Up to the kill every answer was OK; what the kill cut off got no answer at all, never a wrong one.
    {
        let answers = load.answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        for a in answers.iter() {
            if let Outcome::Other(why) = &a.outcome {
                assert!(!why.starts_with("server answered"), "{} answered {why}", a.op);
            }
        }
    }

    let mut server = ServerProcess::serve_logging(db.dir.path(), &db.url, port, &log)?;
    server.wait_ready(&api).await?;
    assert_eq!(
        std::fs::read(&key_file)?,
        signing_key,
        "the signing key file is intact"
    );
    // The superseded token, within the reuse interval, gets the newest back; then the newest rotates.
    let again = api.refresh(c0.as_str()).await?;
    assert_eq!(again.as_str(), c1.as_str(), "rotation state survived the kill");
    let c2 = api.refresh(c1.as_str()).await?;
    assert_eq!((c2.claims().r#gen, c2.session_id()), (2, c0.session_id()));
    // Every token answered before the kill still verifies under the same key and validates.
    let issued = load
        .issued
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    assert!(issued.len() >= 60, "{} tokens before the kill", issued.len());
    for token in &issued {
        api.validate(token).await?;
    }
    let newest = newest.ok_or_else(|| anyhow::anyhow!("the refresh chain"))?;
    api.refresh(&newest).await?;
    drop(server);
    Ok(())
}
