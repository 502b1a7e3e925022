//! Counters of what the collector saw: the only place crawlers are counted (they are never
//! stored). Exposed by `/metrics` and `stats`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    visits_stored: AtomicU64,
    events_stored: AtomicU64,
    crawlers: AtomicU64,
    rejected: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MetricsSnapshot {
    pub visits_stored: u64,
    pub events_stored: u64,
    pub crawlers: u64,
    pub rejected: u64,
}

impl Metrics {
    pub fn visit_stored(&self) {
        self.visits_stored.fetch_add(1, Ordering::Relaxed);
    }

    pub fn events_stored(&self, count: usize) {
        self.events_stored
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    pub fn crawler_seen(&self) {
        self.crawlers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            visits_stored: self.visits_stored.load(Ordering::Relaxed),
            events_stored: self.events_stored.load(Ordering::Relaxed),
            crawlers: self.crawlers.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}
