//! Store: the single writer thread, its group commit, linking at ingest and the roll-ups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::on_file::{OnFile, Span};
use super::{ForgetReport, LinkRules, NewEvent, NewVisit, PurgeReport, StoreError, VisitWrite};
use crate::clock::{DAY_SECS, day_start, parse_day, utc_day};
use crate::privacy::Pseudonym;

/// Most jobs committed in one transaction; bounds the latency of the group's first request.
const MAX_GROUP: usize = 1024;

/// How long after a page view a second report of it may still update its consent flag; the
/// hourly purge clears older page-view ids.
const VIEW_UPDATE_WINDOW_SECS: i64 = 3600;

/// The source of a game event that no visit brought.
pub const DIRECT: &str = "(direct)";

pub(super) struct Job {
    pub op: Op,
    pub reply: tokio::sync::oneshot::Sender<Result<Outcome, StoreError>>,
}

pub(super) enum Op {
    Visit(Box<NewVisit>),
    Events(Vec<NewEvent>),
    Salt {
        created_at: i64,
        key: [u8; 32],
    },
    RebuildCells {
        from: String,
        to: String,
    },
    Purge {
        cutoff: i64,
        now: i64,
    },
    Forget {
        game: String,
        users: Vec<Pseudonym>,
        now: i64,
    },
    Enqueue {
        documents: Vec<super::NewDocument>,
        now: i64,
    },
    Delivery {
        id: i64,
        delivery: super::Delivery,
    },
    Ping,
    Shutdown,
}

#[derive(Debug)]
pub(super) enum Outcome {
    Visit(VisitWrite),
    Count(usize),
    Id(i64),
    Purged(PurgeReport),
    Forgotten(ForgetReport),
    Done,
}

impl Op {
    /// Deletions are followed by a scrub: freed pages released and the WAL truncated, so the
    /// deleted rows' old page images leave the files too.
    fn deletes(&self) -> bool {
        matches!(self, Op::Purge { .. } | Op::Forget { .. })
    }

    /// These read, delete or renumber roll-up cells, so counts held back for cells must be
    /// written before them and cell ids known before them are stale after.
    fn rewrites_cells(&self) -> bool {
        self.deletes() || matches!(self, Op::RebuildCells { .. })
    }
}

type Reply = tokio::sync::oneshot::Sender<Result<Outcome, StoreError>>;

/// A committed group's answers, held until the WAL holding it is on disk.
type Answers = Vec<(Reply, Result<Outcome, StoreError>)>;

pub(super) fn spawn(
    conn: Connection,
    checkpointer: Connection,
    jobs: Receiver<Job>,
    writable: Arc<AtomicBool>,
    rules: LinkRules,
    wal: PathBuf,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (answers, committed) = std::sync::mpsc::channel();
    let flusher = std::thread::Builder::new()
        .name("store-flusher".into())
        .spawn(move || flush(&wal, committed, &checkpointer))?;
    std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            run(conn, jobs, &writable, &rules, answers);
            // The flusher ends once the writer's sender is gone; the files are synced then.
            let _ = flusher.join();
        })
}

fn run(
    mut conn: Connection,
    jobs: Receiver<Job>,
    writable: &AtomicBool,
    rules: &LinkRules,
    answers: Sender<Answers>,
) {
    let mut memory = Memory::default();
    let mut stop = false;
    while !stop {
        // While the records on file at start are still being read, one chunk goes between
        // two groups, and chunk after chunk while no job waits.
        if memory.on_file.scanning() {
            memory.on_file.scan_step(&conn);
        }
        let first = if memory.on_file.scanning() {
            match jobs.try_recv() {
                Ok(job) => job,
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Disconnected) => break,
            }
        } else {
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        stop = group.iter().any(|job| matches!(job.op, Op::Shutdown));
        let results = commit_group(&mut conn, &group, rules, &mut memory);
        writable.store(results.is_ok(), Ordering::Relaxed);
        if results.is_ok() && group.iter().any(|job| job.op.deletes()) {
            scrub(&conn);
            forget_dead_salts(&conn, &mut memory.on_file);
        }
        match results {
            Ok(results) => {
                let ready = group
                    .into_iter()
                    .zip(results)
                    .map(|(job, result)| (job.reply, result))
                    .collect();
                // The flusher only stops after this loop; a send cannot fail before.
                let _ = answers.send(ready);
            }
            Err(err) => {
                tracing::error!(error = %err, jobs = group.len(), "a write group failed to commit");
                for job in group {
                    let _ = job.reply.send(Err(err.clone()));
                }
            }
        }
    }
    drop(answers);
    // Leaves a checkpointed, self-contained database file behind on a clean stop.
    if let Err(err) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %err, "final WAL checkpoint failed");
    }
}

