//! Edge: `token new`, an API token and the configuration lines to paste (with `--game`, a
//! measure key instead: `measure_key`).

use clap::{Subcommand, ValueEnum};

use super::common::{Failure, new_secret};
use super::measure_key;
use crate::config::SecretHash;

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Print a fresh secret once, with the configuration lines to paste
    #[command(
        after_help = "Examples:\n  tracks-collector token new --name central-pull --scope aggregates\n  tracks-collector token new --name ops --scope forget --scope metrics\n  # the token another node of the cluster reads this one with\n  tracks-collector token new --name node2 --scope peer\n  # a measure key for [[games]]; a named one for measure_keys, to rotate keys\n  tracks-collector token new --game my-game\n  tracks-collector token new --game my-game --name build-2026-12"
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
pub(crate) enum ScopeArg {
    Aggregates,
    Forget,
    Metrics,
    /// Another node of the cluster reading this one's rows ([cluster])
    Peer,
}

pub(super) fn run(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::New { name, scopes, game } => new(name, &scopes, game),
    }
}

fn new(name: Option<String>, scopes: &[ScopeArg], game: Option<String>) -> Result<(), Failure> {
    if let Some(game) = game {
        return measure_key::run(&game, name.as_deref());
    }
    let name = name.unwrap_or_default();
    let token = new_secret("tc");
    let mut scope_names: Vec<&str> = scopes
        .iter()
        .map(|scope| match scope {
            ScopeArg::Aggregates => "aggregates",
            ScopeArg::Forget => "forget",
            ScopeArg::Metrics => "metrics",
            ScopeArg::Peer => "peer",
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
