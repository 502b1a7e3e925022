//! Store: entries keyed at a random place of their table, kept in the writer's memory and
//! written later in key order: a traffic cell's visitors (`traffic_visitors`), the visits of
//! an address (`visit_addresses`, linking's way to a visit) and the page views of the hour
//! (`page_views`, a consent update's way to its visit).
//!
//! Written with its visit, each such entry dirtied a page of its own, and at commit every dirty
//! page is encrypted, MACed and written to the WAL: the two entries were most of what a visit
//! cost the writer (issue 18). Held in memory until many have gathered, and written a few at a
//! time in key order, neighbours share their pages.
//!
//! Readers in the writer see both halves: whether a visitor is new is decided from memory and
//! the table together, and linking looks for visits in both. Writes that delete or renumber
//! rows settle first (everything to the table), so SQL alone sees everything then.
//!
//! Durability: the visits are the record (a page view's id hash is appended to
//! `page_view_keys` with its visit). `deferred_written.through` names, per table, the last
//! visit whose entry is known to be in it; at start the entries of the visits after it are
//! made again from `collect_logs` (`recover`), so a crash loses no entry, only the time to
//! remake it. Rollbacks: every change of the open transaction is journaled and undone with it.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use rusqlite::{Connection, OptionalExtension, Statement, params};

use super::cells::traffic_key_matches;
use super::types::{StoreError, ViewKey};
use crate::privacy::Pseudonym;

/// Entries of a kind held in memory (4 to 8 MB for each kind at this size: `HELD_BYTES`).
/// Past it, the surplus goes to the table, taken in key order from where the last write
/// stopped: the writes sweep the keys round and round, so each stretch of keys has gathered
/// entries for one whole round when its turn comes, and they share their pages.
const HELD: usize = 65_536;
/// What the entries held back take at most, every kind together: a map's entry costs about
/// one and a half times its key and visit in the nodes of `BTreeMap`, and its visit some 16
/// bytes more in `origins`. The writer leaves it out of the page cache (`fit_cache`).
pub(super) const HELD_BYTES: usize =
    held_bytes::<Visitor>() + held_bytes::<Address>() + held_bytes::<PageView>();

const fn held_bytes<E>() -> usize {
    HELD * ((size_of::<E>() + size_of::<i64>()) * 3 / 2 + 16)
}

/// The least surplus written at once. Each write dirties one page more than its entries fill
/// (the one where the write before stopped); a few dozen pages add little to a group's time,
/// where a write of thousands stalled every group for milliseconds while it lasted.
const LEAST_WRITE: usize = 128;

/// A kind of deferred entry. Its order is its table's key order.
pub(super) trait Entry: Ord + Copy {
    /// The table, also its row's name in `deferred_written`.
    const TABLE: &'static str;
    /// Inserts one entry, ignoring one already there.
    const INSERT: &'static str;

    fn insert(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<usize>;

    /// Inserts the entries of the visits after row ?1, ignoring those already there.
    fn remake() -> String;
}

/// A visitor counted in a group of traffic cells (a document row: `store/cells.rs`), named by
/// the group's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Visitor {
    pub cell: i64,
    pub ip_hash: [u8; 16],
}

impl Entry for Visitor {
    const TABLE: &'static str = "traffic_visitors";
    const INSERT: &'static str =
        "INSERT OR IGNORE INTO traffic_visitors (cell_id, ip_hash) VALUES (?1, ?2)";

    fn insert(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<usize> {
        stmt.execute(params![self.cell, &self.ip_hash[..]])
    }

    /// A visitor is counted once per group of cells (a document row; `store/cells.rs`), so
    /// its entry names the group of the visit's cell, as the writer's own entries do.
    fn remake() -> String {
        format!(
            "INSERT OR IGNORE INTO traffic_visitors (cell_id, ip_hash) \
             SELECT c.group_id, l.ip_hash FROM collect_logs l JOIN traffic_cells c ON {} \
             WHERE l.id > ?1",
            traffic_key_matches("c", "l.")
        )
    }
}

/// A visit, found by its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Address {
    pub ip_hash: [u8; 16],
    pub ip_salt_id: i64,
    pub received_at: i64,
    pub visit: i64,
}

impl Address {
    /// The entries of `ip` received from `from` to `to`, in key order.
    pub(super) fn span(ip: &Pseudonym, from: i64, to: i64) -> RangeInclusive<Address> {
        let at = |received_at, visit| Address {
            ip_hash: ip.hash,
            ip_salt_id: ip.salt_id,
            received_at,
            visit,
        };
        at(from, i64::MIN)..=at(to, i64::MAX)
    }
}

