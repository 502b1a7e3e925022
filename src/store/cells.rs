//! Store: the daily roll-up cells that the aggregates are read from: their keys and groups
//! (the cells of one document row, apart by landing page and referrer), the counts a
//! transaction holds back for them, their rebuild from the raw logs, and a forgotten page's
//! way out of them.

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

/// Key columns of a traffic cell: day, game, the campaign, referrer host, device, country,
/// then the landing page's host and path.
pub(super) const TRAFFIC_KEY_LEN: usize = DIMENSIONS + 7;
/// The first key columns of a traffic cell, those of its group (its row in the document).
const TRAFFIC_GROUP_LEN: usize = DIMENSIONS + 5;
/// Key columns of a conversion cell: day, game, the campaign, platform, storefront, country,
/// event, then the linked visit's referrer host and landing page's host and path.
const CONVERSION_KEY_LEN: usize = DIMENSIONS + 9;
/// The first key columns of a conversion cell, those of its group.
const CONVERSION_GROUP_LEN: usize = DIMENSIONS + 6;

/// The visit a cell's records came through: its landing page, and for an event the visit's
/// referrer host (`None`: the event has no visit).
#[derive(Debug, Clone, Copy)]
pub(super) struct Landing<'a> {
    pub referrer_host: Option<&'a str>,
    pub page_host: &'a str,
    pub page_path: &'a str,
}

/// A cell, and the group it counts its visitors or players in: the cells whose keys differ
/// only by the landing page (and, for conversions, the referrer host). A visitor or a player
/// counts once per group, in the cell of their first record in it, so a group's sums are the
/// counts of one row of the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cell {
    pub id: i64,
    pub group: i64,
}

