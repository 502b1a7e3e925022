//! Store: a write on its way through the writer thread, typed from the caller's request to
//! the answer the caller awaits.
//!
//! Each kind of write is a [`Write`] with its own output type; the writer runs them behind one
//! erased interface ([`Queued`], then [`Applied`] once run), so an answer can only ever be the
//! type its caller asked for.

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::cells::{CellCounts, rebuild};
use super::deferred::Deferrals;
use super::on_file::OnFile;
use super::types::Settled;
use super::types::StoreError;
use crate::link::LinkRules;

/// What a write reaches while it runs: the open transaction and what the writer keeps in
/// memory across groups.
pub(super) struct Writing<'a> {
    pub conn: &'a Connection,
    pub memory: &'a mut Memory,
    pub rules: &'a LinkRules,
}

/// One kind of write.
pub(super) trait Write: Send + 'static {
    type Output: Send + 'static;
    /// Deletions are followed by a scrub: freed pages released and the WAL truncated, so the
    /// deleted rows' old page images leave the files too.
    const DELETES: bool = false;
    /// The writer commits this write's group and stops.
    const STOPS: bool = false;

    /// Runs inside the group's transaction (or a savepoint of it).
    fn apply(&self, writing: &mut Writing<'_>) -> Result<Self::Output, StoreError>;
}

/// A write and the caller waiting for its answer.
pub(super) struct Job<W: Write> {
    write: W,
    reply: oneshot::Sender<Result<W::Output, StoreError>>,
}

impl<W: Write> Job<W> {
    pub(super) fn new(write: W) -> (Job<W>, oneshot::Receiver<Result<W::Output, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (Job { write, reply }, answer)
    }
}

/// A job not run yet (or rolled back), whatever its kind.
pub(super) trait Queued: Send {
    fn deletes(&self) -> bool;
    fn stops(&self) -> bool;
    fn apply(self: Box<Self>, writing: &mut Writing<'_>) -> Box<dyn Applied>;
    /// Answers `err` without running: the group could not be committed.
    fn refuse(self: Box<Self>, err: &StoreError);
}

/// A job that ran, holding its result until the group is committed and on disk.
pub(super) trait Applied: Send {
    fn failed(&self) -> bool;
    /// The job's result becomes `err`: what it wrote could not be kept.
    fn fail(self: Box<Self>, err: StoreError) -> Box<dyn Applied>;
    /// Back to the queue after its transaction rolled back.
    fn undo(self: Box<Self>) -> Box<dyn Queued>;
    /// Sends the result, or `flushed`'s error when its group did not reach the disk.
    fn answer(self: Box<Self>, flushed: Result<(), &StoreError>);
}

impl<W: Write> Queued for Job<W> {
    fn deletes(&self) -> bool {
        W::DELETES
    }

    fn stops(&self) -> bool {
        W::STOPS
    }

    fn apply(self: Box<Self>, writing: &mut Writing<'_>) -> Box<dyn Applied> {
        let result = self.write.apply(writing);
        Box::new(Done { job: *self, result })
    }

    fn refuse(self: Box<Self>, err: &StoreError) {
        let _ = self.reply.send(Err(err.clone()));
    }
}

struct Done<W: Write> {
    job: Job<W>,
    result: Result<W::Output, StoreError>,
}

impl<W: Write> Applied for Done<W> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn fail(self: Box<Self>, err: StoreError) -> Box<dyn Applied> {
        Box::new(Done {
            job: self.job,
            result: Err(err),
        })
    }

    fn undo(self: Box<Self>) -> Box<dyn Queued> {
        Box::new(self.job)
    }

    fn answer(self: Box<Self>, flushed: Result<(), &StoreError>) {
        // A job that failed rolled back to its savepoint: its own error says what happened,
        // whatever became of the rest of the group.
        let Done { job, result } = *self;
        let result = match (result, flushed) {
            (Ok(_), Err(err)) => Err(err.clone()),
            (result, _) => result,
        };
        // A caller that gave up (client gone) dropped its receiver: nothing to do.
        let _ = job.reply.send(result);
    }
}

/// Rewrites the probe row: answered once a write of the group reached the disk, which proves
/// the writer is alive and the disk takes writes (an empty commit writes nothing).
pub(super) struct Ping;

impl Write for Ping {
    type Output = ();

    fn apply(&self, writing: &mut Writing<'_>) -> Result<(), StoreError> {
        super::health::write_probe(writing.conn)
    }
}

/// Queued behind every pending write: the writer commits them, then stops; `crash`: as if
/// the process died right after that commit (see `Store::crash`).
pub(super) struct Shutdown {
    pub crash: bool,
}

impl Write for Shutdown {
    type Output = ();
    const STOPS: bool = true;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<(), StoreError> {
        writing.memory.crashed |= self.crash;
        Ok(())
    }
}

/// What the writer keeps in memory across groups.
#[derive(Default)]
pub(super) struct Memory {
    pub on_file: OnFile,
    pub cells: CellCounts,
    pub deferred: Deferrals,
    /// The writer stops as a killed process would: nothing held in memory is written.
    pub crashed: bool,
}

/// Settles for any deletion: every entry held back is written first.
pub(super) fn settle_counts<'c>(writing: &mut Writing<'c>) -> Result<Settled<'c>, StoreError> {
    settle_cell_counts(writing)?;
    writing.memory.deferred.settle(writing.conn)?;
    Ok(Settled::after_settling(writing.conn))
}

/// Settles for the purge at `cutoff` that forgets the page views received before
/// `views_before`: the entries held back about what it deletes are dropped rather than written
/// (at the hourly purge, writing them all would stall the writer for up to a whole drain's
/// worth), the others stay held.
pub(super) fn settle_for_purge<'c>(
    writing: &mut Writing<'c>,
    cutoff: i64,
    views_before: i64,
) -> Result<Settled<'c>, StoreError> {
    settle_cell_counts(writing)?;
    writing.memory.deferred.forget_purged(
        writing.conn,
        cutoff,
        &crate::clock::utc_day(cutoff),
        views_before,
    )?;
    Ok(Settled::after_settling(writing.conn))
}

fn settle_cell_counts(writing: &mut Writing<'_>) -> Result<(), StoreError> {
    writing.memory.cells.write(writing.conn)?;
    writing.memory.cells.forget();
    Ok(())
}

/// Recomputes the cells of the UTC days `first..=last` from the raw logs: the roll-ups'
/// definition, used after deletions and by tests to prove the incremental roll-ups equal it.
pub(super) struct RebuildCells {
    pub first: chrono::NaiveDate,
    pub last: chrono::NaiveDate,
}

impl Write for RebuildCells {
    type Output = ();

    fn apply(&self, writing: &mut Writing<'_>) -> Result<(), StoreError> {
        let settled = settle_counts(writing)?;
        rebuild(&settled, self.first, self.last)
    }
}