impl Entry for Address {
    const TABLE: &'static str = "visit_addresses";
    const INSERT: &'static str = "INSERT OR IGNORE INTO visit_addresses \
         (ip_hash, ip_salt_id, received_at, visit_id) VALUES (?1, ?2, ?3, ?4)";

    fn insert(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<usize> {
        stmt.execute(params![
            &self.ip_hash[..],
            self.ip_salt_id,
            self.received_at,
            self.visit
        ])
    }

    fn remake() -> String {
        "INSERT OR IGNORE INTO visit_addresses (ip_hash, ip_salt_id, received_at, visit_id) \
         SELECT ip_hash, ip_salt_id, received_at, id FROM collect_logs WHERE id > ?1"
            .to_string()
    }
}

/// A page view of the hour, found by its id's hash and the visitor's pseudonym.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PageView {
    pub view: ViewKey,
    pub ip_hash: [u8; 16],
    pub ip_salt_id: i64,
    pub received_at: i64,
    pub visit: i64,
}

impl PageView {
    /// The entries of `view` from `ip` received from `from` on, in key order.
    pub(super) fn span(view: ViewKey, ip: &Pseudonym, from: i64) -> RangeInclusive<PageView> {
        let at = |received_at, visit| PageView {
            view,
            ip_hash: ip.hash,
            ip_salt_id: ip.salt_id,
            received_at,
            visit,
        };
        at(from, i64::MIN)..=at(i64::MAX, i64::MAX)
    }
}

impl Entry for PageView {
    const TABLE: &'static str = "page_views";
    const INSERT: &'static str = "INSERT OR IGNORE INTO page_views \
         (view_key, ip_hash, ip_salt_id, received_at, visit_id) VALUES (?1, ?2, ?3, ?4, ?5)";

    fn insert(&self, stmt: &mut Statement<'_>) -> rusqlite::Result<usize> {
        stmt.execute(params![
            &self.view.0[..],
            &self.ip_hash[..],
            self.ip_salt_id,
            self.received_at,
            self.visit
        ])
    }

    fn remake() -> String {
        "INSERT OR IGNORE INTO page_views (view_key, ip_hash, ip_salt_id, received_at, visit_id) \
         SELECT k.view_key, l.ip_hash, l.ip_salt_id, l.received_at, l.id \
         FROM page_view_keys k JOIN collect_logs l ON l.id = k.visit_id WHERE k.visit_id > ?1"
            .to_string()
    }
}

/// Every kind, as the writer keeps them.
#[derive(Default)]
pub(super) struct Deferrals {
    pub visitors: Deferred<Visitor>,
    pub addresses: Deferred<Address>,
    pub views: Deferred<PageView>,
}

/// Where a transaction's changes began: see [`Deferrals::mark`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mark(usize, usize, usize);

