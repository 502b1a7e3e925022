//! Store: the ledger of what left the server, a hash chain of signed rows (DESIGN, Central
//! TRACKS platform). Rows are appended by the writer, so each one's `prev_hash` is the row
//! committed just before it; a pull, a push and an export are each signed there, over the
//! document's hash and that row's.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{Write, Writing};
use super::types::StoreError;
use crate::identity::{self, Identity, PublicKey};

/// The hash before the first row.
pub(super) const GENESIS: [u8; 32] = [0; 32];

/// What a ledger row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A document queued for the central platform's push endpoint.
    Push,
    /// A document answered to `GET /api/v1/aggregates`.
    Pull,
    /// A document the command line wrote with `aggregates --signed`.
    Export,
    /// A node's cells answered to another node of its cluster (`GET /api/v1/cluster/rows`).
    Peer,
    /// The identity changed; both keys signed.
    Rotation,
    /// Stands for the rows pruned before it.
    Anchor,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Push => "push",
            Kind::Pull => "pull",
            Kind::Export => "export",
            Kind::Peer => "peer",
            Kind::Rotation => "rotation",
            Kind::Anchor => "anchor",
        }
    }

    fn parse(text: &str) -> Option<Kind> {
        [
            Kind::Push,
            Kind::Pull,
            Kind::Export,
            Kind::Peer,
            Kind::Rotation,
            Kind::Anchor,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// A document about to leave.
#[derive(Debug, Clone)]
pub struct Departure {
    pub kind: Kind,
    /// The push URL, the name of the token that pulled (never the token), or `command line`.
    pub destination: String,
    pub from: String,
    pub to: String,
    /// The BLAKE3 hash of the document's exact bytes.
    pub hash: [u8; 32],
    pub size: i64,
    /// The bytes themselves, kept in the row with `ledger.keep_documents`.
    pub kept: Option<Vec<u8>>,
}

impl Departure {
    pub fn of(
        kind: Kind,
        destination: String,
        (from, to): (String, String),
        document: &[u8],
        keep: bool,
    ) -> Departure {
        Departure {
            kind,
            destination,
            from,
            to,
            hash: *blake3::hash(document).as_bytes(),
            size: document.len() as i64,
            kept: keep.then(|| document.to_vec()),
        }
    }
}

/// What a signed document carries with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub seq: i64,
    pub signature: [u8; 64],
    /// The hash of the ledger row before this document's.
    pub prev: [u8; 32],
    pub public_key: PublicKey,
}

impl Signed {
    /// How a document carries its signature over HTTP (docs/api.md, "Signed documents"): the
    /// signature, the previous row's hash and the signing key, each hex.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("tracks-signature", hex::encode(self.signature)),
            ("tracks-ledger-prev", hex::encode(self.prev)),
            ("tracks-signing-key", hex::encode(self.public_key)),
        ]
    }
}

/// One row, as `tracks-collector ledger` lists it and `ledger verify` checks it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerRow {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub destination: String,
    pub from: String,
    pub to: String,
    #[serde(serialize_with = "hex_option")]
    pub document_hash: Option<[u8; 32]>,
    pub size: i64,
    #[serde(serialize_with = "hex_bytes")]
    pub public_key: Vec<u8>,
    #[serde(serialize_with = "hex_bytes")]
    pub signature: Vec<u8>,
    #[serde(serialize_with = "hex_option")]
    pub new_key: Option<Vec<u8>>,
    #[serde(skip)]
    pub cosignature: Option<Vec<u8>>,
    #[serde(serialize_with = "hex_bytes")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "hex_bytes")]
    pub row_hash: Vec<u8>,
    #[serde(skip)]
    pub document: Option<Vec<u8>>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}

fn hex_option<S: serde::Serializer, B: AsRef<[u8]>>(
    bytes: &Option<B>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => serializer.serialize_str(&hex::encode(bytes)),
        None => serializer.serialize_none(),
    }
}

