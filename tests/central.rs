//! Pushing aggregates to the central platform, through the real binary and a fake platform on
//! loopback over TLS: normal delivery, a platform answering 500 for a while, refusing
//! connections, answering too slowly, the collector restarted in an outage, and a final
//! refusal. Every day's document arrives, with one idempotency key for all its attempts, and
//! no body holds a raw IP or user id.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::central::{Behaviour, FakeCentral, Received, certificate, free_port};
use common::{Collector, MEASURE_KEY, Options};
use tracks_collector::testkit::SecretHash;

const CENTRAL_TOKEN: &str = "tc_central_push_token_for_tests";
const METRICS_TOKEN: &str = "tc_test_metrics_token";
const COLLECTOR_ID: &str = "studio-test-1";
const CANARY_IP: &str = "203.0.113.77";
const CANARY_USER: &str = "canary-user-58213";

/// Long enough for a few retries at `retry_max_secs = 2`, short of hanging a broken build.
const PATIENCE: Duration = Duration::from_secs(30);

struct Setup {
    collector: Collector,
    _token_dir: tempfile::TempDir,
}

/// A collector pushing every second to `url`, trusting `ca`, with short timeouts and backoff.
fn collector_pushing_to(url: &str, ca: &std::path::Path, timeout_secs: u32) -> Setup {
    let token_dir = tempfile::tempdir().expect("temp dir");
    let token_file = token_dir.path().join("central.token");
    std::fs::write(&token_file, format!("{CENTRAL_TOKEN}\n")).expect("token file");
    let collector = Collector::start(Options {
        server_extra: r#"trusted_proxies = ["127.0.0.1/32"]"#.into(),
        extra: format!(
            "[central]\nurl = \"{url}\"\ncollector_id = \"{COLLECTOR_ID}\"\n\
             token_file = \"{token}\"\nca_file = \"{ca}\"\npush_schedule = \"* * * * * *\"\n\
             timeout_secs = {timeout_secs}\nretry_max_secs = 2\n\n\
             [[tokens]]\nname = \"ops\"\nscopes = [\"metrics\"]\nhash = \"{metrics}\"\n",
            token = token_file.display(),
            ca = ca.display(),
            metrics = SecretHash::of(METRICS_TOKEN.as_bytes()).to_config_string(),
        ),
        ..Options::default()
    });
    Setup {
        collector,
        _token_dir: token_dir,
    }
}

/// A visit from the canary IP and a game open of the canary user from the same IP.
async fn ingest(collector: &Collector, campaign: &str) {
    let client = collector.client();
    let visit = client
        .post(
            "/collect",
            "application/json",
            format!(
                r#"{{"url": "https://mygame.example/?utm_source=newsletter&utm_campaign={campaign}", "consent": true}}"#
            ),
            &[("x-forwarded-for", CANARY_IP)],
        )
        .await;
    assert_eq!(visit.status, 204);
    let event = client
        .post(
            "/measure",
            "application/x-www-form-urlencoded",
            format!("user_id={CANARY_USER}&event_name=first_game_open&storefront=steam"),
            &[
                ("authorization", &format!("Bearer {MEASURE_KEY}")),
                ("x-forwarded-for", CANARY_IP),
            ],
        )
        .await;
    assert_eq!(event.status, 200);
}

fn today() -> String {
    tracks_collector::testkit::utc_day(tracks_collector::unix_now())
}

/// What every request must be: the collector's endpoint, its token, a JSON document of one
/// day with no personal data.
fn assert_well_formed(request: &Received) {
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.path,
        format!("/api/v1/collectors/{COLLECTOR_ID}/aggregates")
    );
    assert_eq!(request.authorization, format!("Bearer {CENTRAL_TOKEN}"));
    assert_eq!(request.content_type, "application/json");
    assert_eq!(request.idempotency_key.len(), 32, "{request:?}");
    assert!(
        request
            .idempotency_key
            .chars()
            .all(|c| c.is_ascii_hexdigit())
    );
    let body = String::from_utf8_lossy(&request.body);
    for canary in [CANARY_IP, CANARY_USER, "127.0.0.1"] {
        assert!(!body.contains(canary), "{canary} in a pushed body: {body}");
    }
    let document = request.json();
    assert_eq!(document["collector_id"], COLLECTOR_ID);
    assert_eq!(document["from"], document["to"]);
}