/// Drops the in-memory filters of salts a committed purge destroyed. Only after the commit: a
/// filter missing for a live salt would hide its records from linking.
fn forget_dead_salts(conn: &Connection, on_file: &mut OnFile) {
    let live = conn
        .prepare_cached("SELECT id FROM salts")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, i64>(0))?
                .collect::<Result<Vec<_>, _>>()
        });
    match live {
        Ok(live) => on_file.retain_salts(&live),
        Err(err) => tracing::warn!(error = %err, "cannot list the live salts after a purge"),
    }
}

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
fn flush(wal: &Path, committed: Receiver<Answers>, checkpointer: &Connection) {
    let mut last_checkpoint = std::time::Instant::now();
    while let Ok(first) = committed.recv() {
        let mut ready = vec![first];
        ready.extend(committed.try_iter());
        let synced = sync_wal(wal);
        if let Err(err) = &synced {
            tracing::error!(error = %err, "syncing the WAL failed; the writes of this group are not acknowledged");
        }
        for (reply, result) in ready.into_iter().flatten() {
            let result = match &synced {
                Ok(()) => result,
                Err(err) => Err(err.clone()),
            };
            // A handler that gave up (client gone) dropped its receiver: nothing to do.
            let _ = reply.send(result);
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

/// One transaction for the group. The group runs first as it is, since jobs rarely fail; if
/// any job does, the transaction rolls back and the group runs again with each job in its own
/// savepoint, so the bad job fails alone. If the commit fails, every job fails.
fn commit_group(
    conn: &mut Connection,
    group: &[Job],
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let results = match commit_whole(conn, group, rules, memory) {
        Ok(outcomes) => Ok(outcomes.into_iter().map(Ok).collect()),
        Err(_) => {
            memory.conversions.forget();
            commit_isolated(conn, group, rules, memory)
        }
    };
    if results.is_err() {
        memory.conversions.forget();
    }
    results
}

/// The fast path: no savepoints, whose page copies cost as much as the inserts themselves.
fn commit_whole(
    conn: &mut Connection,
    group: &[Job],
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Vec<Outcome>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcomes = group
        .iter()
        .map(|job| apply(&tx, &job.op, rules, memory))
        .collect::<Result<Vec<_>, _>>()?;
    memory.conversions.write(&tx)?;
    tx.commit()?;
    Ok(outcomes)
}

fn commit_isolated(
    conn: &mut Connection,
    group: &[Job],
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let savepoint = tx.savepoint()?;
        let applied = apply(&savepoint, &job.op, rules, memory)
            .and_then(|outcome| memory.conversions.write(&savepoint).map(|()| outcome));
        match applied {
            Ok(outcome) => {
                savepoint.commit()?;
                results.push(Ok(outcome));
            }
            Err(err) => {
                // Dropping the savepoint rolls it back, cells it made included.
                drop(savepoint);
                memory.conversions.forget();
                results.push(Err(err));
            }
        }
    }
    tx.commit()?;
    Ok(results)
}

/// What the writer keeps in memory across groups.
#[derive(Default)]
struct Memory {
    on_file: OnFile,
    conversions: ConversionCounts,
}

/// Records written here also enter `on_file`; a group that rolls back leaves them there,
/// which only costs a lookup that finds nothing.
fn apply(
    conn: &Connection,
    op: &Op,
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<Outcome, StoreError> {
    if op.rewrites_cells() {
        memory.conversions.write(conn)?;
        memory.conversions.forget();
    }
    match op {
        Op::Visit(visit) => insert_visit(conn, visit, &mut memory.on_file).map(Outcome::Visit),
        Op::Events(events) => {
            for event in events {
                insert_event(conn, event, rules, memory)?;
            }
            Ok(Outcome::Count(events.len()))
        }
        Op::Salt { created_at, key } => {
            conn.prepare_cached("INSERT INTO salts (created_at, salt) VALUES (?1, ?2)")?
                .execute(params![created_at, &key[..]])?;
            Ok(Outcome::Id(conn.last_insert_rowid()))
        }
        Op::RebuildCells { from, to } => {
            rebuild_cells(conn, from, to)?;
            Ok(Outcome::Done)
        }
        Op::Purge { cutoff, now } => purge(conn, *cutoff, *now).map(Outcome::Purged),
        Op::Forget { game, users, now } => {
            forget(conn, game, users, *now, rules).map(Outcome::Forgotten)
        }
        Op::Enqueue { documents, now } => {
            super::outbox::enqueue(conn, documents, *now)?;
            Ok(Outcome::Done)
        }
        Op::Delivery { id, delivery } => {
            super::outbox::record(conn, *id, delivery)?;
            Ok(Outcome::Done)
        }
        Op::Ping | Op::Shutdown => Ok(Outcome::Done),
    }
}

/// Releases the pages deletions freed (already zeroed by secure_delete) and truncates the WAL,
/// whose older frames still hold the pages as they were before the deletion.
fn scrub(conn: &Connection) {
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

/// The salts retired before ?1: their successor was made before the cutoff.
macro_rules! doomed_salts {
    () => {
        "SELECT s.id FROM salts s WHERE (SELECT min(n.created_at) FROM salts n WHERE n.id > s.id) < ?1"
    };
}

// Records go by time, through indexes, so the hourly purge reads only what it deletes. Visits,
// and events' IP pseudonyms, are keyed by the salt current at their arrival, so what a salt
// retired before the cutoff keyed there arrived before it and goes by time. A user pseudonym
// may be older than its event (invariant 4), so events also go by their user salt.

/// Visits past retention.
macro_rules! doomed_visits {
    () => {
        "received_at < ?1"
    };
}

/// Events keyed by a doomed user salt, or past retention by arrival or by their own time. Both
/// are ranges of `measure_logs_expiry`, one per salt (the purge deletes a salt only with its
/// events, so every event's user salt is on file).
macro_rules! doomed_events {
    () => {
        concat!(
            "user_salt_id IN (",
            doomed_salts!(),
            ") OR (user_salt_id IN (SELECT id FROM salts) AND min(received_at, event_time) < ?1)"
        )
    };
}

/// Every visitor list of the cut-off day ?1 and before.
const DELETE_EXPIRED_VISITOR_LISTS: &str =
    "DELETE FROM traffic_visitors WHERE cell_id IN (SELECT id FROM traffic_cells WHERE day <= ?1)";

/// Counts what a purge at `cutoff` would delete, deleting nothing (`purge --dry-run`).
pub(super) fn purge_preview(conn: &Connection, cutoff: i64) -> Result<PurgeReport, StoreError> {
    let day = utc_day(cutoff);
    let count = |sql: &str, day: Option<&str>| -> Result<i64, StoreError> {
        Ok(match day {
            Some(day) => conn.query_row(sql, params![cutoff, day], |row| row.get(0))?,
            None => conn.query_row(sql, params![cutoff], |row| row.get(0))?,
        })
    };
    Ok(PurgeReport {
        visits: count(
            concat!("SELECT count(*) FROM collect_logs WHERE ", doomed_visits!()),
            None,
        )?,
        events: count(
            concat!("SELECT count(*) FROM measure_logs WHERE ", doomed_events!()),
            None,
        )?,
        salts: count(
            concat!("SELECT count(*) FROM (", doomed_salts!(), ")"),
            None,
        )?,
        cells: count(
            "SELECT (SELECT count(*) FROM traffic_cells WHERE day < ?2) + \
             (SELECT count(*) FROM conversion_cells WHERE day < ?2) + 0 * ?1",
            Some(&day),
        )?,
    })
}

fn purge(conn: &Connection, cutoff: i64, now: i64) -> Result<PurgeReport, StoreError> {
    let report = purge_preview(conn, cutoff)?;
    let day = utc_day(cutoff);
    // Visitor lists hold pseudonyms: every list of the cut-off day and before goes, which holds
    // those of every doomed visit (a visit counts in the cell of its arrival day); the counts
    // of the cut-off day stay.
    conn.execute(DELETE_EXPIRED_VISITOR_LISTS, params![day])?;
    conn.execute("DELETE FROM traffic_cells WHERE day < ?1", params![day])?;
    conn.execute("DELETE FROM conversion_cells WHERE day < ?1", params![day])?;
    conn.execute(
        concat!("DELETE FROM collect_logs WHERE ", doomed_visits!()),
        params![cutoff],
    )?;
    conn.execute(
        concat!("DELETE FROM measure_logs WHERE ", doomed_events!()),
        params![cutoff],
    )?;
    conn.execute(
        concat!("DELETE FROM salts WHERE id IN (", doomed_salts!(), ")"),
        params![cutoff],
    )?;
    forget_view_ids(conn, now - VIEW_UPDATE_WINDOW_SECS)?;
    let documents = super::outbox::purge(conn, &day)?;
    if documents > 0 {
        tracing::warn!(
            documents,
            "deleted undelivered aggregates documents past retention: the central platform was unreachable or refused them"
        );
    }
    Ok(report)
}

/// Page-view ids serve only the consent update within the hour (`update_view`); older ones go.
fn forget_view_ids(conn: &Connection, before: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM page_views WHERE received_at < ?1",
        params![before],
    )?;
    Ok(())
}

/// An event about to be forgotten, with what finds the visits linked to it.
struct ForgottenEvent {
    id: i64,
    visit_id: Option<i64>,
    ip_hash: Vec<u8>,
    ip_salt_id: i64,
    /// The moment linking looked back from: the earlier of event time and arrival.
    link_time: i64,
}

/// A player's events and the visits linked to them: the attributed visit, and every visit of
/// the event's IP pseudonym inside the lookback window before it (for the same game or none).
fn forget(
    conn: &Connection,
    game: &str,
    users: &[Pseudonym],
    now: i64,
    rules: &LinkRules,
) -> Result<ForgetReport, StoreError> {
    let mut events: Vec<ForgottenEvent> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT id, visit_id, ip_hash, ip_salt_id, min(event_time, received_at) \
             FROM measure_logs WHERE game = ?1 AND user_hash = ?2 AND user_salt_id = ?3",
        )?;
        for user in users {
            let rows = stmt.query_map(params![game, &user.hash[..], user.salt_id], |row| {
                Ok(ForgottenEvent {
                    id: row.get(0)?,
                    visit_id: row.get(1)?,
                    ip_hash: row.get(2)?,
                    ip_salt_id: row.get(3)?,
                    link_time: row.get(4)?,
                })
            })?;
            for row in rows {
                events.push(row?);
            }
        }
    }
    let mut visits: Vec<(i64, Vec<u8>)> = Vec::new();
    {
        let mut linked = conn.prepare_cached(
            "SELECT id, ip_hash FROM collect_logs WHERE id = ?1 \
             UNION SELECT id, ip_hash FROM collect_logs \
             WHERE ip_hash = ?2 AND ip_salt_id = ?3 AND received_at BETWEEN ?4 AND ?5 \
             AND (game IS NULL OR game = ?6)",
        )?;
        for event in &events {
            let rows = linked.query_map(
                params![
                    event.visit_id.unwrap_or(-1),
                    event.ip_hash,
                    event.ip_salt_id,
                    event.link_time - rules.lookback_secs,
                    event.link_time,
                    game
                ],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            for row in rows {
                let visit = row?;
                if !visits.contains(&visit) {
                    visits.push(visit);
                }
            }
        }
    }
    for (id, ip_hash) in &visits {
        conn.prepare_cached("DELETE FROM traffic_visitors WHERE ip_hash = ?1")?
            .execute(params![ip_hash])?;
        conn.prepare_cached("DELETE FROM collect_logs WHERE id = ?1")?
            .execute(params![id])?;
        conn.prepare_cached("DELETE FROM page_views WHERE visit_id = ?1")?
            .execute(params![id])?;
    }
    for event in &events {
        conn.prepare_cached("DELETE FROM measure_logs WHERE id = ?1")?
            .execute(params![event.id])?;
    }
    let report = ForgetReport {
        measure: events.len() as i64,
        collect: visits.len() as i64,
    };
    conn.execute(
        "INSERT INTO forget_log (at, measure_deleted, collect_deleted) VALUES (?1, ?2, ?3)",
        params![now, report.measure, report.collect],
    )?;
    Ok(report)
}

fn insert_visit(
    conn: &Connection,
    visit: &NewVisit,
    on_file: &mut OnFile,
) -> Result<VisitWrite, StoreError> {
    if let Some(view_id) = &visit.view_id
        && update_view(conn, visit, view_id)?
    {
        return Ok(VisitWrite::ConsentUpdated);
    }
    conn.prepare_cached(
        "INSERT INTO collect_logs (received_at, game, ip_hash, ip_salt_id, page_host, page_path, \
         utm_source, utm_medium, utm_campaign, utm_content, utm_term, click_ids, referrer_host, \
         device, os, browser, consent, link) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        visit.received_at,
        visit.game,
        &visit.ip.hash[..],
        visit.ip.salt_id,
        visit.page_host,
        visit.page_path,
        visit.utm.source,
        visit.utm.medium,
        visit.utm.campaign,
        visit.utm.content,
        visit.utm.term,
        visit.click_ids,
        visit.referrer_host,
        visit.device.category,
        visit.device.os,
        visit.device.browser,
        visit.consent,
        visit.link,
    ])?;
    if let Some(view_id) = &visit.view_id {
        conn.prepare_cached(
            "INSERT INTO page_views (view_id, visit_id, received_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![
            view_id,
            conn.last_insert_rowid(),
            visit.received_at
        ])?;
    }
    on_file.add_visit(&visit.ip, visit.received_at);
    let key = TrafficKey {
        day: utc_day(visit.received_at),
        game: text(&visit.game),
        source: text(&visit.utm.source),
        medium: text(&visit.utm.medium),
        campaign: text(&visit.utm.campaign),
        content: text(&visit.utm.content),
        term: text(&visit.utm.term),
        referrer_host: text(&visit.referrer_host),
        device: visit.device.category.clone(),
    };
    let cell: i64 = conn
        .prepare_cached(
            "INSERT INTO traffic_cells (day, game, source, medium, campaign, content, term, \
             referrer_host, device, visits, consented_visits) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1, ?10) \
             ON CONFLICT (day, game, source, medium, campaign, content, term, referrer_host, device) \
             DO UPDATE SET visits = visits + 1, \
                           consented_visits = consented_visits + excluded.consented_visits \
             RETURNING id",
        )?
        .query_row(key.params_with(i64::from(visit.consent)), |row| row.get(0))?;
    let new_visitor = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO traffic_visitors (cell_id, ip_hash) VALUES (?1, ?2)",
        )?
        .execute(params![cell, &visit.ip.hash[..]])?;
    if new_visitor == 1 {
        conn.prepare_cached("UPDATE traffic_cells SET visitors = visitors + 1 WHERE id = ?1")?
            .execute(params![cell])?;
    }
    Ok(VisitWrite::Inserted)
}

