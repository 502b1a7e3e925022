//! Store: game events written to the log, linked to the visit that brought them (by the rules
//! of [`crate::link`], over the records on file) and counted in their conversion cell.

use std::sync::LazyLock;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, params};

use super::cells::{CellKey, Landing, user_in_cell};
use super::columns::{self, Naming};
use super::deferred::{Address, Deferred};
use super::on_file::OnFile;
use super::ops::{Write, Writing};
use super::types::{EventsWritten, NewEvent, StoreError};
use super::{blocks, returns};
use crate::campaign::DIMENSIONS;
use crate::clock::utc_day;
use crate::link::{self, Records, Span, Visit, VisitQuery};
use crate::privacy::geo::Country;
use crate::privacy::{EventKey, Pseudonym};

/// Stores a batch of events, all or nothing, but for those of blocked players.
pub(super) struct InsertEvents(pub Vec<NewEvent>);

impl Write for InsertEvents {
    type Output = EventsWritten;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<EventsWritten, StoreError> {
        let mut written = EventsWritten::default();
        for event in &self.0 {
            // The block list is read here, inside the writer's transaction, and not by ingest
            // before queueing: only here is it current. A forget (from the API, or from the
            // command line in another process) and an event are applied in the writer's order:
            // an event queued before the forget is stored, then deleted by it; one queued after
            // it is dropped. Checked before queueing, an event could pass just before a forget
            // commits, be stored just after it, and outlive it. The probe reads a small table
            // whose pages stay in the writer's cache.
            if blocks::is_blocked(writing.conn, &event.block)? {
                written.blocked += 1;
                continue;
            }
            // Read here for the same reason: a retry queued while its first copy waits for the
            // commit finds that copy, in this transaction or an earlier one.
            if let Some(key) = &event.event_key
                && is_on_file(writing.conn, key)?
            {
                written.duplicates += 1;
                continue;
            }
            insert(writing, event)?;
            written.stored += 1;
        }
        Ok(written)
    }
}

fn is_on_file(conn: &Connection, key: &EventKey) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM measure_logs WHERE event_key = ?1")?
        .exists([&key.0[..]])?)
}

/// Columns of an event before and after its campaign.
const BEFORE_CAMPAIGN: usize = 11;
const AFTER_CAMPAIGN: usize = 6;

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO measure_logs (received_at, event_time, game, event, user_hash, \
         user_salt_id, ip_hash, ip_salt_id, platform, storefront, visit_id, {}, cell_id, \
         event_key, country, referrer_host, page_host, page_path) \
         VALUES ({})",
        columns::campaign(Naming::Plain, ""),
        columns::placeholders(1, BEFORE_CAMPAIGN + DIMENSIONS + AFTER_CAMPAIGN),
    )
});

fn insert(writing: &mut Writing<'_>, event: &NewEvent) -> Result<(), StoreError> {
    let conn = writing.conn;
    let records = OnFileRecords {
        conn,
        on_file: &writing.memory.on_file,
        addresses: &writing.memory.deferred.addresses,
    };
    let returning = link::returning_user(&records, &event.user)?;
    let user = returning
        .or_else(|| event.user.first().copied())
        .ok_or(StoreError::Invalid("an event without a user pseudonym"))?;
    let ip = event
        .ip
        .first()
        .ok_or(StoreError::Invalid("an event without an IP pseudonym"))?;
    let link_time = link::link_time(event.event_time, event.received_at);
    let attribution = link::attribute(&records, &event.ip, &event.game, link_time, writing.rules)?;
    let key = CellKey::conversion(
        utc_day(event.event_time),
        &event.game,
        &attribution.campaign,
        event.platform.as_deref(),
        event.storefront.as_deref(),
        event.country,
        &event.event,
        attribution.landing.as_ref().map(|landing| Landing {
            referrer_host: landing.referrer_host.as_deref(),
            page_host: &landing.page_host,
            page_path: &landing.page_path,
        }),
    );
    let cell = writing.memory.cells.conversion_cell(conn, key)?;
    // A player counts once per group of cells (one row of the document), in the cell of their
    // first event of it; the event names the group, and so do the returns. A player never seen
    // is new to every group; decided before the event is on file.
    let group = cell.group;
    let new_user = match returning {
        None => true,
        Some(user) => !user_in_cell(conn, &user, group)?,
    };
    // Only a returning player's first event in a cell can move returns (`store::returns`): a
    // new player has no other cell, and a cell already theirs is a day already theirs.
    if new_user && let Some(user) = returning {
        let before = returns::player_cells(conn, &user)?;
        let after = returns::with_event(&before, group, event.event_time);
        for change in returns::changes(&before, &after) {
            writing.memory.cells.count_returns(change);
        }
    }
    let before: [&dyn ToSql; BEFORE_CAMPAIGN] = [
        &event.received_at,
        &event.event_time,
        &event.game,
        &event.event,
        &&user.hash[..],
        &user.salt_id,
        &&ip.hash[..],
        &ip.salt_id,
        &event.platform,
        &event.storefront,
        &attribution.visit_id,
    ];
    let campaign = attribution.campaign.values();
    let event_key = event.event_key.as_ref().map(|key| &key.0[..]);
    let country = event.country.as_ref().map(Country::as_str);
    let landing = attribution.landing.as_ref();
    let after: [&dyn ToSql; AFTER_CAMPAIGN] = [
        &group,
        &event_key,
        &country,
        &landing.and_then(|landing| landing.referrer_host.as_deref()),
        &landing.map(|landing| &landing.page_host),
        &landing.map(|landing| &landing.page_path),
    ];
    conn.prepare_cached(&INSERT)?
        .execute(columns::with_campaign(&before, &campaign, &after))?;
    writing.memory.on_file.add_user(&user);
    writing.memory.cells.count_event(cell.id, new_user);
    Ok(())
}

