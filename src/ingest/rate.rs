//! HTTP: token buckets (governor's GCRA) per client on the public endpoints: per address for
//! `/collect` and `/r/`, per game's measure key and per player address for `/measure`, per
//! address for the endpoints anyone may call without a key, and per address for failed
//! authentications. A refusal is a 429 with `Retry-After`.
//!
//! Buckets are keyed by keyed hashes (a key made at start and never stored), so not even the
//! process memory holds a list of addresses; IPv6 addresses count by their /64, which one
//! subscriber usually holds whole.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use ipnet::IpNet;

use crate::config::{RateLimit, RateLimitsConfig};

type Key = [u8; 16];
type Buckets = RateLimiter<Key, DefaultKeyedStateStore<Key>, DefaultClock>;

/// Why a request was refused, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limited {
    /// The bucket that ran dry: `address`, `measure_key`, `player`, `public` or
    /// `failed_auth`.
    pub bucket: &'static str,
    pub retry_after: Duration,
}

/// The daemon's buckets.
pub(crate) struct RateLimits {
    /// Hashes addresses and game ids into bucket keys.
    key: [u8; 32],
    address: Buckets,
    measure_key: Buckets,
    player: Buckets,
    public: Buckets,
    failed_auth: Buckets,
    /// Addresses whose failed authentications ran dry, and until when their attempts are
    /// refused unread.
    cooling: Mutex<HashMap<Key, Instant>>,
    /// Monitors and trusted proxies: their keyless calls and failed attempts are not counted.
    exempt: Vec<IpNet>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").finish_non_exhaustive()
    }
}

fn buckets(limit: &RateLimit) -> Buckets {
    RateLimiter::keyed(Quota::per_second(limit.per_second).allow_burst(limit.burst))
}

impl RateLimits {
    /// `key` keys the bucket hashes (random, made at start); `exempt` are monitors and trusted
    /// proxies.
    pub(crate) fn new(config: &RateLimitsConfig, key: [u8; 32], exempt: Vec<IpNet>) -> RateLimits {
        RateLimits {
            key,
            address: buckets(&config.address),
            measure_key: buckets(&config.measure_key),
            player: buckets(&config.player),
            public: buckets(&config.public),
            failed_auth: buckets(&config.failed_auth),
            cooling: Mutex::new(HashMap::new()),
            exempt,
        }
    }