impl Deferrals {
    /// Remakes, for each kind, the entries of the visits after its `through`, which may have
    /// been in memory only when the writer last stopped. Runs in its own transaction before
    /// the first group; answers how many entries were remade.
    pub(super) fn recover(&mut self, conn: &mut Connection) -> Result<usize, StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let newest: i64 =
            tx.query_row("SELECT coalesce(max(id), 0) FROM collect_logs", [], |row| {
                row.get(0)
            })?;
        let remade = self.visitors.recover(&tx, newest)?
            + self.addresses.recover(&tx, newest)?
            + self.views.recover(&tx, newest)?;
        tx.commit()?;
        Ok(remade)
    }

    /// The id of the next visit: above every visit ever stored, deleted ones included.
    /// Entries are remade after a crash for the visits above `through` (`recover`), so visit
    /// ids must only grow. SQLite's own choice, the largest id on file plus one, gave a new
    /// visit the id of a deleted one once the newest visits were purged or forgotten: below
    /// `through`, so a crash lost its entries and linking never found it.
    pub(super) fn next_visit(&self) -> i64 {
        self.visitors
            .last_visit
            .max(self.addresses.last_visit)
            .max(self.views.last_visit)
            + 1
    }

    /// Whether `ip` is new to the group of cells `cell` names; if so it counts from now on.
    /// `visit` is the visit's row. `visited`: whether `ip` may have a visit on file; a visitor
    /// entry comes only with a visit, so without one the table is not read.
    pub(super) fn is_new_visitor(
        &mut self,
        conn: &Connection,
        cell: i64,
        ip: &Pseudonym,
        visit: i64,
        visited: bool,
    ) -> Result<bool, StoreError> {
        let visitor = Visitor {
            cell,
            ip_hash: ip.hash,
        };
        if self.visitors.contains(&visitor) {
            self.visitors.seen(visit);
            return Ok(false);
        }
        let on_file = visited
            && conn
                .prepare_cached(
                    "SELECT 1 FROM traffic_visitors WHERE cell_id = ?1 AND ip_hash = ?2",
                )?
                .query_row(params![cell, &ip.hash[..]], |_| Ok(()))
                .optional()?
                .is_some();
        if on_file {
            self.visitors.seen(visit);
            return Ok(false);
        }
        self.visitors.add(visitor, visit);
        Ok(true)
    }

    /// Before the group commits: the entries held past `HELD` go to the table.
    pub(super) fn write_some(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.visitors.write_some(conn)?;
        self.addresses.write_some(conn)?;
        self.views.write_some(conn)
    }

    /// Before a write that deletes or renumbers visits, cells or visitors: every entry held
    /// is written.
    pub(super) fn settle(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.visitors.write(conn, usize::MAX)?;
        self.addresses.write(conn, usize::MAX)?;
        self.views.write(conn, usize::MAX)
    }

    /// Before a purge deletes the visits received before `cutoff`, the visitor lists of the
    /// days up to `last_day` and the page views received before `views_before`, in the same
    /// transaction: their entries leave memory unwritten.
    pub(super) fn forget_purged(
        &mut self,
        conn: &Connection,
        cutoff: i64,
        last_day: &str,
        views_before: i64,
    ) -> Result<(), StoreError> {
        let views_before = views_before.max(cutoff);
        self.views
            .drop_where(|view| view.received_at < views_before);
        self.addresses
            .drop_where(|address| address.received_at < cutoff);
        // Keys are in cell order: each cell's day is read once, when its first entry comes.
        let mut doomed = Vec::new();
        let mut cell_gone: Option<(i64, bool)> = None;
        for visitor in self.visitors.pending.keys() {
            let gone = match cell_gone {
                Some((cell, gone)) if cell == visitor.cell => gone,
                _ => {
                    let day: Option<String> = conn
                        .prepare_cached("SELECT day FROM traffic_cells WHERE id = ?1")?
                        .query_row(params![visitor.cell], |row| row.get(0))
                        .optional()?;
                    let gone = day.is_none_or(|day| day.as_str() <= last_day);
                    cell_gone = Some((visitor.cell, gone));
                    gone
                }
            };
            if gone {
                doomed.push(*visitor);
            }
        }
        self.visitors.drop_all(doomed);
        // `through` may move past the visits that are gone.
        self.visitors.write(conn, 0)?;
        self.addresses.write(conn, 0)?;
        self.views.write(conn, 0)
    }

    pub(super) fn mark(&self) -> Mark {
        Mark(
            self.visitors.journal.len(),
            self.addresses.journal.len(),
            self.views.journal.len(),
        )
    }

    /// The transaction committed: its changes stay.
    pub(super) fn commit(&mut self) {
        self.visitors.journal.clear();
        self.addresses.journal.clear();
        self.views.journal.clear();
    }

    /// Undoes the changes made since `mark`, newest first.
    pub(super) fn roll_back_to(&mut self, mark: Mark) {
        self.visitors.roll_back_to(mark.0);
        self.addresses.roll_back_to(mark.1);
        self.views.roll_back_to(mark.2);
    }
}

/// One kind's entries not in its table yet.
pub(super) struct Deferred<E> {
    /// Entries not in the table yet, with the visit that made each.
    pending: BTreeMap<E, i64>,
    /// The visits of the pending entries: the oldest bounds `through`.
    origins: BTreeSet<i64>,
    /// Where the next write starts: the writes sweep the keys in order and wrap around.
    cursor: Option<E>,
    /// Every visit up to this one has its entry in the table (as committed).
    through: i64,
    /// The newest visit seen.
    last_visit: i64,
    /// The open transaction's changes, undone in reverse on a rollback.
    journal: Vec<Change<E>>,
    held: usize,
    least_write: usize,
}

enum Change<E> {
    Added(E),
    Written(E, i64),
    Through(i64),
    LastVisit(i64),
}

