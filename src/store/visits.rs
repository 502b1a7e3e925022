//! Store: a visit written to the log and counted in its traffic cell, or a later report of
//! the same page view updating its consent flag.

use std::sync::LazyLock;

use rusqlite::types::ToSql;
use rusqlite::{OptionalExtension, params};

use super::cells::{COUNT_CONSENT, CellKey, TRAFFIC_KEY_LEN, traffic_key_of_visit};
use super::columns::{self, Naming};
use super::deferred::{Address, PageView};
use super::ops::{Write, Writing};
use super::types::{NewVisit, StoreError, ViewKey, VisitWrite};
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
        // A page view and a visitor entry come only with a visit: an address the filters have
        // never seen has neither (on a launch, most of them), and their probes, each a page
        // read in a large store, are skipped.
        let visited = writing.memory.on_file.may_have_visit(&visit.ip);
        if visited
            && let Some(view) = visit.view
            && update_view(writing, visit, view)?
        {
            return Ok(VisitWrite::ConsentUpdated);
        }
        insert(writing, visit, visited)?;
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

/// Stores `visit`; `visited`: whether its address may have a visit on file.
fn insert(writing: &mut Writing<'_>, visit: &NewVisit, visited: bool) -> Result<(), StoreError> {
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
    if let Some(view) = visit.view {
        // The record is appended (its key is the visit's); the entry waits in memory.
        conn.prepare_cached(
            "INSERT INTO page_view_keys (visit_id, view_key, received_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![id, &view.0[..], visit.received_at])?;
        writing.memory.deferred.views.add(
            PageView {
                view,
                ip_hash: visit.ip.hash,
                ip_salt_id: visit.ip.salt_id,
                received_at: visit.received_at,
                visit: id,
            },
            id,
        );
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
        .is_new_visitor(conn, cell.group, &visit.ip, id, visited)?;
    writing
        .memory
        .cells
        .count_visit(cell.id, new_visitor, visit.consent);
    Ok(())
}

/// The newest page view on file of a view id from a pseudonym since a time, by the table's
/// key: one probe whatever else the address sent (see migration 0011).
const FIND_VIEW: &str = "SELECT received_at, visit_id FROM page_views \
     WHERE view_key = ?1 AND ip_hash = ?2 AND ip_salt_id = ?3 AND received_at >= ?4 \
     ORDER BY received_at DESC, visit_id DESC LIMIT 1";

/// A page view's visit, by row id.
static VIEW_VISIT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT consent, {} FROM collect_logs WHERE id = ?1",
        traffic_key_of_visit(""),
    )
});

/// A page view reported again (consent given or withdrawn later) from the same address within
/// the hour: its consent flag and click ids change, and so does its cell's consented count.
fn update_view(
    writing: &mut Writing<'_>,
    visit: &NewVisit,
    view: ViewKey,
) -> Result<bool, StoreError> {
    let conn = writing.conn;
    let since = visit.received_at - VIEW_UPDATE_WINDOW_SECS;
    let held = writing
        .memory
        .deferred
        .views
        .range(PageView::span(view, &visit.ip, since))
        .next_back()
        .map(|entry| (entry.received_at, entry.visit));
    let on_file = conn
        .prepare_cached(FIND_VIEW)?
        .query_row(
            params![&view.0[..], &visit.ip.hash[..], visit.ip.salt_id, since],
            |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?;
    let Some((_, id)) = held.max(on_file) else {
        return Ok(false);
    };
    let found = conn
        .prepare_cached(&VIEW_VISIT)?
        .query_row(params![id], |row| {
            let key = (0..TRAFFIC_KEY_LEN)
                .map(|index| row.get::<_, String>(1 + index))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((row.get::<_, bool>(0)?, CellKey::from_columns(key)))
        })
        .optional()?;
    let Some((was_consented, key)) = found else {
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
    /// sent in the hour (tests/abuse_store.rs times it with 1.4 M of them), then its visit by
    /// row id.
    #[test]
    fn a_page_view_is_found_by_its_key_then_its_visit_by_row_id() {
        let conn = crate::store::migrated_in_memory();
        let plan = crate::store::query_plan(
            &conn,
            FIND_VIEW,
            params![&[0u8; 16][..], &[0u8; 16][..], 1, 0],
        );
        assert!(
            plan.contains(
                "SEARCH page_views USING PRIMARY KEY (view_key=? AND ip_hash=? AND ip_salt_id=? AND received_at>?)"
            ),
            "the page view is found by its id and address: {plan}"
        );
        assert!(
            !plan.contains("visit_addresses"),
            "never through the address's visits: {plan}"
        );
        let plan = crate::store::query_plan(&conn, &VIEW_VISIT, params![1]);
        assert!(
            plan.contains("SEARCH collect_logs USING INTEGER PRIMARY KEY (rowid=?)"),
            "then its visit by row id: {plan}"
        );
    }
}
