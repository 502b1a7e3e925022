//! Store: the daily roll-up cells that the aggregates are read from: their keys, the counts a
//! transaction holds back for them, and their rebuild from the raw logs.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, params};

use super::columns::{self, Naming};
use super::types::{Settled, StoreError};
use crate::campaign::{Campaign, DIMENSIONS};
use crate::clock::{DAY_SECS, day_start};
use crate::privacy::Pseudonym;
use crate::privacy::geo::Country;

/// A cell's key, in the order of its table's unique key, with '' for "none".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CellKey(Vec<String>);

/// Key columns of a traffic cell: day, game, the campaign, referrer host, device, country.
pub(super) const TRAFFIC_KEY_LEN: usize = DIMENSIONS + 5;
/// Key columns of a conversion cell: day, game, the campaign, platform, storefront, country,
/// event.
const CONVERSION_KEY_LEN: usize = DIMENSIONS + 6;

impl CellKey {
    pub(super) fn traffic(
        day: String,
        game: Option<&str>,
        campaign: &Campaign,
        referrer_host: Option<&str>,
        device: &str,
        country: Option<Country>,
    ) -> CellKey {
        let mut key = Vec::with_capacity(TRAFFIC_KEY_LEN);
        key.push(day);
        key.push(text(game));
        key.extend(campaign.values().map(text));
        key.push(text(referrer_host));
        key.push(device.to_string());
        key.push(text(country.as_ref().map(Country::as_str)));
        CellKey(key)
    }

    pub(super) fn conversion(
        day: String,
        game: &str,
        campaign: &Campaign,
        platform: Option<&str>,
        storefront: Option<&str>,
        country: Option<Country>,
        event: &str,
    ) -> CellKey {
        let mut key = Vec::with_capacity(CONVERSION_KEY_LEN);
        key.push(day);
        key.push(game.to_string());
        key.extend(campaign.values().map(text));
        key.push(text(platform));
        key.push(text(storefront));
        key.push(text(country.as_ref().map(Country::as_str)));
        key.push(event.to_string());
        CellKey(key)
    }

    /// A traffic key read back with [`traffic_key_of_visit`].
    pub(super) fn from_columns(columns: Vec<String>) -> CellKey {
        CellKey(columns)
    }

    /// The key as ?1..?n.
    pub(super) fn params(&self) -> impl rusqlite::Params + '_ {
        rusqlite::params_from_iter(self.0.iter())
    }

    /// The key as ?1..?n and `value` as ?n+1.
    pub(super) fn params_with<'a>(&'a self, value: &'a i64) -> impl rusqlite::Params + 'a {
        let key = self.0.iter().map(|part| part as &dyn ToSql);
        rusqlite::params_from_iter(key.chain(std::iter::once(value as &dyn ToSql)))
    }
}

fn text(value: Option<&str>) -> String {
    value.unwrap_or_default().to_string()
}

/// A traffic cell's key columns, as named in `traffic_cells`.
pub(super) fn traffic_key_columns() -> String {
    format!(
        "day, game, {}, referrer_host, device, country",
        columns::campaign(Naming::Plain, "")
    )
}

/// A visit's cell key from its `collect_logs` row (under the alias `table`, e.g. `c.`), in
/// [`CellKey::traffic`]'s order.
pub(super) fn traffic_key_of_visit(table: &str) -> String {
    format!(
        "strftime('%Y-%m-%d', {table}received_at, 'unixepoch'), coalesce({table}game, ''), {}, \
         coalesce({table}referrer_host, ''), {table}device, coalesce({table}country, '')",
        columns::campaign_key(Naming::Visits, table, "")
    )
}

