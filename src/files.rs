//! Files: private files, made with their mode from the start (never created wider and then
//! narrowed), for the database, its key and the collector's identity.

use std::path::Path;

/// Creates `path` with mode 0600 and writes `bytes`; fails if it already exists.
pub(crate) fn write_private_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
