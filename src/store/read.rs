//! Store: read-only access (salts, stats, roll-up cells, one player's events for a data
//! request) on a connection of its own, safe to use beside a running daemon.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rusqlite::{Connection, Row, params};

use super::sqlite::{file_sizes, open_connection};
use super::types::{Access, PurgeReport, Stats, StoreError, SubjectReport};
use super::{DbKey, OutboxEntry, OutboxStats};
use super::{blocks, cells, columns};
use crate::campaign::DIMENSIONS;
use crate::clock::{parse_day, utc_day};
use crate::privacy::{BlockHash, Pseudonym, Salt};
use crate::rows::{
    ConversionRow, PageRow, Row as _, SourceCounts, SourceRow, SubjectEvent, TrafficRow,
};

/// A read-only connection.
pub struct Reader {
    conn: Connection,
    path: PathBuf,
    /// Kept to open a second connection to the same file ([`Reader::another`]).
    key: Option<DbKey>,
}

impl Reader {
    pub fn open(path: &Path, key: &DbKey) -> Result<Reader, StoreError> {
        Ok(Reader {
            conn: open_connection(path, key, Access::ReadOnly)?,
            path: path.to_path_buf(),
            key: Some(key.clone()),
        })
    }

    /// Another read-only connection to the same file, for a second thread of one read.
    pub fn another(&self) -> Result<Reader, StoreError> {
        match &self.key {
            Some(key) => Reader::open(&self.path, key),
            None => Err(StoreError::Invalid(
                "a reader made from a bare connection cannot open another",
            )),
        }
    }

    /// Lets this connection keep up to `mib` MiB of decrypted pages (SQLite's default is 2).
    pub fn keep_pages(&self, mib: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "cache_size", -1024 * i64::from(mib))?;
        Ok(())
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
        let (database_bytes, wal_bytes) = file_sizes(&self.path);
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
    /// The new key of the ledger's newest rotation, if any.
    pub fn last_rotation(&self) -> Result<Option<crate::identity::PublicKey>, StoreError> {
        super::ledger::last_rotation(&self.conn)
    }

    /// Every ledger row, oldest first.
    pub fn ledger(&self) -> Result<Vec<super::LedgerRow>, StoreError> {
        super::ledger::rows(&self.conn)
    }

    pub fn outbox_next(&self) -> Result<Option<OutboxEntry>, StoreError> {
        super::outbox::next(&self.conn)
    }

    /// The content hash last queued for each day.
    pub fn queued_contents(&self) -> Result<HashMap<String, [u8; 32]>, StoreError> {
        super::outbox::queued_contents(&self.conn)
    }

