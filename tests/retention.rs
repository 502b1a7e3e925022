//! Invariants 3, 6 and 7: data past retention, forgotten players and expired salts are gone
//! from the decrypted pages of the database and its WAL, not only from query results; the
//! daemon's own schedule purges; rekeying re-encrypts in place.

mod common;

use std::process::Command;
use std::time::Duration;

use common::pages::{database_plaintext, raw_key, wal_plaintext};
use common::world::{DAY, HOUR, NOV_1, WINDOWS, World, event};
use common::{Collector, MEASURE_KEY, Options, binary, contains};
use serde_json::json;
use tracks_collector::testkit::purge;
use tracks_collector::testkit::{PurgeReport, ViewKey};

/// Every plaintext byte the database file and its WAL hold right now.
fn plaintext_of(world: &World) -> Vec<u8> {
    let key = key_bytes(world);
    let path = &world.config.storage.path;
    let mut plain = database_plaintext(&std::fs::read(path).expect("database"), &key);
    if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
        plain.extend(wal_plaintext(&wal, &key));
    }
    plain
}

fn key_bytes(world: &World) -> [u8; 32] {
    let mut key = [0u8; 32];
    hex::decode_to_slice(world.key.to_hex(), &mut key).expect("hex");
    key
}

/// (user_hash, ip_hash) of the stored events of `game`, as raw bytes.
fn event_hashes(world: &World) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = rusqlite::Connection::open(&world.config.storage.path).expect("open");
    db.execute_batch(&format!("PRAGMA key = \"x'{}'\";", world.key.to_hex()))
        .expect("key");
    db.prepare("SELECT user_hash, ip_hash FROM measure_logs ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("rows")
}

fn visit(host: &str, query: &str) -> serde_json::Value {
    json!({ "url": format!("https://{host}/?{query}") })
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_deletes_expired_rows_salts_and_every_trace_of_them() {
    let mut world = World::new(|_| {});
    world.rotate(NOV_1).await;
    world
        .visit(
            "203.0.113.1",
            visit("expired-canary.example", "utm_source=old"),
            WINDOWS,
            NOV_1 + HOUR,
        )
        .await;
    world
        .open(
            "key-demo",
            event("old-player", "first_game_open", json!({})),
            "203.0.113.1",
            NOV_1 + 2 * HOUR,
        )
        .await;
    let old_hashes = event_hashes(&world);
    // A stop writes the visit's address entry, held in the writer's memory until then, to
    // visit_addresses: the purge must delete it from there, with the visit.
    world.restart();
    let first_salt = world
        .salts
        .read()
        .expect("ring")
        .current()
        .expect("salt")
        .key;
    for day in 1..=31 {
        assert!(world.rotate(NOV_1 + day * DAY).await);
    }
    let now = NOV_1 + 31 * DAY + 2 * HOUR;
    world
        .visit(
            "198.51.100.1",
            visit("fresh.example", "utm_source=new"),
            WINDOWS,
            now - HOUR,
        )
        .await;
    world
        .open(
            "key-demo",
            event("new-player", "first_game_open", json!({})),
            "198.51.100.1",
            now - HOUR,
        )
        .await;

    // Dry, nothing moves.
    let cutoff = now - 30 * DAY;
    let preview = world
        .store
        .reader()
        .expect("reader")
        .purge_preview(cutoff)
        .expect("preview");
    let expected = PurgeReport {
        visits: 1,
        events: 1,
        salts: 1,
        cells: 2,
    };
    assert_eq!(preview, expected);
    assert_eq!(world.store.stats().expect("stats").visits, 2);

    let report = purge(&world.store, &world.salts, &world.config.privacy, now)
        .await
        .expect("purge");
    // The visit and event of Nov 1 are past the cut-off (Nov 2, 02:00); salt 1 retired on
    // Nov 2 00:00, before it; salt 2 retired after it and stays. The Nov 1 cells go.
    assert_eq!(report, expected);
    let stats = world.store.stats().expect("stats");
    assert_eq!((stats.visits, stats.events, stats.salts), (1, 1, 31));
    let ring = world.salts.read().expect("ring").clone();
    assert!(
        ring.live().iter().all(|salt| salt.id != 1),
        "the ring forgot salt 1"
    );

    let plain = plaintext_of(&world);
    assert!(
        contains(&plain, b"fresh.example"),
        "the scan sees live rows"
    );
    assert!(
        !contains(&plain, b"expired-canary.example"),
        "the expired visit's page survives in the file"
    );
    assert!(
        !contains(&plain, &first_salt),
        "the destroyed salt survives in the file"
    );
    for (user_hash, ip_hash) in old_hashes {
        assert!(
            !contains(&plain, &user_hash),
            "the expired user pseudonym survives"
        );
        assert!(
            !contains(&plain, &ip_hash),
            "the expired IP pseudonym survives"
        );
    }
    let wal = std::fs::read(world.config.storage.path.with_extension("db-wal")).unwrap_or_default();
    assert!(
        wal.len() <= 32 + 24 * 4096,
        "the WAL was truncated after the purge ({} bytes)",
        wal.len()
    );
}

/// Incremental vacuum: a purge shrinks the file instead of leaving free pages behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_purge_gives_the_freed_pages_back() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let store = std::sync::Arc::new(world.store.clone());
    let mut writes = Vec::new();
    for i in 0..2000 {
        let body = visit(&format!("bulk-{i}.example"), &format!("utm_campaign=c{i}"));
        let outcome = world
            .ingest
            .collect(tracks_collector::testkit::CollectRequest {
                body: body.to_string().as_bytes(),
                user_agent: Some(WINDOWS),
                client_ip: format!("203.0.113.{}", i % 200).parse().expect("ip"),
                now: NOV_1 + HOUR,
            })
            .expect("valid visit");
        let tracks_collector::testkit::CollectOutcome::Visit(visit) = outcome else {
            panic!("not a crawler")
        };
        let store = store.clone();
        writes.push(tokio::spawn(async move { store.insert_visit(visit).await }));
    }
    for write in writes {
        write.await.expect("task").expect("stored");
    }
    let pages = |world: &World| -> (i64, i64, i64) {
        let db = rusqlite::Connection::open(&world.config.storage.path).expect("open");
        db.execute_batch(&format!("PRAGMA key = \"x'{}'\";", world.key.to_hex()))
            .expect("key");
        let pragma = |name: &str| -> i64 {
            db.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .expect(name)
        };
        (
            pragma("auto_vacuum"),
            pragma("page_count"),
            pragma("freelist_count"),
        )
    };
    let (mode, full, _) = pages(&world);
    assert_eq!(mode, 2, "auto_vacuum is INCREMENTAL");
    // What an empty store of this schema takes: the purge gives back everything above it.
    let empty = {
        let blank = World::new(|_| {});
        blank.rotate(NOV_1).await;
        let (_, empty, _) = pages(&blank);
        blank.store.close();
        empty
    };

    let now = NOV_1 + 31 * DAY;
    world.rotate(now).await;
    let report = purge(&world.store, &world.salts, &world.config.privacy, now)
        .await
        .expect("purge");
    assert_eq!(report.visits, 2000);
    let (_, after, free) = pages(&world);
    assert_eq!(free, 0, "no free pages are left in the file");
    assert!(
        after <= empty + 4 && empty * 3 < full,
        "the file shrank from {full} to {after} pages (an empty store takes {empty})"
    );
}