/// The one document the tests' single day produces: its requests all carry one key, and the
/// last of them was acknowledged.
fn assert_one_document_delivered(received: &[Received], campaign: &str) -> String {
    received.iter().for_each(assert_well_formed);
    let keys: BTreeSet<&str> = received
        .iter()
        .map(|r| r.idempotency_key.as_str())
        .collect();
    assert_eq!(keys.len(), 1, "one document, one key on every attempt");
    let last = received.last().expect("a request");
    assert_eq!(last.status, 200);
    let document = last.json();
    assert_eq!(document["from"], today());
    assert_eq!(document["traffic"][0]["campaign"], campaign);
    assert_eq!(document["traffic"][0]["visits"], 1);
    assert_eq!(document["conversions"][0]["campaign"], campaign);
    assert_eq!(document["conversions"][0]["users"], 1);
    assert_eq!(document["conversions"][0]["returned_d1"], 0);
    assert_eq!(document["conversions"][0]["returned_d7"], 0);
    last.idempotency_key.clone()
}

async fn metrics(collector: &Collector) -> String {
    let answer = collector
        .client()
        .get(
            "/metrics",
            &[("authorization", &format!("Bearer {METRICS_TOKEN}"))],
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    String::from_utf8(answer.body.to_vec()).expect("text")
}

/// Waits (bounded) until metric `name` satisfies `done`: the platform sees a request before the
/// collector has read its answer and counted it. Returns the metrics then.
async fn wait_metric(collector: &Collector, name: &str, done: impl Fn(u64) -> bool) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let text = metrics(collector).await;
        if done(metric(&text, name)) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never got there:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the collector has recorded every delivery.
async fn outbox_drained(collector: &Collector) -> String {
    wait_metric(collector, "tracks_outbox_pending", |pending| pending == 0).await
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

fn stats(collector: &Collector) -> serde_json::Value {
    let output = collector.run_command(&["stats", "--format", "json"]);
    serde_json::from_slice(&output.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn changed_days_are_delivered_once_each() {
    let central = FakeCentral::start(Behaviour::Accept).await;
    let setup = collector_pushing_to(&central.url(), &central.ca, 5);
    let collector = &setup.collector;
    ingest(collector, "launch").await;

    let received = central
        .wait_until(PATIENCE, "the day's document", |r| {
            r.iter().any(|r| r.json()["conversions"][0]["users"] == 1)
        })
        .await;
    let first_key = assert_one_document_delivered(&received, "launch");

    // Nothing changed: the pushes of the next seconds send nothing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(central.received().len(), received.len());

    // A change of the day: a new document with a new key.
    let client = collector.client();
    let visit = client
        .post(
            "/collect",
            "application/json",
            r#"{"url": "https://mygame.example/?utm_source=reddit"}"#,
            &[("x-forwarded-for", "198.51.100.9")],
        )
        .await;
    assert_eq!(visit.status, 204);
    let received = central
        .wait_until(PATIENCE, "the changed day", |r| r.len() > received.len())
        .await;
    let last = received.last().expect("request");
    assert_well_formed(last);
    assert_ne!(last.idempotency_key, first_key);
    assert_eq!(last.json()["traffic"].as_array().map(Vec::len), Some(2));

    // The platform has answered; the collector records that a moment later.
    let text = outbox_drained(collector).await;
    assert!(metric(&text, "tracks_push_successes_total") >= 2, "{text}");
    assert_eq!(metric(&text, "tracks_push_failures_total"), 0, "{text}");
    let stats = stats(collector);
    assert_eq!(stats["outbox"]["pending"], 0);
    assert!(stats["outbox"]["last_success_at"].is_i64(), "{stats}");
    let logs = collector.logs();
    assert!(!logs.contains(CENTRAL_TOKEN), "the push token is logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_failing_for_a_while_gets_the_document_later_with_the_same_key() {
    let central = FakeCentral::start(Behaviour::Status(500)).await;
    let setup = collector_pushing_to(&central.url(), &central.ca, 5);
    let collector = &setup.collector;
    ingest(collector, "outage").await;

    central
        .wait_until(PATIENCE, "three failed attempts", |r| r.len() >= 3)
        .await;
    let text = wait_metric(collector, "tracks_push_failures_total", |n| n >= 3).await;
    assert_eq!(metric(&text, "tracks_outbox_pending"), 1, "{text}");
    let stats = stats(collector);
    assert_eq!(stats["outbox"]["pending"], 1);
    assert!(
        stats["outbox"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{stats}"
    );

    central.set(Behaviour::Accept);
    let received = central
        .wait_until(PATIENCE, "the document acknowledged", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    assert!(received.len() >= 4);
    assert_one_document_delivered(&received, "outage");
    outbox_drained(collector).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_that_refuses_connections_gets_the_document_once_it_listens() {
    let port = free_port();
    let cert_dir = tempfile::tempdir().expect("temp dir");
    let certificate = certificate(cert_dir.path());
    let setup = collector_pushing_to(&format!("https://localhost:{port}"), &certificate.ca, 5);
    let collector = &setup.collector;
    ingest(collector, "refused").await;

    let deadline = std::time::Instant::now() + PATIENCE;
    while !collector.logs().contains("Connection refused") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refused attempt logged:\n{}",
            collector.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics(collector).await;
    assert!(metric(&text, "tracks_push_failures_total") >= 1, "{text}");

    let central = FakeCentral::start_with(port, Behaviour::Accept, &certificate, cert_dir).await;
    let received = central
        .wait_until(PATIENCE, "the document", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    assert_one_document_delivered(&received, "refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_platform_is_timed_out_and_retried_with_the_same_key() {
    let central = FakeCentral::start(Behaviour::Delay(Duration::from_secs(4))).await;
    let setup = collector_pushing_to(&central.url(), &central.ca, 1);
    let collector = &setup.collector;
    ingest(collector, "slow").await;

    central
        .wait_until(PATIENCE, "two attempts", |r| r.len() >= 2)
        .await;
    assert!(
        collector.logs().contains("no answer from localhost"),
        "{}",
        collector.logs()
    );
    central.set(Behaviour::Accept);
    let received = central
        .wait_until(PATIENCE, "a prompt answer", |r| {
            r.iter().skip(2).any(|r| r.status == 200)
        })
        .await;
    assert_one_document_delivered(&received, "slow");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_during_an_outage_loses_nothing_and_keeps_the_key() {
    let central = FakeCentral::start(Behaviour::Status(503)).await;
    let mut setup = collector_pushing_to(&central.url(), &central.ca, 5);
    ingest(&setup.collector, "restart").await;
    let before = central
        .wait_until(PATIENCE, "a failed attempt", |r| !r.is_empty())
        .await;

    // SIGKILL: no chance to flush anything; the outbox is what was committed.
    setup.collector.restart();
    central
        .wait_until(PATIENCE, "an attempt after the restart", |r| {
            r.len() > before.len()
        })
        .await;
    central.set(Behaviour::Accept);
    let received = central
        .wait_until(PATIENCE, "the document acknowledged", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    assert_one_document_delivered(&received, "restart");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_refusal_is_not_retried_and_does_not_block_the_next_document() {
    let central = FakeCentral::start(Behaviour::Status(422)).await;
    let setup = collector_pushing_to(&central.url(), &central.ca, 5);
    let collector = &setup.collector;
    ingest(collector, "refused-for-good").await;
    let refused = central
        .wait_until(PATIENCE, "the refused attempt", |r| !r.is_empty())
        .await;
    assert_well_formed(&refused[0]);

    // Retries would come within 2 s (retry_max_secs): none does.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(central.received().len(), 1, "a 422 is not retried");
    assert!(
        collector
            .logs()
            .contains("refused the aggregates document for good")
    );
    let stats = stats(collector);
    assert_eq!(stats["outbox"]["rejected"], 1, "{stats}");
    assert_eq!(stats["outbox"]["pending"], 0, "{stats}");
    assert_eq!(
        metric(&metrics(collector).await, "tracks_push_rejections_total"),
        1
    );

    // The next change of the day goes out as a new document.
    central.set(Behaviour::Accept);
    ingest(collector, "refused-for-good").await;
    let received = central
        .wait_until(PATIENCE, "the next document", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    let last = received.last().expect("request");
    assert_well_formed(last);
    assert_ne!(last.idempotency_key, refused[0].idempotency_key);
    assert_eq!(last.json()["traffic"][0]["visits"], 2);
}
