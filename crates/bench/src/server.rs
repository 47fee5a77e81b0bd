//! The server under test, for the bench and the soak alike: its settings (passed as `CRM_AUTH__*` variables,
//! and read in this process the same way for the floors), the `crm-auth` process and its memory, and a scratch
//! PostgreSQL database per run.

use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use crm_auth_server::settings::Settings;

use crate::floors;

/// How long the server may take from start to answering `/health/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The credentials `crm-auth demo` and `serve --demo` print.
#[derive(Clone, Debug, Default)]
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

impl Demo {
    /// Reads the credentials from the command's output lines; `None` until all four were seen.
    fn read(lines: &[String]) -> Option<Demo> {
        let field = |label: &str| {
            lines
                .iter()
                .find_map(|line| line.strip_prefix(&format!("demo {label}:")))
                .map(|value| value.trim().to_owned())
        };
        Some(Demo {
            organisation: field("organisation")?,
            username: field("user")?,
            password: field("password")?,
            key: field("Web API key")?,
        })
    }
}

/// One server's settings: everything at its defaults but the data folder, the database, the listen address
/// and what [`Instance::with`] changes.
pub struct Instance {
    /// The `crm-auth` binary.
    binary: PathBuf,
    /// The data folder (signing key, SQLite database).
    data_dir: PathBuf,
    /// The database URL.
    database_url: String,
    /// Where the server listens: a port free when the instance was made.
    pub addr: SocketAddr,
    /// Settings other than the defaults, as `CRM_AUTH__*` variables.
    overrides: Vec<(String, String)>,
}

