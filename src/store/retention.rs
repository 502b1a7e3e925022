//! Store: retention. The hourly purge deletes what is past the retention window, with the
//! salts that keyed it; a forget request deletes one player's records and the visits linked
//! to them.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{Write, Writing, settle_counts, settle_for_purge};
use super::types::{ForgetReport, PurgeReport, Settled, StoreError};
use super::visits::VIEW_UPDATE_WINDOW_SECS;
use super::{cells, returns};
use crate::clock::{day_of, day_start, utc_day};
use crate::link::{self, LinkRules};
use crate::privacy::{BlockHash, Pseudonym};

/// The ids of the salts on file.
pub(super) fn live_salts(conn: &Connection) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM salts")?;
    let ids = stmt
        .query_map([], |row| row.get::<_, i64>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
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

/// The players with an event the purge at ?1 deletes on the cut-off day (its start is ?2) or
/// later: only theirs can move a kept cell's returns. Returns look forward, so an event of an
/// earlier day counts only in cells of earlier days, which the purge deletes. `+event_time`
/// keeps the purge's own index ranges; the time index would read every event since ?2.
const PLAYERS_PURGED_FROM_KEPT_DAYS: &str = concat!(
    "SELECT DISTINCT user_hash, user_salt_id FROM measure_logs WHERE (",
    doomed_events!(),
    ") AND +event_time >= ?2"
);

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

/// Deletes what is older than `cutoff` (unix seconds): visits, events, roll-up cells of
/// earlier days, and salts retired before it together with every row they keyed; forgets the
/// page-view ids of visits more than an hour before `now`.
pub(super) struct Purge {
    pub cutoff: i64,
    pub now: i64,
}

impl Write for Purge {
    type Output = PurgeReport;
    const DELETES: bool = true;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<PurgeReport, StoreError> {
        let settled = settle_for_purge(writing, self.cutoff, self.now - VIEW_UPDATE_WINDOW_SECS)?;
        purge(&settled, self.cutoff, self.now)
    }
}

fn purge(settled: &Settled<'_>, cutoff: i64, now: i64) -> Result<PurgeReport, StoreError> {
    let conn = settled.conn();
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
    // The players whose returns the purge can move, with their cells before it (see
    // `PLAYERS_PURGED_FROM_KEPT_DAYS`).
    let mut purged: Vec<(Pseudonym, Vec<returns::CellDay>)> = Vec::new();
    {
        let mut stmt = conn.prepare_cached(PLAYERS_PURGED_FROM_KEPT_DAYS)?;
        let mut rows = stmt.query(params![cutoff, day_start(day_of(cutoff))])?;
        while let Some(row) = rows.next()? {
            let user = Pseudonym {
                hash: returns::user_hash(row, 0)?,
                salt_id: row.get(1)?,
            };
            purged.push((user, returns::player_cells(conn, &user)?));
        }
    }
    conn.execute(
        concat!("DELETE FROM measure_logs WHERE ", doomed_events!()),
        params![cutoff],
    )?;
    for (user, before) in &purged {
        let after = returns::player_cells(conn, user)?;
        returns::write_changes(settled, &returns::changes(before, &after))?;
    }
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

/// Page-view ids serve only the consent update within the hour (`update_view`); older ones go,
/// with their records.
fn forget_view_ids(conn: &Connection, before: i64) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM page_views WHERE received_at < ?1",
        params![before],
    )?;
    conn.execute(
        "DELETE FROM page_view_keys WHERE received_at < ?1",
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

/// Deletes one player's events (found under any of `users`, their pseudonyms under every live
/// salt) and the visits linked to them, and blocks them (`block`); logs only the time and the
/// counts.
pub(super) struct Forget {
    pub game: String,
    pub users: Vec<Pseudonym>,
    pub block: BlockHash,
    pub now: i64,
}

impl Write for Forget {
    type Output = ForgetReport;
    const DELETES: bool = true;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<ForgetReport, StoreError> {
        let settled = settle_counts(writing)?;
        // In the same transaction as the deletions: no event of the player can be stored
        // between the two.
        super::blocks::block(settled.conn(), &self.block)?;
        forget(&settled, &self.game, &self.users, self.now, writing.rules)
    }
}

/// A player's events and the visits linked to them: the attributed visit, and every visit of
/// the event's IP pseudonym inside the lookback window before it (for the same game or none).
fn forget(
    settled: &Settled<'_>,
    game: &str,
    users: &[Pseudonym],
    now: i64,
    rules: &LinkRules,
) -> Result<ForgetReport, StoreError> {
    let conn = settled.conn();
    // The player's share of returns goes with their events.
    for user in users {
        let cells = returns::player_cells(conn, user)?;
        returns::write_changes(settled, &returns::changes(&cells, &[]))?;
    }
    let events = player_events(conn, game, users)?;
    let visits = linked_visits(conn, game, &events, rules)?;
    let (traffic, conversions) = cells::cells_of(
        conn,
        &visits.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        &events.iter().map(|event| event.id).collect::<Vec<_>>(),
    )?;
    delete_forgotten(conn, &visits, &events)?;
    cells::forget_pages(conn, &traffic, &conversions)?;
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

/// A visit to delete: its id and its IP pseudonym's hash.
type LinkedVisit = (i64, Vec<u8>);

/// The player's events in `game`, under any of their pseudonyms.
fn player_events(
    conn: &Connection,
    game: &str,
    users: &[Pseudonym],
) -> Result<Vec<ForgottenEvent>, StoreError> {
    let mut events: Vec<ForgottenEvent> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT id, visit_id, ip_hash, ip_salt_id, event_time, received_at \
         FROM measure_logs WHERE game = ?1 AND user_hash = ?2 AND user_salt_id = ?3",
    )?;
    for user in users {
        let rows = stmt.query_map(params![game, &user.hash[..], user.salt_id], |row| {
            Ok(ForgottenEvent {
                id: row.get(0)?,
                visit_id: row.get(1)?,
                ip_hash: row.get(2)?,
                ip_salt_id: row.get(3)?,
                link_time: link::link_time(row.get(4)?, row.get(5)?),
            })
        })?;
        for row in rows {
            events.push(row?);
        }
    }
    Ok(events)
}

/// The visits linked to `events`, each once, in the order found: the attributed visit, then
/// those of the event's IP pseudonym inside its window.
fn linked_visits(
    conn: &Connection,
    game: &str,
    events: &[ForgottenEvent],
    rules: &LinkRules,
) -> Result<Vec<LinkedVisit>, StoreError> {
    let mut visits: Vec<LinkedVisit> = Vec::new();
    let mut attributed =
        conn.prepare_cached("SELECT id, ip_hash FROM collect_logs WHERE id = ?1")?;
    // Consented or not: whatever could have linked goes.
    let mut in_window = conn.prepare_cached(
        "SELECT id, ip_hash, game FROM collect_logs \
         WHERE ip_hash = ?1 AND ip_salt_id = ?2 AND received_at BETWEEN ?3 AND ?4",
    )?;
    for event in events {
        let mut found: Vec<LinkedVisit> = Vec::new();
        if let Some(id) = event.visit_id {
            let visit = attributed
                .query_row(params![id], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
            found.extend(visit);
        }
        let (from, to) = rules.window(event.link_time);
        let rows = in_window
            .query_map(params![event.ip_hash, event.ip_salt_id, from, to], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get::<_, Option<String>>(2)?))
            })?;
        for row in rows {
            let (id, ip_hash, visit_game) = row?;
            if link::for_game(visit_game.as_deref(), game) {
                found.push((id, ip_hash));
            }
        }
        for visit in found {
            if !visits.contains(&visit) {
                visits.push(visit);
            }
        }
    }
    Ok(visits)
}

