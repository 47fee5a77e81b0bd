//! The load generator: wrk (Debian's package), driven by Lua scripts written here, one per kind of request.
//!
//! Every script ends with the same `done` hook, which prints one `WRKSTATS key=value ...` line that
//! [`Load::parse`] reads, so no figure depends on wrk's human-readable summary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The `done` hook every script ends with.
const STATS_HOOK: &str = r#"
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKSTATS requests=%d duration_us=%d connect_errors=%d read_errors=%d write_errors=%d status_errors=%d timeouts=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"#;

/// Gives every wrk thread its number (`id`), and `my_lines`, the share of a file's lines (tokens, users) that
/// the thread takes: every `threads`-th line, starting at its own number.
const THREAD_IDS: &str = r#"
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end
local function my_lines(file, threads)
  local mine, me, k = {}, id or 0, 0
  for line in io.lines(file) do
    if k % threads == me then
      mine[#mine + 1] = line
    end
    k = k + 1
  end
  return mine
end
"#;

/// What one wrk run measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Completed requests (any status).
    pub requests: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Connect, read and write errors.
    pub socket_errors: u64,
    /// Answers other than 2xx / 3xx.
    pub status_errors: u64,
    /// Requests that got no answer within wrk's `--timeout`.
    pub timeouts: u64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Slowest request.
    pub max_ms: f64,
}

impl Load {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Every kind of failure added up.
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.status_errors + self.timeouts
    }

    /// Reads the `WRKSTATS` line of wrk's output.
    fn parse(output: &str) -> Result<Load> {
        let line = output
            .lines()
            .find(|l| l.starts_with("WRKSTATS "))
            .context("wrk printed no WRKSTATS line")?;
        let field = |name: &str| -> Result<f64> {
            let value = line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("WRKSTATS has no {name}"))?;
            value
                .parse::<f64>()
                .with_context(|| format!("WRKSTATS {name}={value}"))
        };
        let count = |name: &str| field(name).map(|v| v as u64);
        Ok(Load {
            requests: count("requests")?,
            seconds: field("duration_us")? / 1e6,
            socket_errors: count("connect_errors")? + count("read_errors")? + count("write_errors")?,
            status_errors: count("status_errors")?,
            timeouts: count("timeouts")?,
            p50_ms: field("p50_us")? / 1e3,
            p99_ms: field("p99_us")? / 1e3,
            max_ms: field("max_us")? / 1e3,
        })
    }
}

/// One kind of request the load repeats.
pub enum Script {
    /// The same request every time.
    Fixed {
        /// `GET` or `POST`.
        method: &'static str,
        /// Header lines.
        headers: Vec<(String, String)>,
    },
    /// `GET path` with `Authorization: Bearer` cycling through the tokens of a file (one per line).
    Bearer {
        /// The token file.
        tokens: PathBuf,
    },
    /// `POST path` with a Bearer token taken from a queue that starts with a file's tokens; each answer's new
    /// token joins the end of the queue, so every token is presented exactly once.
    Rotating {
        /// The token file.
        tokens: PathBuf,
    },
    /// `POST path` with a password login body, cycling through the usernames of a file.
    Logins {
        /// One username per line.
        users: PathBuf,
        /// Their password.
        password: String,
        /// Their organisation.
        organisation: String,
    },
    /// `POST path` with a Bearer token, creating a user of a name no other request uses (the wrk thread's id
    /// and a counter after `prefix`), with a password and one unit.
    Creating {
        /// The caller's token.
        token: String,
        /// What every name starts with; a run's prefix must be new to the organisation.
        prefix: String,
        /// Every new user's password.
        password: String,
        /// Every new user's unit.
        unit: String,
    },
}