/// A page view reported again (consent given or withdrawn later) from the same address within
/// the hour: its consent flag and click ids change, and so does its cell's consented count.
fn update_view(conn: &Connection, visit: &NewVisit, view_id: &str) -> Result<bool, StoreError> {
    let found = conn
        .prepare_cached(
            "SELECT c.id, c.consent, c.received_at, coalesce(c.game, ''), \
             coalesce(c.utm_source, ''), coalesce(c.utm_medium, ''), \
             coalesce(c.utm_campaign, ''), coalesce(c.utm_content, ''), \
             coalesce(c.utm_term, ''), coalesce(c.referrer_host, ''), c.device \
             FROM page_views p JOIN collect_logs c ON c.id = p.visit_id \
             WHERE p.view_id = ?1 AND c.ip_hash = ?2 AND c.ip_salt_id = ?3 \
             AND c.received_at >= ?4 \
             LIMIT 1",
        )?
        .query_row(
            params![
                view_id,
                &visit.ip.hash[..],
                visit.ip.salt_id,
                visit.received_at - VIEW_UPDATE_WINDOW_SECS
            ],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, bool>(1)?,
                    TrafficKey {
                        day: utc_day(row.get(2)?),
                        game: row.get(3)?,
                        source: row.get(4)?,
                        medium: row.get(5)?,
                        campaign: row.get(6)?,
                        content: row.get(7)?,
                        term: row.get(8)?,
                        referrer_host: row.get(9)?,
                        device: row.get(10)?,
                    },
                ))
            },
        )
        .optional()?;
    let Some((id, was_consented, key)) = found else {
        return Ok(false);
    };
    conn.prepare_cached(
        "UPDATE collect_logs SET consent = ?1, \
         click_ids = CASE WHEN ?1 THEN coalesce(?2, click_ids) ELSE NULL END WHERE id = ?3",
    )?
    .execute(params![visit.consent, visit.click_ids, id])?;
    if was_consented != visit.consent {
        let delta: i64 = if visit.consent { 1 } else { -1 };
        conn.prepare_cached(
            "UPDATE traffic_cells SET consented_visits = consented_visits + ?10 \
             WHERE day = ?1 AND game = ?2 AND source = ?3 AND medium = ?4 AND campaign = ?5 \
             AND content = ?6 AND term = ?7 AND referrer_host = ?8 AND device = ?9",
        )?
        .execute(key.params_with(delta))?;
    }
    Ok(true)
}

