//! Store: SQLite itself: started once per process, and connections opened the one way, with
//! their key and pragmas; the files beside the database.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::{Connection, OpenFlags};

use super::key::DbKey;
use super::page_cache;
use super::types::{Access, StoreError};

/// Before SQLite's first use in the process: puts the page cache of [`page_cache`] in place,
/// then starts SQLite; answers why SQLite did not start.
///
/// SQLite runs SQLCipher's set-up after it has marked itself started and outside its own lock,
/// so a connection opened on another thread meanwhile found SQLCipher not set up and its
/// `PRAGMA key` failed: in about one fresh process in 30 where eight threads opened stores at
/// once. Started here, under the `OnceLock`, every other opener waits for the set-up to end.
pub fn start_sqlite() -> Result<(), String> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            if let Err(err) = page_cache::install() {
                tracing::warn!(error = %err, "SQLite's default page cache is in use: once the cache is full, commits take milliseconds longer");
            }
            // Opening a connection starts SQLite, SQLCipher's set-up included, on this thread.
            Connection::open_in_memory()
                .map(drop)
                .map_err(|err| format!("SQLite did not start: {err}"))
        })
        .clone()
}

/// The one place connections are opened and their pragmas set.
pub(super) fn open_connection(
    path: &Path,
    key: &DbKey,
    access: Access,
) -> Result<Connection, StoreError> {
    let open_error = |message: String| StoreError::Open {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        return Err(open_error("no such file".into()));
    }
    start_sqlite().map_err(open_error)?;
    let flags = match access {
        Access::ReadWrite => OpenFlags::SQLITE_OPEN_READ_WRITE,
        Access::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|err| open_error(err.to_string()))?;
    // SQLCipher's own log would print page-level noise on stderr for a wrong key, which is
    // reported here as one clear error instead.
    conn.execute_batch("PRAGMA cipher_log_level = NONE;")
        .map_err(|err| open_error(err.to_string()))?;
    conn.execute_batch(&key.pragma())
        .map_err(|err| open_error(err.to_string()))?;
    // The first read decrypts page 1: a wrong key fails here, before any write.
    if let Err(err) = conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        return Err(match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => StoreError::WrongKey {
                path: path.to_path_buf(),
            },
            _ => open_error(err.to_string()),
        });
    }
    // secure_delete: freed pages are zeroed, so deleted rows do not linger in the file.
    // temp_store=MEMORY: sorts and temporary tables never touch a temp file.
    conn.execute_batch(
        "PRAGMA secure_delete = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;",
    )?;
    if access == Access::ReadWrite {
        // The store's one synchronous level. NORMAL is safe: a commit reaches the WAL in the
        // OS, and no answer goes out before the writer's flusher has fsynced the WAL holding it
        // (invariant 8, see flush::run); a checkpoint syncs the WAL and the database itself.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;",
        )?;
    }
    Ok(conn)
}

/// The sizes of the database file at `path` and its WAL (0 for a missing file).
pub(super) fn file_sizes(path: &Path) -> (u64, u64) {
    let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
    (size(path), size(&wal_path(path)))
}

/// SQLite's write-ahead log beside the database.
pub(super) fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// Makes the directory entries of the database and its WAL durable: a power cut right after
/// the first commit must not lose the files themselves.
pub(super) fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Err(err) = std::fs::File::open(dir).and_then(|dir| dir.sync_all()) {
        tracing::warn!(error = %err, dir = %dir.display(), "cannot sync the state directory");
    }
}

/// Creates an empty database file with mode 0600 so SQLite (and its -wal/-shm files, which copy
/// the database's mode) never exist with wider permissions.
pub(super) fn create_private_file(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return Ok(());
    }
    let open_error = |err: std::io::Error| StoreError::Open {
        path: path.to_path_buf(),
        message: err.to_string(),
    };
    crate::files::write_private_new(path, b"").map_err(open_error)
}
