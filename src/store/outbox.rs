//! Store: the outbox of aggregates documents for the central platform, and what was last
//! queued for each day. Writes run on the writer thread like every other write.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, params};

use super::ledger::{self, Departure, Kind, Signed};
use super::ops::{Write, Writing};
use super::types::{OutboxStats, StoreError};
use crate::identity::Identity;

/// A rendered document to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    /// The UTC day it covers, `YYYY-MM-DD`.
    pub day: String,
    /// A hash of what the document says (everything but when it was generated): a push
    /// queues a day again only when this changes.
    pub content: [u8; 32],
    pub idempotency_key: String,
    pub body: Vec<u8>,
}

/// A queued document, as the deliverer sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub day: String,
    pub idempotency_key: String,
    pub body: Vec<u8>,
    pub attempts: i64,
    pub next_attempt_at: i64,
    /// Its signature and ledger row, sent as headers; none for a document queued before
    /// documents were signed.
    pub signed: Option<Signed>,
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Acknowledged { at: i64 },
    Retry { next_attempt_at: i64, error: String },
    Rejected { at: i64, error: String },
}

/// Queues documents (see [`enqueue`]), each signed and recorded in the ledger as a push to
/// `destination`.
pub(super) struct Enqueue {
    pub documents: Vec<NewDocument>,
    pub now: i64,
    pub identity: std::sync::Arc<Identity>,
    pub destination: String,
    pub keep: bool,
}

impl Write for Enqueue {
    type Output = ();

    fn apply(&self, writing: &mut Writing<'_>) -> Result<(), StoreError> {
        enqueue(writing.conn, self)
    }
}

/// Records how an attempt to deliver an entry went (see [`record`]).
pub(super) struct RecordDelivery {
    pub id: i64,
    pub delivery: Delivery,
}

impl Write for RecordDelivery {
    type Output = ();

    fn apply(&self, writing: &mut Writing<'_>) -> Result<(), StoreError> {
        record(writing.conn, self.id, &self.delivery)
    }
}

/// Queues `documents`. A pending older document of the same day is dropped: the new one
/// describes the whole day, so an outage costs at most one document per day.
fn enqueue(conn: &Connection, queued: &Enqueue) -> Result<(), StoreError> {
    for document in &queued.documents {
        let signed = ledger::append_document(
            conn,
            &queued.identity,
            &Departure::of(
                Kind::Push,
                queued.destination.clone(),
                (document.day.clone(), document.day.clone()),
                &document.body,
                queued.keep,
            ),
            queued.now,
        )?;
        conn.prepare_cached("DELETE FROM outbox WHERE day = ?1 AND rejected_at IS NULL")?
            .execute(params![document.day])?;
        conn.prepare_cached(
            "INSERT INTO outbox (day, idempotency_key, body, created_at, next_attempt_at, \
             signature, ledger_prev, public_key) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            document.day,
            document.idempotency_key,
            document.body,
            queued.now,
            &signed.signature[..],
            &signed.prev[..],
            &signed.public_key[..],
        ])?;
        conn.prepare_cached(
            "INSERT INTO pushed_days (day, content, queued_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (day) DO UPDATE SET content = excluded.content, queued_at = excluded.queued_at",
        )?
        .execute(params![document.day, &document.content[..], queued.now])?;
    }
    Ok(())
}

/// Records an attempt's outcome. The entry may be gone (a newer document of its day replaced
/// it meanwhile): then there is nothing to record.
fn record(conn: &Connection, id: i64, delivery: &Delivery) -> Result<(), StoreError> {
    match delivery {
        Delivery::Acknowledged { at } => {
            conn.prepare_cached(
                "UPDATE pushed_days SET acked_at = ?2 \
                 WHERE day = (SELECT day FROM outbox WHERE id = ?1)",
            )?
            .execute(params![id, at])?;
            conn.prepare_cached("DELETE FROM outbox WHERE id = ?1")?
                .execute(params![id])?;
        }
        Delivery::Retry {
            next_attempt_at,
            error,
        } => {
            conn.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 \
                 WHERE id = ?1",
            )?
            .execute(params![id, next_attempt_at, error])?;
        }
        Delivery::Rejected { at, error } => {
            conn.prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, rejected_at = ?2, last_error = ?3 \
                 WHERE id = ?1",
            )?
            .execute(params![id, at, error])?;
        }
    }
    Ok(())
}

/// Retention covers the outbox too: documents and marks of days before `day` go.
pub(super) fn purge(conn: &Connection, day: &str) -> Result<i64, StoreError> {
    let documents = conn.execute("DELETE FROM outbox WHERE day < ?1", params![day])?;
    conn.execute("DELETE FROM pushed_days WHERE day < ?1", params![day])?;
    Ok(documents as i64)
}

/// The oldest pending document: delivery keeps the order documents were queued in.
pub(super) fn next(conn: &Connection) -> Result<Option<OutboxEntry>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, day, idempotency_key, body, attempts, next_attempt_at, signature, \
             ledger_prev, public_key FROM outbox \
             WHERE rejected_at IS NULL ORDER BY id LIMIT 1",
            [],
            |row| {
                let signature: Option<Vec<u8>> = row.get(6)?;
                let prev: Option<Vec<u8>> = row.get(7)?;
                let public_key: Option<Vec<u8>> = row.get(8)?;
                let signed = match (signature, prev, public_key) {
                    (Some(signature), Some(prev), Some(public_key)) => Some(Signed {
                        seq: 0,
                        signature: signature.try_into().unwrap_or([0; 64]),
                        prev: prev.try_into().unwrap_or([0; 32]),
                        public_key: public_key.try_into().unwrap_or([0; 32]),
                    }),
                    _ => None,
                };
                Ok(OutboxEntry {
                    id: row.get(0)?,
                    day: row.get(1)?,
                    idempotency_key: row.get(2)?,
                    body: row.get(3)?,
                    attempts: row.get(4)?,
                    next_attempt_at: row.get(5)?,
                    signed,
                })
            },
        )
        .optional()?)
}

/// The content hash last queued for each day.
pub(super) fn queued_contents(conn: &Connection) -> Result<HashMap<String, [u8; 32]>, StoreError> {
    let mut stmt = conn.prepare("SELECT day, content FROM pushed_days")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut contents = HashMap::new();
    for row in rows {
        let (day, content) = row?;
        // A malformed hash only means the day is queued again.
        if let Ok(content) = <[u8; 32]>::try_from(content) {
            contents.insert(day, content);
        }
    }
    Ok(contents)
}

pub(super) fn stats(conn: &Connection) -> Result<OutboxStats, StoreError> {
    let (pending, rejected, oldest_pending_at) = conn.query_row(
        "SELECT count(*) FILTER (WHERE rejected_at IS NULL), \
                count(*) FILTER (WHERE rejected_at IS NOT NULL), \
                min(created_at) FILTER (WHERE rejected_at IS NULL) \
         FROM outbox",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let last_success_at = conn.query_row("SELECT max(acked_at) FROM pushed_days", [], |row| {
        row.get(0)
    })?;
    let last_error = conn
        .query_row(
            "SELECT last_error FROM outbox WHERE rejected_at IS NULL ORDER BY id LIMIT 1",
            [],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten();
    Ok(OutboxStats {
        pending,
        rejected,
        oldest_pending_at,
        last_success_at,
        last_error,
    })
}