/// A traffic cell's key, with '' for "none".
struct TrafficKey {
    day: String,
    game: String,
    source: String,
    medium: String,
    campaign: String,
    content: String,
    term: String,
    referrer_host: String,
    device: String,
}

impl TrafficKey {
    /// The key as ?1..?9 and `value` as ?10.
    fn params_with(&self, value: i64) -> impl rusqlite::Params + '_ {
        (
            self.day.as_str(),
            self.game.as_str(),
            self.source.as_str(),
            self.medium.as_str(),
            self.campaign.as_str(),
            self.content.as_str(),
            self.term.as_str(),
            self.referrer_host.as_str(),
            self.device.as_str(),
            value,
        )
    }
}

fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

/// The campaign an event is attributed to: the linked visit's UTM parameters, its source
/// falling back to the referrer's host; `(direct)` without a visit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribution {
    visit_id: Option<i64>,
    source: String,
    medium: Option<String>,
    campaign: Option<String>,
    content: Option<String>,
    term: Option<String>,
}

fn insert_event(
    conn: &Connection,
    event: &NewEvent,
    rules: &LinkRules,
    memory: &mut Memory,
) -> Result<(), StoreError> {
    let on_file = user_on_file(conn, &event.user, &memory.on_file)?;
    let user = on_file
        .or_else(|| event.user.first().copied())
        .ok_or_else(|| StoreError::Sqlite("an event without a user pseudonym".into()))?;
    let ip = event
        .ip
        .first()
        .ok_or_else(|| StoreError::Sqlite("an event without an IP pseudonym".into()))?;
    // Linking looks only at visits received before both the event's time and its arrival, so
    // a recomputation later finds exactly the visits that were there when it arrived.
    let link_time = event.event_time.min(event.received_at);
    let attribution = find_visit(
        conn,
        &event.ip,
        &event.game,
        link_time,
        rules,
        &memory.on_file,
    )?;
    let key = ConversionKey([
        utc_day(event.event_time),
        event.game.clone(),
        attribution.source.clone(),
        text(&attribution.medium),
        text(&attribution.campaign),
        text(&attribution.content),
        text(&attribution.term),
        text(&event.platform),
        text(&event.storefront),
        event.event.clone(),
    ]);
    let cell = memory.conversions.cell(conn, key)?;
    // A player never seen is new to every cell; decided before the event is on file.
    let new_user = match on_file {
        None => true,
        Some(user) => !user_in_cell(conn, &user, cell)?,
    };
    conn.prepare_cached(
        "INSERT INTO measure_logs (received_at, event_time, game, event, user_hash, \
         user_salt_id, ip_hash, ip_salt_id, platform, storefront, visit_id, source, medium, \
         campaign, content, term, cell_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        event.received_at,
        event.event_time,
        event.game,
        event.event,
        &user.hash[..],
        user.salt_id,
        &ip.hash[..],
        ip.salt_id,
        event.platform,
        event.storefront,
        attribution.visit_id,
        attribution.source,
        attribution.medium,
        attribution.campaign,
        attribution.content,
        attribution.term,
        cell,
    ])?;
    memory.on_file.add_user(&user);
    memory.conversions.count(cell, new_user);
    Ok(())
}

