//! Edge: the command line. Parses arguments, finds the configuration, sets up logging, runs a
//! command, and is the one place that prints an error chain and picks the exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{
    Config, DEFAULT_CONFIG_PATH, DEMO_GAME_ID, INIT_LISTEN, LogFormat, SecretHash,
    ZERO_CONFIG_ADMIN_FILE, ZERO_CONFIG_DIR, ZERO_CONFIG_LISTEN,
};

mod ledger;
mod log_gate;
mod report;
use crate::control::{self, ControlError, Outcome, Owner};
use crate::store::{DbKey, FolderLock, KeySources};

// The texts that name a default are formatted from config's constants, so the help (and the
// man pages made from it) cannot drift from what the daemon does.
#[derive(Debug, Parser)]
#[command(
    name = "tracks-collector",
    version,
    about = "Privacy-first collector of landing-page visits and game opens",
    long_about = format!(
        "Privacy-first collector of landing-page visits and game opens.\n\n\
         Without --config, TRACKS_CONFIG or {DEFAULT_CONFIG_PATH}, `serve` runs a local \
         instance on https://{ZERO_CONFIG_LISTEN} with its state in ./{ZERO_CONFIG_DIR}."
    ),
    after_help = format!("Examples:\n  tracks-collector serve\n  tracks-collector --config {DEFAULT_CONFIG_PATH} check-config\n  tracks-collector token new --name central-pull --scope aggregates")
)]
pub struct Cli {
    // Not a doc comment: a doc comment cannot name DEFAULT_CONFIG_PATH.
    #[arg(
        long,
        global = true,
        env = "TRACKS_CONFIG",
        value_name = "PATH",
        help = format!(
            "The configuration file [default: {DEFAULT_CONFIG_PATH} if it exists, else the \
             zero-config local instance]"
        )
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector daemon
    #[command(
        after_help = format!("Examples:\n  tracks-collector serve\n  tracks-collector --config {DEFAULT_CONFIG_PATH} serve")
    )]
    Serve,
    /// Write a configuration, a database key and a self-signed certificate to a new folder
    #[command(
        after_help = "Example:\n  tracks-collector init --dir ./collector\n  tracks-collector --config ./collector/collector.toml serve"
    )]
    Init {
        /// The folder to create (must not contain a collector.toml yet)
        #[arg(long, default_value = "./tracks-collector", value_name = "DIR")]
        dir: PathBuf,
        /// The id of the game to configure
        #[arg(long, default_value = "my-game")]
        game: String,
    },
    /// Validate the configuration file and exit (0 = valid, 2 = invalid); warns about files
    /// `serve` could not read at start (certificate, database key, central token and CA)
    #[command(
        after_help = format!("Example:\n  tracks-collector --config {DEFAULT_CONFIG_PATH} check-config")
    )]
    CheckConfig,
    /// Create secrets: API tokens and measure keys
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print the aggregates of a day range: per campaign, its visits, players, conversion rate
    /// and returns; with --detail or as JSON/CSV, every row (what the central platform receives)
    #[command(
        after_help = "Examples:\n  # the last 7 days, one line per campaign\n  tracks-collector aggregates\n  tracks-collector aggregates --from 2026-11-01 --to 2026-11-21 --game my-game\n  # every row, by day, storefront, platform and device\n  tracks-collector aggregates --detail\n  tracks-collector aggregates --from 2026-11-20 --to 2026-11-20 --format csv"
    )]
    Aggregates {
        /// First day, YYYY-MM-DD (UTC) [default: six days before --to, so a week is shown]
        #[arg(long, value_name = "DAY")]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (UTC), inclusive [default: today]
        #[arg(long, value_name = "DAY")]
        to: Option<String>,
        /// Only this game (its traffic includes the visits that named no game)
        #[arg(long)]
        game: Option<String>,
        /// table: aligned for a terminal; json: the API's document; csv: one table of both kinds
        #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
        format: ReportFormat,
        /// In the table, every traffic and conversions row instead of one line per campaign
        #[arg(long)]
        detail: bool,
        /// With --format json: the document signed with the collector's identity and recorded
        /// in the ledger, as an envelope (docs/api.md, "Signed documents")
        #[arg(long)]
        signed: bool,
    },
    /// Delete one player's events and the visits linked to them (a data-subject request), and
    /// block the player: their later events are answered as accepted and dropped
    #[command(
        after_help = "Example:\n  tracks-collector forget --game my-game --user-id 76561198000000000"
    )]
    Forget {
        #[command(flatten)]
        player: PlayerArgs,
    },
    /// Lift the block a `forget` put on one player: their later events are stored again
    #[command(
        after_help = "Example:\n  tracks-collector unforget --game my-game --user-id 76561198000000000"
    )]
    Unforget {
        #[command(flatten)]
        player: PlayerArgs,
    },
    /// Show what is held about one player (a data request): their events and the campaign each
    /// was attributed to, and whether they are blocked; never an address or a pseudonym
    #[command(
        after_help = "Examples:\n  tracks-collector subject --game my-game --user-id 76561198000000000\n  tracks-collector subject --game my-game --user-id player-1 --format json"
    )]
    Subject {
        #[command(flatten)]
        player: PlayerArgs,
        /// How to print it: a table, or the JSON of GET /api/v1/subject
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Delete everything older than privacy.retention_days now (the daemon also does it hourly)
    #[command(
        after_help = "Examples:\n  tracks-collector purge --dry-run\n  tracks-collector purge"
    )]
    Purge {
        /// Print what would be deleted; delete nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the collector's public key and fingerprint, or rotate the key
    #[command(
        after_help = "Examples:\n  tracks-collector identity\n  tracks-collector identity rotate"
    )]
    Identity {
        #[command(subcommand)]
        action: Option<ledger::IdentityAction>,
    },
    /// List what left the server (the signed ledger), check it, or show a kept document
    #[command(
        after_help = "Examples:\n  tracks-collector ledger\n  tracks-collector ledger verify\n  tracks-collector ledger verify --document pushed.json\n  tracks-collector ledger show 12"
    )]
    Ledger {
        #[command(subcommand)]
        action: Option<ledger::LedgerAction>,
        /// table: for a person; json: every field, for scripts
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Start a new salt now (a running daemon picks it up within a minute)
    #[command(after_help = "Example:\n  tracks-collector rotate-salt")]
    RotateSalt,
    /// Re-encrypt the database with a new key (stop the daemon first)
    #[command(
        after_help = "Example:\n  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > new.key\n  chmod 600 new.key\n  systemctl stop tracks-collector\n  tracks-collector rekey --new-key-file new.key\n  systemctl start tracks-collector"
    )]
    Rekey {
        /// A file holding the new key: 64 hex characters, mode 0600
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Show what the database holds (counts, ages, sizes); no personal data
    #[command(
        after_help = "Examples:\n  tracks-collector stats\n  tracks-collector stats --format json"
    )]
    Stats {
        /// table: for a person; json: for scripts and monitoring
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Write the man pages (one per command) to a folder; the .deb ships them
    #[command(hide = true)]
    Manpage {
        /// The folder to write the pages to
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// One player of one game, as `forget`, `unforget` and `subject` name them.
#[derive(Debug, clap::Args)]
pub struct PlayerArgs {
    /// The game's id, as in [[games]]
    #[arg(long)]
    pub game: String,
    /// The player's id as the game sends it to /measure
    #[arg(long = "user-id", value_name = "ID")]
    pub user_id: String,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh secret once, with the configuration lines to paste
    #[command(
        after_help = "Examples:\n  tracks-collector token new --name central-pull --scope aggregates\n  tracks-collector token new --name ops --scope forget --scope metrics\n  # a measure key for [[games]]; a named one for measure_keys, to rotate keys\n  tracks-collector token new --game my-game\n  tracks-collector token new --game my-game --name build-2026-12"
    )]
    New {
        /// The token's name in [[tokens]]; with --game, the measure key's name in metrics
        #[arg(long, required_unless_present = "game")]
        name: Option<String>,
        /// What the token may do; repeat for several
        #[arg(long = "scope", value_enum, required_unless_present = "game")]
        scopes: Vec<ScopeArg>,
        /// Make a measure key for this game instead of an API token
        #[arg(long, value_name = "GAME")]
        game: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    Aggregates,
    Forget,
    Metrics,
}

/// Days `aggregates` shows without --from.
const DEFAULT_REPORT_DAYS: u64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// A failure and the exit code it earns: 2 for usage and configuration, 1 for the rest.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    fn config(error: impl Into<anyhow::Error>) -> Failure {
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", chain_text(&failure.error));
            ExitCode::from(failure.code)
        }
    }
}

