//! Edge: logging: a warning or error that repeats is written once, then counted, and one line
//! per interval says how many were held back, so neither hostile clients nor a full disk can
//! flood the journal (h2 writes a warning per connection that floods it with stream resets; a
//! full disk fails every write group, and the journal may share that disk).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{Event, Level, Metadata};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Filter};

/// The collector's own targets.
const OWN_TARGET: &str = "tracks_collector";
/// The target of the summary lines, never held back.
const SUMMARY_TARGET: &str = "tracks_collector::log_gate";
/// Lines that count what clients cause and are written at most once an interval already
/// (`Metrics`), each with its count.
const SELF_GATED_TARGET: &str = "tracks_collector::metrics";
/// Lines of a place that has been quiet this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Holds back repeated warnings and errors: a library's by the place in the code that writes
/// them; the collector's own by place and kind (the text of their fields, not their numbers), so
/// a certificate reload that fails for a new reason is written, and the thousandth failed group
/// of a full disk is counted.
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
        // More verbose levels are greater: info, debug and trace pass.
        if *meta.level() > Level::WARN
            || meta.target() == SUMMARY_TARGET
            || meta.target().starts_with(SELF_GATED_TARGET)
        {
            return true;
        }
        let own = meta.target().starts_with(OWN_TARGET);
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
        if own {
            event.record(&mut Kind(&mut hasher));
        }
        let name = || format!("{}:{}", meta.target(), meta.line().unwrap_or_default());
        self.admit(
            hasher.finish(),
            name,
            Instant::now(),
            crate::metrics::REFUSAL_LOG_INTERVAL,
        )
    }
}

/// Hashes the text of an event's fields (its message, an error, an endpoint), not its numbers
/// (a count, a size), which differ from one repeat to the next.
struct Kind<'h>(&'h mut DefaultHasher);

impl tracing::field::Visit for Kind<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        field.name().hash(self.0);
        format!("{value:?}").hash(self.0);
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        field.name().hash(self.0);
        value.hash(self.0);
    }

    fn record_i64(&mut self, _field: &tracing::field::Field, _value: i64) {}
    fn record_u64(&mut self, _field: &tracing::field::Field, _value: u64) {}
    fn record_i128(&mut self, _field: &tracing::field::Field, _value: i128) {}
    fn record_u128(&mut self, _field: &tracing::field::Field, _value: u128) {}
    fn record_f64(&mut self, _field: &tracing::field::Field, _value: f64) {}
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

    /// Lines written through a subscriber with the gate, as text.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The full disk: 31,008 "a write group failed to commit" lines in 13 s, each with
    /// another group size. One is written; a new reason, and a line that counts itself, are not
    /// held back.
    #[test]
    fn the_collectors_own_lines_are_held_back_by_kind_not_by_number() {
        use tracing_subscriber::prelude::*;
        let written = Written::default();
        let writer = written.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .with_filter(LogGate::default());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            for jobs in 0..1000u64 {
                tracing::error!(
                    target: "tracks_collector::store::writer",
                    error = %"the disk is full",
                    jobs,
                    "a write group failed to commit"
                );
            }
            for reason in ["no CERTIFICATE block", "do not belong together"] {
                tracing::error!(target: "tracks_collector", error = %reason, "kept the old TLS certificate");
            }
            for count in 0..3u64 {
                tracing::warn!(target: "tracks_collector::metrics", count, "refused a request");
            }
        });
        let text = String::from_utf8(written.0.lock().expect("buffer").clone()).expect("text");
        assert_eq!(
            text.matches("a write group failed to commit").count(),
            1,
            "{text}"
        );
        assert_eq!(
            text.matches("kept the old TLS certificate").count(),
            2,
            "{text}"
        );
        assert_eq!(text.matches("refused a request").count(), 3, "{text}");
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
