//! Running servers for tests: the server in this process on a free port ([`Node`]), and the real `crm-auth`
//! binary as a child process ([`crm_auth`], [`ServerProcess`]). Both stop when dropped, so a failing test
//! leaves no server behind.

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use crm_auth_client::Client;
use crm_auth_server::state::AppState;

/// The server in this process, on its own actix system thread; stopped when dropped.
pub struct Node {
    /// `http://` and the address it listens on, without the base path.
    pub url: String,
    pub addr: SocketAddr,
    /// What the node serves with (its own metrics, queues and pool).
    pub state: AppState,
    handle: ServerHandle,
}

impl Node {
    /// Serves `state` on a free loopback port.
    pub fn start(state: AppState) -> anyhow::Result<Node> {
        Node::start_on(TcpListener::bind("127.0.0.1:0")?, state)
    }

    /// Serves `state` on `listener`.
    pub fn start_on(listener: TcpListener, state: AppState) -> anyhow::Result<Node> {
        let addr = listener.local_addr()?;
        let server = crm_auth_server::http::serve(listener, state.clone())?;
        let handle = server.handle();
        std::thread::spawn(move || actix_web::rt::System::new().block_on(server));
        Ok(Node {
            url: format!("http://{addr}"),
            addr,
            state,
            handle,
        })
    }

    /// A client for this node with the default base path.
    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::builder().base_url(&self.url).build()?)
    }

    /// Stops gracefully and waits until the port is closed.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // `stop` sends its command when called; the future it returns only waits for the workers to end.
        drop(self.handle.stop(false));
    }
}

/// A free loopback port, for a server that binds it itself (a child process, PostgreSQL).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `crm-auth` binary with the tests' environment: no configuration file, a data folder and database
/// of the test's own, and cheap password hashes.
pub fn crm_auth(data_dir: &Path, database_url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm-auth"));
    command
        .env_remove("CRM_AUTH_CONFIG")
        .env("CRM_AUTH__DATA_DIR", data_dir)
        .env("CRM_AUTH__DATABASE__URL", database_url)
        .env("CRM_AUTH__AUTH__ARGON2__M_KIB", "256")
        .env("CRM_AUTH__AUTH__ARGON2__T", "1");
    if super::pooler_url().is_some() {
        // The database URL may go through the run's PgBouncer in transaction mode (see `TestDb`).
        command.env("CRM_AUTH__DATABASE__PREPARED_STATEMENTS", "false");
    }
    command
}

/// Runs `command` to its end with `stdin` on its standard input, capturing its output.
pub fn run_with_stdin(mut command: Command, stdin: &str) -> anyhow::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

/// The last word of the line of `out` that starts with `name`, as `demo` prints its credentials; empty if no
/// line does.
pub fn demo_field(out: &str, name: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_owned()
}

/// `crm-auth serve` (or `serve --demo`) as a child process on a port; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
}

impl ServerProcess {
    /// Starts `command` (a [`crm_auth`] command with its arguments and output set) listening on `port`.
    pub fn spawn(mut command: Command, port: u16) -> anyhow::Result<ServerProcess> {
        let child = command
            .env("CRM_AUTH__HTTP__BIND", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .spawn()?;
        Ok(ServerProcess { child })
    }

    /// `crm-auth serve` on `port` with the data folder `data_dir` and the database at `database_url`, logging
    /// warnings to `log` (appended). The reuse interval is ten minutes: a refresh whose answer a fault cut off
    /// may have rotated the session, and the client's retry with the same token must fall within the
    /// interval however long the fault lasts (these servers read the system clock).
    pub fn serve_logging(
        data_dir: &Path,
        database_url: &str,
        port: u16,
        log: &Path,
    ) -> anyhow::Result<ServerProcess> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut command = crm_auth(data_dir, database_url);
        command
            .arg("serve")
            .env("CRM_AUTH__TOKEN__REUSE_INTERVAL_SECONDS", "600")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone()?)
            .stderr(log);
        ServerProcess::spawn(command, port)
    }

    /// Polls the health check through `client` until the server answers, for at most 30 s.
    #[expect(
        clippy::disallowed_methods,
        reason = "waits for a real process in wall-clock time"
    )]
    pub async fn wait_ready(&mut self, client: &Client) -> anyhow::Result<()> {
        let started = Instant::now();
        while client.health().await.is_err() {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the server exited: {status}");
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sends the signal named `name` (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -s {name} failed: {status}");
        Ok(())
    }

    /// Waits for the process to end by itself, for at most `limit`.
    #[expect(
        clippy::disallowed_methods,
        reason = "waits for a real process in wall-clock time"
    )]
    pub async fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                started.elapsed() < limit,
                "the server did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown of any kind.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
