//! Store: which pseudonyms already have records, per salt, in the writer's memory, so linking
//! and the user check (invariant 4) read the database only under the salts that may match.
//!
//! An event carries its IP and user pseudonyms under every live salt (30 with the defaults),
//! and each one looked up is an index probe that, in a store larger than the writer's cache,
//! reads and decrypts a page. Nearly all of those probes find nothing. A filter per salt answers
//! "certainly not on file" from memory for all but about 1 in 1,000 absent pseudonyms; the rest,
//! and every pseudonym really on file, are still looked up, so the answers stay exact.
//!
//! The filters start empty and learn every record the writer inserts. The records already on
//! file when the writer started are read from the pseudonym indexes in chunks between write
//! groups; until that scan is complete every pseudonym counts as possibly on file (the slower,
//! equally exact path). Deletions leave their keys behind: a filter may only err towards a probe.
//! Nothing here is ever written to disk.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::link::Span;
use crate::privacy::Pseudonym;

/// Filter bits per key at a filter's capacity: about 0.1% of absent keys then pass.
const BITS_PER_KEY: usize = 16;
/// Keys of a salt's first filter; each further filter holds `GROWTH` times more, up to
/// `LARGEST_CAPACITY`, and the ones after that as many. Filters that kept growing fourfold held
/// up to four times the memory their keys needed (16 MiB allocated at once past 2.7 M keys).
const FIRST_CAPACITY: usize = 1 << 15;
const GROWTH: usize = 4;
const LARGEST_CAPACITY: usize = 1 << 19;
/// Blocks per allocation of a filter's bits: 4 KiB. The writer's page cache shrinks by what
/// the filters take (`storage.cache_mib` holds both), and allocations the size of the pages it
/// gives up take their place in memory instead of adding to it.
const SEGMENT_BLOCKS: usize = 128;
/// What one largest filter takes: the room the writer keeps for each filter a group may add.
pub(super) const LARGEST_FILTER_BYTES: usize = Bloom::bytes_for(LARGEST_CAPACITY);
/// Index entries read per scan step: a few milliseconds, so a step between two write groups
/// delays the next one little.
const SCAN_CHUNK: i64 = 20_000;

/// The pseudonyms on file, by kind and salt.
#[derive(Default)]
pub(super) struct OnFile {
    /// IP pseudonyms of stored visits. Maps by salt are B-trees: with a few dozen salts a few
    /// comparisons find one, cheaper than hashing the id (60 lookups per event).
    visits: BTreeMap<i64, Chain>,
    /// When the visits under each salt were received: linking skips salts whose visits all
    /// lie outside the lookback window, and stops once no other salt can hold a better visit.
    spans: BTreeMap<i64, Span>,
    /// User pseudonyms of stored events.
    users: BTreeMap<i64, Chain>,
    scan: Scan,
    /// The filters' memory and its limit.
    budget: Budget,
}

/// What the filters take, in bytes, and the most they may.
struct Budget {
    used: usize,
    limit: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            used: 0,
            limit: usize::MAX,
        }
    }
}

/// `span` grown to hold `at`. Deletions leave a span as it was: wider than the rows still
/// there, never narrower.
fn widen(span: Option<Span>, at: i64) -> Span {
    match span {
        Some(span) => Span {
            first: span.first.min(at),
            last: span.last.max(at),
        },
        None => Span {
            first: at,
            last: at,
        },
    }
}

/// How far the scan of the records on file at start has come.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scan {
    /// Visits' IP pseudonyms greater than this one are still to be read.
    Visits(Vec<u8>),
    /// Events' user pseudonyms greater than this one are still to be read.
    Users(Vec<u8>),
    Complete,
    /// The scan failed; every pseudonym counts as possibly on file from now on.
    Abandoned,
}

impl Default for Scan {
    /// From the first visit's pseudonym.
    fn default() -> Scan {
        Scan::Visits(Vec::new())
    }
}