/// The error and its causes, `: `-joined, each said once: many errors already end with their
/// cause's words (`cannot read …: No such file or directory`), which `{:#}` would repeat.
fn chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let words = cause.to_string();
        if text.contains(&words) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&words);
    }
    text
}

fn execute(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve => serve(cli.config),
        Command::Init { dir, game } => init(&dir, &game),
        Command::CheckConfig => check_config(cli.config),
        Command::Token(TokenCommand::New { name, scopes, game }) => token_new(name, &scopes, game),
        Command::Stats { format } => stats(cli.config, format),
        Command::Manpage { dir } => manpages(&dir),
        Command::Forget { player } => forget(cli.config, &player),
        Command::Unforget { player } => unforget(cli.config, &player),
        Command::Subject { player, format } => subject(cli.config, &player, format),
        Command::Purge { dry_run } => purge(cli.config, dry_run),
        Command::RotateSalt => rotate_salt(cli.config),
        Command::Rekey { new_key_file } => rekey(cli.config, &new_key_file),
        Command::Aggregates {
            from,
            to,
            game,
            format,
            detail,
            signed,
        } => {
            if signed && format != ReportFormat::Json {
                return Err(Failure::config(anyhow::anyhow!(
                    "--signed signs the JSON document: add --format json"
                )));
            }
            aggregates(
                cli.config,
                from,
                to,
                game.as_deref(),
                format,
                detail,
                signed,
            )
        }
        Command::Identity { action } => ledger::identity(cli.config, action),
        Command::Ledger { action, format } => ledger::ledger(cli.config, action, format),
    }
}

