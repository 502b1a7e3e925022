//! HTTP: the client's address: the socket peer, or, behind a trusted proxy, the right-most
//! untrusted hop of the one header the configuration names (`server.client_ip_header`).

use std::net::IpAddr;

use hyper::HeaderMap;
use ipnet::IpNet;

use crate::config::ClientIpHeader;

/// Only a peer inside `trusted` is believed about who it forwards for, and only in `header`:
/// a client's own header of another kind, passed through by its proxy, is never read. Walking
/// the hops from the right, the first that is not itself a trusted proxy is the client.
pub(crate) fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ClientIpHeader,
) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = match header {
        ClientIpHeader::None => return peer,
        ClientIpHeader::Forwarded => forwarded_hops(headers),
        ClientIpHeader::XForwardedFor => listed_hops(headers, "x-forwarded-for"),
        ClientIpHeader::XRealIp => listed_hops(headers, "x-real-ip"),
    };
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

/// `Forwarded: for=...` hops in order (RFC 7239); an element without `for` is a hop that
/// cannot be believed.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let mut hops = Vec::new();
    for value in headers.get_all(hyper::header::FORWARDED) {
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
    hops
}

/// The comma-separated hops of every `name` header line, in order (`X-Forwarded-For`, and
/// `X-Real-IP`, one hop a line).
fn listed_hops(headers: &HeaderMap, name: &str) -> Vec<Option<IpAddr>> {
    headers
        .get_all(name)
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
    use ClientIpHeader::{Forwarded, None as NoHeader, XForwardedFor, XRealIp};

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
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("forwarded", "for=198.51.100.8"),
            ("x-real-ip", "198.51.100.9"),
        ]);
        for kind in [XForwardedFor, Forwarded, XRealIp, NoHeader] {
            assert_eq!(
                client_ip(ip("203.0.113.1"), &h, &nets(&["10.0.0.0/8"]), kind),
                ip("203.0.113.1")
            );
            assert_eq!(
                client_ip(ip("203.0.113.1"), &h, &[], kind),
                ip("203.0.113.1")
            );
        }
    }

    #[test]
    fn right_most_untrusted_hop_wins() {
        // The client forged the first entry; the trusted proxy appended the real one.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"]), XForwardedFor),
            ip("198.51.100.7")
        );
        // Two header lines are one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7, 10.0.0.2"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &nets(&["10.0.0.0/8"]), XForwardedFor),
            ip("198.51.100.7")
        );
    }

    /// The attack: nginx appends to X-Forwarded-For and passes the client's own
    /// `Forwarded` through. Only the configured header is read, either way round.
    #[test]
    fn a_header_of_another_kind_is_never_read() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[
            ("forwarded", "for=192.0.2.60"),
            ("x-real-ip", "192.0.2.61"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, XForwardedFor),
            ip("198.51.100.7")
        );
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.60"),
            ("x-real-ip", "192.0.2.61"),
            ("forwarded", "for=198.51.100.7;proto=https"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, Forwarded),
            ip("198.51.100.7")
        );
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.60"),
            ("forwarded", "for=192.0.2.61"),
            ("x-real-ip", "198.51.100.7"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, XRealIp),
            ip("198.51.100.7")
        );
        // The configured header missing: the proxy itself, never another header.
        let h = headers(&[("forwarded", "for=192.0.2.60")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, XForwardedFor),
            ip("127.0.0.1")
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, NoHeader),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn chains_of_trusted_proxies_are_walked_through() {
        let trusted = nets(&["10.0.0.0/8", "fd00::/8"]);
        let h = headers(&[("x-forwarded-for", "203.0.113.5, 10.0.0.9, fd00::2")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, XForwardedFor),
            ip("203.0.113.5")
        );
        let h = headers(&[(
            "forwarded",
            "for=203.0.113.5, for=10.0.0.9;by=10.0.0.1, for=\"[fd00::2]:443\"",
        )]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, Forwarded),
            ip("203.0.113.5")
        );
        // Every hop trusted: the farthest of them.
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.8")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, XForwardedFor),
            ip("10.0.0.9")
        );
    }

    #[test]
    fn addresses_with_ports_and_brackets_are_read() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=https, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, Forwarded),
            ip("2001:db8:cafe::17")
        );
        for (value, expected) in [
            ("192.0.2.60:8080", "192.0.2.60"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("::ffff:192.0.2.60", "192.0.2.60"),
            ("\"192.0.2.60\"", "192.0.2.60"),
        ] {
            let h: HeaderMap = std::iter::once((
                hyper::header::HeaderName::from_static("x-real-ip"),
                value.parse().expect("value"),
            ))
            .collect();
            assert_eq!(
                client_ip(ip("127.0.0.1"), &h, &trusted, XRealIp),
                ip(expected),
                "{value}"
            );
        }
    }

    #[test]
    fn garbled_hop_stops_at_the_nearest_trusted_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        for (name, value, kind) in [
            ("x-forwarded-for", "198.51.100.7, garbage", XForwardedFor),
            ("x-forwarded-for", "198.51.100.7, ", XForwardedFor),
            ("x-forwarded-for", "198.51.100.7, 300.1.1.1", XForwardedFor),
            ("forwarded", "for=unknown", Forwarded),
            ("forwarded", "for=_hidden, for=198.51.100.7", Forwarded),
            ("forwarded", "by=10.0.0.1", Forwarded),
            ("x-real-ip", "not an address", XRealIp),
        ] {
            let h: HeaderMap = std::iter::once((
                hyper::header::HeaderName::from_static(name),
                value.parse().expect("value"),
            ))
            .collect();
            let got = client_ip(ip("10.0.0.1"), &h, &trusted, kind);
            let expected = if value.ends_with("for=198.51.100.7") {
                "198.51.100.7"
            } else {
                "10.0.0.1"
            };
            assert_eq!(got, ip(expected), "{name}: {value}");
        }
        // Bytes that are not text.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            hyper::header::HeaderValue::from_bytes(b"\xff198.51.100.7").expect("bytes"),
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, XForwardedFor),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn mapped_peer_is_canonical() {
        assert_eq!(
            client_ip(
                ip("::ffff:203.0.113.1"),
                &HeaderMap::new(),
                &[],
                XForwardedFor
            ),
            ip("203.0.113.1")
        );
    }
}
