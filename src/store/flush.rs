//! Store: making commits durable. The flusher thread syncs the WAL before any answer goes
//! out, and moves the WAL into the database file; deletions are scrubbed from both files.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use super::health::Health;
use super::ops::Applied;
use super::types::StoreError;

/// A committed group's jobs, holding their answers until the WAL holding them is on disk.
pub(super) type Answers = Vec<Box<dyn Applied>>;

/// A group the writer committed, on its way to the disk.
pub(super) struct Committed {
    /// The writer's count of groups, so that health knows which outcome is the newest.
    pub group: u64,
    pub answers: Answers,
}

/// The least time between two checkpoints while the WAL holds frames.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Frames in the WAL past which the writer is asked to start it over (64 MiB of 4 KiB pages).
const RESTART_FRAMES: i64 = 16_384;

/// Syncs the WAL to disk, then answers every group committed before the sync. Commits write
/// to the WAL without syncing (`synchronous = NORMAL`), so this thread's fsync is what makes
/// them durable; it runs while the writer commits the next group. A checkpoint that moves
/// frames out of the WAL syncs the WAL and the database itself first, so a group never waits
/// on frames that are gone.
///
/// After each sync it tells the checkpoint thread ([`checkpoints`]) that frames are waiting,
/// so neither the writer nor the answers wait on the database file's disk.
///
/// A failed sync leaves the groups it covered neither acknowledged nor refused: they were
/// committed and may be on disk, so each is answered `NotDurable`, and so is every group synced
/// after it until the writer's probe has made the store trustworthy again (see `Health`).
pub(super) fn run(
    wal: &Mutex<Wal>,
    committed: Receiver<Committed>,
    checkpoints: SyncSender<()>,
    health: &Health,
) {
    while let Ok(first) = committed.recv() {
        let mut ready = vec![first];
        ready.extend(committed.try_iter());
        let newest = ready.iter().map(|group| group.group).max().unwrap_or(0);
        let synced = match lock(wal).sync() {
            Err(err) => {
                tracing::error!(error = %err, "syncing the WAL failed; the writes of these groups may or may not be on disk, and no write is acknowledged until one reaches the disk again");
                health.poison(newest, &err);
                Err(err)
            }
            Ok(()) if health.poisoned() => Err(StoreError::NotDurable(
                "an earlier one failed, and the store has not recovered yet".into(),
            )),
            Ok(()) => {
                health.record(newest, Ok(()));
                Ok(())
            }
        };
        for done in ready.into_iter().flat_map(|group| group.answers) {
            done.answer(synced.as_ref().map(|_| ()));
        }
        // Full: a checkpoint is already due, which covers these frames too.
        let _ = checkpoints.try_send(());
    }
}