/// The configuration file to use, if any: `--config`/`TRACKS_CONFIG`, else the packaged
/// default when it exists.
fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        default.exists().then_some(default)
    })
}

fn load_config(explicit: Option<PathBuf>) -> Result<Option<Config>, Failure> {
    match config_path(explicit) {
        Some(path) => Config::load(&path).map(Some).map_err(Failure::config),
        None => Ok(None),
    }
}

fn serve(explicit: Option<PathBuf>) -> Result<(), Failure> {
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

fn create_private_dir(dir: &Path) -> Result<(), Failure> {
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

fn init(dir: &Path, game: &str) -> Result<(), Failure> {
    let config_file = dir.join("collector.toml");
    if config_file.exists() {
        return Err(Failure::config(anyhow::anyhow!(
            "{} already exists; refusing to overwrite it",
            config_file.display()
        )));
    }
    create_private_dir(dir)?;
    create_private_dir(&dir.join("data"))?;
    let key_file = dir.join("data").join("db.key");
    if !key_file.exists() {
        DbKey::generate()?.write_new_file(&key_file)?;
    }
    let identity = crate::identity::Identity::load_or_create(&crate::identity::key_path(
        &dir.join("data").join("collector.db"),
    ))
    .context("cannot make the collector's identity")?;
    let generated =
        crate::http::tls::generate_self_signed(&dir.join("tls"), &crate::http::tls::local_names())?;
    let measure_key = new_secret("mk");
    // `{listen}` before `{game}`, so the user's game id is not searched for it.
    let text = INIT_TEMPLATE
        .replace("{listen}", &INIT_LISTEN.to_string())
        .replace("{game}", game)
        .replace(
            "{measure_hash}",
            &SecretHash::of(measure_key.as_bytes()).to_config_string(),
        );
    crate::files::write_private_new(&config_file, text.as_bytes())
        .with_context(|| format!("cannot write {}", config_file.display()))?;
    // The file must load as written; a template error is ours, not the user's.
    Config::load(&config_file).map_err(Failure::config)?;
    println!("Created {}:", dir.display());
    println!("  collector.toml      the configuration (edit listen, allowed_origins, games)");
    println!("  data/db.key         the database key (back it up: without it the data is lost)");
    println!(
        "  data/identity.key   the key that signs what leaves (fingerprint {})",
        crate::identity::fingerprint(&identity.public_key())
    );
    println!(
        "  tls/                a self-signed certificate; clients trust {}",
        generated.ca.display()
    );
    println!();
    println!("The measure key of game \"{game}\" (shown once; only its hash is stored):");
    println!("  {measure_key}");
    println!();
    println!("Start it with:");
    println!(
        "  tracks-collector --config {} serve",
        config_file.display()
    );
    Ok(())
}

const INIT_TEMPLATE: &str = r#"# tracks-collector configuration, written by `tracks-collector init`.
# Every key is described in collector.example.toml; relative paths are relative to this file.

[server]
listen = "{listen}"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
trusted_proxies = []
allowed_origins = []

[storage]
path = "data/collector.db"
key_file = "data/db.key"

[[games]]
id = "{game}"
measure_key = "{measure_hash}"
"#;

fn check_config(explicit: Option<PathBuf>) -> Result<(), Failure> {
    let Some(path) = config_path(explicit) else {
        return Err(Failure::config(anyhow::anyhow!(
            "no configuration file: pass --config PATH or set TRACKS_CONFIG ({DEFAULT_CONFIG_PATH} does not exist)"
        )));
    };
    let config = Config::load(&path).map_err(Failure::config)?;
    if !config.placeholders.is_empty() {
        let lines: Vec<String> = config
            .placeholders
            .iter()
            .map(|key| {
                format!(
                    "  {}: {}",
                    config.locate(key),
                    placeholder_fix(&config, key)
                )
            })
            .collect();
        return Err(Failure::config(anyhow::anyhow!(
            "{} still holds the example's placeholder hash (all zeros), which no key or token \
             matches:\n{}",
            path.display(),
            lines.join("\n")
        )));
    }
    let warnings = start_blockers(&config);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{}: valid ({} game(s), {} link(s), {} token(s), central push {}){}",
        path.display(),
        config.games.len(),
        config.links.len(),
        config.tokens.len(),
        if config.central.is_some() {
            "on"
        } else {
            "off"
        },
        match warnings.len() {
            0 => String::new(),
            n => format!(
                "; {n} warning(s): `serve` would stop at start as things are (as this user)"
            ),
        }
    );
    Ok(())
}

/// The command that prints the line to paste over the placeholder at `key`.
fn placeholder_fix(config: &Config, key: &str) -> String {
    let index = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|rest| rest.split(']').next())
            .and_then(|number| number.parse::<usize>().ok())
    };
    if let Some(game) = index("games[").and_then(|i| config.games.get(i)) {
        return format!(
            "run `tracks-collector token new --game {}`, paste the line it prints here, and put \
             the key in the game's build",
            game.id
        );
    }
    if let Some(token) = index("tokens[").and_then(|i| config.tokens.get(i)) {
        let scopes: Vec<String> = token
            .scopes
            .iter()
            .map(|scope| format!("--scope {}", scope.as_str()))
            .collect();
        return format!(
            "run `tracks-collector token new --name {} {}` and paste the hash it prints here",
            token.name,
            scopes.join(" ")
        );
    }
    "paste the hash `tracks-collector token new` prints here".to_string()
}