impl LedgerRow {
    /// What `row_hash` covers: every field but the hash itself and the kept document (whose
    /// hash is covered), each length-prefixed so no two rows encode alike.
    pub fn computed_hash(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"tracks-collector ledger row v1\n");
        hasher.update(&self.seq.to_be_bytes());
        hasher.update(&self.at.to_be_bytes());
        for text in [&self.kind, &self.destination, &self.from, &self.to] {
            hasher.update(&(text.len() as u64).to_be_bytes());
            hasher.update(text.as_bytes());
        }
        let empty: &[u8] = &[];
        for bytes in [
            self.document_hash.as_ref().map_or(empty, |hash| &hash[..]),
            &self.public_key,
            &self.signature,
            self.new_key.as_deref().unwrap_or(empty),
            self.cosignature.as_deref().unwrap_or(empty),
            &self.prev_hash,
        ] {
            hasher.update(&(bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        }
        hasher.update(&self.size.to_be_bytes());
        *hasher.finalize().as_bytes()
    }
}

/// Signs and records one departing document.
pub(super) struct Record {
    pub departure: Departure,
    pub identity: std::sync::Arc<Identity>,
    pub now: i64,
}

impl Write for Record {
    type Output = Signed;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<Signed, StoreError> {
        append_document(writing.conn, &self.identity, &self.departure, self.now)
    }
}

/// Records a rotation from `old` to `new`, signed by both.
pub(super) struct Rotate {
    pub old: std::sync::Arc<Identity>,
    pub new: std::sync::Arc<Identity>,
    pub now: i64,
}

impl Write for Rotate {
    type Output = i64;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<i64, StoreError> {
        let (seq, prev) = next(writing.conn)?;
        let new_key = self.new.public_key();
        let statement = identity::rotation_statement(&new_key, &prev);
        let mut row = blank(seq, self.now, Kind::Rotation, &self.old, &prev);
        row.signature = self.old.sign(&statement).to_vec();
        row.new_key = Some(new_key.to_vec());
        row.cosignature = Some(self.new.sign(&statement).to_vec());
        insert(writing.conn, &row)?;
        Ok(seq)
    }
}

/// Replaces the rows older than `before` by one anchor row, signed by `identity`.
pub(super) struct Prune {
    pub before: i64,
    pub identity: std::sync::Arc<Identity>,
}

impl Write for Prune {
    type Output = u64;
    const DELETES: bool = true;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<u64, StoreError> {
        prune(writing.conn, &self.identity, self.before)
    }
}

/// Appends the row of `departure`, signed over its document's hash and the previous row's.
pub(super) fn append_document(
    conn: &Connection,
    identity: &Identity,
    departure: &Departure,
    now: i64,
) -> Result<Signed, StoreError> {
    let (seq, prev) = next(conn)?;
    let signature = identity.sign(&identity::document_statement(&departure.hash, &prev));
    let mut row = blank(seq, now, departure.kind, identity, &prev);
    row.destination = departure.destination.clone();
    row.from = departure.from.clone();
    row.to = departure.to.clone();
    row.document_hash = Some(departure.hash);
    row.size = departure.size;
    row.signature = signature.to_vec();
    row.document = departure.kept.clone();
    insert(conn, &row)?;
    Ok(Signed {
        seq,
        signature,
        prev,
        public_key: identity.public_key(),
    })
}

fn blank(seq: i64, at: i64, kind: Kind, identity: &Identity, prev: &[u8; 32]) -> LedgerRow {
    LedgerRow {
        seq,
        at,
        kind: kind.as_str().to_string(),
        destination: String::new(),
        from: String::new(),
        to: String::new(),
        document_hash: None,
        size: 0,
        public_key: identity.public_key().to_vec(),
        signature: Vec::new(),
        new_key: None,
        cosignature: None,
        prev_hash: prev.to_vec(),
        row_hash: Vec::new(),
        document: None,
    }
}

/// The next row's number and the hash it chains to.
fn next(conn: &Connection) -> Result<(i64, [u8; 32]), StoreError> {
    let last: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT seq, row_hash FROM ledger ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(match last {
        None => (1, GENESIS),
        Some((seq, hash)) => (seq + 1, hash.try_into().unwrap_or(GENESIS)),
    })
}

/// Writes `row` with the hash of its fields, the hash of every row but an anchor.
fn insert(conn: &Connection, row: &LedgerRow) -> Result<(), StoreError> {
    insert_hashed(conn, row, &row.computed_hash())
}

fn insert_hashed(
    conn: &Connection,
    row: &LedgerRow,
    row_hash: &[u8; 32],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO ledger (seq, at, kind, destination, range_from, range_to, document_hash, \
         size, public_key, signature, new_key, cosignature, prev_hash, row_hash, document) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        row.seq,
        row.at,
        row.kind,
        row.destination,
        row.from,
        row.to,
        row.document_hash.as_ref().map(|hash| &hash[..]),
        row.size,
        row.public_key,
        row.signature,
        row.new_key,
        row.cosignature,
        row.prev_hash,
        &row_hash[..],
        row.document,
    ])?;
    Ok(())
}

