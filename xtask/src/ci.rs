//! `cargo xtask ci`: the gate every change passes, in the order that fails fastest: formatting, lints, docs,
//! dependency direction, generated files, the tests, then the running server against its OpenAPI document.

use anyhow::{Context as _, Result};

use crate::{cmd::cmd, codegen, deps, schemathesis, test};

/// One step of the gate.
type Step = fn() -> Result<()>;

/// The steps, in order: a name for the `==> step` header and the function that runs it.
const STEPS: &[(&str, Step)] = &[
    ("fmt", fmt),
    ("clippy", clippy),
    ("doc", doc),
    ("deps", deps::run),
    ("codegen", codegen_check),
    ("test", tests),
    ("schemathesis", api_schema),
];

/// Runs every step, stopping at the first that fails.
pub fn run() -> Result<()> {
    for (name, step) in STEPS {
        eprintln!("\n==> {name}");
        step().with_context(|| format!("ci stopped at step `{name}`"))?;
    }
    eprintln!("\n==> ci passed");
    Ok(())
}

/// Formatting matches `rustfmt.toml`.
fn fmt() -> Result<()> {
    cmd("cargo", ["fmt", "--all", "--", "--check"]).run()
}

/// No clippy or compiler warning in any target, tests and benches included.
fn clippy() -> Result<()> {
    cmd(
        "cargo",
        [
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )
    .run()
}

/// The API docs build without a broken link or any other rustdoc warning.
fn doc() -> Result<()> {
    cmd("cargo", ["doc", "--workspace", "--all-features", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .run()
}

/// The committed generated files are what the code generates.
fn codegen_check() -> Result<()> {
    codegen::run(&["--check".to_owned()])
}

/// The whole test suite, with no extra arguments.
fn tests() -> Result<()> {
    test::run(&[])
}

/// Schemathesis finds no 5xx and no answer that differs from the OpenAPI document, at the default number of
/// cases.
fn api_schema() -> Result<()> {
    schemathesis::run(&[])
}
