//! Test support: the real `tracks-collector` binary in a temp directory on 127.0.0.1:0, with
//! its logs captured, and a TLS client that speaks HTTP/1.1 or HTTP/2 (by ALPN).
#![allow(dead_code)]

pub(crate) mod central;
pub(crate) mod haproxy;
pub(crate) mod mmdb;
pub(crate) mod pages;
pub(crate) mod relay;
pub(crate) mod world;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tracks_collector::testkit::DbKey;
use tracks_collector::testkit::SecretHash;

/// The measure key of the test game `test-game`.
pub(crate) const MEASURE_KEY: &str = "mk_test_measure_key_for_the_test_game";
/// The measure key of the second game `other-game`.
pub(crate) const OTHER_MEASURE_KEY: &str = "mk_test_measure_key_for_the_other_game";

pub(crate) const IPHONE_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";

/// How the test collector is configured.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub tls: bool,
    /// Extra TOML appended to `[server]` (e.g. `trusted_proxies = ["127.0.0.1/32"]`).
    pub server_extra: String,
    /// Extra TOML appended to `[storage]` (e.g. `cache_mib = 2`).
    pub storage_extra: String,
    /// Extra top-level TOML appended at the end of the file.
    pub extra: String,
    pub log_level: String,
    /// Shell commands run before the binary replaces the shell (`exec`), such as
    /// `ulimit -Sn 256`; empty starts the binary directly.
    pub shell_prefix: String,
    /// The folder of the database and its key, when not `state` in the temp dir: e.g. a small
    /// file system the test mounted.
    pub state_dir: Option<PathBuf>,
    /// Environment variables the binary gets (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
    /// A `[server.acme]` table: the certificate comes from ACME, no files are written.
    pub acme: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tls: true,
            server_extra: String::new(),
            storage_extra: String::new(),
            extra: String::new(),
            log_level: "debug".into(),
            shell_prefix: String::new(),
            state_dir: None,
            env: Vec::new(),
            acme: None,
        }
    }
}

/// A running collector; killed (SIGKILL) on drop.
pub(crate) struct Collector {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub db_path: PathBuf,
    pub key_file: PathBuf,
    pub ca: Option<PathBuf>,
    pub addr: SocketAddr,
    child: Option<Child>,
    logs: Arc<Mutex<String>>,
    shell_prefix: String,
    env: Vec<(String, String)>,
}

/// The binary under test: the one Cargo built for these tests, or `TRACKS_TEST_BINARY`, a copy
/// kept apart where several checkouts share one target folder (and so one
/// `target/debug/tracks-collector`).
pub(crate) fn binary() -> &'static str {
    static BINARY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var("TRACKS_TEST_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tracks-collector").to_string())
    })
}

impl Collector {
    pub(crate) fn start(options: Options) -> Collector {
        let dir = tempfile::tempdir().expect("temp dir");
        let (state_dir, state_in_config) = match &options.state_dir {
            Some(state_dir) => (state_dir.clone(), state_dir.display().to_string()),
            None => {
                let state_dir = dir.path().join("state");
                std::fs::create_dir(&state_dir).expect("state dir");
                (state_dir, "state".to_string())
            }
        };
        let key_file = state_dir.join("db.key");
        DbKey::generate()
            .expect("key")
            .write_new_file(&key_file)
            .expect("key file");
        let (tls_lines, ca) = if options.acme.is_some() {
            (String::new(), None)
        } else if options.tls {
            let generated = tracks_collector::testkit::generate_self_signed(
                &dir.path().join("tls"),
                &tracks_collector::testkit::local_names(),
            )
            .expect("certificate");
            (
                "tls_cert = \"tls/cert.pem\"\ntls_key = \"tls/key.pem\"\n".to_string(),
                Some(generated.ca),
            )
        } else {
            ("tls = false\n".to_string(), None)
        };
        let config = format!(
            r#"[server]
listen = "127.0.0.1:0"
{tls_lines}{server_extra}

[storage]
path = "{state_in_config}/collector.db"
key_file = "{state_in_config}/db.key"
{storage_extra}

[log]
level = "{level}"
format = "json"

[[games]]
id = "test-game"
measure_key = "{key}"

[[games]]
id = "other-game"
measure_key = "{other_key}"
events = ["game_open", "level_up"]

{extra}
"#,
            server_extra = options.server_extra,
            storage_extra = options.storage_extra,
            level = options.log_level,
            key = SecretHash::of(MEASURE_KEY.as_bytes()).to_config_string(),
            other_key = SecretHash::of(OTHER_MEASURE_KEY.as_bytes()).to_config_string(),
            extra = options.extra,
        ) + options.acme.as_deref().unwrap_or("");
        let config_path = dir.path().join("collector.toml");
        std::fs::write(&config_path, config).expect("config file");
        let mut collector = Collector {
            db_path: state_dir.join("collector.db"),
            dir,
            config_path,
            state_dir,
            key_file,
            ca,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: None,
            logs: Arc::new(Mutex::new(String::new())),
            shell_prefix: options.shell_prefix,
            env: options.env,
        };
        collector.launch();
        collector
    }

