//! The authenticated API through the real binary: scoped Bearer tokens and the aggregates
//! document, and the CLI's JSON equal to the API's.

mod common;

use common::{Collector, IPHONE_UA, MEASURE_KEY, Options};
use tracks_collector::testkit::SecretHash;

const PULL_TOKEN: &str = "tc_test_pull_token";
const METRICS_TOKEN: &str = "tc_test_metrics_token";

fn with_tokens() -> Options {
    Options {
        extra: format!(
            "[[tokens]]\nname = \"pull\"\nscopes = [\"aggregates\"]\nhash = \"{}\"\n\n\
             [[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(PULL_TOKEN.as_bytes()).to_config_string(),
            SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string(),
        ),
        ..Options::default()
    }
}

fn today() -> String {
    tracks_collector::testkit::utc_day(tracks_collector::unix_now())
}

#[tokio::test(flavor = "multi_thread")]
async fn aggregates_need_a_token_with_the_scope() {
    let collector = Collector::start(with_tokens());
    let client = collector.client();
    let path = format!("/api/v1/aggregates?from={0}&to={0}", today());

    let missing = client.get(&path, &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error_code(), "missing_token");
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));

    let wrong = client
        .get(&path, &[("authorization", "Bearer tc_nope")])
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.error_code(), "invalid_token");

    let metrics_only = format!("Bearer {METRICS_TOKEN}");
    let forbidden = client.get(&path, &[("authorization", &metrics_only)]).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.error_code(), "insufficient_scope");

    let auth = format!("Bearer {PULL_TOKEN}");
    for (query, field, code) in [
        ("from=2026-13-01&to=2026-11-01", "`from`", "invalid_query"),
        ("to=2026-11-01", "`from`", "missing_field"),
        (
            "from=2020-01-01&to=2020-01-02",
            "retention",
            "invalid_query",
        ),
        (
            "from=2026-11-01&to=2026-11-01&sort=desc",
            "sort",
            "unknown_field",
        ),
    ] {
        let answer = client
            .get(
                &format!("/api/v1/aggregates?{query}"),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(answer.error_code(), code, "{query}");
        let message = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(field), "{query}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_and_the_cli_give_the_same_document() {
    let mut collector = Collector::start(with_tokens());
    let client = collector.client();
    let visit = client
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://mygame.example/?utm_source=reddit&utm_campaign=beta", "consent": true}"#,
            &[("user-agent", IPHONE_UA)],
        )
        .await;
    assert_eq!(visit.status, 204);
    let event = client
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            "user_id=p1&event_name=first_game_open&storefront=steam",
            &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
        )
        .await;
    assert_eq!(event.status, 200);

    let day = today();
    let answer = client
        .get(
            &format!("/api/v1/aggregates?from={day}&to={day}&game=test-game"),
            &[("authorization", &format!("Bearer {PULL_TOKEN}"))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let mut api = answer.json();
    assert_eq!(api["traffic"][0]["source"], "reddit");
    assert_eq!(api["traffic"][0]["consented_visits"], 1);
    assert_eq!(
        api["conversions"][0]["source"], "reddit",
        "the event is linked to the visit"
    );
    assert_eq!(api["conversions"][0]["campaign"], "beta");
    assert_eq!(api["conversions"][0]["users"], 1);
    // Returns are there from the start, zero until the player comes back.
    assert_eq!(api["conversions"][0]["returned_d1"], 0);
    assert_eq!(api["conversions"][0]["returned_d7"], 0);
    // The landing page and the source (no referrer here), with the player they brought.
    assert_eq!(api["pages"][0]["page"], "mygame.example/");
    assert_eq!(
        (&api["pages"][0]["visits"], &api["pages"][0]["players"]),
        (&1.into(), &1.into())
    );
    assert_eq!(api["sources"][0]["referrer_host"], serde_json::Value::Null);
    assert_eq!(api["sources"][0]["players"], 1);

    collector.terminate();
    let output = collector.run_command(&[
        "aggregates",
        "--from",
        &day,
        "--to",
        &day,
        "--game",
        "test-game",
        "--format",
        "json",
    ]);
    let mut cli: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    // Only the generation time may differ.
    api["generated_at"] = serde_json::Value::Null;
    cli["generated_at"] = serde_json::Value::Null;
    assert_eq!(cli, api);

    // For people: one line per campaign, 1 visitor brought 1 player, who has not had a day
    // to come back yet.
    let table = collector.run_command(&["aggregates", "--from", &day, "--to", &day]);
    let table = String::from_utf8_lossy(&table.stdout);
    let line = table
        .lines()
        .find(|line| line.starts_with("reddit / beta "))
        .unwrap_or_else(|| panic!("no campaign line in:\n{table}"));
    assert_eq!(
        line.split_whitespace().skip(3).collect::<Vec<_>>(),
        ["1", "1", "1", "1", "100.0%", "-", "-"],
        "{table}"
    );
    // Every row, as before, with --detail.
    let detail = collector.run_command(&["aggregates", "--from", &day, "--to", &day, "--detail"]);
    let detail = String::from_utf8_lossy(&detail.stdout);
    assert!(
        detail.contains("reddit") && detail.contains("first_game_open"),
        "{detail}"
    );
}

/// At the start the daemon renders every day of the retention window in the background (30
/// days back and today, by default), so that the dashboard's first load finds them rendered.
#[tokio::test(flavor = "multi_thread")]
async fn a_started_daemon_renders_the_retention_window_ahead_of_the_first_read() {
    const RENDERED: &str = "rendered the aggregates document's days of the retention window";
    let collector = Collector::start(with_tokens());
    let logs = collector.logs_once_they_contain(RENDERED);
    let line = logs
        .lines()
        .find(|line| line.contains(RENDERED))
        .expect("the line");
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(json["days"], 31, "{line}");
    assert_eq!(json["level"], "INFO", "{line}");
}
