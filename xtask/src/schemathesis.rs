//! `cargo xtask schemathesis [--examples N]`: property-based tests of the running server against its own
//! OpenAPI document. Schemathesis reads `/openapi.json`, generates valid and invalid requests for every
//! operation, and checks every answer: no 5xx, a status the document lists for the operation, the declared
//! content type, and a body that fits the response schema.
//!
//! The server is a debug build on SQLite in a temporary folder, with cheap password hashing; schemathesis
//! logs in with the demo user's key and password, so the success answers are checked too, not only the
//! refusals.

use std::{
    env,
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd::cmd,
    server::{self, BASE_PATH, Options, Server},
};

/// The schemathesis release the task runs; its command line differs between major versions.
pub const VERSION: &str = "4.32.5";

/// Test cases per operation and phase unless `--examples` says otherwise: about a thousand requests, some
/// ten seconds once the server is built.
const DEFAULT_EXAMPLES: u32 = 100;

/// Hypothesis's seed: the same requests on every run, so that a failure in CI reproduces on a laptop.
const SEED: &str = "1495713382";

/// Seconds each request may take; the slowest are password logins, a few milliseconds with cheap hashing.
const REQUEST_TIMEOUT: &str = "10";

/// What every answer is checked for.
const CHECKS: &[&str] = &[
    // No 5xx: `INTERNAL_ERROR` is a bug, and `UNAVAILABLE` cannot happen with a local SQLite.
    "not_a_server_error",
    // The status is one the document lists for the operation.
    "status_code_conformance",
    // The `Content-Type` is the one the document declares for that status.
    "content_type_conformance",
    // The body fits the schema the document declares for that status.
    "response_schema_conformance",
];

/// Installs schemathesis when needed, starts the server, runs schemathesis against it, and fails on any
/// failed check.
pub fn run(args: &[String]) -> Result<()> {
    let examples = parse_args(args)?;
    let python_path = ensure_installed()?;

    cmd(
        "cargo",
        ["build", "--package", "crm-auth-server", "--bin", "crm-auth"],
    )
    .run()?;
    let binary = server::binary(false)?;
    let mut server = Server::start(&Options {
        binary: &binary,
        database_url: None,
        cheap_hashing: true,
        log: "warn",
        // Schemathesis tries the demo user's name with made-up passwords; a lockout would lock out the
        // logins that give it tokens.
        settings: &[("CRM_AUTH__AUTH__LOCKOUT__THRESHOLD", "1000000000")],
    })?;

    let work = server::temp_dir("crm-auth-schemathesis")?;
    let outcome = test(&server, &work, python_path.as_ref(), examples);
    let crashed = server.check_running();
    if outcome.is_err() {
        eprintln!("the server's log ends:\n{}", server.log_tail(40));
    }
    drop(server);
    let _ = fs::remove_dir_all(&work);
    crashed?;
    outcome
}

/// Reads `[--examples N]`.
fn parse_args(args: &[String]) -> Result<u32> {
    match args {
        [] => Ok(DEFAULT_EXAMPLES),
        [flag, n] if flag == "--examples" => match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("--examples takes a positive number, got `{n}`"),
        },
        [other, ..] => bail!("`cargo xtask schemathesis` takes only `--examples N`, got `{other}`"),
    }
}

/// Runs schemathesis against `server`, with a configuration file in `work` that gives it the demo
/// credentials for the two security schemes of the document.
fn test(server: &Server, work: &Path, python_path: Option<&PathBuf>, examples: u32) -> Result<()> {
    let demo = &server.demo;
    // The key login's Basic credentials are fixed. Refresh, release and validate need a live token, and
    // refresh and release end the one they get, so schemathesis logs in again whenever an answer is 401.
    let config = format!(
        "[auth.openapi.web_api_key]\n\
         username = {key}\n\
         password = \"\"\n\
         \n\
         [auth.dynamic.openapi.bearer_token]\n\
         path = \"{BASE_PATH}/authentication/token\"\n\
         method = \"post\"\n\
         payload = {{ username = {username}, password = {password}, organisation = {organisation} }}\n\
         extract_selector = \"/data/token\"\n",
        key = toml_str(&demo.key),
        username = toml_str(&demo.username),
        password = toml_str(&demo.password),
        organisation = toml_str(&demo.organisation),
    );
    let config_path = work.join("schemathesis.toml");
    fs::write(&config_path, config).with_context(|| format!("cannot write {}", config_path.display()))?;

    let mut command = schemathesis(python_path)
        .args([OsStr::new("--config-file"), config_path.as_os_str()])
        .args([
            "run".to_owned(),
            format!("{}/openapi.json", server.url()),
            "--checks".to_owned(),
            CHECKS.join(","),
            "--max-examples".to_owned(),
            examples.to_string(),
            "--seed".to_owned(),
            SEED.to_owned(),
            "--request-timeout".to_owned(),
            REQUEST_TIMEOUT.to_owned(),
            "--workers".to_owned(),
            "1".to_owned(),
            "--generation-database".to_owned(),
            "none".to_owned(),
            // The import's body is NDJSON, which schemathesis cannot generate ("serialization not
            // possible"); the import's answers are tested by the server's `import` tests instead.
            "--exclude-operation-id".to_owned(),
            "admin_import".to_owned(),
        ]);
    if env::var_os("NO_COLOR").is_some() || env::var_os("CI").is_some() {
        command = command.args(["--no-color"]);
    }
    command
        .run()
        .context("schemathesis found answers that do not match docs/openapi.json (see above)")
}