/// A conversion cell's key, with '' for "none": day, game, source, medium, campaign, content,
/// term, platform, storefront, event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConversionKey([String; 10]);

/// Whether the user pseudonym already counts in the conversion cell: an earlier event of theirs
/// names it. One probe of the user index, however many events the player has.
fn user_in_cell(conn: &Connection, user: &Pseudonym, cell: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM measure_logs \
             WHERE user_hash = ?1 AND user_salt_id = ?2 AND cell_id = ?3",
        )?
        .exists(params![&user.hash[..], user.salt_id, cell])?)
}

/// The conversion cells' ids by key, and what the open transaction adds to their counts. A
/// busy cell gets one UPDATE per group instead of one per event; the counts are written before
/// the transaction commits, so readers never see the difference.
#[derive(Default)]
struct ConversionCounts {
    ids: HashMap<ConversionKey, i64>,
    /// Events and new users per cell id, not yet written.
    pending: HashMap<i64, (i64, i64)>,
}

impl ConversionCounts {
    /// The cell's id, creating the cell (with zero counts) if it is new.
    fn cell(&mut self, conn: &Connection, key: ConversionKey) -> Result<i64, StoreError> {
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        let id: i64 = conn
            .prepare_cached(
                "INSERT INTO conversion_cells (day, game, source, medium, campaign, content, \
                 term, platform, storefront, event) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
                 ON CONFLICT (day, game, source, medium, campaign, content, term, platform, \
                              storefront, event) \
                 DO UPDATE SET events = events \
                 RETURNING id",
            )?
            .query_row(rusqlite::params_from_iter(&key.0), |row| row.get(0))?;
        self.ids.insert(key, id);
        Ok(id)
    }

