//! Store: the block list of forgotten players (keyed hashes only) and the key it is made under.

use rusqlite::{Connection, OptionalExtension, params};

use super::ops::{Write, Writing};
use super::types::StoreError;
use crate::privacy::salt::generate_key;
use crate::privacy::{BlockHash, BlockKey};

/// The block list's key, made on the first open that finds none. Runs on the write connection
/// before the writer starts; two processes opening a new store at once keep the same key, since
/// the second insert is ignored and both read back the row that won.
pub(super) fn ensure_key(conn: &Connection) -> Result<BlockKey, StoreError> {
    if let Some(key) = read_key(conn)? {
        return Ok(key);
    }
    let candidate = generate_key().map_err(|err| StoreError::Random(err.to_string()))?;
    conn.execute(
        "INSERT OR IGNORE INTO block_key (id, key) VALUES (1, ?1)",
        params![&candidate[..]],
    )?;
    read_key(conn)?.ok_or(StoreError::Corrupt(
        "the block list's key is missing right after it was written".into(),
    ))
}

pub(super) fn read_key(conn: &Connection) -> Result<Option<BlockKey>, StoreError> {
    let bytes: Option<Vec<u8>> = conn
        .query_row("SELECT key FROM block_key WHERE id = 1", [], |row| {
            row.get(0)
        })
        .optional()?;
    bytes
        .map(|bytes| {
            bytes
                .try_into()
                .map(BlockKey)
                .map_err(|_| StoreError::Corrupt("the block list's key is not 32 bytes".into()))
        })
        .transpose()
}

pub(super) fn is_blocked(conn: &Connection, hash: &BlockHash) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM blocked_users WHERE hash = ?1")?
        .exists(params![&hash.0[..]])?)
}

/// Blocks a player; blocking one already blocked changes nothing.
pub(super) fn block(conn: &Connection, hash: &BlockHash) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO blocked_users (hash) VALUES (?1)")?
        .execute(params![&hash.0[..]])?;
    Ok(())
}

/// Lifts a block (`tracks-collector unforget`); answers whether there was one.
pub(super) struct Unblock(pub BlockHash);

impl Write for Unblock {
    type Output = bool;
    // The lifted hash leaves the files too, like every deleted row (invariant 7).
    const DELETES: bool = true;

    fn apply(&self, writing: &mut Writing<'_>) -> Result<bool, StoreError> {
        let removed = writing
            .conn
            .prepare_cached("DELETE FROM blocked_users WHERE hash = ?1")?
            .execute(params![&self.0.0[..]])?;
        Ok(removed > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept() {
        let conn = crate::store::migrated_in_memory();
        let first = ensure_key(&conn).expect("key");
        assert_eq!(ensure_key(&conn).expect("key"), first);
        assert_ne!(first.0, [0; 32]);
        let hash = BlockHash([7; 16]);
        assert!(!is_blocked(&conn, &hash).expect("probe"));
        block(&conn, &hash).expect("block");
        block(&conn, &hash).expect("block again");
        assert!(is_blocked(&conn, &hash).expect("probe"));
    }
}
