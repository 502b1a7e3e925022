//! Test support: a small MaxMind DB (MMDB) country database written from a list of networks,
//! so that no test downloads one. MaxMind DB format 2.0: a binary search tree over IPv6
//! addresses (IPv4 under `::/96`, as MaxMind files them) with 32-bit records, 16 zero bytes,
//! the data section, then the metadata after its marker. Std only: the crate's unit tests,
//! the integration tests and the benches include this file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// One network and the country code its record names.
#[derive(Debug, Clone)]
pub(crate) struct Network {
    /// The network's address as IPv6 bits (IPv4 under `::/96`).
    bits: u128,
    /// Its prefix length in the IPv6 tree.
    len: u8,
    country: String,
}

impl Network {
    /// `cidr` as `203.0.113.0/24` or `2001:db8::/32`. Panics on a malformed one: test input.
    pub(crate) fn new(cidr: &str, country: &str) -> Network {
        let (address, len) = cidr.split_once('/').expect("a CIDR with a prefix length");
        let address: IpAddr = address.parse().expect("a network address");
        let len: u8 = len.parse().expect("a prefix length");
        Network::from_parts(address, len, country)
    }

    pub(crate) fn from_parts(address: IpAddr, len: u8, country: &str) -> Network {
        let (bits, len) = match address {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 96 + len),
            IpAddr::V6(v6) => (u128::from(v6), len),
        };
        assert!((1..=128).contains(&len), "prefix length {len}");
        Network {
            bits,
            len,
            country: country.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Empty,
    Node(u32),
    Data(u32),
}

/// Writes a database of `database_type` (e.g. `GeoLite2-Country`) mapping each network to a
/// country record shaped like GeoLite2's (continent, country with names, registered country).
pub(crate) fn write_country_db(
    path: &Path,
    database_type: &str,
    networks: &[Network],
) -> std::io::Result<()> {
    std::fs::write(path, country_db_bytes(database_type, networks))
}

pub(crate) fn country_db_bytes(database_type: &str, networks: &[Network]) -> Vec<u8> {
    // Records: one per country, shared by its networks.
    let mut data = Vec::new();
    let mut offsets: BTreeMap<&str, u32> = BTreeMap::new();
    for network in networks {
        if !offsets.contains_key(network.country.as_str()) {
            let offset = u32::try_from(data.len()).expect("a small data section");
            offsets.insert(&network.country, offset);
            country_record(&mut data, &network.country);
        }
    }

    // The tree, less specific networks first, so a more specific one splits what they cover.
    let mut sorted: Vec<&Network> = networks.iter().collect();
    sorted.sort_by_key(|network| network.len);
    let mut nodes: Vec<[Slot; 2]> = vec![[Slot::Empty; 2]];
    for network in sorted {
        let mut node = 0usize;
        for depth in 0..network.len {
            let bit = ((network.bits >> (127 - u32::from(depth))) & 1) as usize;
            if depth + 1 == network.len {
                nodes[node][bit] = Slot::Data(offsets[network.country.as_str()]);
                break;
            }
            node = match nodes[node][bit] {
                Slot::Node(next) => next as usize,
                covering => {
                    // Empty, or a less specific network's record, which both halves keep.
                    let fill = match covering {
                        Slot::Data(_) => covering,
                        _ => Slot::Empty,
                    };
                    nodes.push([fill; 2]);
                    let next = nodes.len() - 1;
                    nodes[node][bit] = Slot::Node(u32::try_from(next).expect("node count"));
                    next
                }
            };
        }
    }

    let node_count = u32::try_from(nodes.len()).expect("node count");
    let mut out = Vec::with_capacity(nodes.len() * 8 + 16 + data.len() + 256);
    for node in &nodes {
        for slot in node {
            let record = match *slot {
                Slot::Empty => node_count,
                Slot::Node(next) => next,
                Slot::Data(offset) => node_count + 16 + offset,
            };
            out.extend_from_slice(&record.to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    map(&mut out, 9);
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    uint(&mut out, 9, 1_793_491_200);
    string(&mut out, "database_type");
    string(&mut out, database_type);
    string(&mut out, "description");
    map(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "tracks-collector test database");
    string(&mut out, "ip_version");
    uint(&mut out, 5, 6);
    string(&mut out, "languages");
    control(&mut out, 11, 1);
    string(&mut out, "en");
    string(&mut out, "node_count");
    uint(&mut out, 6, u64::from(node_count));
    string(&mut out, "record_size");
    uint(&mut out, 5, 32);
    out
}

/// `{"continent": {...}, "country": {"geoname_id", "iso_code", "names": {"en"}},
/// "registered_country": {...}}`, as GeoLite2 Country has it.
fn country_record(out: &mut Vec<u8>, code: &str) {
    let country = |out: &mut Vec<u8>| {
        map(out, 3);
        string(out, "geoname_id");
        uint(out, 6, 2_921_044);
        string(out, "iso_code");
        string(out, code);
        string(out, "names");
        map(out, 1);
        string(out, "en");
        string(out, &format!("Country {code}"));
    };
    map(out, 3);
    string(out, "continent");
    map(out, 2);
    string(out, "code");
    string(out, "EU");
    string(out, "geoname_id");
    uint(out, 6, 6_255_148);
    string(out, "country");
    country(out);
    string(out, "registered_country");
    country(out);
}

/// A control byte (and the extended type byte, for types above 7) with the size after it.
fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    let (first, extended) = if kind <= 7 {
        (kind << 5, None)
    } else {
        (0, Some(kind - 7))
    };
    let (size_bits, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        (30, ((size - 285) as u16).to_be_bytes().to_vec())
    } else {
        (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec())
    };
    out.push(first | size_bits);
    out.extend(extended);
    out.extend(extra);
}

fn string(out: &mut Vec<u8>, text: &str) {
    control(out, 2, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn map(out: &mut Vec<u8>, pairs: usize) {
    control(out, 7, pairs);
}

/// An unsigned integer of type `kind` (5 uint16, 6 uint32, 9 uint64) in as few bytes as it
/// takes.
fn uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, kind, 8 - skip);
    out.extend_from_slice(&bytes[skip..]);
}