    fn count(&mut self, cell: i64, new_user: bool) {
        let (events, users) = self.pending.entry(cell).or_default();
        *events += 1;
        *users += i64::from(new_user);
    }

    /// Writes the pending counts; runs inside the transaction that made them.
    fn write(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(
            "UPDATE conversion_cells SET events = events + ?2, users = users + ?3 WHERE id = ?1",
        )?;
        for (id, (events, users)) in self.pending.drain() {
            stmt.execute(params![id, events, users])?;
        }
        Ok(())
    }

    /// After a rollback, or after cells were deleted or rebuilt: the ids may be gone.
    fn forget(&mut self) {
        self.ids.clear();
        self.pending.clear();
    }
}

/// The visit that brought this event: same IP pseudonym under any live salt, same game or no
/// game, inside the lookback window before `link_time`, consented if required; the latest
/// (last touch) or earliest (first touch) of them.
fn find_visit(
    conn: &Connection,
    candidates: &[Pseudonym],
    game: &str,
    link_time: i64,
    rules: &LinkRules,
    on_file: &OnFile,
) -> Result<Attribution, StoreError> {
    // Two statements rather than a dynamic ORDER BY, so each stays a prepared, indexed lookup.
    let sql = if rules.first_touch {
        "SELECT received_at, id, utm_source, utm_medium, utm_campaign, utm_content, utm_term, \
         referrer_host FROM collect_logs \
         WHERE ip_hash = ?1 AND ip_salt_id = ?2 AND received_at BETWEEN ?3 AND ?4 \
         AND (game IS NULL OR game = ?5) AND (consent = 1 OR ?6 = 0) \
         ORDER BY received_at ASC, id ASC LIMIT 1"
    } else {
        "SELECT received_at, id, utm_source, utm_medium, utm_campaign, utm_content, utm_term, \
         referrer_host FROM collect_logs \
         WHERE ip_hash = ?1 AND ip_salt_id = ?2 AND received_at BETWEEN ?3 AND ?4 \
         AND (game IS NULL OR game = ?5) AND (consent = 1 OR ?6 = 0) \
         ORDER BY received_at DESC, id DESC LIMIT 1"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let (from, to) = (link_time - rules.lookback_secs, link_time);
    let mut candidates: Vec<(Span, &Pseudonym)> = candidates
        .iter()
        .filter_map(|ip| Some((on_file.visit_span(ip, from, to)?, ip)))
        .collect();
    // The salt that may hold the best visit first: once a visit is found, the salts whose
    // visits all came later (first touch) or earlier (last touch) cannot beat it.
    if rules.first_touch {
        candidates.sort_by_key(|(span, _)| span.first);
    } else {
        candidates.sort_by_key(|(span, _)| std::cmp::Reverse(span.last));
    }
    let mut best: Option<((i64, i64), Attribution)> = None;
    for (span, candidate) in candidates {
        if let Some(((at, _), _)) = &best {
            let beaten = if rules.first_touch {
                span.first > *at
            } else {
                span.last < *at
            };
            if beaten {
                break;
            }
        }
        let found = stmt
            .query_row(
                params![
                    &candidate.hash[..],
                    candidate.salt_id,
                    from,
                    to,
                    game,
                    rules.require_consent,
                ],
                |row| {
                    let utm_source: Option<String> = row.get(2)?;
                    let referrer: Option<String> = row.get(7)?;
                    Ok((
                        (row.get::<_, i64>(0)?, row.get::<_, i64>(1)?),
                        Attribution {
                            visit_id: Some(row.get(1)?),
                            source: utm_source
                                .or(referrer)
                                .unwrap_or_else(|| DIRECT.to_string()),
                            medium: row.get(3)?,
                            campaign: row.get(4)?,
                            content: row.get(5)?,
                            term: row.get(6)?,
                        },
                    ))
                },
            )
            .optional()?;
        if let Some((order, attribution)) = found {
            let better = match &best {
                None => true,
                Some((best_order, _)) if rules.first_touch => order < *best_order,
                Some((best_order, _)) => order > *best_order,
            };
            if better {
                best = Some((order, attribution));
            }
        }
    }
    Ok(best
        .map(|(_, attribution)| attribution)
        .unwrap_or(Attribution {
            visit_id: None,
            source: DIRECT.to_string(),
            medium: None,
            campaign: None,
            content: None,
            term: None,
        }))
}

/// The oldest of the user's candidate pseudonyms that already has a record, so the same
/// player keeps one pseudonym while any of their records is retained (invariant 4).
fn user_on_file(
    conn: &Connection,
    candidates: &[Pseudonym],
    on_file: &OnFile,
) -> Result<Option<Pseudonym>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM measure_logs WHERE user_hash = ?1 AND user_salt_id = ?2 LIMIT 1",
    )?;
    // Candidates come newest salt first; the oldest match wins.
    for candidate in candidates.iter().rev() {
        if on_file.may_have_user(candidate)
            && stmt.exists(params![&candidate.hash[..], candidate.salt_id])?
        {
            return Ok(Some(*candidate));
        }
    }
    Ok(None)
}

