//! Privacy: keyed BLAKE3 pseudonyms of IP addresses and user ids, one per salt, and the
//! block list's keyed hash of a forgotten player, and the keyed hash of an event's id.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::salt::Salt;

/// A 16-byte keyed hash and the id of the salt it was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pseudonym {
    pub salt_id: i64,
    pub hash: [u8; 16],
}

// Domain separation: an IP and a user id that happen to share bytes never share a pseudonym.
const IP_DOMAIN: &[u8] = b"tracks-collector/ip/v1\0";
const USER_DOMAIN: &[u8] = b"tracks-collector/user/v1\0";
// A block-list entry is never equal to a pseudonym of the same player, whatever the keys.
const BLOCK_DOMAIN: &[u8] = b"tracks-collector/block/v1\0";
const EVENT_ID_DOMAIN: &[u8] = b"tracks-collector/event-id/v1\0";

/// The block list's key: 32 random bytes made once per database and kept apart from the salts,
/// so that neither a rotation nor the retention purge, which destroy salts, lifts a block.
#[derive(Clone, PartialEq, Eq)]
pub struct BlockKey(pub [u8; 32]);

impl fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlockKey(<redacted>)")
    }
}

/// A forgotten player as the block list holds them: a 16-byte keyed BLAKE3 hash of (game id,
/// user id) under the [`BlockKey`]. Stable for as long as the key lives, unlike a pseudonym.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub [u8; 16]);

