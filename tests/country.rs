//! The country dimension through the real binary, with a small MaxMind-format database made by
//! the test: every kind of visit and game event resolves its address's country (IPv4, IPv6,
//! none), the conversions count the player's own country, small country rows merge into
//! `(other)`, a missing or broken database stops the start naming `privacy.geoip_db`, and
//! SIGHUP reads the file again.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mmdb::{Network, write_country_db};
use common::world::{DAY, HOUR, IPHONE, NOV_1, WINDOWS, World, event, page};
use common::{Collector, IPHONE_UA, MEASURE_KEY, Options, binary};
use serde_json::Value;

/// The test database: IPv4 and IPv6 networks, one with DB-IP's "unknown", and two /64s of one
/// /48 in different countries.
fn networks() -> Vec<Network> {
    vec![
        Network::new("203.0.113.0/24", "DE"),
        Network::new("198.51.100.0/25", "FR"),
        Network::new("198.51.100.128/25", "ZZ"),
        Network::new("2001:db8:cafe::/48", "JP"),
        Network::new("2001:db8:beef:1::/64", "NL"),
        Network::new("2001:db8:beef:2::/64", "BE"),
    ]
}

/// A database file outside the collector's folder (the canary scans read all of that).
fn database(networks: &[Network]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("countries.mmdb");
    write_country_db(&path, "GeoLite2-Country", networks).expect("the test database");
    (dir, path)
}

fn options(db: &Path, privacy_extra: &str) -> Options {
    Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        extra: format!(
            "[privacy]\ngeoip_db = \"{}\"\n{privacy_extra}\n\n\
             [[links]]\nname = \"launch\"\ngame = \"test-game\"\n\
             destination = \"https://store.example/app/480/\"\n",
            db.display()
        ),
        ..Options::default()
    }
}

async fn visit(collector: &Collector, address: &str, query: &str) {
    let answer = collector
        .client()
        .post(
            "/collect",
            "application/json",
            format!(r#"{{"url": "https://landing.example/?{query}", "game": "test-game"}}"#),
            &[("x-forwarded-for", address), ("user-agent", IPHONE_UA)],
        )
        .await;
    assert_eq!(answer.status, 204, "{:?}", answer.body);
}

async fn game_open(collector: &Collector, user: &str, ip: Option<&str>, forwarded: &str) {
    let mut body = format!("user_id={user}&event_name=first_game_open&platform=pc");
    if let Some(ip) = ip {
        body.push_str(&format!("&ip={ip}"));
    }
    let auth = format!("Bearer {MEASURE_KEY}");
    let answer = collector
        .client()
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            body,
            &[("authorization", &auth), ("x-forwarded-for", forwarded)],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
}

/// The stored countries of a log table, in arrival order (NULL as "-").
fn stored(collector: &Collector, table: &str) -> Vec<String> {
    let conn = collector.open_db();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT coalesce(country, '-') FROM {table} ORDER BY id"
        ))
        .expect("select");
    stmt.query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn document(collector: &Collector) -> Value {
    let output = collector.run_command(&["aggregates", "--format", "json"]);
    serde_json::from_slice(&output.stdout).expect("a JSON document")
}

