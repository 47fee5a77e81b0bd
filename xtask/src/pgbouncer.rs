//! A private PgBouncer in transaction mode in front of the tests' PostgreSQL, for the second PostgreSQL pass
//! of `cargo xtask test`: Debian's `pgbouncer` on a free loopback port, with a generated configuration in a
//! folder under `target/`, stopped (and the folder removed) when dropped.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

/// Where Debian installs it; otherwise it is looked for on the PATH.
const DEBIAN_PATH: &str = "/usr/sbin/pgbouncer";

/// How long PgBouncer has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running PgBouncer.
pub struct PgBouncer {
    /// The process, ours to stop.
    child: Child,
    /// Its configuration and log.
    dir: PathBuf,
    /// The loopback port it listens on.
    port: u16,
}

impl PgBouncer {
    /// The program, if installed.
    pub fn program() -> Option<PathBuf> {
        let debian = PathBuf::from(DEBIAN_PATH);
        if debian.is_file() {
            return Some(debian);
        }
        let found = Command::new("pgbouncer")
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        found.then(|| PathBuf::from("pgbouncer"))
    }

    /// Starts `program` in front of the PostgreSQL server at `host:port`, which must accept `user` without a
    /// password (trust, as the tests' server does): every database name is forwarded (a wildcard entry, so
    /// the tests' per-test databases need no configuration), in transaction mode.
    pub fn start(program: &Path, target: &Path, host: &str, port: u16, user: &str) -> Result<PgBouncer> {
        let dir = target.join(format!("pgbouncer-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let listen = free_port()?;
        let users = dir.join("users.txt");
        fs::write(&users, format!("\"{user}\" \"\"\n"))?;
        let ini = dir.join("pgbouncer.ini");
        // Transaction mode, as deployments that need `database.prepared_statements = false` run it. A test's
        // server holds up to 8 connections; 20 per database leaves room for helper connections and a second
        // node, and stays well under PostgreSQL's 100 with the tests that run at once.
        fs::write(
            &ini,
            format!(
                "[databases]\n\
                 * = host={host} port={port}\n\
                 \n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {listen}\n\
                 unix_socket_dir =\n\
                 auth_type = trust\n\
                 auth_file = {users}\n\
                 pool_mode = transaction\n\
                 max_client_conn = 2000\n\
                 default_pool_size = 20\n\
                 log_connections = 0\n\
                 log_disconnections = 0\n\
                 log_stats = 0\n",
                users = users.display(),
            ),
        )?;
        let log = fs::File::create(dir.join("pgbouncer.log"))?;
        let mut command = Command::new(program);
        if is_root() {
            // PgBouncer refuses to run as root; it switches to this user itself, so the files must be
            // readable by it (they hold no secret: authentication is trust).
            command.args(["-u", "postgres"]);
            make_readable(&dir)?;
        }
        let child = command
            .arg(&ini)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        let mut bouncer = PgBouncer {
            child,
            dir,
            port: listen,
        };
        bouncer.wait_listening()?;
        Ok(bouncer)
    }

    /// `postgres://USER@127.0.0.1:PORT`, without a database: the tests add each one's own.
    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}", self.port)
    }

    /// Polls the port until it accepts, failing with the log if the process exits or time runs out.
    fn wait_listening(&mut self) -> Result<()> {
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(50);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("pgbouncer exited ({status}): {}", self.log());
            }
            if waited >= START_TIMEOUT {
                bail!(
                    "pgbouncer did not listen within {START_TIMEOUT:?}: {}",
                    self.log()
                );
            }
            thread::sleep(step);
            waited += step;
        }
    }

    /// What it wrote, for an error message.
    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port free at the time of asking.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether this process runs as root (`id -u` says 0).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Lets every user read the folder's files (and enter it).
fn make_readable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        fs::set_permissions(entry?.path(), fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