impl OnFile {
    /// Filters that take at most `limit` bytes: past it, a salt whose filter would grow
    /// loses it instead, and all its pseudonyms count as possibly on file (slower, exact).
    pub(super) fn with_limit(limit: usize) -> OnFile {
        OnFile {
            budget: Budget { used: 0, limit },
            ..OnFile::default()
        }
    }

    /// The bytes the filters take.
    pub(super) fn bytes(&self) -> usize {
        self.budget.used
    }

    /// `None` if no visit with this IP pseudonym received between `from` and `to` is on file
    /// for certain; otherwise when such visits could have been received. The span is checked
    /// before the filter: it costs no memory read beyond the salt's entry.
    pub(super) fn visit_span(&self, ip: &Pseudonym, from: i64, to: i64) -> Option<Span> {
        if self.scan != Scan::Complete {
            return Some(Span::ANY);
        }
        let span = self.spans.get(&ip.salt_id)?;
        if span.first > to || span.last < from {
            return None;
        }
        let chain = self.visits.get(&ip.salt_id)?;
        chain.contains(&ip.hash).then_some(*span)
    }

    /// Whether an event with this user pseudonym may be on file (false: certainly not).
    pub(super) fn may_have_user(&self, user: &Pseudonym) -> bool {
        self.may_have(&self.users, user)
    }

    /// Whether a visit with this IP pseudonym may be on file, at any time (false: certainly
    /// not).
    pub(super) fn may_have_visit(&self, ip: &Pseudonym) -> bool {
        self.may_have(&self.visits, ip)
    }

    fn may_have(&self, chains: &BTreeMap<i64, Chain>, key: &Pseudonym) -> bool {
        self.scan != Scan::Complete
            || chains
                .get(&key.salt_id)
                .is_some_and(|c| c.contains(&key.hash))
    }

    pub(super) fn add_visit(&mut self, ip: &Pseudonym, received_at: i64) {
        self.visits
            .entry(ip.salt_id)
            .or_default()
            .insert(&ip.hash, &mut self.budget);
        let span = self.spans.get(&ip.salt_id).copied();
        self.spans.insert(ip.salt_id, widen(span, received_at));
    }

    pub(super) fn add_user(&mut self, user: &Pseudonym) {
        self.users
            .entry(user.salt_id)
            .or_default()
            .insert(&user.hash, &mut self.budget);
    }

    /// Drops the filters of salts that no longer exist.
    pub(super) fn retain_salts(&mut self, live: &[i64]) {
        self.visits.retain(|salt_id, _| live.contains(salt_id));
        self.spans.retain(|salt_id, _| live.contains(salt_id));
        self.users.retain(|salt_id, _| live.contains(salt_id));
        self.budget.used = self
            .visits
            .values()
            .chain(self.users.values())
            .map(Chain::bytes)
            .sum();
    }

    /// Whether the scan of the records on file at start still has work to do.
    pub(super) fn scanning(&self) -> bool {
        !matches!(self.scan, Scan::Complete | Scan::Abandoned)
    }

    /// Reads the next chunk of the records on file at start. Each chunk is its own short read,
    /// following the index order from where the last one ended, so rows the writer adds or
    /// deletes meanwhile do no harm: it adds its own rows to the filters as it writes them.
    pub(super) fn scan_step(&mut self, conn: &Connection) {
        let step = match std::mem::take(&mut self.scan) {
            Scan::Visits(after) => self.scan_visits(conn, after),
            Scan::Users(after) => self.scan_users(conn, after),
            done => Ok(done),
        };
        self.scan = step.unwrap_or_else(|err| {
            tracing::warn!(
                error = %err,
                "reading the pseudonyms on file failed; linking looks under every live salt instead (slower, same results)"
            );
            Scan::Abandoned
        });
    }

