//! A `crm-auth serve --demo` of its own for the task that tests the server from outside (`schemathesis`): a
//! temporary data folder, a free port, the demo credentials read from its output, stopped and
//! cleaned up when dropped.

#![expect(
    clippy::disallowed_methods,
    reason = "waits for servers in wall-clock time and names scratch databases by creation time"
)]

use std::{
    env, fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::redact;

/// The API base path of the default settings.
pub const BASE_PATH: &str = "/crmapi/rest/v2";

/// How long the server may take from start to answering `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What `serve --demo` prints and the tasks log in with.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The organisation name.
    pub organisation: String,
    /// The user name.
    pub username: String,
    /// The user's password.
    pub password: String,
    /// The user's Web API key.
    pub key: String,
}

/// How to start the server.
pub struct Options<'a> {
    /// The `crm-auth` binary.
    pub binary: &'a Path,
    /// A database URL; `None` for SQLite in the temporary data folder.
    pub database_url: Option<&'a str>,
    /// Argon2id at m=256 KiB, t=1 instead of the production defaults, for tasks that do not measure hashing.
    pub cheap_hashing: bool,
    /// `RUST_LOG` for the server; its log goes to a file in the data folder.
    pub log: &'a str,
    /// More settings, as `CRM_AUTH__*` variables.
    pub settings: &'a [(&'a str, &'a str)],
}

/// A running server; dropping it stops it and removes its data folder.
pub struct Server {
    /// The server process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The credentials it printed.
    pub demo: Demo,
    /// Its data folder (signing key, SQLite database, log), removed on drop.
    data_dir: PathBuf,
}

impl Server {
    /// Starts `serve --demo` on a free port and waits until `/health/ready` answers 200.
    pub fn start(options: &Options<'_>) -> Result<Server> {
        let data_dir = temp_dir("crm-auth-server")?;
        let addr = free_port()?;
        let database_url = match options.database_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}", data_dir.join("crm-auth.db").display()),
        };
        let log_path = data_dir.join("server.log");
        let log =
            fs::File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;

        let mut command = Command::new(options.binary);
        command.args(["serve", "--demo"]);
        // Only the settings given here: no configuration file or `CRM_AUTH*` variable of the caller's.
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("CRM_AUTH") {
                command.env_remove(key);
            }
        }
        let mut settings = vec![
            ("CRM_AUTH__DATA_DIR", data_dir.display().to_string()),
            ("CRM_AUTH__DATABASE__URL", database_url),
            ("CRM_AUTH__HTTP__BIND", addr.to_string()),
        ];
        if options.cheap_hashing {
            settings.push(("CRM_AUTH__AUTH__ARGON2__M_KIB", "256".to_owned()));
            settings.push(("CRM_AUTH__AUTH__ARGON2__T", "1".to_owned()));
        }
        settings.extend(
            options
                .settings
                .iter()
                .map(|(key, value)| (*key, (*value).to_owned())),
        );
        let line = settings
            .iter()
            .map(|(key, value)| format!("{key}={}", redact(value)))
            .chain([format!("RUST_LOG={}", options.log)])
            .chain([format!("{} serve --demo", options.binary.display())])
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("$ {line} &");
        command.envs(settings).env("RUST_LOG", options.log);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;

        let stdout = child.stdout.take().context("the server's stdout is not piped")?;
        let mut server = Server {
            child,
            addr,
            demo: Demo {
                organisation: String::new(),
                username: String::new(),
                password: String::new(),
                key: String::new(),
            },
            data_dir,
        };
        match read_demo(stdout).and_then(|demo| {
            server.demo = demo;
            server.wait_ready()
        }) {
            Ok(()) => Ok(server),
            Err(err) => {
                let tail = server.log_tail(30);
                Err(err.context(format!("the server did not start; its log ends:\n{tail}")))
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails when the server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait().context("cannot check the server process")? {
            None => Ok(()),
            Some(status) => bail!(
                "the server exited ({status}); its log ends:\n{}",
                self.log_tail(30)
            ),
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `/health/ready` until it answers 200, the server exits or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            self.check_running()?;
            match ready(self.addr) {
                Ok(true) => return Ok(()),
                _ if started.elapsed() > READY_TIMEOUT => {
                    bail!(
                        "{}/health/ready did not answer 200 within {READY_TIMEOUT:?}",
                        self.url()
                    )
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The server holds no state worth a graceful stop: its data folder goes next.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.data_dir);
    }
}

/// Whether `GET /health/ready` answers 200. The one request xtask sends itself, so a status line read off a
/// socket does rather than an HTTP client among the dependencies (the bench package has one).
fn ready(addr: SocketAddr) -> std::io::Result<bool> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut status_line = String::new();
    BufReader::new(stream.take(1024)).read_line(&mut status_line)?;
    Ok(status_line.split_whitespace().nth(1) == Some("200"))
}

/// Reads the demo credentials from the start of `serve --demo`'s output, waiting at most [`READY_TIMEOUT`].
/// A thread of its own reads the output to its end, so that the server never blocks on a full pipe.
fn read_demo(stdout: ChildStdout) -> Result<Demo> {
    let (lines, received) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Once the credentials are read nobody listens; the lines are drained all the same.
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut fields = Vec::new();
    while fields.len() < 4 {
        let wait = deadline.saturating_duration_since(Instant::now());
        let line = match received.recv_timeout(wait) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                bail!("the server printed no demo credentials within {READY_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the server's output ended before the demo credentials")
            }
        };
        for label in ["organisation", "user", "password", "Web API key"] {
            if let Some(value) = line.strip_prefix(&format!("demo {label}:")) {
                fields.push((label, value.trim().to_owned()));
            }
        }
    }
    let field = |label: &str| {
        fields
            .iter()
            .find(|(name, _)| *name == label)
            .map(|(_, value)| value.clone())
            .with_context(|| format!("the server printed no demo {label}"))
    };
    Ok(Demo {
        organisation: field("organisation")?,
        username: field("user")?,
        password: field("password")?,
        key: field("Web API key")?,
    })
}

/// An address on the loopback interface that no one listens on right now.
fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free port")?;
    listener.local_addr().context("cannot find a free port")
}

/// A new, empty folder under the system's temporary folder.
pub fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// Where cargo builds: `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
pub fn target_dir() -> Result<PathBuf> {
    let root = crate::project_root()?;
    Ok(match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    })
}

/// The `crm-auth` binary that `cargo build [--release] -p crm-auth-server` makes.
pub fn binary(release: bool) -> Result<PathBuf> {
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir()?
        .join(profile)
        .join(format!("crm-auth{}", env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    //! The readiness probe is the only HTTP xtask speaks; a wrong read would start schemathesis too early or
    //! never.

    use super::*;

    /// Answers one connection with `answer` after reading its request, and returns what `ready` made of it.
    fn probe(answer: &'static str) -> Result<bool> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let server = thread::spawn(move || -> std::io::Result<String> {
            let (stream, _) = listener.accept()?;
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line)?;
            reader.get_mut().write_all(answer.as_bytes())?;
            Ok(request_line)
        });
        let ready = ready(addr)?;
        let request_line = server
            .join()
            .map_err(|_| anyhow::anyhow!("the test server panicked"))??;
        assert_eq!(request_line, "GET /health/ready HTTP/1.1\r\n");
        Ok(ready)
    }

    /// 200 is ready; 503 is not.
    #[test]
    fn reads_the_status_line() -> Result<()> {
        assert!(probe("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?);
        assert!(!probe(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        )?);
        Ok(())
    }
}
