//! Privacy: salts, the keys of every pseudonym, and the rule that says when a new one is due.

use std::fmt;
use std::sync::{Arc, RwLock};

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// One salt: a 32-byte BLAKE3 key, the database row id that records point to, and its birth.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt {
    pub id: i64,
    /// Unix seconds.
    pub created_at: i64,
    pub key: [u8; 32],
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Salt")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A fresh 32-byte salt from a ChaCha20 RNG seeded by the operating system.
pub(crate) fn generate_key() -> Result<[u8; 32], getrandom::Error> {
    let mut rng = ChaCha20Rng::try_from_rng(&mut getrandom::SysRng)?;
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    Ok(key)
}

/// A pure function of (newest salt's birth, now): rotation is due when there is no salt yet or
/// the newest is at least `rotation_hours` old. A clock that went backwards never rotates.
pub(crate) fn rotation_due(newest_created_at: Option<i64>, now: i64, rotation_hours: u32) -> bool {
    match newest_created_at {
        None => true,
        Some(created) => now.saturating_sub(created) >= i64::from(rotation_hours) * 3600,
    }
}

/// The live salts, newest first. Hashing uses the newest; matching tries them all, so links
/// survive rotations for as long as the data is retained.
#[derive(Debug, Clone, Default)]
pub struct SaltRing {
    salts: Vec<Salt>,
}

impl SaltRing {
    pub fn new(mut salts: Vec<Salt>) -> SaltRing {
        salts.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        SaltRing { salts }
    }

    /// The salt new records are hashed with.
    pub fn current(&self) -> Option<&Salt> {
        self.salts.first()
    }

    /// Every live salt, newest first.
    pub fn live(&self) -> &[Salt] {
        &self.salts
    }

    pub fn push(&mut self, salt: Salt) {
        self.salts.push(salt);
        let salts = std::mem::take(&mut self.salts);
        *self = SaltRing::new(salts);
    }
}

/// The salt ring shared by ingest (reads) and the rotation job (writes).
pub type SharedSalts = Arc<RwLock<SaltRing>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ() {
        let a = generate_key().expect("os rng");
        let b = generate_key().expect("os rng");
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn rotation_is_due_without_salt_and_after_the_period() {
        assert!(rotation_due(None, 0, 24));
        assert!(!rotation_due(Some(1_000), 1_000 + 24 * 3600 - 1, 24));
        assert!(rotation_due(Some(1_000), 1_000 + 24 * 3600, 24));
        // A clock that jumped backwards does not rotate.
        assert!(!rotation_due(Some(1_000), 10, 24));
    }

    #[test]
    fn ring_orders_newest_first() {
        let salt = |id, created_at| Salt {
            id,
            created_at,
            key: [id as u8; 32],
        };
        let mut ring = SaltRing::new(vec![salt(1, 100), salt(3, 300)]);
        ring.push(salt(2, 200));
        let ids: Vec<i64> = ring.live().iter().map(|s| s.id).collect();
        assert_eq!(ids, vec![3, 2, 1]);
        assert_eq!(ring.current().map(|s| s.id), Some(3));
    }

    #[test]
    fn debug_redacts_the_key() {
        let salt = Salt {
            id: 7,
            created_at: 1,
            key: [0xab; 32],
        };
        let text = format!("{salt:?}");
        assert!(!text.contains("171"), "{text}");
        assert!(text.contains("redacted"));
    }
}