    fn scan_visits(&mut self, conn: &Connection, after: Vec<u8>) -> rusqlite::Result<Scan> {
        let last = scan_chunk(
            conn,
            "SELECT ip_hash, ip_salt_id, received_at FROM visit_addresses \
             WHERE ip_hash > ?1 ORDER BY ip_hash LIMIT ?2",
            &after,
            |ip, received_at| self.add_visit(&ip, received_at),
        )?;
        Ok(match last {
            Some(last) => Scan::Visits(last),
            None => Scan::Users(Vec::new()),
        })
    }

    fn scan_users(&mut self, conn: &Connection, after: Vec<u8>) -> rusqlite::Result<Scan> {
        let last = scan_chunk(
            conn,
            "SELECT user_hash, user_salt_id, 0 FROM measure_logs INDEXED BY measure_logs_user \
             WHERE user_hash > ?1 ORDER BY user_hash LIMIT ?2",
            &after,
            |user, _| self.add_user(&user),
        )?;
        Ok(match last {
            Some(last) => Scan::Users(last),
            None => Scan::Complete,
        })
    }
}

/// Hands up to `SCAN_CHUNK` (pseudonym, time) rows after `after` to `add`; returns the last
/// hash read, or `None` when there were no more. Rows sharing the last hash are the same
/// pseudonym, so skipping them in the next chunk loses nothing.
fn scan_chunk(
    conn: &Connection,
    sql: &str,
    after: &[u8],
    mut add: impl FnMut(Pseudonym, i64),
) -> rusqlite::Result<Option<Vec<u8>>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params![after, SCAN_CHUNK])?;
    let mut last = None;
    while let Some(row) = rows.next()? {
        let hash: Vec<u8> = row.get(0)?;
        if let Ok(key) = <[u8; 16]>::try_from(hash.as_slice()) {
            let pseudonym = Pseudonym {
                salt_id: row.get(1)?,
                hash: key,
            };
            add(pseudonym, row.get(2)?);
        }
        last = Some(hash);
    }
    Ok(last)
}

fn dropped_warning(limit: usize) {
    tracing::warn!(
        limit_mib = limit >> 20,
        "the filters of the pseudonyms on file reached their share of storage.cache_mib: one \
         salt's filter was dropped, and linking reads the database for its pseudonyms (slower, same \
         results); raise storage.cache_mib"
    );
}

/// Filters of growing size: a filter cannot grow, so a full one is followed by a larger one.
/// A chain whose filters were dropped holds none and answers "maybe" for every key.
#[derive(Default)]
struct Chain {
    filters: Vec<Bloom>,
    dropped: bool,
}

impl Chain {
    /// Adds `key`. Should the filter it needs pass the budget, the chain drops its filters
    /// instead and has none from now on.
    fn insert(&mut self, key: &[u8; 16], budget: &mut Budget) {
        if self.contains(key) {
            return;
        }
        let capacity = match self.filters.last() {
            Some(last) if last.keys < last.capacity => None,
            Some(last) => Some((last.capacity * GROWTH).min(LARGEST_CAPACITY)),
            None => Some(FIRST_CAPACITY),
        };
        if let Some(capacity) = capacity {
            let bytes = Bloom::bytes_for(capacity);
            if budget.used.saturating_add(bytes) > budget.limit {
                budget.used -= self.bytes();
                self.filters = Vec::new();
                self.dropped = true;
                dropped_warning(budget.limit);
                return;
            }
            budget.used += bytes;
            self.filters.push(Bloom::with_capacity(capacity));
        }
        if let Some(last) = self.filters.last_mut() {
            last.insert(key);
        }
    }

    fn contains(&self, key: &[u8; 16]) -> bool {
        // The newest filter holds most keys.
        self.dropped || self.filters.iter().rev().any(|filter| filter.contains(key))
    }

    fn bytes(&self) -> usize {
        self.filters.iter().map(|filter| filter.bytes()).sum()
    }
}

type Block = [u32; 8];
type Segment = [Block; SEGMENT_BLOCKS];

/// A split-block Bloom filter. Its keys are keyed BLAKE3 digests, uniformly random already,
/// so their own bits choose a 256-bit block and one bit in each of its eight words: a lookup
/// reads one cache line and hashes nothing.
struct Bloom {
    segments: Vec<Box<Segment>>,
    keys: usize,
    capacity: usize,
}