impl<E: Entry> Default for Deferred<E> {
    fn default() -> Deferred<E> {
        Deferred::with_sizes(HELD, LEAST_WRITE)
    }
}

impl<E: Entry> Deferred<E> {
    fn with_sizes(held: usize, least_write: usize) -> Deferred<E> {
        Deferred {
            pending: BTreeMap::new(),
            origins: BTreeSet::new(),
            cursor: None,
            through: 0,
            last_visit: 0,
            journal: Vec::new(),
            held,
            least_write,
        }
    }

    fn recover(&mut self, conn: &Connection, newest: i64) -> Result<usize, StoreError> {
        let through: i64 = conn.query_row(
            "SELECT through FROM deferred_written WHERE name = ?1",
            params![E::TABLE],
            |row| row.get(0),
        )?;
        let remade = conn.execute(&E::remake(), params![through])?;
        let newest = newest.max(through);
        write_through::<E>(conn, newest)?;
        *self = Deferred::with_sizes(self.held, self.least_write);
        self.through = newest;
        self.last_visit = newest;
        Ok(remade)
    }

    pub(super) fn contains(&self, entry: &E) -> bool {
        self.pending.contains_key(entry)
    }

    /// The pending entries in `range`, in key order.
    pub(super) fn range(&self, range: RangeInclusive<E>) -> impl DoubleEndedIterator<Item = &E> {
        self.pending.range(range).map(|(entry, _)| entry)
    }

    /// A visit whose entry is already in memory or in the table.
    fn seen(&mut self, visit: i64) {
        if visit > self.last_visit {
            self.journal.push(Change::LastVisit(self.last_visit));
            self.last_visit = visit;
        }
    }

    /// An entry to write later, made by `visit`.
    pub(super) fn add(&mut self, entry: E, visit: i64) {
        debug_assert!(
            visit > self.through,
            "visit {visit} is not above {}",
            self.through
        );
        self.seen(visit);
        if self.pending.insert(entry, visit).is_none() {
            self.origins.insert(visit);
            self.journal.push(Change::Added(entry));
        }
    }

    fn write_some(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let surplus = self.pending.len().saturating_sub(self.held);
        if surplus >= self.least_write {
            self.write(conn, surplus)?;
        }
        Ok(())
    }

    /// Leaves the entries `doomed` picks unwritten: what they were about is gone.
    fn drop_where(&mut self, doomed: impl Fn(&E) -> bool) {
        let entries = self.pending.keys().filter(|e| doomed(e)).copied().collect();
        self.drop_all(entries);
    }

    /// Leaves `entries` unwritten: what they were about is gone.
    fn drop_all(&mut self, entries: Vec<E>) {
        for entry in entries {
            if let Some(visit) = self.pending.remove(&entry) {
                self.origins.remove(&visit);
                // Undone like a written entry: back into memory.
                self.journal.push(Change::Written(entry, visit));
            }
        }
    }

    /// Writes up to `limit` entries from the cursor on, then moves `through`.
    fn write(&mut self, conn: &Connection, limit: usize) -> Result<(), StoreError> {
        let mut insert = conn.prepare_cached(E::INSERT)?;
        let mut written = 0;
        while written < limit {
            let next = match self.cursor {
                Some(cursor) => self
                    .pending
                    .range(cursor..)
                    .next()
                    .or_else(|| self.pending.iter().next()),
                None => self.pending.iter().next(),
            };
            let Some((&entry, &visit)) = next else {
                break;
            };
            entry.insert(&mut insert)?;
            self.pending.remove(&entry);
            self.origins.remove(&visit);
            self.journal.push(Change::Written(entry, visit));
            self.cursor = Some(entry);
            written += 1;
        }
        let through = match self.origins.first() {
            Some(oldest) => oldest - 1,
            None => self.last_visit,
        };
        if through > self.through {
            write_through::<E>(conn, through)?;
            self.journal.push(Change::Through(self.through));
            self.through = through;
        }
        Ok(())
    }

    fn roll_back_to(&mut self, mark: usize) {
        while self.journal.len() > mark {
            match self.journal.pop() {
                Some(Change::Added(entry)) => {
                    if let Some(visit) = self.pending.remove(&entry) {
                        self.origins.remove(&visit);
                    }
                }
                Some(Change::Written(entry, visit)) => {
                    self.pending.insert(entry, visit);
                    self.origins.insert(visit);
                }
                Some(Change::Through(through)) => self.through = through,
                Some(Change::LastVisit(last)) => self.last_visit = last,
                None => break,
            }
        }
    }
}