/// The files the configuration names that `serve` reads at start, checked as this user: the
/// file is valid either way (a package installs it before its certificate exists, and the
/// daemon may run as another user), so these are warnings, not errors.
fn start_blockers(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(files) = &config.server.tls
        && let Err(err) = crate::http::tls::CertResolver::load(files)
    {
        warnings.push(format!("{}: {err}", config.locate(err.config_key())));
    }
    if let Err(err) = DbKey::resolve(&config.storage.key_file, &KeySources::from_env()) {
        warnings.push(format!("{}: {err}", config.locate("storage.key_file")));
    }
    if let Some(central) = &config.central
        && let Err(err) = crate::central::Central::new(central)
    {
        warnings.push(format!("{}: {err}", config.locate(err.config_key())));
    }
    warnings
}

/// A game's measure key: the plain `measure_key` line, or with a name an entry of
/// `measure_keys`, the list that lets an old key work while a new one ships.
fn measure_key_new(game: &str, name: Option<&str>) -> Result<(), Failure> {
    if let Some(name) = name
        && !crate::config::is_lower_name(name)
    {
        return Err(Failure::config(anyhow::anyhow!(
            "--name: a measure key's name is 1 to 64 characters of {} (got {name:?})",
            crate::config::NAME_CHARACTERS
        )));
    }
    let key = new_secret("mk");
    let hash = SecretHash::of(key.as_bytes()).to_config_string();
    let what = name.map(|name| format!(" \"{name}\"")).unwrap_or_default();
    println!(
        "Measure key{what} for game \"{game}\" (shown once; builds send it as `Authorization: Bearer <key>`):"
    );
    println!("  {key}");
    println!();
    match name {
        None => {
            println!("Add to the game's [[games]] entry:");
            println!("measure_key = \"{hash}\"");
        }
        Some(name) => {
            println!(
                "Add to the game's [[games]] entry, in `measure_keys` (the keys it replaces keep \
                 working until you remove them; restart to apply):"
            );
            println!("measure_keys = [{{ name = \"{name}\", hash = \"{hash}\" }}]");
        }
    }
    Ok(())
}