impl Bloom {
    const fn segments_for(capacity: usize) -> usize {
        let blocks = (capacity * BITS_PER_KEY).div_ceil(256);
        let segments = blocks.div_ceil(SEGMENT_BLOCKS);
        if segments == 0 { 1 } else { segments }
    }

    const fn bytes_for(capacity: usize) -> usize {
        Bloom::segments_for(capacity) * std::mem::size_of::<Segment>()
    }

    fn with_capacity(capacity: usize) -> Bloom {
        let segments = (0..Bloom::segments_for(capacity))
            .map(|_| Box::new([[0; 8]; SEGMENT_BLOCKS]))
            .collect();
        Bloom {
            segments,
            keys: 0,
            capacity,
        }
    }

    fn bytes(&self) -> usize {
        self.segments.len() * std::mem::size_of::<Segment>()
    }

    /// The block a key falls in and the bit it sets in each of the block's words.
    fn locate(&self, key: &[u8; 16]) -> ((usize, usize), [u32; 8]) {
        let bits = u128::from_le_bytes(*key);
        let high = (bits >> 96) as u64;
        let blocks = (self.segments.len() * SEGMENT_BLOCKS) as u64;
        // Multiply-shift maps 32 random bits onto 0..blocks without a division.
        let block = ((high * blocks) >> 32) as usize;
        let mut masks = [0u32; 8];
        for (word, mask) in masks.iter_mut().enumerate() {
            *mask = 1 << ((bits >> (5 * word)) & 31);
        }
        ((block / SEGMENT_BLOCKS, block % SEGMENT_BLOCKS), masks)
    }

    fn insert(&mut self, key: &[u8; 16]) {
        let ((segment, block), masks) = self.locate(key);
        for (word, mask) in self.segments[segment][block].iter_mut().zip(masks) {
            *word |= mask;
        }
        self.keys += 1;
    }

