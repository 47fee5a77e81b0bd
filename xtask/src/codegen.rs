//! `cargo xtask codegen [--check]`: generated files that are committed stay what the code generates. Today
//! that is the OpenAPI document, `docs/openapi.json`, printed by the server's hidden `crm-auth openapi`
//! command for the default settings.

use std::{env, fs, io::ErrorKind};

use anyhow::{Context as _, Result, bail};

use crate::{cmd::cmd, project_root};

/// The committed OpenAPI document, relative to the workspace root.
pub const OPENAPI_PATH: &str = "docs/openapi.json";

/// Writes the generated files, or with `--check` fails when a committed one differs from what is generated.
pub fn run(args: &[String]) -> Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        [other, ..] => bail!("`cargo xtask codegen` takes only `--check`, got `{other}`"),
    };
    let generated = openapi()?;
    let path = project_root()?.join(OPENAPI_PATH);
    let committed = match fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if committed.as_deref() == Some(generated.as_str()) {
        eprintln!("{OPENAPI_PATH} is up to date");
        return Ok(());
    }
    if check {
        bail!(
            "{OPENAPI_PATH} is not what the code generates; run `cargo xtask codegen` and commit the result"
        );
    }
    fs::write(&path, generated).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {OPENAPI_PATH}");
    Ok(())
}

/// The OpenAPI document for the default settings: no configuration file, no `CRM_AUTH*` variable of the
/// caller's environment.
fn openapi() -> Result<String> {
    let mut command = cmd(
        "cargo",
        ["run", "--quiet", "--package", "crm-auth-server", "--", "openapi"],
    );
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("CRM_AUTH") {
            command = command.env_remove(key);
        }
    }
    command.read()
}
