//! tracks-collector: a self-hostable, privacy-first collector of landing-page visits and game
//! opens.
//!
//! # Layout
//!
//! The modules follow the data path, edge first; each imports only from its own layer and
//! the ones below it, with no cycle (`python3 scripts/structure.py` checks both, in CI):
//!
//! - [`cli`] (one file per command), [`testkit`]: the edges that drive the rest.
//! - [`control`], [`jobs`], [`notify`]: the command line's writes reaching a running daemon
//!   (the store's one owner), scheduled work, and what systemd is told.
//! - [`http`]: TLS, HTTP/1.1 and HTTP/2, routing, limits, errors, client addresses, ACME.
//!   [`app`]: the running daemon's shared state that `http` serves requests with.
//! - [`central`]: aggregates pushed to the central platform through a durable outbox, with
//!   its own HTTP client: with `http`, the only modules that know hyper.
//!   [`summary`]: the aggregates per campaign as a person reads them. [`cluster`]: the other
//!   nodes behind the same load balancer, and one view of all of them.
//! - [`ingest`]: `/collect`, `/r/{link}` and `/measure` input: validation and minimisation
//!   into records; [`metrics`]: counters of what was seen, stored and refused.
//! - [`attribution`]: the aggregates document and the query that asks for it.
//! - [`store`]: the SQLCipher database, its writer thread and migrations. Only this module
//!   speaks SQL.
//! - [`link`]: which visit brought a game open, and which pseudonym a returning player keeps.
//! - [`config`]: the validated configuration, and the defaults every layer shares.
//! - [`privacy`]: salts, keyed pseudonyms, User-Agent and URL minimisation, countries.
//! - [`rows`], [`identity`]: one type per kind of aggregates row; the collector's signing key.
//! - [`campaign`], [`text`], [`clock`], [`files`], [`crypto`]: the campaign dimensions,
//!   control characters, UTC days, private files and the TLS crypto provider.
// Unsafe code only where a module allows it, and one does: `store::page_cache`, the shim
// around SQLite's page cache.
#![deny(unsafe_code)]

mod app;
mod attribution;
mod campaign;
mod central;
mod cli;
mod clock;
mod cluster;
mod config;
mod control;
mod crypto;
mod files;
mod http;
mod identity;
mod ingest;
mod jobs;
mod link;
mod metrics;
mod notify;
mod privacy;
mod rows;
mod store;
mod summary;
#[doc(hidden)]
pub mod testkit;
mod text;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::ingest::OpenedStore;
use crate::metrics::Metrics;
use crate::privacy::geo::Countries;
use crate::store::DbKey;

pub use cli::main;
pub use clock::unix_now;
pub use store::KeySources;

