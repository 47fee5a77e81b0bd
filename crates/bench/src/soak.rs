//! `soak [--minutes N] [--threads N] [--postgres URL]` (`cargo xtask soak`): a release build of the server under a
//! steady mixed load for N minutes, to find what short tests cannot: slow leaks, errors that need many
//! thousands of requests, latency that creeps up.
//!
//! The server runs `serve --demo` (SQLite in a temporary folder unless `--postgres` names a database) with
//! the production password hashing. Each load thread repeats one session's life on a kept-alive connection: a
//! key login (every tenth a password login instead), validate, refresh, validate the new token, release.
//! Every request must succeed. The server's resident memory is sampled every 10 s; the task fails if any
//! request failed or if the memory of the last third of the run is more than 10% above that of the first
//! third.

#![expect(clippy::disallowed_methods, reason = "a benchmark measures wall-clock time")]

use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use crm_auth_core::routes;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use crate::api;
use crate::server::{Instance, Server};

/// Minutes of load unless `--minutes` says otherwise.
const DEFAULT_MINUTES: u64 = 10;

/// Load threads unless `--threads` says otherwise: enough to keep two cores busy, few enough that no request
/// waits long for a database connection.
const DEFAULT_THREADS: usize = 4;

/// How often the server's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How much the memory of the last third may exceed that of the first third.
const MAX_RSS_GROWTH: f64 = 0.10;

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Failed requests described in full at the end; the rest are only counted.
const ERRORS_SHOWN: usize = 10;

/// One kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `{base}/authentication/web_api_key/token`, POST or GET.
    KeyLogin,
    /// `{base}/authentication/token`.
    PasswordLogin,
    /// `{base}/authentication/token/validate`, GET with a Bearer header or POST with a JSON body.
    Validate,
    /// `{base}/authentication/token/refresh`.
    Refresh,
    /// `{base}/authentication/token/release`.
    Release,
}

impl Op {
    /// Every kind, in the order of the report.
    const ALL: [Op; 5] = [
        Op::KeyLogin,
        Op::PasswordLogin,
        Op::Validate,
        Op::Refresh,
        Op::Release,
    ];

    /// The name in the report.
    fn name(self) -> &'static str {
        match self {
            Op::KeyLogin => "key login",
            Op::PasswordLogin => "password login",
            Op::Validate => "validate",
            Op::Refresh => "refresh",
            Op::Release => "release",
        }
    }

    /// The position in [`Op::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// The command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Minutes of load.
    #[arg(long, default_value_t = DEFAULT_MINUTES, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// Threads sending requests.
    #[arg(long, default_value_t = DEFAULT_THREADS, value_parser = positive)]
    threads: usize,
    /// A PostgreSQL URL instead of SQLite in a temporary folder.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
}

/// A positive number of threads.
fn positive(value: &str) -> Result<usize, String> {
    match value.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("takes a positive number, got `{value}`")),
    }
}

/// Builds the release binary, starts the server, runs the load, prints the report, and fails on a failed
/// request or on memory growth.
pub fn run(args: &Args) -> Result<()> {
    let duration = Duration::from_secs(args.minutes * 60);
    let binary = crate::release_binary()?;
    let data_dir = tempfile::Builder::new()
        .prefix("crm-auth-soak-")
        .tempdir()
        .context("cannot create a temporary folder")?;
    let instance = Instance::new(&binary, data_dir.path(), args.postgres.as_deref())?;
    let mut server = instance.start(true, &data_dir.path().join("server.log"), Some("warn"))?;
    eprintln!(
        "soak: {} thread(s) for {} s against {} (pid {})",
        args.threads,
        duration.as_secs(),
        server.url(),
        server.pid()
    );

    let load = Arc::new(Load::new(&server, duration));
    let workers = (0..args.threads)
        .map(|i| {
            let load = Arc::clone(&load);
            let base = server.url();
            thread::Builder::new()
                .name(format!("soak-{i}"))
                .spawn(move || worker(i, &base, &load))
                .context("cannot start a load thread")
        })
        .collect::<Result<Vec<_>>>()?;

    let samples = sample_memory(&mut server, &load);
    let mut tally = Tally::default();
    for worker in workers {
        match worker.join() {
            Ok(part) => tally.merge(part),
            Err(_) => bail!("a load thread panicked"),
        }
    }
    let samples = samples?;
    let elapsed = load.started.elapsed();
    server.check_running()?;
    let server_log = server.log_tail(20);
    // The server goes before its data folder.
    drop(server);
    drop(data_dir);

    print!("{}", tally.report(elapsed, args.threads));
    let memory = memory_verdict(&samples, duration);
    print!("{}", memory.report);

    let mut failures = Vec::new();
    if tally.errors() > 0 {
        println!("\nfailed requests (first {ERRORS_SHOWN}):");
        for error in &tally.first_errors {
            println!("  {error}");
        }
        if !server_log.is_empty() {
            println!("the server's log ends:\n{server_log}");
        }
        failures.push(format!("{} request(s) failed", tally.errors()));
    }
    if let Some(why) = memory.failure {
        failures.push(why);
    }
    if !failures.is_empty() {
        bail!("soak failed: {}", failures.join("; "));
    }
    println!("\nsoak passed");
    Ok(())
}

