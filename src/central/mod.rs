//! Central: aggregates documents pushed to the central TRACKS platform.
//!
//! A push renders every day of the retention window and queues, in the store's outbox, the
//! days whose content changed since they were last queued (one document per UTC day). The
//! deliverer sends the outbox oldest first, each document with the idempotency key it was
//! queued with, and deletes it only after a 2xx; failures wait with capped exponential
//! backoff and jitter. A 4xx other than 408 and 429 means the platform will never take that
//! document: it is set aside, loudly, and the next one goes.

pub(crate) mod client;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use url::Url;

use crate::attribution::{self, ClusterStatus, Query, Rows};
use crate::clock::unix_now;
use crate::cluster::Cluster;
use crate::config::{CentralConfig, Config};
use crate::identity::Signer;
use crate::metrics::Metrics;
use crate::store::{Delivery, NewDocument, OutboxEntry, Signed, Store, StoreError};
use client::{Answer, Client, ClientError};

/// The first retry waits this long; each further one twice as long, up to `retry_max_secs`.
const FIRST_RETRY_SECS: u64 = 1;
/// After a failure to read the outbox itself, the deliverer looks again this much later.
const STORE_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum CentralError {
    #[error("cannot read the central platform token from {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot render an aggregates document: {0}")]
    Render(String),
}

impl CentralError {
    /// The configuration key of the file at fault when setting up fails: the token, or the CA
    /// file the client is built with.
    pub(crate) fn config_key(&self) -> &'static str {
        match self {
            CentralError::Token { .. } => "central.token_file",
            _ => "central.ca_file",
        }
    }
}

/// The push side of the daemon: where documents go and how.
#[derive(Debug)]
pub(crate) struct Central {
    config: CentralConfig,
    endpoint: Url,
    client: Client,
    /// Woken when documents are queued, so delivery does not wait for its next timer.
    queued: Notify,
    /// One push at a time: two renderings of the same change would queue it twice.
    pushing: tokio::sync::Mutex<()>,
}