impl Instance {
    /// Settings for `binary` with `data_dir`, `database_url` (SQLite in the data folder when `None`) and a
    /// free port.
    pub fn new(binary: &Path, data_dir: &Path, database_url: Option<&str>) -> Result<Instance> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot find a free port")?;
        let addr = listener.local_addr().context("cannot find a free port")?;
        Ok(Instance {
            binary: binary.to_owned(),
            data_dir: data_dir.to_owned(),
            database_url: database_url.map_or_else(
                || format!("sqlite://{}", data_dir.join("crm-auth.db").display()),
                str::to_owned,
            ),
            addr,
            overrides: Vec::new(),
        })
    }

    /// The same instance with these settings changed, each a `CRM_AUTH__*` variable and its value.
    pub fn with(mut self, overrides: &[(&str, &str)]) -> Instance {
        self.overrides
            .extend(overrides.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self
    }

    /// The settings as `CRM_AUTH__*` variables.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "CRM_AUTH__DATA_DIR".to_owned(),
                self.data_dir.display().to_string(),
            ),
            ("CRM_AUTH__DATABASE__URL".to_owned(), self.database_url.clone()),
            ("CRM_AUTH__HTTP__BIND".to_owned(), self.addr.to_string()),
        ];
        env.extend(self.overrides.iter().cloned());
        env
    }

    /// The settings as the server reads them, for the floors run in this process.
    pub fn settings(&self) -> Result<Settings> {
        Ok(Settings::load_from(None, self.env())?)
    }

    /// `crm-auth ARGS` with these settings and no configuration file or `CRM_AUTH*` variable of the caller's.
    fn command(&self, args: &[&str], rust_log: Option<&str>) -> Command {
        let mut command = Command::new(&self.binary);
        command.args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CRM_AUTH") {
                command.env_remove(key);
            }
        }
        command.envs(self.env());
        match rust_log {
            Some(level) => command.env("RUST_LOG", level),
            None => command.env_remove("RUST_LOG"),
        };
        let shown = self
            .env()
            .into_iter()
            .map(|(key, value)| format!("{key}={}", crate::redact(&value)))
            .chain(std::iter::once(format!(
                "{} {}",
                self.binary.display(),
                args.join(" ")
            )))
            .collect::<Vec<_>>()
            .join(" ");
        eprintln!("$ {shown}");
        command
    }

    /// Runs `crm-auth ARGS` with these settings (log level `warn`) to its end and returns what it printed; its
    /// standard error is captured too.
    pub fn output(&self, args: &[&str]) -> Result<std::process::Output> {
        self.command(args, Some("warn"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start `crm-auth {}`", args.join(" ")))
    }

    /// Runs `crm-auth demo` (which migrates first) and returns the credentials it printed.
    pub fn demo(&self) -> Result<Demo> {
        let output = self
            .command(&["demo"], Some("warn"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("cannot start `crm-auth demo`")?;
        if !output.status.success() {
            bail!("`crm-auth demo` failed: {}", output.status);
        }
        let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        Demo::read(&lines).context("`crm-auth demo` did not print the four demo credentials")
    }

    /// Starts `crm-auth serve` (with `--demo` when `demo`, reading the credentials it prints) with its log in
    /// `log` and `RUST_LOG` as given (the server's default when `None`), and waits until `/health/ready`
    /// answers 200.
    pub fn start(&self, demo: bool, log: &Path, rust_log: Option<&str>) -> Result<Server> {
        let log_file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let args: &[&str] = if demo { &["serve", "--demo"] } else { &["serve"] };
        let stdout = if demo {
            Stdio::piped()
        } else {
            Stdio::from(log_file.try_clone()?)
        };
        let mut child = self
            .command(args, rust_log)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let piped = child.stdout.take();
        let mut server = Server {
            child,
            addr: self.addr,
            demo: Demo::default(),
            log: log.to_owned(),
        };
        let started = piped
            .map_or(Ok(()), |stdout| read_demo(stdout).map(|demo| server.demo = demo))
            .and_then(|()| server.wait_ready());
        match started {
            Ok(()) => Ok(server),
            Err(err) => {
                let tail = server.log_tail(30);
                Err(err.context(format!("the server did not start; its log ends:\n{tail}")))
            }
        }
    }
}

/// Resident memory of the server, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (the peak so far), KiB.
    pub peak_kib: u64,
}

/// A running server, stopped when dropped.
pub struct Server {
    /// The process.
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The credentials `serve --demo` printed (empty without `--demo`).
    pub demo: Demo,
    /// Its log.
    log: PathBuf,
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's memory now.
    pub fn memory(&self) -> Result<Memory> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .with_context(|| format!("{path} has no {key} line"))
        };
        Ok(Memory {
            rss_kib: kib("VmRSS:")?,
            peak_kib: kib("VmHWM:")?,
        })
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
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Polls `/health/ready` until it answers 200, the server exits or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}{}", self.url(), crm_auth_core::routes::HEALTH_READY);
        loop {
            self.check_running()?;
            match client.get(&url).send() {
                Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(()),
                _ if started.elapsed() > READY_TIMEOUT => {
                    bail!("{url} did not answer 200 within {READY_TIMEOUT:?}")
                }
                _ => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGKILL: the server holds nothing that needs a graceful stop.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut seen = Vec::new();
    loop {
        if let Some(demo) = Demo::read(&seen) {
            return Ok(demo);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(wait) {
            Ok(line) => seen.push(line),
            Err(RecvTimeoutError::Timeout) => {
                bail!("the server printed no demo credentials within {READY_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                bail!("the server's output ended before the demo credentials")
            }
        }
    }
}

/// A PostgreSQL database made for one run, dropped by [`ScratchDatabase::drop_now`] (or on drop).
pub struct ScratchDatabase {
    /// The URL the server gets: the admin URL's server and options, this database.
    pub url: String,
    /// The maintenance database's URL.
    admin_url: String,
    /// The database's name; `None` once dropped.
    name: Option<String>,
}

impl ScratchDatabase {
    /// Creates a fresh database on the server of `admin_url`.
    pub fn create(admin_url: &str) -> Result<ScratchDatabase> {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("crm_auth_bench_{}_{unix}", std::process::id());
        let mut url = reqwest::Url::parse(admin_url)
            .with_context(|| format!("{} is not a URL", crate::redact(admin_url)))?;
        // The same server and options (sslmode, say) as the admin URL, another database.
        url.set_path(&format!("/{name}"));
        floors::create_database(admin_url, &name)?;
        Ok(ScratchDatabase {
            url: url.to_string(),
            admin_url: admin_url.to_owned(),
            name: Some(name),
        })
    }

    /// Drops the database now.
    pub fn drop_now(&mut self) -> Result<()> {
        match self.name.take() {
            Some(name) => floors::drop_database(&self.admin_url, &name),
            None => Ok(()),
        }
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if let Err(e) = self.drop_now() {
            eprintln!("warning: could not drop the bench database: {e:#}");
        }
    }
}
