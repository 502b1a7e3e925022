//! Certificates by themselves, against a real ACME server: Pebble (Let's Encrypt's test CA,
//! the Debian package), its names resolved to 127.0.0.1 by `pebble-challtestsrv`, and
//! TLS-ALPN-01 answered on the collector's own port. One story: the collector starts while the
//! CA is down (it keeps trying and says why), gets a certificate once it is up (issued by
//! Pebble's CA, which a client then trusts), serves the cached one after a restart without
//! ordering again, and renews a short-lived one before it expires, while clients keep
//! connecting.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::central::free_port;
use common::{Alpn, Collector, Options, tls_connector};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracks_collector::testkit::SecretHash;

const DOMAIN: &str = "collect.test";
const METRICS_TOKEN: &str = "tc_test_metrics_token";
/// Seconds a Pebble certificate is valid: renewal is due at two thirds of it.
const VALIDITY_SECS: u64 = 45;

/// Pebble and its DNS, killed when dropped.
struct Pebble {
    processes: Vec<Child>,
    management: u16,
    /// The CA of Pebble's own HTTPS (made by the test), which the collector trusts.
    https_ca: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn available() -> bool {
    Command::new("pebble").arg("-h").output().is_ok()
}

/// Starts Pebble validating TLS-ALPN-01 on `tls_port`, every name resolving to 127.0.0.1.
fn start_pebble(dir: &Path, acme_port: u16, tls_port: u16) -> Pebble {
    // Pebble's own HTTPS certificate: made once, kept by a restarted Pebble.
    let tls = dir.join("pebble-tls");
    if !tls.join("ca.pem").exists() {
        tracks_collector::testkit::generate_self_signed(
            &tls,
            &tracks_collector::testkit::local_names(),
        )
        .expect("pebble's certificate");
    }
    let (cert, key, https_ca) = (
        tls.join("cert.pem"),
        tls.join("key.pem"),
        tls.join("ca.pem"),
    );
    let (dns, challenges, management) = (free_port(), free_port(), free_port());
    let config = dir.join("pebble.json");
    std::fs::write(
        &config,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": free_port(),
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": VALIDITY_SECS,
        }})
        .to_string(),
    )
    .expect("pebble config");
    let resolver = Command::new("pebble-challtestsrv")
        .args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            &format!("127.0.0.1:{challenges}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv");
    let ca = Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble");
    let pebble = Pebble {
        processes: vec![resolver, ca],
        management,
        https_ca,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    pebble
}

/// Pebble's root, which signs what it issues.
fn pebble_root(pebble: &Pebble, dir: &Path) -> PathBuf {
    let path = dir.join("pebble-root.pem");
    let fetched = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(&pebble.https_ca)
        .arg(format!("https://127.0.0.1:{}/roots/0", pebble.management))
        .output()
        .expect("curl");
    assert!(fetched.status.success(), "pebble's root");
    std::fs::write(&path, fetched.stdout).expect("root");
    path
}

/// `GET /healthz` as `DOMAIN` over TLS, trusting only `root`: the status line and which
/// certificate answered, or why not.
async fn healthz(addr: std::net::SocketAddr, root: &Path) -> Result<String, String> {
    get(addr, root, "/healthz", "")
        .await
        .map(|(status, _, serial)| format!("{status} serial={serial}"))
}

