//! `cargo xtask deps`: dependencies point one way. The core library does no I/O and the SDK carries no server,
//! so neither may pull in the server's stack, not even through a transitive dependency; xtask stays small.

use anyhow::{Result, bail};

use crate::cmd::{Cmd, cmd};

/// Each package and the packages its normal (non-dev, non-build) dependency graph must not contain.
const RULES: &[(&str, &[&str])] = &[
    (
        "crm-auth-core",
        &["diesel", "actix-web", "actix-http", "reqwest", "tokio"],
    ),
    // utoipa is the server's, for its OpenAPI document; core derives schemas only behind its `openapi` feature.
    ("crm-auth-client", &["diesel", "actix-web", "utoipa"]),
    ("crm-auth-actix", &["diesel", "crm-auth-server"]),
    // xtask builds in seconds; what needs the server, an HTTP client or a runtime lives in crm-auth-bench.
    (
        "xtask",
        &["crm-auth-server", "diesel", "reqwest", "tokio", "actix-web"],
    ),
];

/// Checks every rule, shows how each forbidden package gets in, and fails if any does.
pub fn run() -> Result<()> {
    let mut violations = Vec::new();
    for (package, forbidden) in RULES {
        let tree = cargo_tree(package)
            .args(["--prefix", "none", "--format", "{p}"])
            .read()?;
        for (name, version) in packages(&tree).filter(|(name, _)| forbidden.contains(name)) {
            let spec = format!("{name}@{version}");
            eprintln!("{package} must not depend on {name}; it gets in through:");
            cargo_tree(package).args(["-i", &spec]).run()?;
            violations.push(format!("{package} depends on {spec}"));
        }
    }
    if !violations.is_empty() {
        bail!("forbidden dependencies: {}", violations.join("; "));
    }
    for (package, forbidden) in RULES {
        eprintln!("{package}: none of {}", forbidden.join(", "));
    }
    Ok(())
}

/// `cargo tree` over `package`'s normal dependencies, on every target (so that a dependency behind a `cfg` for
/// another platform cannot hide) and with every feature.
fn cargo_tree(package: &str) -> Cmd {
    cmd(
        "cargo",
        [
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--target",
            "all",
            "--all-features",
        ],
    )
}

/// The distinct `(name, version)` pairs in `cargo tree --prefix none --format {p}` output, whose lines read
/// `name vX.Y.Z [(path)] [(*)]`.
fn packages(tree: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut seen = std::collections::BTreeSet::new();
    tree.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some((words.next()?, words.next()?.strip_prefix('v')?))
        })
        .filter(move |package| seen.insert(*package))
}

#[cfg(test)]
mod tests {
    //! A misread tree would let a forbidden dependency through unnoticed.

    use super::*;

    /// Names and versions come out once each, path and dedup markers ignored.
    #[test]
    fn reads_tree_lines() {
        let tree = "crm-auth-client v0.1.0 (/work/crates/client)\n\
                    crm-auth-core v0.1.0 (/work/crates/core)\n\
                    tokio v1.47.1\n\
                    tokio-macros v2.5.0 (proc-macro)\n\
                    tokio v1.47.1 (*)\n\
                    \n";
        let found = packages(tree).collect::<Vec<_>>();
        assert_eq!(
            found,
            [
                ("crm-auth-client", "0.1.0"),
                ("crm-auth-core", "0.1.0"),
                ("tokio", "1.47.1"),
                ("tokio-macros", "2.5.0"),
            ]
        );
    }
}