/// What every load thread shares: the requests' fixed parts, the end of the run, live counters.
struct Load {
    /// `Authorization: Basic base64(KEY:)`.
    basic: String,
    /// The JSON body of the demo user's password login.
    password_body: String,
    /// When the load started.
    started: Instant,
    /// When threads stop starting new sessions.
    deadline: Instant,
    /// Requests sent so far, for the progress lines.
    requests: AtomicU64,
    /// Requests failed so far.
    errors: AtomicU64,
}

impl Load {
    /// The fixed parts of the requests to `server`, and a deadline `duration` from now.
    fn new(server: &Server, duration: Duration) -> Load {
        let demo = &server.demo;
        let started = Instant::now();
        Load {
            basic: api::basic(&demo.key),
            password_body: api::password_login(&demo.username, &demo.password, &demo.organisation),
            started,
            deadline: started + duration,
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }
}

/// One load thread: sessions from login to release, until the deadline.
fn worker(id: usize, base: &str, load: &Load) -> Tally {
    let mut tally = Tally::default();
    // One client per thread: its own kept-alive connection, as one caller of the API would have.
    let client = match Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(err) => {
            tally.fail(load, Op::KeyLogin, format!("cannot build an HTTP client: {err}"));
            return tally;
        }
    };
    let url = |p: &str| format!("{base}{}", api::path(p));
    // Threads start at different points of the cycle so that password logins do not arrive together.
    let mut cycle = id as u64 * 3;
    while Instant::now() < load.deadline {
        cycle += 1;
        let op = if cycle.is_multiple_of(10) {
            Op::PasswordLogin
        } else {
            Op::KeyLogin
        };
        let login = if op == Op::PasswordLogin {
            tally.call(
                load,
                op,
                client
                    .post(url(routes::PASSWORD_TOKEN))
                    .header(CONTENT_TYPE, "application/json")
                    .body(load.password_body.clone()),
            )
        } else {
            let target = url(routes::API_KEY_TOKEN);
            let request = if cycle.is_multiple_of(2) {
                client.post(target)
            } else {
                client.get(target)
            };
            tally.call(load, op, request.header(AUTHORIZATION, &load.basic))
        };
        let Some(token) = tally.token(load, op, login) else {
            continue;
        };

        let bearer = api::bearer(&token);
        tally.call(
            load,
            Op::Validate,
            client
                .get(url(routes::VALIDATE_TOKEN))
                .header(AUTHORIZATION, &bearer),
        );
        let refreshed = tally.call(
            load,
            Op::Refresh,
            client
                .post(url(routes::REFRESH_TOKEN))
                .header(AUTHORIZATION, &bearer),
        );
        let token = tally.token(load, Op::Refresh, refreshed).unwrap_or(token);
        tally.call(
            load,
            Op::Validate,
            client
                .post(url(routes::VALIDATE_TOKEN))
                .json(&serde_json::json!({ "token": token })),
        );
        tally.call(
            load,
            Op::Release,
            client
                .post(url(routes::RELEASE_TOKEN))
                .header(AUTHORIZATION, api::bearer(&token)),
        );
    }
    tally
}

/// An answer: the status and the body as text.
struct Answer {
    /// The HTTP status.
    status: reqwest::StatusCode,
    /// The body.
    body: String,
}

/// Requests counted by kind: latencies, failures, and the first failures in full.
#[derive(Default)]
struct Tally {
    /// Latencies of every request, microseconds, by [`Op::index`].
    latencies: [Vec<u32>; 5],
    /// Failed requests by [`Op::index`].
    errors: [u64; 5],
    /// The first [`ERRORS_SHOWN`] failures, described.
    first_errors: Vec<String>,
}

