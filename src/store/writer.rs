//! Store: the single writer thread and its group commit.
//!
//! Handlers queue a write and wait; the writer takes every job waiting (up to `MAX_GROUP`),
//! runs them in one transaction and hands the answers to the flusher, which sends them once
//! the WAL holding the group is on disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, TransactionBehavior};

use super::deferred::{Deferrals, Mark};
use super::flush::{self, Answers, Committed, Wal};
use super::health::{self, Health};
use super::on_file::OnFile;
use super::ops::{Memory, Queued, Writing};
use super::types::StoreError;
use crate::link::LinkRules;

/// Most jobs committed in one transaction; bounds the latency of the group's first request.
const MAX_GROUP: usize = 1024;
/// Longest a restart of the WAL waits for readers.
const RESTART_WAIT: Duration = Duration::from_millis(20);
/// While a deletion is not yet scrubbed from the WAL, how often an idle writer tries again.
const SCRUB_RETRY: Duration = Duration::from_millis(100);
/// After a failed sync, the least time between two probes of the disk; the groups in between
/// are refused at once.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// What SQLite allocates for each page it caches: the 4 KiB page and its bookkeeping, 4,375
/// bytes requested (heaptrack: 277.5 MB for the 63,430 pages of a 256 MiB `cache_size`), and
/// malloc's own header. SQLite's `cache_size` in KiB counts only part of the bookkeeping, so
/// the cache is set in pages instead.
const PAGE_COST: usize = 4_400;
/// The fewest pages the cache keeps however large the filters grow: SQLite's default 2 MiB.
const LEAST_PAGES: usize = 500;

/// A queued job of any kind.
pub(super) type Job = Box<dyn Queued>;

pub(super) fn spawn(
    conn: Connection,
    checkpointer: Connection,
    jobs: Receiver<Job>,
    health: Arc<Health>,
    rules: LinkRules,
    wal: PathBuf,
    cache_bytes: usize,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (answers, committed) = std::sync::mpsc::channel();
    let wal = Arc::new(Mutex::new(Wal::open(wal)));
    let (due, checkpoints_due) = std::sync::mpsc::sync_channel(1);
    let restart_wal = Arc::new(AtomicBool::new(false));
    let checkpoint_turn = Arc::new(Mutex::new(()));
    let checkpoints = {
        let (restart_wal, turn) = (restart_wal.clone(), checkpoint_turn.clone());
        std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                flush::checkpoints(checkpoints_due, &checkpointer, &restart_wal, &turn)
            })?
    };
    let flusher = {
        let (wal, health) = (wal.clone(), health.clone());
        std::thread::Builder::new()
            .name("store-flusher".into())
            .spawn(move || flush::run(&wal, committed, due, &health))?
    };
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            let mut writer = Writer {
                conn,
                health,
                wal,
                groups: 0,
                last_probe: None,
                restart_wal,
                checkpoint_turn,
                unscrubbed: false,
                cache_bytes,
                cache_pages: 0,
            };
            writer.run(jobs, &rules, answers);
            // The flusher ends once the writer's sender is gone; the files are synced then.
            // The checkpoints end with the flusher.
            let _ = flusher.join();
            let _ = checkpoints.join();
        })
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    health: Arc<Health>,
    /// The WAL's kept descriptor, shared with the flusher: the probe syncs through it too.
    wal: Arc<Mutex<Wal>>,
    /// Groups run so far; numbers each for `Health`.
    groups: u64,
    /// When the disk was last probed after a failed sync.
    last_probe: Option<Instant>,
    /// Set by the checkpoints once the WAL is long: see `restart_wal`.
    restart_wal: Arc<AtomicBool>,
    /// Taken by whichever checkpoints: the checkpoint thread or a scrub.
    checkpoint_turn: Arc<Mutex<()>>,
    /// A deletion's pages may still be in the WAL: the scrub is tried again after every
    /// group, and every `SCRUB_RETRY` while idle, until it succeeds.
    unscrubbed: bool,
    /// `storage.cache_mib`: the page cache and the filters of what is on file share it.
    cache_bytes: usize,
    /// The page cache's size now, in pages.
    cache_pages: usize,
}

