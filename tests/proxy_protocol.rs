//! The PROXY protocol v2 through the real binary over TLS, as HAProxy's `send-proxy-v2` sends
//! it in front of the TLS it passes through: a listed proxy's header names the client the
//! visit is pseudonymised as; a listed proxy without a header, a malformed header, and a
//! header from a peer that is not listed are each refused before TLS.

mod common;

use common::{Collector, Options, visit_on};
use tokio::io::AsyncWriteExt;

const SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A version 2 `PROXY` header for a TCP client at `client` (IPv4) talking to port 443.
fn header(client: [u8; 4]) -> Vec<u8> {
    let mut bytes = SIGNATURE.to_vec();
    bytes.extend([0x21, 0x11, 0, 12]);
    bytes.extend(client);
    bytes.extend([10, 0, 0, 1]);
    bytes.extend(51_000u16.to_be_bytes());
    bytes.extend(443u16.to_be_bytes());
    bytes
}

/// Sends `prefix`, then a visit over TLS; the status line, or the TLS error.
async fn visit_after(collector: &Collector, prefix: &[u8]) -> Result<String, String> {
    let mut tcp = tokio::net::TcpStream::connect(collector.addr)
        .await
        .expect("connect");
    tcp.write_all(prefix).await.expect("prefix");
    let ca = collector.ca.as_deref().expect("TLS");
    visit_on(
        tcp,
        &[ca],
        r#"{"url": "https://mygame.example/?utm_source=haproxy"}"#,
    )
    .await
}

fn pseudonyms(collector: &Collector) -> Vec<Vec<u8>> {
    let conn = collector.open_db();
    let mut statement = conn
        .prepare("SELECT ip_hash FROM collect_logs ORDER BY id")
        .expect("query");
    statement
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("hashes")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listed_proxys_header_names_the_client_and_anything_else_is_refused() {
    let collector = Collector::start(Options {
        server_extra: "proxy_protocol_from = [\"127.0.0.1/32\"]".into(),
        ..Options::default()
    });
    // Two visits from one client, one from another, all through the same proxy.
    for client in [[203, 0, 113, 9], [203, 0, 113, 9], [198, 51, 100, 7]] {
        let answer = visit_after(&collector, &header(client)).await;
        assert_eq!(answer.as_deref(), Ok("HTTP/1.1 204 No Content"));
    }
    let hashes = pseudonyms(&collector);
    assert_eq!(hashes.len(), 3);
    assert_eq!(hashes[0], hashes[1], "one client, one pseudonym");
    assert_ne!(
        hashes[0], hashes[2],
        "the header's client, not the proxy's address"
    );

    // A listed proxy without a header, and with a malformed one: refused before TLS.
    assert!(visit_after(&collector, b"").await.is_err());
    let mut malformed = header([203, 0, 113, 9]);
    malformed.truncate(20);
    malformed[15] = 12;
    malformed.extend([0xff; 4]);
    malformed[13] = 0x31; // an address family that does not exist
    assert!(visit_after(&collector, &malformed).await.is_err());
    assert_eq!(pseudonyms(&collector).len(), 3, "nothing stored");
    for reason in ["proxy_header_missing", "proxy_header_malformed"] {
        let logs = collector.logs_once_they_contain(reason);
        assert!(logs.contains(reason), "{reason} not logged: {logs}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_from_a_peer_that_is_not_listed_is_refused() {
    let collector = Collector::start(Options {
        server_extra: "proxy_protocol_from = [\"192.0.2.1/32\"]".into(),
        ..Options::default()
    });
    // Loopback is not the listed proxy: its own visits are served as they come...
    let answer = visit_after(&collector, b"").await;
    assert_eq!(answer.as_deref(), Ok("HTTP/1.1 204 No Content"));
    // ... and a header it sends, claiming to be someone, is refused.
    assert!(
        visit_after(&collector, &header([203, 0, 113, 9]))
            .await
            .is_err()
    );
    assert_eq!(pseudonyms(&collector).len(), 1);
    let logs = collector.logs_once_they_contain("proxy_header_untrusted");
    assert!(logs.contains("proxy_header_untrusted"), "{logs}");
}