impl Tally {
    /// Sends one request, timing it up to its whole body; a transport error or a status other than 2xx is a
    /// failure. Returns the answer when it succeeded.
    fn call(&mut self, load: &Load, op: Op, request: RequestBuilder) -> Option<Answer> {
        let started = Instant::now();
        let outcome = request.send().and_then(|response| {
            let status = response.status();
            response.text().map(|body| Answer { status, body })
        });
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.latencies[op.index()].push(micros);
        load.requests.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(answer) if answer.status.is_success() => Some(answer),
            Ok(answer) => {
                let body: String = answer.body.chars().take(300).collect();
                self.fail(load, op, format!("HTTP {}: {body}", answer.status.as_u16()));
                None
            }
            Err(err) => {
                self.fail(load, op, format!("{err:#}"));
                None
            }
        }
    }

    /// The token of a successful login or refresh answer; an answer without one is a failure of `op`.
    fn token(&mut self, load: &Load, op: Op, answer: Option<Answer>) -> Option<String> {
        let answer = answer?;
        match api::token_of(&answer.body) {
            Some(token) => Some(token),
            None => {
                let body: String = answer.body.chars().take(300).collect();
                self.fail(load, op, format!("no token in the answer: {body}"));
                None
            }
        }
    }

    /// Counts a failure of `op` and keeps its description if it is among the first.
    fn fail(&mut self, load: &Load, op: Op, what: String) {
        self.errors[op.index()] += 1;
        load.errors.fetch_add(1, Ordering::Relaxed);
        if self.first_errors.len() < ERRORS_SHOWN {
            let at = load.started.elapsed().as_secs_f64();
            self.first_errors.push(format!("{at:7.1}s {}: {what}", op.name()));
        }
    }

    /// Adds another thread's counts.
    fn merge(&mut self, other: Tally) {
        for op in Op::ALL {
            self.latencies[op.index()].extend_from_slice(&other.latencies[op.index()]);
            self.errors[op.index()] += other.errors[op.index()];
        }
        let room = ERRORS_SHOWN.saturating_sub(self.first_errors.len());
        self.first_errors
            .extend(other.first_errors.into_iter().take(room));
    }

    /// Failed requests of every kind.
    fn errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// The request table: count, failures and latency percentiles per kind, and the total.
    fn report(&mut self, elapsed: Duration, threads: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{:<16} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "request", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let mut all = Vec::new();
        for op in Op::ALL {
            let latencies = &mut self.latencies[op.index()];
            latencies.sort_unstable();
            out.push_str(&row(op.name(), latencies, self.errors[op.index()]));
            all.extend_from_slice(latencies);
        }
        all.sort_unstable();
        out.push_str(&row("total", &all, self.errors()));
        let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
        let _ = writeln!(
            out,
            "{:.0} requests/s over {seconds:.0} s from {threads} thread(s)",
            all.len() as f64 / seconds
        );
        out
    }
}

/// One line of the request table; `sorted` are latencies in microseconds, ascending.
fn row(name: &str, sorted: &[u32], errors: u64) -> String {
    let ms = |q: f64| {
        if sorted.is_empty() {
            return "-".to_owned();
        }
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        format!("{:.2}", f64::from(sorted[i]) / 1000.0)
    };
    format!(
        "{name:<16} {:>10} {errors:>8} {:>9} {:>9} {:>9} {:>9}\n",
        sorted.len(),
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(1.0)
    )
}

/// One reading of the server's memory.
struct Sample {
    /// Seconds since the load started.
    at: f64,
    /// Resident set size, KiB.
    rss_kib: u64,
}

/// Samples the server's resident memory every [`SAMPLE_EVERY`] until the load's deadline, printing a progress
/// line each time. Fails when the server exits or its memory cannot be read.
fn sample_memory(server: &mut Server, load: &Load) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut next = load.started + SAMPLE_EVERY;
    loop {
        let now = Instant::now();
        if next > load.deadline + Duration::from_millis(500) {
            return Ok(samples);
        }
        if next > now {
            thread::sleep(next - now);
        }
        server.check_running()?;
        let rss_kib = server.memory()?.rss_kib;
        let at = load.started.elapsed().as_secs_f64();
        let requests = load.requests.load(Ordering::Relaxed);
        let errors = load.errors.load(Ordering::Relaxed);
        eprintln!(
            "soak: {at:6.0} s  rss {:7.1} MiB  requests {requests:>9} ({:.0}/s)  errors {errors}",
            rss_kib as f64 / 1024.0,
            requests as f64 / at
        );
        samples.push(Sample { at, rss_kib });
        next += SAMPLE_EVERY;
    }
}