/// A random secret: a short prefix saying what it is, then 256 bits in hex.
fn new_secret(prefix: &str) -> String {
    let bytes = crate::privacy::salt::generate_key().unwrap_or_else(|err| {
        // Without an OS random source no secret can be made; there is nothing to fall back to.
        eprintln!("error: the OS random source failed: {err}");
        std::process::exit(1)
    });
    format!("{prefix}_{}", hex::encode(bytes))
}

fn token_new(
    name: Option<String>,
    scopes: &[ScopeArg],
    game: Option<String>,
) -> Result<(), Failure> {
    if let Some(game) = game {
        return measure_key_new(&game, name.as_deref());
    }
    let name = name.unwrap_or_default();
    let token = new_secret("tc");
    let mut scope_names: Vec<&str> = scopes
        .iter()
        .map(|scope| match scope {
            ScopeArg::Aggregates => "aggregates",
            ScopeArg::Forget => "forget",
            ScopeArg::Metrics => "metrics",
        })
        .collect();
    scope_names.dedup();
    println!("Token \"{name}\" (shown once; only its hash goes into the configuration):");
    println!("  {token}");
    println!();
    println!("Paste into the configuration:");
    println!("[[tokens]]");
    println!("name = \"{name}\"");
    println!(
        "scopes = [{}]",
        scope_names
            .iter()
            .map(|scope| format!("\"{scope}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "hash = \"{}\"",
        SecretHash::of(token.as_bytes()).to_config_string()
    );
    Ok(())
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

fn aggregates(
    explicit: Option<PathBuf>,
    from: Option<String>,
    to: Option<String>,
    game: Option<&str>,
    format: ReportFormat,
    detail: bool,
    signed: bool,
) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let now = crate::unix_now();
    let to = to.unwrap_or_else(|| crate::clock::utc_day(now));
    let from = match from {
        Some(from) => from,
        // A week ending on `to`; a `to` that is no day is refused by the query below.
        None => crate::clock::parse_day(&to)
            .and_then(|last| last.checked_sub_days(chrono::Days::new(DEFAULT_REPORT_DAYS - 1)))
            .map_or_else(|| to.clone(), |first| first.to_string()),
    };
    let query = crate::attribution::Query::parse(Some(&from), Some(&to), game, &config, now)
        .map_err(Failure::config)?;
    let document = crate::attribution::read_document(&open_reader(&config)?, &config, &query, now)?;
    match format {
        ReportFormat::Json if signed => {
            let bytes = serde_json::to_vec(&document)?;
            let envelope = ledger::sign_export(config, &query, &bytes)?;
            println!("{}", serde_json::to_string_pretty(&envelope)?);
        }
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&document)?),
        ReportFormat::Table if detail => {
            print!("{}", report::table(&document, report::terminal_width()))
        }
        ReportFormat::Table => print!(
            "{}",
            report::summary_table(
                &document,
                crate::clock::day_of(now),
                report::terminal_width()
            )
        ),
        ReportFormat::Csv => print!("{}", report::csv(&document)),
    }
    Ok(())
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
            let store = crate::store::Store::open_locked(
                lock,
                &path,
                key,
                crate::link::LinkRules::new(&config.attribution),
                config.storage.cache_mib,
            )?;
            let salts = std::sync::Arc::new(std::sync::RwLock::new(crate::privacy::SaltRing::new(
                store.load_salts()?,
            )));
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

fn player_command(player: &PlayerArgs, forget: bool) -> control::Command {
    let (game, user_id) = (player.game.clone(), player.user_id.clone());
    if forget {
        control::Command::Forget { game, user_id }
    } else {
        control::Command::Unforget { game, user_id }
    }
}

fn forget(explicit: Option<PathBuf>, player: &PlayerArgs) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let Outcome::Forgotten { report } = carry_out(config, player_command(player, true))? else {
        return Err(unexpected());
    };
    println!(
        "deleted {} game event(s) and {} visit(s); the user id is blocked: its later events are \
         answered as accepted and dropped (`tracks-collector unforget` lifts the block)",
        report.measure, report.collect
    );
    Ok(())
}

