//! HTTP: the client's address: the socket peer, or, behind a trusted proxy, the right-most
//! untrusted hop of `Forwarded` / `X-Forwarded-For`.

use std::net::IpAddr;

use hyper::HeaderMap;
use ipnet::IpNet;

/// Only a peer inside `trusted` is believed about who it forwards for; walking the chain
/// from the right, the first hop that is not itself a trusted proxy is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = forwarded_hops(headers).unwrap_or_else(|| x_forwarded_for_hops(headers));
    let mut nearest = peer;
    for hop in hops.iter().rev() {
        match hop {
            // An obfuscated or garbled hop ends what can be believed: the last trusted hop
            // is the best answer left.
            None => return nearest,
            Some(ip) if is_trusted(ip) => nearest = *ip,
            Some(ip) => return *ip,
        }
    }
    nearest
}

/// `Forwarded: for=...` hops in order (RFC 7239), or `None` if the header is absent.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut seen = false;
    for value in headers.get_all(hyper::header::FORWARDED) {
        seen = true;
        let Ok(text) = value.to_str() else {
            hops.push(None);
            continue;
        };
        for element in text.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| value.trim())
            });
            hops.push(node.and_then(parse_node));
        }
    }
    seen.then_some(hops)
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| {
            value
                .to_str()
                .map(|text| text.split(',').map(|hop| parse_node(hop.trim())).collect())
                .unwrap_or_else(|_| vec![None])
        })
        .collect()
}

/// A node: `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // IPv4 with a port.
    let (host, _port) = node.rsplit_once(':')?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("test header"));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().expect("test net")).collect()
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_ip(ip("203.0.113.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("203.0.113.1")
        );
        assert_eq!(client_ip(ip("203.0.113.1"), &h, &[]), ip("203.0.113.1"));
    }

    #[test]
    fn right_most_untrusted_hop_wins() {
        // The client forged the first entry; the trusted proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_header_is_preferred_and_parsed() {
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "1.1.1.1"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &nets(&["127.0.0.0/8"])),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[("forwarded", "for=192.0.2.60:8080")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &nets(&["127.0.0.1/32"])),
            ip("192.0.2.60")
        );
    }

    #[test]
    fn garbled_hop_stops_at_the_nearest_trusted_address() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7, garbage")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("10.0.0.1")
        );
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_peer_is_canonical() {
        assert_eq!(
            client_ip(ip("::ffff:203.0.113.1"), &HeaderMap::new(), &[]),
            ip("203.0.113.1")
        );
    }
}