/// A page view's random id serves only a consent update within the hour: the file holds its
/// hash only, the hourly purge clears older ones from the rows and the file, and one exactly an
/// hour old is still there for its update.
#[tokio::test(flavor = "multi_thread")]
async fn page_view_ids_are_forgotten_an_hour_after_the_view() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let now = NOV_1 + 3 * HOUR;
    let view = |id: &str, consent: bool| json!({ "url": "https://views.example/", "consent": consent, "id": id });
    let ip = "203.0.113.9";
    world
        .visit(
            ip,
            view("view-expired-canary", false),
            WINDOWS,
            now - HOUR - 1,
        )
        .await;
    world
        .visit(ip, view("view-boundary-canary", false), WINDOWS, now - HOUR)
        .await;

    let report = purge(&world.store, &world.salts, &world.config.privacy, now)
        .await
        .expect("purge");
    assert_eq!(report, PurgeReport::default(), "nothing is past retention");
    let plain = plaintext_of(&world);
    assert!(
        contains(&plain, b"views.example"),
        "the scan sees the visits"
    );
    for raw in ["view-expired-canary", "view-boundary-canary"] {
        assert!(
            !contains(&plain, raw.as_bytes()),
            "a raw page-view id reached the file: {raw}"
        );
    }
    assert!(
        !contains(&plain, &ViewKey::of("view-expired-canary").0),
        "a page-view id older than the hour survives in the file"
    );
    assert!(
        contains(&plain, &ViewKey::of("view-boundary-canary").0),
        "the id of a view exactly an hour old was cleared early"
    );

    // The view an hour old still takes its consent update: no second visit is counted.
    world
        .visit(ip, view("view-boundary-canary", true), WINDOWS, now)
        .await;
    let day = "2026-11-01";
    let traffic = world.document(day, day, None, now).traffic;
    let totals = traffic.iter().fold((0, 0), |acc, row| {
        (acc.0 + row.visits, acc.1 + row.consented_visits)
    });
    assert_eq!(totals, (2, 1), "two visits, the later one now consented");
}