/// Runs the daemon on an already bound listener and its claimed data folder until `shutdown`
/// completes, then drains in-flight requests and commits every pending write before
/// returning.
pub async fn run(
    config: Config,
    keys: KeySources,
    listener: TcpListener,
    claim: control::Claim,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener
        .local_addr()
        .context("the listener has no address")?;
    if config.server.tls.is_none() && config.server.acme.is_none() && !local.ip().is_loopback() {
        anyhow::bail!(
            "refusing to serve plain HTTP on {local}: only a loopback address may skip TLS"
        );
    }
    // Every background task lives here: leaving `run` by any path, an early `?` included,
    // drops the set and so aborts them all.
    let mut tasks = Tasks::default();
    let edge = edge(&config, &mut tasks)?;
    let central = central_client(&config)?;
    let cluster = cluster(&config)?;
    let config = Arc::new(config);
    let OpenedStore {
        store,
        salts,
        ingest,
    } = open_store(&config, keys, claim.lock, edge.countries).await?;
    // The store's owner for the command line's writes; its identity (made at the first start,
    // kept beside the database) signs every document that leaves.
    let owner = control::Owner::with_identity(config.clone(), store.clone(), salts.clone())
        .context("cannot load the collector's identity")?;
    let signer = owner.signer.clone();
    tracing::info!(
        fingerprint = %identity::fingerprint(&signer.current().public_key()),
        "signing what leaves with the collector's identity"
    );
    let metrics = Arc::new(Metrics::for_games(&config.games));
    let app = Arc::new(App {
        ingest,
        config: config.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        signer: signer.clone(),
        acme: edge.acme.clone(),
        cluster: cluster.clone(),
        rendered: attribution::Rendered::for_config(&config),
    });
    let pusher = pusher(central, cluster, &app);
    tasks.spawn(forget_idle_clients(app.clone()));
    tasks.spawn_until_stopped(|stop| render_the_window(app.clone(), stop));
    let refusals = config.storage.path.with_file_name(metrics::REFUSALS_FILE);
    tasks.spawn(save_refusals(metrics.clone(), refusals));
    // Its socket goes with it; a command already queued in the store is committed by the close.
    tasks.spawn(claim.control.serve(owner, unix_now));
    let ledger = jobs::LedgerPruning {
        config: config.ledger,
        signer,
    };
    start_jobs(&mut tasks, &app, salts, ledger, pusher).await?;
    tracing::info!(
        address = %local,
        tls = config.server.tls.is_some() || config.server.acme.is_some(),
        "tracks-collector is listening"
    );
    tasks.spawn(notify::keep_alive(store.clone(), metrics, edge.acme));
    notify::ready(&format!("serving on {local}"));

    http::serve(listener, edge.tls, app, shutdown).await;
    notify::stopping();
    tasks.stop().await;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .context("the store writer panicked while closing")?;
    tracing::info!("stopped; every acknowledged write is committed");
    Ok(())
}

/// The daemon's background tasks and the token that asks them to stop.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    stop: CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends or the daemon stops, whichever comes first.
    fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.set.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// Runs a task that ends by itself once the token it is given is cancelled, for work that
    /// must finish cleanly rather than be cut.
    fn spawn_until_stopped<F: Future<Output = ()> + Send + 'static>(
        &mut self,
        task: impl FnOnce(CancellationToken) -> F,
    ) {
        self.set.spawn(task(self.stop.clone()));
    }

    /// Asks every task to stop and waits until each has.
    async fn stop(mut self) {
        self.stop.cancel();
        while self.set.join_next().await.is_some() {}
    }
}

/// The scheduled jobs, and the pushes that are not scheduled: one at start (it sends what
/// changed while the daemon was down) and the delivery of the outbox. An attempt cut at the
/// stop is made again after the restart, with the same idempotency key.
async fn start_jobs(
    tasks: &mut Tasks,
    app: &App,
    salts: privacy::SharedSalts,
    ledger: jobs::LedgerPruning,
    pusher: Option<Arc<central::Pusher>>,
) -> anyhow::Result<()> {
    if let Some(pusher) = pusher.clone() {
        let first = pusher.clone();
        tasks.spawn(async move { jobs::push_logged(&first).await });
        tasks.spawn(central::deliver(pusher));
    }
    let privacy = app.config.privacy.clone();
    let mut scheduler = jobs::start(app.store.clone(), salts, privacy, ledger, pusher)
        .await
        .context("cannot start the job scheduler")?;
    tasks.spawn_until_stopped(|stop| async move {
        stop.cancelled().await;
        if let Err(err) = scheduler.shutdown().await {
            tracing::warn!(error = %err, "the job scheduler did not stop cleanly");
        }
    });
    Ok(())
}

/// What the edge needs before the store opens: the TLS settings (a certificate from files,
/// reloaded on SIGHUP, or one kept by ACME) and the country database.
struct Edge {
    tls: Option<Arc<rustls::ServerConfig>>,
    countries: Option<Arc<Countries>>,
    acme: Option<Arc<http::acme::AcmeResolver>>,
}