impl Central {
    /// Checks the token file and the trust roots now, so a mistake stops the start instead of
    /// every push.
    pub(crate) fn new(config: &CentralConfig) -> Result<Central, CentralError> {
        read_token(&config.token_file)?;
        let client = Client::new(
            config.ca_file.as_deref(),
            Duration::from_secs(u64::from(config.timeout_secs)),
        )?;
        Ok(Central {
            endpoint: endpoint(&config.url, &config.collector_id),
            config: config.clone(),
            client,
            queued: Notify::new(),
            pushing: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// One attempt to deliver `entry`, and what it means for the entry.
    async fn attempt(&self, entry: &OutboxEntry) -> Delivery {
        let signature = entry.signed.as_ref().map(Signed::headers);
        let mut headers = vec![("idempotency-key", entry.idempotency_key.as_str())];
        for (name, value) in signature.iter().flatten() {
            headers.push((name, value.as_str()));
        }
        let sent = match read_token(&self.config.token_file) {
            Ok(token) => self
                .client
                .post_json(&self.endpoint, &token, &headers, entry.body.clone())
                .await
                .map_err(CentralError::from),
            Err(err) => Err(err),
        };
        let now = unix_now();
        let jitter = random_unit();
        let retry = |retry_after: Option<u64>, error: String| Delivery::Retry {
            next_attempt_at: now
                + backoff_secs(
                    entry.attempts,
                    retry_after,
                    self.config.retry_max_secs,
                    jitter,
                ),
            error,
        };
        match sent {
            Ok(Answer { status, .. }) if (200..300).contains(&status) => {
                Delivery::Acknowledged { at: now }
            }
            Ok(Answer {
                status,
                retry_after,
                excerpt,
            }) => {
                let error = format!("HTTP {status}: {}", one_line(&excerpt));
                if is_final_refusal(status) {
                    Delivery::Rejected { at: now, error }
                } else {
                    retry(retry_after, error)
                }
            }
            Err(err) => retry(None, err.to_string()),
        }
    }
}

/// What the push job and the deliverer share: the platform, and the parts of the daemon they
/// read and count in.
#[derive(Debug)]
pub(crate) struct Pusher {
    central: Central,
    /// Rendering reads the cells; the outbox lives here too.
    store: Store,
    /// The documents follow the same retention, linking and suppression rules as `/api`.
    config: Arc<Config>,
    /// Shared with `/metrics`, which shows the delivery outcomes.
    metrics: Arc<Metrics>,
    /// Signs each queued document.
    signer: Signer,
    /// In a cluster: the other nodes, whose rows each document merges with this node's.
    cluster: Option<Arc<Cluster>>,
}

impl Pusher {
    pub(crate) fn new(
        central: Central,
        store: Store,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        signer: Signer,
    ) -> Pusher {
        Pusher {
            central,
            store,
            config,
            metrics,
            signer,
            cluster: None,
        }
    }

    /// Pushes the documents of the whole cluster: this node's rows merged with its peers'.
    pub(crate) fn merging(self, cluster: Option<Arc<Cluster>>) -> Pusher {
        Pusher { cluster, ..self }
    }

    /// The cron expression of the push job.
    pub(crate) fn schedule(&self) -> &str {
        &self.central.config.push_schedule
    }
}

/// `{url}/api/v1/collectors/{collector_id}/aggregates`, keeping any path prefix of `url`.
pub(crate) fn endpoint(base: &Url, collector_id: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!(
        "{prefix}/api/v1/collectors/{collector_id}/aggregates"
    ));
    url
}

/// 4xx are final, except 408 (timeout) and 429 (slow down), which say "later".
pub(crate) fn is_final_refusal(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

/// Seconds until the next attempt after `attempts` failed ones: 1, 2, 4 ... capped at `max`,
/// then spread over its upper half by `jitter` (in 0..1) so many collectors coming back from
/// one outage do not arrive together. A `Retry-After` is honoured up to `max`.
pub(crate) fn backoff_secs(attempts: i64, retry_after: Option<u64>, max: u32, jitter: f64) -> i64 {
    let max = u64::from(max.max(1));
    let exponent = u32::try_from(attempts.clamp(0, 32)).unwrap_or(32);
    let ceiling = FIRST_RETRY_SECS.saturating_mul(1 << exponent).min(max);
    let spread = (ceiling as f64 / 2.0 * jitter.clamp(0.0, 1.0)) as u64;
    let wait = (ceiling - ceiling / 2 + spread).max(1);
    let wait = retry_after.map_or(wait, |asked| wait.max(asked.min(max)));
    i64::try_from(wait).unwrap_or(i64::MAX)
}

fn random_unit() -> f64 {
    getrandom::u64().map_or(0.5, |bits| (bits >> 11) as f64 / (1u64 << 53) as f64)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read_token(path: &Path) -> Result<String, CentralError> {
    client::read_token(path).map_err(|message| CentralError::Token {
        path: path.to_path_buf(),
        message,
    })
}

/// The days of the retention window, as the push renders them.
fn window(config: &Config, now: i64) -> (String, String) {
    let (oldest, today) = attribution::retention_days(config, now);
    (
        crate::clock::day_text(oldest),
        crate::clock::day_text(today),
    )
}

/// One document per day of `rows` whose content differs from `queued`, the content last
/// queued for each day; in a cluster, each says which nodes it holds (`cluster`), so a day
/// whose node comes back is sent again, whole.
fn changed_documents(
    rows: Rows,
    cluster: Option<&ClusterStatus>,
    queued: &HashMap<String, [u8; 32]>,
    config: &Config,
    now: i64,
) -> Result<Vec<NewDocument>, CentralError> {
    let mut days: BTreeMap<String, Rows> = BTreeMap::new();
    for row in rows.traffic {
        days.entry(row.day.clone()).or_default().traffic.push(row);
    }
    for row in rows.conversions {
        days.entry(row.day.clone())
            .or_default()
            .conversions
            .push(row);
    }
    for row in rows.sources {
        days.entry(row.day.clone()).or_default().sources.push(row);
    }
    for row in rows.pages {
        days.entry(row.day.clone()).or_default().pages.push(row);
    }
    let mut documents = Vec::new();
    for (day, rows) in days {
        let Some(date) = crate::clock::parse_day(&day) else {
            continue;
        };
        let query = Query {
            from: date,
            to: date,
            game: None,
        };
        let mut document = attribution::document(config, &query, rows, cluster.cloned(), now);
        let generated_at = std::mem::take(&mut document.generated_at);
        let content = *blake3::hash(
            &serde_json::to_vec(&document).map_err(|err| CentralError::Render(err.to_string()))?,
        )
        .as_bytes();
        if queued.get(&day) == Some(&content) {
            continue;
        }
        document.generated_at = generated_at;
        documents.push(NewDocument {
            day,
            content,
            idempotency_key: idempotency_key()?,
            body: serde_json::to_vec(&document)
                .map_err(|err| CentralError::Render(err.to_string()))?,
        });
    }
    Ok(documents)
}

/// A random key per queued document: the same document keeps it on every retry, and a day
/// whose content later returns to an earlier state still gets a new one.
fn idempotency_key() -> Result<String, CentralError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|err| CentralError::Render(format!("the OS random source failed: {err}")))?;
    Ok(hex::encode(bytes))
}

/// The push job: queues the changed days and wakes the deliverer. Returns how many documents
/// were queued.
pub(crate) async fn push(pusher: &Pusher, now: i64) -> Result<usize, CentralError> {
    let _pushing = pusher.central.pushing.lock().await;
    // Rendering reads up to a month of cells: off the async workers, before and after the
    // peers' rows are merged in (in a cluster).
    let (from, to) = window(&pusher.config, now);
    let (store, range) = (pusher.store.clone(), (from.clone(), to.clone()));
    let (rows, queued) = tokio::task::spawn_blocking(move || {
        let reader = store.reader()?;
        let rows = attribution::read_rows(&reader, &range.0, &range.1, None)?;
        Ok::<_, CentralError>((rows, reader.queued_contents()?))
    })
    .await
    .map_err(|err| CentralError::Render(err.to_string()))??;
    let (rows, status) = match &pusher.cluster {
        Some(cluster) => {
            let (rows, status) = cluster.merged(rows, &from, &to, None).await;
            (rows, Some(status))
        }
        None => (rows, None),
    };
    let config = pusher.config.clone();
    let documents = tokio::task::spawn_blocking(move || {
        changed_documents(rows, status.as_ref(), &queued, &config, now)
    })
    .await
    .map_err(|err| CentralError::Render(err.to_string()))??;
    let count = documents.len();
    if count > 0 {
        pusher
            .store
            .enqueue_documents(
                documents,
                now,
                pusher.signer.current(),
                pusher.central.endpoint.to_string(),
                pusher.config.ledger.keep_documents,
            )
            .await?;
        tracing::info!(
            documents = count,
            "queued aggregates for the central platform"
        );
    }
    pusher.central.queued.notify_one();
    Ok(count)
}

/// Delivers the outbox, forever: started once with the daemon, stopped with its runtime. An
/// attempt cut short by shutdown is simply made again after the restart, with the same key.
pub(crate) async fn deliver(pusher: Arc<Pusher>) {
    let Pusher {
        central,
        store,
        metrics,
        ..
    } = &*pusher;
    loop {
        let next = store.reader().and_then(|reader| reader.outbox_next());
        let entry = match next {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                central.queued.notified().await;
                continue;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot read the outbox; looking again shortly");
                tokio::time::sleep(STORE_RETRY).await;
                continue;
            }
        };
        let wait = entry.next_attempt_at - unix_now();
        if wait > 0 {
            let wait = Duration::from_secs(u64::try_from(wait).unwrap_or(u64::MAX));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = central.queued.notified() => {}
            }
            continue;
        }
        let delivery = central.attempt(&entry).await;
        report(metrics, &entry, &delivery);
        if let Err(err) = store.record_delivery(entry.id, delivery).await {
            tracing::error!(error = %err, "cannot record a delivery attempt; it will be repeated");
            tokio::time::sleep(STORE_RETRY).await;
        }
    }
}

