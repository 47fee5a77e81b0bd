//! Faults under load: the database stopped and started again, and the server killed with SIGKILL and
//! restarted. PostgreSQL here is a private server that each test runs itself, so the machine's shared one is
//! never stopped; the killed server is the real `crm-auth` binary.
//!
//! The private PostgreSQL needs `initdb` and `pg_ctl` under `/usr/lib/postgresql/*/bin` and, when the tests run
//! as root, the `postgres` user and `runuser` (PostgreSQL refuses to run as root). Without them these tests fail
//! when `CRM_AUTH_TEST_BACKENDS` includes `postgres` (CI), and are skipped with a note otherwise.

#![expect(
    clippy::disallowed_methods,
    reason = "outages and recoveries are measured in wall-clock time"
)]

use crm_auth_server::service::admin::Actor;
use std::future::Future;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::server::{ServerProcess, crm_auth, free_port};
use crate::common::{Backend, ORG, PASSWORD, TestApp, TestDb, USER, code};
use crm_auth_client::{Client, Credentials, Error};
use crm_auth_core::ErrorCode;
use crm_auth_server::db::{self, ConnectionManager};
use crm_auth_server::password::PasswordHasher;
use crm_auth_server::service::admin;
use crm_auth_server::settings::Argon2Settings;

/// No answer may take longer than this, outage or not.
const MAX_ANSWER: Duration = Duration::from_secs(5);

/// The client gives up after this; a request still open then has hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

fn postgres_required() -> bool {
    std::env::var("CRM_AUTH_TEST_BACKENDS").is_ok_and(|list| list.split(',').any(|b| b.trim() == "postgres"))
}

/// Polls `done` until it holds, for at most `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Polls `attempt` until it succeeds, for at most `limit`; returns how long that took.
async fn poll_until_ok<F, Fut, T>(what: &str, limit: Duration, mut attempt: F) -> anyhow::Result<Duration>
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

fn client(url: &str) -> anyhow::Result<Client> {
    // No retries: every answer the server gives is seen as given.
    Ok(Client::builder()
        .base_url(url)
        .retries(0)
        .timeout(CLIENT_TIMEOUT)
        .build()?)
}

/// A PostgreSQL server of the test's own: a fresh cluster in a temporary folder, on a free port, with trust
/// authentication. Stopped (immediately) when dropped.
struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Whether PostgreSQL's tools run as the `postgres` user, because this process is root.
    as_postgres: bool,
}

impl PrivatePg {
    /// A running private PostgreSQL, or `None` when the machine cannot run one and PostgreSQL is not required.
    fn start() -> anyhow::Result<Option<PrivatePg>> {
        match PrivatePg::prepare()? {
            Ok(pg) => {
                pg.run(
                    "initdb",
                    &[
                        "-A",
                        "trust",
                        "-U",
                        "postgres",
                        "--no-sync",
                        "-E",
                        "UTF8",
                        "--locale=C",
                    ],
                )?;
                pg.start_server()?;
                Ok(Some(pg))
            }
            Err(why) if postgres_required() => anyhow::bail!(
                "cannot run a private PostgreSQL ({why}), and CRM_AUTH_TEST_BACKENDS includes postgres"
            ),
            Err(why) => {
                eprintln!("note: skipped, cannot run a private PostgreSQL: {why}");
                Ok(None)
            }
        }
    }

    /// The folder, the tools and the user to run them as; the inner error says why none can be had.
    fn prepare() -> anyhow::Result<Result<PrivatePg, String>> {
        let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path().join("bin"))).collect())
            .unwrap_or_default();
        bins.retain(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file());
        bins.sort();
        let Some(bin) = bins.pop() else {
            return Ok(Err("no initdb and pg_ctl under /usr/lib/postgresql/*/bin".into()));
        };
        let dir = tempfile::tempdir()?;
        let as_postgres = dir.path().metadata()?.uid() == 0;
        if as_postgres {
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let ids = passwd
                .lines()
                .find(|l| l.starts_with("postgres:"))
                .and_then(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    Some((
                        fields.get(2)?.parse::<u32>().ok()?,
                        fields.get(3)?.parse::<u32>().ok()?,
                    ))
                });
            let Some((uid, gid)) = ids else {
                return Ok(Err(
                    "running as root and there is no postgres user to run PostgreSQL as".into(),
                ));
            };
            let switch = Command::new("runuser")
                .args(["-u", "postgres", "--", "true"])
                .stdin(Stdio::null())
                .output();
            if !switch.is_ok_and(|out| out.status.success()) {
                return Ok(Err(
                    "running as root and `runuser -u postgres` does not work".into()
                ));
            }
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        Ok(Ok(PrivatePg {
            bin,
            dir,
            port: free_port()?,
            as_postgres,
        }))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let out = command
            .args(["-D", &self.data()])
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn start_server(&self) -> anyhow::Result<()> {
        // fsync is off because the faults here are process crashes: what a killed PostgreSQL wrote is in the
        // operating system's cache and survives; only a machine crash would need it on disk.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-l", &log, "-w", "-t", "60", "-o", &options, "start"])
    }

    /// Stops at once, as a crash would: no checkpoint, connections cut.
    fn stop_server(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-m", "immediate", "-w", "stop"])
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.stop_server();
    }
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// 503 `UNAVAILABLE`.
    Unavailable,
    /// Anything else: another code, no answer, a timeout.
    Other(String),
}

