//! Operations through the real binary: SIGHUP swaps the TLS certificate without dropping open
//! connections (and keeps the last good one when the new files are bad), and JSON logs are one
//! JSON object per line with no personal data.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Collector, MEASURE_KEY, Options};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

const RELOADED: &str = "reloaded the TLS certificate";
const KEPT: &str = "kept the old TLS certificate";

/// An open HTTP/1.1 keep-alive connection over TLS, and the certificate it was served.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    leaf: CertificateDer<'static>,
}

impl Connection {
    /// Connects trusting every CA in `cas`, so the test sees which certificate the server chose
    /// rather than a verification failure.
    async fn open(addr: SocketAddr, cas: &[&Path]) -> Connection {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let stream = common::tls_connector(cas, common::Alpn::Http1)
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake");
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .expect("a server certificate")
            .clone()
            .into_owned();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(connection);
        Connection { sender, leaf }
    }

    /// `GET /healthz` on this connection; the status.
    async fn healthz(&mut self) -> u16 {
        self.sender.ready().await.expect("connection still open");
        let request = hyper::Request::get("/healthz")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let response = self
            .sender
            .send_request(request)
            .await
            .expect("an answer on the open connection");
        let status = response.status().as_u16();
        response.into_body().collect().await.expect("body");
        status
    }
}

/// The leaf (first) certificate of a PEM chain file.
fn leaf_of(chain: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(chain)
        .expect("chain file")
        .next()
        .expect("a certificate")
        .expect("PEM")
}

/// Replaces `to` with a copy of `from` the way certbot's deploy hooks do: a new file renamed
/// over the old one, so the daemon never reads half a file.
fn replace(from: &Path, to: &Path) {
    let temporary = to.with_extension("tmp");
    std::fs::copy(from, &temporary).expect("copy");
    std::fs::rename(&temporary, to).expect("rename");
}