    /// Starts the binary and waits for its "listening" log line, which carries the port.
    fn launch(&mut self) {
        let mut command = if self.shell_prefix.is_empty() {
            Command::new(binary())
        } else {
            // `exec` keeps the process id: `pid()` is the collector's, not the shell's.
            let mut shell = Command::new("bash");
            shell
                .arg("-c")
                .arg(format!("{}; exec \"$0\" \"$@\"", self.shell_prefix))
                .arg(binary());
            shell
        };
        let mut child = command
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .env_remove("RUST_LOG")
            .env_remove("TRACKS_DB_KEY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tracks-collector");
        let stderr = child.stderr.take().expect("stderr pipe");
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["message"] == "tracks-collector is listening"
                    && let Some(address) = json["address"].as_str()
                    && let Ok(address) = address.parse::<SocketAddr>()
                {
                    let _ = address_tx.send(address);
                }
                if let Ok(mut logs) = logs.lock() {
                    logs.push_str(&line);
                    logs.push('\n');
                }
            }
        });
        self.child = Some(child);
        match address_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(address) => self.addr = address,
            Err(_) => {
                let status = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                panic!(
                    "the collector did not start (exit: {status:?}); logs:\n{}",
                    self.logs()
                );
            }
        }
    }

    pub(crate) fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Starts the binary again after `kill9`, on the port it had: a client that keeps the
    /// collector's address (a relay, a game build) finds it back.
    pub(crate) fn start_again(&mut self) {
        assert!(self.child.is_none(), "the collector still runs");
        let config = std::fs::read_to_string(&self.config_path).expect("config");
        let listen = format!("listen = \"{}\"", self.addr);
        let config = config.replacen("listen = \"127.0.0.1:0\"", &listen, 1);
        std::fs::write(&self.config_path, config).expect("config");
        self.launch();
    }

    pub(crate) fn logs(&self) -> String {
        self.logs
            .lock()
            .map(|logs| logs.clone())
            .unwrap_or_default()
    }

    /// The logs once they contain `needle`, or after a few seconds without it: a
    /// refused connection reaches the client before the daemon's log line does.
    pub(crate) fn logs_once_they_contain(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let logs = self.logs();
            if logs.contains(needle) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then waits for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        self.wait_exit()
    }

    /// Waits (at most 20 s) for a process that was told to stop.
    pub(crate) fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                // Let the log thread drain the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(self.addr, self.ca.as_deref(), Alpn::Http1)
    }

    pub(crate) fn h2_client(&self) -> Client {
        Client::new(self.addr, self.ca.as_deref(), Alpn::H2)
    }

    /// The database decrypted with its key, as any SQLCipher 4 client would open it.
    pub(crate) fn open_db(&self) -> rusqlite::Connection {
        open_db(&self.db_path, &self.key_file)
    }

    /// Runs a command of the binary on this collector's configuration (beside the daemon, if
    /// it runs) and asserts it succeeded.
    pub(crate) fn run_command(&self, args: &[&str]) -> std::process::Output {
        let output = Command::new(binary())
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env_remove("TRACKS_DB_KEY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .expect("run tracks-collector");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    pub(crate) fn count(&self, table: &str) -> i64 {
        self.open_db()
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) fn open_db(path: &Path, key_file: &Path) -> rusqlite::Connection {
    let key = std::fs::read_to_string(key_file).expect("key file");
    // As the store does: SQLite fully started before this thread keys a connection.
    tracks_collector::testkit::start_sqlite().expect("SQLite");
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open database");
    conn.execute_batch(&format!("PRAGMA key = \"x'{}'\";", key.trim()))
        .expect("key");
    conn
}

/// Calls `each` with every row of every table and its column count: the tables are found in
/// `sqlite_master`, so a table added later cannot hide from a scan.
pub(crate) fn each_row(
    conn: &rusqlite::Connection,
    mut each: impl FnMut(&str, &rusqlite::Row<'_>, usize),
) {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .expect("tables");
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\""))
            .expect("select");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            each(&table, row, columns);
        }
    }
}