    fn is_exempt(&self, client: IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(&client))
    }

    /// One call to an endpoint anyone may call without a key, from `client`.
    pub(crate) fn public(&self, client: IpAddr) -> Result<(), Limited> {
        if self.is_exempt(client) {
            return Ok(());
        }
        let key = self.hashed(b"public", &address_bytes(client));
        take(&self.public, &key, 1, "public")
    }

    /// Before a token is looked at: refused while `client`'s failed attempts are spent.
    pub(crate) fn authentication(&self, client: IpAddr) -> Result<(), Limited> {
        let key = self.hashed(b"failed_auth", &address_bytes(client));
        let now = Instant::now();
        match self.lock_cooling().get(&key) {
            Some(until) if *until > now => Err(Limited {
                bucket: "failed_auth",
                retry_after: *until - now,
            }),
            _ => Ok(()),
        }
    }

    /// `client` sent a missing or wrong token: once its bucket is spent, its next attempts
    /// wait until a cell is back.
    pub(crate) fn failed_authentication(&self, client: IpAddr) {
        if self.is_exempt(client) {
            return;
        }
        let key = self.hashed(b"failed_auth", &address_bytes(client));
        if let Err(limited) = take(&self.failed_auth, &key, 1, "failed_auth") {
            self.lock_cooling()
                .insert(key, Instant::now() + limited.retry_after);
        }
    }

    fn lock_cooling(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Instant>> {
        self.cooling
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One visit (`/collect`, `/r/`) from `client`.
    pub(crate) fn visit(&self, client: IpAddr) -> Result<(), Limited> {
        let key = self.hashed(b"address", &address_bytes(client));
        take(&self.address, &key, 1, "address")
    }

    /// Game events for `game` sent with its key named `key`, from the players whose address
    /// pseudonyms are `players` (one entry per event). Each key has a bucket of its own.
    pub(crate) fn measure(&self, game: &str, key: &str, players: &[Key]) -> Result<(), Limited> {
        let game_key = self.hashed(b"game", format!("{game}\0{key}").as_bytes());
        let events = u32::try_from(players.len()).unwrap_or(u32::MAX);
        take(&self.measure_key, &game_key, events, "measure_key")?;
        let mut counted: Vec<(Key, u32)> = Vec::new();
        for player in players {
            match counted.iter_mut().find(|(key, _)| key == player) {
                Some((_, count)) => *count += 1,
                None => counted.push((*player, 1)),
            }
        }
        for (player, count) in counted {
            take(&self.player, &player, count, "player")?;
        }
        Ok(())
    }

    /// Drops the buckets that are full again (their keys look like new ones), so memory
    /// follows the clients active in the last moments, not every client ever seen.
    pub(crate) fn forget_idle(&self) {
        for buckets in [
            &self.address,
            &self.measure_key,
            &self.player,
            &self.public,
            &self.failed_auth,
        ] {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        let now = Instant::now();
        let mut cooling = self.lock_cooling();
        cooling.retain(|_, until| *until > now);
        cooling.shrink_to_fit();
    }

    fn hashed(&self, domain: &[u8], value: &[u8]) -> Key {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(domain);
        hasher.update(&[0]);
        hasher.update(value);
        let mut key = [0u8; 16];
        key.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
        key
    }
}

/// An address as its bucket sees it: IPv4 whole, IPv6 by its /64.
fn address_bytes(address: IpAddr) -> Vec<u8> {
    match address {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
    }
}

fn take(buckets: &Buckets, key: &Key, cells: u32, bucket: &'static str) -> Result<(), Limited> {
    let Some(cells) = NonZeroU32::new(cells) else {
        return Ok(());
    };
    let refused = |retry_after: Duration| Limited {
        bucket,
        retry_after,
    };
    match buckets.check_key_n(key, cells) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(refused(not_until.wait_time_from(buckets.clock().now()))),
        // More cells than the burst: never in one go; the client must send fewer at once.
        Err(_) => Err(refused(Duration::from_secs(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        let limit = RateLimit {
            per_second: NonZeroU32::new(per_second).expect("rate"),
            burst: NonZeroU32::new(burst).expect("burst"),
        };
        RateLimits::new(
            &RateLimitsConfig {
                address: limit,
                measure_key: limit,
                player: limit,
                public: limit,
                failed_auth: limit,
            },
            [7; 32],
            vec!["10.0.0.0/8".parse().expect("net")],
        )
    }

    #[test]
    fn keyless_calls_are_counted_but_for_monitors() {
        let limits = limits(1, 3);
        let (stranger, monitor): (IpAddr, IpAddr) = (
            "203.0.113.5".parse().expect("ip"),
            "10.1.2.3".parse().expect("ip"),
        );
        for _ in 0..3 {
            assert_eq!(limits.public(stranger), Ok(()));
        }
        assert_eq!(limits.public(stranger).map_err(|l| l.bucket), Err("public"));
        for _ in 0..100 {
            assert_eq!(limits.public(monitor), Ok(()));
        }
    }

    #[test]
    fn failed_authentications_once_spent_refuse_the_next_attempts_unread() {
        let limits = limits(1, 3);
        let guesser: IpAddr = "203.0.113.5".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(limits.authentication(guesser), Ok(()));
            limits.failed_authentication(guesser);
        }
        // The fourth failure finds the bucket spent: from now on, a wait.
        assert_eq!(limits.authentication(guesser), Ok(()));
        limits.failed_authentication(guesser);
        let refused = limits.authentication(guesser).expect_err("cooling");
        assert_eq!(refused.bucket, "failed_auth");
        assert!(refused.retry_after <= Duration::from_secs(1));
        assert_eq!(
            limits.authentication("203.0.113.6".parse().expect("ip")),
            Ok(())
        );
        std::thread::sleep(refused.retry_after);
        assert_eq!(limits.authentication(guesser), Ok(()));
    }

    #[test]
    fn an_address_gets_its_burst_then_waits_and_others_are_not_affected() {
        let limits = limits(1, 3);
        let busy: IpAddr = "203.0.113.5".parse().expect("ip");
        for _ in 0..3 {
            assert_eq!(limits.visit(busy), Ok(()));
        }
        let refused = limits.visit(busy).expect_err("the fourth at once");
        assert_eq!(refused.bucket, "address");
        assert!(
            refused.retry_after > Duration::ZERO && refused.retry_after <= Duration::from_secs(1)
        );
        assert_eq!(limits.visit("203.0.113.6".parse().expect("ip")), Ok(()));
    }

    #[test]
    fn an_ipv6_subscriber_counts_once_for_its_whole_prefix() {
        let limits = limits(1, 2);
        assert_eq!(limits.visit("2001:db8:1:2::1".parse().expect("ip")), Ok(()));
        assert_eq!(
            limits.visit("2001:db8:1:2:ffff::9".parse().expect("ip")),
            Ok(())
        );
        assert!(
            limits
                .visit("2001:db8:1:2::77".parse().expect("ip"))
                .is_err()
        );
        assert_eq!(limits.visit("2001:db8:1:3::1".parse().expect("ip")), Ok(()));
    }

    #[test]
    fn a_batch_counts_each_event_for_its_game_and_its_player() {
        let limits = limits(1, 4);
        let (a, b) = ([1; 16], [2; 16]);
        assert_eq!(limits.measure("g", "k", &[a, a, b]), Ok(()));
        // The game has 1 event left; the batch of 2 does not fit.
        let refused = limits.measure("g", "k", &[b, b]).expect_err("game dry");
        assert_eq!(refused.bucket, "measure_key");
        // Another key of the same game has a bucket of its own.
        assert_eq!(limits.measure("g", "k2", &[[4; 16]]), Ok(()));
        // Another game has its own bucket, but player `a` has used 2 of 4.
        assert_eq!(limits.measure("h", "k", &[a, a]), Ok(()));
        let refused = limits.measure("i", "k", &[a]).expect_err("player dry");
        assert_eq!(refused.bucket, "player");
        // More than the burst at once can never pass.
        assert!(limits.measure("j", "k", &[[3; 16]; 5]).is_err());
        limits.forget_idle();
    }

    #[test]
    fn the_buckets_of_quiet_clients_leave_memory_and_a_spent_one_stays() {
        // One visit a bucket, refilled 100 ms later; governor drops a bucket once it has been
        // full for as long again, so 200 ms after its visit a passer-by looks new.
        let limits = limits(10, 1);
        for n in 0..1_000u32 {
            let passer_by = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            assert_eq!(limits.visit(passer_by), Ok(()));
        }
        assert_eq!(limits.address.len(), 1_000);
        std::thread::sleep(Duration::from_millis(300));
        // A client that spent its bucket just now keeps it, so it stays limited.
        let flooder: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(limits.visit(flooder), Ok(()));
        limits.forget_idle();
        assert_eq!(limits.address.len(), 1);
        assert_eq!(limits.visit(flooder).map_err(|l| l.bucket), Err("address"));
    }
}
