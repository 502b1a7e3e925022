//! Store: a visit written to the log and counted in its traffic cell, or a later report of
//! the same page view updating its consent flag.

use std::sync::LazyLock;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, params};

use super::cells::{COUNT_CONSENT, CellKey, TRAFFIC_KEY_LEN, traffic_key_of_visit};
use super::columns::{self, Naming};
use super::deferred::Address;
use super::ops::{Write, Writing};
use super::types::{NewVisit, StoreError, VisitWrite};
use crate::campaign::DIMENSIONS;
use crate::clock::utc_day;
use crate::privacy::geo::Country;

/// How long after a page view a second report of it may still update its consent flag; the
/// hourly purge forgets older page-view ids.
pub(super) const VIEW_UPDATE_WINDOW_SECS: i64 = 3600;

/// Stores one visit.
pub(super) struct InsertVisit(pub Box<NewVisit>);

impl Write for InsertVisit {
    type Output = VisitWrite;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<VisitWrite, StoreError> {
        let visit = &self.0;
        let conn = writing.conn;
        if let Some(view_id) = &visit.view_id
            && update_view(conn, visit, view_id)?
        {
            return Ok(VisitWrite::ConsentUpdated);
        }
        insert(writing, visit)?;
        writing
            .memory
            .on_file
            .add_visit(&visit.ip, visit.received_at);
        Ok(VisitWrite::Inserted)
    }
}

/// Columns of a visit before and after its campaign.
const BEFORE_CAMPAIGN: usize = 7;
const AFTER_CAMPAIGN: usize = 8;

static INSERT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO collect_logs (id, received_at, game, ip_hash, ip_salt_id, page_host, page_path, \
         {}, click_ids, referrer_host, device, os, browser, consent, link, country) VALUES ({})",
        columns::campaign(Naming::Visits, ""),
        columns::placeholders(1, BEFORE_CAMPAIGN + DIMENSIONS + AFTER_CAMPAIGN),
    )
});

fn insert(writing: &mut Writing<'_>, visit: &NewVisit) -> Result<(), StoreError> {
    let conn = writing.conn;
    let id = writing.memory.deferred.next_visit();
    let before: [&dyn ToSql; BEFORE_CAMPAIGN] = [
        &id,
        &visit.received_at,
        &visit.game,
        &&visit.ip.hash[..],
        &visit.ip.salt_id,
        &visit.page_host,
        &visit.page_path,
    ];
    let campaign = visit.campaign.values();
    let country = visit.country.as_ref().map(Country::as_str);
    let after: [&dyn ToSql; AFTER_CAMPAIGN] = [
        &visit.click_ids,
        &visit.referrer_host,
        &visit.device.category,
        &visit.device.os,
        &visit.device.browser,
        &visit.consent,
        &visit.link,
        &country,
    ];
    conn.prepare_cached(&INSERT)?
        .execute(columns::with_campaign(&before, &campaign, &after))?;
    writing.memory.deferred.addresses.add(
        Address {
            ip_hash: visit.ip.hash,
            ip_salt_id: visit.ip.salt_id,
            received_at: visit.received_at,
            visit: id,
        },
        id,
    );
    if let Some(view_id) = &visit.view_id {
        conn.prepare_cached(
            "INSERT INTO page_views (view_id, ip_hash, ip_salt_id, received_at, visit_id) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            view_id,
            &visit.ip.hash[..],
            visit.ip.salt_id,
            visit.received_at,
            id,
        ])?;
    }
    let key = CellKey::traffic(
        utc_day(visit.received_at),
        visit.game.as_deref(),
        &visit.campaign,
        visit.referrer_host.as_deref(),
        &visit.device.category,
        visit.country,
        (&visit.page_host, &visit.page_path),
    );
    let cell = writing.memory.cells.traffic_cell(conn, key)?;
    // A visitor counts once per group of cells (one row of the document), in the cell of
    // their first visit of it.
    let new_visitor = writing
        .memory
        .deferred
        .is_new_visitor(conn, cell.group, &visit.ip, id)?;
    writing
        .memory
        .cells
        .count_visit(cell.id, new_visitor, visit.consent);
    Ok(())
}

/// The page view by its key (view id, pseudonym, time), then its visit by row id: the cost is
/// one probe whatever else the address sent. CROSS JOIN keeps that order: planned through the
/// visits, the lookup walked every visit of the address in the hour (see migration 0011).
static FIND_VIEW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT c.id, c.consent, {} \
         FROM page_views p CROSS JOIN collect_logs c ON c.id = p.visit_id \
         WHERE p.view_id = ?1 AND p.ip_hash = ?2 AND p.ip_salt_id = ?3 \
         AND p.received_at >= ?4 \
         ORDER BY p.received_at DESC LIMIT 1",
        traffic_key_of_visit("c."),
    )
});

/// A page view reported again (consent given or withdrawn later) from the same address within
/// the hour: its consent flag and click ids change, and so does its cell's consented count.
fn update_view(conn: &Connection, visit: &NewVisit, view_id: &str) -> Result<bool, StoreError> {
    let found = conn
        .prepare_cached(&FIND_VIEW)?
        .query_row(
            params![
                view_id,
                &visit.ip.hash[..],
                visit.ip.salt_id,
                visit.received_at - VIEW_UPDATE_WINDOW_SECS
            ],
            |row| {
                let key = (0..TRAFFIC_KEY_LEN)
                    .map(|index| row.get::<_, String>(2 + index))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, bool>(1)?,
                    CellKey::from_columns(key),
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
        conn.prepare_cached(&COUNT_CONSENT)?
            .execute(key.params_with(&delta))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consent update finds its page view in one probe, however many visits the address
    /// sent in the hour (tests/abuse_store.rs times it with 1.4 M of them).
    #[test]
    fn a_page_view_is_found_by_its_key_then_its_visit_by_row_id() {
        let conn = crate::store::migrated_in_memory();
        let plan = crate::store::query_plan(
            &conn,
            &FIND_VIEW,
            params!["a-view-id", &[0u8; 16][..], 1, 0],
        );
        assert!(
            plan.contains(
                "SEARCH p USING PRIMARY KEY (view_id=? AND ip_hash=? AND ip_salt_id=? AND received_at>?)"
            ),
            "the page view is found by its id and address: {plan}"
        );
        assert!(
            plan.contains("SEARCH c USING INTEGER PRIMARY KEY (rowid=?)"),
            "then its visit by row id: {plan}"
        );
        assert!(
            !plan.contains("visit_addresses"),
            "never through the address's visits: {plan}"
        );
    }
}