    /// Distinct visitors (address pseudonyms) of the visits received since `since`, unix
    /// seconds: the dashboard's "now".
    pub fn visitors_since(&self, since: i64) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(DISTINCT ip_hash) FROM collect_logs WHERE received_at >= ?1",
            [since],
            |row| row.get(0),
        )?)
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
        self.cells_of(Span::Range(from, to), game)
    }

    /// The roll-up cells of one day, as [`Reader::cells`] gives them: read through the cells'
    /// key, whose first column is the day, so the cost is the day's cells, not the table's.
    pub fn cells_of_day(
        &self,
        day: &str,
        game: Option<&str>,
    ) -> Result<(Vec<TrafficRow>, Vec<ConversionRow>), StoreError> {
        self.cells_of(Span::Day(day), game)
    }

    fn cells_of(
        &self,
        span: Span<'_>,
        game: Option<&str>,
    ) -> Result<(Vec<TrafficRow>, Vec<ConversionRow>), StoreError> {
        let game = game.unwrap_or("");
        let (from, to) = span.days()?;
        let mut traffic = self
            .conn
            .prepare(&TRAFFIC[span.index()])?
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
        traffic.sort_unstable_by(TrafficRow::order);
        let mut conversions = self
            .conn
            .prepare(&CONVERSIONS[span.index()])?
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
        conversions.sort_unstable_by(ConversionRow::order);
        Ok((traffic, conversions))
    }

    /// Runs `read` in one read transaction, so everything it reads comes from one state of the
    /// file (a day's version and its cells, for instance), whatever commits meanwhile.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        read: impl FnOnce(&Reader) -> Result<T, E>,
    ) -> Result<T, E> {
        let transaction = self
            .conn
            .unchecked_transaction()
            .map_err(StoreError::from)?;
        let value = read(self)?;
        transaction.commit().map_err(StoreError::from)?;
        Ok(value)
    }

    /// The version of each day of `from..=to` whose cells were ever written: it changes in the
    /// transaction that changes any of the day's cells (migration 0020). A day without one has
    /// never held a cell.
    pub fn day_versions(&self, from: &str, to: &str) -> Result<BTreeMap<String, i64>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT day, version FROM day_versions WHERE day BETWEEN ?1 AND ?2")?;
        let rows = stmt.query_map(params![from, to], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The sources (referrer hosts) and landing pages of the days `from..=to`, optionally of
    /// one game (with the visits that named none), with the players of `players_event` they
    /// brought; ordered by day, game, then the source or page.
    pub fn sources_and_pages(
        &self,
        from: &str,
        to: &str,
        game: Option<&str>,
        players_event: &str,
    ) -> Result<(Vec<SourceRow>, Vec<PageRow>), StoreError> {
        self.sources_and_pages_of(Span::Range(from, to), game, players_event)
    }

    /// The sources and landing pages of one day, as [`Reader::cells_of_day`] reads its cells.
    pub fn sources_and_pages_of_day(
        &self,
        day: &str,
        game: Option<&str>,
        players_event: &str,
    ) -> Result<(Vec<SourceRow>, Vec<PageRow>), StoreError> {
        self.sources_and_pages_of(Span::Day(day), game, players_event)
    }

    fn sources_and_pages_of(
        &self,
        span: Span<'_>,
        game: Option<&str>,
        players_event: &str,
    ) -> Result<(Vec<SourceRow>, Vec<PageRow>), StoreError> {
        let game = game.unwrap_or("");
        let (from, to) = span.days()?;
        let mut breakdown = Breakdown::default();
        let mut traffic = self.conn.prepare(&BREAKDOWN_TRAFFIC[span.index()])?;
        let mut rows = traffic.query(params![from, to, game])?;
        while let Some(row) = rows.next()? {
            let counts = SourceCounts {
                visits: row.get(5)?,
                visitors: row.get(6)?,
                players: 0,
            };
            breakdown.add(row, game, counts)?;
        }
        let mut conversions = self.conn.prepare(&BREAKDOWN_CONVERSIONS[span.index()])?;
        let mut rows = conversions.query(params![from, to, game, players_event])?;
        while let Some(row) = rows.next()? {
            let counts = SourceCounts {
                players: row.get(5)?,
                ..SourceCounts::default()
            };
            breakdown.add(row, game, counts)?;
        }
        Ok(breakdown.rows())
    }
}

/// Sources and pages summed in memory, both from one scan of each kind of cell: they are a
/// few hundred rows a day, where a `GROUP BY` of each sorted every cell it read (two sorts of
/// some 650,000 rows on a store of 1.3 M conversion cells: half of the document's time).
#[derive(Default)]
struct Breakdown {
    /// Keyed `day \0 game \0 referrer host`, whose byte order is that of the three columns
    /// (no key holds a control character), so the map gives the rows in their order.
    sources: BTreeMap<String, SourceCounts>,
    /// Keyed `day \0 game \0 page host \0 page path`.
    pages: BTreeMap<String, SourceCounts>,
    key: String,
}