/// Every stored value of every table as text (blobs in hex), for canary scans.
pub(crate) fn dump_rows(conn: &rusqlite::Connection) -> String {
    let mut out = String::new();
    each_row(conn, |_, row, columns| {
        for index in 0..columns {
            let value: rusqlite::types::Value = row.get(index).expect("value");
            match value {
                rusqlite::types::Value::Text(text) => out.push_str(&text),
                rusqlite::types::Value::Blob(blob) => {
                    out.push_str(&hex::encode(&blob));
                    out.push_str(&String::from_utf8_lossy(&blob));
                }
                other => out.push_str(&format!("{other:?}")),
            }
            out.push('\t');
        }
        out.push('\n');
    });
    out
}

/// Every blob, in every table of the decrypted database, that holds one of the 16-byte
/// `hashes`, as "table: blob".
pub(crate) fn tables_holding(conn: &rusqlite::Connection, hashes: &[[u8; 16]]) -> Vec<String> {
    let mut found = Vec::new();
    each_row(conn, |table, row, columns| {
        for column in 0..columns {
            if let Ok(rusqlite::types::ValueRef::Blob(blob)) = row.get_ref(column)
                && hashes.iter().any(|hash| contains(blob, hash))
            {
                found.push(format!("{table}: {}", hex::encode(blob)));
            }
        }
    });
    found
}

/// The binary serving `config`, its wall clock set to `start` (unix seconds) by faketime and
/// running on from there; its log piped. faketime forks the daemon and does not forward
/// signals: stop it with [`terminate_group`].
pub(crate) fn serve_at(config: &Path, start: i64) -> Child {
    let start_text = chrono::DateTime::from_timestamp(start, 0)
        .expect("time")
        .format("@%Y-%m-%d %H:%M:%S")
        .to_string();
    Command::new("faketime")
        .arg("-f")
        .arg(&start_text)
        .arg(binary())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("TZ", "UTC")
        // Real monotonic time keeps tokio's timers sane; only the wall clock moves.
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("faketime")
}

/// SIGTERM to the process group of `child` (faketime and the daemon), then its output.
pub(crate) fn terminate_group(child: Child) -> std::process::Output {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status();
    child.wait_with_output().expect("wait")
}

/// Every byte of every file under `dir` (a socket, such as the daemon's control socket, holds
/// none).
pub(crate) fn read_tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                pending.push(entry.expect("entry").path());
            }
        } else if path.is_file() {
            files.push((path.clone(), std::fs::read(&path).expect("read file")));
        }
    }
    files
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    Http1,
    H2,
}

