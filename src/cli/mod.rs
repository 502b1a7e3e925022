//! Edge: the command line. Parses arguments, finds the configuration, sets up logging, runs a
//! command, and is the one place that prints an error chain and picks the exit code.
//!
//! Layout, as mini-redis's `cmd/`: one file per command, holding its arguments and its `run`
//! (`forget`, `unforget` and `subject`, which name a player alike, share `player`). `common`
//! holds what several commands share; `report` draws tables and CSV; `log_gate` keeps
//! repeated library warnings out of the journal. This file only parses and dispatches: no
//! command imports from it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::config::{DEFAULT_CONFIG_PATH, ZERO_CONFIG_DIR, ZERO_CONFIG_LISTEN};
use common::Failure;

mod aggregates;
mod check_config;
mod common;
mod identity;
mod init;
mod ledger;
mod log_gate;
mod manpages;
mod measure_key;
mod player;
mod purge;
mod rekey;
mod report;
mod rotate_salt;
mod serve;
mod stats;
mod token;

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
pub(crate) struct Cli {
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
pub(crate) enum Command {
    /// Run the collector daemon
    #[command(
        after_help = format!("Examples:\n  tracks-collector serve\n  tracks-collector --config {DEFAULT_CONFIG_PATH} serve")
    )]
    Serve,
    /// Write a configuration, a database key and a self-signed certificate to a new folder
    #[command(
        after_help = "Example:\n  tracks-collector init --dir ./collector\n  tracks-collector --config ./collector/collector.toml serve"
    )]
    Init(init::Args),
    /// Validate the configuration file and exit (0 = valid, 2 = invalid); warns about files
    /// `serve` could not read at start (certificate, database key, central token and CA)
    #[command(
        after_help = format!("Example:\n  tracks-collector --config {DEFAULT_CONFIG_PATH} check-config")
    )]
    CheckConfig,
    /// Create secrets: API tokens and measure keys
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Print the aggregates of a day range: per campaign, its visits, players, conversion rate
    /// and returns; with --detail or as JSON/CSV, every row (what the central platform receives)
    #[command(
        after_help = "Examples:\n  # the last 7 days, one line per campaign\n  tracks-collector aggregates\n  tracks-collector aggregates --from 2026-11-01 --to 2026-11-21 --game my-game\n  # every row, by day, storefront, platform, device, referrer and page\n  tracks-collector aggregates --detail\n  tracks-collector aggregates --from 2026-11-20 --to 2026-11-20 --format csv\n  # every node of the cluster in one view\n  tracks-collector aggregates --cluster"
    )]
    Aggregates(aggregates::Args),
    /// Delete one player's events and the visits linked to them (a data-subject request), and
    /// block the player: their later events are answered as accepted and dropped
    #[command(
        after_help = "Example:\n  tracks-collector forget --game my-game --user-id 76561198000000000"
    )]
    Forget(player::PlayerArgs),
    /// Lift the block a `forget` put on one player: their later events are stored again
    #[command(
        after_help = "Example:\n  tracks-collector unforget --game my-game --user-id 76561198000000000"
    )]
    Unforget(player::PlayerArgs),
    /// Show what is held about one player (a data request): their events and the campaign each
    /// was attributed to, and whether they are blocked; never an address or a pseudonym
    #[command(
        after_help = "Examples:\n  tracks-collector subject --game my-game --user-id 76561198000000000\n  tracks-collector subject --game my-game --user-id player-1 --format json"
    )]
    Subject(player::SubjectArgs),
    /// Delete everything older than privacy.retention_days now (the daemon also does it hourly)
    #[command(
        after_help = "Examples:\n  tracks-collector purge --dry-run\n  tracks-collector purge"
    )]
    Purge(purge::Args),
    /// Print the collector's public key and fingerprint, or rotate the key
    #[command(
        after_help = "Examples:\n  tracks-collector identity\n  tracks-collector identity rotate"
    )]
    Identity(identity::Args),
    /// List what left the server (the signed ledger), check it, or show a kept document
    #[command(
        after_help = "Examples:\n  tracks-collector ledger\n  tracks-collector ledger verify\n  tracks-collector ledger verify --document pushed.json\n  tracks-collector ledger show 12"
    )]
    Ledger(ledger::Args),
    /// Start a new salt now (a running daemon picks it up within a minute)
    #[command(after_help = "Example:\n  tracks-collector rotate-salt")]
    RotateSalt,
    /// Re-encrypt the database with a new key (stop the daemon first)
    #[command(
        after_help = "Example:\n  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > new.key\n  chmod 600 new.key\n  systemctl stop tracks-collector\n  tracks-collector rekey --new-key-file new.key\n  systemctl start tracks-collector"
    )]
    Rekey(rekey::Args),
    /// Show what the database holds (counts, ages, sizes); no personal data
    #[command(
        after_help = "Examples:\n  tracks-collector stats\n  tracks-collector stats --format json"
    )]
    Stats(stats::Args),
    /// Write the man pages (one per command) to a folder; the .deb ships them
    #[command(hide = true)]
    Manpage(manpages::Args),
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
    let config = cli.config;
    match cli.command {
        Command::Serve => serve::run(config),
        Command::Init(args) => init::run(args),
        Command::CheckConfig => check_config::run(config),
        Command::Token(command) => token::run(command),
        Command::Aggregates(args) => aggregates::run(config, args),
        Command::Forget(player) => player::forget(config, player),
        Command::Unforget(player) => player::unforget(config, player),
        Command::Subject(args) => player::subject(config, args),
        Command::Purge(args) => purge::run(config, args),
        Command::Identity(args) => identity::run(config, args),
        Command::Ledger(args) => ledger::run(config, args),
        Command::RotateSalt => rotate_salt::run(config),
        Command::Rekey(args) => rekey::run(config, args),
        Command::Stats(args) => stats::run(config, args),
        Command::Manpage(args) => manpages::run(args, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
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