/// The address as it is hashed: IPv4 (also when mapped into IPv6) as its 4 bytes, IPv6 cut to
/// its first `ipv6_prefix` bits so a device's changing interface id maps to one pseudonym.
pub(crate) fn reduce_ip(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

pub fn ip_pseudonym(salt: &Salt, ip: IpAddr, ipv6_prefix: u8) -> Pseudonym {
    keyed(salt, &ip_message(ip, ipv6_prefix))
}

/// The address's pseudonym under each salt, in the salts' order.
pub(crate) fn ip_pseudonyms(salts: &[Salt], ip: IpAddr, ipv6_prefix: u8) -> Vec<Pseudonym> {
    let message = ip_message(ip, ipv6_prefix);
    salts.iter().map(|salt| keyed(salt, &message)).collect()
}

/// The game is part of the input: the same player id in two games is two people as far as the
/// collector can tell. One salt's: the tests pin the digests with it.
#[cfg(test)]
pub(crate) fn user_pseudonym(salt: &Salt, game: &str, user_id: &str) -> Pseudonym {
    keyed(salt, &player_message(USER_DOMAIN, game, user_id))
}

/// The player's pseudonym under each salt, in the salts' order.
pub fn user_pseudonyms(salts: &[Salt], game: &str, user_id: &str) -> Vec<Pseudonym> {
    let message = player_message(USER_DOMAIN, game, user_id);
    salts.iter().map(|salt| keyed(salt, &message)).collect()
}

/// The player's entry in the block list: laid out as a user pseudonym, under its own domain
/// and key.
pub(crate) fn block_hash(key: &BlockKey, game: &str, user_id: &str) -> BlockHash {
    BlockHash(truncated(
        &key.0,
        &player_message(BLOCK_DOMAIN, game, user_id),
    ))
}

/// An event's id as the store keeps it, to count a retried event once: a 16-byte keyed hash of
/// (game id, event id). Keyed by the [`BlockKey`], under a domain of its own, because it must
/// outlive salt rotations (a retry may come days later) and a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKey(pub [u8; 16]);

pub(crate) fn event_key(key: &BlockKey, game: &str, event_id: &str) -> EventKey {
    EventKey(truncated(
        &key.0,
        &player_message(EVENT_ID_DOMAIN, game, event_id),
    ))
}

/// What an address is hashed as: domain, family (4 or 6), the reduced address's bytes. Built
/// once and hashed under every live salt; one-shot hashing of the whole message equals the
/// incremental hashing it replaced, so pseudonyms on file stay valid.
fn ip_message(ip: IpAddr, ipv6_prefix: u8) -> Vec<u8> {
    let mut message = Vec::with_capacity(IP_DOMAIN.len() + 1 + 16);
    message.extend_from_slice(IP_DOMAIN);
    match reduce_ip(ip, ipv6_prefix) {
        IpAddr::V4(v4) => {
            message.push(4);
            message.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            message.push(6);
            message.extend_from_slice(&v6.octets());
        }
    }
    message
}

/// What a user id is hashed as: domain, the game's length and bytes, the id's bytes.
fn player_message(domain: &[u8], game: &str, user_id: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + 8 + game.len() + user_id.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(&(game.len() as u64).to_le_bytes());
    message.extend_from_slice(game.as_bytes());
    message.extend_from_slice(user_id.as_bytes());
    message
}

fn keyed(salt: &Salt, message: &[u8]) -> Pseudonym {
    Pseudonym {
        salt_id: salt.id,
        hash: truncated(&salt.key, message),
    }
}

/// The first 16 bytes of the keyed BLAKE3 hash of `message`.
fn truncated(key: &[u8; 32], message: &[u8]) -> [u8; 16] {
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&blake3::keyed_hash(key, message).as_bytes()[..16]);
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salt(id: i64, byte: u8) -> Salt {
        Salt {
            id,
            created_at: 0,
            key: [byte; 32],
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    #[test]
    fn same_input_same_salt_same_pseudonym() {
        let s = salt(1, 1);
        assert_eq!(
            ip_pseudonym(&s, ip("203.0.113.9"), 64),
            ip_pseudonym(&s, ip("203.0.113.9"), 64)
        );
        assert_ne!(
            ip_pseudonym(&s, ip("203.0.113.9"), 64),
            ip_pseudonym(&s, ip("203.0.113.10"), 64)
        );
    }

    #[test]
    fn another_salt_gives_another_pseudonym() {
        let a = ip_pseudonym(&salt(1, 1), ip("203.0.113.9"), 64);
        let b = ip_pseudonym(&salt(2, 2), ip("203.0.113.9"), 64);
        assert_ne!(a.hash, b.hash);
        assert_eq!((a.salt_id, b.salt_id), (1, 2));
    }

    #[test]
    fn ipv6_is_cut_to_the_prefix() {
        let s = salt(1, 1);
        let a = ip_pseudonym(&s, ip("2001:db8:1:2:aaaa::1"), 64);
        let b = ip_pseudonym(&s, ip("2001:db8:1:2:bbbb::2"), 64);
        let other = ip_pseudonym(&s, ip("2001:db8:1:3::1"), 64);
        assert_eq!(a, b);
        assert_ne!(a, other);
        // With a /128 prefix every address is its own.
        assert_ne!(
            ip_pseudonym(&s, ip("2001:db8:1:2:aaaa::1"), 128),
            ip_pseudonym(&s, ip("2001:db8:1:2:bbbb::2"), 128)
        );
        assert_eq!(
            reduce_ip(ip("2001:db8:1:2:aaaa::1"), 48),
            ip("2001:db8:1::")
        );
    }

    #[test]
    fn mapped_ipv4_is_ipv4() {
        let s = salt(1, 1);
        assert_eq!(
            ip_pseudonym(&s, ip("::ffff:203.0.113.9"), 64),
            ip_pseudonym(&s, ip("203.0.113.9"), 64)
        );
    }

    #[test]
    fn user_pseudonym_depends_on_game_and_domain() {
        let s = salt(1, 1);
        assert_eq!(
            user_pseudonym(&s, "g", "player-1"),
            user_pseudonym(&s, "g", "player-1")
        );
        assert_ne!(
            user_pseudonym(&s, "g", "player-1"),
            user_pseudonym(&s, "h", "player-1")
        );
        // Length-prefixed game: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(user_pseudonym(&s, "ab", "c"), user_pseudonym(&s, "a", "bc"));
    }

    /// A block outlives every salt: its hash depends on the block key alone, never equals the
    /// player's pseudonym under the same key bytes, and keeps the game apart.
    #[test]
    fn block_hashes_are_their_own_domain() {
        let key = BlockKey([1; 32]);
        let hash = block_hash(&key, "g", "player-1");
        assert_eq!(hash, block_hash(&key, "g", "player-1"));
        assert_ne!(hash, block_hash(&key, "h", "player-1"));
        assert_ne!(hash, block_hash(&BlockKey([2; 32]), "g", "player-1"));
        assert_ne!(hash.0, user_pseudonym(&salt(1, 1), "g", "player-1").hash);
        assert_eq!(format!("{key:?}"), "BlockKey(<redacted>)");
        let hex: String = hash.0.iter().map(|b| format!("{b:02x}")).collect();
        // Blocks on file must keep matching across versions.
        assert_eq!(hex, "c1ec4def4a0306a7b9ededadfe06683d");
    }

    /// Records keep their pseudonyms across versions: these must never change.
    #[test]
    fn pseudonyms_are_stable_across_versions() {
        let s = Salt {
            id: 7,
            created_at: 0,
            key: core::array::from_fn(|i| i as u8),
        };
        let hex = |p: Pseudonym| -> String { p.hash.iter().map(|b| format!("{b:02x}")).collect() };
        assert_eq!(
            hex(ip_pseudonym(&s, ip("203.0.113.9"), 64)),
            "831dafb3cc241acac3451629a359a862"
        );
        assert_eq!(
            hex(ip_pseudonym(&s, ip("2001:db8:1:2:aaaa::1"), 64)),
            "0f5d672c14da589580d88e43eff32f2e"
        );
        assert_eq!(
            hex(user_pseudonym(&s, "demo-game", "player-1")),
            "f8ff2f044d5b42c9ff9d5784f2b0b971"
        );
        // 400 bytes: a message of several blocks.
        assert_eq!(
            hex(user_pseudonym(&s, "g", &"é".repeat(200))),
            "d1bdb865378d93306b7e5934473d0098"
        );
        let salts = [s.clone(), salt(8, 8)];
        assert_eq!(
            ip_pseudonyms(&salts, ip("203.0.113.9"), 64),
            vec![
                ip_pseudonym(&salts[0], ip("203.0.113.9"), 64),
                ip_pseudonym(&salts[1], ip("203.0.113.9"), 64)
            ]
        );
        assert_eq!(
            user_pseudonyms(&salts, "g", "p"),
            vec![
                user_pseudonym(&salts[0], "g", "p"),
                user_pseudonym(&salts[1], "g", "p")
            ]
        );
    }
}