/// The records on file as linking sees them: the writer's in-memory filters first, then an
/// index probe inside the open transaction, and the visits whose address entries are still in
/// the writer's memory.
struct OnFileRecords<'a> {
    conn: &'a Connection,
    on_file: &'a OnFile,
    addresses: &'a Deferred<Address>,
}

/// The visits of one address in a window, in the order of `Visit::rank` or its reverse: two
/// statements rather than a dynamic ORDER BY, so each stays a prepared, indexed lookup. CROSS
/// JOIN keeps the address first. Which of them may link is `VisitQuery::admits`, read as they
/// come: the first admitted is the answer.
static EARLIEST_VISITS: LazyLock<String> = LazyLock::new(|| visits_in_window("ASC"));
static LATEST_VISITS: LazyLock<String> = LazyLock::new(|| visits_in_window("DESC"));

fn visits_in_window(order: &str) -> String {
    format!(
        "SELECT c.game, c.consent, c.received_at, c.id, c.referrer_host, c.page_host, \
         c.page_path, {} \
         FROM visit_addresses a CROSS JOIN collect_logs c ON c.id = a.visit_id \
         WHERE a.ip_hash = ?1 AND a.ip_salt_id = ?2 AND a.received_at BETWEEN ?3 AND ?4 \
         ORDER BY a.received_at {order}, a.visit_id {order}",
        columns::campaign(Naming::Visits, "c."),
    )
}

/// A visit by its row: for those whose address entry waits in memory.
static VISIT_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT game, consent, received_at, id, referrer_host, page_host, page_path, {} \
         FROM collect_logs \
         WHERE id = ?1",
        columns::campaign(Naming::Visits, ""),
    )
});

/// A row of the statements above, if the query admits it: the columns that decide are read
/// first, the campaign only for the visit taken.
fn admitted_visit(
    query: &VisitQuery<'_>,
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<Option<Visit>> {
    let game: Option<String> = row.get(0)?;
    if !query.admits(game.as_deref(), row.get(1)?) {
        return Ok(None);
    }
    Ok(Some(Visit {
        received_at: row.get(2)?,
        id: row.get(3)?,
        referrer_host: row.get(4)?,
        page_host: row.get(5)?,
        page_path: row.get(6)?,
        campaign: columns::read_campaign(row, 7)?,
    }))
}

impl OnFileRecords<'_> {
    /// The first matching visit among those whose address entry waits in memory, in the
    /// query's order.
    fn pending_visit(&self, query: &VisitQuery<'_>) -> Result<Option<Visit>, StoreError> {
        let mut in_span = self
            .addresses
            .range(Address::span(query.ip, query.from, query.to));
        let mut stmt = self.conn.prepare_cached(&VISIT_BY_ID)?;
        loop {
            let next = if query.earliest {
                in_span.next()
            } else {
                in_span.next_back()
            };
            let Some(address) = next else {
                return Ok(None);
            };
            let found = stmt
                .query_row(params![address.visit], |row| admitted_visit(query, row))
                .optional()?
                .flatten();
            if found.is_some() {
                return Ok(found);
            }
        }
    }
}

impl Records for OnFileRecords<'_> {
    type Error = StoreError;

    fn visit_span(&self, ip: &Pseudonym, from: i64, to: i64) -> Option<Span> {
        self.on_file.visit_span(ip, from, to)
    }

    fn visit(&self, query: &VisitQuery<'_>) -> Result<Option<Visit>, StoreError> {
        let sql = if query.earliest {
            &EARLIEST_VISITS
        } else {
            &LATEST_VISITS
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![
            &query.ip.hash[..],
            query.ip.salt_id,
            query.from,
            query.to,
        ])?;
        let mut on_file = None;
        while let Some(row) = rows.next()? {
            on_file = admitted_visit(query, row)?;
            if on_file.is_some() {
                break;
            }
        }
        let pending = self.pending_visit(query)?;
        Ok(match (on_file, pending) {
            (Some(a), Some(b)) => Some(query.prefer(a, b)),
            (found, None) | (None, found) => found,
        })
    }

    fn has_user(&self, user: &Pseudonym) -> Result<bool, StoreError> {
        if !self.on_file.may_have_user(user) {
            return Ok(false);
        }
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM measure_logs WHERE user_hash = ?1 AND user_salt_id = ?2 LIMIT 1",
            )?
            .exists(params![&user.hash[..], user.salt_id])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linking finds a visit through its address's entries, then reads the visit by its row:
    /// never through the visits' table or its time index.
    #[test]
    fn a_visit_is_found_through_its_address_then_by_its_row() {
        let conn = crate::store::migrated_in_memory();
        for sql in [&*EARLIEST_VISITS, &*LATEST_VISITS] {
            let plan = crate::store::query_plan(&conn, sql, params![&[0u8; 16][..], 1, 0, 1]);
            assert!(
                plan.contains(
                    "SEARCH a USING PRIMARY KEY (ip_hash=? AND ip_salt_id=? AND received_at>? AND received_at<?)"
                ),
                "{plan}"
            );
            assert!(
                plan.contains("SEARCH c USING INTEGER PRIMARY KEY (rowid=?)"),
                "{plan}"
            );
        }
    }
}
