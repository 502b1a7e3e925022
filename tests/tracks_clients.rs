//! The clients studios already have, against the real binary over TLS: the TRACKS
//! documentation's examples sent by Python `requests` exactly as written there, refusals over
//! HTTP/2 with curl, and what a refusal leaves in `/metrics` and the journal.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Collector, MEASURE_KEY, Options, binary, contains, read_tree};
use serde_json::Value;
use tracks_collector::testkit::SecretHash;

const METRICS_TOKEN: &str = "tc_test_clients_metrics";

/// The TRACKS documentation's clients, in Python `requests` as it shows them: a server-side
/// web visit on `/v1/collect`, then game opens from the same player address in every shape
/// (`/measure` and `/v1/measure`, form and JSON, unix seconds, RFC 3339, milliseconds, the
/// engines' spellings of platform and storefront). Prints each answer as JSON.
const CLIENTS: &str = r#"
import json, sys, time
import requests

base, ca, key = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())
headers = {"Authorization": f"Bearer {key}"}
player_ip = "203.0.113.77"
answers = {}

def keep(name, response):
    answers[name] = {"status": response.status_code, "body": response.text}

keep("web_visit", requests.post(f"{base}/v1/collect", headers=headers, verify=ca, json={
    "event_name": "page_view",
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 120)),
    "channel": "Paid_Social",
    "campaign": "launch",
    "source": "Twitter",
    "medium": "social",
    "term": None,
    "content": "video-a",
    "clientId": "canary-client-7f3a",
    "sessionId": "canary-session-91c2",
    "ip": player_ip,
    "device": "desktop",
    "browser": "Chrome",
}))
keep("form_seconds", requests.post(f"{base}/measure", headers=headers, verify=ca, data={
    "user_id": "player-form", "event_name": "first_game_open", "ip": player_ip,
    "time_stamp": str(now), "platform": "windows", "storefront": "steam",
}))
keep("json_seconds", requests.post(f"{base}/measure", headers=headers, verify=ca, json={
    "user_id": "player-json", "event_name": "first_game_open", "ip": player_ip,
    "time_stamp": now, "platform": "win64", "storefront": "itch.io",
}))
keep("form_rfc3339", requests.post(f"{base}/v1/measure", headers=headers, verify=ca, data={
    "user_id": "player-iso", "event_name": "game_open", "ip": player_ip,
    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
    "platform": "osx", "storefront": "egs",
}))
keep("json_milliseconds", requests.post(f"{base}/v1/measure", headers=headers, verify=ca, json={
    "user_id": "player-ms", "event_name": "game_open", "ip": player_ip,
    "time_stamp": now * 1000, "platform": "pc", "storefront": "steam",
}))
print(json.dumps(answers))
"#;

fn with_metrics_token() -> Options {
    Options {
        extra: format!(
            "[[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string(),
        ),
        ..Options::default()
    }
}

fn base(collector: &Collector) -> String {
    format!("https://localhost:{}", collector.addr.port())
}

fn ca(collector: &Collector) -> &Path {
    collector.ca.as_deref().expect("a TLS collector")
}

/// Today's aggregates document, as `tracks-collector aggregates --format json` prints it.
fn todays_document(collector: &Collector) -> Value {
    let today = tracks_collector::testkit::utc_day(tracks_collector::unix_now());
    let output = Command::new(binary())
        .arg("--config")
        .arg(&collector.config_path)
        .args([
            "aggregates",
            "--from",
            &today,
            "--to",
            &today,
            "--format",
            "json",
        ])
        .env_remove("TRACKS_DB_KEY")
        .output()
        .expect("run aggregates");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("a JSON document")
}

