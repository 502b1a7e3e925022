//! The dashboard: its files' headers through the real binary, and the page in a real headless
//! Chromium against a daemon holding a known story. The numbers the page shows equal the API's
//! and the hand-worked ones; it talks to no other origin; it is photographed at 1280 and 390 px
//! wide (kept as test artifacts in `<target>/test-artifacts/`).
//!
//! Needs Debian's `chromium` (`scripts/test.sh` installs it); never skipped.

mod common;

#[path = "common/chromium.rs"]
mod chromium;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chromium::{Chromium, Tab, WAIT};
use common::world::{DAY, HOUR, IPHONE, WINDOWS, World, event, page};
use common::{Collector, MEASURE_KEY, Options};
use rcgen::PublicKeyData;
use serde_json::{Value, json};
use tracks_collector::testkit::{Config, SecretHash};
use tracks_collector::testkit::{DbKey, utc_day};

const TOKEN: &str = "tc_test_dashboard_token";
/// An operator's token: the aggregates and the ledger.
const ADMIN_TOKEN: &str = "tc_test_admin_token";

fn options() -> Options {
    Options {
        extra: format!(
            "[[tokens]]\nname = \"dashboard\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n\n\
             [[tokens]]\nname = \"admin\"\nscopes = [\"aggregates\", \"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(TOKEN.as_bytes()).to_config_string(),
            SecretHash::of(ADMIN_TOKEN.as_bytes()).to_config_string(),
        ),
        log_level: "info".into(),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_its_files_are_static_strict_and_cookieless() {
    let collector = Collector::start(options());
    let client = collector.client();
    for (path, media) in [
        ("/dashboard", "text/html"),
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let answer = client.get(path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(answer.status, 200, "{path}");
        let header = |name: &str| answer.header(name).unwrap_or_default().to_string();
        assert!(header("content-type").starts_with(media), "{path}");
        assert!(
            header("content-security-policy").starts_with("default-src 'self'"),
            "{path}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        assert!(answer.header("set-cookie").is_none(), "{path}");
        assert_eq!(header("content-encoding"), "gzip", "{path}");
        let etag = header("etag");
        let again = client.get(path, &[("if-none-match", &etag)]).await;
        assert_eq!(again.status, 304, "{path}");
        assert!(again.body.is_empty());
    }
    // The page holds no data: the same bytes before and after anything is recorded, and
    // nothing of the configuration (the tokens' names, the games).
    let plain = client.get("/dashboard", &[]).await;
    let text = String::from_utf8_lossy(&plain.body);
    assert!(
        text.contains("<script defer src=\"/dashboard.js\">"),
        "{text}"
    );
    for secret in ["test-game", "dashboard\"", "tc_test"] {
        assert!(!text.contains(secret), "{secret} in the page");
    }
    let head = client.method("HEAD", "/dashboard", &[]).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let post = client.method("POST", "/dashboard", &[]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.error_code(), "method_not_allowed");
}

/// The story, in the daemon's own database while it is stopped, at days relative to today:
/// `base` is nine days ago (so its players' first week is over), 00:00 UTC.
///
/// - twitter / social / launch: A visits twice and C once on base, G and H on base + 3 (iPhone
///   for A, Windows otherwise): 5 visits, 4 visitors (A counts once per day). Alice (A, pc,
///   steam) and carol (C, steam) open first on base, gina (G, steam) on base + 3: 3 players.
///   Alice plays again on base + 1: D1 1 of 3 (gina's next day is over too), D7 1 of 2
///   (gina's week is not over).
/// - newsletter / email: B on base; bob (B, pc, epic) opens first on base and again on
///   base + 5: D1 0 of 1, D7 1 of 1.
/// - reddit: three visitors on base + 3 who never play.
/// - (direct): dave (mac) and frank, with no visit before their first opens on base.
async fn write_story(collector: &mut Collector, base: i64) {
    collector.terminate();
    let config = Config::load(&collector.config_path).expect("the collector's config");
    let key = DbKey::read_file(&collector.key_file).expect("the collector's key");
    let world = World::on(config, key);
    let twitter = || page("utm_source=twitter&utm_medium=social&utm_campaign=launch");
    let (day_0, day_3) = (base + 9 * HOUR, base + 3 * DAY + 9 * HOUR);
    world.visit("203.0.113.1", twitter(), IPHONE, day_0).await;
    world
        .visit("203.0.113.1", twitter(), IPHONE, day_0 + HOUR)
        .await;
    world.visit("203.0.113.3", twitter(), WINDOWS, day_0).await;
    world.visit("203.0.113.7", twitter(), WINDOWS, day_3).await;
    world.visit("203.0.113.8", twitter(), WINDOWS, day_3).await;
    // The period before the one shown: one twitter visit and the player it brought.
    let before = base - 8 * DAY;
    world.visit("203.0.113.9", twitter(), WINDOWS, before).await;
    let mut newsletter = page("utm_source=newsletter&utm_medium=email");
    newsletter["referrer"] = json!("https://mail.example/inbox");
    world.visit("203.0.113.2", newsletter, WINDOWS, day_0).await;
    // Reddit's visits land on a page of their own, from reddit.
    let reddit = json!({
        "url": "https://mygame.example/news?utm_source=reddit",
        "referrer": "https://www.reddit.com/r/games/",
    });
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        world.visit(ip, reddit.clone(), WINDOWS, day_3).await;
    }
    let first = "first_game_open";
    let opens = [
        (
            "alice",
            first,
            "203.0.113.1",
            json!({"platform": "pc", "storefront": "steam"}),
            base + 12 * HOUR,
        ),
        (
            "carol",
            first,
            "203.0.113.3",
            json!({"storefront": "steam"}),
            base + 12 * HOUR,
        ),
        (
            "bob",
            first,
            "203.0.113.2",
            json!({"platform": "pc", "storefront": "epic"}),
            base + 13 * HOUR,
        ),
        (
            "dave",
            first,
            "192.0.2.4",
            json!({"platform": "mac"}),
            base + 14 * HOUR,
        ),
        ("frank", first, "192.0.2.6", json!({}), base + 15 * HOUR),
        (
            "henry",
            first,
            "203.0.113.9",
            json!({"storefront": "steam"}),
            before + 3 * HOUR,
        ),
        (
            "gina",
            first,
            "203.0.113.7",
            json!({"storefront": "steam"}),
            base + 3 * DAY + 12 * HOUR,
        ),
        (
            "alice",
            "game_open",
            "203.0.113.1",
            json!({"platform": "pc"}),
            base + DAY + 8 * HOUR,
        ),
        (
            "bob",
            "game_open",
            "203.0.113.2",
            json!({"platform": "pc"}),
            base + 5 * DAY + 8 * HOUR,
        ),
    ];
    for (user, name, ip, extra, time) in opens {
        let written = world
            .open(MEASURE_KEY, event(user, name, extra), ip, time)
            .await;
        assert_eq!(written.stored, 1, "{user}");
    }
    world.store.close();
    collector.restart();
}

/// The campaigns as the page shows them, hand-worked from the story: label, visits, visitors,
/// first opens, players, conversion, D1 return, D7 return; most visitors first, (direct) last.
/// Each row, then its players against the 14 days before (one twitter player then).
const EXPECTED: [[&str; 9]; 4] = [
    [
        "twitter / social / launch",
        "5",
        "4",
        "3",
        "3",
        "75.0%",
        "33.3%",
        "50.0%",
        "▲ 200%",
    ],
    ["reddit", "3", "3", "0", "0", "0.0%", "–", "–", "–"],
    [
        "newsletter / email",
        "1",
        "1",
        "1",
        "1",
        "100.0%",
        "0.0%",
        "100.0%",
        "▲ new",
    ],
    ["(direct)", "0", "0", "2", "2", "–", "0.0%", "0.0%", "▲ new"],
];
/// The total's conversion counts the players a visit brought (4 of 6: dave and frank came
/// with no visit) per visitor.
const EXPECTED_TOTAL: [&str; 9] = [
    "Total", "9", "8", "6", "6", "50.0%", "16.7%", "40.0%", "▲ 500%",
];

/// Per campaign label, from the API's document: visits, visitors, first opens, players, the
/// (returned, players) of D1 and D7 over the days whose window is over, and the players of the
/// `(direct)` source, whom no visit brought.
type Sums = BTreeMap<String, [i64; 9]>;

fn api_sums(document: &Value) -> Sums {
    let today = document["generated_at"].as_str().expect("generated_at")[..10].to_string();
    let age = |day: &str| {
        let parse = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("day");
        (parse(&today) - parse(day)).num_days()
    };
    let label = |row: &Value, referrer: &Value| -> String {
        let source = row["source"].as_str().or(referrer.as_str());
        match source {
            None | Some("(direct)") => "(direct)".into(),
            Some(source) => [
                Some(source),
                row["medium"].as_str(),
                row["campaign"].as_str(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" / "),
        }
    };
    let mut sums = Sums::new();
    for row in document["traffic"].as_array().expect("traffic") {
        let sum = sums.entry(label(row, &row["referrer_host"])).or_default();
        sum[0] += row["visits"].as_i64().expect("visits");
        sum[1] += row["visitors"].as_i64().expect("visitors");
    }
    for row in document["conversions"].as_array().expect("conversions") {
        if row["event"] != "first_game_open" {
            continue;
        }
        let sum = sums.entry(label(row, &Value::Null)).or_default();
        let users = row["users"].as_i64().expect("users");
        sum[2] += row["events"].as_i64().expect("events");
        sum[3] += users;
        if row["source"] == "(direct)" {
            sum[8] += users;
        }
        let age = age(row["day"].as_str().expect("day"));
        if age > 1 {
            sum[4] += row["returned_d1"].as_i64().expect("returned_d1");
            sum[5] += users;
        }
        if age > 7 {
            sum[6] += row["returned_d7"].as_i64().expect("returned_d7");
            sum[7] += users;
        }
    }
    sums
}

/// A share as the page writes it.
fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / whole as f64)
    }
}

/// The base64 SHA-256 of the collector's certificate key, for Chromium to trust it alone.
fn trusted_spki(collector: &Collector) -> Vec<String> {
    let pem = std::fs::read_to_string(collector.dir.path().join("tls/key.pem")).expect("key");
    let key = rcgen::KeyPair::from_pem(&pem).expect("leaf key");
    let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    vec![data_encoding::BASE64.encode(digest.as_ref())]
}

/// `<target>/test-artifacts`: beside the binary under test, never in the repository.
fn artifacts() -> PathBuf {
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_tracks-collector"));
    let target = binary
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the target folder");
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts folder");
    dir
}

fn strings(value: &Value) -> Vec<Vec<String>> {
    value
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("cells")
                .iter()
                .map(|cell| cell.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .collect()
}

const ROWS: &str = "Array.from(document.querySelectorAll('#campaigns tbody tr, #campaigns tfoot tr'))\
    .map(row => Array.from(row.cells).map(cell => cell.textContent))";

fn status(browser: &mut Chromium, tab: &Tab) -> String {
    browser
        .eval(tab, "document.getElementById('status').textContent")
        .expect("status")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_apis_numbers_in_a_real_browser() {
    let mut collector = Collector::start(options());
    let now = tracks_collector::unix_now();
    let base = now - now % DAY - 9 * DAY;
    write_story(&mut collector, base).await;
    let (from, to) = (utc_day(now - 13 * DAY), utc_day(now));

    let api = collector
        .client()
        .get(
            &format!("/api/v1/aggregates?from={from}&to={to}"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .await;
    assert_eq!(api.status, 200, "{:?}", api.body);
    let sums = api_sums(&api.json());

    let origin = format!("https://localhost:{}", collector.addr.port());
    let mut browser = Chromium::launch(WINDOWS, &trusted_spki(&collector));
    let tab = browser.open_tab();
    for domain in ["Network.enable", "Log.enable", "Runtime.enable"] {
        browser.command(&tab, domain, json!({}));
    }
    browser.resize(&tab, 1280, 900, false);

    // Without a token the page asks for one; a wrong token is refused with what to do.
    browser.navigate(&tab, &format!("{origin}/dashboard"), None);
    browser.wait_until(
        &tab,
        "document.getElementById('login').hidden === false",
        WAIT,
    );
    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = {}; \
             document.getElementById('login').requestSubmit(); true",
            json!(token)
        )
    };
    browser.eval(&tab, &submit("tc_wrong")).expect("submit");
    browser.wait_until(
        &tab,
        "document.getElementById('status').textContent.includes('aggregates scope')",
        WAIT,
    );
    browser.eval(&tab, &submit(TOKEN)).expect("submit");
    browser.wait_until(&tab, "document.body.dataset.loaded !== undefined", WAIT);

    // The token can come in the fragment instead, which the page then drops from the address.
    // (Another query makes it a new page, not a jump inside the one shown.)
    browser.navigate(
        &tab,
        &format!("{origin}/dashboard?again#token={TOKEN}"),
        None,
    );
    browser.wait_until(
        &tab,
        &format!("document.body.dataset.loaded === '{from}..{to}'"),
        WAIT,
    );
    assert_eq!(
        browser.eval(&tab, "location.href").expect("href"),
        json!(format!("{origin}/dashboard?again"))
    );
    assert_eq!(
        browser.eval(&tab, "document.cookie").expect("cookie"),
        json!("")
    );
    assert_eq!(
        browser
            .eval(&tab, "localStorage.length + sessionStorage.length")
            .expect("storage"),
        json!(0)
    );

    // The campaign table: the hand-worked story, and the API's numbers.
    let rows = strings(&browser.eval(&tab, ROWS).expect("rows"));
    let mut expected: Vec<Vec<String>> = EXPECTED
        .iter()
        .map(|row| row.iter().map(|cell| cell.to_string()).collect())
        .collect();
    expected.push(EXPECTED_TOTAL.iter().map(|cell| cell.to_string()).collect());
    assert_eq!(rows, expected);
    for row in &rows[..rows.len() - 1] {
        let sum = sums
            .get(&row[0])
            .unwrap_or_else(|| panic!("{} not in the API", row[0]));
        let shown: Vec<i64> = row[1..5]
            .iter()
            .map(|cell| cell.replace(',', "").parse().expect("a count"))
            .collect();
        assert_eq!(shown, sum[..4], "{}", row[0]);
        assert_eq!(
            row[5],
            percent(sum[3] - sum[8], sum[1]),
            "conversion of {}",
            row[0]
        );
        assert_eq!(row[6], percent(sum[4], sum[5]), "D1 of {}", row[0]);
        assert_eq!(row[7], percent(sum[6], sum[7]), "D7 of {}", row[0]);
    }
    assert_eq!(
        sums.len(),
        EXPECTED.len(),
        "every campaign of the API is shown"
    );
    let kpis = browser
        .eval(
            &tab,
            "['visits','visitors','players','conversion','direct','d1','d7']\
             .map(name => document.getElementById('kpi-' + name).textContent)",
        )
        .expect("kpis");
    assert_eq!(kpis, json!(["9", "8", "6", "50.0%", "2", "16.7%", "40.0%"]));
    // Against the 14 days before: one visit, one visitor, one player (henry, brought by it).
    let changes = browser
        .eval(
            &tab,
            "['visits','visitors','players','conversion','direct','d1','d7']\
             .map(name => document.getElementById('kpi-' + name + '-change').textContent)",
        )
        .expect("changes");
    assert_eq!(
        changes,
        json!([
            "▲ 800%",
            "▲ 700%",
            "▲ 500%",
            "▼ 50.0 pt",
            "▲ new",
            "▲ 16.7 pt",
            "▲ 40.0 pt"
        ])
    );
    // The story's visits are days old: no visitor in the last 30 minutes.
    browser.wait_until(&tab, "document.body.dataset.now !== undefined", WAIT);
    assert_eq!(
        browser
            .eval(&tab, "document.getElementById('kpi-now').textContent")
            .expect("now"),
        json!("0")
    );

    // The splits: players by storefront and platform, visits by device.
    let split = |id: &str| {
        format!(
            "Array.from(document.querySelectorAll('#{id} tr'))\
             .map(row => [row.cells[0].textContent, row.cells[2].textContent])"
        )
    };
    let pairs = |value: Value| -> Vec<(String, String)> {
        strings(&value)
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone()))
            .collect()
    };
    let owned = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        pairs(
            browser
                .eval(&tab, &split("storefronts"))
                .expect("storefronts")
        ),
        owned(&[("steam", "3"), ("(unknown)", "2"), ("epic", "1")])
    );
    assert_eq!(
        pairs(browser.eval(&tab, &split("platforms")).expect("platforms")),
        owned(&[("(unknown)", "3"), ("pc", "2"), ("mac", "1")])
    );
    assert_eq!(
        pairs(browser.eval(&tab, &split("devices")).expect("devices")),
        owned(&[("pc", "7"), ("smartphone", "2")])
    );
    // Sources and landing pages over the range, as the API's rows sum up: visits, visitors,
    // players (first opens; dave and frank came with no visit: no referrer, no page).
    let breakdown = |id: &str| {
        format!(
            "Array.from(document.querySelectorAll('#{id} tbody tr'))\
             .map(row => Array.from(row.cells).map(cell => cell.textContent))"
        )
    };
    let api_breakdown = |kind: &str, field: &str| -> BTreeMap<String, [i64; 3]> {
        let mut sums: BTreeMap<String, [i64; 3]> = BTreeMap::new();
        for row in api.json()[kind].as_array().expect("rows") {
            let name = row[field].as_str().unwrap_or("(none)").to_string();
            let sum = sums.entry(name).or_default();
            for (index, count) in ["visits", "visitors", "players"].iter().enumerate() {
                sum[index] += row[count].as_i64().expect("a count");
            }
        }
        sums
    };
    for (id, kind, field, expected) in [
        (
            "sources",
            "sources",
            "referrer_host",
            [
                ["www.reddit.com", "3", "3", "0", "0.0%"],
                ["mail.example", "1", "1", "1", "100.0%"],
                ["(none)", "5", "4", "5", "125.0% ⚠"],
            ],
        ),
        (
            "pages",
            "pages",
            "page",
            [
                ["mygame.example/", "6", "5", "4", "80.0%"],
                ["mygame.example/news", "3", "3", "0", "0.0%"],
                ["(none)", "0", "0", "2", "–"],
            ],
        ),
    ] {
        let shown = strings(&browser.eval(&tab, &breakdown(id)).expect(id));
        assert_eq!(shown, expected.map(|row| row.map(String::from)), "{id}");
        let from_api = api_breakdown(kind, field);
        for row in &shown {
            let counts = from_api.get(&row[0]).expect("a row of the API");
            assert_eq!(
                [&row[1], &row[2], &row[3]].map(|text| text.parse::<i64>().expect("a count")),
                *counts,
                "{id}: {row:?}"
            );
        }
    }
    // No country database here: no countries card, one line saying how to add one.
    assert_eq!(
        browser
            .eval(
                &tab,
                "[document.getElementById('countries-card').hidden, \
                  document.getElementById('countries-hint').hidden]"
            )
            .expect("countries"),
        json!([true, false])
    );
    // The chart: 14 days, visits and players (first opens, as the Players card counts them).
    assert_eq!(
        browser
            .eval(
                &tab,
                "[document.querySelectorAll('#chart circle.visits').length, \
                 document.querySelector('#chart .legend').textContent]"
            )
            .expect("chart"),
        json!([14, "Visits 9Players 6"])
    );

    // Each table's CSV, made in the page, is the table as shown (the bars left out).
    for table in [
        "campaigns",
        "storefronts",
        "platforms",
        "devices",
        "sources",
        "pages",
    ] {
        let csv = browser
            .eval(
                &tab,
                &format!(
                    "document.querySelector('button.csv[data-table={table}]').click(); \
                     decodeURIComponent(document.getElementById('csv-link').href \
                       .replace('data:text/csv;charset=utf-8,', ''))"
                ),
            )
            .expect("csv");
        let shown = browser
            .eval(
                &tab,
                &format!(
                    "Array.from(document.getElementById('{table}').rows).map(row => \
                       Array.from(row.cells).filter(cell => !cell.classList.contains('share')) \
                       .map(cell => cell.textContent.trim()).join(',')).join('\\n') + '\\n'"
                ),
            )
            .expect("table");
        assert_eq!(csv, shown, "{table}");
        assert!(
            csv.as_str().is_some_and(|csv| csv.lines().count() > 1),
            "{table}: {csv}"
        );
    }
    let campaigns_csv = browser
        .eval(
            &tab,
            "document.querySelector('button.csv[data-table=campaigns]').click(); \
             decodeURIComponent(document.getElementById('csv-link').href.split(',').slice(1).join(','))",
        )
        .expect("csv");
    assert!(
        campaigns_csv.as_str().is_some_and(
            |csv| csv.starts_with("Campaign,Visits,Visitors,First opens,Players,Conversion")
        ),
        "{campaigns_csv}"
    );

    // A click on a row filters every panel to it: steam's players are the twitter campaign's
    // three (alice, carol, gina); the visits are not by store, so they stay whole. The filter
    // is kept in the address and removed by its chip.
    browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#storefronts tr')) \
               .find(row => row.cells[0].textContent === 'steam').click(); true",
        )
        .expect("filter");
    browser.wait_until(&tab, "!document.getElementById('filter-chip').hidden", WAIT);
    let filtered = browser
        .eval(
            &tab,
            "[document.getElementById('filter-text').textContent, \
              document.getElementById('kpi-players').textContent, \
              document.getElementById('kpi-visits').textContent, \
              location.search.includes('filter'), location.href.includes('token')]",
        )
        .expect("filtered");
    assert_eq!(
        filtered,
        json!(["storefront: steam", "3", "9", true, false])
    );
    let players_by_campaign = browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#campaigns tbody tr')) \
               .map(row => [row.cells[0].textContent, row.cells[4].textContent])",
        )
        .expect("campaigns");
    assert!(
        strings(&players_by_campaign).iter().all(|row| row[1]
            == if row[0] == "twitter / social / launch" {
                "3"
            } else {
                "0"
            }),
        "{players_by_campaign}"
    );
    browser
        .eval(
            &tab,
            "document.getElementById('filter-clear').click(); true",
        )
        .expect("clear");
    assert_eq!(
        browser
            .eval(
                &tab,
                "[document.getElementById('kpi-players').textContent, location.search.includes('filter')]"
            )
            .expect("cleared"),
        json!(["6", false])
    );

    // A source filters the visits (and the campaigns' visits) to it; the players, whose rows
    // carry no referrer, stay whole.
    browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#sources tbody tr')) \
               .find(row => row.cells[0].textContent === 'www.reddit.com').click(); true",
        )
        .expect("filter");
    browser.wait_until(&tab, "!document.getElementById('filter-chip').hidden", WAIT);
    assert_eq!(
        browser
            .eval(
                &tab,
                "[document.getElementById('filter-text').textContent, \
                  document.getElementById('kpi-visits').textContent, \
                  document.querySelectorAll('#sources tbody tr').length, \
                  document.querySelectorAll('#pages tbody tr').length]"
            )
            .expect("filtered by source"),
        json!(["referrer_host: www.reddit.com", "3", 1, 3])
    );
    browser
        .eval(
            &tab,
            "document.getElementById('filter-clear').click(); true",
        )
        .expect("clear");

    // Sorting by a column: players, most first.
    browser
        .eval(
            &tab,
            "document.querySelector('#campaigns th[data-key=players]').click(); true",
        )
        .expect("sort");
    let sorted = strings(&browser.eval(&tab, ROWS).expect("rows"));
    let labels: Vec<&str> = sorted.iter().map(|row| row[0].as_str()).collect();
    assert_eq!(
        labels,
        [
            "twitter / social / launch",
            "(direct)",
            "newsletter / email",
            "reddit",
            "Total"
        ]
    );

    // Both widths, kept as artifacts; at a phone's width nothing runs off the page sideways
    // (the campaign table scrolls in its own box).
    let dir = artifacts();
    let wide = browser.screenshot(&tab, 1280, 900, false);
    std::fs::write(dir.join("dashboard-1280.png"), &wide).expect("screenshot");
    // The README's picture (docs/dashboard.png is a copy): totals, chart and campaigns.
    let top = browser.screenshot_top(&tab, 1280, 960, 0.75);
    std::fs::write(dir.join("dashboard-readme.png"), &top).expect("screenshot");
    // The chart is redrawn at the new width (its text keeps its size).
    browser.resize(&tab, 390, 844, true);
    browser.wait_until(
        &tab,
        "document.querySelector('#chart svg').viewBox.baseVal.width < 390",
        WAIT,
    );
    let narrow = browser.screenshot(&tab, 390, 844, true);
    std::fs::write(dir.join("dashboard-390.png"), &narrow).expect("screenshot");
    assert!(wide.starts_with(b"\x89PNG") && narrow.starts_with(b"\x89PNG"));
    assert_eq!(
        browser
            .eval(&tab, "document.documentElement.scrollWidth <= 390")
            .expect("width"),
        json!(true)
    );
    // On a phone each campaign is a card: nothing scrolls sideways, and every conversion is
    // on the screen with its name beside it.
    assert_eq!(
        browser
            .eval(
                &tab,
                "Array.from(document.querySelectorAll('.scroll, table')) \
                   .filter(box => box.offsetParent !== null) \
                   .every(box => box.scrollWidth <= box.clientWidth + 1)"
            )
            .expect("no sideways scroll"),
        json!(true)
    );
    let conversions = browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#campaigns tbody tr, #campaigns tfoot tr')).map(row => { \
               const cell = row.cells[5]; const box = cell.getBoundingClientRect(); \
               return [getComputedStyle(cell, '::before').content, \
                       String(box.left >= 0 && box.right <= 390 && box.width > 0)]; })",
        )
        .expect("conversions");
    for conversion in strings(&conversions) {
        assert_eq!(conversion, ["\"Conversion\"", "true"], "{conversions}");
    }
    // Each campaign's name is what is drawn where its cell is.
    let labels = browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#campaigns tbody td.label')).map(cell => { \
               cell.scrollIntoView({block: 'center'}); \
               const box = cell.getBoundingClientRect(); \
               const seen = document.elementFromPoint(box.left + 4, box.top + box.height / 2); \
               return [cell.textContent, cell.contains(seen) ? 'visible' : String(seen && seen.outerHTML)]; })",
        )
        .expect("labels");
    for label in strings(&labels) {
        assert_eq!(label[1], "visible", "the campaign {:?} is hidden", label[0]);
    }

    // An empty range says what to do.
    browser
        .eval(
            &tab,
            &format!(
                "document.getElementById('from').value = '{to}'; \
                 document.getElementById('to').value = '{to}'; \
                 document.getElementById('range').requestSubmit(); true"
            ),
        )
        .expect("empty range");
    browser.wait_until(
        &tab,
        "document.getElementById('status').textContent.startsWith('Nothing recorded')",
        WAIT,
    );
    assert!(status(&mut browser, &tab).contains("/measure"));

    // A range reaching past the retention window (30 days) starts at its oldest day instead.
    let oldest = utc_day(now - 30 * DAY);
    browser
        .eval(
            &tab,
            &format!(
                "document.getElementById('from').value = '{}'; \
                 document.getElementById('to').value = '{to}'; \
                 document.getElementById('range').requestSubmit(); true",
                utc_day(now - 60 * DAY)
            ),
        )
        .expect("long range");
    browser.wait_until(
        &tab,
        &format!("document.body.dataset.loaded === '{oldest}..{to}'"),
        WAIT,
    );
    assert_eq!(
        browser
            .eval(&tab, "document.getElementById('from').value")
            .expect("from"),
        json!(oldest)
    );

    // What left the collector is shown to an operator's token only: the identity's fingerprint
    // and the newest ledger rows (this page's own pulls among them).
    assert_eq!(
        browser
            .eval(&tab, "document.getElementById('ledger-card').hidden")
            .expect("hidden"),
        json!(true)
    );
    browser.navigate(
        &tab,
        &format!("{origin}/dashboard?admin#token={ADMIN_TOKEN}"),
        None,
    );
    browser.wait_until(&tab, "!document.getElementById('ledger-card').hidden", WAIT);
    let identity = collector.client().get("/api/v1/identity", &[]).await.json();
    assert_eq!(
        browser
            .eval(&tab, "document.getElementById('fingerprint').textContent")
            .expect("fingerprint"),
        identity["fingerprint"]
    );
    let kinds = browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#ledger tbody tr')).map(row => row.cells[2].textContent)",
        )
        .expect("ledger rows");
    assert!(
        kinds
            .as_array()
            .is_some_and(|kinds| !kinds.is_empty() && kinds.iter().all(|kind| kind == "pull")),
        "{kinds}"
    );

    // The page asked nothing of any other origin, and nothing broke the CSP or threw.
    let requests: Vec<String> = browser
        .events(&tab, "Network.requestWillBeSent")
        .iter()
        .map(|event| {
            event["request"]["url"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        requests
            .iter()
            .any(|url| url.contains("/api/v1/aggregates")),
        "{requests:?}"
    );
    // A `data:` URL is bytes inside the page, not a request to anywhere (Chromium's own date
    // picker draws its icon from one; the CSP refuses them to the page's files).
    for url in requests.iter().filter(|url| !url.starts_with("data:")) {
        assert!(url.starts_with(&format!("{origin}/")), "a request to {url}");
    }
    let security: Vec<Value> = browser
        .events(&tab, "Log.entryAdded")
        .into_iter()
        .filter(|entry| {
            entry["entry"]["source"] == "security"
                || entry["entry"]["text"]
                    .as_str()
                    .is_some_and(|text| text.contains("Content Security Policy"))
        })
        .collect();
    assert!(security.is_empty(), "{security:?}");
    let thrown = browser.events(&tab, "Runtime.exceptionThrown");
    assert!(thrown.is_empty(), "{thrown:?}");
}

/// One visitor and six players behind its address (an office, a household, a local test):
/// the conversion reads 600%, marked and explained, never clamped; the API says the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_rate_above_100_percent_is_shown_marked_not_clamped() {
    let collector = Collector::start(options());
    let client = collector.client();
    let visit = client
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://mygame.example/?utm_source=office&utm_medium=email"}"#,
            &[],
        )
        .await;
    assert_eq!(visit.status, 204);
    for player in 0..6 {
        let open = client
            .post(
                "/measure",
                "application/x-www-form-urlencoded",
                format!("user_id=colleague-{player}&event_name=first_game_open"),
                &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
            )
            .await;
        assert_eq!(open.status, 200, "{:?}", open.body);
    }
    let origin = format!("https://localhost:{}", collector.addr.port());
    let mut browser = Chromium::launch(WINDOWS, &trusted_spki(&collector));
    let tab = browser.open_tab();
    browser.resize(&tab, 1280, 900, false);
    browser.navigate(&tab, &format!("{origin}/dashboard#token={TOKEN}"), None);
    browser.wait_until(&tab, "document.body.dataset.loaded !== undefined", WAIT);
    let office = browser
        .eval(
            &tab,
            "Array.from(document.querySelectorAll('#campaigns tbody tr')) \
               .filter(row => row.cells[0].textContent === 'office / email') \
               .map(row => [row.cells[2].textContent, row.cells[4].textContent, \
                            row.cells[5].textContent, row.cells[5].className, row.cells[5].title])",
        )
        .expect("the office row");
    let office = strings(&office);
    assert_eq!(office.len(), 1, "{office:?}");
    assert_eq!(office[0][..4], ["1", "6", "600.0% ⚠", "over"], "{office:?}");
    assert!(office[0][4].contains("share one address"), "{office:?}");
    assert_eq!(
        browser
            .eval(
                &tab,
                "document.getElementById('kpi-conversion').textContent"
            )
            .expect("kpi"),
        json!("600.0% ⚠")
    );
    // The one visitor arrived a moment ago: the last 30 minutes hold them.
    browser.wait_until(&tab, "document.body.dataset.now !== undefined", WAIT);
    assert_eq!(
        browser
            .eval(&tab, "document.getElementById('kpi-now').textContent")
            .expect("now"),
        json!("1")
    );
}