fn report(metrics: &Metrics, entry: &OutboxEntry, delivery: &Delivery) {
    match delivery {
        Delivery::Acknowledged { .. } => {
            metrics.push_succeeded();
            tracing::info!(
                day = %entry.day,
                attempts = entry.attempts + 1,
                "the central platform acknowledged the aggregates"
            );
        }
        Delivery::Retry {
            next_attempt_at,
            error,
        } => {
            metrics.push_failed();
            tracing::warn!(
                day = %entry.day,
                attempt = entry.attempts + 1,
                retry_in_secs = next_attempt_at - unix_now(),
                error = %error,
                "pushing aggregates failed; the document stays queued"
            );
        }
        Delivery::Rejected { error, .. } => {
            metrics.push_rejected();
            tracing::error!(
                day = %entry.day,
                idempotency_key = %entry.idempotency_key,
                error = %error,
                "the central platform refused the aggregates document for good; it will not be \
                 sent again (fix the cause; the next change of that day queues a new one)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_keeps_a_base_path() {
        let url = |text: &str| Url::parse(text).expect("url");
        assert_eq!(
            endpoint(&url("https://tracks.example"), "eu-1").as_str(),
            "https://tracks.example/api/v1/collectors/eu-1/aggregates"
        );
        assert_eq!(
            endpoint(&url("https://example.com/tracks/"), "eu-1").as_str(),
            "https://example.com/tracks/api/v1/collectors/eu-1/aggregates"
        );
    }

    #[test]
    fn only_4xx_other_than_408_and_429_are_final() {
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(is_final_refusal(status), "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504, 301, 200] {
            assert!(!is_final_refusal(status), "{status}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        // No jitter: the lower half-point of each ceiling.
        let waits: Vec<i64> = (0..12).map(|n| backoff_secs(n, None, 300, 0.0)).collect();
        assert_eq!(waits, [1, 1, 2, 4, 8, 16, 32, 64, 128, 150, 150, 150]);
        // Full jitter: the ceiling itself.
        let waits: Vec<i64> = (0..12)
            .map(|n| backoff_secs(n, None, 300, 0.999_999))
            .collect();
        assert_eq!(waits, [1, 1, 3, 7, 15, 31, 63, 127, 255, 299, 299, 299]);
        // Many failures never overflow.
        assert_eq!(backoff_secs(10_000, None, 900, 0.0), 450);
        assert_eq!(backoff_secs(-3, None, 900, 0.0), 1);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        assert_eq!(backoff_secs(0, Some(30), 300, 0.0), 30);
        assert_eq!(backoff_secs(0, Some(3_600), 300, 0.0), 300);
        assert_eq!(backoff_secs(8, Some(1), 300, 0.0), 128);
    }

    #[test]
    fn tokens_are_one_trimmed_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "  secret-token\n").expect("write");
        assert_eq!(read_token(&path).expect("token"), "secret-token");
        std::fs::write(&path, "\n").expect("write");
        assert!(read_token(&path).is_err());
        std::fs::write(&path, "two words").expect("write");
        assert!(read_token(&path).is_err());
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