/// A join condition: the traffic cell `cells` (an alias) is the one of the visit `visits`
/// (a prefix, e.g. `l.`).
pub(super) fn traffic_key_matches(cells: &str, visits: &str) -> String {
    format!(
        "{cells}.day = strftime('%Y-%m-%d', {visits}received_at, 'unixepoch') \
         AND {cells}.game = coalesce({visits}game, '') AND {} \
         AND {cells}.referrer_host = coalesce({visits}referrer_host, '') \
         AND {cells}.device = {visits}device AND {cells}.country = coalesce({visits}country, '')",
        columns::campaign_matches(cells, Naming::Visits, visits, ""),
    )
}

/// Adds ?{key + 1} to a cell's consented visits.
pub(super) static COUNT_CONSENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE traffic_cells SET consented_visits = consented_visits + ?{} WHERE {}",
        TRAFFIC_KEY_LEN + 1,
        key_condition(&traffic_key_columns()),
    )
});

/// `a = ?1 AND b = ?2 ...` over the key columns `key` (`a, b, ...`).
fn key_condition(key: &str) -> String {
    key.split(", ")
        .enumerate()
        .map(|(index, column)| format!("{column} = ?{}", index + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The cells' ids by key, and what the open transaction adds to their counts. A busy cell gets
/// one UPDATE per group instead of one per visit or event; the counts are written before the
/// transaction commits, so readers never see the difference.
#[derive(Default)]
pub(super) struct CellCounts {
    traffic: Pending<3>,
    /// Events, users, returned D1, returned D7.
    conversions: Pending<4>,
}

/// One kind of cell: ids by key, and counts not yet written by cell id.
struct Pending<const N: usize> {
    ids: HashMap<CellKey, i64>,
    counts: HashMap<i64, [i64; N]>,
}

impl<const N: usize> Default for Pending<N> {
    fn default() -> Self {
        Pending {
            ids: HashMap::new(),
            counts: HashMap::new(),
        }
    }
}

/// Most cell ids remembered: a flood of made-up campaigns makes a new cell per visit, and the
/// memory must not grow with it. Past it the ids are looked up again.
const MAX_REMEMBERED_CELLS: usize = 50_000;

impl<const N: usize> Pending<N> {
    fn cell(&mut self, conn: &Connection, key: CellKey, sql: &CellSql) -> Result<i64, StoreError> {
        if let Some(id) = self.ids.get(&key) {
            return Ok(*id);
        }
        let found: Option<i64> = conn
            .prepare_cached(&sql.find)?
            .query_row(key.params(), |row| row.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                conn.prepare_cached(&sql.create)?.execute(key.params())?;
                conn.last_insert_rowid()
            }
        };
        if self.ids.len() >= MAX_REMEMBERED_CELLS {
            self.ids.clear();
        }
        self.ids.insert(key, id);
        Ok(id)
    }

    fn add(&mut self, cell: i64, counts: [i64; N]) {
        let pending = self.counts.entry(cell).or_insert([0; N]);
        for (total, count) in pending.iter_mut().zip(counts) {
            *total += count;
        }
    }

    /// `update` takes the cell id as ?1 and the counts as ?2...
    fn write(&mut self, conn: &Connection, update: &str) -> Result<(), StoreError> {
        let mut stmt = conn.prepare_cached(update)?;
        for (id, counts) in self.counts.drain() {
            let values = std::iter::once(id).chain(counts);
            stmt.execute(rusqlite::params_from_iter(values))?;
        }
        Ok(())
    }

    fn forget(&mut self) {
        self.ids.clear();
        self.counts.clear();
    }
}

/// A conversion cell's key columns, as named in `conversion_cells`.
pub(super) fn conversion_key_columns() -> String {
    format!(
        "day, game, {}, platform, storefront, country, event",
        columns::campaign(Naming::Plain, "")
    )
}

/// A cell found by its key, or created with zero counts. Looked up first and inserted only
/// when missing: an upsert with RETURNING wrote the cell's page again for a cell already there
/// and made a scratch B-tree for its one row, every time.
struct CellSql {
    find: String,
    create: String,
}

impl CellSql {
    fn new(table: &str, key: &str, key_len: usize) -> CellSql {
        CellSql {
            find: format!("SELECT id FROM {table} WHERE {}", key_condition(key)),
            create: format!(
                "INSERT INTO {table} ({key}) VALUES ({})",
                columns::placeholders(1, key_len)
            ),
        }
    }
}

static TRAFFIC_CELL: LazyLock<CellSql> =
    LazyLock::new(|| CellSql::new("traffic_cells", &traffic_key_columns(), TRAFFIC_KEY_LEN));
static CONVERSION_CELL: LazyLock<CellSql> = LazyLock::new(|| {
    CellSql::new(
        "conversion_cells",
        &conversion_key_columns(),
        CONVERSION_KEY_LEN,
    )
});

impl CellCounts {
    /// The traffic cell's id, creating the cell (with zero counts) if it is new.
    pub(super) fn traffic_cell(
        &mut self,
        conn: &Connection,
        key: CellKey,
    ) -> Result<i64, StoreError> {
        self.traffic.cell(conn, key, &TRAFFIC_CELL)
    }

    pub(super) fn count_visit(&mut self, cell: i64, new_visitor: bool, consented: bool) {
        self.traffic
            .add(cell, [1, i64::from(new_visitor), i64::from(consented)]);
    }

    /// The conversion cell's id, creating the cell (with zero counts) if it is new.
    pub(super) fn conversion_cell(
        &mut self,
        conn: &Connection,
        key: CellKey,
    ) -> Result<i64, StoreError> {
        self.conversions.cell(conn, key, &CONVERSION_CELL)
    }

    pub(super) fn count_event(&mut self, cell: i64, new_user: bool) {
        self.conversions.add(cell, [1, i64::from(new_user), 0, 0]);
    }

    /// Adds a change of a cell's returns (`store::returns`): the cell may be of another day.
    pub(super) fn count_returns(&mut self, (cell, [d1, d7]): super::returns::Change) {
        self.conversions.add(cell, [0, 0, d1, d7]);
    }

    /// Writes the pending counts; runs inside the transaction that made them.
    pub(super) fn write(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.traffic.write(
            conn,
            "UPDATE traffic_cells SET visits = visits + ?2, visitors = visitors + ?3, \
             consented_visits = consented_visits + ?4 WHERE id = ?1",
        )?;
        self.conversions.write(
            conn,
            "UPDATE conversion_cells SET events = events + ?2, users = users + ?3, \
             returned_d1 = returned_d1 + ?4, returned_d7 = returned_d7 + ?5 WHERE id = ?1",
        )
    }

    /// After a rollback, or after cells were deleted or rebuilt: the ids may be gone.
    pub(super) fn forget(&mut self) {
        self.traffic.forget();
        self.conversions.forget();
    }
}

/// Whether the user pseudonym already counts in the conversion cell: an earlier event of theirs
/// names it. One probe of the user index, however many events the player has.
pub(super) fn user_in_cell(
    conn: &Connection,
    user: &Pseudonym,
    cell: i64,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM measure_logs \
             WHERE user_hash = ?1 AND user_salt_id = ?2 AND cell_id = ?3",
        )?
        .exists(params![&user.hash[..], user.salt_id, cell])?)
}

