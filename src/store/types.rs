//! Store: the types the store's parts share (its error, the records it is handed, the
//! reports it answers with), below them all, so a part imports them without importing the
//! store that calls it.

use std::path::PathBuf;

use rusqlite::Connection;

use crate::campaign::Campaign;
use crate::privacy::geo::Country;
use crate::privacy::{BlockHash, EventKey, Pseudonym, ua::Device};
use crate::rows::SubjectEvent;

/// How long a health probe's result stands for the next callers of [`Store::probe`].
pub(crate) const PROBE_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes waiting for the writer beyond this answer 503 at once instead of queueing.
pub(crate) const QUEUE_CAPACITY: usize = 8192;

/// One store boundary error; the HTTP layer maps it to a status once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Key(String),
    #[error(
        "cannot open {path}: the database key is wrong or the file is not a tracks-collector \
         database (it was left untouched)"
    )]
    WrongKey { path: PathBuf },
    #[error("cannot open {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error(
        "the database is in use (is the daemon running?); stop it first: rekeying needs the \
         only connection"
    )]
    InUse,
    /// Another process owns the store (see [`FolderLock`]).
    #[error("the data folder {} is in use by another tracks-collector process", folder.display())]
    Locked { folder: PathBuf },
    #[error("the disk is full")]
    DiskFull,
    #[error("the write queue is full")]
    QueueFull,
    #[error("the writer did not commit within {0:?}")]
    Slow(std::time::Duration),
    /// Refused without being run, so not stored: a sync of the WAL failed, and no write is
    /// taken until a probe write and its sync succeed.
    #[error("writes are refused until one reaches the disk again ({0})")]
    Unwritable(String),
    #[error("the store's writer has stopped")]
    Closed,
    /// Committed, but the sync that makes it durable failed (or an earlier one did and the
    /// store has not recovered): the write may or may not be on disk.
    #[error(
        "syncing the write-ahead log to disk failed ({0}); the write may or may not be on disk"
    )]
    NotDurable(String),
    #[error("database error: {0}")]
    Sqlite(String),
    /// A record on file that the code cannot read back.
    #[error("the database holds an unreadable record: {0}")]
    Corrupt(String),
    /// A write the store refuses before touching the file; a bug in its caller.
    #[error("refused an invalid write: {0}")]
    Invalid(&'static str),
    /// No key could be made: the block list's, at the first open.
    #[error("the OS random source failed: {0}")]
    Random(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::DiskFull,
            _ => StoreError::Sqlite(err.to_string()),
        }
    }
}

/// A pseudonymised visit, ready to store.
#[derive(Debug, Clone)]
pub struct NewVisit {
    pub received_at: i64,
    pub game: Option<String>,
    pub ip: Pseudonym,
    pub page_host: String,
    pub page_path: String,
    pub campaign: Campaign,
    /// JSON object of ad click ids; `None` without consent.
    pub click_ids: Option<String>,
    pub referrer_host: Option<String>,
    pub device: Device,
    pub consent: bool,
    pub link: Option<String>,
    /// A page view's random id, hashed: a second report of the same view updates its
    /// consent flag.
    pub view: Option<ViewKey>,
    /// The visitor's country, resolved from the address at ingest (`privacy.geoip_db`).
    pub country: Option<Country>,
}

/// A page view's id as the store keeps it: a hash of the id the page sent, 16 bytes whatever
/// its length, so the raw id never reaches the file and the writer holds it in a fixed size
/// (store/deferred.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ViewKey(pub [u8; 16]);

impl ViewKey {
    pub fn of(view_id: &str) -> ViewKey {
        let hash = blake3::derive_key("tracks-collector 2026 page view", view_id.as_bytes());
        let mut key = [0; 16];
        key.copy_from_slice(&hash[..16]);
        ViewKey(key)
    }
}

/// A pseudonymised game event, ready to store.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub received_at: i64,
    pub event_time: i64,
    pub game: String,
    pub event: String,
    /// The user's pseudonym under every live salt, newest salt first. The writer keeps the
    /// oldest one already on file (so a user keeps one pseudonym in the window), else the first.
    pub user: Vec<Pseudonym>,
    /// The IP pseudonym under every live salt, newest first; the first is stored.
    pub ip: Vec<Pseudonym>,
    pub platform: Option<String>,
    pub storefront: Option<String>,
    /// The player's entry in the block list: the writer drops the event if it is there.
    pub block: BlockHash,
    /// The keyed hash of the sender's `event_id`: an event whose key is on file is a retry,
    /// answered as accepted and not stored again.
    pub event_key: Option<EventKey>,
    /// The player's own country, from the event's address (not the visit's), resolved at
    /// ingest.
    pub country: Option<Country>,
}

/// What a batch of events came to: each one was stored, or dropped as a blocked player's or
/// as a retry of an event on file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventsWritten {
    pub stored: usize,
    pub blocked: usize,
    pub duplicates: usize,
}

impl EventsWritten {
    /// What the client is told was accepted: every event, stored or dropped, so that a
    /// forgotten player's build sees no difference, and a retry is done.
    pub fn accepted(&self) -> usize {
        self.stored + self.blocked + self.duplicates
    }
}

/// What a visit write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitWrite {
    Inserted,
    /// A later report of an already stored page view: its consent flag was updated.
    ConsentUpdated,
}

/// What a purge deleted (or, dry, would delete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PurgeReport {
    pub visits: i64,
    pub events: i64,
    pub salts: i64,
    pub cells: i64,
}

/// What a forget request deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForgetReport {
    pub measure: i64,
    pub collect: i64,
}

/// What is held about one player of one game (a data request): their events, oldest first,
/// each with the campaign it was attributed to, and whether they are blocked. Never an address
/// or a pseudonym (invariants 1 and 9).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubjectReport {
    pub game: String,
    pub blocked: bool,
    pub events: Vec<SubjectEvent>,
}

/// Row counts and sizes for `tracks-collector stats` and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub visits: i64,
    pub events: i64,
    pub salts: i64,
    pub oldest_record: Option<i64>,
    pub newest_record: Option<i64>,
    pub current_salt_created_at: Option<i64>,
    pub database_bytes: u64,
    pub wal_bytes: u64,
    /// Aggregates documents on their way to the central platform.
    pub outbox: OutboxStats,
}

/// A handle to the store; cheap to clone. Writes go through the writer thread.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    ReadWrite,
    ReadOnly,
}

/// The open transaction, once nothing the writer holds in memory is about the records a
/// deletion may take: the counts are written, the entries held back are written or dropped,
/// and the cell ids known so far are forgotten. Functions that delete or renumber records,
/// visitor lists or cells take one: a deletion cannot be written without settling first, and
/// nothing held back can be written after it about a record that is gone.
pub(super) struct Settled<'c> {
    conn: &'c Connection,
}

impl<'c> Settled<'c> {
    /// Only the settling functions of `ops` call this, once they have settled.
    pub(super) fn after_settling(conn: &'c Connection) -> Settled<'c> {
        Settled { conn }
    }

    pub(super) fn conn(&self) -> &'c Connection {
        self.conn
    }
}

/// How delivery stands, for `stats` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxStats {
    /// Documents waiting for a 2xx.
    pub pending: i64,
    /// Documents the platform refused for good (a 4xx); kept until their day expires.
    pub rejected: i64,
    pub oldest_pending_at: Option<i64>,
    pub last_success_at: Option<i64>,
    /// Why the oldest pending document's last attempt failed.
    pub last_error: Option<String>,
}
