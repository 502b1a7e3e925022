//! HTTP: how many connections the collector holds: per client address and in total, the total
//! kept below the process's open-file limit (raised to its hard limit at start).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::config::MaxConnections;

/// File descriptors left for everything but client connections: the database, its WAL and
/// shared-memory files and those of each reader, the listener, the runtime's own, the log,
/// connections to the central platform, and one accepted socket at a time beyond the cap (it is
/// accepted to be refused). Half the limit when the limit is small.
const RESERVED_FILES: u64 = 256;
/// `auto` never derives more than this many connections: far more than a studio needs, and
/// the memory each may hold (read buffers, TLS state) stays bounded.
const AUTO_MAX_CONNECTIONS: u64 = 16_384;
/// A hard limit of "unlimited" cannot be a soft limit for open files (the kernel refuses
/// more than `fs.nr_open`, 1,048,576 by default).
const NR_OPEN: u64 = 1 << 20;

/// The soft open-file limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OpenFiles {
    pub before: u64,
    pub now: u64,
}

/// Raises the soft open-file limit to the hard one: the default soft limit (1,024) is spent by
/// about a thousand idle sockets. Under systemd `LimitNOFILE=` sets both, and nothing changes.
pub(super) fn raise_open_file_limit() -> io::Result<OpenFiles> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    let target = hard.min(NR_OPEN);
    if soft < target {
        rlimit::Resource::NOFILE.set(target, hard)?;
    }
    let (now, _) = rlimit::Resource::NOFILE.get()?;
    Ok(OpenFiles { before: soft, now })
}

/// The total connection cap for an open-file limit of `open_files`, and whether a configured
/// number had to be lowered to fit.
pub(super) fn connection_cap(configured: MaxConnections, open_files: u64) -> (usize, bool) {
    let room = open_files
        .saturating_sub(RESERVED_FILES.min(open_files / 2))
        .max(1);
    let (cap, lowered) = match configured {
        MaxConnections::Auto => (room.min(AUTO_MAX_CONNECTIONS), false),
        MaxConnections::At(wanted) => {
            let wanted = u64::from(wanted);
            (wanted.min(room), wanted > room)
        }
    };
    (usize::try_from(cap).unwrap_or(usize::MAX), lowered)
}

/// Why a new connection was refused; the name is the `reason` label in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    PerAddress,
    Total,
}

impl Refusal {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address_cap",
            Refusal::Total => "max_connections",
        }
    }
}

/// Counts the open connections, in total and per client address, and admits a new one only
/// under both caps.
#[derive(Debug)]
pub(super) struct Admission {
    per_address: usize,
    total: usize,
    /// Trusted proxies are exempt from the per-address cap: a reverse proxy on loopback is one
    /// address for all its clients.
    exempt: Vec<IpNet>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(super) struct Slot {
    admission: Arc<Admission>,
    /// `None` for an exempt address.
    address: Option<IpAddr>,
}

impl Admission {
    pub(super) fn new(per_address: u32, total: usize, exempt: Vec<IpNet>) -> Arc<Admission> {
        Arc::new(Admission {
            per_address: usize::try_from(per_address).unwrap_or(usize::MAX),
            total,
            exempt,
            open: Mutex::new(Open::default()),
        })
    }

    /// Admits a connection from `peer` (the socket's peer, never a forwarded address).
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let peer = peer.to_canonical();
        let address = (!self.exempt.iter().any(|net| net.contains(&peer))).then(|| key(peer));
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.total >= self.total {
            return Err(Refusal::Total);
        }
        if let Some(address) = address {
            let held = open.by_address.entry(address).or_default();
            if *held >= self.per_address {
                return Err(Refusal::PerAddress);
            }
            *held += 1;
        }
        open.total += 1;
        Ok(Slot {
            admission: self.clone(),
            address,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(address) = self.address
            && let Some(held) = open.by_address.get_mut(&address)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.by_address.remove(&address);
            }
        }
    }
}

/// The address a connection is counted under: IPv4 as is, IPv6 by its /64, which one
/// household or phone often holds whole.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn each_address_holds_at_most_its_share() {
        let admission = Admission::new(2, 10, Vec::new());
        let a1 = admission.admit(ip("192.0.2.1")).expect("first");
        let _a2 = admission.admit(ip("192.0.2.1")).expect("second");
        assert_eq!(
            admission.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerAddress
        );
        let _b = admission.admit(ip("192.0.2.2")).expect("another address");
        drop(a1);
        let _a3 = admission.admit(ip("192.0.2.1")).expect("a freed place");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let admission = Admission::new(1, 10, Vec::new());
        let _a = admission.admit(ip("2001:db8:1:2::1")).expect("first");
        assert!(admission.admit(ip("2001:db8:1:2:ffff::9")).is_err());
        let _b = admission.admit(ip("2001:db8:1:3::1")).expect("another /64");
        let _c = admission.admit(ip("192.0.2.7")).expect("IPv4");
        assert!(admission.admit(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn the_total_is_capped_and_trusted_proxies_only_count_there() {
        let proxies = vec!["127.0.0.0/8".parse().expect("a network")];
        let admission = Admission::new(1, 3, proxies);
        let _p1 = admission.admit(ip("127.0.0.1")).expect("proxy");
        let _p2 = admission
            .admit(ip("127.0.0.1"))
            .expect("proxy, beyond the per-address cap");
        let _c = admission.admit(ip("192.0.2.1")).expect("client");
        assert_eq!(
            admission.admit(ip("192.0.2.9")).unwrap_err(),
            Refusal::Total
        );
    }

    #[test]
    fn the_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(connection_cap(MaxConnections::Auto, 1024), (768, false));
        assert_eq!(connection_cap(MaxConnections::Auto, 256), (128, false));
        assert_eq!(
            connection_cap(MaxConnections::Auto, 65_536),
            (16_384, false)
        );
        assert_eq!(
            connection_cap(MaxConnections::At(100), 65_536),
            (100, false)
        );
        assert_eq!(connection_cap(MaxConnections::At(5000), 1024), (768, true));
        assert_eq!(connection_cap(MaxConnections::Auto, 1), (1, false));
    }
}
