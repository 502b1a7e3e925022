//! Store: the encrypted SQLCipher database. All SQL of the crate lives under this module.
//!
//! One writer thread owns the write connection and commits in groups: handlers queue a write
//! on a bounded channel and wait for the commit of the group it landed in, so a 2xx always
//! means "on disk" while one fsync serves many requests. Readers open their own connections.

mod blocks;
mod cells;
mod columns;
mod deferred;
mod events;
mod flush;
mod health;
pub(crate) mod key;
mod ledger;
mod lock;
mod migrate;
mod on_file;
mod ops;
mod outbox;
pub mod page_cache;
mod read;
mod retention;
mod returns;
mod sqlite;
mod types;
mod visits;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) use key::KeyOrigin;
pub use key::{DbKey, KeySources};
pub(crate) use ledger::{Departure, Kind, LedgerRow, Signed, verify as verify_ledger};
pub(crate) use lock::{FolderLock, folder_of};
pub(crate) use outbox::{Delivery, NewDocument, OutboxEntry};
pub use read::Reader;
pub use sqlite::start_sqlite;
use sqlite::{create_private_file, file_sizes, open_connection, sync_parent_dir, wal_path};
pub(crate) use types::Access;
pub(crate) use types::SubjectReport;
pub use types::{
    EventsWritten, ForgetReport, NewVisit, PurgeReport, StoreError, ViewKey, VisitWrite,
};
pub(crate) use types::{NewEvent, OutboxStats, PROBE_REUSE, QUEUE_CAPACITY, Stats};

