//! Edge: `check-config`, the file validated (exit 2 when it is not), and a warning for each
//! file `serve` could not read at start.

use std::path::PathBuf;

use super::common::{Failure, config_path};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::store::{DbKey, KeySources};

pub(super) fn run(explicit: Option<PathBuf>) -> Result<(), Failure> {
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
    if let Some(cluster) = &config.cluster
        && let Err(err) = crate::cluster::Cluster::new(cluster)
    {
        warnings.push(format!("{}: {err}", config.locate(&err.config_key())));
    }
    warnings
}
