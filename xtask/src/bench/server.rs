//! The server under test: its configuration, its scratch database, the process and its memory, and the hidden
//! `crm-auth bench ...` helpers run beside it.

#![expect(
    clippy::disallowed_methods,
    reason = "names scratch databases by creation time and waits for servers in wall-clock time"
)]

use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

use super::http;

/// Which database the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file (WAL, `synchronous = FULL`).
    Sqlite,
    /// A fresh database on the PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A database made for one run, dropped by [`Database::drop_now`] (or on drop).
pub struct Database {
    /// The URL the server gets.
    pub url: String,
    /// For PostgreSQL: the maintenance URL and the database's name.
    postgres: Option<(String, String)>,
    /// The binary that drops it.
    bin: PathBuf,
}

impl Database {
    /// A fresh SQLite file in `dir`, or a fresh PostgreSQL database next to `admin_url`.
    pub fn create(bin: &Path, backend: Backend, dir: &Path, admin_url: &str) -> Result<Database> {
        match backend {
            Backend::Sqlite => Ok(Database {
                url: format!("sqlite://{}", dir.join("crm-auth.db").display()),
                postgres: None,
                bin: bin.to_owned(),
            }),
            Backend::Postgres => {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let name = format!("crm_auth_bench_{}_{unix}", std::process::id());
                helper(bin, None, &["create-database", "--admin-url", admin_url, &name])?;
                // The same server and options (sslmode, say) as the admin URL, another database.
                let (path, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
                let base = path.rsplit_once('/').map_or(path, |(base, _)| base);
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{query}")
                };
                Ok(Database {
                    url: format!("{base}/{name}{query}"),
                    postgres: Some((admin_url.to_owned(), name)),
                    bin: bin.to_owned(),
                })
            }
        }
    }

    /// Drops a PostgreSQL database now.
    pub fn drop_now(&mut self) -> Result<()> {
        if let Some((admin_url, name)) = self.postgres.take() {
            helper(
                &self.bin,
                None,
                &["drop-database", "--admin-url", &admin_url, &name],
            )?;
        }
        Ok(())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        if let Err(e) = self.drop_now() {
            eprintln!("warning: could not drop the bench database: {e:#}");
        }
    }
}

/// Runs `crm-auth [--config FILE] bench ARGS` and returns its stdout.
pub fn helper(bin: &Path, config: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut command = Command::new(bin);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    command.arg("bench").args(args);
    run_captured(command, None)
}

/// Runs `crm-auth --config FILE ARGS` (an ordinary command) and returns its stdout.
pub fn command(bin: &Path, config: &Path, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut command = Command::new(bin);
    command.arg("--config").arg(config).args(args);
    run_captured(command, stdin)
}

/// Runs a prepared command with quiet logging, feeding `stdin`; fails with its stderr.
fn run_captured(mut command: Command, stdin: Option<&str>) -> Result<String> {
    let line = format!("{command:?}");
    command
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().with_context(|| format!("cannot start {line}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{line} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The value of `key` in a `key=value ...` line.
pub fn field(line: &str, key: &str) -> Result<f64> {
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .with_context(|| format!("no {key}= in {line:?}"))?;
    value.parse().with_context(|| format!("{key}={value}"))
}

/// A free port on the loopback interface.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes the server's configuration file: everything at its defaults but the database, the data folder
/// and the listen address.
pub fn write_config(path: &Path, data_dir: &Path, url: &str, port: u16) -> Result<()> {
    let toml_string = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let text = format!(
        "data_dir = {}\n\n[database]\nurl = {}\n\n[http]\nbind = \"127.0.0.1:{port}\"\n",
        toml_string(&data_dir.display().to_string()),
        toml_string(url),
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The running server.
pub struct Server {
    /// The process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Resident memory of the server, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (the peak so far), KiB.
    pub peak_kib: u64,
}

impl Server {
    /// Starts `crm-auth serve` with its log in `log` and waits until it answers.
    pub fn start(bin: &Path, config: &Path, port: u16, log: &Path) -> Result<Server> {
        let log_file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("cannot start the server")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = Server { child, addr };
        if let Err(e) = http::wait_live(addr, Duration::from_secs(60)) {
            server.stop();
            return Err(e.context(format!("see {}", log.display())));
        }
        Ok(server)
    }

    /// The server's memory now.
    pub fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("cannot read the server's /proc status")?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kib: kib("VmRSS:"),
            peak_kib: kib("VmHWM:"),
        })
    }

    /// Stops the server (SIGKILL: nothing it holds needs a clean shutdown) and reaps it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
