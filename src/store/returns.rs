//! Store: players' returns (D1, D7), kept in the conversion cells as events come and go.
//!
//! A cell's `returned_d1` counts its players (those with an event in it) who also have an
//! event on the next UTC day; `returned_d7`, on one of the next seven. A player's share of
//! those counts depends only on the cells of their own events on file, each cell being one
//! day. So every change of a player's events (an arrival, a forget, a purge) adds the
//! difference of their share before and after, and the counts stay what a count over the
//! events on file gives ([`count_from_events`], the definition, which the rebuild uses). A
//! read then costs what the cells cost, however many players they count.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{Connection, params};

use super::types::{Settled, StoreError};
use crate::clock::DAY_SECS;
use crate::privacy::Pseudonym;

/// The days a return may fall on after a cell's day: the next one (D1) and the next seven (D7).
const RETURN_DAYS: i64 = 7;

/// A cell's id and its day (days since the epoch).
pub(super) type CellDay = (i64, i64);

/// What a change adds to one cell's (returned_d1, returned_d7).
pub(super) type Change = (i64, [i64; 2]);

const PLAYER_CELLS: &str = "SELECT DISTINCT m.cell_id, CAST(strftime('%s', c.day) AS INTEGER) / 86400 \
     FROM measure_logs m JOIN conversion_cells c ON c.id = m.cell_id \
     WHERE m.user_hash = ?1 AND m.user_salt_id = ?2";

