//! Store: the schema, migrated in order by numbered SQL files; `PRAGMA user_version` records
//! how many ran.

use rusqlite::{Connection, params};

use super::types::ViewKey;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_attribution.sql"),
    include_str!("migrations/0003_forget_log.sql"),
    include_str!("migrations/0004_outbox.sql"),
    include_str!("migrations/0005_drop_visit_index.sql"),
    include_str!("migrations/0006_event_cells.sql"),
    include_str!("migrations/0007_page_views.sql"),
    include_str!("migrations/0008_event_expiry.sql"),
    include_str!("migrations/0009_channel.sql"),
    include_str!("migrations/0010_block_list.sql"),
    include_str!("migrations/0011_page_view_address.sql"),
    include_str!("migrations/0012_write_probe.sql"),
    include_str!("migrations/0013_event_id.sql"),
    include_str!("migrations/0014_country.sql"),
    include_str!("migrations/0015_returns.sql"),
    include_str!("migrations/0016_deferred_entries.sql"),
    include_str!("migrations/0017_return_counts.sql"),
    include_str!("migrations/0018_ledger.sql"),
    include_str!("migrations/0019_landing_page.sql"),
    include_str!("migrations/0020_day_versions.sql"),
    include_str!("migrations/0021_page_view_keys.sql"),
];

/// The migration after which `hash_view_ids` runs: SQLite has no BLAKE3.
const PAGE_VIEW_KEYS: usize = 21;

const AUTO_VACUUM_INCREMENTAL: i64 = 2;