use crate::identity::Identity;
use crate::link::LinkRules;
use crate::privacy::{BlockHash, BlockKey, Pseudonym, Salt};
use ops::{Job, Write};

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    key: DbKey,
    /// Read once at open: ingest hashes every event's user id under it.
    block_key: BlockKey,
    queue: std::sync::mpsc::SyncSender<writer::Job>,
    /// How the last writes ended: the metrics' `tracks_store_writable`.
    health: Arc<health::Health>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held from open until the writer has stopped.
    lock: std::sync::Mutex<Option<FolderLock>>,
    /// When the last probe of [`Store::probe`] ended, and how.
    last_probe: tokio::sync::Mutex<Option<(std::time::Instant, Result<(), StoreError>)>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed, with mode 0600) the database, migrates it and starts the
    /// writer thread. A wrong key fails before anything is written.
    ///
    /// `cache_mib` bounds what the writer keeps of the store in memory: its page cache (every
    /// page it must read back from the file costs an HMAC check and a decryption, and linking
    /// reads pages all over the indexes) and the filters of the pseudonyms on file.
    pub fn open(
        path: &Path,
        key: DbKey,
        rules: LinkRules,
        cache_mib: u32,
    ) -> Result<Store, StoreError> {
        Store::open_locked(FolderLock::take(path)?, path, key, rules, cache_mib)
    }

    /// [`Store::open`] with the folder's lock already taken (the daemon takes it before it
    /// binds its port, so a second daemon is told who runs, not that the port is busy).
    pub fn open_locked(
        lock: FolderLock,
        path: &Path,
        key: DbKey,
        rules: LinkRules,
        cache_mib: u32,
    ) -> Result<Store, StoreError> {
        create_private_file(path)?;
        let mut conn = open_connection(path, &key, Access::ReadWrite)?;
        migrate::migrate(&mut conn).map_err(|err| StoreError::Open {
            path: path.to_path_buf(),
            message: format!("migration failed: {err}"),
        })?;
        // Made before the first write that could need it: a block's commit is synced after the
        // key's, in the same WAL, so once a block is on disk its key is too.
        let block_key = blocks::ensure_key(&conn)?;
        // Checkpoints move to a connection of their own: they wait on the disk, and the writer
        // should spend that time writing.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")?;
        let checkpointer = open_connection(path, &key, Access::ReadWrite)?;
        // A restarting checkpoint holds the writer while it waits for readers (a long
        // aggregates query): it gives up after a second and the next one tries again.
        checkpointer.execute_batch("PRAGMA busy_timeout = 1000;")?;
        sync_parent_dir(path);
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let health = Arc::new(health::Health::default());
        let wal = wal_path(path);
        let cache_bytes = usize::try_from(cache_mib).unwrap_or(usize::MAX) << 20;
        let writer = writer::spawn(
            conn,
            checkpointer,
            jobs,
            health.clone(),
            rules,
            wal,
            cache_bytes,
        );
        let writer = writer.map_err(|err| StoreError::Open {
            path: path.to_path_buf(),
            message: format!("cannot start the writer thread: {err}"),
        })?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                key,
                block_key,
                queue,
                health,
                writer: std::sync::Mutex::new(Some(writer)),
                lock: std::sync::Mutex::new(Some(lock)),
                last_probe: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The key of the block list's hashes.
    pub fn block_key(&self) -> &BlockKey {
        &self.inner.block_key
    }

    pub async fn insert_visit(&self, visit: Box<NewVisit>) -> Result<VisitWrite, StoreError> {
        self.submit(visits::InsertVisit(visit)).await
    }

    /// Stores a batch all-or-nothing, except the events of blocked players, which are dropped.
    pub async fn insert_events(&self, events: Vec<NewEvent>) -> Result<EventsWritten, StoreError> {
        self.submit(events::InsertEvents(events)).await
    }

    /// Stores a new salt and returns it with its row id.
    pub async fn insert_salt(&self, created_at: i64, key: [u8; 32]) -> Result<Salt, StoreError> {
        let id = self.submit(InsertSalt { created_at, key }).await?;
        Ok(Salt {
            id,
            created_at,
            key,
        })
    }

    /// Deletes what is older than `cutoff` (unix seconds): visits, events, roll-up cells of
    /// earlier days, and salts retired before it together with every row they keyed; clears
    /// the page-view ids of visits more than an hour before `now`. Freed pages are zeroed
    /// (secure_delete), released, and the WAL is truncated.
    pub async fn purge(&self, cutoff: i64, now: i64) -> Result<PurgeReport, StoreError> {
        self.submit(retention::Purge { cutoff, now }).await
    }

    /// Deletes one player's events (found under any of `users`, their pseudonyms under every
    /// live salt) and the visits linked to them, and blocks the player (`block`) in the same
    /// transaction; logs only the time and the counts.
    pub async fn forget(
        &self,
        game: &str,
        users: Vec<Pseudonym>,
        block: BlockHash,
        now: i64,
    ) -> Result<ForgetReport, StoreError> {
        let game = game.to_string();
        self.submit(retention::Forget {
            game,
            users,
            block,
            now,
        })
        .await
    }

    /// Lifts a player's block; answers whether they were blocked.
    pub async fn unforget(&self, block: BlockHash) -> Result<bool, StoreError> {
        self.submit(blocks::Unblock(block)).await
    }

    /// Queues aggregates documents for the central platform (see [`NewDocument`]), each
    /// signed by `identity` and recorded in the ledger as a push to `destination`.
    pub async fn enqueue_documents(
        &self,
        documents: Vec<NewDocument>,
        now: i64,
        identity: Arc<Identity>,
        destination: String,
        keep: bool,
    ) -> Result<(), StoreError> {
        self.submit(outbox::Enqueue {
            documents,
            now,
            identity,
            destination,
            keep,
        })
        .await
    }

    /// Signs a document about to leave and records it in the ledger; answers once the row is
    /// on disk, so nothing leaves unrecorded.
    pub async fn record_departure(
        &self,
        departure: Departure,
        identity: Arc<Identity>,
        now: i64,
    ) -> Result<Signed, StoreError> {
        self.submit(ledger::Record {
            departure,
            identity,
            now,
        })
        .await
    }

    /// Records that the identity changes from `old` to `new`, signed by both.
    pub async fn record_rotation(
        &self,
        old: Arc<Identity>,
        new: Arc<Identity>,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.submit(ledger::Rotate { old, new, now }).await
    }

    /// Replaces the ledger rows older than `before` by one anchor row signed by `identity`;
    /// answers how many rows went.
    pub async fn prune_ledger(
        &self,
        before: i64,
        identity: Arc<Identity>,
    ) -> Result<u64, StoreError> {
        self.submit(ledger::Prune { before, identity }).await
    }

    /// Records how an attempt to deliver outbox entry `id` went.
    pub async fn record_delivery(&self, id: i64, delivery: Delivery) -> Result<(), StoreError> {
        self.submit(outbox::RecordDelivery { id, delivery }).await
    }

    /// Writes the probe row and waits for it to reach the disk: proves that the writer is
    /// alive and that writes are acknowledged; else says why not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.submit(ops::Ping).await
    }

    /// [`Store::ping`] at most once per [`PROBE_REUSE`]: the callers in between, and those
    /// that waited for a probe under way, get its result, but for a success after which a
    /// write failed. A flood of health checks costs one
    /// write and one fsync a second, not one each. A failed probe's error is logged here, once.
    pub async fn probe(&self, timeout: std::time::Duration) -> Result<(), StoreError> {
        let mut last = self.inner.last_probe.lock().await;
        // A success stands only while no write has failed since: a failure shows at once.
        if let Some((at, result)) = &*last
            && at.elapsed() < PROBE_REUSE
            && (result.is_err() || self.is_writable())
        {
            return result.clone();
        }
        let result = match tokio::time::timeout(timeout, self.ping()).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Slow(timeout)),
        };
        if let Err(err) = &result {
            tracing::warn!(error = %err, "the health probe failed: the store takes no writes");
        }
        *last = Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// Whether the last write reached the disk (without writing; see [`Store::ping`]).
    pub fn is_writable(&self) -> bool {
        !self.inner.health.poisoned() && self.inner.health.failure().is_none()
    }

    async fn submit<W: Write>(&self, write: W) -> Result<W::Output, StoreError> {
        let (job, answer) = Job::new(write);
        self.inner
            .queue
            .try_send(Box::new(job))
            .map_err(|err| match err {
                std::sync::mpsc::TrySendError::Full(_) => StoreError::QueueFull,
                std::sync::mpsc::TrySendError::Disconnected(_) => StoreError::Closed,
            })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Every salt on file, for the in-memory ring.
    pub fn load_salts(&self) -> Result<Vec<Salt>, StoreError> {
        self.reader()?.salts()
    }

    pub fn stats(&self) -> Result<Stats, StoreError> {
        self.reader()?.stats()
    }

    /// Recomputes the roll-up cells of the UTC days `first..=last` from the raw logs, in one
    /// write.
    pub async fn rebuild_cells(
        &self,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    ) -> Result<(), StoreError> {
        self.submit(ops::RebuildCells { first, last }).await
    }

    /// The sizes of the database file and its WAL, in bytes.
    pub fn file_sizes(&self) -> (u64, u64) {
        file_sizes(&self.inner.path)
    }

    /// A fresh read connection; WAL lets it read while the writer writes.
    pub fn reader(&self) -> Result<Reader, StoreError> {
        Reader::open(&self.inner.path, &self.inner.key)
    }

    /// Stops taking writes, commits what is queued and joins the writer thread.
    pub fn close(&self) {
        self.inner.stop(false);
    }

    /// Stops as `kill -9` would right after the last commit reached the disk: what the writer
    /// holds in memory is lost, and the WAL is left for the next open to recover. For tests
    /// of what a crash at a group boundary leaves behind.
    #[doc(hidden)]
    pub fn crash(&self) {
        self.inner.stop(true);
    }
}