/// The new key of the newest rotation row, if any.
pub(super) fn last_rotation(conn: &Connection) -> Result<Option<PublicKey>, StoreError> {
    let key: Option<Vec<u8>> = conn
        .prepare_cached(
            "SELECT new_key FROM ledger WHERE kind = 'rotation' ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([], |row| row.get(0))
        .optional()?;
    Ok(key.and_then(|key| key.try_into().ok()))
}

/// Every row, oldest first.
pub(super) fn rows(conn: &Connection) -> Result<Vec<LedgerRow>, StoreError> {
    let mut statement = conn.prepare(
        "SELECT seq, at, kind, destination, range_from, range_to, document_hash, size, \
         public_key, signature, new_key, cosignature, prev_hash, row_hash, document \
         FROM ledger ORDER BY seq",
    )?;
    let rows = statement
        .query_map([], |row| {
            let document_hash: Option<Vec<u8>> = row.get(6)?;
            Ok(LedgerRow {
                seq: row.get(0)?,
                at: row.get(1)?,
                kind: row.get(2)?,
                destination: row.get(3)?,
                from: row.get(4)?,
                to: row.get(5)?,
                document_hash: document_hash.and_then(|hash| hash.try_into().ok()),
                size: row.get(7)?,
                public_key: row.get(8)?,
                signature: row.get(9)?,
                new_key: row.get(10)?,
                cosignature: row.get(11)?,
                prev_hash: row.get(12)?,
                row_hash: row.get(13)?,
                document: row.get(14)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes the rows older than `before` (never the newest: the chain goes on from it) and
/// puts one anchor row in their place: it keeps the number and hash of the last row pruned,
/// and signs them, so the next row still chains to it.
fn prune(conn: &Connection, identity: &Identity, before: i64) -> Result<u64, StoreError> {
    let newest: Option<i64> = conn
        .prepare_cached("SELECT max(seq) FROM ledger")?
        .query_row([], |row| row.get(0))?;
    let Some(newest) = newest else { return Ok(0) };
    let last_pruned: Option<(i64, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT seq, at, row_hash FROM ledger WHERE at < ?1 AND seq < ?2 \
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![before, newest], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((seq, at, hash)) = last_pruned else {
        return Ok(0);
    };
    let hash: [u8; 32] = hash.try_into().unwrap_or(GENESIS);
    // An earlier anchor goes too: the rows it stood for count in the new one.
    let (anchors, anchored): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(size), 0) FROM ledger \
             WHERE kind = 'anchor' AND seq <= ?1",
        )?
        .query_row(params![seq], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let deleted = conn
        .prepare_cached("DELETE FROM ledger WHERE seq <= ?1")?
        .execute(params![seq])? as i64;
    let removed = (deleted - anchors).max(0);
    let pruned = (anchored + removed).max(0) as u64;
    let mut anchor = blank(seq, at, Kind::Anchor, identity, &GENESIS);
    anchor.size = pruned as i64;
    anchor.signature = identity
        .sign(&identity::anchor_statement(&hash, pruned))
        .to_vec();
    // The anchor keeps the last pruned row's number and hash: the row after it chains to it.
    insert_hashed(conn, &anchor, &hash)?;
    Ok(removed as u64)
}

/// Why `ledger verify` failed: the first row that does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broken {
    pub seq: i64,
    pub why: String,
}

/// Checks the chain and every signature: each row's hash is what its fields hash to, each
/// row names the hash of the one before, each document row is signed by the key in effect
/// (the first row's, then each rotation's new key), each rotation by both keys, an anchor by
/// the key in effect over what it replaced, and a kept document hashes to its row. Returns
/// the key in effect at the end.
pub(crate) fn verify(rows: &[LedgerRow]) -> Result<Option<PublicKey>, Broken> {
    let mut previous: [u8; 32] = GENESIS;
    let mut key: Option<PublicKey> = None;
    for (index, row) in rows.iter().enumerate() {
        let Some(kind) = Kind::parse(&row.kind) else {
            return Err(broken(row, "its kind is unknown"));
        };
        let Ok(signer) = PublicKey::try_from(row.public_key.as_slice()) else {
            return Err(broken(row, "its key is not an Ed25519 public key"));
        };
        if key.is_some_and(|key| key != signer) {
            return Err(broken(
                row,
                "it is signed by a key the ledger never rotated to",
            ));
        }
        if kind == Kind::Anchor {
            previous = verify_anchor(row, index, &signer)?;
            key = Some(signer);
            continue;
        }
        verify_chained(row, &previous)?;
        key = Some(match kind {
            Kind::Rotation => verify_rotation(row, &signer, &previous)?,
            _ => {
                verify_document(row, &signer, &previous)?;
                signer
            }
        });
        previous = row.computed_hash();
    }
    Ok(key)
}

/// `row` is where the chain breaks, for `why`.
fn broken(row: &LedgerRow, why: &str) -> Broken {
    Broken {
        seq: row.seq,
        why: why.to_string(),
    }
}

/// An anchor, first and signed by `signer` over what it replaced; returns its hash, which
/// the next row names.
fn verify_anchor(row: &LedgerRow, index: usize, signer: &PublicKey) -> Result<[u8; 32], Broken> {
    if index != 0 {
        return Err(broken(row, "an anchor stands anywhere but first"));
    }
    let hash: [u8; 32] = row
        .row_hash
        .as_slice()
        .try_into()
        .map_err(|_| broken(row, "its hash is not 32 bytes"))?;
    let statement = identity::anchor_statement(&hash, row.size.max(0) as u64);
    if !identity::verify(signer, &statement, &row.signature) {
        return Err(broken(row, "the anchor's signature does not verify"));
    }
    Ok(hash)
}

/// A row that names the one before it (`previous`) and whose fields hash to its hash.
fn verify_chained(row: &LedgerRow, previous: &[u8; 32]) -> Result<(), Broken> {
    if row.prev_hash != previous {
        return Err(broken(
            row,
            "it does not name the row before it: a row before it was changed, removed or \
             inserted",
        ));
    }
    if row.row_hash != row.computed_hash() {
        return Err(broken(
            row,
            "its fields do not hash to its hash: it was edited",
        ));
    }
    Ok(())
}

/// A rotation signed by both `signer` and its new key; returns the new key.
fn verify_rotation(
    row: &LedgerRow,
    signer: &PublicKey,
    previous: &[u8; 32],
) -> Result<PublicKey, Broken> {
    let (Some(new_key), Some(cosignature)) = (&row.new_key, &row.cosignature) else {
        return Err(broken(row, "a rotation without its new key"));
    };
    let Ok(new_key) = PublicKey::try_from(new_key.as_slice()) else {
        return Err(broken(row, "the new key is not an Ed25519 public key"));
    };
    let statement = identity::rotation_statement(&new_key, previous);
    if !identity::verify(signer, &statement, &row.signature)
        || !identity::verify(&new_key, &statement, cosignature)
    {
        return Err(broken(row, "the rotation is not signed by both keys"));
    }
    Ok(new_key)
}

/// A document row signed by `signer`, whose kept document, if any, is the one signed.
fn verify_document(row: &LedgerRow, signer: &PublicKey, previous: &[u8; 32]) -> Result<(), Broken> {
    let Some(document_hash) = row.document_hash else {
        return Err(broken(row, "a document row without the document's hash"));
    };
    let statement = identity::document_statement(&document_hash, previous);
    if !identity::verify(signer, &statement, &row.signature) {
        return Err(broken(row, "the signature does not verify"));
    }
    if let Some(document) = &row.document
        && (blake3::hash(document).as_bytes() != &document_hash
            || document.len() as i64 != row.size)
    {
        return Err(broken(row, "the kept document is not the one signed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> (Connection, Identity) {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(include_str!("migrations/0004_outbox.sql"))
            .expect("outbox");
        conn.execute_batch(include_str!("migrations/0018_ledger.sql"))
            .expect("ledger");
        (conn, Identity::generate().expect("key").0)
    }

    fn departure(text: &str) -> Departure {
        Departure::of(
            Kind::Pull,
            "central-pull".into(),
            ("2026-11-01".into(), "2026-11-02".into()),
            text.as_bytes(),
            true,
        )
    }

    #[test]
    fn a_chain_of_documents_and_a_rotation_verifies() {
        let (conn, old) = ledger();
        let first = append_document(&conn, &old, &departure("{}"), 10).expect("first");
        assert_eq!((first.seq, first.prev), (1, GENESIS));
        let (new, _) = Identity::generate().expect("key");
        let (old, new) = (std::sync::Arc::new(old), std::sync::Arc::new(new));
        let statement = identity::rotation_statement(&new.public_key(), &{
            let rows = rows(&conn).expect("rows");
            rows[0].computed_hash()
        });
        assert!(identity::verify(
            &old.public_key(),
            &statement,
            &old.sign(&statement)
        ));
        let (seq, prev) = next(&conn).expect("next");
        let mut row = blank(seq, 11, Kind::Rotation, &old, &prev);
        row.signature = old.sign(&statement).to_vec();
        row.new_key = Some(new.public_key().to_vec());
        row.cosignature = Some(new.sign(&statement).to_vec());
        insert(&conn, &row).expect("rotation");
        append_document(&conn, &new, &departure("{\"a\":1}"), 12).expect("after");
        let rows = rows(&conn).expect("rows");
        assert_eq!(verify(&rows), Ok(Some(new.public_key())));
        // The old key may not sign after the rotation.
        append_document(&conn, &old, &departure("{}"), 13).expect("stale");
        let rows = super::rows(&conn).expect("rows");
        assert_eq!(verify(&rows).map_err(|broken| broken.seq), Err(4));
    }

    #[test]
    fn pruning_leaves_an_anchor_the_rest_chains_to() {
        let (conn, identity) = ledger();
        for at in [10, 20, 30, 40] {
            append_document(&conn, &identity, &departure("{}"), at).expect("row");
        }
        assert_eq!(prune(&conn, &identity, 25).expect("prune"), 2);
        let kept = rows(&conn).expect("rows");
        assert_eq!(kept.len(), 3);
        assert_eq!(
            (kept[0].kind.as_str(), kept[0].seq, kept[0].size),
            ("anchor", 2, 2)
        );
        assert_eq!(verify(&kept), Ok(Some(identity.public_key())));
        // Pruning again folds the old anchor into the new one.
        assert_eq!(prune(&conn, &identity, 35).expect("prune"), 1);
        let kept = rows(&conn).expect("rows");
        assert_eq!((kept[0].seq, kept[0].size), (3, 3));
        assert_eq!(verify(&kept), Ok(Some(identity.public_key())));
    }

    #[test]
    fn an_edited_or_removed_row_and_a_changed_document_are_caught() {
        let (conn, identity) = ledger();
        for at in [10, 20, 30] {
            append_document(&conn, &identity, &departure("{\"n\":1}"), at).expect("row");
        }
        let good = rows(&conn).expect("rows");
        let mut edited = good.clone();
        edited[1].destination = "somewhere-else".into();
        assert_eq!(verify(&edited).map_err(|b| b.seq), Err(2));
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).map_err(|b| b.seq), Err(3));
        let mut changed = good.clone();
        if let Some(document) = changed[2].document.as_mut() {
            document[0] ^= 1;
        }
        assert_eq!(verify(&changed).map_err(|b| b.seq), Err(3));
        assert!(verify(&good).is_ok());
    }
}