/// (country, visits or events, visitors or users) of each row of `kind`, sorted.
fn by_country(document: &Value, kind: &str) -> Vec<(String, i64, i64)> {
    let (many, distinct) = if kind == "traffic" {
        ("visits", "visitors")
    } else {
        ("events", "users")
    };
    let mut rows: Vec<(String, i64, i64)> = document[kind]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row["country"].as_str().unwrap_or("-").to_string(),
                row[many].as_i64().expect("count"),
                row[distinct].as_i64().expect("count"),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread")]
async fn every_visit_and_event_gets_its_address_country() {
    let (_db_dir, db) = database(&networks());
    // A /48 pseudonym, so that a player's event links to a visit from another /64 of theirs.
    let collector = Collector::start(options(&db, "ipv6_prefix = 48"));
    let client = collector.client();

    // The collect script's visits: IPv4, IPv6, an address in no network, DB-IP's unknown.
    visit(&collector, "203.0.113.77", "utm_source=news").await;
    visit(&collector, "2001:db8:cafe:1::9", "utm_source=news").await;
    visit(&collector, "192.0.2.1", "utm_source=news").await;
    visit(&collector, "198.51.100.200", "utm_source=news").await;
    // A link's visit.
    let answer = client
        .get("/r/launch", &[("x-forwarded-for", "198.51.100.5")])
        .await;
    assert_eq!(answer.status, 302);
    // A server-side visit: the visitor's `ip`, not the sender's address.
    let auth = format!("Bearer {MEASURE_KEY}");
    let answer = client
        .post(
            "/v1/collect",
            "application/json",
            r#"{"event_name": "page_view", "source": "ads", "ip": "2001:db8:cafe:2::1"}"#,
            &[("authorization", &auth), ("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // A visit from the NL /64 of a /48 whose BE /64 the player opens the game from.
    visit(&collector, "2001:db8:beef:1::1", "utm_source=tiktok").await;
    assert_eq!(
        stored(&collector, "collect_logs"),
        ["DE", "JP", "-", "-", "FR", "JP", "NL"]
    );

    // Game events: the event's `ip` when it names one, else the sender's address.
    game_open(
        &collector,
        "alice",
        Some("2001:db8:beef:2::7"),
        "192.0.2.50",
    )
    .await;
    game_open(&collector, "bob", None, "198.51.100.66").await;
    game_open(&collector, "carol", Some("192.0.2.99"), "203.0.113.1").await;
    assert_eq!(stored(&collector, "measure_logs"), ["BE", "FR", "-"]);

    let document = document(&collector);
    assert_eq!(
        by_country(&document, "traffic"),
        [
            ("-".to_string(), 2, 2),
            ("DE".to_string(), 1, 1),
            ("FR".to_string(), 1, 1),
            ("JP".to_string(), 1, 1),
            ("JP".to_string(), 1, 1),
            ("NL".to_string(), 1, 1),
        ]
    );
    // Alice's open was brought by the NL visit (one /48), and counts in her own country.
    let alice = document["conversions"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["source"] == "tiktok")
        .unwrap_or_else(|| panic!("the linked open: {document}"));
    assert_eq!(alice["country"], "BE", "{alice}");
    assert_eq!(
        by_country(&document, "conversions"),
        [
            ("-".to_string(), 1, 1),
            ("BE".to_string(), 1, 1),
            ("FR".to_string(), 1, 1),
        ]
    );

    // The command line's detailed table shows the column.
    let table = collector.run_command(&["aggregates", "--detail"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("COUNTRY"), "{table}");
    // A data request shows the country held with each of the player's events.
    let subject = collector.run_command(&[
        "subject",
        "--game",
        "test-game",
        "--user-id",
        "alice",
        "--format",
        "json",
    ]);
    let subject: Value = serde_json::from_slice(&subject.stdout).expect("json");
    assert_eq!(subject["events"][0]["country"], "BE", "{subject}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_country_with_one_visitor_merges_into_other() {
    let (_db_dir, db) = database(&networks());
    let collector = Collector::start(options(&db, "min_cell_size = 2"));
    // Two visitors from DE, one from FR, one campaign and device: the country splits the cell.
    for address in ["203.0.113.10", "203.0.113.11", "198.51.100.7"] {
        visit(&collector, address, "utm_source=news").await;
        game_open(&collector, &format!("player-{address}"), None, address).await;
    }
    visit(&collector, "203.0.113.10", "utm_source=news").await;
    let document = document(&collector);
    let traffic = document["traffic"].as_array().expect("rows");
    assert_eq!(traffic.len(), 2, "{document}");
    assert_eq!(
        by_country(&document, "traffic"),
        [("(other)".to_string(), 1, 1), ("DE".to_string(), 3, 2)]
    );
    let other = traffic
        .iter()
        .find(|row| row["country"] == "(other)")
        .expect("the merged row");
    assert_eq!(other["source"], "(other)", "{other}");
    assert_eq!(
        by_country(&document, "conversions"),
        [("(other)".to_string(), 1, 1), ("DE".to_string(), 2, 2)]
    );
    let total: i64 = traffic
        .iter()
        .filter_map(|row| row["visits"].as_i64())
        .sum();
    assert_eq!(total, 4, "the totals are kept");
}

/// The roll-ups counted as records arrive equal their recomputation from the stored logs
/// (the definition, run after deletions), country included.
#[tokio::test(flavor = "multi_thread")]
async fn country_cells_rebuild_from_the_logs() {
    let (_db_dir, db) = database(&networks());
    let world = World::new(|config| config.privacy.geoip_db = Some(db.clone()));
    assert!(world.rotate(NOV_1).await);
    let morning = NOV_1 + 9 * HOUR;
    for (ip, ua) in [
        ("203.0.113.10", IPHONE),
        ("203.0.113.11", IPHONE),
        ("2001:db8:cafe::1", IPHONE),
        ("192.0.2.1", WINDOWS),
    ] {
        world.visit(ip, page("utm_source=news"), ua, morning).await;
    }
    let open = |user: &str| event(user, "first_game_open", serde_json::json!({}));
    world
        .open("key-demo", open("a"), "203.0.113.10", morning + HOUR)
        .await;
    world
        .open("key-demo", open("b"), "198.51.100.1", morning + HOUR)
        .await;
    world
        .open("key-demo", open("c"), "2001:db8:cafe::1", morning + DAY)
        .await;
    let now = NOV_1 + 2 * DAY;
    let counted = world.document("2026-11-01", "2026-11-02", None, now);
    let countries = |rows: Vec<Option<String>>| -> Vec<String> {
        rows.into_iter()
            .map(|country| country.unwrap_or_else(|| "-".into()))
            .collect()
    };
    assert_eq!(
        countries(
            counted
                .traffic
                .iter()
                .map(|row| row.country.clone())
                .collect()
        ),
        ["-", "DE", "JP"]
    );
    assert_eq!(
        countries(
            counted
                .conversions
                .iter()
                .map(|row| row.country.clone())
                .collect()
        ),
        // (direct) sorts before news.
        ["FR", "DE", "JP"]
    );
    world
        .store
        .rebuild_cells(
            tracks_collector::testkit::parse_day("2026-11-01").expect("day"),
            tracks_collector::testkit::parse_day("2026-11-02").expect("day"),
        )
        .await
        .expect("rebuild");
    assert_eq!(
        world.document("2026-11-01", "2026-11-02", None, now),
        counted
    );
}

/// `check-config` and `serve` on a configuration whose `geoip_db` is `db`.
fn refused_at_start(db: &Path, expect: &str) {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("collector.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls = false\n\n[storage]\npath = \"c.db\"\n\
             key_file = \"db.key\"\n\n[privacy]\ngeoip_db = \"{}\"\n",
            db.display()
        ),
    )
    .expect("config");
    for command in ["check-config", "serve"] {
        let output = Command::new(binary())
            .args(["--config", "collector.toml", command])
            .current_dir(dir.path())
            .env_remove("TRACKS_DB_KEY")
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("collector.toml:10: `privacy.geoip_db`") && stderr.contains(expect),
            "{command}: {stderr}"
        );
    }
    assert!(!dir.path().join("c.db").exists(), "nothing was started");
}

#[test]
fn a_missing_or_broken_database_stops_the_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    refused_at_start(&dir.path().join("GeoLite2-Country.mmdb"), "cannot read");
    let corrupt = dir.path().join("corrupt.mmdb");
    std::fs::write(&corrupt, b"<html>Too Many Requests</html>").expect("write");
    refused_at_start(&corrupt, "not a MaxMind DB");
    let (_db_dir, db) = database(&networks());
    let mut cut = std::fs::read(&db).expect("read");
    cut.drain(..40);
    std::fs::write(&corrupt, cut).expect("write");
    refused_at_start(&corrupt, "not a MaxMind DB");
    let asn = dir.path().join("asn.mmdb");
    write_country_db(&asn, "GeoLite2-ASN", &networks()).expect("mmdb");
    refused_at_start(&asn, "not a country database");
}

/// Waits until the log holds `line` `count` times.
fn wait_for_log(collector: &Collector, line: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.logs().matches(line).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {line:?} in the log:\n{}",
            collector.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn hangup(collector: &Collector) {
    let status = Command::new("kill")
        .args(["-HUP", &collector.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reads_the_database_again_and_a_broken_one_keeps_the_old() {
    let (_db_dir, db) = database(&networks());
    let collector = Collector::start(options(&db, ""));
    visit(&collector, "203.0.113.77", "").await;

    // A weekly update moves the network (geoipupdate writes a new file, then renames it).
    let next = db.with_extension("new");
    write_country_db(
        &next,
        "GeoLite2-Country",
        &[Network::new("203.0.113.0/24", "AT")],
    )
    .expect("mmdb");
    std::fs::rename(&next, &db).expect("rename");
    hangup(&collector);
    wait_for_log(&collector, "reloaded the country database", 1);
    visit(&collector, "203.0.113.77", "").await;
    visit(&collector, "198.51.100.5", "").await;

    // A download cut short: the daemon keeps the database it has, and says why.
    std::fs::write(&db, b"\xAB\xCD\xEFMaxMind.com").expect("write");
    hangup(&collector);
    wait_for_log(&collector, "kept the old country database", 1);
    visit(&collector, "203.0.113.77", "").await;
    assert_eq!(stored(&collector, "collect_logs"), ["DE", "AT", "-", "AT"]);
    let logs = collector.logs();
    let kept = logs
        .lines()
        .find(|line| line.contains("kept the old country database"))
        .expect("the line");
    assert!(kept.contains("countries.mmdb"), "names the file: {kept}");
    // The certificate is reloaded by the same signal, as before.
    assert_eq!(logs.matches("reloaded the TLS certificate").count(), 2);
}
