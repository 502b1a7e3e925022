//! Jobs: scheduled work (salt rotation, retention purge, central push) as plain functions of
//! (state, now);
//! the scheduler only wires cron expressions to them, and a failing job logs and leaves the
//! daemon serving.

use std::path::Path;
use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::central::{self, Pusher};
use crate::clock::{DAY_SECS, unix_now};
use crate::config::{LedgerConfig, PrivacyConfig};
use crate::identity::Signer;
use crate::metrics::{Metrics, RefusalReport};
use crate::privacy::salt::{generate_key, rotation_due};
use crate::privacy::{SaltRing, SharedSalts};
use crate::store::{PurgeReport, Store, StoreError};

/// Why a salt rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
}

/// How often the rotation rule is checked; rotation itself follows `salt_rotation_hours`.
pub(crate) const SALT_CHECK_SCHEDULE: &str = "0 * * * * *";
/// The retention purge runs at start and then at the top of every hour.
pub(crate) const PURGE_SCHEDULE: &str = "0 0 * * * *";

/// Deletes everything older than the retention (see [`Store::purge`]) and drops destroyed
/// salts from the ring.
pub async fn purge(
    store: &Store,
    salts: &SharedSalts,
    privacy: &PrivacyConfig,
    now: i64,
) -> Result<PurgeReport, StoreError> {
    let cutoff = now - i64::from(privacy.retention_days) * DAY_SECS;
    let report = store.purge(cutoff, now).await?;
    sync_salts(store, salts)?;
    if report != PurgeReport::default() {
        tracing::info!(
            visits = report.visits,
            events = report.events,
            salts = report.salts,
            cells = report.cells,
            "purged data past retention"
        );
    }
    Ok(report)
}

/// Makes the ring match the salts on file after a purge deleted some.
pub(crate) fn sync_salts(store: &Store, salts: &SharedSalts) -> Result<(), StoreError> {
    let on_file = store.load_salts()?;
    if let Ok(mut ring) = salts.write() {
        *ring = SaltRing::new(on_file);
    }
    Ok(())
}

/// Adds a new salt when the newest is `salt_rotation_hours` old (or there is none). Returns
/// whether it rotated.
pub async fn rotate_salt_if_due(
    store: &Store,
    salts: &SharedSalts,
    privacy: &PrivacyConfig,
    now: i64,
) -> Result<bool, JobError> {
    let newest = salts
        .read()
        .ok()
        .and_then(|ring| ring.current().map(|salt| salt.created_at));
    if !rotation_due(newest, now, privacy.salt_rotation_hours) {
        return Ok(false);
    }
    rotate_salt(store, salts, now).await?;
    Ok(true)
}

/// Adds a new salt now, whatever the schedule (`tracks-collector rotate-salt`).
pub async fn rotate_salt(store: &Store, salts: &SharedSalts, now: i64) -> Result<(), JobError> {
    let key = generate_key().map_err(JobError::Random)?;
    let salt = store.insert_salt(now, key).await?;
    let id = salt.id;
    if let Ok(mut ring) = salts.write() {
        ring.push(salt);
    }
    tracing::info!(salt_id = id, "rotated the salt");
    Ok(())
}

pub(crate) async fn push_logged(pusher: &Pusher) {
    if let Err(err) = central::push(pusher, unix_now()).await {
        tracing::error!(error = %err, "rendering aggregates for the central platform failed; retrying at the next push");
    }
}

/// How often a running daemon saves its refusal counts for `stats`.
pub(crate) const REFUSALS_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Saves the refusals counted since `since` to `path` when they changed since `last`; returns
/// what was saved (or `last`). A failure is logged and retried at the next save.
pub(crate) fn save_refusals(
    metrics: &Metrics,
    path: &Path,
    since: i64,
    now: i64,
    last: Option<Vec<(String, String, u64)>>,
) -> Option<Vec<(String, String, u64)>> {
    let snapshot = metrics.snapshot();
    if last.as_ref() == Some(&snapshot.refusals) {
        return last;
    }
    match RefusalReport::new(&snapshot, since, now).save(path) {
        Ok(()) => Some(snapshot.refusals),
        Err(err) => {
            tracing::warn!(error = %err, file = %path.display(), "cannot save the refusal counts for `stats`");
            last
        }
    }
}

/// Starts the scheduler with the daemon's jobs: salt rotation and purge on `store` and
/// `salts`, and with a `pusher` the push to the central platform.
/// What the hourly pruning of the ledger needs: its retention, and the key that signs the
/// anchor row.
pub(crate) struct LedgerPruning {
    pub config: LedgerConfig,
    pub signer: Signer,
}

pub(crate) async fn start(
    store: Store,
    salts: SharedSalts,
    privacy: PrivacyConfig,
    ledger: LedgerPruning,
    pusher: Option<Arc<Pusher>>,
) -> Result<JobScheduler, JobSchedulerError> {
    let scheduler = JobScheduler::new().await?;
    let privacy = Arc::new(privacy);
    let (rotation_store, rotation_salts, rotation_privacy) =
        (store.clone(), salts.clone(), privacy.clone());
    let rotation = Job::new_async(SALT_CHECK_SCHEDULE, move |_id, _scheduler| {
        let (store, salts) = (rotation_store.clone(), rotation_salts.clone());
        let privacy = rotation_privacy.clone();
        Box::pin(async move {
            // The daemon owns the store: the ring is the salts on file (see `control`).
            if let Err(err) = rotate_salt_if_due(&store, &salts, &privacy, unix_now()).await {
                tracing::error!(error = %err, "salt rotation failed; retrying at the next check");
            }
        })
    })?;
    let ledger = Arc::new(ledger);
    let purge_job = Job::new_async(PURGE_SCHEDULE, move |_id, _scheduler| {
        let (store, salts, privacy) = (store.clone(), salts.clone(), privacy.clone());
        let ledger = ledger.clone();
        Box::pin(async move {
            if let Err(err) = purge(&store, &salts, &privacy, unix_now()).await {
                tracing::error!(error = %err, "the retention purge failed; retrying next hour");
            }
            if let Err(err) = prune_ledger(&store, &ledger, unix_now()).await {
                tracing::error!(error = %err, "pruning the ledger failed; retrying next hour");
            }
        })
    })?;
    scheduler.add(rotation).await?;
    scheduler.add(purge_job).await?;
    if let Some(pusher) = pusher {
        let schedule = pusher.schedule().to_owned();
        let push_job = Job::new_async(schedule.as_str(), move |_id, _scheduler| {
            let pusher = pusher.clone();
            Box::pin(async move { push_logged(&pusher).await })
        })?;
        scheduler.add(push_job).await?;
    }
    scheduler.start().await?;
    Ok(scheduler)
}

/// Replaces the ledger rows older than `ledger.retention_days` by one signed anchor row.
pub(crate) async fn prune_ledger(
    store: &Store,
    ledger: &LedgerPruning,
    now: i64,
) -> Result<u64, StoreError> {
    let before = now - i64::from(ledger.config.retention_days) * DAY_SECS;
    let pruned = store.prune_ledger(before, ledger.signer.current()).await?;
    if pruned > 0 {
        tracing::info!(
            rows = pruned,
            "ledger rows past their retention replaced by an anchor"
        );
    }
    Ok(pruned)
}