impl Writer {
    fn run(&mut self, jobs: Receiver<Job>, rules: &LinkRules, answers: Sender<Committed>) {
        let mut memory = Memory {
            // Half at most, so that the pages most read stay cached however many pseudonyms
            // are on file.
            on_file: OnFile::with_limit(self.cache_bytes / 2),
            ..Memory::default()
        };
        self.fit_cache(&memory.on_file);
        self.remake_entries(&mut memory);
        let mut stop = false;
        while !stop {
            // While the records on file at start are still being read, one chunk goes between
            // two groups, and chunk after chunk while no job waits.
            if memory.on_file.scanning() {
                memory.on_file.scan_step(&self.conn);
            }
            self.fit_cache(&memory.on_file);
            let first = match self.next_job(&jobs, memory.on_file.scanning()) {
                Next::Job(job) => job,
                Next::Again => continue,
                Next::Closed => break,
            };
            if self.restart_wal.swap(false, Ordering::Relaxed) {
                self.restart_wal();
            }
            let group = gather(first, &jobs);
            stop = group.iter().any(|job| job.stops());
            self.run_group(group, rules, &mut memory, &answers);
        }
        drop(answers);
        self.finish(&mut memory);
    }

    /// Gives the page cache what the filters and the entries held back leave of
    /// `storage.cache_mib`, less the room for the largest filters a group can add (one for
    /// visits, one for events): the cache gives up its pages before the filters need the
    /// memory, so that theirs take the freed pages' place instead of adding to the process.
    fn fit_cache(&mut self, on_file: &OnFile) {
        let room = 2 * super::on_file::LARGEST_FILTER_BYTES + super::deferred::HELD_BYTES;
        let pages =
            (self.cache_bytes.saturating_sub(on_file.bytes() + room) / PAGE_COST).max(LEAST_PAGES);
        if pages == self.cache_pages {
            return;
        }
        match self.conn.pragma_update(None, "cache_size", pages as i64) {
            Ok(()) => self.cache_pages = pages,
            Err(err) => tracing::warn!(error = %err, "cannot size the page cache"),
        }
    }

    /// Remakes the visitor, address and page-view entries an unclean stop left unwritten.
    fn remake_entries(&mut self, memory: &mut Memory) {
        match memory.deferred.recover(&mut self.conn) {
            Ok(0) => {}
            Ok(remade) => {
                tracing::info!(
                    remade,
                    "visitor, address and page-view entries remade after an unclean stop"
                )
            }
            // Visitors of the visits since the last written entry may count twice today, and
            // linking may miss those visits.
            Err(err) => {
                tracing::error!(error = %err, "cannot remake the visitor, address and page-view entries")
            }
        }
    }

    /// Waits for the next job: not at all while the scan at start has chunks left, and no
    /// longer than `SCRUB_RETRY` while a scrub is due, which is tried again then.
    fn next_job(&mut self, jobs: &Receiver<Job>, scanning: bool) -> Next {
        if scanning {
            match jobs.try_recv() {
                Ok(job) => Next::Job(job),
                Err(TryRecvError::Empty) => Next::Again,
                Err(TryRecvError::Disconnected) => Next::Closed,
            }
        } else if self.unscrubbed {
            match jobs.recv_timeout(SCRUB_RETRY) {
                Ok(job) => Next::Job(job),
                Err(RecvTimeoutError::Timeout) => {
                    self.unscrubbed = !flush::scrub(&self.conn, &self.checkpoint_turn);
                    Next::Again
                }
                Err(RecvTimeoutError::Disconnected) => Next::Closed,
            }
        } else {
            match jobs.recv() {
                Ok(job) => Next::Job(job),
                Err(_) => Next::Closed,
            }
        }
    }

    /// Runs `group` in one transaction and hands its answers to the flusher. A group that
    /// cannot run (the disk still fails) or commit is refused, job by job.
    fn run_group(
        &mut self,
        group: Vec<Job>,
        rules: &LinkRules,
        memory: &mut Memory,
        answers: &Sender<Committed>,
    ) {
        let deletes = group.iter().any(|job| job.deletes());
        self.groups += 1;
        let number = self.groups;
        if self.health.poisoned()
            && let Err(err) = self.recover(number)
        {
            // Never run: not stored, and answered so.
            for job in group {
                job.refuse(&err);
            }
            return;
        }
        match commit_group(&mut self.conn, group, rules, memory) {
            Ok(applied) => {
                if deletes {
                    forget_dead_salts(&self.conn, &mut memory.on_file);
                }
                if deletes || self.unscrubbed {
                    self.unscrubbed = !flush::scrub(&self.conn, &self.checkpoint_turn);
                }
                // The flusher only stops after the writer's loop; a send cannot fail before.
                let _ = answers.send(Committed {
                    group: number,
                    answers: applied,
                });
            }
            Err((err, jobs)) => {
                self.health.record(number, Err(&err));
                tracing::error!(error = %err, jobs = jobs.len(), "a write group failed to commit");
                for job in jobs {
                    job.refuse(&err);
                }
            }
        }
    }