impl Breakdown {
    /// Adds `counts` under the row's day, game (`game` when one was asked for: the visits that
    /// named none count as its), referrer host, page host and path (columns 0 to 4).
    fn add(&mut self, row: &Row<'_>, game: &str, counts: SourceCounts) -> rusqlite::Result<()> {
        let text = |index: usize| -> rusqlite::Result<&str> { Ok(row.get_ref(index)?.as_str()?) };
        let game = if game.is_empty() { text(1)? } else { game };
        self.key.clear();
        for part in [text(0)?, "\0", game, "\0"] {
            self.key.push_str(part);
        }
        let prefix = self.key.len();
        self.key.push_str(text(2)?);
        add_counts(&mut self.sources, &self.key, counts);
        self.key.truncate(prefix);
        for part in [text(3)?, "\0", text(4)?] {
            self.key.push_str(part);
        }
        add_counts(&mut self.pages, &self.key, counts);
        Ok(())
    }

    /// The rows with visits or players, in their order.
    fn rows(self) -> (Vec<SourceRow>, Vec<PageRow>) {
        let shown = |(_, counts): &(String, SourceCounts)| counts.visits > 0 || counts.players > 0;
        let text = |part: Option<&str>| part.filter(|part| !part.is_empty()).map(str::to_string);
        let sources = self
            .sources
            .into_iter()
            .filter(shown)
            .map(|(key, counts)| {
                let mut parts = key.split('\0');
                SourceRow {
                    day: parts.next().unwrap_or_default().to_string(),
                    game: text(parts.next()),
                    referrer_host: text(parts.next()),
                    counts,
                }
            })
            .collect();
        let pages = self
            .pages
            .into_iter()
            .filter(shown)
            .map(|(key, counts)| {
                let mut parts = key.split('\0');
                let day = parts.next().unwrap_or_default().to_string();
                let game = text(parts.next());
                let page: String = parts.collect();
                PageRow {
                    day,
                    game,
                    page: text(Some(&page)),
                    counts,
                }
            })
            .collect();
        (sources, pages)
    }
}

fn add_counts(map: &mut BTreeMap<String, SourceCounts>, key: &str, counts: SourceCounts) {
    match map.get_mut(key) {
        Some(sum) => {
            sum.visits += counts.visits;
            sum.visitors += counts.visitors;
            sum.players += counts.players;
        }
        None => {
            map.insert(key.to_string(), counts);
        }
    }
}

/// The days a read covers. A range reads the cells in the table's order, every page once (see
/// below); a day reads them through their key, which starts with the day.
#[derive(Clone, Copy)]
enum Span<'a> {
    Range(&'a str, &'a str),
    Day(&'a str),
}

impl<'a> Span<'a> {
    /// The first and the last day, checked.
    fn days(self) -> Result<(&'a str, &'a str), StoreError> {
        let (from, to) = match self {
            Span::Range(from, to) => (from, to),
            Span::Day(day) => (day, day),
        };
        for day in [from, to] {
            parse_day(day).ok_or(StoreError::Invalid("a day range that is no YYYY-MM-DD"))?;
        }
        Ok((from, to))
    }

    /// Which of a statement's two forms reads it.
    fn index(self) -> usize {
        match self {
            Span::Range(..) => 0,
            Span::Day(_) => 1,
        }
    }
}

/// A statement's `FROM` and day condition in both forms, [`Span::index`]'s order. A day (`?1`;
/// `?2` is the same day) is read through the unique key, whose first column it is: a day's
/// cells were mostly made on that day, so their rows lie close together in the table.
fn spans(table: &str) -> [String; 2] {
    [
        format!("{table} NOT INDEXED WHERE day BETWEEN ?1 AND ?2"),
        format!("{table} WHERE day = ?1"),
    ]
}

/// The traffic rows: the cells summed by group (without the landing page), whose visitors
/// each count once, at their first visit of the group (`store::cells`).
static TRAFFIC: LazyLock<[String; 2]> = LazyLock::new(|| {
    let key = cells::traffic_group_columns();
    spans("traffic_cells").map(|from| {
        format!(
            "SELECT {key}, sum(visits), sum(visitors), sum(consented_visits) \
             FROM {from} AND (?3 = '' OR game = ?3 OR game = '') \
             GROUP BY {key} HAVING sum(visits) > 0"
        )
    })
});