/// The memory report, and why it fails the run, if it does.
struct MemoryVerdict {
    /// The samples and the comparison of the first and last thirds.
    report: String,
    /// Set when the last third grew more than [`MAX_RSS_GROWTH`] over the first.
    failure: Option<String>,
}

/// Compares the mean resident memory of the samples in the last third of `duration` with that of the first
/// third.
fn memory_verdict(samples: &[Sample], duration: Duration) -> MemoryVerdict {
    let mut report = String::from("\nserver memory (VmRSS):\n");
    for sample in samples {
        let _ = writeln!(
            report,
            "  {:6.0} s  {:7.1} MiB",
            sample.at,
            sample.rss_kib as f64 / 1024.0
        );
    }
    let total = duration.as_secs_f64();
    let mean = |keep: &dyn Fn(f64) -> bool| {
        let picked: Vec<u64> = samples.iter().filter(|s| keep(s.at)).map(|s| s.rss_kib).collect();
        (!picked.is_empty()).then(|| picked.iter().sum::<u64>() as f64 / picked.len() as f64)
    };
    let first = mean(&|at| at <= total / 3.0 + 1.0);
    let last = mean(&|at| at >= total * 2.0 / 3.0 - 1.0);
    let (Some(first), Some(last)) = (first, last) else {
        let _ = writeln!(report, "  too few samples to compare the first and last thirds");
        return MemoryVerdict {
            report,
            failure: Some("too few memory samples".to_owned()),
        };
    };
    let growth = last / first - 1.0;
    let _ = writeln!(
        report,
        "  first third {:.1} MiB, last third {:.1} MiB: {:+.1}% (limit {:+.0}%)",
        first / 1024.0,
        last / 1024.0,
        growth * 100.0,
        MAX_RSS_GROWTH * 100.0
    );
    let failure = (growth > MAX_RSS_GROWTH).then(|| {
        format!(
            "the server's memory grew {:.1}% from the first to the last third of the run",
            growth * 100.0
        )
    });
    MemoryVerdict { report, failure }
}

#[cfg(test)]
mod tests {
    //! The soak's verdict rests on its memory comparison: a wrong one would read as a leak or as none.

    use super::*;

    /// Growth over the limit fails; growth under it, or a shrink, passes.
    #[test]
    fn compares_the_first_and_last_thirds() {
        let run = |rss: &[u64]| {
            let samples: Vec<Sample> = rss
                .iter()
                .enumerate()
                .map(|(i, &rss_kib)| Sample {
                    at: 10.0 * (i + 1) as f64,
                    rss_kib,
                })
                .collect();
            memory_verdict(&samples, Duration::from_secs(60)).failure
        };
        assert!(run(&[100, 100, 105, 105, 109, 109]).is_none());
        assert!(run(&[100, 100, 110, 110, 111, 112]).is_some());
        assert!(run(&[120, 110, 100, 100, 100, 100]).is_none());
        assert!(run(&[]).is_some());
    }

    /// Flags and their values; anything else is refused.
    #[test]
    fn reads_arguments() -> Result<()> {
        #[derive(clap::Parser)]
        struct Cli {
            /// The soak's arguments.
            #[command(flatten)]
            args: Args,
        }
        let parse = |words: &[&str]| {
            <Cli as clap::Parser>::try_parse_from(std::iter::once("soak").chain(words.iter().copied()))
                .map(|cli| cli.args)
        };
        let parsed = parse(&["--minutes", "2", "--threads", "8"])?;
        assert_eq!((parsed.minutes, parsed.threads), (2, 8));
        assert_eq!(parse(&[])?.minutes, DEFAULT_MINUTES);
        assert!(parse(&["--minutes", "0"]).is_err());
        assert!(parse(&["--threads", "0"]).is_err());
        assert!(parse(&["--minutes"]).is_err());
        assert!(parse(&["--seconds", "5"]).is_err());
        Ok(())
    }
}
