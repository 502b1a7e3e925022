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
use crate::clock::{parse_day, utc_day};
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
        day(from)?;
        day(to)?;
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
        let conversions = self
            .conn
            .prepare(&CONVERSIONS)?
            .query_map(params![from, to, game], |row| {
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
                    returned_d1: row.get(8 + DIMENSIONS)?,
                    returned_d7: row.get(9 + DIMENSIONS)?,
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
        "SELECT {key}, events, users, returned_d1, returned_d7 FROM conversion_cells \
         WHERE day BETWEEN ?1 AND ?2 AND (?3 = '' OR game = ?3) AND events > 0 \
         ORDER BY {key}"
    )
});

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

    /// The aggregates (the API, the dashboard, each push) read the cells alone: returns are
    /// kept in them, not counted from the events at each read.
    #[test]
    fn the_conversion_rows_read_only_the_cells() {
        let conn = crate::store::migrated_in_memory();
        let plan =
            crate::store::query_plan(&conn, &CONVERSIONS, params!["2026-11-01", "2026-11-30", ""]);
        assert!(!plan.contains("measure_logs"), "{plan}");
        assert!(plan.contains("conversion_cells"), "{plan}");
    }
}
