//! Store: whether writes reach the disk. The writer and the flusher record how each group
//! ended; the writer, `/healthz` and the metrics read it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use super::types::StoreError;

/// How the last groups ended, shared by the writer and the flusher threads.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// The newest group (by its number) whose outcome is known, and its error; `None` once a
    /// group was committed and synced. A number, because the writer records a failed commit
    /// while the flusher may still be syncing an older group that succeeded.
    last: Mutex<(u64, Option<StoreError>)>,
    /// A sync of the WAL failed. What was committed since the last good sync may or may not be
    /// on disk, and a later sync that succeeds does not tell: the kernel reports a failed
    /// write-back once per open file, then counts the pages it could not write as clean. So
    /// no write is acknowledged until the writer's probe has moved everything committed into
    /// the database file and synced both files (`writer::recover`).
    poisoned: AtomicBool,
}

impl Health {
    /// Group `group` ended with `outcome`, unless a newer group's outcome is known already.
    pub(super) fn record(&self, group: u64, outcome: Result<(), &StoreError>) {
        let mut last = self.last();
        if group >= last.0 {
            *last = (group, outcome.err().cloned());
        }
    }

    /// A sync failed while answering up to `group`.
    pub(super) fn poison(&self, group: u64, err: &StoreError) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.record(group, Err(err));
    }

    /// The probe of group `group` reached the disk with everything committed before it.
    pub(super) fn cure(&self, group: u64) {
        self.poisoned.store(false, Ordering::SeqCst);
        self.record(group, Ok(()));
    }

    pub(super) fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Why writes fail, if the last one did.
    pub(super) fn failure(&self) -> Option<StoreError> {
        self.last().1.clone()
    }

    fn last(&self) -> MutexGuard<'_, (u64, Option<StoreError>)> {
        // A panic while holding it left a whole value behind: nothing to repair.
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Rewrites the probe row: a commit that writes a page, which an empty one does not.
pub(super) fn write_probe(conn: &Connection) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO write_probe (id, probes) VALUES (1, 1) \
         ON CONFLICT (id) DO UPDATE SET probes = probes + 1",
    )?
    .execute([])?;
    Ok(())
}
