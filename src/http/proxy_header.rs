//! HTTP: the PROXY protocol, version 2, as HAProxy's `send-proxy-v2` writes it in front of the
//! TLS bytes it passes through (`mode tcp`), so the collector sees each client's own address.
//! Only the peers in `server.proxy_protocol_from` may send it, and they must: a header from
//! any other peer, a malformed one, or none where one is required is refused before TLS.

use std::net::SocketAddr;

use ipnet::IpNet;
use ppp::v2::{Addresses, Command, Header};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What every version 2 header starts with.
const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The fixed part: signature, version and command, family, length.
const FIXED: usize = 16;
/// The longest address and TLV part read: HAProxy's TLVs (ALPN, authority, SSL) fit well within.
const MOST_PAYLOAD: usize = 1024;

/// The connection's client address: the header's source when the peer is a listed proxy, the
/// peer itself otherwise. The refusal's reason, as counted, when neither holds.
pub(super) async fn client_of(
    stream: &mut TcpStream,
    peer: SocketAddr,
    proxies: &[IpNet],
) -> Result<SocketAddr, &'static str> {
    if proxies.is_empty() {
        return Ok(peer);
    }
    let listed = proxies
        .iter()
        .any(|net| net.contains(&peer.ip().to_canonical()));
    if !listed {
        // No TLS record or HTTP request starts with CR: a header from an unlisted peer.
        let mut first = [0u8; 1];
        return match stream.peek(&mut first).await {
            Ok(1) if first[0] == SIGNATURE[0] => Err("proxy_header_untrusted"),
            _ => Ok(peer),
        };
    }
    let mut fixed = [0u8; FIXED];
    if stream.read_exact(&mut fixed).await.is_err() || &fixed[..12] != SIGNATURE {
        return Err("proxy_header_missing");
    }
    let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if length > MOST_PAYLOAD {
        return Err("proxy_header_malformed");
    }
    let mut whole = fixed.to_vec();
    whole.resize(FIXED + length, 0);
    if stream.read_exact(&mut whole[FIXED..]).await.is_err() {
        return Err("proxy_header_malformed");
    }
    source(&whole, peer)
}

/// The source address a whole header names; a health check's `LOCAL` header names none, and
/// the connection is the proxy's own.
fn source(whole: &[u8], peer: SocketAddr) -> Result<SocketAddr, &'static str> {
    let header = Header::try_from(whole).map_err(|_| "proxy_header_malformed")?;
    if header.command == Command::Local {
        return Ok(peer);
    }
    match header.addresses {
        Addresses::IPv4(ipv4) => Ok(SocketAddr::from((ipv4.source_address, ipv4.source_port))),
        Addresses::IPv6(ipv6) => Ok(SocketAddr::from((ipv6.source_address, ipv6.source_port))),
        // A proxied connection must say whose it is.
        _ => Err("proxy_header_malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut bytes = SIGNATURE.to_vec();
        bytes.push(command);
        bytes.push(family);
        bytes.extend((addresses.len() as u16).to_be_bytes());
        bytes.extend(addresses);
        bytes
    }

    #[test]
    fn the_source_of_a_proxied_connection_is_the_client() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("peer");
        let ipv4 = header(
            0x21,
            0x11,
            &[203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 1, 187],
        );
        assert_eq!(
            source(&ipv4, peer),
            Ok("203.0.113.9:8080".parse().expect("addr"))
        );
        let local = header(0x20, 0x00, &[]);
        assert_eq!(source(&local, peer), Ok(peer));
        let short = header(0x21, 0x11, &[203, 0, 113]);
        assert_eq!(source(&short, peer), Err("proxy_header_malformed"));
        let unspecified = header(0x21, 0x00, &[]);
        assert_eq!(source(&unspecified, peer), Err("proxy_header_malformed"));
    }
}
