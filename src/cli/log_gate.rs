//! Edge: logging: a library's warning or error that repeats is written once, then counted, and
//! one line per interval says how many were held back, so hostile clients cannot flood the
//! journal (h2 writes a warning per connection that floods it with stream resets).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{Event, Level, Metadata};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Filter};

/// The collector's own targets (and so the summary lines, which are never held back).
const OWN_TARGET: &str = "tracks_collector";
/// The target of the summary lines.
const SUMMARY_TARGET: &str = "tracks_collector::log_gate";
/// Lines of a place that has been quiet this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Holds back repeated warnings and errors of libraries, by the place in the code that writes
/// them.
#[derive(Debug, Clone, Default)]
pub(super) struct LogGate {
    places: Arc<Mutex<HashMap<u64, Place>>>,
}

/// One place in the code (target and line) that writes warnings or errors.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    /// `target:line`, as the summary names it.
    name: String,
    /// When it last wrote a line or had one held back.
    last: Instant,
    /// Lines held back since the last summary.
    held: u64,
}

impl LogGate {
    /// Whether a line from `key` (named `name`) is written at `now`: the first of a burst is;
    /// the rest are held back until the place has been quiet for `interval` and a summary has
    /// counted them.
    fn admit(
        &self,
        key: u64,
        name: impl FnOnce() -> String,
        now: Instant,
        interval: Duration,
    ) -> bool {
        let mut places = self.lock();
        match places.get_mut(&key) {
            None => {
                places.insert(
                    key,
                    Place {
                        name: name(),
                        last: now,
                        held: 0,
                    },
                );
                true
            }
            Some(place) => {
                let quiet = now.saturating_duration_since(place.last) >= interval;
                place.last = now;
                if quiet && place.held == 0 {
                    true
                } else {
                    place.held += 1;
                    false
                }
            }
        }
    }

    /// The places with lines held back and how many; their counts start again at zero.
    fn take_held(&self, now: Instant) -> Vec<(String, u64)> {
        let mut places = self.lock();
        let held = places
            .values_mut()
            .filter(|place| place.held > 0)
            .map(|place| (place.name.clone(), std::mem::take(&mut place.held)))
            .collect();
        places.retain(|_, place| now.saturating_duration_since(place.last) < FORGET_AFTER);
        held
    }

    /// Writes a summary line per place every `interval`, on a thread of its own that lives as
    /// long as the process.
    pub(super) fn summarize_every(&self, interval: Duration) {
        let gate = self.clone();
        let started = std::thread::Builder::new()
            .name("log-gate".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    for (place, count) in gate.take_held(Instant::now()) {
                        tracing::warn!(
                            target: SUMMARY_TARGET,
                            place,
                            count,
                            "repeated log lines held back since the last line about them"
                        );
                    }
                }
            });
        if let Err(err) = started {
            tracing::warn!(error = %err, "cannot start the log summary thread");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Place>> {
        self.places
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S> Filter<S> for LogGate {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        // Decided per event, below: `enabled` is asked twice for a `log` record.
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        // More verbose levels are greater: info, debug and trace pass. The collector's own
        // lines pass too: it counts what clients cause and logs that at most once an interval
        // (`Metrics`), and its other warnings (a certificate reload that failed) each matter.
        if *meta.level() > Level::WARN || meta.target().starts_with(OWN_TARGET) {
            return true;
        }
        // A `log` record (rustls writes them) carries its real place in its fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or(meta);
        let mut hasher = DefaultHasher::new();
        (
            meta.target(),
            meta.file(),
            meta.line(),
            meta.level().as_str(),
        )
            .hash(&mut hasher);
        let name = || format!("{}:{}", meta.target(), meta.line().unwrap_or_default());
        self.admit(
            hasher.finish(),
            name,
            Instant::now(),
            crate::metrics::REFUSAL_LOG_INTERVAL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(10);

    #[test]
    fn a_burst_writes_its_first_line_and_one_summary_per_interval() {
        let gate = LogGate::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let name = || "h2::proto::streams::recv:913".to_string();
        assert!(gate.admit(1, name, at(0), INTERVAL));
        for second in 1..=9 {
            assert!(!gate.admit(1, name, at(second), INTERVAL));
        }
        // Another place is not held back by this one.
        assert!(gate.admit(2, || "other:1".into(), at(5), INTERVAL));
        assert_eq!(
            gate.take_held(at(10)),
            vec![("h2::proto::streams::recv:913".to_string(), 9)]
        );
        // The flood goes on: still held back, counted in the next summary.
        assert!(!gate.admit(1, name, at(11), INTERVAL));
        assert_eq!(gate.take_held(at(20)).len(), 1);
        assert_eq!(gate.take_held(at(30)), vec![]);
        // Quiet for an interval and counted: the next line is written again.
        assert!(gate.admit(1, name, at(40), INTERVAL));
    }

    #[test]
    fn places_quiet_for_long_are_forgotten() {
        let gate = LogGate::default();
        let start = Instant::now();
        assert!(gate.admit(1, || "a:1".into(), start, INTERVAL));
        gate.take_held(start + FORGET_AFTER);
        assert!(gate.lock().is_empty());
    }
}
