//! Delivery from game builds and telemetry servers: an event sent again (a retry after a lost
//! answer, a batch resent whole) is counted once by its `event_id`, across restarts and salt
//! rotations; an event sent days late is linked to the visit before its own time; a clock
//! ahead is clamped; `GET /time` tells the server's clock; a game's keys are rotated through
//! `measure_keys` and counted by name.

mod common;

use std::time::Duration;

use common::world::{DAY, HOUR, NOV_1, WINDOWS, World, event, page};
use common::{Collector, MEASURE_KEY, OTHER_MEASURE_KEY, Options};
use serde_json::{Value, json};
use tracks_collector::testkit::EventsWritten;
use tracks_collector::testkit::SecretHash;

const PLAYER: &str = "203.0.113.10";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

fn written(stored: usize, blocked: usize, duplicates: usize) -> EventsWritten {
    EventsWritten {
        stored,
        blocked,
        duplicates,
    }
}

/// The conversions as (day, source, event, events, users).
fn conversions(world: &World, from: &str, to: &str, now: i64) -> Vec<(String, String, i64)> {
    world
        .document(from, to, None, now)
        .conversions
        .into_iter()
        .map(|row| (row.day, row.campaign.source.unwrap_or_default(), row.events))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_is_counted_once_across_rotations_and_restarts() {
    let mut world = World::new(|_| {});
    world.rotate(NOV_1).await;
    world
        .visit(PLAYER, page("utm_source=news"), WINDOWS, NOV_1)
        .await;
    let open = event(
        "player-1",
        "first_game_open",
        json!({"event_id": "9b2f6a0e-4c1d-4f7e-8a55-0c3e2b1d7f10"}),
    );
    let now = NOV_1 + HOUR;
    assert_eq!(
        world.open("key-demo", open.clone(), PLAYER, now).await,
        written(1, 0, 0)
    );
    // The answer was lost; the build retries at once, then after a rotation and a restart.
    assert_eq!(
        world.open("key-demo", open.clone(), PLAYER, now + 5).await,
        written(0, 0, 1)
    );
    world.rotate(NOV_1 + DAY).await;
    world.restart();
    assert_eq!(
        world
            .open("key-demo", open.clone(), PLAYER, NOV_1 + DAY + HOUR)
            .await,
        written(0, 0, 1)
    );
    // The same id sent by another game is another event.
    let other = event(
        "player-1",
        "game_open",
        json!({"event_id": "9b2f6a0e-4c1d-4f7e-8a55-0c3e2b1d7f10"}),
    );
    assert_eq!(
        world.open("key-other", other, PLAYER, now).await,
        written(1, 0, 0)
    );
    // An integer id and the same digits as a string are one id, as the form sends both.
    let numbered = |id: Value| event("player-2", "game_open", json!({"event_id": id}));
    assert_eq!(
        world
            .open("key-demo", numbered(json!(77)), PLAYER, now)
            .await,
        written(1, 0, 0)
    );
    assert_eq!(
        world
            .open("key-demo", numbered(json!("77")), PLAYER, now)
            .await,
        written(0, 0, 1)
    );
    let rows = conversions(&world, "2026-11-01", "2026-11-02", NOV_1 + 2 * DAY);
    assert_eq!(
        rows,
        vec![
            ("2026-11-01".into(), "news".into(), 1),
            ("2026-11-01".into(), "news".into(), 1),
            ("2026-11-01".into(), "news".into(), 1),
        ],
        "one first open of demo-game, one game open of other-game, one of player-2"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_resent_whole_counts_each_event_once() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let batch = |ids: &[&str]| {
        Value::Array(
            ids.iter()
                .map(|id| event("player-1", "game_open", json!({"event_id": id})))
                .collect(),
        )
    };
    let now = NOV_1 + HOUR;
    // The relay sent two, lost the answer, and sends its whole queue again with a third.
    assert_eq!(
        world
            .open("key-demo", batch(&["a", "b"]), PLAYER, now)
            .await,
        written(2, 0, 0)
    );
    assert_eq!(
        world
            .open("key-demo", batch(&["a", "b", "c"]), PLAYER, now + 30)
            .await,
        written(1, 0, 2)
    );
    // A batch that holds one event twice stores it once.
    assert_eq!(
        world
            .open("key-demo", batch(&["d", "d"]), PLAYER, now + 60)
            .await,
        written(1, 0, 1)
    );
    // Without an id, every send is an event: nothing tells a retry from a second open.
    let plain = event("player-1", "game_open", json!({}));
    for _ in 0..2 {
        assert_eq!(
            world.open("key-demo", plain.clone(), PLAYER, now).await,
            written(1, 0, 0)
        );
    }
    let rows = conversions(&world, "2026-11-01", "2026-11-01", NOV_1 + DAY);
    assert_eq!(rows, vec![("2026-11-01".into(), "(direct)".into(), 6)]);
}

/// Issue 20: a build that was offline sends its queue three days later, with each event's own
/// time. The player came through two campaigns on that address: the first before the game
/// was opened, the second after. The open belongs to the first.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_sent_three_days_late_is_linked_to_the_visit_before_it() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    world
        .visit(PLAYER, page("utm_source=before"), WINDOWS, NOV_1 + HOUR)
        .await;
    for day in 1..=3 {
        world.rotate(NOV_1 + day * DAY).await;
    }
    world
        .visit(PLAYER, page("utm_source=after"), WINDOWS, NOV_1 + 2 * DAY)
        .await;
    let opened_at = NOV_1 + 2 * HOUR;
    let late = event(
        "player-1",
        "first_game_open",
        json!({"timestamp": opened_at, "event_id": "late-1"}),
    );
    let sent_at = opened_at + 3 * DAY;
    assert_eq!(
        world.open("key-demo", late, PLAYER, sent_at).await,
        written(1, 0, 0)
    );
    // On the day it happened, credited to the campaign before it.
    let rows = conversions(&world, "2026-11-01", "2026-11-04", sent_at);
    assert_eq!(rows, vec![("2026-11-01".into(), "before".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clock_ahead_is_taken_as_the_receive_time() {
    let world = World::new(|_| {});
    world.rotate(NOV_1).await;
    let now = NOV_1 + 23 * HOUR;
    // Two hours ahead (a clock set to the wrong zone): accepted, and on the day it arrived.
    let ahead = event(
        "player-1",
        "game_open",
        json!({"timestamp": now + 2 * HOUR}),
    );
    assert_eq!(
        world.open("key-demo", ahead, PLAYER, now).await,
        written(1, 0, 0)
    );
    let rows = conversions(&world, "2026-11-01", "2026-11-02", NOV_1 + 2 * DAY);
    assert_eq!(rows, vec![("2026-11-01".into(), "(direct)".into(), 1)]);
}

/// A game open sent with the measure key `key`.
async fn open_with(collector: &Collector, key: &str) -> common::Answer {
    collector
        .client()
        .post(
            "/measure",
            FORM,
            "user_id=p&event_name=game_open",
            &[("authorization", &format!("Bearer {key}"))],
        )
        .await
}

fn collector_with_rotating_keys(keys: &str) -> Collector {
    Collector::start(Options {
        extra: format!("[[games]]\nid = \"rotating-game\"\nmeasure_keys = [\n{keys}]\n"),
        ..Options::default()
    })
}

fn key_entry(name: &str, key: &str) -> String {
    format!(
        "{{ name = \"{name}\", hash = \"{}\" }},\n",
        SecretHash::of(key.as_bytes()).to_config_string()
    )
}

/// What `/metrics` says; the test collector's config has no metrics token, so it is added.
async fn metrics(collector: &Collector) -> String {
    let answer = collector
        .client()
        .get(
            "/metrics",
            &[("authorization", "Bearer tc_delivery_metrics")],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    String::from_utf8_lossy(&answer.body).into_owned()
}

const METRICS_TOKEN_ENTRY: &str = "[[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\n";

#[tokio::test(flavor = "multi_thread")]
async fn retries_through_the_real_binary_count_once() {
    let mut collector = Collector::start(Options {
        extra: format!(
            "{METRICS_TOKEN_ENTRY}hash = \"{}\"\n",
            SecretHash::of(b"tc_delivery_metrics").to_config_string()
        ),
        ..Options::default()
    });
    let auth = format!("Bearer {MEASURE_KEY}");
    let other_auth = format!("Bearer {OTHER_MEASURE_KEY}");
    let form = "user_id=player-1&event_name=first_game_open&event_id=f00d-0001";

    // A timeout: the request arrives, and the answer never reaches the client, which gives up.
    let request = format!(
        "POST /measure HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\n\
         content-type: {FORM}\r\ncontent-length: {}\r\n\r\n{form}",
        form.len()
    );
    let unanswered = collector.client().send_unanswered(request.as_bytes()).await;
    // The server stores the event; its answer is lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while collector.count("measure_logs") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first copy was not stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(unanswered);
    // The retry, with the same id: accepted, and not stored again.
    let client = collector.client();
    let answer = client
        .post("/measure", FORM, form, &[("authorization", &auth)])
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.json(), json!({"accepted": 1}));
    assert_eq!(collector.count("measure_logs"), 1);
    let text = metrics(&collector).await;
    assert!(
        text.contains("\ntracks_duplicate_events_total 1\n"),
        "{text}"
    );

    // The same id in JSON, after a restart; under another game, another event.
    collector.restart();
    let client = collector.client();
    let body =
        json!({"user_id": "player-1", "event_name": "first_game_open", "event_id": "f00d-0001"});
    let answer = client
        .post(
            "/measure",
            JSON,
            body.to_string(),
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(answer.json(), json!({"accepted": 1}));
    let body = json!({"user_id": "player-1", "event_name": "game_open", "event_id": "f00d-0001"});
    let answer = client
        .post(
            "/v1/measure",
            JSON,
            body.to_string(),
            &[("authorization", &other_auth)],
        )
        .await;
    assert_eq!(answer.json(), json!({"accepted": 1}));
    assert_eq!(collector.count("measure_logs"), 2);
    let text = metrics(&collector).await;
    assert!(
        text.contains("\ntracks_duplicate_events_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "\ntracks_measure_key_events_total{game=\"test-game\",key=\"measure_key\"} 1\n"
        ),
        "{text}"
    );

    // A bad id is refused, naming the field.
    for (body, field) in [
        (
            json!({"user_id": "p", "event_name": "game_open", "event_id": ""}),
            "`event_id`",
        ),
        (
            json!([{"user_id": "p", "event_name": "game_open", "event_id": "x".repeat(129)}]),
            "`events[0].event_id`",
        ),
        (
            json!({"user_id": "p", "event_name": "game_open", "event_id": "a\u{7}b"}),
            "`event_id`",
        ),
    ] {
        let answer = client
            .post(
                "/measure",
                JSON,
                body.to_string(),
                &[("authorization", &auth)],
            )
            .await;
        assert_eq!(answer.status, 400, "{body}");
        assert_eq!(answer.error_code(), "invalid_event_id");
        let message = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(collector.count("measure_logs"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_tells_its_time_and_clamps_a_clock_ahead() {
    let collector = Collector::start(Options::default());
    let client = collector.client();
    let before = tracks_collector::unix_now();
    let answer = client.get("/time", &[]).await;
    let after = tracks_collector::unix_now();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let time = answer.json();
    let unix = time["unix"].as_i64().expect("unix");
    assert!((before..=after).contains(&unix), "{time}");
    assert_eq!(time["unix_ms"].as_i64().map(|ms| ms / 1000), Some(unix));
    assert!(
        time["utc"].as_str().is_some_and(|utc| utc.ends_with('Z')),
        "{time}"
    );
    let answer = client.method("POST", "/time", &[]).await;
    assert_eq!(answer.status, 405);

    let auth = format!("Bearer {MEASURE_KEY}");
    let ahead = before + 3 * 3600;
    let body = format!("user_id=p&event_name=game_open&time_stamp={ahead}");
    let answer = client
        .post("/measure", FORM, body, &[("authorization", &auth)])
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let (received, time): (i64, i64) = collector
        .open_db()
        .query_row(
            "SELECT received_at, event_time FROM measure_logs",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("the event");
    assert_eq!(time, received, "clamped to the receive time");
    // Beyond the documented skew, the clock is broken: refused, naming the field.
    let body = format!(
        "user_id=p&event_name=game_open&time_stamp={}",
        before + 25 * 3600
    );
    let answer = client
        .post("/measure", FORM, body, &[("authorization", &auth)])
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "time_stamp_out_of_window");
    let message = answer.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("GET /time"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaked_key_is_rotated_while_the_old_builds_still_send() {
    let old = "mk_rotating_old_build_key";
    let new = "mk_rotating_new_build_key";
    let mut collector = collector_with_rotating_keys(&key_entry("build-1", old));
    assert_eq!(open_with(&collector, old).await.status, 200);
    assert_eq!(open_with(&collector, new).await.status, 401);
    // The new key is added beside the old one: both work while old builds are in the field.
    let config = std::fs::read_to_string(&collector.config_path).expect("config");
    let both = config.replace(
        &key_entry("build-1", old),
        &format!("{}{}", key_entry("build-1", old), key_entry("build-2", new)),
    );
    let metrics_token = format!(
        "{METRICS_TOKEN_ENTRY}hash = \"{}\"\n",
        SecretHash::of(b"tc_delivery_metrics").to_config_string()
    );
    std::fs::write(&collector.config_path, format!("{both}\n{metrics_token}")).expect("config");
    collector.restart();
    assert_eq!(open_with(&collector, old).await.status, 200);
    assert_eq!(open_with(&collector, new).await.status, 200);
    assert_eq!(open_with(&collector, new).await.status, 200);
    let text = metrics(&collector).await;
    for line in [
        "tracks_measure_key_events_total{game=\"rotating-game\",key=\"build-1\"} 1",
        "tracks_measure_key_events_total{game=\"rotating-game\",key=\"build-2\"} 2",
        "tracks_measure_key_events_total{game=\"test-game\",key=\"measure_key\"} 0",
    ] {
        assert!(text.contains(&format!("\n{line}\n")), "{line} in:\n{text}");
    }
    // The old key is retired once the metrics show it unused.
    let retired = std::fs::read_to_string(&collector.config_path)
        .expect("config")
        .replace(&key_entry("build-1", old), "");
    std::fs::write(&collector.config_path, retired).expect("config");
    collector.restart();
    let refused = open_with(&collector, old).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error_code(), "invalid_measure_key");
    assert_eq!(open_with(&collector, new).await.status, 200);
    assert_eq!(collector.count("measure_logs"), 5);
}
