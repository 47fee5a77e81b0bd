//! The operations surface of a node behind a load balancer: the management listener alone serves `/metrics`
//! and the health checks, and a stopping server drains: on SIGTERM or SIGINT readiness fails at once while
//! requests are still served, then the listeners close and no request that started before fails.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crm_auth_client::Client;
use crm_auth_server::clock::{Clock as _, SystemClock};
use crm_auth_server::state::AppState;
use serde_json::Value;

use crate::common::server::{ServerProcess, crm_auth, free_port};
use crate::common::{Backend, TestApp, TestDb, header, seed};

backend_tests!(
    the_management_listener_alone_serves_the_operator_routes,
    a_draining_node_fails_readiness_and_closes_connections,
    sigterm_under_load_drains_then_stops_without_failing_a_request,
    sigint_drains_and_a_second_one_ends_the_drain,
);

const KEY_TOKEN: &str = "/crmapi/rest/v2/authentication/web_api_key/token";
const VALIDATE: &str = "/crmapi/rest/v2/authentication/token/validate";

/// The real binary on a seeded database of its own; killed, then the database dropped, when dropped.
struct Running {
    server: ServerProcess,
    /// `http://` and the main listener's address.
    main: String,
    /// `http://` and the management listener's address, or the main one's when there is none.
    management: String,
    /// Alice's Web API key.
    key: String,
    _db: TestDb,
}

impl Running {
    /// Starts `crm-auth serve` with these extra settings (`CRM_AUTH__...` variables) and waits until it is
    /// ready; with `management`, on a management listener of its own.
    async fn start(backend: &Backend, management: bool, env: &[(&str, &str)]) -> anyhow::Result<Running> {
        let db = TestDb::new(backend)?;
        // Seeded in this process, as `TestApp` does, then left to the binary alone.
        let key = {
            let state = AppState::build(db.settings(), Arc::new(SystemClock))?;
            seed(&state, SystemClock.now())?.0
        };
        let port = free_port()?;
        let main = format!("http://127.0.0.1:{port}");
        let mut command = crm_auth(db.dir.path(), &db.url);
        // The shutdown's phases, not every request.
        command
            .arg("serve")
            .env("RUST_LOG", "warn,crm_auth_server=info")
            .envs(env.iter().copied());
        let management = if management {
            let addr = format!("127.0.0.1:{}", free_port()?);
            command.env("CRM_AUTH__HTTP__MANAGEMENT_BIND", &addr);
            format!("http://{addr}")
        } else {
            main.clone()
        };
        let mut server = ServerProcess::spawn(command, port)?;
        server
            .wait_ready(&Client::builder().base_url(&management).build()?)
            .await?;
        Ok(Running {
            server,
            main,
            management,
            key,
            _db: db,
        })
    }

    /// `Authorization: Basic` with the key as the user name.
    fn basic(&self) -> String {
        format!("Basic {}", STANDARD.encode(format!("{}:", self.key)))
    }
}

