//! `examples/relay.py` run by `python3` for a test: its files, its log, and a client of its
//! `/events`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Alpn, Answer, Client, Collector};

const JSON: &str = "application/json";

/// `examples/relay.py`, run by `python3`, with its stderr captured; killed on drop.
pub(crate) struct Relay {
    child: Option<Child>,
    pub(crate) addr: SocketAddr,
    logs: Arc<Mutex<String>>,
    /// Reads stderr until the relay closes it.
    reader: Option<std::thread::JoinHandle<()>>,
}

/// What a relay keeps between its runs: its key file and its queue.
pub(crate) struct RelayFiles {
    _dir: tempfile::TempDir,
    pub(crate) key_file: PathBuf,
    pub(crate) queue: PathBuf,
}

impl RelayFiles {
    pub(crate) fn new(key: &str) -> RelayFiles {
        let dir = tempfile::tempdir().expect("temp dir");
        let key_file = dir.path().join("measure.key");
        std::fs::write(&key_file, key).expect("key file");
        RelayFiles {
            key_file,
            queue: dir.path().join("queue.sqlite3"),
            _dir: dir,
        }
    }

    /// The queued events, oldest first, read from the file as the relay left it.
    pub(crate) fn queued(&self) -> Vec<Value> {
        let queue = rusqlite::Connection::open(&self.queue).expect("queue file");
        let mut select = queue
            .prepare("SELECT event FROM queue ORDER BY id")
            .expect("select");
        select
            .query_map([], |row| row.get::<_, String>(0))
            .expect("rows")
            .map(|text| serde_json::from_str(&text.expect("row")).expect("JSON event"))
            .collect()
    }

    /// Puts events back into the queue of a stopped relay.
    pub(crate) fn requeue(&self, events: &[Value]) {
        let queue = rusqlite::Connection::open(&self.queue).expect("queue file");
        for event in events {
            queue
                .execute("INSERT INTO queue (event) VALUES (?1)", [event.to_string()])
                .expect("insert");
        }
    }
}

impl Relay {
    /// Starts the relay for `collector` and waits for its "listening" line, which has its port.
    pub(crate) fn start(collector: &Collector, files: &RelayFiles, flags: &[&str]) -> Relay {
        let url = format!("https://127.0.0.1:{}", collector.addr.port());
        let ca = collector.ca.as_deref().expect("a TLS collector");
        Relay::start_for(&url, ca, files, flags)
    }

    /// Starts the relay for the collector (or load balancer) at `url`, whose certificate `ca`
    /// signs.
    pub(crate) fn start_for(url: &str, ca: &Path, files: &RelayFiles, flags: &[&str]) -> Relay {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/relay.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--collector")
            .arg(url)
            .arg("--cafile")
            .arg(ca)
            .arg("--key-file")
            .arg(&files.key_file)
            .arg("--queue")
            .arg(&files.queue)
            // A short backoff keeps the test quick once the collector is back.
            .args(["--listen", "127.0.0.1:0", "--max-backoff", "1"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let stderr = child.stderr.take().expect("stderr pipe");
        let logs = Arc::new(Mutex::new(String::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let lines = logs.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Kept first, so that the log holds the line once the port is known.
                if let Ok(mut logs) = lines.lock() {
                    logs.push_str(&line);
                    logs.push('\n');
                }
                if let Some((_, rest)) = line.split_once("listening on http://")
                    && let Some((address, _)) = rest.split_once('/')
                    && let Ok(address) = address.parse::<SocketAddr>()
                {
                    let _ = address_tx.send(address);
                }
            }
        });
        let mut relay = Relay {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            logs,
            reader: Some(reader),
        };
        match address_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => relay.addr = address,
            Err(_) => panic!("the relay did not start; its log:\n{}", relay.logs()),
        }
        relay
    }

    pub(crate) fn logs(&self) -> String {
        self.logs
            .lock()
            .map(|logs| logs.clone())
            .unwrap_or_default()
    }

    pub(crate) async fn post(&self, body: Value, headers: &[(&str, &str)]) -> Answer {
        self.send(JSON, body.to_string(), headers).await
    }

    pub(crate) async fn send(
        &self,
        content_type: &str,
        body: String,
        headers: &[(&str, &str)],
    ) -> Answer {
        Client::new(self.addr, None, Alpn::Http1)
            .post("/events", content_type, body, headers)
            .await
    }

    /// SIGTERM, then waits (at most 20 s) for the exit.
    pub(crate) fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        wait_until("the relay exits after SIGTERM", || {
            child.try_wait().expect("wait").is_some()
        });
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
        child.wait().expect("status")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `done` until it holds, for at most 20 s.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
