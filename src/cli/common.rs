//! Edge: the command line, what the commands share: the failure and its exit code, the
//! configuration a command reads, the database it opens, the writes it hands to the store's
//! owner, and fresh secrets.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::ValueEnum;

use crate::config::{Config, DEFAULT_CONFIG_PATH, SecretHash, ZERO_CONFIG_DIR};
use crate::control::{self, ControlError, Outcome, Owner};
use crate::store::{DbKey, FolderLock, KeySources};

/// A failure and the exit code it earns: 2 for usage and configuration, 1 for the rest.
#[derive(Debug)]
pub(super) struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub(super) fn config(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

/// How `subject`, `ledger` and `stats` print: for a person, or for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum OutputFormat {
    Table,
    Json,
}

/// The configuration file to use, if any: `--config`/`TRACKS_CONFIG`, else the packaged
/// default when it exists.
pub(super) fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        default.exists().then_some(default)
    })
}

pub(super) fn load_config(explicit: Option<PathBuf>) -> Result<Option<Config>, Failure> {
    match config_path(explicit) {
        Some(path) => Config::load(&path).map(Some).map_err(Failure::config),
        None => Ok(None),
    }
}

/// The configuration of a command that reads the database: the file, or the zero-config
/// instance's folder.
pub(super) fn reading_config(explicit: Option<PathBuf>) -> Result<Config, Failure> {
    Ok(match load_config(explicit)? {
        Some(config) => config,
        None => Config::zero_config(
            Path::new(ZERO_CONFIG_DIR),
            SecretHash::of(b""),
            SecretHash::of(b""),
        ),
    })
}

pub(super) fn open_reader(config: &Config) -> Result<crate::store::Reader, Failure> {
    let key = DbKey::resolve(&config.storage.key_file, &KeySources::from_env())?;
    Ok(crate::store::Reader::open(&config.storage.path, &key)?)
}

/// Carries out a write: by the running daemon, the store's one owner, when one holds the data
/// folder; else here, holding the folder's lock meanwhile, with the daemon's own code.
pub(super) fn carry_out(config: Config, command: control::Command) -> Result<Outcome, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let path = config.storage.path.clone();
    let outcome = match FolderLock::take(&path) {
        Ok(lock) => {
            let key = DbKey::resolve(&config.storage.key_file, &KeySources::from_env())?;
            let crate::ingest::OpenedStore { store, salts, .. } =
                crate::ingest::OpenedStore::open_locked(&config, lock, key, None)?;
            let owner = Owner::with_identity(std::sync::Arc::new(config), store.clone(), salts)
                .context("cannot load the collector's identity")?;
            let outcome = runtime.block_on(control::execute(&owner, command, crate::unix_now()));
            store.close();
            outcome
        }
        Err(crate::store::StoreError::Locked { .. }) => {
            runtime.block_on(control::send(&path, &command))
        }
        Err(err) => return Err(err.into()),
    };
    outcome.map_err(|err| match err {
        ControlError::Refused(message) => Failure::config(anyhow::anyhow!(message)),
        other => other.into(),
    })
}

/// An outcome of another command than the one sent: a daemon of another version.
pub(super) fn unexpected() -> Failure {
    anyhow::anyhow!("the daemon answered another command than the one sent (a different version?)")
        .into()
}

/// A random secret: a short prefix saying what it is, then 256 bits in hex.
pub(super) fn new_secret(prefix: &str) -> String {
    let bytes = crate::privacy::salt::generate_key().unwrap_or_else(|err| {
        // Without an OS random source no secret can be made; there is nothing to fall back to.
        eprintln!("error: the OS random source failed: {err}");
        std::process::exit(1)
    });
    format!("{prefix}_{}", hex::encode(bytes))
}

pub(super) fn create_private_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}