    /// Once the queue is closed: after `Store::crash`, leaves the WAL as a killed process
    /// would; otherwise writes the entries held in memory and checkpoints.
    fn finish(&mut self, memory: &mut Memory) {
        if memory.crashed {
            // Closing the last connection would checkpoint and delete the WAL; a killed
            // process leaves it for the next open to recover.
            let _ = self
                .conn
                .set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
            return;
        }
        if let Err(err) = settle(&mut self.conn, &mut memory.deferred) {
            tracing::warn!(error = %err, "visitor, address and page-view entries left to remake at the next start");
        }
        // Leaves a checkpointed, self-contained database file behind on a clean stop.
        if let Err(err) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %err, "final WAL checkpoint failed");
        }
    }

    /// After a failed sync of the WAL, whether writes may be acknowledged again: a probe row is
    /// committed, the whole WAL is checkpointed into the database file (SQLite syncs the WAL,
    /// then the database) and truncated, and the WAL is synced through the kept descriptor,
    /// which reports any failed write-back not yet told. Only when all of it succeeds is
    /// everything committed so far, the groups answered `NotDurable` included, in the synced
    /// database file. Tried at most every `PROBE_EVERY`; the error refuses the group waiting.
    fn recover(&mut self, group: u64) -> Result<(), StoreError> {
        if self
            .last_probe
            .is_some_and(|probed| probed.elapsed() < PROBE_EVERY)
        {
            return Err(refusal(self.health.failure()));
        }
        self.last_probe = Some(Instant::now());
        let probed = self.probe();
        match probed {
            Ok(()) => {
                self.health.cure(group);
                tracing::info!("writes reach the disk again; acknowledging writes again");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "the disk still fails; refusing writes");
                self.health.record(group, Err(&err));
                Err(refusal(Some(err)))
            }
        }
    }

    /// Copies what is left of a long WAL into the database and has the next group write it
    /// from its start, which only a connection holding no transaction can do, and under
    /// steady load that is this one, between two groups. Waits for readers a moment at most:
    /// the checkpoints ask again.
    fn restart_wal(&mut self) {
        let restarted = self.waiting_at_most(RESTART_WAIT, |conn| {
            conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
                row.get::<_, i64>(0)
            })
        });
        match restarted {
            Ok(0) => {}
            Ok(_) => tracing::debug!("the WAL could not start over (a reader was busy)"),
            Err(err) => tracing::warn!(error = %err, "restarting the WAL failed"),
        }
    }

    /// Runs `f` with the busy timeout at `wait`, then puts it back.
    fn waiting_at_most<T>(
        &mut self,
        wait: Duration,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let waited: i64 = self
            .conn
            .query_row("PRAGMA busy_timeout", [], |row| row.get(0))?;
        self.conn.busy_timeout(wait)?;
        let result = f(&self.conn);
        self.conn
            .busy_timeout(Duration::from_millis(waited.try_into().unwrap_or(0)))?;
        result
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        health::write_probe(&tx)?;
        tx.commit()?;
        // Truncated, not only copied: a WAL left in place would hold, after a crash, whatever
        // frames of it did reach the disk, older than the database and replayed over it.
        // Without waiting for readers (a long aggregates query): the next probe tries again,
        // and the writer does not stall in between.
        // (busy, frames in the WAL, frames checkpointed)
        let checkpointed = self.waiting_at_most(Duration::ZERO, |conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                row.get::<_, i64>(0)
            })
        });
        if checkpointed? != 0 {
            return Err(StoreError::NotDurable(
                "the write-ahead log could not be moved into the database (a reader was busy)"
                    .into(),
            ));
        }
        flush::lock(&self.wal).sync()
    }
}

/// What the writer's wait for a job came to.
enum Next {
    Job(Job),
    /// No job yet; the loop goes round again.
    Again,
    /// Every sender is gone: the store is dropped.
    Closed,
}

/// The group that starts with `first`: every job waiting behind it, up to `MAX_GROUP`.
fn gather(first: Job, jobs: &Receiver<Job>) -> Vec<Job> {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    group
}

/// What a write refused without running is told: nothing was stored. A full disk says so;
/// any other failure is the store's, and names it.
fn refusal(failure: Option<StoreError>) -> StoreError {
    match failure {
        Some(StoreError::DiskFull) => StoreError::DiskFull,
        Some(StoreError::Unwritable(reason)) => StoreError::Unwritable(reason),
        Some(other) => StoreError::Unwritable(other.to_string()),
        None => StoreError::Unwritable("a sync of the write-ahead log failed".into()),
    }
}

