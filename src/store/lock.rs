//! Store: the data folder's lock. One process at a time owns the store: a running daemon for
//! its whole life, or a command that writes while no daemon runs. Every layer the writer keeps
//! in memory (entries held back, filters, cell ids) is only true while nothing else writes the
//! file, so a second writer is refused here rather than trusted to behave.

use std::fs::{File, TryLockError};
use std::path::Path;

use super::types::StoreError;

/// An exclusive `flock` on the folder of the database, held until dropped. The kernel drops
/// it with the process, so a crash leaves no stale lock behind.
#[derive(Debug)]
#[must_use = "the store is only owned while the lock is held"]
pub struct FolderLock {
    /// The open folder the lock is on.
    _folder: File,
}

impl FolderLock {
    /// Takes the lock of the folder holding the database at `path`, or says who has it.
    pub fn take(path: &Path) -> Result<FolderLock, StoreError> {
        let folder = folder_of(path).to_path_buf();
        let open_error = |err: std::io::Error| StoreError::Open {
            path: folder.clone(),
            message: format!("cannot open the data folder to lock it: {err}"),
        };
        // The folder itself, not a file in it: a lock file left by root (a command run with
        // sudo) would be one the service's user could not open.
        let file = File::open(&folder).map_err(open_error)?;
        match file.try_lock() {
            Ok(()) => Ok(FolderLock { _folder: file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::Locked { folder }),
            Err(TryLockError::Error(err)) => Err(open_error(err)),
        }
    }
}

/// The folder of the database at `path`: what the lock is on, and where the daemon's control
/// socket lives.
pub(crate) fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_free_again_once_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("collector.db");
        let first = FolderLock::take(&path).expect("the first");
        match FolderLock::take(&path) {
            Err(StoreError::Locked { folder }) => assert_eq!(folder, dir.path()),
            other => panic!("a second holder: {other:?}"),
        }
        drop(first);
        let _again = FolderLock::take(&path).expect("free again");
        assert_eq!(folder_of(Path::new("collector.db")), Path::new("."));
    }
}