/// The player's cells on file, each once, with their days. Read through the user index (the
/// player's few entries) and the cells by id.
pub(super) fn player_cells(
    conn: &Connection,
    user: &Pseudonym,
) -> Result<Vec<CellDay>, StoreError> {
    let mut stmt = conn.prepare_cached(PLAYER_CELLS)?;
    let cells = stmt
        .query_map(params![&user.hash[..], user.salt_id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(cells)
}

/// A player's share of each of their cells' returns.
fn shares(cells: &[CellDay]) -> impl Iterator<Item = Change> + '_ {
    let days: BTreeSet<i64> = cells.iter().map(|(_, day)| *day).collect();
    cells.iter().map(move |(cell, day)| {
        let d1 = days.contains(&(day + 1));
        let d7 = days.range(day + 1..=day + RETURN_DAYS).next().is_some();
        (*cell, [i64::from(d1), i64::from(d7)])
    })
}

/// What the cells' counts gain when a player's cells go from `before` to `after`: only the
/// cells whose counts move.
pub(super) fn changes(before: &[CellDay], after: &[CellDay]) -> Vec<Change> {
    let mut moved: HashMap<i64, [i64; 2]> = HashMap::new();
    for (cell, [d1, d7]) in shares(before) {
        let counts = moved.entry(cell).or_default();
        counts[0] -= d1;
        counts[1] -= d7;
    }
    for (cell, [d1, d7]) in shares(after) {
        let counts = moved.entry(cell).or_default();
        counts[0] += d1;
        counts[1] += d7;
    }
    moved
        .into_iter()
        .filter(|(_, counts)| *counts != [0, 0])
        .collect()
}

/// The player's cells after a new event in `cell` on `day`: an arrival's `after`.
pub(super) fn with_event(before: &[CellDay], cell: i64, event_time: i64) -> Vec<CellDay> {
    let mut after = before.to_vec();
    after.push((cell, event_time.div_euclid(DAY_SECS)));
    after
}

/// Adds `changes` to the cells at once: for deletions, which run after the counts held back
/// are settled.
pub(super) fn write_changes(settled: &Settled<'_>, changes: &[Change]) -> Result<(), StoreError> {
    let mut stmt = settled.conn().prepare_cached(
        "UPDATE conversion_cells SET returned_d1 = returned_d1 + ?2, \
         returned_d7 = returned_d7 + ?3 WHERE id = ?1",
    )?;
    for (cell, [d1, d7]) in changes {
        stmt.execute(params![cell, d1, d7])?;
    }
    Ok(())
}

/// The events of a time range (?1 <= event_time < ?2) in the time index's order. A user
/// pseudonym is keyed by its game (the game is hashed with the user id), so it names a player
/// of one game.
const EVENTS_IN_RANGE: &str = "SELECT cell_id, user_hash, user_salt_id, event_time \
     FROM measure_logs INDEXED BY measure_logs_time \
     WHERE event_time >= ?1 AND event_time < ?2";

/// Days one pass reads: its cells' days, and the week after its last (a bit mask of a
/// player's days holds 64).
const PASS_DAYS: i64 = 64 - RETURN_DAYS;

/// (returned_d1, returned_d7) of each conversion cell of the days from `start` to `end` (day
/// starts), counted from the events on file: the definition of the kept counts. One pass over
/// the time index per 57 days reads the range and the week after it, notes each player's days
/// in a bit mask, and counts each (cell, player) once.
pub(super) fn count_from_events(
    conn: &Connection,
    start: i64,
    end: i64,
) -> Result<HashMap<i64, [i64; 2]>, StoreError> {
    let mut counts = HashMap::new();
    let mut pass = start;
    while pass < end {
        let pass_end = (pass + PASS_DAYS * DAY_SECS).min(end);
        count_pass(conn, pass, pass_end, &mut counts)?;
        pass = pass_end;
    }
    Ok(counts)
}

/// The user pseudonym's hash in column `index`.
pub(super) fn user_hash(row: &rusqlite::Row<'_>, index: usize) -> Result<[u8; 16], StoreError> {
    row.get_ref(index)?
        .as_blob()
        .ok()
        .and_then(|blob| blob.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("a user pseudonym is not 16 bytes".into()))
}

/// A player: their user pseudonym and its salt.
type Player = ([u8; 16], i64);

/// Adds the returns of the cells of the days from `start` to `end` (at most `PASS_DAYS`
/// apart) to `counts`.
fn count_pass(
    conn: &Connection,
    start: i64,
    end: i64,
    counts: &mut HashMap<i64, [i64; 2]>,
) -> Result<(), StoreError> {
    let first_day = start.div_euclid(DAY_SECS);
    let cell_days = (end - start) / DAY_SECS;
    // Each player's days with an event, bit n for `first_day + n`; and each (cell, player)
    // of the range once, with its day.
    let mut days: HashMap<Player, u64> = HashMap::new();
    let mut members: HashMap<(i64, Player), i64> = HashMap::new();
    let mut stmt = conn.prepare_cached(EVENTS_IN_RANGE)?;
    let mut rows = stmt.query(params![start, end + RETURN_DAYS * DAY_SECS])?;
    while let Some(row) = rows.next()? {
        let player = (user_hash(row, 1)?, row.get(2)?);
        let offset = row.get::<_, i64>(3)?.div_euclid(DAY_SECS) - first_day;
        *days.entry(player).or_default() |= 1_u64 << offset;
        if offset < cell_days
            && let Some(cell) = row.get::<_, Option<i64>>(0)?
        {
            members.insert((cell, player), offset);
        }
    }
    let week: u64 = (1 << RETURN_DAYS) - 1;
    for ((cell, player), offset) in members {
        let later = days.get(&player).copied().unwrap_or_default() >> (offset + 1);
        let count = counts.entry(cell).or_default();
        count[0] += i64::from(later & 1 == 1);
        count[1] += i64::from(later & week != 0);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut changes: Vec<Change>) -> Vec<Change> {
        changes.sort_unstable();
        changes
    }

    /// A first event changes nothing; an event on the next day makes the earlier cell a D1
    /// and D7 return; one a week later only a D7; one eight days later neither.
    #[test]
    fn a_later_day_counts_in_the_earlier_cells() {
        assert!(changes(&[], &[(1, 100)]).is_empty());
        assert_eq!(
            changes(&[(1, 100)], &[(1, 100), (2, 101)]),
            vec![(1, [1, 1])]
        );
        assert_eq!(
            changes(&[(1, 100)], &[(1, 100), (2, 107)]),
            vec![(1, [0, 1])]
        );
        assert!(changes(&[(1, 100)], &[(1, 100), (2, 108)]).is_empty());
    }

    /// A late event (on a day before the player's first) makes its own cell count the later
    /// days at once; a second cell on a day already seen moves nothing else.
    #[test]
    fn late_events_and_second_cells_of_a_day() {
        assert_eq!(
            changes(&[(2, 101)], &[(2, 101), (1, 100)]),
            vec![(1, [1, 1])]
        );
        assert_eq!(
            sorted(changes(
                &[(1, 100), (2, 101)],
                &[(1, 100), (2, 101), (3, 100)]
            )),
            vec![(3, [1, 1])]
        );
    }

    /// Deleting a player's events takes back exactly what they added.
    #[test]
    fn forgetting_takes_the_share_back() {
        let cells = [(1, 100), (2, 101), (3, 103), (4, 110)];
        assert_eq!(
            sorted(changes(&cells, &[])),
            vec![(1, [-1, -1]), (2, [0, -1]), (3, [0, -1])]
        );
    }

    /// The definition reads a range of the time index, never the whole log.
    #[test]
    fn counting_from_the_events_reads_a_range_of_the_time_index() {
        let conn = crate::store::migrated_in_memory();
        let plan = crate::store::query_plan(
            &conn,
            EVENTS_IN_RANGE,
            params![1_793_491_200_i64, 1_794_700_800_i64],
        );
        assert!(
            plan.contains("measure_logs_time (event_time>? AND event_time<?)"),
            "{plan}"
        );
    }

    /// A player's cells are read through the user index and the cells' ids.
    #[test]
    fn a_players_cells_are_read_through_the_user_index() {
        let conn = crate::store::migrated_in_memory();
        let plan = crate::store::query_plan(&conn, PLAYER_CELLS, params![&[0u8; 16][..], 1]);
        assert!(
            plan.contains("measure_logs_user (user_hash=? AND user_salt_id=?)"),
            "{plan}"
        );
        assert!(plan.contains("INTEGER PRIMARY KEY (rowid=?)"), "{plan}");
    }
}