/// Drops the in-memory filters of salts a committed purge destroyed. Only after the commit: a
/// filter missing for a live salt would hide its records from linking.
fn forget_dead_salts(conn: &Connection, on_file: &mut OnFile) {
    match super::retention::live_salts(conn) {
        Ok(live) => on_file.retain_salts(&live),
        Err(err) => tracing::warn!(error = %err, "cannot list the live salts after a purge"),
    }
}

/// A group that did not commit: why, and its jobs, each to be answered with that error.
type Failed = (StoreError, Vec<Job>);

/// One transaction for the group. The group runs first as it is, since jobs rarely fail; if
/// any job does, the transaction rolls back and the group runs again with each job in its own
/// savepoint, so the bad job fails alone. If the commit fails, every job fails.
fn commit_group(
    conn: &mut Connection,
    group: Vec<Job>,
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Answers, Failed> {
    let result = match commit_whole(conn, group, rules, memory) {
        Ok(applied) => Ok(applied),
        Err(Whole::JobFailed(group)) => {
            memory.cells.forget();
            memory.deferred.roll_back_to(Mark::default());
            commit_isolated(conn, group, rules, memory)
        }
        Err(Whole::Failed(failed)) => Err(failed),
    };
    if result.is_ok() {
        memory.deferred.commit();
    } else {
        memory.cells.forget();
        memory.deferred.roll_back_to(Mark::default());
    }
    result
}

/// On a clean stop: every entry held in memory is written, so the next start has none to
/// remake.
fn settle(conn: &mut Connection, deferred: &mut Deferrals) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    deferred.settle(&tx)?;
    tx.commit()?;
    deferred.commit();
    Ok(())
}

/// Why the fast path did not commit.
enum Whole {
    /// A job failed and the transaction rolled back: the group goes again, job by job.
    JobFailed(Vec<Job>),
    /// The transaction itself failed.
    Failed(Failed),
}

/// The fast path: no savepoints, whose page copies cost as much as the inserts themselves.
fn commit_whole(
    conn: &mut Connection,
    group: Vec<Job>,
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Answers, Whole> {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => return Err(Whole::Failed((err.into(), group))),
    };
    let mut applied: Answers = Vec::with_capacity(group.len());
    let mut waiting = group.into_iter();
    let mut writing = Writing {
        conn: &tx,
        memory,
        rules,
    };
    for job in waiting.by_ref() {
        let done = job.apply(&mut writing);
        let failed = done.failed();
        applied.push(done);
        if failed {
            break;
        }
    }
    let all_applied = applied.last().is_none_or(|done| !done.failed());
    if !all_applied || memory.deferred.write_some(&tx).is_err() || memory.cells.write(&tx).is_err()
    {
        // Dropping the transaction rolls it back.
        drop(tx);
        return Err(Whole::JobFailed(undo(applied, waiting)));
    }
    match tx.commit() {
        Ok(()) => Ok(applied),
        Err(err) => Err(Whole::Failed((err.into(), undo(applied, Vec::new())))),
    }
}

fn commit_isolated(
    conn: &mut Connection,
    group: Vec<Job>,
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Answers, Failed> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => return Err((err.into(), group)),
    };
    let mut applied: Answers = Vec::with_capacity(group.len());
    let mut waiting = group.into_iter();
    while let Some(job) = waiting.next() {
        let savepoint = match tx.savepoint() {
            Ok(savepoint) => savepoint,
            Err(err) => {
                let jobs = undo(applied, std::iter::once(job).chain(waiting));
                return Err((err.into(), jobs));
            }
        };
        let mark = memory.deferred.mark();
        let mut writing = Writing {
            conn: &savepoint,
            memory,
            rules,
        };
        let mut done = job.apply(&mut writing);
        if !done.failed()
            && let Err(err) = memory.cells.write(&savepoint)
        {
            done = done.fail(err);
        }
        if done.failed() {
            // Dropping the savepoint rolls it back, cells it made included.
            drop(savepoint);
            memory.cells.forget();
            memory.deferred.roll_back_to(mark);
        } else if let Err(err) = savepoint.commit() {
            applied.push(done);
            return Err((err.into(), undo(applied, waiting)));
        }
        applied.push(done);
    }
    match tx.commit() {
        Ok(()) => Ok(applied),
        Err(err) => Err((err.into(), undo(applied, Vec::new()))),
    }
}

/// The jobs of a group that rolled back, as they were before it ran.
fn undo(applied: Answers, waiting: impl IntoIterator<Item = Job>) -> Vec<Job> {
    applied
        .into_iter()
        .map(|done| done.undo())
        .chain(waiting)
        .collect()
}
