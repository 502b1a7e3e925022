//! Privacy invariants 1, 5 and 6 through the real binary: canary IPs, user id, User-Agent and
//! query parameter go in; no byte of the state directory, no decrypted row and no log line
//! holds them afterwards, and the database file is encrypted. The canary addresses are also
//! resolved to their countries (`privacy.geoip_db`), and only the codes are kept. A landing
//! page with a token in its path is reported only once `privacy.min_cell_size` people used it.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::mmdb::{Network, write_country_db};
use common::{Collector, IPHONE_UA, MEASURE_KEY, Options, contains, dump_rows, read_tree};
use serde_json::Value;
use tracks_collector::testkit::SecretHash;

const CANARY_V4: &str = "203.0.113.77";
const CANARY_V6: &str = "2001:db8:cafe:beef:1234:5678:9abc:def0";
const CANARY_MEASURE_V4: &str = "198.51.100.99";
const CANARY_USER: &str = "canary-user-5f3a9c";
const CANARY_UA: &str = "CanaryBrowser/9.9 (canary-ua-77e1)";
const CANARY_PARAM: &str = "canary-param-0b7d";
/// An event id is stored only as a keyed hash.
const CANARY_EVENT_ID: &str = "canary-event-id-3e9a";

/// Every form a canary could take on disk: its text, and for addresses their raw bytes (and
/// the IPv6 /64 prefix, which is hashed, never stored).
fn needles() -> Vec<(String, Vec<u8>)> {
    let mut needles: Vec<(String, Vec<u8>)> = [
        CANARY_V4,
        CANARY_V6,
        CANARY_MEASURE_V4,
        CANARY_USER,
        CANARY_UA,
        "canary-ua-77e1",
        CANARY_PARAM,
        CANARY_EVENT_ID,
    ]
    .iter()
    .map(|text| (text.to_string(), text.as_bytes().to_vec()))
    .collect();
    for text in [CANARY_V4, CANARY_MEASURE_V4] {
        let ip: Ipv4Addr = text.parse().expect("v4");
        needles.push((format!("{text} as bytes"), ip.octets().to_vec()));
        needles.push((
            format!("{text} as hex"),
            hex::encode(ip.octets()).into_bytes(),
        ));
    }
    let v6: Ipv6Addr = CANARY_V6.parse().expect("v6");
    needles.push(("v6 /64 prefix as bytes".into(), v6.octets()[..8].to_vec()));
    needles.push((
        "v6 /64 prefix as hex".into(),
        hex::encode(&v6.octets()[..8]).into_bytes(),
    ));
    needles.push((
        "v6 compressed".into(),
        "2001:db8:cafe:beef".as_bytes().to_vec(),
    ));
    needles
}

fn assert_clean(what: &str, bytes: &[u8]) {
    for (name, needle) in needles() {
        assert!(
            !contains(bytes, &needle),
            "{what} contains the canary {name}"
        );
    }
}

