//! Edge: what the service manager is told (`Type=notify`): ready only once the store is open
//! and the port bound, reloading around a SIGHUP, stopping at shutdown, a status line a person
//! reads in `systemctl status`, and a watchdog fed only while the writer gets a probe row to
//! the disk, so a hung or failing writer gets the service restarted. Without `NOTIFY_SOCKET`
//! (no systemd) every message is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::metrics::Metrics;
use crate::store::Store;

/// Sends `states`; a failure is logged, never fatal: the daemon serves either way. Without a
/// service manager's socket (unset or empty) there is no one to tell.
fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|socket| socket.is_empty()) {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(error = %err, "cannot notify the service manager");
    }
}

/// The store is open, the jobs run and the port is bound.
pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A SIGHUP reload begins; [`ready`] ends it.
pub(crate) fn reloading() {
    send(&[NotifyState::Reloading, NotifyState::Status("reloading")]);
}

pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining requests"),
    ]);
}

/// How often the status line is brought up to date.
const STATUS_EVERY: Duration = Duration::from_secs(60);

/// Feeds the watchdog, when the service has one (`WatchdogSec=`), at a third of its period,
/// each time only after a probe row reached the disk within that third; and keeps the status
/// line current. Runs until the daemon stops.
pub(crate) async fn keep_alive(
    store: Store,
    metrics: Arc<Metrics>,
    acme: Option<Arc<crate::http::acme::AcmeResolver>>,
) {
    let period = sd_notify::watchdog_enabled().map(|timeout| timeout / 3);
    let mut visits_before = metrics.visits_stored();
    let mut status_due = tokio::time::Instant::now() + STATUS_EVERY;
    let tick = period.unwrap_or(STATUS_EVERY).min(STATUS_EVERY);
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(period) = period {
            match store.probe(period).await {
                Ok(()) => send(&[NotifyState::Watchdog]),
                Err(err) => {
                    tracing::warn!(error = %err, "the writer did not reach the disk in time; the watchdog is not fed")
                }
            }
        }
        if tokio::time::Instant::now() >= status_due {
            status_due += STATUS_EVERY;
            let visits = metrics.visits_stored();
            let mut line = status_line(visits.saturating_sub(visits_before));
            if let Some(acme) = &acme {
                line.push_str(&certificate_words(
                    acme.status.gauges().expires_at,
                    crate::unix_now(),
                ));
            }
            visits_before = visits;
            send(&[NotifyState::Status(&line)]);
        }
    }
}

/// `serving 1,234 visits/min`.
pub(crate) fn status_line(visits_last_minute: u64) -> String {
    format!(
        "serving {} visits/min",
        crate::summary::thousands(i64::try_from(visits_last_minute).unwrap_or(i64::MAX))
    )
}

/// `, certificate valid 61 days`, or that there is none yet.
fn certificate_words(expires_at: i64, now: i64) -> String {
    if expires_at == 0 {
        ", no certificate yet (ACME)".to_string()
    } else {
        format!(
            ", certificate valid {} days",
            (expires_at - now).max(0) / 86_400
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{certificate_words, status_line};

    #[test]
    fn the_certificate_is_counted_in_days() {
        assert_eq!(
            certificate_words(1_000 + 61 * 86_400 + 5, 1_000),
            ", certificate valid 61 days"
        );
        assert_eq!(certificate_words(0, 1_000), ", no certificate yet (ACME)");
    }

    #[test]
    fn the_status_line_reads_as_a_sentence() {
        assert_eq!(status_line(1234), "serving 1,234 visits/min");
        assert_eq!(status_line(0), "serving 0 visits/min");
    }
}
