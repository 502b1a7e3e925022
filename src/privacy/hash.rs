//! Privacy: keyed BLAKE3 pseudonyms of IP addresses and user ids, one per salt.

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

/// The address as it is hashed: IPv4 (also when mapped into IPv6) as its 4 bytes, IPv6 cut to
/// its first `ipv6_prefix` bits so a device's changing interface id maps to one pseudonym.
pub fn reduce_ip(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
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
    let mut hasher = blake3::Hasher::new_keyed(&salt.key);
    hasher.update(IP_DOMAIN);
    match reduce_ip(ip, ipv6_prefix) {
        IpAddr::V4(v4) => hasher.update(&[4]).update(&v4.octets()),
        IpAddr::V6(v6) => hasher.update(&[6]).update(&v6.octets()),
    };
    finish(salt, hasher)
}

/// The game is part of the input: the same player id in two games is two people as far as the
/// collector can tell.
pub fn user_pseudonym(salt: &Salt, game: &str, user_id: &str) -> Pseudonym {
    let mut hasher = blake3::Hasher::new_keyed(&salt.key);
    hasher.update(USER_DOMAIN);
    hasher.update(&(game.len() as u64).to_le_bytes());
    hasher.update(game.as_bytes());
    hasher.update(user_id.as_bytes());
    finish(salt, hasher)
}

fn finish(salt: &Salt, hasher: blake3::Hasher) -> Pseudonym {
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    Pseudonym {
        salt_id: salt.id,
        hash,
    }
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
}
