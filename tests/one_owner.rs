//! One owner of the store, through the real binary: a running daemon holds its data folder, a
//! second daemon is refused, and the command line's writes beside it are carried out by the
//! daemon, so what they delete is gone from every table and every byte of the file, at once
//! and after the daemon's stop.

mod common;

use std::net::IpAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pages::{database_plaintext, wal_plaintext};
use common::{Collector, MEASURE_KEY, Options, binary, contains, open_db, tables_holding};
use tracks_collector::testkit::{DbKey, Reader, ip_pseudonym, user_pseudonyms};

/// The player forgotten from the command line, and the address they played and visited from.
const FORGOTTEN_USER: &str = "forgotten-canary-5a9e21";
const FORGOTTEN_IP: &str = "203.0.113.57";
const KEPT_USER: &str = "kept-player-0c44";
const KEPT_IP: &str = "198.51.100.61";
const GAME: &str = "test-game";

fn options() -> Options {
    Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        log_level: "info".into(),
        ..Options::default()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn visit(collector: &Collector, ip: &str) {
    let answer = collector
        .client()
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://mygame.example/?utm_source=owner-news&utm_medium=email"}"#,
            &[("x-forwarded-for", ip)],
        )
        .await;
    assert_eq!(answer.status, 204, "{:?}", answer.body);
}

async fn open_game(collector: &Collector, user: &str, ip: &str) {
    let answer = collector
        .client()
        .post(
            "/measure",
            "application/json",
            format!(r#"{{"user_id": "{user}", "event_name": "first_game_open", "ip": "{ip}"}}"#),
            &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

/// The forgotten player's pseudonyms (user and address) under every salt on file now.
fn forgotten_pseudonyms(collector: &Collector) -> Vec<[u8; 16]> {
    let key = DbKey::read_file(&collector.key_file).expect("key");
    let salts = Reader::open(&collector.db_path, &key)
        .and_then(|reader| reader.salts())
        .expect("salts");
    let ip: IpAddr = FORGOTTEN_IP.parse().expect("ip");
    let mut hashes: Vec<[u8; 16]> = user_pseudonyms(&salts, GAME, FORGOTTEN_USER)
        .into_iter()
        .map(|pseudonym| pseudonym.hash)
        .collect();
    hashes.extend(salts.iter().map(|salt| ip_pseudonym(salt, ip, 64).hash));
    hashes
}

/// Every plaintext byte of the database file and its WAL.
fn plaintext(collector: &Collector) -> Vec<u8> {
    let mut key = [0u8; 32];
    let hex_key = std::fs::read_to_string(&collector.key_file).expect("key");
    hex::decode_to_slice(hex_key.trim(), &mut key).expect("hex");
    let path = &collector.db_path;
    let mut plain = database_plaintext(&std::fs::read(path).expect("database"), &key);
    if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
        plain.extend(wal_plaintext(&wal, &key));
    }
    plain
}

fn assert_gone(collector: &Collector, hashes: &[[u8; 16]], when: &str) {
    let rows = tables_holding(&open_db(&collector.db_path, &collector.key_file), hashes);
    assert!(rows.is_empty(), "{when}, the file still holds: {rows:?}");
    let plain = plaintext(collector);
    for hash in hashes {
        assert!(
            !contains(&plain, hash),
            "{when}, a page of the file still holds {}",
            hex::encode(hash)
        );
    }
}

fn count(collector: &Collector, table: &str) -> i64 {
    open_db(&collector.db_path, &collector.key_file)
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .expect("count")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_folder_is_refused_naming_the_first() {
    let collector = Collector::start(options());
    let second = Command::new(binary())
        .arg("--config")
        .arg(&collector.config_path)
        .arg("serve")
        .output()
        .expect("run a second daemon");
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{said}");
    assert!(
        said.contains(&format!("(pid {})", collector.pid())),
        "the message names the running daemon: {said}"
    );
    assert!(said.contains("already served"), "{said}");
    // The first serves on, its socket in place.
    visit(&collector, KEPT_IP).await;
    assert!(collector.state_dir.join("control.sock").exists());
}

/// The issue's sysadmin: `forget`, then `rotate-salt`, then `purge` past the retention window,
/// each run from the command line while the daemon serves.
#[tokio::test(flavor = "multi_thread")]
async fn command_line_writes_beside_the_daemon_leave_no_pseudonym_of_what_they_deleted() {
    assert!(
        Command::new("faketime").arg("--help").output().is_ok(),
        "faketime is needed (apt-get install faketime; scripts/test.sh installs it)"
    );
    // The daemon's hourly purge would do the command line's work at the top of an hour.
    let minute = tracks_collector::unix_now() % 3600;
    if minute > 3600 - 90 {
        tokio::time::sleep(Duration::from_secs((3600 - minute + 2) as u64)).await;
    }
    let mut collector = Collector::start(options());
    for _ in 0..3 {
        visit(&collector, FORGOTTEN_IP).await;
    }
    visit(&collector, KEPT_IP).await;
    open_game(&collector, FORGOTTEN_USER, FORGOTTEN_IP).await;
    open_game(&collector, KEPT_USER, KEPT_IP).await;

    let player = ["--game", GAME, "--user-id", FORGOTTEN_USER];
    let forgot = collector.run_command(&[&["forget"][..], &player].concat());
    assert!(
        stdout(&forgot).contains("deleted 1 game event(s) and 3 visit(s)"),
        "{}",
        stdout(&forgot)
    );
    let hashes = forgotten_pseudonyms(&collector);
    assert_gone(&collector, &hashes, "right after the forget");
    assert_eq!(count(&collector, "collect_logs"), 1, "the kept visit stays");

    // A new salt from the command line is the daemon's at once: the next visit is hashed
    // under it.
    let rotated = collector.run_command(&["rotate-salt"]);
    assert!(stdout(&rotated).contains("a new salt is current"));
    visit(&collector, FORGOTTEN_IP).await;
    visit(&collector, KEPT_IP).await;
    let salt_ids: Vec<i64> = open_db(&collector.db_path, &collector.key_file)
        .prepare("SELECT DISTINCT ip_salt_id FROM collect_logs ORDER BY ip_salt_id")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
        .expect("salt ids");
    assert_eq!(salt_ids.len(), 2, "visits under the old and the new salt");
    let hashes = forgotten_pseudonyms(&collector);
    let newest = tracks_collector::unix_now();
    collector.terminate();

    // The same daemon, its wall clock 30 days on, a few seconds before the newest record
    // expires: the purge at its start leaves it, and the command line's purge, a few seconds
    // later, is past the window for everything.
    let start = newest + 30 * 86_400 - 3;
    let daemon = common::serve_at(&collector.config_path, start);
    let socket = collector.state_dir.join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let purged = collector.run_command(&["purge"]);
    let said = stdout(&purged);
    assert!(
        said.contains("deleted everything received before") && !said.contains(": 0 visit(s)"),
        "the command line's purge, by the daemon's clock, deleted the visits: {said}"
    );
    assert_eq!(count(&collector, "collect_logs"), 0, "{said}");
    assert_eq!(count(&collector, "measure_logs"), 0, "{said}");
    assert_gone(&collector, &hashes, "right after the purge");

    // The daemon's clean stop writes what it held in memory: none of it is about the purged.
    let output = common::terminate_group(daemon);
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.contains("carrying out a command from the command line"),
        "{logs}"
    );
    assert!(!socket.exists(), "the socket goes with the daemon");
    assert_gone(&collector, &hashes, "after the daemon's stop");
    assert!(!logs.contains(FORGOTTEN_USER) && !logs.contains(FORGOTTEN_IP));
}