async fn send_canaries(collector: &Collector) {
    let client = collector.client();
    let url = format!(
        r#"{{"url": "https://landing.example/page?email={CANARY_PARAM}&utm_source=news", "referrer": "https://ref.example/?q={CANARY_PARAM}", "consent": true}}"#
    );
    // The proxy's one header (`server.client_ip_header`), an address with a port and brackets.
    for forwarded in [
        ("x-forwarded-for", CANARY_V4.to_string()),
        ("x-forwarded-for", format!("[{CANARY_V6}]:443")),
    ] {
        let answer = client
            .post(
                "/collect",
                "application/json",
                url.clone(),
                &[("user-agent", CANARY_UA), (forwarded.0, &forwarded.1)],
            )
            .await;
        assert_eq!(answer.status, 204, "{:?}", answer.body);
    }
    let auth = format!("Bearer {MEASURE_KEY}");
    for (n, ip) in [CANARY_MEASURE_V4, CANARY_V6].iter().enumerate() {
        let body = format!(
            "user_id={CANARY_USER}&event_name=first_game_open&ip={ip}&storefront=steam\
             &event_id={CANARY_EVENT_ID}-{n}"
        );
        let answer = client
            .post(
                "/measure",
                "application/x-www-form-urlencoded",
                body,
                &[("authorization", &auth), ("user-agent", CANARY_UA)],
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }
    // Refused input must not leak either: an error message never echoes the user id or IP.
    let refused = client
        .post(
            "/measure",
            "application/json",
            format!(r#"{{"user_id": "{CANARY_USER}", "event_name": "nope", "ip": "{CANARY_V4}"}}"#),
            &[("authorization", &auth), ("x-forwarded-for", CANARY_V4)],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert_clean("an error answer", &refused.body);
    let bad_ip = client
        .post(
            "/measure",
            "application/json",
            format!(
                r#"{{"user_id": "{CANARY_USER}", "event_name": "game_open", "ip": "{CANARY_V4}x"}}"#
            ),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(bad_ip.status, 400);
    assert_clean("an error answer", &bad_ip.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_raw_ip_user_id_agent_or_parameter_is_written_anywhere() {
    // The country database lives outside the scanned folders: its networks are not canaries.
    let geo = tempfile::tempdir().expect("dir");
    let countries = geo.path().join("countries.mmdb");
    write_country_db(
        &countries,
        "DBIP-Country-Lite",
        &[
            Network::new("203.0.113.0/24", "DE"),
            Network::new("198.51.100.0/24", "FR"),
            Network::new("2001:db8:cafe::/48", "JP"),
        ],
    )
    .expect("the test database");
    let mut collector = Collector::start(Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        log_level: "trace".into(),
        extra: format!("[privacy]\ngeoip_db = \"{}\"\n", countries.display()),
        ..Options::default()
    });
    send_canaries(&collector).await;
    // Each canary address went through the country lookup: its code is what is kept of it.
    let countries = |table: &str| -> Vec<String> {
        let conn = collector.open_db();
        let mut stmt = conn
            .prepare(&format!("SELECT country FROM {table} ORDER BY id"))
            .expect("select");
        stmt.query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("countries")
    };
    assert_eq!(countries("collect_logs"), ["DE", "JP"]);
    assert_eq!(countries("measure_logs"), ["FR", "JP"]);

    // The stored rows are there, and none of them holds a canary.
    let rows = dump_rows(&collector.open_db());
    assert!(
        rows.contains("landing.example"),
        "the visits were stored:\n{rows}"
    );
    assert_eq!(collector.count("collect_logs"), 2);
    assert_eq!(collector.count("measure_logs"), 2);
    assert_clean("the decrypted rows", rows.as_bytes());

    // While running (WAL and shared memory present) and after a clean stop.
    for (path, bytes) in read_tree(&collector.state_dir) {
        assert_clean(&format!("{} (running)", path.display()), &bytes);
    }
    let status = collector.terminate();
    assert!(status.success(), "{status:?}");
    for (path, bytes) in read_tree(collector.dir.path()) {
        assert_clean(&format!("{} (stopped)", path.display()), &bytes);
    }
    let logs = collector.logs();
    assert!(
        logs.contains("tracks-collector is listening"),
        "logs were captured"
    );
    assert_clean("the logs", logs.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_file_is_encrypted() {
    let mut collector = Collector::start(Options::default());
    send_canaries(&collector).await;
    let check = |bytes: &[u8], what: &str| {
        assert!(
            !bytes.starts_with(b"SQLite format 3\0"),
            "{what} has a plain SQLite header"
        );
        for text in [
            "CREATE TABLE",
            "collect_logs",
            "measure_logs",
            "landing.example",
            "steam",
        ] {
            assert!(
                !contains(bytes, text.as_bytes()),
                "{what} holds the plain text {text:?}"
            );
        }
    };
    let wal = std::fs::read(collector.db_path.with_extension("db-wal"))
        .expect("WAL exists while running");
    assert!(wal.len() > 4096, "the WAL holds the writes");
    check(&wal, "the WAL");
    collector.terminate();
    let file = std::fs::read(&collector.db_path).expect("database");
    assert!(file.len() >= 4096);
    check(&file, "the database file");
    // And the key really is what opens it.
    assert!(dump_rows(&collector.open_db()).contains("landing.example"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_addresses_in_one_prefix_share_a_pseudonym() {
    let collector = Collector::start(Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        ..Options::default()
    });
    let client = collector.client();
    for ip in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"] {
        let ip: IpAddr = ip.parse().expect("v6");
        let answer = client
            .post(
                "/collect",
                "application/json",
                r#"{"url": "https://a.example/"}"#,
                &[("x-forwarded-for", &ip.to_string())],
            )
            .await;
        assert_eq!(answer.status, 204);
    }
    let distinct: i64 = collector
        .open_db()
        .query_row(
            "SELECT count(DISTINCT ip_hash) FROM collect_logs",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(
        distinct, 2,
        "one /64 is one pseudonym; another /64 is another"
    );
}

/// The page decryption the deletion tests rely on must find what is there, or their "not
/// found" would prove nothing.
#[tokio::test(flavor = "multi_thread")]
async fn decrypted_pages_show_stored_rows() {
    let mut collector = Collector::start(Options::default());
    send_canaries(&collector).await;
    let key = common::pages::raw_key(&collector.key_file);
    let wal = std::fs::read(collector.db_path.with_extension("db-wal")).expect("WAL");
    let plain = common::pages::wal_plaintext(&wal, &key);
    assert!(
        contains(&plain, b"landing.example"),
        "the WAL pages decrypt"
    );
    collector.terminate();
    let file = std::fs::read(&collector.db_path).expect("database");
    let plain = common::pages::database_plaintext(&file, &key);
    assert!(
        contains(&plain, b"landing.example"),
        "the database pages decrypt"
    );
    assert!(
        contains(&plain, b"CREATE TABLE collect_logs"),
        "page 1 holds the schema"
    );
}

const PULL_TOKEN: &str = "tc_test_pull_token";

/// A visit from `address` (through a trusted proxy) to `path` on the landing host; the query
/// and the fragment are dropped at ingest.
async fn visit_page(collector: &Collector, address: &str, path: &str) {
    let body = format!(
        r#"{{"url": "https://mygame.example{path}?token=zz-query-secret#frag", "game": "test-game", "referrer": "https://mail.example/inbox"}}"#
    );
    let answer = collector
        .client()
        .post(
            "/collect",
            "application/json",
            body,
            &[("x-forwarded-for", address), ("user-agent", IPHONE_UA)],
        )
        .await;
    assert_eq!(answer.status, 204, "{:?}", answer.body);
}

/// The aggregates document of today, through the API.
async fn pulled(collector: &Collector) -> Value {
    let day = tracks_collector::testkit::utc_day(tracks_collector::unix_now());
    let answer = collector
        .client()
        .get(
            &format!("/api/v1/aggregates?from={day}&to={day}&game=test-game"),
            &[("authorization", &format!("Bearer {PULL_TOKEN}"))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.json()
}

/// (page, visits, visitors, players) of the document's pages.
fn pages(document: &Value) -> Vec<(String, i64, i64, i64)> {
    document["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|row| {
            (
                row["page"].as_str().unwrap_or("-").to_string(),
                row["visits"].as_i64().unwrap_or(-1),
                row["visitors"].as_i64().unwrap_or(-1),
                row["players"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// A path with a token in it is a landing page like any other: under `min_cell_size` people it
/// is merged into `(other)`, in the API, the command line's JSON, table and CSV alike; at the
/// minimum it is reported. The query string never is.
#[tokio::test(flavor = "multi_thread")]
async fn a_path_with_a_token_is_reported_only_at_min_cell_size() {
    let mut collector = Collector::start(Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        extra: format!(
            "[privacy]\nmin_cell_size = 3\n\n             [[tokens]]\nname = \"pull\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n",
            SecretHash::of(PULL_TOKEN.as_bytes()).to_config_string(),
        ),
        ..Options::default()
    });
    for n in 1..=4 {
        visit_page(&collector, &format!("198.51.100.{n}"), "/launch").await;
    }
    // Two people open the reset link, one of them twice.
    visit_page(&collector, "203.0.113.1", "/reset/abc123").await;
    visit_page(&collector, "203.0.113.1", "/reset/abc123").await;
    visit_page(&collector, "203.0.113.2", "/reset/abc123").await;
    // Three players come from the launch page's visitors.
    for n in 1..=3 {
        let auth = format!("Bearer {MEASURE_KEY}");
        let answer = collector
            .client()
            .post(
                "/measure",
                "application/x-www-form-urlencoded",
                format!("user_id=p{n}&event_name=first_game_open&ip=198.51.100.{n}"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
    }

    let document = pulled(&collector).await;
    assert_eq!(
        pages(&document),
        [
            ("mygame.example/launch".to_string(), 4, 4, 3),
            ("(other)".to_string(), 3, 2, 0),
        ],
        "{document}"
    );
    assert_eq!(document["sources"][0]["referrer_host"], "mail.example");
    assert_eq!(document["sources"][0]["visits"], 7);
    assert_eq!(document["sources"][0]["players"], 3);
    let text = document.to_string();
    assert!(!text.contains("abc123"), "{text}");
    assert!(!text.contains("zz-query-secret"), "{text}");

    collector.terminate();
    let day = tracks_collector::testkit::utc_day(tracks_collector::unix_now());
    let range = [
        "--from",
        day.as_str(),
        "--to",
        day.as_str(),
        "--game",
        "test-game",
    ];
    for format in [
        &["--format", "json"][..],
        &["--format", "csv"],
        &["--detail"],
    ] {
        let args: Vec<&str> = ["aggregates"]
            .iter()
            .chain(&range)
            .chain(format)
            .copied()
            .collect();
        let output = collector.run_command(&args);
        let out = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {out}");
        assert!(out.contains("mygame.example/launch"), "{args:?}: {out}");
        assert!(!out.contains("abc123"), "{args:?}: {out}");
    }

    // A third person: now the page has as many visitors as the minimum, and is reported.
    collector.start_again();
    visit_page(&collector, "203.0.113.3", "/reset/abc123").await;
    let document = pulled(&collector).await;
    assert_eq!(
        pages(&document),
        [
            ("mygame.example/launch".to_string(), 4, 4, 3),
            ("mygame.example/reset/abc123".to_string(), 4, 3, 0),
        ],
        "{document}"
    );
    assert!(!document.to_string().contains("zz-query-secret"));
}