#[test]
fn every_documented_client_shape_is_accepted_and_attributed_to_the_visit() {
    let collector = Collector::start(Options::default());
    let output = Command::new("python3")
        .args(["-c", CLIENTS, &base(&collector)])
        .arg(ca(&collector))
        .arg(MEASURE_KEY)
        .output()
        .expect("python3 with requests (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Value = serde_json::from_slice(&output.stdout).expect("answers");
    for name in [
        "web_visit",
        "form_seconds",
        "json_seconds",
        "form_rfc3339",
        "json_milliseconds",
    ] {
        let answer = &answers[name];
        assert_eq!(answer["status"], 200, "{name}: {answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap_or_default())
            .expect("a JSON answer");
        assert_eq!(body, serde_json::json!({"accepted": 1}), "{name}");
    }

    let document = todays_document(&collector);
    let traffic = document["traffic"].as_array().expect("traffic");
    assert_eq!(traffic.len(), 1, "{traffic:?}");
    let visit = &traffic[0];
    assert_eq!(visit["game"], "test-game");
    assert_eq!(visit["source"], "twitter");
    assert_eq!(visit["medium"], "social");
    assert_eq!(visit["campaign"], "launch");
    assert_eq!(visit["content"], "video-a");
    assert_eq!(visit["term"], Value::Null);
    assert_eq!(visit["channel"], "paid_social");
    assert_eq!(visit["device"], "pc");
    assert_eq!(visit["visits"], 1);

    let conversions = document["conversions"].as_array().expect("conversions");
    let mut seen: Vec<(String, String, String, i64)> = conversions
        .iter()
        .map(|row| {
            assert_eq!(row["source"], "twitter", "{row}");
            assert_eq!(row["campaign"], "launch", "{row}");
            assert_eq!(row["channel"], "paid_social", "{row}");
            (
                row["event"].as_str().unwrap_or_default().to_string(),
                row["platform"].as_str().unwrap_or_default().to_string(),
                row["storefront"].as_str().unwrap_or_default().to_string(),
                row["users"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("first_game_open".into(), "pc".into(), "itch".into(), 1),
            ("first_game_open".into(), "pc".into(), "steam".into(), 1),
            ("game_open".into(), "mac".into(), "epic".into(), 1),
            ("game_open".into(), "pc".into(), "steam".into(), 1),
        ]
    );

    // clientId and sessionId are read and dropped; the address is pseudonymised.
    for (path, bytes) in read_tree(&collector.state_dir) {
        for canary in ["canary-client-7f3a", "canary-session-91c2", "203.0.113.77"] {
            assert!(
                !contains(&bytes, canary.as_bytes()),
                "{canary} in {}",
                path.display()
            );
        }
    }
    for canary in ["canary-client-7f3a", "canary-session-91c2", "203.0.113.77"] {
        assert!(!collector.logs().contains(canary), "{canary} in the logs");
    }
}

/// One refusal an HTTP/2 client meets: curl's arguments after the URL's base, and the status
/// and code it must read.
struct Refusal {
    name: &'static str,
    args: Vec<String>,
    status: u16,
    code: &'static str,
}

#[test]
fn every_refusal_reaches_an_http2_client_as_its_json_error() {
    // Each refusal 50 times from one address: a monitor's, so that none turns into a 429.
    let collector = Collector::start(Options {
        server_extra: "allowed_origins = [\"https://mygame.example\"]\n\
                       monitor_addresses = [\"127.0.0.1\"]"
            .into(),
        ..Options::default()
    });
    // Bodies big enough to still be in flight when a hasty answer would go out.
    let form = format!(
        "user_id=player-1&event_name=game_open&padding={}",
        "x".repeat(16 * 1024)
    );
    let json = format!(
        r#"{{"user_id": "p", "padding": "{}"}}"#,
        "x".repeat(16 * 1024)
    );
    let url = |path: &str| format!("{}{path}", base(&collector));
    let refusals = vec![
        Refusal {
            name: "unknown endpoint",
            args: vec![url("/v2/measure"), "-d".into(), form.clone()],
            status: 404,
            code: "not_found",
        },
        Refusal {
            name: "no measure key",
            args: vec![url("/v1/measure"), "-d".into(), form.clone()],
            status: 401,
            code: "missing_measure_key",
        },
        Refusal {
            name: "wrong measure key",
            args: vec![
                url("/measure"),
                "-H".into(),
                "authorization: Bearer not-a-key".into(),
                "-d".into(),
                form.clone(),
            ],
            status: 401,
            code: "invalid_measure_key",
        },
        Refusal {
            name: "wrong content type",
            args: vec![
                url("/measure"),
                "-H".into(),
                "content-type: text/csv".into(),
                "-d".into(),
                form.clone(),
            ],
            status: 415,
            code: "unsupported_media_type",
        },
        Refusal {
            name: "wrong method",
            args: vec![
                url("/measure"),
                "-X".into(),
                "PUT".into(),
                "-d".into(),
                form,
            ],
            status: 405,
            code: "method_not_allowed",
        },
        Refusal {
            name: "forget without a token",
            args: vec![
                url("/api/v1/forget"),
                "-H".into(),
                "content-type: application/json".into(),
                "-d".into(),
                json.clone(),
            ],
            status: 401,
            code: "missing_token",
        },
        Refusal {
            name: "origin not allowed",
            args: vec![
                url("/collect"),
                "-H".into(),
                "origin: https://elsewhere.example".into(),
                "-H".into(),
                "content-type: application/json".into(),
                "-d".into(),
                json,
            ],
            status: 403,
            code: "origin_not_allowed",
        },
    ];
    for refusal in &refusals {
        for attempt in 0..50 {
            let output = Command::new("curl")
                .args(["--http2", "--silent", "--show-error", "--max-time", "10"])
                .arg("--cacert")
                .arg(ca(&collector))
                .args(["--write-out", "\n%{http_code} %{http_version}"])
                .args(&refusal.args)
                .output()
                .expect("curl");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "{} (attempt {attempt}): curl failed: {}",
                refusal.name,
                String::from_utf8_lossy(&output.stderr)
            );
            let (body, status) = stdout.rsplit_once('\n').expect("the write-out line");
            assert_eq!(
                status,
                format!("{} 2", refusal.status),
                "{}: {body}",
                refusal.name
            );
            let body: Value = serde_json::from_str(body).expect("a JSON error");
            assert_eq!(body["error"], refusal.code, "{}", refusal.name);
        }
    }
}

#[tokio::test]
async fn refusals_are_counted_by_endpoint_and_reason_and_logged_with_a_count() {
    let collector = Collector::start(Options {
        log_level: "info".into(),
        ..with_metrics_token()
    });
    let client = collector.client();
    for _ in 0..3 {
        let answer = client
            .post(
                "/v1/measure",
                "application/x-www-form-urlencoded",
                "user_id=p&event_name=game_open",
                &[("authorization", "Bearer a-build-with-an-old-key")],
            )
            .await;
        assert_eq!(answer.status, 401);
    }
    let answer = client.get("/no/such/thing", &[]).await;
    assert_eq!(answer.status, 404);

    let metrics = client
        .get(
            "/metrics",
            &[("authorization", &format!("Bearer {METRICS_TOKEN}"))],
        )
        .await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains(
            "tracks_requests_rejected_total{endpoint=\"measure\",reason=\"invalid_measure_key\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "tracks_requests_rejected_total{endpoint=\"unknown\",reason=\"not_found\"} 1\n"
        ),
        "{text}"
    );

    // At the default level: the first refusal of each kind at once, the rest summed later.
    let logs = collector.logs();
    let refused: Vec<Value> = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "WARN" && line["endpoint"].is_string())
        .collect();
    let kinds: Vec<(&str, &str)> = refused
        .iter()
        .map(|line| {
            (
                line["endpoint"].as_str().unwrap_or_default(),
                line["reason"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![("measure", "invalid_measure_key"), ("unknown", "not_found")],
        "{logs}"
    );
    assert!(
        !logs.contains("a-build-with-an-old-key"),
        "the key is not logged"
    );

    // `stats`, a process of its own, shows them too: the daemon saves its counts every 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        let output = Command::new(binary())
            .arg("--config")
            .arg(&collector.config_path)
            .args(["stats", "--format", "json"])
            .output()
            .expect("run stats");
        let stats: Value = serde_json::from_slice(&output.stdout).expect("stats JSON");
        let refusals = &stats["refusals"]["refusals"];
        if refusals.as_array().is_some_and(|counts| counts.len() == 2) {
            assert_eq!(
                refusals[0],
                serde_json::json!({"endpoint": "measure", "reason": "invalid_measure_key", "count": 3})
            );
            assert_eq!(
                refusals[1],
                serde_json::json!({"endpoint": "unknown", "reason": "not_found", "count": 1})
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats shows no refusals: {stats}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