/// Recomputes the cells of the UTC days `first..=last` from the raw logs: the roll-ups'
/// definition, which the tests and the attribution bench hold the incremental roll-ups to.
pub(super) fn rebuild(
    settled: &Settled<'_>,
    first: chrono::NaiveDate,
    last: chrono::NaiveDate,
) -> Result<(), StoreError> {
    let conn = settled.conn();
    let (from, to) = (first.to_string(), last.to_string());
    let (start, end) = (day_start(first), day_start(last) + DAY_SECS);
    rebuild_traffic(conn, &from, &to, start, end)?;
    rebuild_conversions(conn, &from, &to, start, end)?;
    let returns = super::returns::count_from_events(conn, start, end)?;
    let mut stmt = conn.prepare_cached(
        "UPDATE conversion_cells SET returned_d1 = ?2, returned_d7 = ?3 WHERE id = ?1",
    )?;
    for (cell, [d1, d7]) in returns {
        stmt.execute(params![cell, d1, d7])?;
    }
    Ok(())
}

/// The traffic cells of the days `from..=to` and their visitors, from the visits received
/// in `start..end` (unix seconds).
fn rebuild_traffic(
    conn: &Connection,
    from: &str,
    to: &str,
    start: i64,
    end: i64,
) -> Result<(), StoreError> {
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
        &format!(
            "INSERT INTO traffic_cells ({}, visits, visitors, consented_visits) \
             SELECT {}, count(*), count(DISTINCT ip_hash), sum(consent) \
             FROM collect_logs WHERE received_at >= ?1 AND received_at < ?2 \
             GROUP BY {}",
            traffic_key_columns(),
            traffic_key_of_visit(""),
            columns::positions(TRAFFIC_KEY_LEN),
        ),
        params![start, end],
    )?;
    conn.execute(
        &format!(
            "INSERT INTO traffic_visitors (cell_id, ip_hash) \
             SELECT DISTINCT c.id, l.ip_hash FROM collect_logs l JOIN traffic_cells c ON {} \
             WHERE l.received_at >= ?1 AND l.received_at < ?2",
            traffic_key_matches("c", "l."),
        ),
        params![start, end],
    )?;
    Ok(())
}

