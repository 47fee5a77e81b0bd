//! The README's quick starts, built: for each of the "Application teams" and "Backend teams" sections a scratch
//! project in `target/quickstart/<name>` made of the section's `Cargo.toml` lines and Rust blocks, with the
//! crm-auth crates pointed at this workspace by path. It builds with the workspace's lock file (offline, so that it gets the
//! versions the workspace was tested with) and target dir (so that it reuses what the workspace compiled).

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use crate::cmd::cmd;

/// The README sections that hold a quick start, with the name of the project each is built as.
const SECTIONS: &[(&str, &str)] = &[
    ("## Application teams", "application"),
    ("## Backend teams", "service"),
];

/// The workspace crates a quick start may name, with their folders.
const CRATES: &[(&str, &str)] = &[
    ("crm-auth-actix", "crates/actix"),
    ("crm-auth-client", "crates/client"),
    ("crm-auth-core", "crates/core"),
];

/// Writes the scratch projects and builds them.
pub fn run(root: &Path) -> Result<()> {
    let readme = fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    for (heading, name) in SECTIONS {
        build(root, &readme, heading, name)?;
    }
    Ok(())
}

/// Writes the quick start of the README's section `heading` as the project `name` and builds it.
fn build(root: &Path, readme: &str, heading: &str, name: &str) -> Result<()> {
    let section =
        section(readme, heading).with_context(|| format!("README.md has no {heading:?} section"))?;
    let toml = blocks(section, "```toml")
        .into_iter()
        .next()
        .with_context(|| format!("the {heading:?} section has no toml block"))?;
    let code = blocks(section, "```rust").join("\n");
    let dir = root.join("target/quickstart").join(name);
    fs::create_dir_all(dir.join("src"))?;
    fs::write(dir.join("Cargo.toml"), manifest(&toml, name, root))?;
    fs::write(dir.join("src/main.rs"), code)?;
    fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    cmd("cargo", ["build", "--offline", "--quiet", "--manifest-path"])
        .args([dir.join("Cargo.toml")])
        .env("CARGO_TARGET_DIR", root.join("target"))
        .run()
}

/// The text of the README's section, up to the next `## ` heading.
fn section<'a>(readme: &'a str, heading: &str) -> Option<&'a str> {
    let start = readme.find(heading)?;
    let rest = &readme[start + heading.len()..];
    Some(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
}

/// Every fenced block of `text` opened by `fence` (```` ```rust ````, ```` ```toml ````), in order.
fn blocks(text: &str, fence: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match &mut current {
            None if line.trim_end() == fence => current = Some(String::new()),
            None => {}
            Some(_) if line.trim_end() == "```" => found.extend(current.take()),
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    found
}

/// The scratch project's manifest: the README's lines, a crm-auth crate's source replaced by its path here.
fn manifest(toml: &str, name: &str, root: &Path) -> String {
    let mut out = format!(
        "[package]\nname = \"quickstart-{name}\"\nversion = \"0.0.0\"\nedition = \"2024\"\npublish = false\n\n\
         # Not a member of the crm-auth workspace it sits in.\n[workspace]\n\n",
    );
    for line in toml.lines() {
        let name = line.split('=').next().unwrap_or_default().trim();
        match CRATES.iter().find(|(crate_name, _)| *crate_name == name) {
            Some((_, folder)) => {
                let path = root.join(folder);
                let features = line.find("features").map(|at| &line[at..]);
                out.push_str(&format!("{name} = {{ path = {:?}", path.display().to_string()));
                if let Some(features) = features {
                    out.push_str(", ");
                    out.push_str(features.trim_end_matches([' ', '}']));
                }
                out.push_str(" }\n");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crm_auth_crates_are_pointed_at_the_workspace() {
        let toml = "[dependencies]\nactix-web = \"4\"\ncrm-auth-actix = { git = \"https://x\", features = [\"jwks\"] }\n";
        let manifest = manifest(toml, "service", Path::new("/w"));
        assert!(manifest.contains("actix-web = \"4\"\n"), "{manifest}");
        assert!(
            manifest.contains("crm-auth-actix = { path = \"/w/crates/actix\", features = [\"jwks\"] }\n"),
            "{manifest}"
        );
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn blocks_are_found_in_order() {
        let text = "a\n```rust\none\n```\n```toml\nx\n```\n```rust\ntwo\n```\n";
        assert_eq!(blocks(text, "```rust"), ["one\n", "two\n"]);
        assert_eq!(blocks(text, "```toml"), ["x\n"]);
    }
}
