//! The collector's Ed25519 identity: the key that signs every aggregates document that leaves
//! (DESIGN, Central TRACKS platform), and the statements it signs. The key is a 32-byte seed,
//! hex in `identity.key` beside the database (mode 0600), made at `init` or at the first
//! start. Signing and verifying are ring's (already the TLS provider), not hand-made.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// A public key, as the ledger and `/api/v1/identity` hold it.
pub(crate) type PublicKey = [u8; 32];
/// A detached Ed25519 signature.
pub(crate) type Signature = [u8; 64];

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the identity key {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write the identity key {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("the OS random source failed: {0}")]
    Random(String),
}

/// The key pair; the seed never leaves this type.
pub struct Identity {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Identity({})", fingerprint(&self.public))
    }
}

impl Identity {
    fn from_seed(seed: &[u8; 32]) -> Identity {
        // A 32-byte seed is always a valid Ed25519 private key.
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .unwrap_or_else(|_| unreachable!("any 32 bytes are an Ed25519 seed"));
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Identity { pair, public }
    }

    /// A new key pair from the OS random source.
    pub fn generate() -> Result<(Identity, [u8; 32]), IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|err| IdentityError::Random(err.to_string()))?;
        Ok((Identity::from_seed(&seed), seed))
    }

    /// The key in `path`, made and written there (0600) the first time.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        if path.exists() {
            return Identity::load(path);
        }
        let (identity, seed) = Identity::generate()?;
        write_seed(path, &seed)?;
        Ok(identity)
    }

    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let read = |reason: String| IdentityError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|err| read(err.to_string()))?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed)
            .map_err(|_| read("expected 64 hex characters".into()))?;
        Ok(Identity::from_seed(&seed))
    }

    /// Makes a new key and writes it beside `path` as `path.new`, for [`Identity::commit_new`]
    /// to move into place once the ledger records the rotation.
    pub fn prepare_new(path: &Path) -> Result<Identity, IdentityError> {
        let pending = pending_path(path);
        let _ = std::fs::remove_file(&pending);
        let (identity, seed) = Identity::generate()?;
        write_seed(&pending, &seed)?;
        Ok(identity)
    }

    /// The key in `path`, after finishing a rotation a crash cut short: a new key left beside
    /// it (`path.new`) is moved into place when the ledger's last rotation names it, and
    /// dropped when it does not (the rotation was never recorded).
    pub fn load_settled(
        path: &Path,
        last_rotation: Option<PublicKey>,
    ) -> Result<Identity, IdentityError> {
        let pending = pending_path(path);
        if pending.exists() {
            let new = Identity::load(&pending)?;
            if Some(new.public_key()) == last_rotation {
                Identity::commit_new(path)?;
                tracing::warn!(
                    fingerprint = %fingerprint(&new.public_key()),
                    "finished a key rotation the ledger records but a stop cut short"
                );
            } else {
                let _ = std::fs::remove_file(&pending);
            }
        }
        Identity::load_or_create(path)
    }

    /// Moves the key [`Identity::prepare_new`] wrote over the old one.
    pub fn commit_new(path: &Path) -> Result<(), IdentityError> {
        std::fs::rename(pending_path(path), path).map_err(|err| IdentityError::Write {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(self.pair.sign(message).as_ref());
        signature
    }
}

fn pending_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn write_seed(path: &Path, seed: &[u8; 32]) -> Result<(), IdentityError> {
    crate::files::write_private_new(path, format!("{}\n", hex::encode(seed)).as_bytes()).map_err(
        |err| IdentityError::Write {
            path: path.to_path_buf(),
            reason: err.to_string(),
        },
    )
}

/// Where the identity key of the database at `db_path` is kept: beside it.
pub(crate) fn key_path(db_path: &Path) -> PathBuf {
    db_path.with_file_name("identity.key")
}

/// The identity in use, swapped whole by a rotation; signers take the current one.
#[derive(Debug, Clone)]
pub struct Signer(Arc<RwLock<Arc<Identity>>>);

impl Signer {
    pub fn new(identity: Identity) -> Signer {
        Signer(Arc::new(RwLock::new(Arc::new(identity))))
    }

    pub fn current(&self) -> Arc<Identity> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn replace(&self, identity: Identity) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(identity);
    }
}

/// A short, stable name of a public key for people to compare: the first 16 bytes of its
/// BLAKE3 hash, hex in groups of four.
pub(crate) fn fingerprint(public: &PublicKey) -> String {
    let hash = blake3::hash(public);
    hash.as_bytes()[..16]
        .chunks(2)
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(":")
}

/// Whether `signature` is `public`'s over `message`.
pub(crate) fn verify(public: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, signature)
        .is_ok()
}

/// What a document's signature covers: the BLAKE3 hash of its exact bytes (which hold the
/// collector id, the range and the time it was made) and the hash of the ledger row before
/// the one that records it.
pub(crate) fn document_statement(document_hash: &[u8; 32], previous_row: &[u8; 32]) -> Vec<u8> {
    statement(
        b"tracks-collector document v1\n",
        &[document_hash, previous_row],
    )
}

/// What both keys of a rotation sign: the new key, after the row before.
pub(crate) fn rotation_statement(new_key: &PublicKey, previous_row: &[u8; 32]) -> Vec<u8> {
    statement(
        b"tracks-collector key rotation v1\n",
        &[new_key, previous_row],
    )
}

/// What an anchor signs: the hash of the last row it replaces, and how many rows it replaces.
pub(crate) fn anchor_statement(last_pruned_row: &[u8; 32], pruned: u64) -> Vec<u8> {
    statement(
        b"tracks-collector ledger anchor v1\n",
        &[last_pruned_row, &pruned.to_be_bytes()],
    )
}

fn statement(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut message = prefix.to_vec();
    for part in parts {
        message.extend_from_slice(part);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_key_only_and_over_its_message_only() {
        let (one, _) = Identity::generate().expect("key");
        let (other, _) = Identity::generate().expect("key");
        let message = document_statement(&[1; 32], &[0; 32]);
        let signature = one.sign(&message);
        assert!(verify(&one.public_key(), &message, &signature));
        assert!(!verify(&other.public_key(), &message, &signature));
        let changed = document_statement(&[1; 32], &[2; 32]);
        assert!(!verify(&one.public_key(), &changed, &signature));
    }

    #[test]
    fn a_rotation_cut_short_is_finished_only_if_the_ledger_names_the_new_key() {
        let dir = tempfile::tempdir().expect("dir");
        let path = key_path(&dir.path().join("collector.db"));
        let old = Identity::load_or_create(&path).expect("old");
        let new = Identity::prepare_new(&path).expect("new");
        // Not recorded: the old key stays, the new one goes.
        let kept = Identity::load_settled(&path, None).expect("settled");
        assert_eq!(kept.public_key(), old.public_key());
        assert!(!pending_path(&path).exists());
        // Recorded: the new key is moved into place.
        let new_again = Identity::prepare_new(&path).expect("new");
        assert_ne!(new.public_key(), new_again.public_key());
        let settled = Identity::load_settled(&path, Some(new_again.public_key())).expect("settled");
        assert_eq!(settled.public_key(), new_again.public_key());
    }

    #[test]
    fn the_key_file_is_made_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = key_path(&dir.path().join("collector.db"));
        let made = Identity::load_or_create(&path).expect("made");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Identity::load_or_create(&path).expect("read");
        assert_eq!(made.public_key(), again.public_key());
        assert_eq!(fingerprint(&made.public_key()).len(), 39);
    }
}