fn outcome<T>(result: &Result<T, Error>) -> Outcome {
    match result {
        Ok(_) => Outcome::Ok,
        Err(e) if e.code() == Some(ErrorCode::Unavailable) && e.http_status() == Some(503) => {
            Outcome::Unavailable
        }
        Err(e) => Outcome::Other(e.to_string()),
    }
}

struct Answer {
    worker: usize,
    phase: usize,
    op: &'static str,
    outcome: Outcome,
    took: Duration,
}

/// What the load saw, shared by its workers and the test.
#[derive(Default)]
struct Load {
    phase: AtomicUsize,
    stop: AtomicBool,
    answers: Mutex<Vec<Answer>>,
    /// Tokens whose release was answered OK.
    released: Mutex<Vec<String>>,
    /// Tokens answered OK by a login or a refresh, of sessions never released.
    issued: Mutex<Vec<String>>,
}

impl Load {
    /// Times `call` and records its outcome.
    async fn call<T>(
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
            took: started.elapsed(),
        };
        if let Ok(mut answers) = self.answers.lock() {
            answers.push(answer);
        }
        result
    }

    fn count(&self, worker: usize, phase: usize, outcome: &Outcome) -> usize {
        self.answers.lock().map_or(0, |answers| {
            answers
                .iter()
                .filter(|a| a.worker == worker && a.phase == phase && a.outcome == *outcome)
                .count()
        })
    }

    fn all(&self, workers: usize, phase: usize, outcome: &Outcome, at_least: usize) -> bool {
        (0..workers).all(|w| self.count(w, phase, outcome) >= at_least)
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    fn push(list: &Mutex<Vec<String>>, token: String) {
        if let Ok(mut list) = list.lock() {
            list.push(token);
        }
    }
}

/// Each answer was OK or 503 `UNAVAILABLE`, within [`MAX_ANSWER`].
fn check_answers(load: &Load) -> anyhow::Result<()> {
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

/// The real binary on a port, logging to a file.
fn spawn_server(db: &TestDb, port: u16, log: &Path) -> anyhow::Result<ServerProcess> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    // No token.keys: the generated key in the data folder must itself survive the kill.
    let mut command = crm_auth(db.dir.path(), &db.url);
    command
        .arg("serve")
        // This server reads the system clock; the rotation checks after the restart must fall inside the
        // reuse interval however long the restart takes.
        .env("CRM_AUTH__TOKEN__REUSE_INTERVAL_SECONDS", "600")
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log);
    ServerProcess::spawn(command, port)
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
    let key = {
        let conn = &mut ConnectionManager::new(db::Backend::from_url(&db.url)?)?.establish()?;
        db::run_migrations(conn)?;
        let org = admin::add_organisation(conn, &Actor::Cli, ORG, 0)?;
        admin::add_unit(conn, &Actor::Cli, &org, "Main", Some("MN"), 0)?;
        let hash = PasswordHasher::hash_blocking(
            &Argon2Settings {
                m_kib: 256,
                t: 1,
                p: 1,
            },
            PASSWORD,
        )?;
        let user = crate::common::add_user(conn, &org, USER, &["Main".into()], None, Some(hash), 0)?;
        admin::create_key(conn, &Actor::Cli, &org, &user, (None, None), 0)?
            .1
            .expose()
            .to_owned()
    };
    let port = free_port()?;
    let log = db.dir.path().join("server.log");
    let url = format!("http://127.0.0.1:{port}");
    let api = client(&url)?;
    let mut server = spawn_server(&db, port, &log)?;
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

    let mut server = spawn_server(&db, port, &log)?;
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
