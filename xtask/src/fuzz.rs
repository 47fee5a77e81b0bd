//! `cargo xtask fuzz [--seconds N] [TARGET]`: the cargo-fuzz targets of `fuzz/`, each for N seconds, on the
//! nightly toolchain that libFuzzer's instrumentation needs.
//!
//! Each target starts from its corpus in `fuzz/corpus/TARGET` (kept between runs, not committed) with the
//! seeds of `fuzz/seeds/TARGET` (real tokens, headers and bodies, committed) copied in. A crash, a failed
//! assertion, an out-of-memory or a timeout leaves its input in `fuzz/artifacts/TARGET` and fails the task;
//! `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/<file>` replays it.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cmd::cmd, project_root};

/// The targets of `fuzz/Cargo.toml`, in the order they run.
pub const TARGETS: &[&str] = &["verify_token", "basic_header", "claims_json", "request_body"];

/// Seconds per target unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 60;

/// Runs the named target, or every target, for the given time; fails if any of them found a failure.
pub fn run(args: &[String]) -> Result<()> {
    let (seconds, targets) = parse_args(args)?;
    ensure_cargo_fuzz()?;
    let root = project_root()?;

    let mut results = Vec::new();
    for target in &targets {
        eprintln!("\n==> fuzz {target} for {seconds} s");
        let corpus = root.join("fuzz/corpus").join(target);
        let added = seed(&root.join("fuzz/seeds").join(target), &corpus)?;
        eprintln!("{added} seed(s) copied into fuzz/corpus/{target}");
        let outcome = cmd(
            "cargo",
            ["+nightly", "fuzz", "run", "--debug-assertions", target.as_str()],
        )
        // The sanitizer build goes to fuzz/target; a stable build's target folder is no place for it.
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "--".to_owned(),
            format!("-max_total_time={seconds}"),
            "-print_final_stats=1".to_owned(),
        ])
        .run();
        let inputs = fs::read_dir(&corpus).map_or(0, |dir| dir.count());
        results.push((target.clone(), outcome.is_ok(), inputs));
    }

    println!();
    println!("{:<14} {:<8} corpus", "target", "result");
    for (target, ok, inputs) in &results {
        let result = if *ok { "ok" } else { "FAILED" };
        println!("{target:<14} {result:<8} {inputs} input(s)");
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, ok, _)| !ok)
        .map(|(target, _, _)| target.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found failures in {}; the inputs are in fuzz/artifacts/<target>/",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Reads `[--seconds N] [TARGET]`, in either order.
fn parse_args(args: &[String]) -> Result<(u64, Vec<String>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut target = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--seconds" {
            let value = rest.next().context("`--seconds` needs a value")?;
            seconds = value
                .parse()
                .ok()
                .filter(|&s| s > 0)
                .with_context(|| format!("--seconds takes a positive number, got `{value}`"))?;
        } else if arg.starts_with('-') {
            bail!("`cargo xtask fuzz` takes `--seconds N` and a target name, got `{arg}`");
        } else if !TARGETS.contains(&arg.as_str()) {
            bail!("no fuzz target `{arg}`; the targets are {}", TARGETS.join(", "));
        } else if target.replace(arg.clone()).is_some() {
            bail!("`cargo xtask fuzz` takes one target at most");
        }
    }
    let targets = match target {
        Some(target) => vec![target],
        None => TARGETS.iter().map(|t| (*t).to_owned()).collect(),
    };
    Ok((seconds, targets))
}

/// Installs cargo-fuzz when `cargo +nightly fuzz` does not run; fails with a hint when there is no nightly
/// toolchain.
fn ensure_cargo_fuzz() -> Result<()> {
    if !succeeds("cargo", &["+nightly", "--version"]) {
        bail!(
            "fuzzing needs a nightly toolchain for libFuzzer's instrumentation: \
             rustup toolchain install nightly --profile minimal"
        );
    }
    if !succeeds("cargo", &["+nightly", "fuzz", "--version"]) {
        eprintln!("cargo-fuzz is not installed; installing it");
        cmd("cargo", ["install", "cargo-fuzz", "--locked"]).run()?;
    }
    Ok(())
}

/// Whether `program args...` runs and exits successfully, its output discarded.
fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Copies every seed file into the corpus folder, creating it; returns how many seeds there were.
fn seed(seeds: &Path, corpus: &Path) -> Result<usize> {
    fs::create_dir_all(corpus).with_context(|| format!("cannot create {}", corpus.display()))?;
    let entries = match fs::read_dir(seeds) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", seeds.display())),
    };
    let mut copied = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", seeds.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let to = corpus.join(format!("seed-{}", entry.file_name().to_string_lossy()));
            fs::copy(entry.path(), &to).with_context(|| format!("cannot copy a seed to {}", to.display()))?;
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    //! The task's target list must match `fuzz/Cargo.toml`, or a new target would never run.

    use super::*;

    /// Every `[[bin]]` of the fuzz package is in [`TARGETS`], and every target has seeds.
    #[test]
    fn targets_match_the_fuzz_package() -> Result<()> {
        let root = project_root()?;
        let manifest = fs::read_to_string(root.join("fuzz/Cargo.toml"))?;
        let bins: Vec<&str> = manifest
            .lines()
            .filter_map(|line| line.strip_prefix("name = \""))
            .filter_map(|rest| rest.strip_suffix('"'))
            .filter(|name| *name != "crm-auth-fuzz")
            .collect();
        assert_eq!(bins, TARGETS);
        for target in TARGETS {
            let seeds = fs::read_dir(root.join("fuzz/seeds").join(target))?.count();
            assert!(seeds > 0, "{target} has no seeds");
        }
        Ok(())
    }

    /// Seconds and target in either order; unknown targets and flags are refused.
    #[test]
    fn reads_arguments() -> Result<()> {
        let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse_args(&[])?, (DEFAULT_SECONDS, args(TARGETS)));
        assert_eq!(
            parse_args(&args(&["basic_header", "--seconds", "5"]))?,
            (5, args(&["basic_header"]))
        );
        assert!(parse_args(&args(&["nope"])).is_err());
        assert!(parse_args(&args(&["--seconds", "0"])).is_err());
        assert!(parse_args(&args(&["--minutes", "1"])).is_err());
        assert!(parse_args(&args(&["basic_header", "claims_json"])).is_err());
        Ok(())
    }
}