fn write_through<E: Entry>(conn: &Connection, through: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE deferred_written SET through = ?1 WHERE name = ?2")?
        .execute(params![through, E::TABLE])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        crate::store::migrated_in_memory()
    }

    fn ip(n: u8) -> Pseudonym {
        Pseudonym {
            hash: [n; 16],
            salt_id: 1,
        }
    }

    fn on_file(conn: &Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM traffic_visitors", [], |row| {
            row.get(0)
        })
        .expect("count")
    }

    fn through(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT through FROM deferred_written WHERE name = 'traffic_visitors'",
            [],
            |row| row.get(0),
        )
        .expect("through")
    }

    fn small(held: usize, least_write: usize) -> Deferrals {
        Deferrals {
            visitors: Deferred::with_sizes(held, least_write),
            addresses: Deferred::default(),
            views: Deferred::default(),
        }
    }

    /// The visitors held in memory, as (cell, first byte of the address hash).
    fn held(deferrals: &Deferrals) -> Vec<(i64, u8)> {
        let visitors = deferrals.visitors.pending.keys();
        visitors.map(|v| (v.cell, v.ip_hash[0])).collect()
    }

    #[test]
    fn visitors_count_once_whether_in_memory_or_written() {
        let conn = store();
        let mut deferrals = small(2, 1);
        let mut visit = 0;
        let mut seen = |deferrals: &mut Deferrals, cell: i64, n: u8| {
            visit += 1;
            deferrals
                .is_new_visitor(&conn, cell, &ip(n), visit, true)
                .expect("is_new_visitor")
        };
        let group = |deferrals: &mut Deferrals| {
            deferrals.write_some(&conn).expect("write");
            deferrals.commit();
        };
        // Three new, one repeat: the one past the two held goes to the table, the first in
        // key order.
        assert!(seen(&mut deferrals, 1, 1));
        assert!(seen(&mut deferrals, 1, 2));
        assert!(!seen(&mut deferrals, 1, 1));
        assert!(seen(&mut deferrals, 2, 1), "another cell counts again");
        group(&mut deferrals);
        assert_eq!(held(&deferrals), [(1, 2), (2, 1)]);
        assert_eq!(on_file(&conn), 1);
        // In the table or in memory, a visitor counts once.
        assert!(!seen(&mut deferrals, 1, 1));
        assert!(!seen(&mut deferrals, 1, 2));
        // Each write goes on from where the last one stopped, and wraps around at the end:
        // each row: a new visitor (cell, address), what is held after its group, and why.
        for (cell, n, after, why) in [
            (1, 0, [(1, 0), (2, 1)], "(1, 2) came after (1, 1)"),
            (0, 5, [(0, 5), (1, 0)], "(2, 1) came after (1, 2)"),
            (1, 6, [(1, 0), (1, 6)], "nothing came after (2, 1)"),
        ] {
            assert!(seen(&mut deferrals, cell, n));
            group(&mut deferrals);
            assert_eq!(held(&deferrals), after, "{why}");
        }
        assert_eq!(through(&conn), 6, "visit 7 made (1, 0), held until now");
        deferrals.settle(&conn).expect("settle");
        deferrals.commit();
        assert_eq!((held(&deferrals).len(), on_file(&conn)), (0, 6));
        assert_eq!(through(&conn), 9, "every visit seen has its entry written");
    }

    #[test]
    fn a_surplus_smaller_than_the_least_write_stays_in_memory() {
        let conn = store();
        let mut deferrals = small(2, 3);
        for n in 1..=5 {
            assert!(
                deferrals
                    .is_new_visitor(&conn, 1, &ip(n), i64::from(n), true)
                    .expect("new")
            );
            deferrals.write_some(&conn).expect("write");
            deferrals.commit();
            let expected = if n < 5 { (n as usize, 0) } else { (2, 3) };
            assert_eq!(
                (held(&deferrals).len(), on_file(&conn)),
                expected,
                "visit {n}"
            );
        }
        assert_eq!(held(&deferrals), [(1, 4), (1, 5)]);
    }

    #[test]
    fn a_rollback_undoes_what_the_transaction_added_and_wrote() {
        let mut conn = store();
        let mut deferrals = small(0, 1);
        let tx = conn.transaction().expect("tx");
        assert!(
            deferrals
                .is_new_visitor(&tx, 1, &ip(1), 1, true)
                .expect("new")
        );
        tx.commit().expect("commit");
        deferrals.commit();

        let tx = conn.transaction().expect("tx");
        let mark = deferrals.mark();
        assert!(
            deferrals
                .is_new_visitor(&tx, 1, &ip(2), 2, true)
                .expect("new")
        );
        deferrals.write_some(&tx).expect("write");
        assert!(deferrals.visitors.pending.is_empty());
        drop(tx);
        deferrals.roll_back_to(mark);
        // (1, 1) is pending again and (1, 2) was never seen.
        assert_eq!(deferrals.visitors.pending.len(), 1);
        assert_eq!((on_file(&conn), through(&conn)), (0, 0));
        assert!(
            !deferrals
                .is_new_visitor(&conn, 1, &ip(1), 3, true)
                .expect("seen")
        );
        assert!(
            deferrals
                .is_new_visitor(&conn, 1, &ip(2), 4, true)
                .expect("new")
        );
    }

    /// The hourly purge writes nothing held in memory: the entries of the visits and visitor
    /// lists it deleted are dropped, the others stay for later.
    #[test]
    fn a_purge_drops_the_entries_of_what_it_deleted_and_keeps_the_rest() {
        let conn = store();
        for (id, day) in [(1, "2026-10-01"), (2, "2026-10-31"), (3, "2026-11-30")] {
            conn.execute(
                "INSERT INTO traffic_cells (id, day, game, source, medium, campaign, content, \
                 term, channel, referrer_host, device, country) \
                 VALUES (?1, ?2, '', '', '', '', '', '', '', '', 'pc', '')",
                params![id, day],
            )
            .expect("cell");
        }
        let mut deferrals = Deferrals::default();
        for (visit, (cell, received_at)) in [(1, 100), (2, 200), (3, 300), (9, 400)]
            .into_iter()
            .enumerate()
        {
            let visit = visit as i64 + 1;
            let ip = ip(visit as u8);
            deferrals
                .is_new_visitor(&conn, cell, &ip, visit, true)
                .expect("visitor");
            deferrals.addresses.add(
                Address {
                    ip_hash: ip.hash,
                    ip_salt_id: 1,
                    received_at,
                    visit,
                },
                visit,
            );
            deferrals.views.add(
                PageView {
                    view: ViewKey([visit as u8; 16]),
                    ip_hash: ip.hash,
                    ip_salt_id: 1,
                    received_at,
                    visit,
                },
                visit,
            );
        }
        // Visits before 250 are gone, and the lists of the days up to 2026-10-31; cell 9 was
        // deleted with its day. Page views before 350 are forgotten.
        deferrals
            .forget_purged(&conn, 250, "2026-10-31", 350)
            .expect("purge");
        let cells: Vec<i64> = deferrals.visitors.pending.keys().map(|v| v.cell).collect();
        fn held_times<E: Entry>(deferred: &Deferred<E>, time: fn(&E) -> i64) -> Vec<i64> {
            deferred.pending.keys().map(time).collect()
        }
        let times = held_times(&deferrals.addresses, |a: &Address| a.received_at);
        let views = held_times(&deferrals.views, |v: &PageView| v.received_at);
        assert_eq!(
            (cells, times, views),
            (vec![3], vec![300, 400], vec![400]),
            "the page views of the hour stay"
        );
        assert_eq!(on_file(&conn), 0, "nothing was written");
        // Nothing before the third visit waits any more.
        assert_eq!(through(&conn), 2);
        let mark = Mark::default();
        deferrals.roll_back_to(mark);
        assert_eq!(
            deferrals.visitors.pending.len(),
            0,
            "rolled back to the start"
        );
    }

    #[test]
    fn an_address_span_holds_its_own_visits_only() {
        let mut addresses: Deferred<Address> = Deferred::default();
        let at = |n: u8, salt_id: i64, received_at: i64, visit: i64| Address {
            ip_hash: [n; 16],
            ip_salt_id: salt_id,
            received_at,
            visit,
        };
        for (visit, address) in [
            at(1, 1, 100, 1),
            at(1, 1, 200, 2),
            at(1, 2, 150, 3),
            at(2, 1, 150, 4),
            at(1, 1, 300, 5),
        ]
        .into_iter()
        .enumerate()
        {
            addresses.add(address, visit as i64 + 1);
        }
        let visits: Vec<i64> = addresses
            .range(Address::span(&ip(1), 100, 200))
            .map(|address| address.visit)
            .collect();
        assert_eq!(visits, vec![1, 2]);
    }
}
