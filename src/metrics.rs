//! Counters of what the collector saw: the only place crawlers and the dropped events of
//! blocked players are counted (neither is stored). Exposed by `/metrics` in the Prometheus
//! text format and by `stats`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::store::OutboxStats;

#[derive(Debug, Default)]
pub struct Metrics {
    visits_stored: AtomicU64,
    events_stored: AtomicU64,
    events_blocked: AtomicU64,
    crawlers: AtomicU64,
    rejected: AtomicU64,
    push_successes: AtomicU64,
    push_failures: AtomicU64,
    push_rejections: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    pub visits_stored: u64,
    pub events_stored: u64,
    pub events_blocked: u64,
    pub crawlers: u64,
    pub rejected: u64,
    pub push_successes: u64,
    pub push_failures: u64,
    pub push_rejections: u64,
}

impl Metrics {
    pub fn visit_stored(&self) {
        self.visits_stored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_stored(&self, count: usize) {
        self.events_stored
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn events_blocked(&self, count: usize) {
        self.events_blocked
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn crawler_seen(&self) {
        self.crawlers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn push_succeeded(&self) {
        self.push_successes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn push_failed(&self) {
        self.push_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn push_rejected(&self) {
        self.push_rejections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            visits_stored: self.visits_stored.load(Ordering::Relaxed),
            events_stored: self.events_stored.load(Ordering::Relaxed),
            events_blocked: self.events_blocked.load(Ordering::Relaxed),
            crawlers: self.crawlers.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            push_successes: self.push_successes.load(Ordering::Relaxed),
            push_failures: self.push_failures.load(Ordering::Relaxed),
            push_rejections: self.push_rejections.load(Ordering::Relaxed),
        }
    }
}

/// What `/metrics` shows besides the counters: cheap reads only, since scrapers come often.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    pub writable: bool,
    pub outbox: OutboxStats,
    pub database_bytes: u64,
    pub wal_bytes: u64,
}

/// The Prometheus text exposition format (version 0.0.4).
pub fn prometheus(counters: &MetricsSnapshot, gauges: &Gauges, now: i64) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    metric(
        "tracks_visits_stored_total",
        "counter",
        "Visits stored since start.",
        counters.visits_stored,
    );
    metric(
        "tracks_events_stored_total",
        "counter",
        "Game events stored since start.",
        counters.events_stored,
    );
    metric(
        "tracks_blocked_events_total",
        "counter",
        "Game events of forgotten (blocked) players since start, answered as accepted and dropped.",
        counters.events_blocked,
    );
    metric(
        "tracks_crawlers_total",
        "counter",
        "Visits by crawlers since start (never stored).",
        counters.crawlers,
    );
    metric(
        "tracks_requests_rejected_total",
        "counter",
        "Ingest requests refused with a 4xx since start.",
        counters.rejected,
    );
    metric(
        "tracks_push_successes_total",
        "counter",
        "Aggregates documents the central platform acknowledged since start.",
        counters.push_successes,
    );
    metric(
        "tracks_push_failures_total",
        "counter",
        "Failed attempts to push an aggregates document since start (retried).",
        counters.push_failures,
    );
    metric(
        "tracks_push_rejections_total",
        "counter",
        "Aggregates documents the central platform refused for good since start.",
        counters.push_rejections,
    );
    metric(
        "tracks_outbox_pending",
        "gauge",
        "Aggregates documents waiting for delivery.",
        count(gauges.outbox.pending),
    );
    metric(
        "tracks_outbox_rejected",
        "gauge",
        "Aggregates documents refused for good, kept until their day expires.",
        count(gauges.outbox.rejected),
    );
    metric(
        "tracks_outbox_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest document waiting for delivery (0 when none).",
        gauges
            .outbox
            .oldest_pending_at
            .map_or(0, |at| count(now - at)),
    );
    metric(
        "tracks_store_writable",
        "gauge",
        "1 while the database takes commits, 0 after a failed one.",
        u64::from(gauges.writable),
    );
    metric(
        "tracks_database_bytes",
        "gauge",
        "Size of the database file.",
        gauges.database_bytes,
    );
    metric(
        "tracks_wal_bytes",
        "gauge",
        "Size of the write-ahead log.",
        gauges.wal_bytes,
    );
    out
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
        };
        let text = prometheus(&metrics.snapshot(), &gauges, 1_000);
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
}