#[tokio::test(flavor = "multi_thread")]
async fn forget_deletes_a_players_events_under_every_salt_and_their_visits() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let (alice_ip, bob_ip) = ("203.0.113.7", "203.0.113.8");
    world
        .visit(
            alice_ip,
            visit("forget-canary.example", "utm_source=promo"),
            WINDOWS,
            NOV_1 + HOUR,
        )
        .await;
    world
        .visit(
            alice_ip,
            visit("forget-canary.example", "utm_source=promo"),
            WINDOWS,
            NOV_1 + HOUR + 60,
        )
        .await;
    world
        .visit(
            bob_ip,
            visit("keep.example", "utm_source=promo"),
            WINDOWS,
            NOV_1 + HOUR,
        )
        .await;
    world
        .open(
            "key-demo",
            event("alice", "first_game_open", json!({})),
            alice_ip,
            NOV_1 + 2 * HOUR,
        )
        .await;
    world
        .open(
            "key-demo",
            event("bob", "first_game_open", json!({})),
            bob_ip,
            NOV_1 + 2 * HOUR,
        )
        .await;
    // After a rotation Alice plays again from elsewhere: same pseudonym (salt 1), new salt
    // for the address.
    world.rotate(NOV_1 + DAY).await;
    world
        .open(
            "key-demo",
            event("alice", "game_open", json!({})),
            "192.0.2.50",
            NOV_1 + DAY + HOUR,
        )
        .await;
    let alice = event_hashes(&world)[0].clone();

    let now = NOV_1 + DAY + 2 * HOUR;
    let unknown = world
        .ingest
        .subject("demo-game", "nobody")
        .expect("request");
    let report = world
        .store
        .forget(&unknown.game, unknown.users, unknown.block, now)
        .await
        .expect("forget");
    assert_eq!((report.measure, report.collect), (0, 0));

    let target = world.ingest.subject("demo-game", "alice").expect("request");
    assert_eq!(target.users.len(), 2, "one pseudonym per live salt");
    let report = world
        .store
        .forget(&target.game, target.users, target.block, now)
        .await
        .expect("forget");
    assert_eq!(
        (report.measure, report.collect),
        (2, 2),
        "both events, both linked visits"
    );
    let stats = world.store.stats().expect("stats");
    assert_eq!(
        (stats.visits, stats.events),
        (1, 1),
        "Bob's visit and event stay"
    );

    let plain = plaintext_of(&world);
    assert!(contains(&plain, b"keep.example"));
    assert!(
        !contains(&plain, b"forget-canary.example"),
        "a forgotten visit survives in the file"
    );
    assert!(
        !contains(&plain, &alice.0),
        "the forgotten pseudonym survives in the file"
    );
    assert!(
        !contains(&plain, &alice.1),
        "the forgotten IP pseudonym survives in the file"
    );

    // The log keeps when and how much, nothing about whom.
    let db = rusqlite::Connection::open(&world.config.storage.path).expect("open");
    db.execute_batch(&format!("PRAGMA key = \"x'{}'\";", world.key.to_hex()))
        .expect("key");
    let log: Vec<(i64, i64, i64)> = db
        .prepare("SELECT at, measure_deleted, collect_deleted FROM forget_log ORDER BY id")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .expect("log");
    assert_eq!(log, vec![(now, 0, 0), (now, 2, 2)]);
    let columns: i64 = db
        .query_row(
            "SELECT count(*) FROM pragma_table_info('forget_log')",
            [],
            |r| r.get(0),
        )
        .expect("columns");
    assert_eq!(columns, 4);
}

const FORGET_TOKEN: &str = "tc_test_forget_token";

