//! Invariants 6 and 8 through the real binary: an acknowledged write survives `kill -9` and
//! SIGTERM; a wrong, missing or exposed key stops the daemon without touching the file; any
//! SQLCipher 4 client opens the database with the raw key.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Collector, MEASURE_KEY, Options, binary};

/// Sends `per_task` visits and `per_task` events from each of `tasks` concurrent clients and
/// returns how many were acknowledged (2xx).
async fn load(collector: &Collector, tasks: usize, per_task: usize) -> (usize, usize) {
    let visits = Arc::new(AtomicUsize::new(0));
    let events = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = collector.client();
        let (visits, events) = (visits.clone(), events.clone());
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let visit = client
                    .post(
                        "/collect",
                        "application/json",
                        format!(r#"{{"url": "https://a.example/{task}/{i}"}}"#),
                        &[],
                    )
                    .await;
                if visit.status == 204 {
                    visits.fetch_add(1, Ordering::SeqCst);
                }
                let event = client
                    .post(
                        "/measure",
                        "application/x-www-form-urlencoded",
                        format!("user_id=u{task}-{i}&event_name=game_open"),
                        &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
                    )
                    .await;
                if event.status == 200 {
                    events.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("load task");
    }
    (visits.load(Ordering::SeqCst), events.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9() {
    let mut collector = Collector::start(Options::default());
    let (visits, events) = load(&collector, 8, 25).await;
    assert_eq!(
        (visits, events),
        (200, 200),
        "every request was acknowledged"
    );
    // No SIGTERM, no chance to flush: what was acknowledged must already be on disk.
    collector.kill9();
    assert_eq!(collector.count("collect_logs"), 200);
    assert_eq!(collector.count("measure_logs"), 200);
    // And the daemon starts again on the same file, keeping its salt.
    collector.restart();
    assert_eq!(collector.client().get("/healthz", &[]).await.status, 200);
    assert_eq!(
        collector.count("salts"),
        1,
        "a restart does not rotate the salt"
    );
    assert_eq!(collector.count("collect_logs"), 200);
}

/// The visitors of each traffic cell: (visits, visitors) of every cell, and the entries that
/// say who already counts.
fn visitor_counts(collector: &Collector) -> (Vec<(i64, i64)>, i64) {
    let conn = collector.open_db();
    let cells = conn
        .prepare("SELECT visits, visitors FROM traffic_cells ORDER BY id")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("traffic cells");
    (cells, collector.count("traffic_visitors"))
}

/// A cell's visitor entries are written after their visits (store/visitors.rs): after a
/// `kill -9` they are remade from the visits at start, and nobody counts twice.
#[tokio::test(flavor = "multi_thread")]
async fn visitor_entries_lost_with_the_process_are_remade_at_start() {
    let mut collector = Collector::start(Options::default());
    let client = collector.client();
    let visit = |campaign: &str| {
        format!(r#"{{"url": "https://a.example/?utm_source=ads&utm_campaign={campaign}"}}"#)
    };
    for campaign in ["one", "one", "two"] {
        let answer = client
            .post("/collect", "application/json", visit(campaign), &[])
            .await;
        assert_eq!(answer.status, 204);
    }
    collector.kill9();
    // The counts were committed with the visits; the entries were still in memory.
    assert_eq!(visitor_counts(&collector), (vec![(2, 1), (1, 1)], 0));

    // Without the remake, "one" and "two" would each count the address a second time.
    collector.restart();
    let client = collector.client();
    for campaign in ["one", "two", "three"] {
        let answer = client
            .post("/collect", "application/json", visit(campaign), &[])
            .await;
        assert_eq!(answer.status, 204);
    }
    // A clean stop writes the entries held in memory.
    assert!(collector.terminate().success());
    assert_eq!(
        visitor_counts(&collector),
        (vec![(3, 1), (2, 1), (1, 1)], 3),
        "the same address counts once per cell"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wal_is_copied_into_the_database_while_the_daemon_runs() {
    let collector = Collector::start(Options::default());
    let size = || std::fs::metadata(&collector.db_path).map_or(0, |meta| meta.len());
    let before = size();
    let (visits, events) = load(&collector, 8, 25).await;
    assert_eq!((visits, events), (200, 200));
    // The writer never checkpoints; the flusher does, at most once a second, after a flush.
    // Until then the new rows live in the WAL only and the database file keeps its size.
    let client = collector.client();
    let mut grown = false;
    for _ in 0..50 {
        let visit = client
            .post(
                "/collect",
                "application/json",
                r#"{"url": "https://a.example/tick"}"#.to_string(),
                &[],
            )
            .await;
        assert_eq!(visit.status, 204);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if size() > before {
            grown = true;
            break;
        }
    }
    assert!(
        grown,
        "the database file stayed at {before} bytes: no checkpoint ran"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits_cleanly() {
    let mut collector = Collector::start(Options::default());
    let pid = collector.pid().to_string();
    // SIGTERM lands while the load is running; everything acknowledged must be stored.
    let signal = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        Command::new("kill").args(["-TERM", &pid]).status()
    });
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for task in 0..8 {
        let client = collector.client();
        let acknowledged = acknowledged.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..2000 {
                // After shutdown the connection is refused: the client panics inside the
                // task, which ends it; only acknowledged answers count.
                let answer = client
                    .post(
                        "/collect",
                        "application/json",
                        format!(r#"{{"url": "https://a.example/{task}/{i}"}}"#),
                        &[],
                    )
                    .await;
                if answer.status == 204 {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    signal.await.expect("signal task").expect("kill -TERM");
    for handle in handles {
        let _ = handle.await;
    }
    let status = collector.wait_exit();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    let acknowledged = acknowledged.load(Ordering::SeqCst);
    assert!(
        acknowledged > 0,
        "some requests were answered before the signal"
    );
    assert_eq!(collector.count("collect_logs") as usize, acknowledged);
    assert!(
        collector
            .logs()
            .contains("every acknowledged write is committed")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_key_stops_the_daemon_and_leaves_the_file_alone() {
    let mut collector = Collector::start(Options::default());
    load(&collector, 1, 3).await;
    collector.terminate();
    let before = std::fs::read(&collector.db_path).expect("database");
    let real_key = std::fs::read_to_string(&collector.key_file).expect("key");

    let run = |collector: &Collector| {
        Command::new(binary())
            .arg("--config")
            .arg(&collector.config_path)
            .arg("serve")
            .env_remove("TRACKS_DB_KEY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .expect("run")
    };

    // A different, well-formed key.
    std::fs::write(&collector.key_file, format!("{}\n", "ab".repeat(32))).expect("write key");
    let output = run(&collector);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the database key is wrong"), "{stderr}");

    // No key at all.
    std::fs::remove_file(&collector.key_file).expect("remove key");
    let output = run(&collector);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("no database key"), "{stderr}");

    // A key file others can read.
    std::fs::write(&collector.key_file, &real_key).expect("write key");
    set_mode(&collector.key_file, 0o644);
    let output = run(&collector);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(stderr.contains("readable by other users"), "{stderr}");

    assert_eq!(
        std::fs::read(&collector.db_path).expect("database"),
        before,
        "file untouched"
    );

    // The right key, from the environment this time, opens it again with the data intact.
    std::fs::remove_file(&collector.key_file).expect("remove key");
    let output = Command::new(binary())
        .arg("--config")
        .arg(&collector.config_path)
        .arg("stats")
        .arg("--format")
        .arg("json")
        .env("TRACKS_DB_KEY", real_key.trim())
        .output()
        .expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(stats["visits"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sqlcipher_4_client_opens_the_database_with_the_raw_key() {
    let mut collector = Collector::start(Options::default());
    load(&collector, 2, 5).await;
    collector.terminate();
    let key = std::fs::read_to_string(&collector.key_file).expect("key");
    // Python's sqlcipher3 bundles SQLCipher 4 (.ci/run installs sqlcipher3-binary).
    let script = r#"
import sys, sqlcipher3
db = sqlcipher3.connect(sys.argv[1])
db.execute('PRAGMA key = "x\'%s\'"' % sys.argv[2])
print(db.execute('PRAGMA cipher_version').fetchone()[0])
print(db.execute('SELECT count(*) FROM collect_logs').fetchone()[0])
print(db.execute('SELECT count(*) FROM measure_logs').fetchone()[0])
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&collector.db_path)
        .arg(key.trim())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "sqlcipher3 failed (pip install sqlcipher3-binary): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with('4'), "a SQLCipher 4 client: {stdout}");
    assert_eq!(&lines[1..], ["10", "10"], "{stdout}");
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A job that fails inside a write group fails alone: the rest of the group commits, and
/// nothing of the failed job (row or roll-up count) is left behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_fails_alone_within_its_group() {
    use common::world::{WINDOWS, World};
    use tracks_collector::testkit::{CollectOutcome, CollectRequest};

    let world = World::new(|_| {});
    world.rotate(tracks_collector::unix_now()).await;
    // A trigger stands in for a write that fails (a constraint, a full disk for one page).
    let side = rusqlite::Connection::open(&world.config.storage.path).expect("open");
    side.execute_batch(&format!(
        "PRAGMA key = \"x'{}'\";
         CREATE TRIGGER poison BEFORE INSERT ON collect_logs
         WHEN NEW.page_host = 'poison.example' BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        world.key.to_hex()
    ))
    .expect("trigger");

    let store = Arc::new(world.store.clone());
    let mut writes = Vec::new();
    for i in 0..200 {
        let host = if i == 100 {
            "poison.example"
        } else {
            "fine.example"
        };
        let body = format!(r#"{{"url": "https://{host}/{i}"}}"#);
        let outcome = world
            .ingest
            .collect(CollectRequest {
                body: body.as_bytes(),
                user_agent: Some(WINDOWS),
                client_ip: format!("192.0.2.{}", i % 250).parse().expect("ip"),
                now: tracks_collector::unix_now(),
            })
            .expect("valid visit");
        let CollectOutcome::Visit(visit) = outcome else {
            panic!("not a crawler")
        };
        let store = store.clone();
        writes.push(tokio::spawn(async move { store.insert_visit(visit).await }));
    }
    let mut failed = Vec::new();
    for (i, write) in writes.into_iter().enumerate() {
        if write.await.expect("task").is_err() {
            failed.push(i);
        }
    }
    assert_eq!(failed, vec![100]);
    let counts: (i64, i64) = side
        .query_row(
            "SELECT (SELECT count(*) FROM collect_logs), (SELECT sum(visits) FROM traffic_cells)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("counts");
    assert_eq!(counts, (199, 199));
}