fn edge(config: &Config, tasks: &mut Tasks) -> anyhow::Result<Edge> {
    let resolver = match &config.server.tls {
        Some(files) => Some(
            http::tls::CertResolver::load(files)
                .map_err(|err| anyhow::anyhow!("{}: {err}", config.locate(err.config_key())))?,
        ),
        None => None,
    };
    // Read again here: the file may have changed since the configuration was checked.
    let countries = match &config.privacy.geoip_db {
        Some(path) => {
            let countries =
                Countries::open(path).with_context(|| config.locate("privacy.geoip_db"))?;
            tracing::info!(database = %countries.describe(), "resolving each address's country");
            Some(Arc::new(countries))
        }
        None => None,
    };
    tasks.spawn(reload_on_sighup(resolver.clone(), countries.clone())?);
    let acme = config.server.acme.as_ref().map(|settings| {
        let acme = http::acme::AcmeResolver::start(settings);
        tasks.spawn(http::acme::keep_certified(settings.clone(), acme.clone()));
        acme
    });
    let tls = match &acme {
        Some(acme) => Some(http::tls::acme_server_config(acme.clone())?),
        None => resolver.map(http::tls::server_config).transpose()?,
    };
    Ok(Edge {
        tls,
        countries,
        acme,
    })
}

/// The client of `[central]`, if configured: its settings are checked before anything opens.
fn central_client(config: &Config) -> anyhow::Result<Option<central::Central>> {
    let Some(settings) = &config.central else {
        return Ok(None);
    };
    central::Central::new(settings).map(Some).map_err(|err| {
        anyhow::anyhow!(
            "{}: cannot set up pushing to the central platform: {err}",
            config.locate(err.config_key())
        )
    })
}

/// `None` without a `[central]` section: nothing is pushed. In a cluster, one node pushes the
/// merged documents (`cluster.push`) and the others nothing, so no count is sent twice.
fn pusher(
    central: Option<central::Central>,
    cluster: Option<Arc<cluster::Cluster>>,
    app: &App,
) -> Option<Arc<central::Pusher>> {
    let pushes = app
        .config
        .cluster
        .as_ref()
        .is_none_or(|cluster| cluster.push);
    if central.is_some() && !pushes {
        tracing::info!(
            "not pushing: the cluster's node with cluster.push = true pushes the merged documents"
        );
    }
    central.filter(|_| pushes).map(|central| {
        tracing::info!(endpoint = %central.endpoint(), "pushing aggregates to the central platform");
        let (store, config) = (app.store.clone(), app.config.clone());
        let pusher =
            central::Pusher::new(central, store, config, app.metrics.clone(), app.signer.clone());
        Arc::new(pusher.merging(cluster))
    })
}

fn cluster(config: &Config) -> anyhow::Result<Option<Arc<cluster::Cluster>>> {
    let Some(settings) = &config.cluster else {
        return Ok(None);
    };
    let cluster = cluster::Cluster::new(settings).map_err(|err| {
        anyhow::anyhow!(
            "{}: cannot set up the cluster's peers: {err}",
            config.locate(&err.config_key())
        )
    })?;
    tracing::info!(
        node = cluster.node(),
        peers = settings.peers.len(),
        "merging the cluster's nodes into one view"
    );
    Ok(Some(Arc::new(cluster)))
}

/// Opens the store in the claimed folder, purges what expired while the daemon was down (it
/// must not serve expired data or salts) and makes the first salt if due.
async fn open_store(
    config: &Arc<Config>,
    keys: KeySources,
    lock: store::FolderLock,
    countries: Option<Arc<Countries>>,
) -> anyhow::Result<OpenedStore> {
    let key = DbKey::resolve(&config.storage.key_file, &keys)
        .map_err(|err| anyhow::anyhow!("{}: {err}", config.locate("storage.key_file")))?;
    let opening = config.clone();
    let opened = tokio::task::spawn_blocking(move || {
        OpenedStore::open_locked(&opening, lock, key, countries)
    })
    .await
    .context("the store opener panicked")??;
    let (store, salts) = (&opened.store, &opened.salts);
    jobs::purge(store, salts, &config.privacy, unix_now())
        .await
        .context("the retention purge at start failed")?;
    jobs::rotate_salt_if_due(store, salts, &config.privacy, unix_now())
        .await
        .context("cannot create the first salt")?;
    Ok(opened)
}