/// The conversion cells of the days `from..=to`, from the events of `start..end` (unix
/// seconds), and each event's `cell_id`.
fn rebuild_conversions(
    conn: &Connection,
    from: &str,
    to: &str,
    start: i64,
    end: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM conversion_cells WHERE day BETWEEN ?1 AND ?2",
        params![from, to],
    )?;
    let direct = crate::campaign::DIRECT;
    conn.execute(
        &format!(
            "INSERT INTO conversion_cells ({}, events, users) \
             SELECT strftime('%Y-%m-%d', event_time, 'unixepoch'), game, {}, \
                    coalesce(platform, ''), coalesce(storefront, ''), coalesce(country, ''), \
                    event, count(*), \
                    count(DISTINCT user_hash) \
             FROM measure_logs WHERE event_time >= ?1 AND event_time < ?2 \
             GROUP BY {}",
            conversion_key_columns(),
            columns::campaign_key(Naming::Plain, "", direct),
            columns::positions(CONVERSION_KEY_LEN),
        ),
        params![start, end],
    )?;
    // Each event names the cell it counts in (see `user_in_cell`).
    conn.execute(
        &format!(
            "UPDATE measure_logs SET cell_id = (SELECT c.id FROM conversion_cells c \
               WHERE c.day = strftime('%Y-%m-%d', measure_logs.event_time, 'unixepoch') \
               AND c.game = measure_logs.game AND {} \
               AND c.platform = coalesce(measure_logs.platform, '') \
               AND c.storefront = coalesce(measure_logs.storefront, '') \
               AND c.country = coalesce(measure_logs.country, '') \
               AND c.event = measure_logs.event) \
             WHERE event_time >= ?1 AND event_time < ?2",
            columns::campaign_matches("c", Naming::Plain, "measure_logs.", direct),
        ),
        params![start, end],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell is found through its table's unique key: one probe, never a scan of the cells.
    #[test]
    fn a_cell_is_found_through_its_unique_key() {
        let conn = crate::store::migrated_in_memory();
        for (sql, len) in [
            (&TRAFFIC_CELL.find, TRAFFIC_KEY_LEN),
            (&CONVERSION_CELL.find, CONVERSION_KEY_LEN),
        ] {
            let key = CellKey((0..len).map(|_| String::new()).collect());
            let plan = crate::store::query_plan(&conn, sql, key.params());
            assert!(
                plan.contains("USING COVERING INDEX sqlite_autoindex")
                    || plan.contains("USING INDEX sqlite_autoindex"),
                "{sql}: {plan}"
            );
        }
    }
}