    fn contains(&self, key: &[u8; 16]) -> bool {
        let ((segment, block), masks) = self.locate(key);
        self.segments[segment][block]
            .iter()
            .zip(masks)
            .all(|(word, mask)| word & mask != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distinct, uniformly spread keys, as the keyed hashes are.
    fn key(n: u64) -> [u8; 16] {
        let mut key = [0u8; 16];
        key.copy_from_slice(&blake3::hash(&n.to_le_bytes()).as_bytes()[..16]);
        key
    }

    fn pseudonym(salt_id: i64, n: u64) -> Pseudonym {
        Pseudonym {
            salt_id,
            hash: key(n),
        }
    }

    #[test]
    fn every_added_key_is_found_and_few_absent_ones_pass() {
        let mut chain = Chain::default();
        let mut budget = Budget::default();
        // Past the first filter's capacity, so lookups go through two filters.
        let added = 3 * FIRST_CAPACITY as u64;
        for n in 0..added {
            chain.insert(&key(n), &mut budget);
        }
        assert_eq!(chain.filters.len(), 2);
        assert!((0..added).all(|n| chain.contains(&key(n))));
        let probes = 200_000;
        let passed = (added..added + probes)
            .filter(|&n| chain.contains(&key(n)))
            .count();
        // Two filters at or below capacity: about 0.1% each.
        assert!(
            (passed as f64) < 0.004 * probes as f64,
            "{passed} of {probes} absent keys passed"
        );
    }

    #[test]
    fn a_key_added_twice_counts_once() {
        let mut chain = Chain::default();
        let mut budget = Budget::default();
        for _ in 0..2 * FIRST_CAPACITY {
            chain.insert(&key(7), &mut budget);
        }
        assert_eq!(chain.filters.len(), 1);
        assert_eq!(chain.filters[0].keys, 1);
    }

    #[test]
    fn filters_stop_growing_at_the_largest_size_and_their_bytes_are_counted() {
        let mut on_file = OnFile::default();
        // A few keys more than the first four filters hold (a key that seems present already,
        // about 1 in 1,000, is not added).
        let keys = (FIRST_CAPACITY + 4 * FIRST_CAPACITY + 2 * LARGEST_CAPACITY + 5_000) as u64;
        for n in 0..keys {
            on_file.add_visit(&pseudonym(1, n), 0);
        }
        let chain = &on_file.visits[&1];
        let capacities: Vec<usize> = chain.filters.iter().map(|f| f.capacity).collect();
        assert_eq!(
            capacities,
            [
                FIRST_CAPACITY,
                4 * FIRST_CAPACITY,
                LARGEST_CAPACITY,
                LARGEST_CAPACITY,
                LARGEST_CAPACITY
            ]
        );
        // 16 bits a key, in 4 KiB allocations.
        assert_eq!(on_file.bytes(), capacities.iter().sum::<usize>() * 2);
        assert_eq!(LARGEST_FILTER_BYTES, 1 << 20);
        on_file.retain_salts(&[2]);
        assert_eq!(on_file.bytes(), 0);
    }

    #[test]
    fn a_filter_past_the_limit_is_dropped_and_its_salt_answers_maybe() {
        // Room for the first filters of two salts, not for the second filter of either.
        let first = Bloom::bytes_for(FIRST_CAPACITY);
        let mut on_file = OnFile::with_limit(3 * first);
        on_file.scan = Scan::Complete;
        for n in 0..FIRST_CAPACITY as u64 {
            on_file.add_visit(&pseudonym(1, n), 0);
        }
        on_file.add_user(&pseudonym(1, 0));
        assert_eq!(on_file.bytes(), 2 * first);
        let absent = pseudonym(1, u64::MAX);
        assert_eq!(on_file.visit_span(&absent, 0, 0), None);
        // Once the salt's visit filter is full, the next one would pass the limit.
        let more = FIRST_CAPACITY as u64..2 * FIRST_CAPACITY as u64;
        let dropped_at = more.into_iter().find(|&n| {
            on_file.add_visit(&pseudonym(1, n), 0);
            on_file.visits[&1].dropped
        });
        assert!(dropped_at.is_some_and(|n| n < FIRST_CAPACITY as u64 + 1_000));
        assert_eq!(on_file.bytes(), first);
        assert_eq!(
            on_file.visit_span(&absent, 0, 0),
            Some(Span { first: 0, last: 0 })
        );
        // The other kind keeps its filter.
        assert!(!on_file.may_have_user(&pseudonym(1, 1)));
        assert!(on_file.may_have_user(&pseudonym(1, 0)));
    }

    /// The address of visit `n`: every tenth visitor came twice, so equal hashes may straddle
    /// the end of a chunk.
    fn visitor(n: u64) -> Pseudonym {
        let k = if n % 10 == 1 { n - 1 } else { n };
        pseudonym(1 + (k % 3) as i64, k)
    }

    /// A migrated database holding `visits` visits (with their address entries) and `users`
    /// events, some sharing pseudonyms.
    fn store_with(visits: u64, users: u64) -> Connection {
        let mut conn = crate::store::migrated_in_memory();
        let tx = conn.transaction().expect("tx");
        for n in 0..visits {
            let ip = visitor(n);
            tx.execute(
                "INSERT INTO collect_logs (received_at, ip_hash, ip_salt_id, page_host, page_path, \
                 device, os, browser, consent) VALUES (?3, ?1, ?2, 'h', '/', 'pc', 'o', 'b', 0)",
                rusqlite::params![&ip.hash[..], ip.salt_id, n as i64],
            )
            .expect("visit");
            tx.execute(
                "INSERT INTO visit_addresses (ip_hash, ip_salt_id, received_at, visit_id) \
                 VALUES (?1, ?2, ?3, last_insert_rowid())",
                rusqlite::params![&ip.hash[..], ip.salt_id, n as i64],
            )
            .expect("address");
        }
        for n in 0..users {
            let user = pseudonym(1 + (n % 2) as i64, 1_000_000 + n);
            tx.execute(
                "INSERT INTO measure_logs (received_at, event_time, game, event, user_hash, \
                 user_salt_id, ip_hash, ip_salt_id) VALUES (0, 0, 'g', 'e', ?1, ?2, ?1, ?2)",
                rusqlite::params![&user.hash[..], user.salt_id],
            )
            .expect("event");
        }
        tx.commit().expect("commit");
        conn
    }

    #[test]
    fn the_scan_finds_every_record_on_file_across_chunks() {
        let visits = 2 * SCAN_CHUNK as u64 + 7;
        let conn = store_with(visits, 1000);
        let mut on_file = OnFile::default();
        let mut steps = 0;
        while on_file.scanning() {
            on_file.scan_step(&conn);
            steps += 1;
        }
        assert_eq!(on_file.scan, Scan::Complete);
        // Three chunks of visits, the empty read that ends them, one of users and its end.
        assert_eq!(steps, 6);
        for n in 0..visits {
            assert!(
                on_file
                    .visit_span(&visitor(n), i64::MIN, i64::MAX)
                    .is_some(),
                "visit {n} not found"
            );
        }
        // Salt 1 keys the visitors k with k % 3 == 0: visits 0 to 40,005 (whose visitor is 40,005).
        assert_eq!(
            on_file.visit_span(&visitor(0), 0, 0),
            Some(Span {
                first: 0,
                last: 40_005
            })
        );
        for n in 0..1000 {
            assert!(on_file.may_have_user(&pseudonym(1 + (n % 2) as i64, 1_000_000 + n)));
            // The same hash under another salt is another pseudonym.
            assert!(!on_file.may_have_user(&pseudonym(3, 1_000_000 + n)));
        }
    }

    #[test]
    fn a_failed_scan_leaves_every_pseudonym_possibly_on_file() {
        let conn = Connection::open_in_memory().expect("memory database");
        let mut on_file = OnFile::default();
        on_file.scan_step(&conn);
        assert_eq!(on_file.scan, Scan::Abandoned);
        assert!(!on_file.scanning());
        assert_eq!(on_file.visit_span(&pseudonym(1, 1), 0, 0), Some(Span::ANY));
        assert!(on_file.may_have_user(&pseudonym(1, 1)));
    }

    #[test]
    fn everything_may_be_on_file_until_the_scan_is_complete() {
        let mut on_file = OnFile::default();
        let (ip, user) = (pseudonym(1, 1), pseudonym(1, 2));
        let any_time = |ip| on_file.visit_span(ip, i64::MIN, i64::MAX);
        assert_eq!(any_time(&ip), Some(Span::ANY));
        assert!(on_file.may_have_user(&user));
        on_file.scan = Scan::Complete;
        assert_eq!(on_file.visit_span(&ip, i64::MIN, i64::MAX), None);
        assert!(!on_file.may_have_user(&user));
        on_file.add_visit(&ip, 500);
        on_file.add_visit(&pseudonym(1, 3), 200);
        on_file.add_user(&user);
        let span = Span {
            first: 200,
            last: 500,
        };
        assert_eq!(on_file.visit_span(&ip, 0, 200), Some(span));
        assert_eq!(on_file.visit_span(&ip, 500, 900), Some(span));
        // No visit under the salt in the window: the filter is not even asked.
        assert_eq!(on_file.visit_span(&ip, 0, 199), None);
        assert_eq!(on_file.visit_span(&ip, 501, 900), None);
        assert!(on_file.may_have_user(&user));
        // Kinds and salts are kept apart.
        assert!(!on_file.may_have_user(&ip));
        assert_eq!(on_file.visit_span(&pseudonym(2, 1), 0, 900), None);
        on_file.retain_salts(&[2]);
        assert_eq!(on_file.visit_span(&ip, 0, 900), None);
        assert!(!on_file.may_have_user(&user));
    }
}
