//! Test support: HAProxy in the foreground, run from the shipped `packaging/haproxy.cfg` with
//! loopback addresses, ports and files put in, in front of two collectors. Std and the
//! crate's testkit only: the HAProxy test and the HAProxy bench include this file.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Where HAProxy listens, what it sends to, and the files it needs.
pub(crate) struct Layout<'a> {
    /// The two collectors, `node1` and `node2` of the shipped file.
    pub nodes: [SocketAddr; 2],
    /// HAProxy's own address towards the nodes, the one they take PROXY headers from.
    pub balancer: &'a str,
    /// The TCP frontend (browsers) and the relays' frontend, on 127.0.0.1.
    pub front: u16,
    pub relays: u16,
    /// The nodes' CA, which the relays' backend checks them against.
    pub nodes_ca: &'a Path,
    /// Where the config, HAProxy's certificate and its log go.
    pub dir: &'a Path,
}

/// HAProxy in the foreground, its output in a file; killed on drop.
pub(crate) struct HaProxy {
    child: Child,
    log: PathBuf,
}

impl HaProxy {
    /// Writes the config for `layout`, checks it with `haproxy -c` and starts HAProxy.
    pub(crate) fn start(layout: &Layout) -> HaProxy {
        let config = layout.dir.join("haproxy.cfg");
        std::fs::write(&config, config_text(layout)).expect("haproxy.cfg");
        let check = Command::new("haproxy")
            .args(["-c", "-f"])
            .arg(&config)
            .output()
            .expect("haproxy: scripts/test.sh installs it (apt-get install haproxy)");
        assert!(
            check.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let log = config.with_extension("log");
        let output = std::fs::File::create(&log).expect("haproxy's log");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(output.try_clone().expect("log"))
            .stderr(output)
            .spawn()
            .expect("haproxy");
        HaProxy { child, log }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped example with `layout`'s addresses, ports and files.
fn config_text(layout: &Layout) -> String {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/haproxy.cfg"),
    )
    .expect("packaging/haproxy.cfg");
    let dir = layout.dir;
    // The relays' frontend ends TLS with a certificate of its own (its CA is
    // `haproxy-tls/ca.pem`); the nodes' CAs, in one file, are what it checks the nodes against.
    let tls = dir.join("haproxy-tls");
    tracks_collector::testkit::generate_self_signed(
        &tls,
        &tracks_collector::testkit::local_names(),
    )
    .expect("haproxy's certificate");
    let read = |path: &Path| std::fs::read_to_string(path).expect("PEM");
    let pem = dir.join("collect.pem");
    std::fs::write(
        &pem,
        read(&tls.join("cert.pem")) + &read(&tls.join("key.pem")),
    )
    .expect("collect.pem");
    let cas = dir.join("collectors-ca.pem");
    std::fs::write(&cas, read(layout.nodes_ca)).expect("CA file");

    let replaced = [
        (
            "bind 0.0.0.0:443",
            format!("bind 127.0.0.1:{}", layout.front),
        ),
        (
            "bind 0.0.0.0:8443",
            format!("bind 127.0.0.1:{}", layout.relays),
        ),
        ("/etc/haproxy/certs/collect.pem", pem.display().to_string()),
        ("/etc/haproxy/collectors-ca.pem", cas.display().to_string()),
        ("10.0.0.11:443", layout.nodes[0].to_string()),
        ("10.0.0.12:443", layout.nodes[1].to_string()),
        (
            "defaults\n",
            format!("defaults\n    source {}\n", layout.balancer),
        ),
        // The test's open-file limit, not a server's.
        ("maxconn 20000", "maxconn 1000".to_string()),
    ];
    replaced.iter().fold(example, |text, (from, to)| {
        assert!(
            text.contains(from),
            "{from} is not in packaging/haproxy.cfg"
        );
        text.replace(from, to)
    })
}
