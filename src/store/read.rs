//! Store: read-only access (salts, stats, roll-up cells, one player's events for a data
//! request) on a connection of its own, safe to use beside a running daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rusqlite::{Connection, Row, params};

use super::{
    Access, DbKey, OutboxEntry, OutboxStats, PurgeReport, Stats, StoreError, SubjectReport,
    open_connection,
};
use super::{blocks, cells, columns};
use crate::campaign::DIMENSIONS;
use crate::clock::{DAY_SECS, day_start, parse_day, utc_day};
use crate::privacy::{BlockHash, Pseudonym, Salt};
use crate::rows::{ConversionRow, SubjectEvent, TrafficRow};

/// A read-only connection.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
}

impl Reader {
    pub fn open(path: &Path, key: &DbKey) -> Result<Reader, StoreError> {
        Ok(Reader {
            conn: open_connection(path, key, Access::ReadOnly)?,
            path: path.to_path_buf(),
        })
    }

    /// How the writer finds the page view a consent update changes (`EXPLAIN QUERY PLAN`), for
    /// the test that keeps it an index probe.
    #[doc(hidden)]
    pub fn view_lookup_plan(&self) -> Result<Vec<String>, StoreError> {
        super::visits::view_lookup_plan(&self.conn)
    }

    /// The block list's key; `None` in a file no writer has opened yet.
    pub fn block_key(&self) -> Result<Option<crate::privacy::BlockKey>, StoreError> {
        blocks::read_key(&self.conn)
    }