fn unforget(explicit: Option<PathBuf>, player: &PlayerArgs) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let Outcome::Unforgotten { lifted } = carry_out(config, player_command(player, false))? else {
        return Err(unexpected());
    };
    if lifted {
        println!("lifted the block: the later events of this user id are stored again");
    } else {
        println!("this user id was not blocked; nothing changed");
    }
    Ok(())
}

/// An outcome of another command than the one sent: a daemon of another version.
pub(super) fn unexpected() -> Failure {
    anyhow::anyhow!("the daemon answered another command than the one sent (a different version?)")
        .into()
}

/// Reads the file directly: every count and record an answer is made of is committed there
/// (what the daemon holds in memory is only which visitors and addresses were seen), so the
/// answer is the API's at the same moment.
fn subject(
    explicit: Option<PathBuf>,
    player: &PlayerArgs,
    format: OutputFormat,
) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let reader = open_reader(&config)?;
    let report = match reader.block_key()? {
        Some(block_key) => {
            let salts = std::sync::Arc::new(std::sync::RwLock::new(crate::privacy::SaltRing::new(
                reader.salts()?,
            )));
            let target = crate::ingest::Ingest::new(&config, salts, block_key)
                .subject(&player.game, &player.user_id)
                .map_err(|err| Failure::config(anyhow::anyhow!(err)))?;
            reader.subject(&target.game, &target.users, &target.block)?
        }
        // No writer has opened the file yet: nothing is held, nobody is blocked.
        None => crate::store::SubjectReport {
            game: player.game.clone(),
            ..Default::default()
        },
    };
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!(
            "{}",
            report::subject_table(&report, report::terminal_width())
        ),
    }
    Ok(())
}

fn purge(explicit: Option<PathBuf>, dry_run: bool) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let now = crate::unix_now();
    let cutoff = now - i64::from(config.privacy.retention_days) * crate::clock::DAY_SECS;
    let (cutoff, report, verb) = if dry_run {
        (
            cutoff,
            open_reader(&config)?.purge_preview(cutoff)?,
            "would delete",
        )
    } else {
        // A running daemon purges by its own clock.
        let Outcome::Purged { cutoff, report } = carry_out(config, control::Command::Purge)? else {
            return Err(unexpected());
        };
        (cutoff, report, "deleted")
    };
    println!(
        "{verb} everything received before {}: {} visit(s), {} game event(s), {} salt(s), {} roll-up cell(s)",
        crate::clock::rfc3339(cutoff),
        report.visits,
        report.events,
        report.salts,
        report.cells
    );
    Ok(())
}

fn rotate_salt(explicit: Option<PathBuf>) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let Outcome::Rotated = carry_out(config, control::Command::RotateSalt)? else {
        return Err(unexpected());
    };
    println!("a new salt is current");
    Ok(())
}

fn rekey(explicit: Option<PathBuf>, new_key_file: &Path) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let (old, origin) =
        DbKey::resolve_with_origin(&config.storage.key_file, &KeySources::from_env())?;
    let new = DbKey::read_file(new_key_file).map_err(Failure::config)?;
    if new == old {
        return Err(Failure::config(anyhow::anyhow!(
            "{} holds the key already in use",
            new_key_file.display()
        )));
    }
    match crate::store::rekey(&config.storage.path, &old, &new) {
        Ok(()) => {}
        // Not sent to the daemon: rekeying rewrites every page through the only connection,
        // and the daemon would have to be given the new key besides.
        Err(crate::store::StoreError::Locked { folder }) => {
            return Err(anyhow::anyhow!(
                "a running daemon owns {}: stop it (`systemctl stop tracks-collector`), rekey, \
                 then start it again",
                folder.display()
            )
            .into());
        }
        Err(err) => return Err(err.into()),
    }
    println!(
        "{} is now encrypted with the new key; the old key no longer opens it",
        config.storage.path.display()
    );
    match origin {
        crate::store::KeyOrigin::File(path) => {
            new.replace_file(&path)?;
            println!(
                "updated the key file {}; {} can be deleted",
                path.display(),
                new_key_file.display()
            );
        }
        crate::store::KeyOrigin::Credential(path) => println!(
            "now install the new key as the systemd credential (it was read from {})",
            path.display()
        ),
        crate::store::KeyOrigin::Environment => {
            println!("now set {} to the new key", crate::store::key::KEY_ENV)
        }
    }
    Ok(())
}

