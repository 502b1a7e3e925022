//! Store: which addresses each traffic cell already counts as visitors, with the newest kept in
//! the writer's memory and written to `traffic_visitors` later, in key order.
//!
//! A visitor's entry is keyed by (cell, IP pseudonym): for the visits of a day, a random place
//! in the table. Written with its visit, each one dirtied a page of its own, and every dirty
//! page is encrypted, MACed and written to the WAL at commit: one of the two costliest parts
//! of a visit (issue 18). Held in memory until many have gathered, then written in key order a
//! chunk per group, neighbours share their pages.
//!
//! Exactness: whether a visitor is new is decided from memory and the table together, so the
//! counts in `traffic_cells`, committed with each visit, are as before. Durability: the visits
//! are the record. `traffic_visitors_written.through` names the last visit whose entry is
//! known to be in the table; at start the entries of the visits after it are made again from
//! `collect_logs` (`recover`), so a crash loses no entry, only the time to remake it.
//! Rollbacks: every change of the open transaction is journaled and undone with it.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::cells::traffic_key_matches;
use crate::privacy::Pseudonym;

/// Entries held before they start going to the table: the more, the more of them share a page
/// (about 3 MB of memory at this size).
const WRITE_FROM: usize = 65_536;
/// Entries written per group while draining, on top of those the group itself added, so the
/// memory shrinks however fast visitors arrive.
const CHUNK: usize = 1_000;

type Entry = (i64, [u8; 16]);

pub(super) struct Visitors {
    /// Entries not in the table yet, with the visit that made each.
    pending: BTreeMap<Entry, i64>,
    /// The visits of the pending entries: the oldest bounds `through`.
    origins: BTreeSet<i64>,
    /// Where the drain goes on: it sweeps the keys in order and wraps around.
    cursor: Option<Entry>,
    draining: bool,
    /// Every visit up to this one has its entry in the table (as committed).
    through: i64,
    /// The newest visit seen.
    last_visit: i64,
    /// The open transaction's changes, undone in reverse on a rollback.
    journal: Vec<Change>,
    write_from: usize,
    chunk: usize,
}

enum Change {
    Added(Entry),
    Written(Entry, i64),
    Through(i64),
    LastVisit(i64),
}

impl Default for Visitors {
    fn default() -> Visitors {
        Visitors::with_sizes(WRITE_FROM, CHUNK)
    }
}

impl Visitors {
    fn with_sizes(write_from: usize, chunk: usize) -> Visitors {
        Visitors {
            pending: BTreeMap::new(),
            origins: BTreeSet::new(),
            cursor: None,
            draining: false,
            through: 0,
            last_visit: 0,
            journal: Vec::new(),
            write_from,
            chunk,
        }
    }

    /// Remakes the entries of the visits after `through` that may have been in memory only
    /// when the writer last stopped, and moves `through` to the newest visit. Runs in its own
    /// transaction before the first group.
    pub fn recover(&mut self, conn: &mut Connection) -> Result<u64, StoreError> {
        let tx = conn.transaction()?;
        let through: i64 = tx.query_row(
            "SELECT through FROM traffic_visitors_written WHERE id = 1",
            [],
            |row| row.get(0),
        )?;
        let remade = tx.execute(
            &format!(
                "INSERT OR IGNORE INTO traffic_visitors (cell_id, ip_hash) \
                 SELECT c.id, l.ip_hash FROM collect_logs l JOIN traffic_cells c ON {} \
                 WHERE l.id > ?1",
                traffic_key_matches("c", "l.")
            ),
            params![through],
        )?;
        let newest: i64 =
            tx.query_row("SELECT coalesce(max(id), 0) FROM collect_logs", [], |row| {
                row.get(0)
            })?;
        let newest = newest.max(through);
        write_through(&tx, newest)?;
        tx.commit()?;
        *self = Visitors::with_sizes(self.write_from, self.chunk);
        self.through = newest;
        self.last_visit = newest;
        Ok(remade as u64)
    }

    /// Whether `ip` is new to `cell`; if so it counts from now on. `visit` is the visit's row.
    pub fn is_new(
        &mut self,
        conn: &Connection,
        cell: i64,
        ip: &Pseudonym,
        visit: i64,
    ) -> Result<bool, StoreError> {
        self.journal.push(Change::LastVisit(self.last_visit));
        self.last_visit = self.last_visit.max(visit);
        let entry = (cell, ip.hash);
        if self.pending.contains_key(&entry) {
            return Ok(false);
        }
        let on_file = conn
            .prepare_cached("SELECT 1 FROM traffic_visitors WHERE cell_id = ?1 AND ip_hash = ?2")?
            .query_row(params![cell, &ip.hash[..]], |_| Ok(()))
            .optional()?
            .is_some();
        if on_file {
            return Ok(false);
        }
        self.pending.insert(entry, visit);
        self.origins.insert(visit);
        self.journal.push(Change::Added(entry));
        Ok(true)
    }

