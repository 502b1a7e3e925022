//! systemd's side of the daemon, without systemd: the test binds the notify socket, hands it
//! to the real binary as `NOTIFY_SOCKET` with a watchdog (`WATCHDOG_USEC`), and reads what it
//! is told: ready only once listening, the watchdog fed while the writer commits and not while
//! another connection holds the database's write lock, reloading then ready around SIGHUP, and
//! stopping at SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Collector, Options};

/// The watchdog's period as the unit would set it, short for the test: pings every 0.5 s.
const WATCHDOG_USEC: &str = "1500000";

/// The messages received within `wait`, each with when it came.
fn receive(socket: &UnixDatagram, wait: Duration) -> Vec<(Instant, String)> {
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(size) = socket.recv(&mut buffer) {
            received.push((
                Instant::now(),
                String::from_utf8_lossy(&buffer[..size]).into_owned(),
            ));
        }
    }
    received
}

fn pings(messages: &[(Instant, String)]) -> usize {
    messages
        .iter()
        .filter(|(_, text)| text.lines().any(|line| line == "WATCHDOG=1"))
        .count()
}

fn signal(collector: &Collector, name: &str) {
    let sent = Command::new("kill")
        .args([name, &collector.pid().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}

#[test]
fn the_service_manager_is_told_ready_alive_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut collector = Collector::start(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), WATCHDOG_USEC.into()),
        ],
        ..Options::default()
    });
    // `start` returned on the "listening" line; READY=1 comes after it, once.
    let first = receive(&socket, Duration::from_secs(3));
    let ready = first
        .iter()
        .position(|(_, text)| text.lines().any(|line| line == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1: {first:?}"));
    assert!(
        first[ready].1.contains("STATUS=serving on 127.0.0.1:"),
        "{first:?}"
    );
    assert!(pings(&first) >= 3, "the watchdog is fed: {first:?}");

    // Another connection holds the write lock: the writer cannot commit a probe, so the
    // watchdog goes hungry (after at most one reused probe result).
    let key = std::fs::read_to_string(&collector.key_file).expect("key");
    let holder = rusqlite::Connection::open(&collector.db_path).expect("open");
    holder
        .execute_batch(&format!(
            "PRAGMA key = \"x'{}'\"; BEGIN IMMEDIATE;",
            key.trim()
        ))
        .expect("the write lock");
    let _settling = receive(&socket, Duration::from_millis(1500));
    let held = receive(&socket, Duration::from_secs(3));
    assert_eq!(pings(&held), 0, "fed while the writer was stuck: {held:?}");
    holder.execute_batch("ROLLBACK").expect("release");
    drop(holder);
    let released = receive(&socket, Duration::from_secs(8));
    assert!(
        pings(&released) >= 1,
        "not fed again once the writer commits: {released:?}"
    );

    // SIGHUP: reloading, then ready again.
    signal(&collector, "-HUP");
    let reload = receive(&socket, Duration::from_secs(2));
    let reloading = reload
        .iter()
        .position(|(_, text)| text.lines().any(|line| line == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1: {reload:?}"));
    assert!(
        reload[reloading..]
            .iter()
            .any(|(_, text)| text.lines().any(|line| line == "READY=1")),
        "no READY=1 after the reload: {reload:?}"
    );

    // SIGTERM: stopping, and a clean exit.
    signal(&collector, "-TERM");
    let status = collector.wait_exit();
    assert!(status.success());
    let stop = receive(&socket, Duration::from_millis(300));
    let said: Vec<&str> = reload
        .iter()
        .chain(&stop)
        .map(|(_, text)| text.as_str())
        .collect();
    assert!(
        said.iter()
            .any(|text| text.lines().any(|line| line == "STOPPING=1")),
        "no STOPPING=1: {said:?}"
    );
}
