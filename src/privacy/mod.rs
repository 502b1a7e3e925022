//! Pseudonymisation and minimisation: everything personal is reduced or hashed here, before it
//! reaches the store.
//!
//! - [`salt`]: the rotating BLAKE3 keys and when to rotate them.
//! - [`hash`]: keyed pseudonyms for IP addresses and user ids, and the block list's hashes.
//! - [`ua`]: User-Agent to device class, OS and browser family (the raw string is never kept).
//! - [`page`]: page URL to host + path + UTM (+ click ids with consent), referrer to its host.
//! - [`geo`]: an address to its country (ISO 3166-1 alpha-2), the only thing kept of it.

pub(crate) mod geo;
pub(crate) mod hash;
pub(crate) mod page;
pub(crate) mod salt;
pub(crate) mod ua;

pub(crate) use hash::{BlockHash, BlockKey, EventKey, block_hash, event_key, ip_pseudonyms};
pub use hash::{Pseudonym, ip_pseudonym, user_pseudonyms};
pub(crate) use salt::SaltRing;
pub use salt::{Salt, SharedSalts};