/// Copies the WAL into the database at most every `CHECKPOINT_EVERY` while commits arrive, on
/// a thread of its own: a checkpoint writes and syncs the database file, tens of milliseconds
/// under load, and the flusher must not hold the answers of the groups after it that long.
/// SQLite syncs the WAL before it copies frames out and the database before the WAL may start
/// over, so the flusher's syncs and a checkpoint may run at the same time.
pub(super) fn checkpoints(
    due: Receiver<()>,
    checkpointer: &Connection,
    restart: &AtomicBool,
    turn: &Mutex<()>,
) {
    let mut now_due = due.recv().is_ok();
    while now_due {
        let checkpointed = {
            let _turn = turn.lock().unwrap_or_else(PoisonError::into_inner);
            checkpoint(checkpointer, restart)
        };
        if let Err(err) = checkpointed {
            tracing::warn!(error = %err, "WAL checkpoint failed; the next one retries");
        }
        // Commits during the pause are covered by one checkpoint after it.
        let next = std::time::Instant::now() + CHECKPOINT_EVERY;
        now_due = false;
        loop {
            match due.recv_timeout(next.saturating_duration_since(std::time::Instant::now())) {
                Ok(()) => now_due = true,
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if !now_due {
            now_due = due.recv().is_ok();
        }
    }
}

/// A passive checkpoint; past `RESTART_FRAMES` the writer is asked to start the WAL over. It
/// must do so itself, between two groups: a writer that takes the next group at once never
/// leaves the write lock to another connection's restarting checkpoint.
fn checkpoint(conn: &Connection, restart: &AtomicBool) -> Result<(), rusqlite::Error> {
    // (busy, frames in the WAL, frames copied into the database)
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames >= RESTART_FRAMES {
        restart.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// The WAL file, opened once and kept open for its syncs.
///
/// Linux reports a failed write-back to each open file once, at its next fsync, and only to
/// files that were open when it failed (or, if no file has seen it yet, to the next one
/// opened). A file opened for each sync missed the failures that another descriptor had seen
/// first, such as SQLite's own during a checkpoint, and acknowledged writes that were not on
/// disk. The descriptor kept here sees every failure since it was opened.
pub(super) struct Wal {
    path: PathBuf,
    /// The open file and the (device, inode) it is.
    open: Option<(File, (u64, u64))>,
}

impl Wal {
    /// Opens the WAL at `path` now, if it exists, so its descriptor predates every write.
    pub(super) fn open(path: PathBuf) -> Wal {
        let mut wal = Wal { path, open: None };
        if let Err(err) = wal.follow() {
            tracing::warn!(error = %err, "cannot open the WAL; the first sync tries again");
        }
        wal
    }

    /// Syncs the WAL's data to disk.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        let not_durable = |err: std::io::Error| StoreError::NotDurable(err.to_string());
        if !self.follow().map_err(not_durable)? {
            // No WAL: everything was checkpointed into the database, and synced with it.
            return Ok(());
        }
        match &self.open {
            Some((file, _)) => file.sync_data().map_err(not_durable),
            None => Ok(()),
        }
    }

    /// Keeps the open file the one the path names: a truncating or restarting checkpoint
    /// keeps the file (and the descriptor stays good), but SQLite deletes the WAL when its last
    /// connection closes and makes a new one when the next opens (which may reuse the inode
    /// number, hence the link count). Answers whether it exists.
    fn follow(&mut self) -> std::io::Result<bool> {
        let named = match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                self.open = None;
                return Ok(false);
            }
            Err(err) => return Err(err),
        };
        if let Some((file, id)) = &self.open
            && *id == named
            && file.metadata()?.nlink() > 0
        {
            return Ok(true);
        }
        let file = File::open(&self.path)?;
        let meta = file.metadata()?;
        self.open = Some((file, (meta.dev(), meta.ino())));
        Ok(true)
    }
}

/// The WAL, shared by the flusher and the writer's probe; a panic while holding it left a
/// whole value behind.
pub(super) fn lock(wal: &Mutex<Wal>) -> MutexGuard<'_, Wal> {
    wal.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Releases the pages deletions freed (already zeroed by secure_delete) and truncates the WAL,
/// whose older frames still hold the pages as they were before the deletion. Answers whether
/// the WAL is empty now.
///
/// `turn` keeps the checkpoint thread out meanwhile: SQLite refuses a second checkpoint at
/// once, busy handler or not, and a deletion must not be left in the WAL because the passive
/// checkpoint of the previous second was running.
pub(super) fn scrub(conn: &Connection, turn: &Mutex<()>) -> bool {
    let _turn = turn.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(err) = incremental_vacuum(conn) {
        tracing::warn!(error = %err, "incremental vacuum after a deletion failed");
    }
    // Waits for readers up to the connection's busy timeout.
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(0) => true,
        Ok(_) => {
            tracing::warn!(
                "the WAL could not be truncated after a deletion (a reader was busy); retrying"
            );
            false
        }
        Err(err) => {
            tracing::warn!(error = %err, "WAL checkpoint after a deletion failed; retrying");
            false
        }
    }
}

/// Frees every page on the free list. The pragma yields a row per page freed and stops when
/// no longer stepped, so it is stepped to the end.
fn incremental_vacuum(conn: &Connection) -> Result<(), rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA incremental_vacuum")?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn descriptor(wal: &Wal) -> Option<i32> {
        wal.open.as_ref().map(|(file, _)| file.as_raw_fd())
    }

    /// The descriptor outlives truncations (so it sees every failed write-back since it was
    /// opened) and follows the path to a new file once SQLite deleted and made the WAL again.
    #[test]
    fn the_wal_stays_open_across_truncation_and_follows_a_new_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("collector.db-wal");
        std::fs::write(&path, b"frames").expect("wal");
        let mut wal = Wal::open(path.clone());
        let first = descriptor(&wal);
        assert!(first.is_some(), "opened at once");
        wal.sync().expect("sync");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_len(0))
            .expect("truncate");
        wal.sync().expect("sync");
        assert_eq!(descriptor(&wal), first, "kept across a truncation");

        std::fs::remove_file(&path).expect("delete");
        std::fs::write(&path, b"new frames").expect("a new wal");
        wal.sync().expect("sync");
        assert_ne!(descriptor(&wal), first, "the new file");
        let (file, _) = wal.open.as_ref().expect("open");
        assert_eq!(file.metadata().expect("metadata").len(), 10);

        std::fs::remove_file(&path).expect("delete");
        wal.sync().expect("no WAL: nothing to sync");
        assert_eq!(descriptor(&wal), None);
    }
}