#[tokio::test(flavor = "multi_thread")]
async fn the_forget_api_needs_its_scope_and_answers_counts() {
    let collector = Collector::start(Options {
        extra: format!(
            "[[tokens]]\nname = \"dpo\"\nscopes = [\"forget\"]\nhash = \"{}\"\n\n\
             [[tokens]]\nname = \"pull\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n",
            tracks_collector::testkit::SecretHash::of(FORGET_TOKEN.as_bytes()).to_config_string(),
            tracks_collector::testkit::SecretHash::of(b"tc_pull").to_config_string(),
        ),
        ..Options::default()
    });
    let client = collector.client();
    let auth = format!("Bearer {FORGET_TOKEN}");
    let event = client
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            "user_id=erase-me&event_name=first_game_open",
            &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
        )
        .await;
    assert_eq!(event.status, 200);
    let body = r#"{"game": "test-game", "user_id": "erase-me"}"#;

    let missing = client
        .post("/api/v1/forget", "application/json", body, &[])
        .await;
    assert_eq!(missing.status, 401);
    let wrong_scope = client
        .post(
            "/api/v1/forget",
            "application/json",
            body,
            &[("authorization", "Bearer tc_pull")],
        )
        .await;
    assert_eq!(wrong_scope.status, 403);
    let bad = client
        .post(
            "/api/v1/forget",
            "application/json",
            r#"{"game": "nope", "user_id": "x"}"#,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "unknown_game")
    );

    let unknown = client
        .post(
            "/api/v1/forget",
            "application/json",
            r#"{"game": "test-game", "user_id": "nobody"}"#,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(unknown.status, 200);
    assert_eq!(
        unknown.json(),
        json!({"deleted": {"measure": 0, "collect": 0}, "blocked": true})
    );

    let forgotten = client
        .post(
            "/api/v1/forget",
            "application/json",
            body,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(forgotten.status, 200);
    assert_eq!(
        forgotten.json(),
        json!({"deleted": {"measure": 1, "collect": 0}, "blocked": true})
    );
    assert_eq!(collector.count("measure_logs"), 0);
    assert!(!collector.logs().contains("erase-me"));
}

#[tokio::test(flavor = "multi_thread")]
async fn rekey_re_encrypts_in_place_and_the_old_key_stops_working() {
    let mut collector = Collector::start(Options::default());
    let visit = collector
        .client()
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://rekey.example/"}"#,
            &[],
        )
        .await;
    assert_eq!(visit.status, 204);

    // While the daemon runs, rekeying is refused.
    let new_key = collector.dir.path().join("new.key");
    tracks_collector::testkit::DbKey::generate()
        .expect("key")
        .write_new_file(&new_key)
        .expect("new key file");
    let rekey = |collector: &Collector| {
        Command::new(binary())
            .arg("--config")
            .arg(&collector.config_path)
            .arg("rekey")
            .arg("--new-key-file")
            .arg(&new_key)
            .output()
            .expect("rekey")
    };
    let busy = rekey(&collector);
    assert_eq!(busy.status.code(), Some(1));
    let said = String::from_utf8_lossy(&busy.stderr);
    assert!(
        said.contains("a running daemon owns") && said.contains("stop it"),
        "{said}"
    );

    collector.terminate();
    let old_key = std::fs::read_to_string(&collector.key_file).expect("old key");
    let done = rekey(&collector);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&collector.key_file)
            .expect("key")
            .trim(),
        std::fs::read_to_string(&new_key).expect("new key").trim(),
        "the key file now holds the new key"
    );

    // The old key no longer opens the file; the new one does, with the data intact.
    let old = rusqlite::Connection::open(&collector.db_path).expect("open");
    old.execute_batch(&format!("PRAGMA key = \"x'{}'\";", old_key.trim()))
        .expect("key");
    assert!(
        old.query_row("SELECT count(*) FROM sqlite_master", [], |r| r
            .get::<_, i64>(0))
            .is_err()
    );
    assert_eq!(collector.count("collect_logs"), 1);
    let plain = database_plaintext(
        &std::fs::read(&collector.db_path).expect("db"),
        &raw_key(&collector.key_file),
    );
    assert!(
        contains(&plain, b"rekey.example"),
        "pages decrypt with the new key"
    );
    collector.restart();
    assert_eq!(collector.client().get("/healthz", &[]).await.status, 200);
}

/// The real binary under a shifted clock: started just before an hour turns, it keeps the
/// event at start (not yet expired), then its own hourly job purges it at the top of the hour.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemons_own_schedule_purges_under_a_shifted_clock() {
    assert!(
        Command::new("faketime").arg("--help").output().is_ok(),
        "faketime is needed (apt-get install faketime; scripts/test.sh installs it)"
    );
    let mut collector = Collector::start(Options {
        log_level: "info".into(),
        ..Options::default()
    });
    let now = tracks_collector::unix_now();
    let hour = now - now % 3600;
    // Expires exactly when the clock passes `hour` + 30 days.
    let stamp = hour - 1;
    let answer = collector
        .client()
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            format!("user_id=p&event_name=game_open&time_stamp={stamp}"),
            &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    collector.terminate();

    let start = hour + 30 * 86_400 - 3;
    let daemon = common::serve_at(&collector.config_path, start);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut purged = false;
    while std::time::Instant::now() < deadline && !purged {
        std::thread::sleep(Duration::from_millis(200));
        let reader = tracks_collector::testkit::Reader::open(
            &collector.db_path,
            &tracks_collector::testkit::DbKey::read_file(&collector.key_file).expect("key"),
        );
        purged = reader
            .and_then(|r| r.stats())
            .map(|s| s.events == 0)
            .unwrap_or(false);
    }
    let output = common::terminate_group(daemon);
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        purged,
        "the event was not purged by the schedule; logs:\n{logs}"
    );
    assert!(logs.contains("purged data past retention"), "{logs}");
    let starts = logs.find("tracks-collector is listening").expect("started");
    let purge = logs.find("purged data past retention").expect("purged");
    assert!(
        purge > starts,
        "the purge came from the schedule, after start:\n{logs}"
    );
}
