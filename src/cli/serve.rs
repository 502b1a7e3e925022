//! Edge: `serve`, the daemon: its configuration (a file, or the zero-config local instance),
//! logging, the claim on the data folder, the port, and the signals that stop it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::common::{Failure, create_private_dir, load_config, new_secret};
use super::log_gate;
use crate::config::{
    Config, DEMO_GAME_ID, LogFormat, SecretHash, ZERO_CONFIG_ADMIN_FILE, ZERO_CONFIG_DIR,
};
use crate::store::{DbKey, KeySources};

pub(super) fn run(explicit: Option<PathBuf>) -> Result<(), Failure> {
    // The zero-config instance's admin token: its dashboard's address is printed once bound.
    let (config, admin_token) = match load_config(explicit)? {
        Some(config) => (config, None),
        None => {
            let (config, token) = zero_config(Path::new(ZERO_CONFIG_DIR))?;
            (config, Some(token))
        }
    };
    init_logging(&config)?;
    for key in &config.placeholders {
        tracing::warn!(
            at = %config.locate(key),
            "the example's placeholder hash is still in place: no key or token opens it \
             (`tracks-collector check-config` says what to paste)"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Claimed before the port is bound: a second daemon is told which one runs, not that
        // the port is busy.
        let claim = match crate::control::Claim::take(&config.storage.path).await {
            Ok(claim) => claim,
            Err(err @ crate::control::ClaimError::Running { .. }) => {
                return Err(Failure::config(err));
            }
            Err(err) => {
                return Err(anyhow::anyhow!("{}: {err}", config.locate("storage.path")).into());
            }
        };
        let listen = config.server.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        if let Some(token) = admin_token {
            eprintln!(
                "tracks-collector: the dashboard is at https://localhost:{}/dashboard#token={token}\n\
                 tracks-collector: serving in the foreground; stop it with Ctrl-C (the data \
                 stays in {ZERO_CONFIG_DIR})",
                listen.port()
            );
        }
        crate::run(
            config,
            KeySources::from_env(),
            listener,
            claim,
            shutdown_signal(),
        )
        .await?;
        Ok(())
    })
}

/// Completes on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

fn init_logging(config: &Config) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::prelude::*;
    // RUST_LOG, when set, wins over the file for a one-off debugging session.
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) => {
            EnvFilter::try_new(&directive).context("RUST_LOG is not a valid filter")?
        }
        Err(_) => {
            // The scheduler narrates every tick at info; only its warnings are news.
            let mut directive = config.log.level.clone();
            if !directive.contains("tokio_cron_scheduler") {
                directive.push_str(",tokio_cron_scheduler=warn");
            }
            EnvFilter::try_new(&directive).map_err(Failure::config)?
        }
    };
    // Colour codes only for a person at a terminal: journald would keep them as raw bytes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = match config.log.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    // A library's warning or error that repeats is written once, then counted: hostile clients
    // make h2 and rustls warn once per connection, which would flood the journal.
    let gate = log_gate::LogGate::default();
    tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(gate.clone())))
        .try_init()
        .map_err(|err| anyhow::anyhow!("cannot set up logging: {err}"))?;
    gate.summarize_every(crate::metrics::REFUSAL_LOG_INTERVAL);
    Ok(())
}

/// Prepares the zero-config local instance's state folder: database key, certificate and demo
/// measure key, each created once and reused afterwards.
fn zero_config(dir: &Path) -> Result<(Config, String), Failure> {
    create_private_dir(dir)?;
    let key_file = dir.join("db.key");
    let database = dir.join("collector.db");
    if !key_file.exists() {
        if database.exists() {
            return Err(anyhow::anyhow!(
                "{} exists but its key {} is missing; refusing to create a new key for it",
                database.display(),
                key_file.display()
            )
            .into());
        }
        DbKey::generate()?.write_new_file(&key_file)?;
    }
    let tls_dir = dir.join("tls");
    if !tls_dir.join("cert.pem").exists() {
        crate::http::tls::generate_self_signed(&tls_dir, &crate::http::tls::local_names())?;
    }
    let demo_key_path = dir.join(format!("{DEMO_GAME_ID}.measure-key"));
    let (demo_key, new_key) = kept_secret(&demo_key_path, "mk")?;
    if new_key {
        eprintln!(
            "tracks-collector: zero-config local instance; the measure key of game \
             \"{DEMO_GAME_ID}\" is {demo_key} (kept in {})",
            demo_key_path.display()
        );
    }
    let admin_path = dir.join(ZERO_CONFIG_ADMIN_FILE);
    let (admin_token, _) = kept_secret(&admin_path, "tc")?;
    eprintln!(
        "tracks-collector: zero-config local instance; the API token (scopes aggregates, \
         forget, metrics) is in {}",
        admin_path.display()
    );
    let config = Config::zero_config(
        dir,
        SecretHash::of(demo_key.as_bytes()),
        SecretHash::of(admin_token.as_bytes()),
    );
    Ok((config, admin_token))
}

/// The secret kept in `path` (0600), made with `prefix` and written there the first time;
/// whether it is new.
fn kept_secret(path: &Path, prefix: &str) -> Result<(String, bool), Failure> {
    if path.exists() {
        let secret = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return Ok((secret.trim().to_string(), false));
    }
    let secret = new_secret(prefix);
    crate::files::write_private_new(path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((secret, true))
}