/// `GET path` as `DOMAIN` over TLS with `headers` (lines ending in CRLF): the status line, the
/// body and a hash of the served certificate.
async fn get(
    addr: std::net::SocketAddr,
    root: &Path,
    path: &str,
    headers: &str,
) -> Result<(String, String, String), String> {
    let connector = tls_connector(&[root], Alpn::Http1);
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|err| err.to_string())?;
        let name = ServerName::try_from(DOMAIN).map_err(|err| err.to_string())?;
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|err| err.to_string())?;
        let serial = {
            let (_, connection) = tls.get_ref();
            let leaf = connection
                .peer_certificates()
                .and_then(|chain| chain.first())
                .ok_or("no certificate")?;
            x509_serial(leaf)
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\n{headers}Connection: close\r\n\r\n");
        tls.write_all(request.as_bytes())
            .await
            .map_err(|err| err.to_string())?;
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        let status = answer.lines().next().unwrap_or_default().to_string();
        let body = answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .to_string();
        Ok((status, body, serial))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

/// The certificate's bytes' hash: what changes when a new certificate is served.
fn x509_serial(der: &[u8]) -> String {
    blake3::hash(der).to_hex()[..16].to_string()
}

/// A metric's value, read over TLS as `DOMAIN`.
async fn metric(addr: std::net::SocketAddr, root: &Path, name: &str) -> Option<u64> {
    let headers = format!("Authorization: Bearer {METRICS_TOKEN}\r\n");
    let (_, body, _) = get(addr, root, "/metrics", &headers).await.ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
}

async fn wait_for(
    addr: std::net::SocketAddr,
    root: &Path,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        match healthz(addr, root).await {
            Ok(answer) if done(&answer) => return answer,
            Ok(answer) => last = answer,
            Err(err) => last = err,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("not within {within:?}; last: {last}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_ordered_cached_and_renewed_from_pebble() {
    if !available() {
        panic!("pebble is not installed: scripts/test.sh installs it (apt-get install pebble)");
    }
    let dir = tempfile::tempdir().expect("dir");
    let acme_port = free_port();
    let https_ca = dir.path().join("pebble-tls/ca.pem");
    let mut collector = Collector::start(Options {
        acme: Some(format!(
            "[server.acme]\ndomains = [\"{DOMAIN}\"]\ncontact = \"mailto:ops@studio.example\"\n\
             directory = \"https://127.0.0.1:{acme_port}/dir\"\nca_file = \"{}\"\n",
            https_ca.display()
        )),
        extra: format!(
            "[[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string()
        ),
        ..Options::default()
    });
    let addr = collector.addr;

    // The CA is down (not even started): the collector keeps trying and says why.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !collector
        .logs()
        .contains("ordering an ACME certificate failed")
    {
        assert!(
            Instant::now() < deadline,
            "no failure logged: {}",
            collector.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(collector.logs().contains("no certificate is served yet"));
    // A monitor that skips verification reaches /healthz, which says why.
    let probe = Command::new("curl")
        .args(["-sk", "-w", " %{http_code}"])
        .arg(format!("https://127.0.0.1:{}/healthz", addr.port()))
        .output()
        .expect("curl");
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(
        said.contains("no_certificate") && said.ends_with(" 503"),
        "{said}"
    );

    // The CA comes up: the next attempt gets a certificate that Pebble's root signs.
    let pebble = start_pebble(dir.path(), acme_port, addr.port());
    let root = pebble_root(&pebble, dir.path());
    let first = wait_for(addr, &root, Duration::from_secs(60), |answer| {
        answer.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(collector.logs().contains("ordered an ACME certificate"));
    let cache = collector.state_dir.join("acme");
    for name in ["account.json", "cert.pem", "key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cache.join(name))
            .expect(name)
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    assert!(
        !collector.logs().contains("\"d\":"),
        "the account key is never logged"
    );

    // The CA goes down; a restart serves the cached certificate and orders nothing.
    drop(pebble);
    collector.terminate();
    collector.start_again();
    let again = wait_for(addr, &root, Duration::from_secs(10), |answer| {
        answer.starts_with("HTTP/1.1 200")
    })
    .await;
    assert_eq!(again, first, "the same certificate after the restart");
    assert!(
        collector
            .logs()
            .contains("serving the cached ACME certificate")
    );
    assert_eq!(
        metric(addr, &root, "tracks_acme_orders_total").await,
        Some(0),
        "an order after the restart"
    );
    let expiry = metric(addr, &root, "tracks_certificate_expiry_timestamp_seconds")
        .await
        .unwrap_or(0);
    let now = tracks_collector::unix_now() as u64;
    assert!(
        expiry > now && expiry <= now + VALIDITY_SECS,
        "{expiry} against {now}"
    );

    // At two thirds of its life the renewal fails (the CA is down): logged, and the cached
    // certificate is still served.
    let deadline = Instant::now() + Duration::from_secs(VALIDITY_SECS);
    while !collector
        .logs()
        .contains("the current certificate is served meanwhile")
    {
        assert!(
            Instant::now() < deadline,
            "no failed renewal: {}",
            collector.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(healthz(addr, &root).await.as_deref(), Ok(first.as_str()));

    // The CA is back (a new instance: a new root, and the account forgotten): the next try
    // renews, before the old certificate expires, while connections go on.
    let pebble = start_pebble(dir.path(), acme_port, addr.port());
    let new_root = pebble_root(&pebble, dir.path());
    let renewed = wait_for(
        addr,
        &new_root,
        Duration::from_secs(VALIDITY_SECS),
        |answer| answer.starts_with("HTTP/1.1 200"),
    )
    .await;
    assert_ne!(renewed, first);
    assert_eq!(
        metric(addr, &new_root, "tracks_acme_last_order_success").await,
        Some(1)
    );
    drop(pebble);
}