/// A minimal HTTP client: one connection per request, TLS trusting the test CA.
pub(crate) struct Client {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// What a test looks at in an answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub version: hyper::Version,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The `error` code of a JSON error body.
    pub(crate) fn error_code(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A landing-page visit (`body`, JSON) over TLS on the open connection `tcp`, to `localhost`
/// as `cas` sign it, closed after the answer: the status line, or why there is none (at most
/// 10 s).
pub(crate) async fn visit_on(
    tcp: tokio::net::TcpStream,
    cas: &[&Path],
    body: &str,
) -> Result<String, String> {
    post_on(tcp, cas, "/collect", "", body).await
}

/// A JSON POST to `path` over TLS on `tcp`, with `headers` (each line ending in CRLF) added;
/// the status line, or why there is none.
pub(crate) async fn post_on(
    tcp: tokio::net::TcpStream,
    cas: &[&Path],
    path: &str,
    headers: &str,
    body: &str,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = tls_connector(cas, Alpn::Http1)
            .connect(name, tcp)
            .await
            .map_err(|err| err.to_string())?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|err| err.to_string())?;
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer).await;
        Ok(answer.lines().next().unwrap_or_default().to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".into()))
}

/// A TLS client trusting only the CAs in `cas` (PEM files), offering `alpn`.
pub(crate) fn tls_connector(cas: &[&Path], alpn: Alpn) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
            roots.add(cert.expect("ca cert")).expect("add root");
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2 => vec![b"h2".to_vec()],
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl Client {
    pub(crate) fn new(addr: SocketAddr, ca: Option<&Path>, alpn: Alpn) -> Client {
        let tls = ca.map(|ca| tls_connector(&[ca], alpn));
        Client { addr, tls }
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", content_type);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::new(body.into())).expect("request"))
            .await
    }

    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.method("GET", path, headers).await
    }

    pub(crate) async fn method(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Full::new(Bytes::new())).expect("request"))
            .await
    }

    /// Sends `request` byte for byte (a request no HTTP library would build) and returns the
    /// whole answer as text. The request should say `Connection: close`.
    pub(crate) async fn raw(&self, request: &[u8]) -> String {
        use tokio::io::AsyncReadExt;
        let mut answer = Vec::new();
        let exchange = async {
            let mut stream = self.write_raw(request).await;
            // A close without close_notify is fine here: the answer is complete.
            let _ = stream.read_to_end(&mut answer).await;
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("a raw answer within 10 s");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Sends `request` byte for byte and reads nothing: the answer is as good as lost. The
    /// connection stays open until the returned value is dropped, so that the server reads the
    /// whole request (closing at once, with the session tickets unread, resets it).
    pub(crate) async fn send_unanswered(&self, request: &[u8]) -> Box<dyn RawStream> {
        self.write_raw(request).await
    }

    /// A new connection (TLS when the collector has it) with `request` written and flushed.
    async fn write_raw(&self, request: &[u8]) -> Box<dyn RawStream> {
        use tokio::io::AsyncWriteExt;
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        let mut stream: Box<dyn RawStream> = match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from("localhost").expect("name");
                Box::new(connector.connect(name, tcp).await.expect("TLS handshake"))
            }
            None => Box::new(tcp),
        };
        stream.write_all(request).await.expect("write");
        stream.flush().await.expect("flush");
        stream
    }

    pub(crate) async fn send(&self, request: hyper::Request<Full<Bytes>>) -> Answer {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from("localhost").expect("name");
                let stream = connector.connect(name, tcp).await.expect("TLS handshake");
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                exchange(TokioIo::new(stream), h2, request).await
            }
            None => exchange(TokioIo::new(tcp), false, request).await,
        }
    }
}

/// A connection, plain or TLS, that a raw request is written to.
pub(crate) trait RawStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send
{
}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawStream for S {}

async fn exchange<I>(io: I, h2: bool, mut request: hyper::Request<Full<Bytes>>) -> Answer
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let response = if h2 {
        // HTTP/2 needs an absolute URI and no Host header.
        let uri = format!("https://localhost{}", request.uri());
        *request.uri_mut() = uri.parse().expect("uri");
        request.headers_mut().remove("host");
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("h2 request")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("http/1.1 handshake");
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .expect("http/1.1 request")
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        version: parts.version,
    }
}