/// The conversion rows: the cells summed by group (without the visit's referrer and landing
/// page), as [`TRAFFIC`]. Grouped by the group's columns, not by its id (`group_id`): that
/// sorts an integer instead of thirteen texts, but leaves the rows to sort by their texts
/// here: on a month of 1.3 M cells the document took 0.93 of the time before the sources and
/// pages were summed in memory, against 0.79 grouped by the columns.
static CONVERSIONS: LazyLock<[String; 2]> = LazyLock::new(|| {
    let key = cells::conversion_group_columns();
    spans("conversion_cells").map(|from| {
        format!(
            "SELECT {key}, sum(events), sum(users), sum(returned_d1), sum(returned_d7) \
             FROM {from} AND (?3 = '' OR game = ?3) \
             GROUP BY {key} HAVING sum(events) > 0"
        )
    })
});

/// The traffic cells' visits and visitors by day, game, referrer host and landing page.
static BREAKDOWN_TRAFFIC: LazyLock<[String; 2]> = LazyLock::new(|| {
    spans("traffic_cells").map(|from| {
        format!(
            "SELECT day, game, referrer_host, page_host, page_path, visits, visitors \
             FROM {from} AND (?3 = '' OR game = ?3 OR game = '')"
        )
    })
});

/// The players of event ?4 by day, game, and the referrer host and landing page of the visit
/// that brought them.
static BREAKDOWN_CONVERSIONS: LazyLock<[String; 2]> = LazyLock::new(|| {
    spans("conversion_cells").map(|from| {
        format!(
            "SELECT day, game, referrer_host, page_host, page_path, users \
             FROM {from} AND (?3 = '' OR game = ?3) AND event = ?4"
        )
    })
});

/// One player's events under one pseudonym, through the user index.
static SUBJECT_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, event_time, event, platform, storefront, country, {} FROM measure_logs \
         WHERE game = ?1 AND user_hash = ?2 AND user_salt_id = ?3",
        columns::campaign(columns::Naming::Plain, ""),
    )
});

// The cells are read in the table's order and sorted here. Read through their unique key
// instead (its order, and the day range), each row costs a lookup in the table: 861,217 cells
// took 4.7 s with the reader's default page cache, against 0.5 s for the table's pages in a
// row (every page decrypted once) and a sort.