/// A GET's status and envelope code (empty when the body is not an envelope).
async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<(u16, String)> {
    let res = http.get(url).send().await?;
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    Ok((
        status,
        body["status"]["code"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn the_management_listener_alone_serves_the_operator_routes(backend: Backend) -> anyhow::Result<()> {
    let node = Running::start(&backend, true, &[]).await?;
    let http = reqwest::Client::new();
    for path in ["/metrics", "/health/ready", "/health/live"] {
        let (status, code) = get(&http, &format!("{}{path}", node.main)).await?;
        assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "main {path}");
        let (status, _) = get(&http, &format!("{}{path}", node.management)).await?;
        assert_eq!(status, 200, "management {path}");
    }
    // The management listener serves nothing else: neither the API nor the OpenAPI document.
    let on_management = http
        .post(format!("{}{KEY_TOKEN}", node.management))
        .header("authorization", node.basic())
        .send()
        .await?;
    assert_eq!(on_management.status().as_u16(), 404);
    let (status, code) = get(&http, &format!("{}/openapi.json", node.management)).await?;
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    let on_main = http
        .post(format!("{}{KEY_TOKEN}", node.main))
        .header("authorization", node.basic())
        .send()
        .await?;
    assert_eq!(on_main.status().as_u16(), 200);
    assert_eq!(get(&http, &format!("{}/openapi.json", node.main)).await?.0, 200);

    // An address that does not parse stops start-up with one line naming the key.
    let dir = tempfile::tempdir()?;
    let out = crm_auth(
        dir.path(),
        &format!("sqlite://{}", dir.path().join("db").display()),
    )
    .arg("serve")
    .env("CRM_AUTH__HTTP__MANAGEMENT_BIND", "localhost:metrics")
    .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("http.management_bind"), "{stderr}");
    Ok(())
}

/// The drain as in-process nodes see it (a test or an embedding program starts it through the state).
async fn a_draining_node_fails_readiness_and_closes_connections(backend: Backend) -> anyhow::Result<()> {
    let app = TestApp::start(&backend).await?;
    let http = reqwest::Client::new();
    let login = || {
        http.post(app.api("/authentication/web_api_key/token"))
            .header(
                "authorization",
                format!("Basic {}", STANDARD.encode(format!("{}:", app.key))),
            )
            .send()
    };
    let before = login().await?;
    assert_eq!(before.status().as_u16(), 200);
    assert_eq!(header(&before, "connection"), None, "kept alive");
    assert!(app.state.drain.start());
    assert!(!app.state.drain.start(), "started once");
    let (status, code) = get(&http, &format!("{}/health/ready", app.url)).await?;
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"));
    assert_eq!(get(&http, &format!("{}/health/live", app.url)).await?.0, 200);
    let during = login().await?;
    assert_eq!(during.status().as_u16(), 200);
    assert_eq!(header(&during, "connection").as_deref(), Some("close"));
    // Errors close their connections too.
    let unknown = http.get(format!("{}/no/such/path", app.url)).send().await?;
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(header(&unknown, "connection").as_deref(), Some("close"));
    Ok(())
}

/// How a request ended, as its client saw it.
#[derive(Debug)]
enum Outcome {
    Ok,
    /// The connection was refused: the request never started.
    Refused,
    Failed(String),
}

/// Whether `error` is a refused connection, anywhere in its chain of causes.
fn is_refused(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The outcome of a request expected to answer 200, and its body.
async fn outcome(sent: Result<reqwest::Response, reqwest::Error>) -> (Outcome, Value) {
    match sent {
        Err(e) if is_refused(&e) => (Outcome::Refused, Value::Null),
        Err(e) => (Outcome::Failed(format!("{e:?}")), Value::Null),
        Ok(res) => {
            let status = res.status().as_u16();
            match res.json::<Value>().await {
                Ok(body) if status == 200 => (Outcome::Ok, body),
                Ok(body) => (Outcome::Failed(format!("{status}: {body}")), Value::Null),
                Err(e) => (Outcome::Failed(format!("{status}, body: {e:?}")), Value::Null),
            }
        }
    }
}

/// Every request of the load: when it started (from the signal's clock) and how it ended.
type Tally = Arc<Mutex<Vec<(Duration, Outcome)>>>;

/// One client: key logins, each followed by a validate of its token, until a connection is refused (or a
/// minute has passed). Each client has its own connection pool, as separate callers would.
async fn client_loop(base: String, basic: String, clock: Instant, tally: Tally) {
    let http = reqwest::Client::new();
    let record = |began: Duration, outcome: Outcome| {
        let refused = matches!(outcome, Outcome::Refused);
        if let Ok(mut tally) = tally.lock() {
            tally.push((began, outcome));
        }
        refused
    };
    while clock.elapsed() < Duration::from_secs(60) {
        let began = clock.elapsed();
        let sent = http
            .post(format!("{base}{KEY_TOKEN}"))
            .header("authorization", &basic)
            .send()
            .await;
        let (login, body) = outcome(sent).await;
        let token = body["data"]["token"].as_str().unwrap_or_default().to_owned();
        if record(began, login) {
            return;
        }
        if token.is_empty() {
            continue;
        }
        let began = clock.elapsed();
        let sent = http
            .get(format!("{base}{VALIDATE}"))
            .bearer_auth(&token)
            .send()
            .await;
        if record(began, outcome(sent).await.0) {
            return;
        }
    }
}

/// A key login whose body is only half sent: it started before the listener closes and ends after.
struct SlowLogin(TcpStream);

const SLOW_BODY: (&str, &str) = ("{\"unit\":", " \"Main\"}");

impl SlowLogin {
    fn start(node: &Running) -> anyhow::Result<SlowLogin> {
        let addr = node.main.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr)?;
        let length = SLOW_BODY.0.len() + SLOW_BODY.1.len();
        write!(
            stream,
            "POST {KEY_TOKEN} HTTP/1.1\r\nhost: {addr}\r\nauthorization: {}\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n{}",
            node.basic(),
            SLOW_BODY.0
        )?;
        stream.flush()?;
        Ok(SlowLogin(stream))
    }

    /// Sends the rest of the body and reads the answer's status line.
    async fn finish(self) -> anyhow::Result<String> {
        let SlowLogin(mut stream) = self;
        tokio::task::spawn_blocking(move || {
            stream.write_all(SLOW_BODY.1.as_bytes())?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            anyhow::Ok(answer.lines().next().unwrap_or_default().to_owned())
        })
        .await?
    }
}

/// Polls `/health/ready` until it answers 503; how long that took from `clock`'s start.
async fn until_unready(url: &str, clock: Instant) -> anyhow::Result<Duration> {
    let http = reqwest::Client::new();
    while clock.elapsed() < Duration::from_secs(5) {
        if let Ok(res) = http.get(url).send().await
            && res.status().as_u16() == 503
        {
            let elapsed = clock.elapsed();
            let body: Value = res.json().await?;
            assert_eq!(body["status"]["code"], "UNAVAILABLE");
            return Ok(elapsed);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    anyhow::bail!("/health/ready never answered 503")
}

/// Sixteen clients log in and validate in a loop; SIGTERM drains for 2 s: readiness fails within 100 ms,
/// requests go on succeeding to the end of the drain, then the listener closes. A request whose connection
/// was refused never started; every other request, including one still being received when the listener
/// closed, must succeed, and the process must exit 0.
#[expect(
    clippy::disallowed_methods,
    reason = "the drain is timed in wall-clock time against the real process"
)]
async fn sigterm_under_load_drains_then_stops_without_failing_a_request(
    backend: Backend,
) -> anyhow::Result<()> {
    const DRAIN: Duration = Duration::from_secs(2);
    let mut node = Running::start(
        &backend,
        false,
        &[
            ("CRM_AUTH__HTTP__SHUTDOWN_DRAIN_SECONDS", "2"),
            ("CRM_AUTH__HTTP__SHUTDOWN_TIMEOUT_SECONDS", "10"),
        ],
    )
    .await?;
    let tally: Tally = Arc::default();
    let clock = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(client_loop(
                node.main.clone(),
                node.basic(),
                clock,
                Arc::clone(&tally),
            ))
        })
        .collect();
    let slow = SlowLogin::start(&node)?;
    // Let the load run before the signal.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = clock.elapsed();
    node.server.signal("TERM")?;
    let unready = until_unready(&format!("{}/health/ready", node.main), clock).await? - signalled;
    assert!(
        unready < Duration::from_millis(100),
        "readiness failed after {unready:?}"
    );
    for client in clients {
        tokio::time::timeout(Duration::from_secs(30), client).await??;
    }
    // The listener has closed (every client was refused); the half-sent login is still answered.
    let status_line = slow.finish().await?;
    assert!(status_line.starts_with("HTTP/1.1 200"), "{status_line:?}");
    let status = node.server.wait_exit(Duration::from_secs(15)).await?;
    assert!(status.success(), "{status}");

    let tally = std::mem::take(&mut *tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let failed: Vec<String> = tally
        .iter()
        .filter_map(|(began, o)| match o {
            Outcome::Failed(why) => Some(format!("started at {began:?}: {why}")),
            _ => None,
        })
        .collect();
    let closed = tally
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Refused))
        .map(|(began, _)| *began)
        .min()
        .ok_or_else(|| anyhow::anyhow!("no connection was refused"))?;
    let last_ok = tally
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Ok))
        .map(|(began, _)| *began)
        .max()
        .unwrap_or_default();
    let served = tally.iter().filter(|(_, o)| matches!(o, Outcome::Ok)).count();
    println!(
        "signal at {signalled:?}, readiness failed {unready:?} later, last success started at {last_ok:?}, \
         first refusal at {closed:?}; {served} of {} requests served",
        tally.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        tally.len(),
        &failed[..failed.len().min(5)]
    );
    // No connection was refused before the drain was over (give or take the moment between a client reading
    // the clock and its connection attempt reaching the server).
    assert!(
        closed + Duration::from_millis(100) >= signalled + DRAIN,
        "refused from {closed:?}; the signal was at {signalled:?}"
    );
    // Requests were served to the end of the drain, not only at its start.
    assert!(
        last_ok + Duration::from_millis(500) >= signalled + DRAIN,
        "the last request served started at {last_ok:?}; the signal was at {signalled:?}"
    );
    assert!(served > 100, "only {served} requests served");
    Ok(())
}

/// SIGINT (Ctrl-C) drains like SIGTERM; a second one ends a long drain at once.
#[expect(
    clippy::disallowed_methods,
    reason = "the drain is timed in wall-clock time against the real process"
)]
async fn sigint_drains_and_a_second_one_ends_the_drain(backend: Backend) -> anyhow::Result<()> {
    let mut node = Running::start(
        &backend,
        true,
        &[("CRM_AUTH__HTTP__SHUTDOWN_DRAIN_SECONDS", "60")],
    )
    .await?;
    let clock = Instant::now();
    node.server.signal("INT")?;
    let unready = until_unready(&format!("{}/health/ready", node.management), clock).await?;
    assert!(
        unready < Duration::from_millis(100),
        "readiness failed after {unready:?}"
    );
    let during = reqwest::Client::new()
        .post(format!("{}{KEY_TOKEN}", node.main))
        .header("authorization", node.basic())
        .send()
        .await?;
    assert_eq!(during.status().as_u16(), 200);
    assert_eq!(header(&during, "connection").as_deref(), Some("close"));
    node.server.signal("INT")?;
    let status = node.server.wait_exit(Duration::from_secs(10)).await?;
    assert!(status.success(), "{status}");
    Ok(())
}