/// A Lua string literal. Lua's escapes are not JSON's (no `\u`), and the few values written into the scripts
/// (paths, file names, JSON text) need only quotes, backslashes and newlines escaped.
fn lua(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `request` hook of the scripts that prepare their requests in `reqs` (`n` of them) and cycle through them.
const CYCLE: &str = "function request()\n  i = i % n + 1\n  return reqs[i]\nend\n";

impl Script {
    /// The Lua source for requests to `path` from `threads` wrk threads.
    fn source(&self, path: &str, threads: usize) -> String {
        let body = match self {
            Script::Fixed { method, headers } => {
                let mut s = format!("wrk.method = {}\n", lua(method));
                for (name, value) in headers {
                    s.push_str(&format!("wrk.headers[{}] = {}\n", lua(name), lua(value)));
                }
                s
            }
            Script::Bearer { tokens } => format!(
                r#"{THREAD_IDS}
local reqs, n, i = {{}}, 0, 0
function init(args)
  for _, token in ipairs(my_lines({file}, {threads})) do
    n = n + 1
    reqs[n] = wrk.format("GET", {path}, {{ ["Authorization"] = "Bearer " .. token }})
  end
end
{CYCLE}"#,
                file = lua(&tokens.display().to_string()),
                path = lua(path),
            ),
            Script::Rotating { tokens } => format!(
                r#"{THREAD_IDS}
local queue, head, tail = {{}}, 1, 0
function init(args)
  queue = my_lines({file}, {threads})
  tail = #queue
end
function request()
  if head > tail then
    -- Never present a token twice: an empty queue shows as 404s, counted as errors.
    return wrk.format("POST", "/bench-token-pool-empty")
  end
  local token = queue[head]
  queue[head] = nil
  head = head + 1
  return wrk.format("POST", {path}, {{ ["Authorization"] = "Bearer " .. token }})
end
function response(status, headers, body)
  local token = body:match('"token":"([^"]+)"')
  if token then
    tail = tail + 1
    queue[tail] = token
  end
end
"#,
                file = lua(&tokens.display().to_string()),
                path = lua(path),
            ),
            Script::Logins {
                users,
                password,
                organisation,
            } => format!(
                r#"{THREAD_IDS}
local reqs, n, i = {{}}, 0, 0
function init(args)
  for _, user in ipairs(my_lines({file}, {threads})) do
    n = n + 1
    local body = '{{"username":"' .. user .. '","password":' .. {password} .. ',"organisation":' .. {organisation} .. '}}'
    reqs[n] = wrk.format("POST", {path}, {{ ["Content-Type"] = "application/json" }}, body)
  end
end
{CYCLE}"#,
                file = lua(&users.display().to_string()),
                password = lua(&serde_json::Value::from(password.as_str()).to_string()),
                organisation = lua(&serde_json::Value::from(organisation.as_str()).to_string()),
                path = lua(path),
            ),
            Script::Creating {
                token,
                prefix,
                password,
                unit,
            } => format!(
                r#"{THREAD_IDS}
local count = 0
function request()
  count = count + 1
  local body = '{{"username":"' .. {prefix} .. (id or 0) .. '-' .. count .. '","password":' .. {password} .. ',"units":[' .. {unit} .. ']}}'
  return wrk.format("POST", {path}, {{ ["Authorization"] = "Bearer " .. {token}, ["Content-Type"] = "application/json" }}, body)
end
"#,
                token = lua(token),
                prefix = lua(prefix),
                password = lua(&serde_json::Value::from(password.as_str()).to_string()),
                unit = lua(&serde_json::Value::from(unit.as_str()).to_string()),
                path = lua(path),
            ),
        };
        format!("{body}\n{STATS_HOOK}")
    }
}

/// Runs wrk and reads what it measured.
pub struct Wrk {
    /// Where the generated scripts go.
    pub script_dir: PathBuf,
    /// wrk threads.
    pub threads: usize,
}

/// One load run.
pub struct Run<'a> {
    /// The server.
    pub addr: SocketAddr,
    /// The path requested.
    pub path: &'a str,
    /// What to send.
    pub script: &'a Script,
    /// Open connections, each with one request in flight.
    pub connections: usize,
    /// How long (whole seconds).
    pub seconds: u64,
    /// How long one request may take before wrk counts a timeout.
    pub timeout_seconds: u64,
}

impl Wrk {
    /// Runs `run` once; `label` names the script file.
    pub fn run(&self, label: &str, run: &Run<'_>) -> Result<Load> {
        let threads = self.threads.min(run.connections).max(1);
        let script = self.script_dir.join(format!("{label}.lua"));
        std::fs::write(&script, run.script.source(run.path, threads))
            .with_context(|| format!("cannot write {}", script.display()))?;
        let url = format!("http://{}{}", run.addr, run.path);
        let output = Command::new("wrk")
            .args(["-t", &threads.to_string(), "-c", &run.connections.to_string()])
            .args(["-d", &format!("{}s", run.seconds.max(1))])
            .args(["--timeout", &format!("{}s", run.timeout_seconds.max(1))])
            .arg("-s")
            .arg(&script)
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .context("cannot start wrk")?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "wrk failed ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Load::parse(&stdout).with_context(|| format!("wrk output: {stdout}"))
    }
}

/// Makes sure wrk is installed: Debian's package, installed with apt-get when missing.
pub fn ensure_wrk() -> Result<()> {
    if wrk_version().is_some() {
        return Ok(());
    }
    eprintln!("wrk is not installed; installing Debian's package");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = apt(&["install", "-y", "wrk"]) || (apt(&["update"]) && apt(&["install", "-y", "wrk"]));
    if !installed {
        bail!("wrk is missing and `apt-get install -y wrk` failed; install wrk and run again");
    }
    wrk_version()
        .map(drop)
        .context("wrk still does not run after installing it")
}

/// `wrk -v`'s first line, e.g. `wrk 4.1.0 [epoll] Copyright (C) 2012 Will Glozer`.
pub fn wrk_version() -> Option<String> {
    let output = Command::new("wrk").arg("-v").stdin(Stdio::null()).output().ok()?;
    // wrk -v prints its banner and exits with status 1.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let first = text.lines().next()?.trim();
    first
        .starts_with("wrk")
        .then(|| first.split(" Copyright").next().unwrap_or(first).to_owned())
}

/// Writes one item per line.
pub fn write_lines(path: &Path, items: &[String]) -> Result<()> {
    std::fs::write(path, items.join("\n") + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    //! The parts that read wrk's output or write Lua.

    use super::*;

    /// The stats line is found among wrk's other output and read field by field.
    #[test]
    fn parses_the_stats_line() -> Result<()> {
        let out = "Running 1s test\nWRKSTATS requests=1000 duration_us=2000000 connect_errors=1 read_errors=0 \
                   write_errors=0 status_errors=2 timeouts=3 p50_us=1500 p99_us=9000 max_us=12000\n";
        let load = Load::parse(out)?;
        assert_eq!(load.requests, 1000);
        assert!((load.rate() - 500.0).abs() < 1e-9);
        assert_eq!(load.errors(), 6);
        assert!((load.p99_ms - 9.0).abs() < 1e-9);
        Ok(())
    }

    /// Quotes survive both the Lua and the JSON layer.
    #[test]
    fn quotes_are_escaped() {
        assert_eq!(lua(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
