//! PostgreSQL servers of a test's own: a fresh cluster in a temporary folder on a free port, which the test
//! may stop, start, and pair with a streaming standby that it promotes. The machine's shared PostgreSQL is never
//! stopped.
//!
//! These need `initdb`, `pg_ctl` and `pg_basebackup` under `/usr/lib/postgresql/*/bin` and, when the tests run
//! as root, the `postgres` user and `runuser` (PostgreSQL refuses to run as root). Without them the tests that
//! use them fail when `CRM_AUTH_TEST_BACKENDS` includes `postgres` (CI), and are skipped with a note otherwise.

#![expect(
    clippy::disallowed_methods,
    reason = "a standby's catching up is waited for in wall-clock time"
)]

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diesel::prelude::*;

use super::server::free_port;

/// Whether `cargo xtask test` said PostgreSQL runs, which makes a machine that cannot run a private one an
/// error rather than a reason to skip.
pub fn postgres_required() -> bool {
    std::env::var("CRM_AUTH_TEST_BACKENDS").is_ok_and(|list| list.split(',').any(|b| b.trim() == "postgres"))
}

/// A PostgreSQL server of the test's own with trust authentication. Stopped (immediately) when dropped.
pub struct PrivatePg {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    /// Whether PostgreSQL's tools run as the `postgres` user, because this process is root.
    as_postgres: bool,
    /// Server settings of this cluster alone, as `-c name=value` options (not copied to a standby).
    settings: Vec<String>,
}

impl PrivatePg {
    /// A running private PostgreSQL, or `None` when the machine cannot run one and PostgreSQL is not required.
    pub fn start() -> anyhow::Result<Option<PrivatePg>> {
        PrivatePg::start_with(&[])
    }

    /// [`PrivatePg::start`] with server settings (`name=value`) of this cluster alone.
    pub fn start_with(settings: &[&str]) -> anyhow::Result<Option<PrivatePg>> {
        match PrivatePg::prepare()? {
            Ok(mut pg) => {
                pg.settings = settings.iter().map(|s| format!("-c {s}")).collect();
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

    /// A hot standby of this server, streaming from it (`pg_basebackup -R`), started and caught up: when this
    /// server was started with `synchronous_standby_names = '*'`, its commits now wait for the standby.
    pub fn start_standby(&self) -> anyhow::Result<PrivatePg> {
        let standby = PrivatePg::prepare()?.map_err(|why| anyhow::anyhow!("{why}"))?;
        let port = self.port.to_string();
        standby.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )?;
        standby.start_server()?;
        self.wait_for_standby()?;
        Ok(standby)
    }

    /// Waits until a standby streams from this server.
    fn wait_for_standby(&self) -> anyhow::Result<()> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let started = Instant::now();
        let mut conn = PgConnection::establish(&self.url())?;
        loop {
            let streaming: Count =
                diesel::sql_query("SELECT count(*) AS n FROM pg_stat_replication WHERE state = 'streaming'")
                    .get_result(&mut conn)?;
            if streaming.n > 0 {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the standby did not stream within a minute"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes this standby a primary and waits until it accepts writes.
    pub fn promote(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-w", "-t", "60", "promote"])
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
            settings: Vec::new(),
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

    pub fn start_server(&self) -> anyhow::Result<()> {
        // fsync is off because the faults here are process crashes: what a killed PostgreSQL wrote is in the
        // operating system's cache and survives; only a machine crash would need it on disk.
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        for setting in &self.settings {
            options.push(' ');
            options.push_str(setting);
        }
        let log = self.dir.path().join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-l", &log, "-w", "-t", "60", "-o", &options, "start"])
    }

    /// Stops at once, as a crash would: no checkpoint, connections cut.
    pub fn stop_server(&self) -> anyhow::Result<()> {
        self.run("pg_ctl", &["-m", "immediate", "-w", "stop"])
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.stop_server();
    }
}