pub(super) fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    // Deletions give their pages back to the file system (see flush::scrub). The mode is
    // fixed once the file has a first page, which switching to WAL already wrote: VACUUM
    // rebuilds the file in it (at once for a new file; temp_store keeps the copy in memory).
    let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |row| row.get(0))?;
    if auto_vacuum != AUTO_VACUUM_INCREMENTAL {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")?;
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        if index + 1 == PAGE_VIEW_KEYS {
            hash_view_ids(&tx)?;
        }
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// Moves the page views of the last hour to their table keyed by the ids' hashes, each with
/// its durable record, and drops the table of raw ids.
fn hash_view_ids(conn: &Connection) -> Result<(), rusqlite::Error> {
    let views = conn
        .prepare("SELECT view_id, ip_hash, ip_salt_id, received_at, visit_id FROM page_views")?
        .query_map([], |row| <(String, Vec<u8>, i64, i64, i64)>::try_from(row))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut view = conn.prepare(
        "INSERT OR IGNORE INTO page_views_by_key \
         (view_key, ip_hash, ip_salt_id, received_at, visit_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut record = conn.prepare(
        "INSERT OR IGNORE INTO page_view_keys (visit_id, view_key, received_at) \
         VALUES (?1, ?2, ?3)",
    )?;
    for (view_id, ip_hash, ip_salt_id, received_at, visit_id) in views {
        let key = ViewKey::of(&view_id);
        view.execute(params![
            &key.0[..],
            ip_hash,
            ip_salt_id,
            received_at,
            visit_id
        ])?;
        record.execute(params![visit_id, &key.0[..], received_at])?;
    }
    conn.execute_batch("DROP TABLE page_views; ALTER TABLE page_views_by_key RENAME TO page_views;")
}

#[cfg(test)]
mod tests {
    use rusqlite::params;

    use super::*;
    use crate::privacy::Pseudonym;
    use crate::store::cells::user_in_cell;

    /// An in-memory database as the first `count` migrations left it.
    fn migrated_until(count: usize) -> Connection {
        let conn = Connection::open_in_memory().expect("memory database");
        for sql in &MIGRATIONS[..count] {
            conn.execute_batch(sql).expect("migration");
        }
        conn.pragma_update(None, "user_version", count as i64)
            .expect("version");
        conn
    }

    fn user(n: u8) -> Pseudonym {
        Pseudonym {
            salt_id: 1,
            hash: [n; 16],
        }
    }

    /// Migration 0006 names each event's cell, so a player counted before the upgrade is not
    /// counted again after it.
    #[test]
    fn events_on_file_before_0006_name_their_cells() {
        let mut conn = migrated_until(5);
        // 2026-11-01 12:00 UTC: alice twice in one cell, bob once in another (no source: direct).
        conn.execute_batch(&format!(
            "INSERT INTO conversion_cells (id, day, game, source, medium, campaign, content, term, \
               platform, storefront, event, events, users) VALUES \
               (7, '2026-11-01', 'g', 'ads', '', '', '', '', 'pc', '', 'open', 2, 1), \
               (9, '2026-11-01', 'g', '(direct)', '', '', '', '', '', '', 'open', 1, 1); \
             INSERT INTO measure_logs (received_at, event_time, game, event, user_hash, user_salt_id, \
               ip_hash, ip_salt_id, platform, source) VALUES \
               (1793534400, 1793534400, 'g', 'open', x'{a}', 1, x'{a}', 1, 'pc', 'ads'), \
               (1793534401, 1793534401, 'g', 'open', x'{a}', 1, x'{a}', 1, 'pc', 'ads'), \
               (1793534402, 1793534402, 'g', 'open', x'{b}', 1, x'{b}', 1, NULL, NULL);",
            a = "01".repeat(16),
            b = "02".repeat(16),
        ))
        .expect("rows before the upgrade");
        migrate(&mut conn).expect("migrations");
        let cells: Vec<Option<i64>> = conn
            .prepare("SELECT cell_id FROM measure_logs ORDER BY id")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .expect("cell ids");
        assert_eq!(cells, vec![Some(7), Some(7), Some(9)]);
        assert!(user_in_cell(&conn, &user(1), 7).expect("probe"));
        assert!(!user_in_cell(&conn, &user(1), 9).expect("probe"));
        assert!(user_in_cell(&conn, &user(2), 9).expect("probe"));
        // The probe is the user index's, not a scan of the table.
        let plan = crate::store::query_plan(
            &conn,
            "SELECT 1 FROM measure_logs \
             WHERE user_hash = ?1 AND user_salt_id = ?2 AND cell_id = ?3",
            params![&[1u8; 16][..], 1, 7],
        );
        assert!(plan.contains("COVERING INDEX measure_logs_user"), "{plan}");
    }

    /// 0007 keeps the page-view ids of the newest hour of visits (the only ones a consent
    /// update may still reach) in their own table and drops the index of the column.
    #[test]
    fn page_view_ids_of_the_last_hour_move_to_their_table_in_0007() {
        let conn = migrated_until(6);
        conn.execute_batch(&format!(
            "INSERT INTO collect_logs (id, received_at, ip_hash, ip_salt_id, page_host, page_path, \
               device, os, browser, consent, view_id) VALUES \
               (1, 1000, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, 'view-too-old'), \
               (2, 1001, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, 'view-an-hour-old'), \
               (3, 4601, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, 'view-newest'), \
               (4, 4601, x'{ip}', 1, 'a.example', '/', 'pc', 'w', 'c', 0, NULL);",
            ip = "01".repeat(16),
        ))
        .expect("rows before the upgrade");
        // Up to 0020: 0021 hashes the ids.
        for sql in &MIGRATIONS[6..20] {
            conn.execute_batch(sql).expect("migration");
        }
        let views: Vec<(String, i64, i64)> = conn
            .prepare("SELECT view_id, visit_id, received_at FROM page_views ORDER BY visit_id")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .expect("page views");
        assert_eq!(
            views,
            vec![
                ("view-an-hour-old".to_string(), 2, 1001),
                ("view-newest".to_string(), 3, 4601),
            ]
        );
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'collect_logs_view'",
                [],
                |row| row.get(0),
            )
            .expect("schema");
        assert_eq!(index, 0, "the view-id index is gone");
    }

    /// 0014 gives both kinds of cell a country in their keys: the cells on file keep their ids
    /// (visitor lists and events point at them) and counts, with no country.
    #[test]
    fn cells_keep_their_ids_and_counts_through_0014() {
        let mut conn = migrated_until(12);
        conn.execute_batch(
            "INSERT INTO traffic_cells (id, day, game, source, medium, campaign, content, term, \
               channel, referrer_host, device, visits, visitors, consented_visits) VALUES \
               (7, '2026-11-01', 'g', 'ads', '', '', '', '', '', '', 'pc', 5, 3, 1); \
             INSERT INTO conversion_cells (id, day, game, source, medium, campaign, content, \
               term, channel, platform, storefront, event, events, users) VALUES \
               (9, '2026-11-01', 'g', '(direct)', '', '', '', '', '', 'pc', '', 'open', 4, 2);",
        )
        .expect("cells before the upgrade");
        migrate(&mut conn).expect("migrations");
        let traffic: (i64, String, i64, i64, i64) = conn
            .query_row(
                "SELECT id, country, visits, visitors, consented_visits FROM traffic_cells",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .expect("the traffic cell");
        assert_eq!(traffic, (7, String::new(), 5, 3, 1));
        let conversion: (i64, String, i64, i64) = conn
            .query_row(
                "SELECT id, country, events, users FROM conversion_cells",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )
            .expect("the conversion cell");
        assert_eq!(conversion, (9, String::new(), 4, 2));
        // The same key with a country is another cell.
        conn.execute_batch(
            "INSERT INTO traffic_cells (day, game, source, medium, campaign, content, term, \
               channel, referrer_host, device, country) VALUES \
               ('2026-11-01', 'g', 'ads', '', '', '', '', '', '', 'pc', 'DE');",
        )
        .expect("a cell with a country beside the old one");
    }

    /// 0017 counts the returns of the cells on file once, from their events, as the kept
    /// counts would have: alice comes back the next day (D1 and D7), carol on day 8 (D7), bob
    /// on day 9 (neither), dan never.
    #[test]
    fn returns_on_file_before_0017_are_counted_once() {
        let mut conn = migrated_until(16);
        let cell = |id: i64, day: &str| {
            format!(
                "INSERT INTO conversion_cells (id, day, game, source, medium, campaign, content, \
                   term, channel, platform, storefront, country, event, events, users) VALUES \
                   ({id}, '{day}', 'g', '(direct)', '', '', '', '', '', 'pc', '', '', 'open', 1, 1);"
            )
        };
        let event = |player: u8, day: i64, cell: i64| {
            let time = 1_793_534_400 + (day - 1) * 86_400;
            format!(
                "INSERT INTO measure_logs (received_at, event_time, game, event, user_hash, \
                   user_salt_id, ip_hash, ip_salt_id, cell_id) VALUES \
                   ({time}, {time}, 'g', 'open', x'{hash}', 1, x'{hash}', 1, {cell});",
                hash = format!("{player:02x}").repeat(16),
            )
        };
        let mut sql = [
            (1, "2026-11-01"),
            (2, "2026-11-02"),
            (3, "2026-11-08"),
            (4, "2026-11-09"),
        ]
        .map(|(id, day)| cell(id, day))
        .concat();
        for (player, day, cell) in [
            (1, 1, 1),
            (1, 2, 2),
            (2, 1, 1),
            (2, 9, 4),
            (3, 1, 1),
            (3, 1, 1),
            (3, 8, 3),
            (4, 1, 1),
        ] {
            sql.push_str(&event(player, day, cell));
        }
        conn.execute_batch(&sql)
            .expect("cells and events before the upgrade");
        migrate(&mut conn).expect("migrations");
        let returns: Vec<(i64, i64, i64)> = conn
            .prepare("SELECT id, returned_d1, returned_d7 FROM conversion_cells ORDER BY id")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                    .collect()
            })
            .expect("the cells");
        assert_eq!(returns, vec![(1, 1, 2), (2, 0, 0), (3, 0, 0), (4, 0, 0)]);
    }

    /// 0011 keeps the page views, each with its visit's pseudonym beside it: the consent
    /// update finds one by its key instead of through the address's visits.
    #[test]
    fn page_views_take_their_visits_pseudonym_in_0011() {
        let conn = migrated_until(10);
        conn.execute_batch(&format!(
            "INSERT INTO collect_logs (id, received_at, ip_hash, ip_salt_id, page_host, page_path, \
               device, os, browser, consent) VALUES \
               (5, 4601, x'{ip}', 3, 'a.example', '/', 'pc', 'w', 'c', 0); \
             INSERT INTO page_views (view_id, visit_id, received_at) VALUES ('view-newest', 5, 4601);",
            ip = "01".repeat(16),
        ))
        .expect("rows before the upgrade");
        conn.execute_batch(MIGRATIONS[10]).expect("migration 0011");
        let row: (String, Vec<u8>, i64, i64, i64) = conn
            .query_row(
                "SELECT view_id, ip_hash, ip_salt_id, received_at, visit_id FROM page_views",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .expect("the page view");
        assert_eq!(row, ("view-newest".to_string(), vec![1; 16], 3, 4601, 5));
    }

    /// 0021 keeps the page views of the hour, found by their ids' hashes, each with its
    /// record; the raw ids are gone from the file.
    #[test]
    fn page_views_are_keyed_by_their_ids_hash_in_0021() {
        let mut conn = migrated_until(20);
        conn.execute_batch(&format!(
            "INSERT INTO collect_logs (id, received_at, ip_hash, ip_salt_id, page_host, page_path, \
               device, os, browser, consent) VALUES \
               (5, 4601, x'{ip}', 3, 'a.example', '/', 'pc', 'w', 'c', 0); \
             INSERT INTO page_views (view_id, ip_hash, ip_salt_id, received_at, visit_id) \
               VALUES ('view-newest', x'{ip}', 3, 4601, 5);",
            ip = "01".repeat(16),
        ))
        .expect("rows before the upgrade");
        migrate(&mut conn).expect("migrations");
        let key = ViewKey::of("view-newest").0.to_vec();
        type Row = (Vec<u8>, Vec<u8>, i64, i64, i64);
        let view = conn
            .query_row(
                "SELECT view_key, ip_hash, ip_salt_id, received_at, visit_id FROM page_views",
                [],
                |row| Row::try_from(row),
            )
            .expect("the page view");
        assert_eq!(view, (key.clone(), vec![1; 16], 3, 4601, 5));
        // `through`: the views on file are written.
        let record = conn
            .query_row(
                "SELECT k.visit_id, k.view_key, k.received_at, d.through \
                 FROM page_view_keys k, deferred_written d WHERE d.name = 'page_views'",
                [],
                |row| <(i64, Vec<u8>, i64, i64)>::try_from(row),
            )
            .expect("its record");
        assert_eq!(record, (5, key, 4601, 5));
    }

    /// 0019 keeps every cell, its id and its counts; each is its own group, without a page.
    #[test]
    fn cells_keep_their_ids_and_counts_and_lead_their_groups_in_0019() {
        let mut conn = migrated_until(18);
        conn.execute_batch(
            "INSERT INTO traffic_cells (id, day, game, source, medium, campaign, content, term, \
               channel, referrer_host, device, country, visits, visitors, consented_visits) \
               VALUES (5, '2026-11-01', '', 'ads', '', '', '', '', '', 't.co', 'pc', '', 3, 2, 1); \
             INSERT INTO conversion_cells (id, day, game, source, medium, campaign, content, term, \
               channel, platform, storefront, country, event, events, users, returned_d1) \
               VALUES (8, '2026-11-01', 'g', 'ads', '', '', '', '', '', 'pc', '', '', 'open', \
               4, 2, 1);",
        )
        .expect("cells before the upgrade");
        migrate(&mut conn).expect("migrations");
        let traffic: (i64, i64, String, i64, i64) = conn
            .query_row(
                "SELECT id, group_id, page_host || page_path, visits, visitors FROM traffic_cells",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .expect("the traffic cell");
        assert_eq!(traffic, (5, 5, String::new(), 3, 2));
        let conversion: (i64, i64, String, i64, i64) = conn
            .query_row(
                "SELECT id, group_id, referrer_host || page_host || page_path, events, \
                 returned_d1 FROM conversion_cells",
                [],
                |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                },
            )
            .expect("the conversion cell");
        assert_eq!(conversion, (8, 8, String::new(), 4, 1));
    }

    /// 0020 gives the days on file version 1; from then on any change to a cell, of either
    /// kind, bumps its day's version and no other.
    #[test]
    fn a_change_to_a_cell_bumps_its_days_version_from_0020() {
        let mut conn = migrated_until(19);
        conn.execute_batch(
            "INSERT INTO traffic_cells (id, day, game, source, medium, campaign, content, term, \
               channel, referrer_host, device, country, visits) \
               VALUES (5, '2026-11-01', '', 'ads', '', '', '', '', '', '', 'pc', '', 3); \
             INSERT INTO conversion_cells (id, day, game, source, medium, campaign, content, term, \
               channel, platform, storefront, country, event, events) \
               VALUES (8, '2026-11-02', 'g', 'ads', '', '', '', '', '', 'pc', '', '', 'open', 4);",
        )
        .expect("cells before the upgrade");
        migrate(&mut conn).expect("migrations");
        let versions = |conn: &Connection| -> Vec<(String, i64)> {
            conn.prepare("SELECT day, version FROM day_versions ORDER BY day")
                .and_then(|mut stmt| {
                    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect()
                })
                .expect("the versions")
        };
        let day = |day: &str, version: i64| (day.to_string(), version);
        assert_eq!(
            versions(&conn),
            [day("2026-11-01", 1), day("2026-11-02", 1)]
        );
        conn.execute_batch(
            "UPDATE traffic_cells SET visits = visits + 1 WHERE id = 5; \
             UPDATE conversion_cells SET returned_d7 = 1 WHERE id = 8; \
             UPDATE conversion_cells SET users = 2 WHERE id = 8; \
             DELETE FROM traffic_cells WHERE id = 5; \
             INSERT INTO conversion_cells (day, game, source, medium, campaign, content, term, \
               channel, platform, storefront, country, event) \
               VALUES ('2026-11-03', 'g', '', '', '', '', '', '', '', '', '', 'open');",
        )
        .expect("changes");
        assert_eq!(
            versions(&conn),
            [
                day("2026-11-01", 3),
                day("2026-11-02", 3),
                day("2026-11-03", 1)
            ]
        );
    }
}