/// Recomputes the cells of the days `from..=to` from the raw logs: the roll-ups' definition,
/// used after deletions and by tests to prove the incremental roll-ups equal it.
fn rebuild_cells(conn: &Connection, from: &str, to: &str) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (parse_day(from), parse_day(to)) else {
        return Err(StoreError::Sqlite(format!("not a day range: {from}..{to}")));
    };
    let (start, end) = (day_start(first), day_start(last) + DAY_SECS);
    conn.execute(
        "DELETE FROM traffic_visitors WHERE cell_id IN \
         (SELECT id FROM traffic_cells WHERE day BETWEEN ?1 AND ?2)",
        params![from, to],
    )?;
    conn.execute(
        "DELETE FROM traffic_cells WHERE day BETWEEN ?1 AND ?2",
        params![from, to],
    )?;
    conn.execute(
        "INSERT INTO traffic_cells (day, game, source, medium, campaign, content, term, \
         referrer_host, device, visits, visitors, consented_visits) \
         SELECT strftime('%Y-%m-%d', received_at, 'unixepoch'), coalesce(game, ''), \
                coalesce(utm_source, ''), coalesce(utm_medium, ''), coalesce(utm_campaign, ''), \
                coalesce(utm_content, ''), coalesce(utm_term, ''), coalesce(referrer_host, ''), \
                device, count(*), count(DISTINCT ip_hash), sum(consent) \
         FROM collect_logs WHERE received_at >= ?1 AND received_at < ?2 \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9",
        params![start, end],
    )?;
    conn.execute(
        "INSERT INTO traffic_visitors (cell_id, ip_hash) \
         SELECT DISTINCT c.id, l.ip_hash FROM collect_logs l JOIN traffic_cells c \
           ON c.day = strftime('%Y-%m-%d', l.received_at, 'unixepoch') \
          AND c.game = coalesce(l.game, '') AND c.source = coalesce(l.utm_source, '') \
          AND c.medium = coalesce(l.utm_medium, '') AND c.campaign = coalesce(l.utm_campaign, '') \
          AND c.content = coalesce(l.utm_content, '') AND c.term = coalesce(l.utm_term, '') \
          AND c.referrer_host = coalesce(l.referrer_host, '') AND c.device = l.device \
         WHERE l.received_at >= ?1 AND l.received_at < ?2",
        params![start, end],
    )?;
    conn.execute(
        "DELETE FROM conversion_cells WHERE day BETWEEN ?1 AND ?2",
        params![from, to],
    )?;
    conn.execute(
        "INSERT INTO conversion_cells (day, game, source, medium, campaign, content, term, \
         platform, storefront, event, events, users) \
         SELECT strftime('%Y-%m-%d', event_time, 'unixepoch'), game, \
                coalesce(source, '(direct)'), coalesce(medium, ''), coalesce(campaign, ''), \
                coalesce(content, ''), coalesce(term, ''), coalesce(platform, ''), \
                coalesce(storefront, ''), event, count(*), count(DISTINCT user_hash) \
         FROM measure_logs WHERE event_time >= ?1 AND event_time < ?2 \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10",
        params![start, end],
    )?;
    // Each event names the cell it counts in (see `user_in_cell`).
    conn.execute(
        "UPDATE measure_logs SET cell_id = (SELECT c.id FROM conversion_cells c \
           WHERE c.day = strftime('%Y-%m-%d', measure_logs.event_time, 'unixepoch') \
           AND c.game = measure_logs.game AND c.source = coalesce(measure_logs.source, '(direct)') \
           AND c.medium = coalesce(measure_logs.medium, '') \
           AND c.campaign = coalesce(measure_logs.campaign, '') \
           AND c.content = coalesce(measure_logs.content, '') \
           AND c.term = coalesce(measure_logs.term, '') \
           AND c.platform = coalesce(measure_logs.platform, '') \
           AND c.storefront = coalesce(measure_logs.storefront, '') \
           AND c.event = measure_logs.event) \
         WHERE event_time >= ?1 AND event_time < ?2",
        params![start, end],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u8) -> Pseudonym {
        Pseudonym {
            salt_id: 1,
            hash: [n; 16],
        }
    }

    /// Migration 0006 names each event's cell, so a player counted before the upgrade is not
    /// counted again after it.
    #[test]
    fn events_on_file_before_0006_name_their_cells() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        let before = &super::super::MIGRATIONS[..5];
        for sql in before {
            conn.execute_batch(sql).expect("migration");
        }
        conn.pragma_update(None, "user_version", before.len() as i64)
            .expect("version");
        // 2026-11-01 12:00 UTC: alice twice in one cell, bob once in another (no source: direct).
        conn.execute_batch(&format!(
            "INSERT INTO conversion_cells (id, day, game, source, medium, campaign, content, term, \
               platform, storefront, event, events, users) VALUES \
               (7, '2026-11-01', 'g', 'ads', '', '', '', '', 'pc', '', 'open', 2, 1), \
               (9, '2026-11-01', 'g', '(direct)', '', '', '', '', '', '', 'open', 1, 1); \
             INSERT INTO measure_logs (received_at, event_time, game, event, user_hash, user_salt_id, \
               ip_hash, ip_salt_id, platform, source) VALUES \
               (1793534400, 1793534400, 'g', 'open', x'{a}', 1, x'{a}', 1, 'pc', 'ads'), \
               (1793534401, 1793534401, 'g', 'open', x'{a}', 1, x'{a}', 1, 'pc', 'ads'), \
               (1793534402, 1793534402, 'g', 'open', x'{b}', 1, x'{b}', 1, NULL, NULL);",
            a = "01".repeat(16),
            b = "02".repeat(16),
        ))
        .expect("rows before the upgrade");
        super::super::migrate(&mut conn).expect("migrations");
        let cells: Vec<Option<i64>> = conn
            .prepare("SELECT cell_id FROM measure_logs ORDER BY id")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .expect("cell ids");
        assert_eq!(cells, vec![Some(7), Some(7), Some(9)]);
        assert!(user_in_cell(&conn, &user(1), 7).expect("probe"));
        assert!(!user_in_cell(&conn, &user(1), 9).expect("probe"));
        assert!(user_in_cell(&conn, &user(2), 9).expect("probe"));
        // The probe is the user index's, not a scan of the table.
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT 1 FROM measure_logs \
                 WHERE user_hash = ?1 AND user_salt_id = ?2 AND cell_id = ?3",
                params![&[1u8; 16][..], 1, 7],
                |row| row.get(3),
            )
            .expect("plan");
        assert!(plan.contains("COVERING INDEX measure_logs_user"), "{plan}");
    }

    /// 0007 keeps the page-view ids of the newest hour of visits (the only ones a consent
    /// update may still reach) in their own table and drops the index of the column.
    #[test]
    fn page_view_ids_of_the_last_hour_move_to_their_table_in_0007() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        let before = &super::super::MIGRATIONS[..6];
        for sql in before {
            conn.execute_batch(sql).expect("migration");
        }
        conn.pragma_update(None, "user_version", before.len() as i64)
            .expect("version");
        conn.execute_batch(&format!(
            "INSERT INTO collect_logs (id, received_at, ip_hash, ip_salt_id, page_host, page_path, \
               device, os, browser, consent, view_id) VALUES \
               (1, 1000, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, 'view-too-old'), \
               (2, 1001, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, 'view-an-hour-old'), \
               (3, 4601, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, 'view-newest'), \
               (4, 4601, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, NULL);",
            ip = "01".repeat(16),
        ))
        .expect("rows before the upgrade");
        super::super::migrate(&mut conn).expect("migrations");
        let views: Vec<(String, i64, i64)> = conn
            .prepare("SELECT view_id, visit_id, received_at FROM page_views ORDER BY visit_id")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .expect("page views");
        assert_eq!(
            views,
            vec![
                ("view-an-hour-old".to_string(), 2, 1001),
                ("view-newest".to_string(), 3, 4601),
            ]
        );
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'collect_logs_view'",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert_eq!(index, 0, "the view-id index is gone");
    }

    /// The hourly purge reads what it deletes through indexes, never a whole table: at the
    /// issue's scale (30 M visits) one scan stalls the writer, and with it every ingest
    /// answer, for seconds.
    #[test]
    fn the_purge_finds_its_rows_through_indexes() {
        let mut conn = Connection::open_in_memory().expect("memory database");
        super::super::migrate(&mut conn).expect("migrations");
        let plan = |sql: &str| -> String {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan");
            let details: Vec<String> = stmt
                .query_map(params![1_800_000_000_i64], |row| row.get(3))
                .and_then(|rows| rows.collect())
                .expect("plan rows");
            details.join("; ")
        };
        for (sql, index) in [
            (
                concat!("DELETE FROM collect_logs WHERE ", doomed_visits!()),
                "collect_logs_received_at",
            ),
            (
                concat!("SELECT count(*) FROM collect_logs WHERE ", doomed_visits!()),
                "collect_logs_received_at",
            ),
            (
                concat!("DELETE FROM measure_logs WHERE ", doomed_events!()),
                "measure_logs_expiry (user_salt_id=? AND <expr><?)",
            ),
            (
                concat!("SELECT count(*) FROM measure_logs WHERE ", doomed_events!()),
                "measure_logs_expiry (user_salt_id=? AND <expr><?)",
            ),
            (DELETE_EXPIRED_VISITOR_LISTS, "PRIMARY KEY"),
        ] {
            let plan = plan(sql);
            assert!(plan.contains(index), "{sql}: {plan}");
            for table in ["collect_logs", "measure_logs", "traffic_visitors"] {
                assert!(!plan.contains(&format!("SCAN {table}")), "{sql}: {plan}");
            }
        }
    }
}
