//! Files and folders the server creates hold secrets (the database, the generated signing key): folders are
//! made 0700 and files 0600, whatever the umask.

use std::path::Path;

/// Creates `dir` and any missing parents, each new one readable by the owner only.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates a new file readable and writable by the owner only; fails if it exists.
pub fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes sure the file at `path` exists and is readable and writable by the owner only: creates it empty if
/// it is missing, else narrows its mode. SQLite creates a database's WAL and shared-memory files with the
/// database file's mode, so this covers them too.
pub fn ensure_private_file(path: &Path) -> std::io::Result<()> {
    match create_private_file(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => narrow(path),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
fn narrow(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn narrow(_: &Path) -> std::io::Result<()> {
    Ok(())
}
