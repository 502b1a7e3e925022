//! Counters of what the collector saw: the only place crawlers and the dropped events of
//! blocked players are counted (neither is stored). Exposed by `/metrics` in the Prometheus
//! text format and by `stats`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::OutboxStats;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    visits_stored: AtomicU64,
    events_stored: AtomicU64,
    events_blocked: AtomicU64,
    events_duplicate: AtomicU64,
    /// Events accepted by (game, measure key name): shows which keys are still in use.
    events_by_key: Mutex<BTreeMap<(String, String), u64>>,
    crawlers: AtomicU64,
    /// Refused requests by (endpoint, reason), with when each was last logged.
    refusals: Mutex<BTreeMap<(&'static str, &'static str), Refusals>>,
    push_successes: AtomicU64,
    push_failures: AtomicU64,
    push_rejections: AtomicU64,
}

/// How long the log stays quiet about one kind of refusal after a line about it: a client
/// that keeps failing (a broken game build, a scanner) shows within this time, without a line
/// per request.
pub(crate) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The `endpoint` label of refusals that happen before any request: a connection over a cap,
/// a handshake or a request head not finished in time, a head too large, an HTTP/2 flood.
pub(crate) const CONNECTION: &str = "connection";

/// The refusals of one endpoint and reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Refusals {
    total: u64,
    /// Refusals since the last log line.
    unlogged: u64,
    logged_at: Option<Instant>,
}