/// Saves the refusal counts beside the database every `jobs::REFUSALS_SAVE_EVERY`, for
/// `tracks-collector stats`; started with the daemon, stopped with it.
async fn save_refusals(metrics: Arc<Metrics>, path: std::path::PathBuf) {
    let since = unix_now();
    let mut saved = None;
    let mut ticks = tokio::time::interval(jobs::REFUSALS_SAVE_EVERY);
    loop {
        ticks.tick().await;
        saved = jobs::save_refusals(&metrics, &path, since, unix_now(), saved);
    }
}

/// Renders the days of the retention window once at the start, off the request path, so that
/// the dashboard's first load and the first pull find them rendered (`attribution::rendered`).
/// Stops between two days when the daemon does.
async fn render_the_window(app: Arc<App>, stop: CancellationToken) {
    let started = std::time::Instant::now();
    let rendering = tokio::task::spawn_blocking(move || {
        let now = unix_now();
        let (from, to) = attribution::retention_days(&app.config, now);
        let query = attribution::Query {
            from,
            to,
            game: None,
        };
        let reader = app.store.reader()?;
        app.rendered
            .prepare(&reader, &app.config, &query, &|| stop.is_cancelled())
    });
    match rendering.await {
        Ok(Ok(days)) => tracing::info!(
            days,
            secs = started.elapsed().as_secs_f64(),
            "rendered the aggregates document's days of the retention window"
        ),
        Ok(Err(err)) => tracing::warn!(
            error = %err,
            "cannot render the aggregates document's days ahead; each read renders them"
        ),
        Err(err) => tracing::error!(error = %err, "rendering the aggregates' days panicked"),
    }
}

/// Drops the rate buckets of quiet clients every few seconds, so their memory follows the
/// clients of the last moments: each visit from an address of its own makes a bucket, and a
/// minute of a launch's (or a botnet's) new addresses held 1.3 M of them, about 50 MB.
async fn forget_idle_clients(app: Arc<App>) {
    let mut ticks = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        ticks.tick().await;
        app.ingest.forget_idle_clients();
    }
}

/// `systemctl reload` sends SIGHUP: the TLS certificate (Let's Encrypt renewals) and the
/// country database (a weekly `geoipupdate`) are read again, for the connections and lookups
/// that follow; a bad new file keeps the old one in use and says why.
fn reload_on_sighup(
    resolver: Option<Arc<http::tls::CertResolver>>,
    countries: Option<Arc<Countries>>,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    // Handled even with nothing to reload: SIGHUP's default would end the daemon.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            notify::reloading();
            if let Some(resolver) = &resolver {
                match resolver.reload() {
                    Ok(()) => tracing::info!("reloaded the TLS certificate"),
                    Err(err) => tracing::error!(error = %err, "kept the old TLS certificate"),
                }
            }
            if let Some(countries) = &countries {
                // Reading and verifying a database file takes a moment: not on the async
                // threads that serve requests.
                let reloading = countries.clone();
                match tokio::task::spawn_blocking(move || reloading.reload()).await {
                    Ok(Ok(database)) => {
                        tracing::info!(%database, "reloaded the country database")
                    }
                    Ok(Err(err)) => {
                        tracing::error!(error = %err, "kept the old country database")
                    }
                    Err(err) => tracing::error!(
                        error = %err,
                        "kept the old country database: its reload did not finish"
                    ),
                }
            }
            notify::ready("serving; reloaded");
        }
    })
}