/// `python3 -m schemathesis.cli`, with the task's own installation on `PYTHONPATH` when there is one.
fn schemathesis(python_path: Option<&PathBuf>) -> crate::cmd::Cmd {
    let command = cmd("python3", ["-m", "schemathesis.cli"]);
    match python_path {
        Some(dir) => command.env("PYTHONPATH", dir),
        None => command,
    }
}

/// Finds schemathesis [`VERSION`]: the Python environment's own, else the task's installation under the
/// target folder, installing it there with pip when missing. Returns the folder to put on `PYTHONPATH`, if
/// any.
///
/// `pip install --target` leaves the system's Python untouched and works where the system's packages are
/// marked as externally managed (Debian 12).
fn ensure_installed() -> Result<Option<PathBuf>> {
    if installed_version(None).as_deref() == Some(VERSION) {
        return Ok(None);
    }
    let dir = server::target_dir()?.join("schemathesis").join(VERSION);
    if installed_version(Some(&dir)).as_deref() == Some(VERSION) {
        return Ok(Some(dir));
    }
    eprintln!("installing schemathesis {VERSION} into {}", dir.display());
    cmd(
        "python3",
        [
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--upgrade",
            "--target",
        ],
    )
    .args([dir.as_os_str()])
    .args([format!("schemathesis=={VERSION}")])
    .run()
    .context("cannot install schemathesis; python3 with pip and access to PyPI are needed")?;
    match installed_version(Some(&dir)) {
        Some(version) if version == VERSION => Ok(Some(dir)),
        other => bail!("schemathesis {VERSION} was installed, yet it reports {other:?}"),
    }
}

/// The version `python3 -m schemathesis.cli --version` reports, if it runs.
fn installed_version(python_path: Option<&PathBuf>) -> Option<String> {
    let mut command = std::process::Command::new("python3");
    command.args(["-m", "schemathesis.cli", "--version"]);
    if let Some(dir) = python_path {
        command.env("PYTHONPATH", dir);
    }
    let output = command.stdin(std::process::Stdio::null()).output().ok()?;
    if !output.status.success() {
        return None;
    }
    // `python -m schemathesis.cli, version 4.32.5`
    let text = String::from_utf8_lossy(&output.stdout);
    text.rsplit("version").next().map(|v| v.trim().to_owned())
}

/// `text` as a TOML basic string.
fn toml_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    //! The configuration file carries the demo credentials; a quoting slip would make schemathesis refuse it.

    use super::*;

    /// Quotes, backslashes and control characters are escaped; the rest passes unchanged.
    #[test]
    fn quotes_toml_strings() {
        assert_eq!(toml_str("admin"), "\"admin\"");
        assert_eq!(toml_str(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(toml_str("a\nb"), "\"a\\u000Ab\"");
    }

    /// Only `--examples` with a positive number is accepted.
    #[test]
    fn reads_examples() {
        let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_args(&[]).ok(), Some(DEFAULT_EXAMPLES));
        assert_eq!(parse_args(&args(&["--examples", "5"])).ok(), Some(5));
        assert!(parse_args(&args(&["--examples", "0"])).is_err());
        assert!(parse_args(&args(&["--examples"])).is_err());
        assert!(parse_args(&args(&["--seed", "1"])).is_err());
    }
}
