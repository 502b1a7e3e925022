//! The telemetry relay of `examples/relay.py` in front of the real daemon: it passes each game
//! client's address on as `ip`, keeps events on disk while the collector is down and across its
//! own restarts, and gets each counted exactly once when the collector is back.

mod common;

use common::relay::{Relay, RelayFiles, wait_until};
use common::{Collector, MEASURE_KEY, Options};
use serde_json::json;
use tracks_collector::testkit::SecretHash;
use tracks_collector::unix_now;

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";
const PLAYER: &str = "203.0.113.50";
const METRICS_TOKEN: &str = "tc_relay_metrics";

fn assert_queued(answer: &common::Answer, events: usize) {
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    assert_eq!(answer.json(), json!({"queued": events}));
}

/// (visit_id, source) of each stored event, in the order of arrival.
fn attributions(collector: &Collector) -> Vec<(Option<i64>, Option<String>)> {
    let db = collector.open_db();
    let mut select = db
        .prepare("SELECT visit_id, source FROM measure_logs ORDER BY id")
        .expect("select");
    select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("events")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_relay_passes_the_game_clients_address_and_keeps_events_the_key_cannot_deliver() {
    let collector = Collector::start(Options::default());
    // The player's visit, reported server-side with the player's address.
    let visit = json!({"event_name": "page_view", "source": "relay-news", "ip": PLAYER});
    let answer = collector
        .client()
        .post(
            "/v1/collect",
            JSON,
            visit.to_string(),
            &[("authorization", &format!("Bearer {MEASURE_KEY}"))],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    // A key file with a wrong key: a configuration error, which must not lose the events.
    let files = RelayFiles::new("mk_not_the_games_key");
    let relay = Relay::start(&collector, &files, &["--trust-forwarded"]);
    let open = json!({"user_id": "player-relay-1", "event_name": "first_game_open"});
    // The load balancer put the player's address first.
    let forwarded = format!("{PLAYER}, 10.0.0.7");
    let answer = relay
        .post(open, &[("x-forwarded-for", forwarded.as_str())])
        .await;
    assert_queued(&answer, 1);
    wait_until("the relay logs the refused key", || {
        relay
            .logs()
            .contains("no valid measure key (401 invalid_measure_key")
    });
    assert_eq!(files.queued().len(), 1);
    assert_eq!(collector.count("measure_logs"), 0);

    // The key file is read at every attempt: the right key needs no restart.
    std::fs::write(&files.key_file, MEASURE_KEY).expect("key file");
    wait_until("the open is stored", || {
        collector.count("measure_logs") == 1
    });
    let linked = attributions(&collector);
    assert!(linked[0].0.is_some(), "linked to the visit: {linked:?}");
    assert_eq!(linked[0].1.as_deref(), Some("relay-news"));

    // Another player's address: the same event is not linked to that visit.
    // Sent as `curl -d` sends JSON: labelled as a form.
    let other = json!({"user_id": "player-relay-2", "event_name": "first_game_open"});
    let answer = relay
        .send(
            FORM,
            other.to_string(),
            &[("x-forwarded-for", "198.51.100.7")],
        )
        .await;
    assert_queued(&answer, 1);
    wait_until("the second open is stored", || {
        collector.count("measure_logs") == 2
    });
    let unlinked = attributions(&collector);
    assert_eq!(unlinked[1].0, None, "{unlinked:?}");
    assert_ne!(unlinked[1].1.as_deref(), Some("relay-news"));

    // One event the collector refuses (not an event of the game) in a batch: the batch is
    // refused whole, so the relay sends its events one by one and drops only that one.
    let batch = json!([
        {"user_id": "player-relay-3", "event_name": "game_open", "platform": "windows"},
        {"user_id": "player-relay-3", "event_name": "level_up"},
        {"user_id": "player-relay-4", "event_name": "game_open", "time_stamp": unix_now() - 60},
    ]);
    assert_queued(&relay.post(batch, &[]).await, 3);
    // The Unity page's form, sent to the relay instead of the collector.
    let form = format!(
        "user_id=player-relay-5&event_name=game_open&event_id=unity-1&time_stamp={}\
         &platform=WindowsPlayer&storefront=steam",
        unix_now() - 30
    );
    let answer = relay.send(FORM, form, &[]).await;
    assert_queued(&answer, 1);
    wait_until("the queue is empty", || files.queued().is_empty());
    assert_eq!(collector.count("measure_logs"), 5);
    let logs = relay.logs();
    assert!(
        logs.contains("(index 1 of its batch): 400 unknown_event"),
        "{logs}"
    );

    // Bodies that are not events are refused at once, and queue nothing.
    for (body, code) in [
        (json!([1]), "invalid_json"),
        (
            json!({"user_id": "p", "event_name": "game_open", "ip": "192.0.2.1"}),
            "unknown_field",
        ),
        (json!({"event_name": "game_open"}), "missing_field"),
    ] {
        let answer = relay.post(body, &[]).await;
        assert_eq!(answer.status, 400, "{:?}", answer.body);
        assert_eq!(answer.error_code(), code);
    }
    let answer = relay
        .post(
            json!({"user_id": "p", "event_name": "game_open"}),
            &[("x-forwarded-for", "not-an-address")],
        )
        .await;
    assert_eq!(answer.error_code(), "invalid_forwarded_for");
    assert!(files.queued().is_empty());

    // Its log names no player: neither an address nor a user id.
    let logs = relay.logs();
    for secret in [PLAYER, "198.51.100.7", "player-relay"] {
        assert!(
            !logs.contains(secret),
            "{secret} in the relay's log:\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_queued_while_the_collector_is_down_are_counted_exactly_once() {
    let mut collector = Collector::start(Options {
        extra: format!(
            "[[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{}\"\n",
            SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string()
        ),
        ..Options::default()
    });
    let files = RelayFiles::new(MEASURE_KEY);
    let mut relay = Relay::start(&collector, &files, &[]);
    collector.kill9();

    let hour_ago = unix_now() - 3600;
    let answer = relay
        .post(
            json!({"user_id": "player-1", "event_name": "first_game_open"}),
            &[],
        )
        .await;
    assert_queued(&answer, 1);
    let batch = json!([
        {"user_id": "player-2", "event_name": "first_game_open", "platform": "mac"},
        // The game made its own id and kept the open's time while it was offline.
        {"user_id": "player-1", "event_name": "game_open", "event_id": "game-made-1",
         "timestamp": hour_ago},
    ]);
    assert_queued(&relay.post(batch, &[]).await, 2);
    wait_until("the relay logs the unreachable collector", || {
        relay.logs().contains("cannot deliver (network")
    });
    assert_eq!(files.queued().len(), 3);

    // The relay restarts: what it queued is on disk and goes on the next start.
    let status = relay.terminate();
    assert!(status.success(), "{status:?}\n{}", relay.logs());
    assert!(
        relay
            .logs()
            .contains("stopped; events queued for the next start: 3")
    );
    assert_eq!(files.queued().len(), 3);
    let mut relay = Relay::start(&collector, &files, &[]);
    let started = format!("events queued in {}: 3", files.queue.display());
    assert!(relay.logs().contains(&started), "{}", relay.logs());
    let answer = relay
        .post(
            json!({"user_id": "player-3", "event_name": "game_open"}),
            &[],
        )
        .await;
    assert_queued(&answer, 1);
    let last_queued = unix_now();

    // Each event got, once, the client's address, an id and its time.
    let queued = files.queued();
    assert_eq!(queued.len(), 4);
    let mut ids: Vec<&str> = queued
        .iter()
        .map(|event| event["event_id"].as_str().expect("an event_id"))
        .collect();
    assert_eq!(ids[2], "game-made-1");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "{queued:?}");
    for event in &queued {
        assert_eq!(event["ip"], "127.0.0.1", "{event}");
        let time = event["timestamp"].as_i64().expect("a timestamp");
        assert!((hour_ago..=last_queued).contains(&time), "{event}");
    }
    assert_eq!(queued[2]["timestamp"], hour_ago);

    // The collector comes back at least two seconds after the last event reached the relay.
    wait_until("the clock moves on", || unix_now() > last_queued + 1);
    let back = unix_now();
    collector.start_again();
    wait_until("the queue is delivered", || files.queued().is_empty());
    assert_eq!(collector.count("measure_logs"), 4);
    // Delivered late, each at its own time, not at the delivery's.
    let db = collector.open_db();
    let mut select = db
        .prepare("SELECT event_time, received_at FROM measure_logs ORDER BY event_time")
        .expect("select");
    let times: Vec<(i64, i64)> = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("times");
    assert_eq!(times[0].0, hour_ago, "{times:?}");
    for (time, received) in &times {
        assert!(*time <= last_queued && *received >= back, "{times:?}");
    }
    // One line when delivery resumes, one when the backlog is gone (it follows the last delete).
    wait_until("the relay logs the empty queue", || {
        relay
            .logs()
            .contains("queue empty again: 4 events delivered")
    });
    assert!(relay.logs().contains("delivering again after"));

    // The relay stopped after the collector stored a batch and before it saw the answer: the
    // events are still in its queue. It sends them again, and they are counted once.
    assert!(relay.terminate().success());
    files.requeue(&queued);
    let _relay = Relay::start(&collector, &files, &[]);
    wait_until("the resent batch is answered", || files.queued().is_empty());
    assert_eq!(collector.count("measure_logs"), 4);
    let answer = collector
        .client()
        .get(
            "/metrics",
            &[("authorization", &format!("Bearer {METRICS_TOKEN}"))],
        )
        .await;
    let metrics = String::from_utf8_lossy(&answer.body);
    assert!(
        metrics.contains("\ntracks_duplicate_events_total 4\n"),
        "{metrics}"
    );
}