fn stats(explicit: Option<PathBuf>, format: OutputFormat) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let stats = open_reader(&config)?.stats()?;
    // Saved by a running daemon (or the last one) beside the database.
    let refusals = crate::metrics::RefusalReport::load(
        &config
            .storage
            .path
            .with_file_name(crate::metrics::REFUSALS_FILE),
    );
    match format {
        OutputFormat::Json => {
            let mut json = serde_json::to_value(&stats)?;
            json["refusals"] = serde_json::to_value(&refusals)?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        OutputFormat::Table => {
            let age = |time: Option<i64>| match time {
                Some(time) => format!("{} ago", human_duration(crate::unix_now() - time)),
                None => "-".into(),
            };
            println!("database        {}", config.storage.path.display());
            println!("visits          {}", stats.visits);
            println!("game events     {}", stats.events);
            println!("live salts      {}", stats.salts);
            println!("current salt    {}", age(stats.current_salt_created_at));
            println!("oldest record   {}", age(stats.oldest_record));
            println!("newest record   {}", age(stats.newest_record));
            println!(
                "file size       {} bytes (+ {} bytes WAL)",
                stats.database_bytes, stats.wal_bytes
            );
            let outbox = &stats.outbox;
            match &config.central {
                Some(central) => println!("central push    {}", central.url),
                None => println!("central push    off (no [central] section)"),
            }
            println!(
                "outbox          {} pending (oldest queued {}), {} refused for good",
                outbox.pending,
                age(outbox.oldest_pending_at),
                outbox.rejected
            );
            println!("last success    {}", age(outbox.last_success_at));
            if let Some(error) = &outbox.last_error {
                println!("last failure    {error}");
            }
            match &refusals {
                None => println!("refusals        - (no daemon has saved any here)"),
                Some(report) => {
                    let total: u64 = report.refusals.iter().map(|r| r.count).sum();
                    println!(
                        "refusals        {total} since the daemon started {} (as of {})",
                        age(Some(report.since)),
                        age(Some(report.as_of))
                    );
                    for refusal in &report.refusals {
                        println!(
                            "  {:<14}{:<32}{:>8}",
                            refusal.endpoint, refusal.reason, refusal.count
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// The man pages, generated from the same definitions as `--help` so the two cannot disagree.
/// `packaging/man/` is this output, committed (a test keeps it current).
fn manpages(dir: &Path) -> Result<(), Failure> {
    use clap::CommandFactory as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
    Ok(())
}

fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Every option of every command says what it is for, and every command shows an example:
    /// `--help` and the man pages made from it are the sysadmin's manual.
    #[test]
    fn every_option_has_a_sentence_and_every_command_an_example() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                assert!(
                    help.split_whitespace().count() >= 3,
                    "`{path}` option {id} has no sentence in --help"
                );
            }
            let mut subcommands = command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
                .peekable();
            if subcommands.peek().is_none() {
                let after = command
                    .get_after_help()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                assert!(after.contains("Example"), "`{path}` has no example");
                // Pasted line by line: one whole command per line, never wrapped at 80 columns.
                for line in after.lines().skip(1) {
                    assert!(line.chars().count() <= 78, "`{path}`: {line:?} wraps at 80");
                    let line = line.trim_end();
                    assert!(
                        !line.ends_with("&&") && !line.ends_with('|') && !line.ends_with('\\'),
                        "`{path}`: {line:?} is half a command"
                    );
                }
            }
            for sub in subcommands {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        let mut cli = Cli::command();
        cli.build();
        check(&cli, "tracks-collector");
    }
}