impl Inner {
    fn close(&self) {
        self.stop(false);
    }

    fn stop(&self, crash: bool) {
        // A shutdown job is queued behind every pending write; blocking here is fine since
        // close runs once, at exit.
        let (job, _answer) = Job::new(ops::Shutdown { crash });
        let _ = self.queue.send(Box::new(job));
        let handle = self.writer.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
        // The writer and its connections are gone: another process may own the store now.
        drop(self.lock.lock().ok().and_then(|mut slot| slot.take()));
    }
}

/// The last handle dropped without `close` closes too: a process must not exit while the
/// writer is inside SQLCipher (OpenSSL's exit handlers pull its state from under it).
impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// Stores a new salt; answers its row id.
struct InsertSalt {
    created_at: i64,
    key: [u8; 32],
}

impl Write for InsertSalt {
    type Output = i64;

    fn apply(&self, writing: &mut ops::Writing<'_>) -> Result<i64, StoreError> {
        let conn = writing.conn;
        conn.prepare_cached("INSERT INTO salts (created_at, salt) VALUES (?1, ?2)")?
            .execute(rusqlite::params![self.created_at, &self.key[..]])?;
        Ok(conn.last_insert_rowid())
    }
}

/// Re-encrypts the database in place with `new` (SQLCipher's rekey, page by page through the
/// rollback journal: no plaintext copy is written), then proves the new key opens it and the
/// old one no longer does. The daemon must be stopped.
pub(crate) fn rekey(path: &Path, old: &DbKey, new: &DbKey) -> Result<(), StoreError> {
    let _owned = FolderLock::take(path)?;
    {
        let conn = open_connection(path, old, Access::ReadWrite)?;
        // Rekeying is not supported in WAL mode; leaving it needs the only connection.
        conn.execute_batch("PRAGMA busy_timeout = 0;")?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |row| row.get(0))
            .map_err(|_| StoreError::InUse)?;
        if !mode.eq_ignore_ascii_case("delete") {
            return Err(StoreError::InUse);
        }
        // Outside WAL mode the rollback journal guards every rewritten page, and only at FULL.
        conn.execute_batch("PRAGMA synchronous = FULL;")?;
        conn.execute_batch(&new.rekey_pragma())?;
        conn.query_row("PRAGMA journal_mode = WAL", [], |row| {
            row.get::<_, String>(0)
        })?;
    }
    open_connection(path, new, Access::ReadOnly)?;
    match open_connection(path, old, Access::ReadOnly) {
        Err(StoreError::WrongKey { .. }) => Ok(()),
        Err(other) => Err(other),
        Ok(_) => Err(StoreError::Key(
            "the old key still opens the database after rekeying".into(),
        )),
    }
}

/// A database in memory with every migration applied: for the store's unit tests.
#[cfg(test)]
pub(super) fn migrated_in_memory() -> rusqlite::Connection {
    let mut conn = rusqlite::Connection::open_in_memory().expect("memory database");
    migrate::migrate(&mut conn).expect("migrations");
    conn
}

/// The lines of `EXPLAIN QUERY PLAN` for `sql` with `params`, joined by "; ": for the tests
/// that keep a statement on its index.
#[cfg(test)]
pub(super) fn query_plan(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> String {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan");
    let lines: Vec<String> = stmt
        .query_map(params, |row| row.get(3))
        .and_then(|rows| rows.collect())
        .expect("plan rows");
    lines.join("; ")
}