impl Refusals {
    /// Counts one refusal at `at`; returns how many the log line due now covers, if one is.
    fn note(&mut self, at: Instant) -> Option<u64> {
        self.total += 1;
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|logged| at.saturating_duration_since(logged) >= REFUSAL_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.logged_at = Some(at);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct MetricsSnapshot {
    pub visits_stored: u64,
    pub events_stored: u64,
    pub events_blocked: u64,
    pub events_duplicate: u64,
    /// Events accepted since start: game, measure key name, count.
    pub events_by_key: Vec<(String, String, u64)>,
    pub crawlers: u64,
    /// Refused requests since start: endpoint, reason (the error code), count.
    pub refusals: Vec<(String, String, u64)>,
    pub push_successes: u64,
    pub push_failures: u64,
    pub push_rejections: u64,
}

impl Metrics {
    pub(crate) fn visit_stored(&self) {
        self.visits_stored.fetch_add(1, Ordering::Relaxed);
    }

    /// Visits stored since the start.
    pub(crate) fn visits_stored(&self) -> u64 {
        self.visits_stored.load(Ordering::Relaxed)
    }

    pub(crate) fn events_stored(&self, count: usize) {
        self.events_stored
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn events_blocked(&self, count: usize) {
        self.events_blocked
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub(crate) fn events_duplicate(&self, count: usize) {
        self.events_duplicate
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Counters at zero, with every configured measure key listed.
    pub(crate) fn for_games(games: &[crate::config::GameConfig]) -> Metrics {
        let metrics = Metrics::default();
        for game in games {
            metrics.measure_keys(
                &game.id,
                game.measure_keys.iter().map(|key| key.name.clone()),
            );
        }
        metrics
    }

    /// Lists a game's measure keys at zero, so that a key no build uses shows as such.
    pub(crate) fn measure_keys(&self, game: &str, keys: impl IntoIterator<Item = String>) {
        if let Ok(mut counts) = self.events_by_key.lock() {
            for key in keys {
                counts.entry((game.to_string(), key)).or_insert(0);
            }
        }
    }

    /// Counts `count` events accepted from `game` with its key named `key`.
    pub(crate) fn events_accepted(&self, game: &str, key: &str, count: usize) {
        if let Ok(mut counts) = self.events_by_key.lock() {
            // The keys were listed at start: found without making a String per request.
            let listed = counts
                .iter_mut()
                .find(|((listed_game, listed_key), _)| listed_game == game && listed_key == key);
            match listed {
                Some((_, total)) => *total += count as u64,
                None => {
                    counts.insert((game.to_string(), key.to_string()), count as u64);
                }
            }
        }
    }

    pub(crate) fn crawler_seen(&self) {
        self.crawlers.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused request and logs it: the first of its endpoint and reason at once,
    /// then one line per `REFUSAL_LOG_INTERVAL` with the count since the last line. The code
    /// and the route name are all that is logged: never the request's values.
    pub(crate) fn refused(&self, endpoint: &'static str, reason: &'static str, status: u16) {
        match self.note_refusal(endpoint, reason) {
            Some(1) => tracing::warn!(endpoint, reason, status, "refused a request"),
            Some(count) => tracing::warn!(
                endpoint,
                reason,
                status,
                count,
                "refused requests since the last line about them"
            ),
            None => {}
        }
    }

    /// Counts a connection refused or cut by a limit (endpoint `connection`), logged as
    /// requests are. At info: the internet's scanners and stragglers cause most of them.
    pub(crate) fn connection_refused(&self, reason: &'static str) {
        match self.note_refusal(CONNECTION, reason) {
            Some(1) => tracing::info!(reason, "refused a connection"),
            Some(count) => tracing::info!(
                reason,
                count,
                "refused connections since the last line about them"
            ),
            None => {}
        }
    }

    /// Counts a failed accept (reason `accept_failed`), logged like a refusal so that a full
    /// descriptor table writes a line per interval, not one per retry.
    pub(crate) fn accept_failed(&self, err: &std::io::Error) {
        match self.note_refusal(CONNECTION, "accept_failed") {
            Some(1) => tracing::warn!(error = %err, "accepting a connection failed; backing off"),
            Some(count) => tracing::warn!(
                error = %err,
                count,
                "accepting connections failed since the last line about it; backing off"
            ),
            None => {}
        }
    }

    /// Counts one refusal; returns how many the log line due now covers, if one is.
    fn note_refusal(&self, endpoint: &'static str, reason: &'static str) -> Option<u64> {
        match self.refusals.lock() {
            Ok(mut refusals) => refusals
                .entry((endpoint, reason))
                .or_default()
                .note(Instant::now()),
            Err(_) => None,
        }
    }

    pub(crate) fn push_succeeded(&self) {
        self.push_successes.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn push_failed(&self) {
        self.push_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn push_rejected(&self) {
        self.push_rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            visits_stored: self.visits_stored.load(Ordering::Relaxed),
            events_stored: self.events_stored.load(Ordering::Relaxed),
            events_blocked: self.events_blocked.load(Ordering::Relaxed),
            events_duplicate: self.events_duplicate.load(Ordering::Relaxed),
            events_by_key: self
                .events_by_key
                .lock()
                .map(|counts| {
                    counts
                        .iter()
                        .map(|((game, key), count)| (game.clone(), key.clone(), *count))
                        .collect()
                })
                .unwrap_or_default(),
            crawlers: self.crawlers.load(Ordering::Relaxed),
            refusals: self
                .refusals
                .lock()
                .map(|refusals| {
                    refusals
                        .iter()
                        .map(|((endpoint, reason), counts)| {
                            (endpoint.to_string(), reason.to_string(), counts.total)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            push_successes: self.push_successes.load(Ordering::Relaxed),
            push_failures: self.push_failures.load(Ordering::Relaxed),
            push_rejections: self.push_rejections.load(Ordering::Relaxed),
        }
    }
}

/// The refusals a running daemon has counted, saved beside the database every few seconds so
/// that `tracks-collector stats`, a separate process, can show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RefusalReport {
    /// When the daemon started counting (unix seconds).
    pub since: i64,
    /// When this report was saved.
    pub as_of: i64,
    pub refusals: Vec<RefusalCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RefusalCount {
    pub endpoint: String,
    pub reason: String,
    pub count: u64,
}

/// The report's file name, in the database's folder.
pub(crate) const REFUSALS_FILE: &str = "refusals.json";

impl RefusalReport {
    pub(crate) fn new(snapshot: &MetricsSnapshot, since: i64, as_of: i64) -> RefusalReport {
        RefusalReport {
            since,
            as_of,
            refusals: snapshot
                .refusals
                .iter()
                .map(|(endpoint, reason, count)| RefusalCount {
                    endpoint: endpoint.clone(),
                    reason: reason.clone(),
                    count: *count,
                })
                .collect(),
        }
    }

    /// Writes the report to `path` whole or not at all (a temporary file renamed over it), so
    /// a reader never sees half of one.
    pub(crate) fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".new");
        let temporary = std::path::PathBuf::from(temporary);
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, path)
    }

    /// The report at `path`; `None` if no daemon has saved one there.
    pub(crate) fn load(path: &std::path::Path) -> Option<RefusalReport> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// What `/metrics` shows besides the counters: cheap reads only, since scrapers come often.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gauges {
    pub writable: bool,
    pub outbox: OutboxStats,
    pub database_bytes: u64,
    pub wal_bytes: u64,
    /// With `[server.acme]`: the served certificate's expiry, the orders and the last outcome.
    pub acme: Option<AcmeGauges>,
}

/// What `/metrics` shows of ACME certificates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AcmeGauges {
    /// Unix seconds; 0 before the first certificate.
    pub expires_at: i64,
    pub orders: u64,
    /// Whether the last order succeeded (false before any).
    pub last_succeeded: bool,
}

/// A metric with one unlabelled sample: its name, type, help line and value.
type Sample = (&'static str, &'static str, &'static str, u64);

/// The Prometheus text exposition format (version 0.0.4).
pub(crate) fn prometheus(counters: &MetricsSnapshot, gauges: &Gauges, now: i64) -> String {
    let mut out = String::new();
    let acme = gauges.acme.map(acme_samples).unwrap_or_default();
    let samples = counter_samples(counters)
        .into_iter()
        .chain(acme)
        .chain(gauge_samples(gauges, now));
    for (name, kind, help, value) in samples {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "tracks_measure_key_events_total";
    let _ = writeln!(
        out,
        "# HELP {name} Game events accepted since start, by game and measure key name."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (game, key, count) in &counters.events_by_key {
        // Both are names from the configuration, checked to be plain.
        let _ = writeln!(out, "{name}{{game=\"{game}\",key=\"{key}\"}} {count}");
    }
    let name = "tracks_requests_rejected_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests refused since start, by endpoint and reason (the error code)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (endpoint, reason, count) in &counters.refusals {
        // Both labels are the collector's own names, never request text.
        let _ = writeln!(
            out,
            "{name}{{endpoint=\"{endpoint}\",reason=\"{reason}\"}} {count}"
        );
    }
    out
}

/// A count kept as `i64` (SQLite's integers, unix times), as a sample; 0 if negative.
fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// What happened since start.
fn counter_samples(counters: &MetricsSnapshot) -> [Sample; 8] {
    [
        (
            "tracks_visits_stored_total",
            "counter",
            "Visits stored since start.",
            counters.visits_stored,
        ),
        (
            "tracks_events_stored_total",
            "counter",
            "Game events stored since start.",
            counters.events_stored,
        ),
        (
            "tracks_blocked_events_total",
            "counter",
            "Game events of forgotten (blocked) players since start, answered as accepted and dropped.",
            counters.events_blocked,
        ),
        (
            "tracks_duplicate_events_total",
            "counter",
            "Game events whose event_id was already on file since start (retries), answered as \
             accepted and not stored again.",
            counters.events_duplicate,
        ),
        (
            "tracks_crawlers_total",
            "counter",
            "Visits by crawlers since start (never stored).",
            counters.crawlers,
        ),
        (
            "tracks_push_successes_total",
            "counter",
            "Aggregates documents the central platform acknowledged since start.",
            counters.push_successes,
        ),
        (
            "tracks_push_failures_total",
            "counter",
            "Failed attempts to push an aggregates document since start (retried).",
            counters.push_failures,
        ),
        (
            "tracks_push_rejections_total",
            "counter",
            "Aggregates documents the central platform refused for good since start.",
            counters.push_rejections,
        ),
    ]
}

/// The certificate's, with `[server.acme]` only.
fn acme_samples(acme: AcmeGauges) -> Vec<Sample> {
    vec![
        (
            "tracks_certificate_expiry_timestamp_seconds",
            "gauge",
            "When the served ACME certificate expires, unix seconds (0: none yet).",
            count(acme.expires_at),
        ),
        (
            "tracks_acme_orders_total",
            "counter",
            "ACME certificate orders attempted since start.",
            acme.orders,
        ),
        (
            "tracks_acme_last_order_success",
            "gauge",
            "1 if the last ACME order succeeded, else 0.",
            u64::from(acme.last_succeeded),
        ),
    ]
}

/// The state now: the outbox, the store and its files.
fn gauge_samples(gauges: &Gauges, now: i64) -> [Sample; 6] {
    [
        (
            "tracks_outbox_pending",
            "gauge",
            "Aggregates documents waiting for delivery.",
            count(gauges.outbox.pending),
        ),
        (
            "tracks_outbox_rejected",
            "gauge",
            "Aggregates documents refused for good, kept until their day expires.",
            count(gauges.outbox.rejected),
        ),
        (
            "tracks_outbox_oldest_pending_age_seconds",
            "gauge",
            "Age of the oldest document waiting for delivery (0 when none).",
            gauges
                .outbox
                .oldest_pending_at
                .map_or(0, |at| count(now - at)),
        ),
        (
            "tracks_store_writable",
            "gauge",
            "1 while the database takes commits, 0 after a failed one.",
            u64::from(gauges.writable),
        ),
        (
            "tracks_database_bytes",
            "gauge",
            "Size of the database file.",
            gauges.database_bytes,
        ),
        (
            "tracks_wal_bytes",
            "gauge",
            "Size of the write-ahead log.",
            gauges.wal_bytes,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_one_sample() {
        let metrics = Metrics::default();
        metrics.visit_stored();
        metrics.events_stored(3);
        metrics.events_blocked(2);
        metrics.push_failed();
        let gauges = Gauges {
            writable: true,
            outbox: OutboxStats {
                pending: 2,
                oldest_pending_at: Some(940),
                ..OutboxStats::default()
            },
            database_bytes: 4096,
            wal_bytes: 0,
            acme: None,
        };
        metrics.refused("measure", "invalid_measure_key", 401);
        metrics.refused("measure", "invalid_measure_key", 401);
        metrics.refused("unknown", "not_found", 404);
        metrics.measure_keys("g", ["old".to_string(), "new".to_string()]);
        metrics.events_duplicate(1);
        metrics.events_accepted("g", "new", 5);
        metrics.events_accepted("g", "new", 1);
        let text = prometheus(&metrics.snapshot(), &gauges, 1_000);
        let (text, refusals) = text
            .split_once("# HELP tracks_requests_rejected_total")
            .expect("the refusals");
        let (text, keys) = text
            .split_once("# HELP tracks_measure_key_events_total")
            .expect("the keys");
        assert!(
            keys.ends_with(
                "# TYPE tracks_measure_key_events_total counter\n\
                 tracks_measure_key_events_total{game=\"g\",key=\"new\"} 6\n\
                 tracks_measure_key_events_total{game=\"g\",key=\"old\"} 0\n"
            ),
            "{keys}"
        );
        assert!(refusals.ends_with(
            "# TYPE tracks_requests_rejected_total counter\n\
             tracks_requests_rejected_total{endpoint=\"measure\",reason=\"invalid_measure_key\"} 2\n\
             tracks_requests_rejected_total{endpoint=\"unknown\",reason=\"not_found\"} 1\n"
        ), "{refusals}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() % 3, 0);
        for chunk in lines.chunks(3) {
            let name = chunk[0].split(' ').nth(2).expect("name");
            assert!(chunk[0].starts_with("# HELP "), "{chunk:?}");
            assert!(
                chunk[1].starts_with(&format!("# TYPE {name} ")),
                "{chunk:?}"
            );
            let (sample, value) = chunk[2].split_once(' ').expect("sample");
            assert_eq!(sample, name);
            value.parse::<u64>().expect("a number");
        }
        assert!(text.contains("\ntracks_visits_stored_total 1\n"));
        assert!(text.contains("\ntracks_events_stored_total 3\n"));
        assert!(text.contains("\ntracks_blocked_events_total 2\n"));
        assert!(text.contains("\ntracks_push_failures_total 1\n"));
        assert!(text.contains("\ntracks_outbox_pending 2\n"));
        assert!(text.contains("\ntracks_outbox_oldest_pending_age_seconds 60\n"));
        assert!(text.contains("\ntracks_store_writable 1\n"));
    }

    #[test]
    fn a_refusal_is_logged_at_once_then_once_an_interval_with_its_count() {
        let start = Instant::now();
        let mut refusals = Refusals::default();
        assert_eq!(refusals.note(start), Some(1));
        assert_eq!(refusals.note(start + Duration::from_secs(1)), None);
        assert_eq!(refusals.note(start + Duration::from_secs(9)), None);
        let later = start + REFUSAL_LOG_INTERVAL;
        assert_eq!(refusals.note(later), Some(3));
        assert_eq!(refusals.note(later + Duration::from_secs(1)), None);
        assert_eq!(refusals.total, 5);
    }
}