    pub fn salts(&self) -> Result<Vec<Salt>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, created_at, salt FROM salts ORDER BY id")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut salts = Vec::new();
        for row in rows {
            let (id, created_at, bytes) = row?;
            let key: [u8; 32] = bytes
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("salt {id} is not 32 bytes")))?;
            salts.push(Salt {
                id,
                created_at,
                key,
            });
        }
        Ok(salts)
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        let conn = &self.conn;
        let count = |sql: &str| conn.query_row(sql, [], |row| row.get::<_, i64>(0));
        let (oldest, newest) = conn.query_row(
            "SELECT min(t), max(t) FROM (
                 SELECT received_at AS t FROM collect_logs
                 UNION ALL SELECT received_at FROM measure_logs)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        let current_salt = conn.query_row("SELECT max(created_at) FROM salts", [], |row| {
            row.get::<_, Option<i64>>(0)
        })?;
        let (database_bytes, wal_bytes) = super::file_sizes(&self.path);
        Ok(Stats {
            visits: count("SELECT count(*) FROM collect_logs")?,
            events: count("SELECT count(*) FROM measure_logs")?,
            salts: count("SELECT count(*) FROM salts")?,
            oldest_record: oldest,
            newest_record: newest,
            current_salt_created_at: current_salt,
            database_bytes,
            wal_bytes,
            outbox: super::outbox::stats(conn)?,
        })
    }

    /// The oldest aggregates document waiting for delivery.
    pub fn outbox_next(&self) -> Result<Option<OutboxEntry>, StoreError> {
        super::outbox::next(&self.conn)
    }

    /// The content hash last queued for each day.
    pub fn queued_contents(&self) -> Result<HashMap<String, [u8; 32]>, StoreError> {
        super::outbox::queued_contents(&self.conn)
    }

    pub fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        super::outbox::stats(&self.conn)
    }

    /// What is held about one player of `game` (a data request): the events found under any of
    /// `users` (their pseudonyms under every live salt), oldest first, and whether `block` is
    /// on the block list.
    pub fn subject(
        &self,
        game: &str,
        users: &[Pseudonym],
        block: &BlockHash,
    ) -> Result<SubjectReport, StoreError> {
        let mut found: Vec<(i64, i64, SubjectEvent)> = Vec::new();
        let mut stmt = self.conn.prepare(&SUBJECT_EVENTS)?;
        for user in users {
            let rows = stmt.query_map(params![game, &user.hash[..], user.salt_id], |row| {
                let time: i64 = row.get(1)?;
                Ok((
                    time,
                    row.get(0)?,
                    SubjectEvent {
                        day: utc_day(time),
                        event: row.get(2)?,
                        platform: row.get(3)?,
                        storefront: row.get(4)?,
                        country: row.get(5)?,
                        campaign: columns::read_campaign(row, 6)?,
                    },
                ))
            })?;
            for row in rows {
                found.push(row?);
            }
        }
        found.sort_by_key(|(time, id, _)| (*time, *id));
        Ok(SubjectReport {
            game: game.to_string(),
            blocked: blocks::is_blocked(&self.conn, block)?,
            events: found.into_iter().map(|(_, _, event)| event).collect(),
        })
    }

    /// What a purge at `cutoff` would delete (`purge --dry-run`).
    pub fn purge_preview(&self, cutoff: i64) -> Result<PurgeReport, StoreError> {
        super::retention::purge_preview(&self.conn, cutoff)
    }

    /// The roll-up cells of the days `from..=to` (`YYYY-MM-DD`), optionally of one game, in a
    /// stable order. A game's traffic includes the visits that named no game: like linking,
    /// it counts them as every game's.
    pub fn cells(
        &self,
        from: &str,
        to: &str,
        game: Option<&str>,
    ) -> Result<(Vec<TrafficRow>, Vec<ConversionRow>), StoreError> {
        let game = game.unwrap_or("");
        let day = |text: &str| {
            parse_day(text).ok_or(StoreError::Invalid("a day range that is no YYYY-MM-DD"))
        };
        let (first, last) = (day(from)?, day(to)?);
        let traffic = self
            .conn
            .prepare(&TRAFFIC)?
            .query_map(params![from, to, game], |row| {
                Ok(TrafficRow {
                    day: row.get(0)?,
                    game: none_if_empty(row, 1)?,
                    campaign: columns::read_campaign(row, 2)?,
                    referrer_host: none_if_empty(row, 2 + DIMENSIONS)?,
                    device: row.get(3 + DIMENSIONS)?,
                    country: none_if_empty(row, 4 + DIMENSIONS)?,
                    visits: row.get(5 + DIMENSIONS)?,
                    visitors: row.get(6 + DIMENSIONS)?,
                    consented_visits: row.get(7 + DIMENSIONS)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let returns = returns(&self.conn, first, last, game)?;
        let conversions = self
            .conn
            .prepare(&CONVERSIONS)?
            .query_map(params![from, to, game], |row| {
                let cell: i64 = row.get(8 + DIMENSIONS)?;
                let (returned_d1, returned_d7) = returns.get(&cell).copied().unwrap_or_default();
                Ok(ConversionRow {
                    day: row.get(0)?,
                    game: row.get(1)?,
                    campaign: columns::read_campaign(row, 2)?,
                    platform: none_if_empty(row, 2 + DIMENSIONS)?,
                    storefront: none_if_empty(row, 3 + DIMENSIONS)?,
                    country: none_if_empty(row, 4 + DIMENSIONS)?,
                    event: row.get(5 + DIMENSIONS)?,
                    events: row.get(6 + DIMENSIONS)?,
                    users: row.get(7 + DIMENSIONS)?,
                    returned_d1,
                    returned_d7,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok((traffic, conversions))
    }
}

static TRAFFIC: LazyLock<String> = LazyLock::new(|| {
    let key = cells::traffic_key_columns();
    format!(
        "SELECT {key}, visits, visitors, consented_visits FROM traffic_cells \
         WHERE day BETWEEN ?1 AND ?2 AND (?3 = '' OR game = ?3 OR game = '') AND visits > 0 \
         ORDER BY {key}"
    )
});

static CONVERSIONS: LazyLock<String> = LazyLock::new(|| {
    let key = cells::conversion_key_columns();
    format!(
        "SELECT {key}, events, users, id FROM conversion_cells \
         WHERE day BETWEEN ?1 AND ?2 AND (?3 = '' OR game = ?3) AND events > 0 \
         ORDER BY {key}"
    )
});

/// The events of a time range (?1 <= event_time < ?2), of game ?3 or of all for '', in the
/// time index's order. A user pseudonym is keyed by its game (the game is hashed with the user
/// id), so it names a player of one game.
const EVENTS_IN_RANGE: &str = "SELECT cell_id, user_hash, user_salt_id, event_time \
     FROM measure_logs INDEXED BY measure_logs_time \
     WHERE event_time >= ?1 AND event_time < ?2 AND (?3 = '' OR game = ?3)";

/// The days a return may fall on after a first day: the next one (D1) and the next seven (D7).
const RETURN_DAYS: i64 = 7;
/// Days one pass reads: its first days' players, and the week after its last (a bit mask of a
/// player's days holds 64).
const PASS_DAYS: i64 = 64 - RETURN_DAYS;

/// (returned_d1, returned_d7) of each conversion cell of the days `first..=last` (of `game`, or
/// all for ""): of the players with an event in the cell, how many have an event (of the same
/// game) on the next UTC day, and on one of the next seven.
///
/// Counted here, from the events on file, rather than kept in the cells by the writer: events
/// arrive late and in any order (a return can land before the first open it returns from),
/// and a forgotten player's events are deleted; a count kept up to date would have to undo and
/// redo itself for each. Read from the events, it is right by construction. One pass over the
/// time index reads the range and the week after it, notes each player's days in a bit mask,
/// and counts each (cell, player) once: no per-player probe of the user index, which costs a
/// random page (and its decryption) each (measured: 47 s against this pass's few seconds for
/// 14 days of 20,000 new players a day).
fn returns(
    conn: &Connection,
    first: chrono::NaiveDate,
    last: chrono::NaiveDate,
    game: &str,
) -> Result<HashMap<i64, (i64, i64)>, StoreError> {
    let mut counts: HashMap<i64, (i64, i64)> = HashMap::new();
    let (start, end) = (day_start(first), day_start(last) + DAY_SECS);
    let mut pass = start;
    while pass < end {
        let pass_end = (pass + PASS_DAYS * DAY_SECS).min(end);
        count_returns(conn, pass, pass_end, game, &mut counts)?;
        pass = pass_end;
    }
    Ok(counts)
}

/// A player: their user pseudonym and its salt.
type Player = ([u8; 16], i64);

/// Adds the returns of the cells of the days from `start` to `end` (day starts, at most
/// `PASS_DAYS` apart) to `counts`.
fn count_returns(
    conn: &Connection,
    start: i64,
    end: i64,
    game: &str,
    counts: &mut HashMap<i64, (i64, i64)>,
) -> Result<(), StoreError> {
    let first_day = start.div_euclid(DAY_SECS);
    let cohort_days = (end - start) / DAY_SECS;
    // Each player's days with an event, bit n for `first_day + n`; and each (cell, player)
    // of the range once, with its day.
    let mut days: HashMap<Player, u64> = HashMap::new();
    let mut members: HashMap<(i64, Player), i64> = HashMap::new();
    let mut stmt = conn.prepare_cached(EVENTS_IN_RANGE)?;
    let mut rows = stmt.query(params![start, end + RETURN_DAYS * DAY_SECS, game])?;
    while let Some(row) = rows.next()? {
        let hash: [u8; 16] = row
            .get_ref(1)?
            .as_blob()
            .ok()
            .and_then(|blob| blob.try_into().ok())
            .ok_or_else(|| StoreError::Corrupt("a user pseudonym is not 16 bytes".into()))?;
        let player = (hash, row.get(2)?);
        let offset = row.get::<_, i64>(3)?.div_euclid(DAY_SECS) - first_day;
        *days.entry(player).or_default() |= 1_u64 << offset;
        if offset < cohort_days
            && let Some(cell) = row.get::<_, Option<i64>>(0)?
        {
            members.insert((cell, player), offset);
        }
    }
    let week: u64 = (1 << RETURN_DAYS) - 1;
    for ((cell, player), offset) in members {
        let later = days.get(&player).copied().unwrap_or_default() >> (offset + 1);
        let count = counts.entry(cell).or_default();
        count.0 += i64::from(later & 1 == 1);
        count.1 += i64::from(later & week != 0);
    }
    Ok(())
}

/// One player's events under one pseudonym, through the user index.
static SUBJECT_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, event_time, event, platform, storefront, country, {} FROM measure_logs \
         WHERE game = ?1 AND user_hash = ?2 AND user_salt_id = ?3",
        columns::campaign(columns::Naming::Plain, ""),
    )
});

/// Cell keys store "none" as '' (so unique keys match it); readers see `None`.
fn none_if_empty(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    let value: String = row.get(index)?;
    Ok((!value.is_empty()).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns are counted at every read of the aggregates (the API, the dashboard, each push):
    /// the events of the range and the week after it come through the time index, never by
    /// reading the whole log.
    #[test]
    fn returns_read_a_range_of_the_time_index() {
        let conn = crate::store::migrated_in_memory();
        let plan = crate::store::query_plan(
            &conn,
            EVENTS_IN_RANGE,
            params![1_793_491_200_i64, 1_794_700_800_i64, ""],
        );
        assert!(
            plan.contains("measure_logs_time (event_time>? AND event_time<?)"),
            "{plan}"
        );
    }
}
