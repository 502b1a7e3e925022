//! Store: the SQLCipher key, from a key file, a systemd credential or the environment.

use std::fmt;
use std::path::{Path, PathBuf};

use super::types::StoreError;

/// Environment variable holding the key when neither a key file nor a credential exists.
pub(crate) const KEY_ENV: &str = "TRACKS_DB_KEY";
/// The systemd credential name (`LoadCredential=db-key:...`).
pub const CREDENTIAL_NAME: &str = "db-key";

/// A raw 256-bit SQLCipher key. `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct DbKey([u8; 32]);

impl fmt::Debug for DbKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DbKey(<redacted>)")
    }
}

/// Where the key in use was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    File(PathBuf),
    Credential(PathBuf),
    Environment,
}

/// Where a key may come from, read from the process environment by `main` and supplied by
/// tests directly.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    /// `$CREDENTIALS_DIRECTORY`, set by systemd for `LoadCredential=`.
    pub credentials_directory: Option<PathBuf>,
    /// The value of `TRACKS_DB_KEY`.
    pub env_key: Option<String>,
}

impl KeySources {
    pub fn from_env() -> KeySources {
        KeySources {
            credentials_directory: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            env_key: std::env::var(KEY_ENV).ok(),
        }
    }
}

impl DbKey {
    pub fn generate() -> Result<DbKey, StoreError> {
        crate::privacy::salt::generate_key()
            .map(DbKey)
            .map_err(|err| StoreError::Key(format!("the OS random source failed: {err}")))
    }

    pub fn parse(text: &str, origin: &str) -> Result<DbKey, StoreError> {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
            StoreError::Key(format!(
                "{origin} must hold exactly 64 hexadecimal characters (a raw 256-bit key)"
            ))
        })?;
        Ok(DbKey(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Finds the key in order of preference: the key file, the systemd credential, the
    /// environment. A key file readable by other users is refused.
    pub fn resolve(key_file: &Path, sources: &KeySources) -> Result<DbKey, StoreError> {
        DbKey::resolve_with_origin(key_file, sources).map(|(key, _)| key)
    }

    /// As [`DbKey::resolve`], also saying where the key came from.
    pub fn resolve_with_origin(
        key_file: &Path,
        sources: &KeySources,
    ) -> Result<(DbKey, KeyOrigin), StoreError> {
        if key_file.exists() {
            return Ok((
                DbKey::read_file(key_file)?,
                KeyOrigin::File(key_file.to_path_buf()),
            ));
        }
        if let Some(dir) = &sources.credentials_directory {
            let credential = dir.join(CREDENTIAL_NAME);
            if credential.exists() {
                return Ok((
                    DbKey::read_file(&credential)?,
                    KeyOrigin::Credential(credential),
                ));
            }
        }
        if let Some(text) = &sources.env_key {
            return Ok((
                DbKey::parse(text, &format!("${KEY_ENV}"))?,
                KeyOrigin::Environment,
            ));
        }
        Err(StoreError::Key(format!(
            "no database key: {} does not exist, no systemd credential `{CREDENTIAL_NAME}` and \
             ${KEY_ENV} is not set (run `tracks-collector init` to create one)",
            key_file.display()
        )))
    }

    pub fn read_file(path: &Path) -> Result<DbKey, StoreError> {
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|err| {
            StoreError::Key(format!("cannot read key file {}: {err}", path.display()))
        })?;
        DbKey::parse(&text, &format!("key file {}", path.display()))
    }

    /// Writes a new key file with mode 0600, refusing to replace an existing one.
    pub fn write_new_file(&self, path: &Path) -> Result<(), StoreError> {
        crate::files::write_private_new(path, format!("{}\n", self.to_hex()).as_bytes()).map_err(
            |err| StoreError::Key(format!("cannot create key file {}: {err}", path.display())),
        )
    }

    /// The `PRAGMA key` statement: a raw key, so SQLCipher skips passphrase derivation.
    pub(super) fn pragma(&self) -> String {
        format!("PRAGMA key = \"x'{}'\";", self.to_hex())
    }

    /// The `PRAGMA rekey` statement that re-encrypts the database with this key.
    pub(super) fn rekey_pragma(&self) -> String {
        format!("PRAGMA rekey = \"x'{}'\";", self.to_hex())
    }

    /// Replaces the key in `path` atomically (a new 0600 file renamed over the old one).
    pub fn replace_file(&self, path: &Path) -> Result<(), StoreError> {
        let fail = |err: std::io::Error| {
            StoreError::Key(format!("cannot replace key file {}: {err}", path.display()))
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = PathBuf::from(temporary);
        let _ = std::fs::remove_file(&temporary);
        crate::files::write_private_new(&temporary, format!("{}\n", self.to_hex()).as_bytes())
            .map_err(fail)?;
        std::fs::rename(&temporary, path).map_err(fail)
    }
}

fn check_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|err| {
        StoreError::Key(format!("cannot read key file {}: {err}", path.display()))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Key(format!(
            "key file {} is readable by other users (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}
