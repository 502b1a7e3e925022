//! Store: making commits durable. The flusher thread syncs the WAL before any answer goes
//! out, and moves the WAL into the database file; deletions are scrubbed from both files.

use std::path::Path;
use std::sync::mpsc::Receiver;

use rusqlite::Connection;

use super::StoreError;
use super::ops::Applied;

/// A committed group's jobs, holding their answers until the WAL holding them is on disk.
pub(super) type Answers = Vec<Box<dyn Applied>>;

/// The least time between two checkpoints while the WAL holds frames.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Frames in the WAL past which it is also started over (64 MiB of 4 KiB pages).
const RESTART_FRAMES: i64 = 16_384;

/// Syncs the WAL to disk, then answers every group committed before the sync. Commits write
/// to the WAL without syncing (`synchronous = NORMAL`), so this thread's fsync is what makes
/// them durable; it runs while the writer commits the next group. A checkpoint that moves
/// frames out of the WAL syncs the WAL and the database itself first, so a group never waits
/// on frames that are gone.
///
/// The checkpoints run here too, on their own connection, so the writer never waits on the
/// database file's disk: a passive checkpoint copies the WAL into the database alongside the
/// writer. A writer that never pauses never lets the WAL start over, though, so once the WAL
/// holds `RESTART_FRAMES` a checkpoint waits for the current group and has the next one start
/// the WAL afresh.
pub(super) fn run(wal: &Path, committed: Receiver<Answers>, checkpointer: &Connection) {
    let mut last_checkpoint = std::time::Instant::now();
    while let Ok(first) = committed.recv() {
        let mut ready = vec![first];
        ready.extend(committed.try_iter());
        let synced = sync_wal(wal);
        if let Err(err) = &synced {
            tracing::error!(error = %err, "syncing the WAL failed; the writes of this group are not acknowledged");
        }
        for done in ready.into_iter().flatten() {
            done.answer(synced.as_ref().map(|_| ()));
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            last_checkpoint = std::time::Instant::now();
            if let Err(err) = checkpoint(checkpointer) {
                tracing::warn!(error = %err, "WAL checkpoint failed; the next one retries");
            }
        }
    }
}

fn checkpoint(conn: &Connection) -> Result<(), rusqlite::Error> {
    // (busy, frames in the WAL, frames copied into the database)
    let frames: i64 = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))?;
    if frames >= RESTART_FRAMES {
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))?;
    }
    Ok(())
}

fn sync_wal(wal: &Path) -> Result<(), StoreError> {
    // fsync works on the file, whichever descriptor names it; opening per sync follows the
    // WAL across truncation.
    let file = match std::fs::File::open(wal) {
        Ok(file) => file,
        // No WAL: everything was checkpointed into the database, and synced with it.
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(StoreError::Flush(err.to_string())),
    };
    file.sync_data()
        .map_err(|err| StoreError::Flush(err.to_string()))
}

/// Releases the pages deletions freed (already zeroed by secure_delete) and truncates the WAL,
/// whose older frames still hold the pages as they were before the deletion.
pub(super) fn scrub(conn: &Connection) {
    if let Err(err) = incremental_vacuum(conn) {
        tracing::warn!(error = %err, "incremental vacuum after a deletion failed");
    }
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "the WAL could not be truncated after a deletion (a reader was busy); the next deletion retries"
        ),
        Err(err) => tracing::warn!(error = %err, "WAL checkpoint after a deletion failed"),
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