/// Cell keys store "none" as '' (so unique keys match it); readers see `None`.
fn none_if_empty(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    let value: String = row.get(index)?;
    Ok((!value.is_empty()).then_some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &Option<String>) -> &str {
        value.as_deref().unwrap_or("")
    }

    /// The rows come in the order of the cells' unique key, as `ORDER BY` it would give them,
    /// whatever order the cells were made in: none ('') first, byte order otherwise.
    #[test]
    fn rows_come_in_the_order_of_their_keys() {
        // After the day (and the conversions' game): the key columns made up here.
        // The cells' group columns: the rows' keys.
        const CONVERSION_KEY_COLUMNS: usize = DIMENSIONS + 4;
        const TRAFFIC_KEY_COLUMNS: usize = DIMENSIONS + 4;
        let conn = crate::store::migrated_in_memory();
        let values = ["", "(direct)", "Ads", "ads", "b", "ü", "a b"];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pick = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values[(x % values.len() as u64) as usize]
        };
        for _ in 0..400 {
            let day = if pick().len() % 2 == 0 {
                "2026-11-02"
            } else {
                "2026-11-01"
            };
            let key: Vec<&str> = (0..CONVERSION_KEY_COLUMNS).map(|_| pick()).collect();
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO conversion_cells ({}, events, users) \
                     VALUES ('{day}', 'g', {}, 1, 1)",
                    cells::conversion_group_columns(),
                    key.iter()
                        .map(|v| format!("'{v}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                [],
            )
            .expect("a cell");
            conn.execute(
                &format!(
                    "INSERT OR IGNORE INTO traffic_cells ({}, visits, visitors, consented_visits) \
                     VALUES ('{day}', {}, 1, 1, 0)",
                    cells::traffic_group_columns(),
                    (0..TRAFFIC_KEY_COLUMNS)
                        .map(|_| format!("'{}'", pick()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                [],
            )
            .expect("a cell");
        }
        let ids = |table: &str, key: String| -> Vec<i64> {
            conn.prepare(&format!(
                "SELECT id FROM {table} WHERE day BETWEEN '2026-11-01' AND '2026-11-02' \
                 ORDER BY {key}"
            ))
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .expect("ids")
        };
        let expected_traffic = ids("traffic_cells", cells::traffic_group_columns());
        let expected_conversions = ids("conversion_cells", cells::conversion_group_columns());
        let reader = Reader {
            conn,
            path: PathBuf::new(),
            key: None,
        };
        let (traffic, conversions) = reader
            .cells("2026-11-01", "2026-11-02", None)
            .expect("the cells");
        assert_eq!(traffic.len(), expected_traffic.len());
        assert_eq!(conversions.len(), expected_conversions.len());
        // Each cell's key is unique, so the id of each row read names its place.
        let id_of = |table: &str, columns: String, key: Vec<&str>| -> i64 {
            reader
                .conn
                .query_row(
                    &format!(
                        "SELECT id FROM {table} WHERE ({columns}) = ({})",
                        columns::placeholders(1, key.len())
                    ),
                    rusqlite::params_from_iter(key),
                    |row| row.get(0),
                )
                .expect("the row's cell")
        };
        let id_of_traffic = |row: &TrafficRow| {
            let key = [row.day.as_str(), text(&row.game)]
                .into_iter()
                .chain(row.campaign.values().map(|value| value.unwrap_or("")))
                .chain([
                    text(&row.referrer_host),
                    row.device.as_str(),
                    text(&row.country),
                ]);
            id_of(
                "traffic_cells",
                cells::traffic_group_columns(),
                key.collect(),
            )
        };
        let id_of_conversion = |row: &ConversionRow| {
            let key = [row.day.as_str(), row.game.as_str()]
                .into_iter()
                .chain(row.campaign.values().map(|value| value.unwrap_or("")))
                .chain([
                    text(&row.platform),
                    text(&row.storefront),
                    text(&row.country),
                    row.event.as_str(),
                ]);
            id_of(
                "conversion_cells",
                cells::conversion_group_columns(),
                key.collect(),
            )
        };
        assert_eq!(
            traffic.iter().map(id_of_traffic).collect::<Vec<_>>(),
            expected_traffic
        );
        assert_eq!(
            conversions.iter().map(id_of_conversion).collect::<Vec<_>>(),
            expected_conversions
        );
    }

    /// The aggregates (the API, the dashboard, each push) read the cells alone: returns are
    /// kept in them, not counted from the events at each read.
    #[test]
    fn the_conversion_rows_read_only_the_cells() {
        let conn = crate::store::migrated_in_memory();
        let plan = crate::store::query_plan(
            &conn,
            &CONVERSIONS[0],
            params!["2026-11-01", "2026-11-30", ""],
        );
        assert!(!plan.contains("measure_logs"), "{plan}");
        assert!(plan.contains("conversion_cells"), "{plan}");
    }

    /// A day's rows are read through the cells' key, a range's in the table's order.
    #[test]
    fn a_day_is_read_through_the_cells_key() {
        let conn = crate::store::migrated_in_memory();
        let day = params!["2026-11-01", "2026-11-01", "", "first_game_open"];
        for statements in [&*TRAFFIC, &*CONVERSIONS] {
            let plan = crate::store::query_plan(&conn, &statements[1], &day[..3]);
            assert!(plan.contains("USING INDEX sqlite_autoindex"), "{plan}");
            let plan = crate::store::query_plan(&conn, &statements[0], &day[..3]);
            assert!(!plan.contains("INDEX"), "{plan}");
        }
        for statements in [&*BREAKDOWN_TRAFFIC, &*BREAKDOWN_CONVERSIONS] {
            let count = if statements[1].contains("?4") { 4 } else { 3 };
            let plan = crate::store::query_plan(&conn, &statements[1], &day[..count]);
            assert!(plan.contains("USING INDEX sqlite_autoindex"), "{plan}");
        }
    }
}
