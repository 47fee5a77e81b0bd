//! Child processes: each runs from the workspace root, echoes its command line first, and fails with its exit
//! status so the caller's error names the command that broke.

use std::{
    borrow::Cow,
    ffi::OsStr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// A command line about to run; built by [`cmd`].
pub struct Cmd {
    /// The process to start.
    inner: Command,
}

/// Builds `program args...`, to run from the workspace root.
pub fn cmd<I, S>(program: &str, args: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut inner = Command::new(program);
    inner.args(args);
    Cmd { inner }
}

impl Cmd {
    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets an environment variable for the child; the echoed command line shows it.
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.inner.env(key, value);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.inner.env_remove(key);
        self
    }

    /// Runs with the terminal's stdin, stdout and stderr; fails unless the command exits successfully.
    pub fn run(mut self) -> Result<()> {
        let line = self.prepare()?;
        let status = self
            .inner
            .status()
            .with_context(|| format!("cannot start `{line}`"))?;
        if !status.success() {
            bail!("`{line}` failed: {status}");
        }
        Ok(())
    }

    /// Runs with stdout captured and returned; stderr still reaches the terminal.
    pub fn read(mut self) -> Result<String> {
        let line = self.prepare()?;
        let output = self
            .inner
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("cannot start `{line}`"))?;
        if !output.status.success() {
            bail!("`{line}` failed: {}", output.status);
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{line}` printed something other than UTF-8"))
    }

    /// Points the command at the workspace root and echoes it; returns the echoed line for error messages.
    fn prepare(&mut self) -> Result<String> {
        self.inner.current_dir(crate::project_root()?);
        let line = self.line();
        eprintln!("$ {line}");
        Ok(line)
    }

    /// The command line as a shell would take it: environment overrides first, URL passwords hidden.
    fn line(&self) -> String {
        let env = self.inner.get_envs().filter_map(|(key, value)| {
            value.map(|value| format!("{}={}", key.to_string_lossy(), quote(&value.to_string_lossy())))
        });
        let words = std::iter::once(self.inner.get_program())
            .chain(self.inner.get_args())
            .map(|word| quote(&word.to_string_lossy()));
        env.chain(words).collect::<Vec<_>>().join(" ")
    }
}

/// Quotes a word for the echoed command line when a shell would otherwise split or expand it.
fn quote(word: &str) -> String {
    let word = redact(word);
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Replaces the password of a `scheme://user:password@host` URL with `***`; other text passes unchanged.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Some(scheme_end) = text.find("://").map(|i| i + 3) else {
        return Cow::Borrowed(text);
    };
    let rest = &text[scheme_end..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((user_info, _host)) = authority.rsplit_once('@') else {
        return Cow::Borrowed(text);
    };
    let Some((user, _password)) = user_info.split_once(':') else {
        return Cow::Borrowed(text);
    };
    let after_user_info = &rest[user_info.len()..];
    Cow::Owned(format!("{}{user}:***{after_user_info}", &text[..scheme_end]))
}

#[cfg(test)]
mod tests {
    //! The echoed command line must be pasteable and must never show a database password.

    use super::*;

    /// A password in a URL is hidden; the rest of the URL stays readable.
    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact("postgres://app:s3cr%40t@db:5432/crm"),
            "postgres://app:***@db:5432/crm"
        );
        assert_eq!(
            redact("postgresql://app:p@ss@db/crm?sslmode=off"),
            "postgresql://app:***@db/crm?sslmode=off"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/postgres"),
            "postgres://postgres@127.0.0.1/postgres"
        );
        assert_eq!(redact("-D warnings"), "-D warnings");
    }

    /// Words with blanks or shell syntax are quoted; a redacted URL is quoted so `***` is not a glob.
    #[test]
    fn quotes_what_a_shell_would_split() {
        assert_eq!(quote("--all-targets"), "--all-targets");
        assert_eq!(quote("-D warnings"), "'-D warnings'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("postgres://u:pw@h/db"), "'postgres://u:***@h/db'");
    }

    /// Environment overrides appear in front of the program, as `KEY=value` words.
    #[test]
    fn echoes_environment_first() {
        let line = cmd("cargo", ["doc", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings")
            .line();
        assert_eq!(line, "RUSTDOCFLAGS='-D warnings' cargo doc --no-deps");
    }
}