/// Deletes the visits (with their visitor entries and page views), then the events.
fn delete_forgotten(
    conn: &Connection,
    visits: &[LinkedVisit],
    events: &[ForgottenEvent],
) -> Result<(), StoreError> {
    for (id, ip_hash) in visits {
        conn.prepare_cached("DELETE FROM traffic_visitors WHERE ip_hash = ?1")?
            .execute(params![ip_hash])?;
        // Found through its record: the table's key starts with the view's id hash.
        conn.prepare_cached(
            "DELETE FROM page_views WHERE visit_id = ?1 \
             AND view_key = (SELECT view_key FROM page_view_keys WHERE visit_id = ?1)",
        )?
        .execute(params![id])?;
        conn.prepare_cached("DELETE FROM page_view_keys WHERE visit_id = ?1")?
            .execute(params![id])?;
        conn.prepare_cached("DELETE FROM collect_logs WHERE id = ?1")?
            .execute(params![id])?;
    }
    for event in events {
        conn.prepare_cached("DELETE FROM measure_logs WHERE id = ?1")?
            .execute(params![event.id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hourly purge reads what it deletes through indexes, never a whole table: at the
    /// issue's scale (30 M visits) one scan stalls the writer, and with it every ingest
    /// answer, for seconds.
    #[test]
    fn the_purge_finds_its_rows_through_indexes() {
        let conn = crate::store::migrated_in_memory();
        let plan = |sql: &str| {
            // The cutoff, and for the statement that takes it, the start of its day.
            let values = [1_800_000_000_i64, 1_799_971_200];
            let count = if sql.contains("?2") { 2 } else { 1 };
            crate::store::query_plan(&conn, sql, rusqlite::params_from_iter(&values[..count]))
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
            (
                PLAYERS_PURGED_FROM_KEPT_DAYS,
                "measure_logs_expiry (user_salt_id=? AND <expr><?)",
            ),
        ] {
            let plan = plan(sql);
            assert!(plan.contains(index), "{sql}: {plan}");
            for table in ["collect_logs", "measure_logs", "traffic_visitors"] {
                assert!(!plan.contains(&format!("SCAN {table}")), "{sql}: {plan}");
            }
        }
    }
}