impl CellKey {
    pub(super) fn traffic(
        day: String,
        game: Option<&str>,
        campaign: &Campaign,
        referrer_host: Option<&str>,
        device: &str,
        country: Option<Country>,
        page: (&str, &str),
    ) -> CellKey {
        let mut key = Vec::with_capacity(TRAFFIC_KEY_LEN);
        key.push(day);
        key.push(text(game));
        key.extend(campaign.values().map(text));
        key.push(text(referrer_host));
        key.push(device.to_string());
        key.push(text(country.as_ref().map(Country::as_str)));
        key.push(page.0.to_string());
        key.push(page.1.to_string());
        CellKey(key)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conversion(
        day: String,
        game: &str,
        campaign: &Campaign,
        platform: Option<&str>,
        storefront: Option<&str>,
        country: Option<Country>,
        event: &str,
        landing: Option<Landing<'_>>,
    ) -> CellKey {
        let mut key = Vec::with_capacity(CONVERSION_KEY_LEN);
        key.push(day);
        key.push(game.to_string());
        key.extend(campaign.values().map(text));
        key.push(text(platform));
        key.push(text(storefront));
        key.push(text(country.as_ref().map(Country::as_str)));
        key.push(event.to_string());
        key.push(text(landing.and_then(|landing| landing.referrer_host)));
        key.push(text(landing.map(|landing| landing.page_host)));
        key.push(text(landing.map(|landing| landing.page_path)));
        CellKey(key)
    }

    /// A traffic key read back with [`traffic_key_of_visit`].
    pub(super) fn from_columns(columns: Vec<String>) -> CellKey {
        CellKey(columns)
    }

    /// The first `len` columns as ?1..?len.
    fn prefix_params(&self, len: usize) -> impl rusqlite::Params + '_ {
        rusqlite::params_from_iter(self.0.iter().take(len))
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

/// A traffic cell's group columns (its row in the document), as named in `traffic_cells`.
pub(super) fn traffic_group_columns() -> String {
    format!(
        "day, game, {}, referrer_host, device, country",
        columns::campaign(Naming::Plain, "")
    )
}

/// A traffic cell's key columns, as named in `traffic_cells`.
pub(super) fn traffic_key_columns() -> String {
    format!("{}, page_host, page_path", traffic_group_columns())
}

/// A visit's group key from its `collect_logs` row (under the alias `table`, e.g. `c.`).
fn traffic_group_of_visit(table: &str) -> String {
    format!(
        "strftime('%Y-%m-%d', {table}received_at, 'unixepoch'), coalesce({table}game, ''), {}, \
         coalesce({table}referrer_host, ''), {table}device, coalesce({table}country, '')",
        columns::campaign_key(Naming::Visits, table, "")
    )
}

/// A visit's cell key from its `collect_logs` row (under the alias `table`, e.g. `c.`), in
/// [`CellKey::traffic`]'s order.
pub(super) fn traffic_key_of_visit(table: &str) -> String {
    format!(
        "{}, {table}page_host, {table}page_path",
        traffic_group_of_visit(table)
    )
}

/// A join condition: the traffic cell `cells` (an alias) is the one of the visit `visits`
/// (a prefix, e.g. `l.`).
pub(super) fn traffic_key_matches(cells: &str, visits: &str) -> String {
    format!(
        "{cells}.day = strftime('%Y-%m-%d', {visits}received_at, 'unixepoch') \
         AND {cells}.game = coalesce({visits}game, '') AND {} \
         AND {cells}.referrer_host = coalesce({visits}referrer_host, '') \
         AND {cells}.device = {visits}device AND {cells}.country = coalesce({visits}country, '') \
         AND {cells}.page_host = {visits}page_host AND {cells}.page_path = {visits}page_path",
        columns::campaign_matches(cells, Naming::Visits, visits, ""),
    )
}

/// A join condition: the conversion cell `cells` (an alias) is the one of the event `events`
/// (a prefix, e.g. `m.`).
fn conversion_key_matches(cells: &str, events: &str) -> String {
    format!(
        "{cells}.day = strftime('%Y-%m-%d', {events}event_time, 'unixepoch') \
         AND {cells}.game = {events}game AND {} \
         AND {cells}.platform = coalesce({events}platform, '') \
         AND {cells}.storefront = coalesce({events}storefront, '') \
         AND {cells}.country = coalesce({events}country, '') \
         AND {cells}.event = {events}event \
         AND {cells}.referrer_host = coalesce({events}referrer_host, '') \
         AND {cells}.page_host = coalesce({events}page_host, '') \
         AND {cells}.page_path = coalesce({events}page_path, '')",
        columns::campaign_matches(cells, Naming::Plain, events, crate::campaign::DIRECT),
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
    ids: HashMap<CellKey, Cell>,
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
    fn cell(&mut self, conn: &Connection, key: CellKey, sql: &CellSql) -> Result<Cell, StoreError> {
        if let Some(cell) = self.ids.get(&key) {
            return Ok(*cell);
        }
        let found: Option<Cell> = conn
            .prepare_cached(&sql.find)?
            .query_row(key.params(), |row| {
                Ok(Cell {
                    id: row.get(0)?,
                    group: row.get(1)?,
                })
            })
            .optional()?;
        let cell = match found {
            Some(cell) => cell,
            None => sql.create(conn, &key)?,
        };
        if self.ids.len() >= MAX_REMEMBERED_CELLS {
            self.ids.clear();
        }
        self.ids.insert(key, cell);
        Ok(cell)
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

/// A conversion cell's group columns (its row in the document), as named in
/// `conversion_cells`.
pub(super) fn conversion_group_columns() -> String {
    format!(
        "day, game, {}, platform, storefront, country, event",
        columns::campaign(Naming::Plain, "")
    )
}

/// A conversion cell's key columns, as named in `conversion_cells`.
pub(super) fn conversion_key_columns() -> String {
    format!(
        "{}, referrer_host, page_host, page_path",
        conversion_group_columns()
    )
}

/// A cell found by its key, or created with zero counts. Looked up first and inserted only
/// when missing: an upsert with RETURNING wrote the cell's page again for a cell already there
/// and made a scratch B-tree for its one row, every time. A new cell joins the group of a cell
/// already there with the same first key columns (a probe of the unique key's prefix), else
/// it starts a group of its own.
struct CellSql {
    find: String,
    group: String,
    create: String,
    start_group: String,
    key_len: usize,
    group_len: usize,
}

impl CellSql {
    fn new(table: &str, key: &str, key_len: usize, group_len: usize) -> CellSql {
        let group_columns: Vec<&str> = key.split(", ").take(group_len).collect();
        CellSql {
            find: format!(
                "SELECT id, group_id FROM {table} WHERE {}",
                key_condition(key)
            ),
            group: format!(
                "SELECT group_id FROM {table} WHERE {} LIMIT 1",
                key_condition(&group_columns.join(", "))
            ),
            create: format!(
                "INSERT INTO {table} ({key}, group_id) VALUES ({})",
                columns::placeholders(1, key_len + 1)
            ),
            start_group: format!("UPDATE {table} SET group_id = id WHERE id = ?1"),
            key_len,
            group_len,
        }
    }

    fn create(&self, conn: &Connection, key: &CellKey) -> Result<Cell, StoreError> {
        debug_assert_eq!(key.0.len(), self.key_len);
        let group: Option<i64> = conn
            .prepare_cached(&self.group)?
            .query_row(key.prefix_params(self.group_len), |row| row.get(0))
            .optional()?;
        let none = 0;
        conn.prepare_cached(&self.create)?
            .execute(key.params_with(group.as_ref().unwrap_or(&none)))?;
        let id = conn.last_insert_rowid();
        let group = match group {
            Some(group) => group,
            None => {
                conn.prepare_cached(&self.start_group)?.execute([id])?;
                id
            }
        };
        Ok(Cell { id, group })
    }
}

static TRAFFIC_CELL: LazyLock<CellSql> = LazyLock::new(|| {
    CellSql::new(
        "traffic_cells",
        &traffic_key_columns(),
        TRAFFIC_KEY_LEN,
        TRAFFIC_GROUP_LEN,
    )
});
static CONVERSION_CELL: LazyLock<CellSql> = LazyLock::new(|| {
    CellSql::new(
        "conversion_cells",
        &conversion_key_columns(),
        CONVERSION_KEY_LEN,
        CONVERSION_GROUP_LEN,
    )
});

impl CellCounts {
    /// The traffic cell's id, creating the cell (with zero counts) if it is new.
    pub(super) fn traffic_cell(
        &mut self,
        conn: &Connection,
        key: CellKey,
    ) -> Result<Cell, StoreError> {
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
    ) -> Result<Cell, StoreError> {
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

/// Whether the user pseudonym already counts in the group of conversion cells `cell` (the
/// group's id): an earlier event of theirs names it. One probe of the user index, however many events the player has.
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

/// The cells that the visits `visits` and the events `events` (their rows) count in: read
/// before a forget deletes them (see [`forget_pages`]).
pub(super) fn cells_of(
    conn: &Connection,
    visits: &[i64],
    events: &[i64],
) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let of = |sql: &str, rows: &[i64]| -> Result<Vec<i64>, StoreError> {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut cells = Vec::new();
        for row in rows {
            if let Some(cell) = stmt.query_row([row], |row| row.get(0)).optional()?
                && !cells.contains(&cell)
            {
                cells.push(cell);
            }
        }
        Ok(cells)
    };
    let traffic = of(
        &format!(
            "SELECT c.id FROM collect_logs l JOIN traffic_cells c ON {} WHERE l.id = ?1",
            traffic_key_matches("c", "l.")
        ),
        visits,
    )?;
    let conversions = of(
        &format!(
            "SELECT c.id FROM measure_logs m JOIN conversion_cells c ON {} WHERE m.id = ?1",
            conversion_key_matches("c", "m.")
        ),
        events,
    )?;
    Ok((traffic, conversions))
}

/// After a forget: each of the cells `traffic` and `conversions` that no visit or event on
/// file counts in any longer gives up its landing page, merged into its group's cell without
/// one (its counts kept), so a page that only a forgotten player's records named (a path with
/// a token in it) leaves the file with them. The group's own cell is never the one deleted:
/// the group's visitor entries, events and returns name it.
pub(super) fn forget_pages(
    conn: &Connection,
    traffic: &[i64],
    conversions: &[i64],
) -> Result<(), StoreError> {
    let kinds = [
        (&*TRAFFIC_PAGES, traffic),
        (&*CONVERSION_PAGES, conversions),
    ];
    for (sql, cells) in kinds {
        for cell in cells {
            let carried: bool = conn
                .prepare_cached(&sql.carried)?
                .query_row([cell], |row| row.get(0))?;
            if !carried {
                forget_page(conn, sql, *cell)?;
            }
        }
    }
    Ok(())
}

fn forget_page(conn: &Connection, sql: &PageSql, cell: i64) -> Result<(), StoreError> {
    let target: Option<(i64, bool)> = conn
        .prepare_cached(&sql.target)?
        .query_row([cell], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((target, target_leads)) = target else {
        conn.prepare_cached(&sql.blank)?.execute([cell])?;
        return Ok(());
    };
    if target == cell {
        return Ok(());
    }
    // Into the cell that stays: the group's, or else the one without a page.
    let (from, into) = if target_leads {
        (cell, target)
    } else {
        (target, cell)
    };
    conn.prepare_cached(&sql.add)?.execute([into, from])?;
    conn.prepare_cached(&sql.delete)?.execute([from])?;
    conn.prepare_cached(&sql.blank)?.execute([into])?;
    Ok(())
}

/// The statements of [`forget_pages`] for one kind of cell.
struct PageSql {
    /// Whether a record on file counts in cell ?1.
    carried: String,
    /// The cell of ?1's group without a page (?1 itself if it has none), and whether it is
    /// the group's own.
    target: String,
    /// Adds the counts of cell ?2 to cell ?1.
    add: String,
    delete: String,
    blank: String,
}

impl PageSql {
    fn new(table: &str, key: &str, counts: &[&str], carried: String) -> PageSql {
        let same = key
            .split(", ")
            .filter(|column| !column.starts_with("page_"))
            .map(|column| format!("t.{column} = x.{column}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let add = counts
            .iter()
            .map(|count| format!("{count} = {count} + (SELECT {count} FROM {table} WHERE id = ?2)"))
            .collect::<Vec<_>>()
            .join(", ");
        PageSql {
            carried,
            target: format!(
                "SELECT t.id, t.id = t.group_id FROM {table} x JOIN {table} t ON {same} \
                 WHERE x.id = ?1 AND t.page_host = '' AND t.page_path = ''"
            ),
            add: format!("UPDATE {table} SET {add} WHERE id = ?1"),
            delete: format!("DELETE FROM {table} WHERE id = ?1"),
            blank: format!("UPDATE {table} SET page_host = '', page_path = '' WHERE id = ?1"),
        }
    }
}

/// A visit of the cell's day still counts in it: the day's visits, by their time index.
static TRAFFIC_PAGES: LazyLock<PageSql> = LazyLock::new(|| {
    PageSql::new(
        "traffic_cells",
        &traffic_key_columns(),
        &["visits", "visitors", "consented_visits"],
        format!(
            "SELECT EXISTS (SELECT 1 FROM traffic_cells c JOIN collect_logs l \
               ON l.received_at >= CAST(strftime('%s', c.day) AS INTEGER) \
               AND l.received_at < CAST(strftime('%s', c.day) AS INTEGER) + {DAY_SECS} AND {} \
             WHERE c.id = ?1)",
            traffic_key_matches("c", "l.")
        ),
    )
});

static CONVERSION_PAGES: LazyLock<PageSql> = LazyLock::new(|| {
    PageSql::new(
        "conversion_cells",
        &conversion_key_columns(),
        &["events", "users", "returned_d1", "returned_d7"],
        format!(
            "SELECT EXISTS (SELECT 1 FROM conversion_cells c JOIN measure_logs m \
               ON m.event_time >= CAST(strftime('%s', c.day) AS INTEGER) \
               AND m.event_time < CAST(strftime('%s', c.day) AS INTEGER) + {DAY_SECS} AND {} \
             WHERE c.id = ?1)",
            conversion_key_matches("c", "m.")
        ),
    )
});

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
/// in `start..end` (unix seconds). A visitor counts in the cell of their first visit (the
/// lowest row) of the cell's group, as the writer counts them.
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
             SELECT {}, count(*), sum(first_of_group), sum(consent) \
             FROM (SELECT *, id = min(id) OVER (PARTITION BY {}, ip_hash) AS first_of_group \
                   FROM collect_logs WHERE received_at >= ?1 AND received_at < ?2) \
             GROUP BY {}",
            traffic_key_columns(),
            traffic_key_of_visit(""),
            traffic_group_of_visit(""),
            columns::positions(TRAFFIC_KEY_LEN),
        ),
        params![start, end],
    )?;
    name_groups(conn, "traffic_cells", &traffic_group_columns(), from, to)?;
    conn.execute(
        &format!(
            "INSERT INTO traffic_visitors (cell_id, ip_hash) \
             SELECT DISTINCT c.group_id, l.ip_hash FROM collect_logs l JOIN traffic_cells c ON {} \
             WHERE l.received_at >= ?1 AND l.received_at < ?2",
            traffic_key_matches("c", "l."),
        ),
        params![start, end],
    )?;
    Ok(())
}

/// Each rebuilt cell of `table` in the days `from..=to` joins the group of the lowest id
/// among the cells with the same `group` columns.
fn name_groups(
    conn: &Connection,
    table: &str,
    group: &str,
    from: &str,
    to: &str,
) -> Result<(), StoreError> {
    let same = group
        .split(", ")
        .map(|column| format!("g.{column} = {table}.{column}"))
        .collect::<Vec<_>>()
        .join(" AND ");
    conn.execute(
        &format!(
            "UPDATE {table} SET group_id = (SELECT min(g.id) FROM {table} g WHERE {same}) \
             WHERE day BETWEEN ?1 AND ?2"
        ),
        params![from, to],
    )?;
    Ok(())
}

/// The conversion cells of the days `from..=to`, from the events of `start..end` (unix
/// seconds), and each event's `cell_id` (its cell's group). A player counts in the cell of
/// their first event (the lowest row) of the cell's group, as the writer counts them.
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
    let group = format!(
        "strftime('%Y-%m-%d', event_time, 'unixepoch'), game, {}, coalesce(platform, ''), \
         coalesce(storefront, ''), coalesce(country, ''), event",
        columns::campaign_key(Naming::Plain, "", direct),
    );
    conn.execute(
        &format!(
            "INSERT INTO conversion_cells ({}, events, users) \
             SELECT {group}, coalesce(referrer_host, ''), coalesce(page_host, ''), \
                    coalesce(page_path, ''), count(*), sum(first_of_group) \
             FROM (SELECT *, id = min(id) OVER (PARTITION BY {group}, user_hash, user_salt_id) \
                             AS first_of_group \
                   FROM measure_logs WHERE event_time >= ?1 AND event_time < ?2) \
             GROUP BY {}",
            conversion_key_columns(),
            columns::positions(CONVERSION_KEY_LEN),
        ),
        params![start, end],
    )?;
    name_groups(
        conn,
        "conversion_cells",
        &conversion_group_columns(),
        from,
        to,
    )?;
    // Each event names the group it counts its player in (see `user_in_cell`).
    conn.execute(
        &format!(
            "UPDATE measure_logs SET cell_id = (SELECT c.group_id FROM conversion_cells c \
               WHERE {}) \
             WHERE event_time >= ?1 AND event_time < ?2",
            conversion_key_matches("c", "measure_logs."),
        ),
        params![start, end],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cell is found through its table's unique key, and a new cell's group through the
    /// key's first columns: one probe, never a scan of the cells.
    #[test]
    fn a_cell_is_found_through_its_unique_key() {
        let conn = crate::store::migrated_in_memory();
        for (sql, len) in [
            (&TRAFFIC_CELL.find, TRAFFIC_KEY_LEN),
            (&CONVERSION_CELL.find, CONVERSION_KEY_LEN),
            (&TRAFFIC_CELL.group, TRAFFIC_GROUP_LEN),
            (&CONVERSION_CELL.group, CONVERSION_GROUP_LEN),
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