fn hangup(collector: &Collector) {
    let status = Command::new("kill")
        .args(["-HUP", &collector.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

/// Waits until the log holds `count` lines with this message; returns the last one.
fn wait_for_log(collector: &Collector, message: &str, count: usize) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<serde_json::Value> = collector
            .logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|json| json["message"] == message)
            .collect();
        if lines.len() >= count {
            return lines.last().cloned().expect("a line");
        }
        assert!(
            Instant::now() < deadline,
            "no {message:?} log line within 10 s; logs:\n{}",
            collector.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let collector = Collector::start(Options::default());
    let tls_dir = collector.dir.path().join("tls");
    let (cert, key) = (tls_dir.join("cert.pem"), tls_dir.join("key.pem"));
    let old_ca = collector.ca.clone().expect("TLS is on");
    let old_leaf = leaf_of(&cert);

    // A renewal: a new key and a certificate from another CA, so nothing about it is shared.
    let renewal = collector.dir.path().join("renewal");
    let generated =
        tracks_collector::testkit::generate_self_signed(&renewal, &["localhost".to_string()])
            .expect("certificate");
    let new_ca: PathBuf = generated.ca;
    let new_leaf = leaf_of(&generated.files.cert);
    assert_ne!(old_leaf, new_leaf);
    let cas = [old_ca.as_path(), new_ca.as_path()];

    let mut before = Connection::open(collector.addr, &cas).await;
    assert_eq!(before.leaf, old_leaf);
    assert_eq!(before.healthz().await, 200);

    replace(&generated.files.key, &key);
    replace(&generated.files.cert, &cert);
    hangup(&collector);
    wait_for_log(&collector, RELOADED, 1);

    let mut after = Connection::open(collector.addr, &cas).await;
    assert_eq!(
        after.leaf, new_leaf,
        "a new connection gets the new certificate"
    );
    assert_eq!(after.healthz().await, 200);
    assert_eq!(
        before.healthz().await,
        200,
        "the connection opened before the reload still answers"
    );

    // A broken certificate file: the last good certificate stays, and the log says why.
    std::fs::write(&cert, "not a certificate\n").expect("write");
    hangup(&collector);
    let kept = wait_for_log(&collector, KEPT, 1);
    assert_eq!(kept["level"], "ERROR");
    let why = kept["error"].as_str().expect("an error field");
    assert!(
        why.contains(&cert.display().to_string()) && why.contains("no CERTIFICATE block"),
        "the log names the file and the reason: {why}"
    );
    let mut broken = Connection::open(collector.addr, &cas).await;
    assert_eq!(
        broken.leaf, new_leaf,
        "the last good certificate is still served"
    );
    assert_eq!(broken.healthz().await, 200);

    // A valid certificate whose key was not replaced with it: refused the same way.
    let stranger = collector.dir.path().join("stranger");
    let other =
        tracks_collector::testkit::generate_self_signed(&stranger, &["localhost".to_string()])
            .expect("certificate");
    replace(&other.files.cert, &cert);
    hangup(&collector);
    let kept = wait_for_log(&collector, KEPT, 2);
    let why = kept["error"].as_str().expect("an error field");
    assert!(why.contains("do not belong together"), "{why}");
    let mut mismatched = Connection::open(collector.addr, &cas).await;
    assert_eq!(mismatched.leaf, new_leaf);
    assert_eq!(mismatched.healthz().await, 200);

    assert_eq!(
        before.healthz().await,
        200,
        "still the same open connection"
    );
    assert_eq!(after.healthz().await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_line_without_personal_data() {
    const CANARY_IP: &str = "203.0.113.58";
    const CANARY_USER: &str = "canary-user-4e1d7b";
    let mut collector = Collector::start(Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        log_level: "debug".into(),
        ..Options::default()
    });
    let client = collector.client();
    let visit = client
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://landing.example/?utm_source=news"}"#,
            &[("x-forwarded-for", CANARY_IP)],
        )
        .await;
    assert_eq!(visit.status, 204);
    let auth = format!("Bearer {MEASURE_KEY}");
    let open = client
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            format!("user_id={CANARY_USER}&event_name=game_open&ip={CANARY_IP}"),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(open.status, 200);
    let refused = client
        .post(
            "/measure",
            "application/json",
            format!(r#"{{"user_id": "{CANARY_USER}", "event_name": "nope", "ip": "{CANARY_IP}"}}"#),
            &[("authorization", &auth), ("x-forwarded-for", CANARY_IP)],
        )
        .await;
    assert_eq!(refused.status, 400);
    // An error and a shutdown are logged too.
    std::fs::write(collector.dir.path().join("tls").join("cert.pem"), "broken").expect("write");
    hangup(&collector);
    wait_for_log(&collector, KEPT, 1);
    assert!(collector.terminate().success());

    let logs = collector.logs();
    let mut messages = Vec::new();
    for line in logs.lines() {
        let json: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("a log line is not JSON ({err}): {line}"));
        assert!(json.is_object(), "not an object: {line}");
        for field in ["timestamp", "level", "target", "message"] {
            assert!(json.get(field).is_some(), "no {field:?} in {line}");
        }
        assert!(
            !line.contains(CANARY_IP) && !line.contains(CANARY_USER),
            "personal data in the log: {line}"
        );
        messages.push(json["message"].as_str().unwrap_or_default().to_string());
    }
    for expected in ["tracks-collector is listening", KEPT, "shutdown requested"] {
        assert!(
            messages.iter().any(|message| message == expected),
            "no {expected:?} line in:\n{logs}"
        );
    }
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    // journald stores what it is given: escape codes would show up as raw bytes.
    let dir = tempfile::tempdir().expect("temp dir");
    tracks_collector::testkit::DbKey::generate()
        .expect("key")
        .write_new_file(&dir.path().join("db.key"))
        .expect("key file");
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = false\n\n[storage]\npath = \"collector.db\"\n\
         key_file = \"db.key\"\n\n[log]\nformat = \"text\"\n",
    )
    .expect("config");
    let mut child = Command::new(common::binary())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let stderr = child.stderr.take().expect("stderr");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stderr), &mut first).expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("INFO"), "a log line: {first:?}");
    assert!(!first.contains('\u{1b}'), "escape codes in {first:?}");
}