    /// Before the group commits: once enough entries have gathered, the next chunk of them in
    /// key order goes to the table.
    pub fn write_some(&mut self, conn: &Connection, added: usize) -> Result<(), StoreError> {
        if self.pending.len() >= self.write_from {
            self.draining = true;
        }
        if !self.draining {
            return Ok(());
        }
        self.write(conn, self.chunk + added)?;
        if self.pending.is_empty() {
            self.draining = false;
        }
        Ok(())
    }

    /// Before a write that deletes or renumbers cells or visitors: every entry is written.
    pub fn settle(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.write(conn, usize::MAX)
    }

    /// The pending entries added in this transaction so far: the journal's length.
    pub fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Entries added to memory since `mark`.
    pub fn added_since(&self, mark: usize) -> usize {
        self.journal[mark.min(self.journal.len())..]
            .iter()
            .filter(|change| matches!(change, Change::Added(_)))
            .count()
    }

    /// The transaction committed: its changes stay.
    pub fn commit(&mut self) {
        self.journal.clear();
    }

    /// Undoes the changes made since `mark`, newest first.
    pub fn roll_back_to(&mut self, mark: usize) {
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

    /// How many entries wait in memory.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Writes up to `limit` entries from the cursor on, then moves `through`.
    fn write(&mut self, conn: &Connection, limit: usize) -> Result<(), StoreError> {
        let mut insert = conn.prepare_cached(
            "INSERT OR IGNORE INTO traffic_visitors (cell_id, ip_hash) VALUES (?1, ?2)",
        )?;
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
            insert.execute(params![entry.0, &entry.1[..]])?;
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
            write_through(conn, through)?;
            self.journal.push(Change::Through(self.through));
            self.through = through;
        }
        Ok(())
    }
}

fn write_through(conn: &Connection, through: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE traffic_visitors_written SET through = ?1 WHERE id = 1")?
        .execute(params![through])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Connection {
        let mut conn = Connection::open_in_memory().expect("memory database");
        crate::store::migrate::migrate(&mut conn).expect("migrations");
        conn
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
            "SELECT through FROM traffic_visitors_written WHERE id = 1",
            [],
            |row| row.get(0),
        )
        .expect("through")
    }

    #[test]
    fn visitors_count_once_whether_in_memory_or_written() {
        let conn = store();
        let mut visitors = Visitors::with_sizes(4, 1);
        let mut visit = 0;
        let mut seen = |visitors: &mut Visitors, cell: i64, n: u8| {
            visit += 1;
            visitors.is_new(&conn, cell, &ip(n), visit).expect("is_new")
        };
        // Three new, one repeat: all in memory.
        assert!(seen(&mut visitors, 1, 1));
        assert!(seen(&mut visitors, 1, 2));
        assert!(!seen(&mut visitors, 1, 1));
        assert!(seen(&mut visitors, 2, 1), "another cell counts again");
        visitors.write_some(&conn, 0).expect("write");
        assert_eq!((visitors.pending(), on_file(&conn)), (3, 0));
        // The fourth starts the drain: one chunk plus what the group added, in key order.
        assert!(seen(&mut visitors, 1, 3));
        visitors.write_some(&conn, 1).expect("write");
        assert_eq!((visitors.pending(), on_file(&conn)), (2, 2));
        // Entries in the table still count: (1, 1) and (1, 2) are written by now.
        assert!(!seen(&mut visitors, 1, 1));
        assert!(!seen(&mut visitors, 1, 2));
        visitors.write_some(&conn, 0).expect("write");
        visitors.write_some(&conn, 0).expect("write");
        assert_eq!((visitors.pending(), on_file(&conn)), (0, 4));
        assert_eq!(through(&conn), 7, "every visit seen has its entry written");
    }

    #[test]
    fn a_rollback_undoes_what_the_transaction_added_and_wrote() {
        let mut conn = store();
        let mut visitors = Visitors::with_sizes(2, 10);
        let tx = conn.transaction().expect("tx");
        assert!(visitors.is_new(&tx, 1, &ip(1), 1).expect("is_new"));
        tx.commit().expect("commit");
        visitors.commit();

        let tx = conn.transaction().expect("tx");
        let mark = visitors.mark();
        assert!(visitors.is_new(&tx, 1, &ip(2), 2).expect("is_new"));
        visitors.write_some(&tx, 1).expect("write");
        assert_eq!(visitors.pending(), 0);
        drop(tx);
        visitors.roll_back_to(mark);
        // (1, 1) is pending again and (1, 2) was never seen.
        assert_eq!(
            (visitors.pending(), on_file(&conn), through(&conn)),
            (1, 0, 0)
        );
        assert!(!visitors.is_new(&conn, 1, &ip(1), 3).expect("is_new"));
        assert!(visitors.is_new(&conn, 1, &ip(2), 4).expect("is_new"));
    }
}
