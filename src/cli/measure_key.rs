//! Edge: `token new --game`, a game's measure key and the configuration line to paste.

use super::common::{Failure, new_secret};
use crate::config::SecretHash;

/// A game's measure key: the plain `measure_key` line, or with a name an entry of
/// `measure_keys`, the list that lets an old key work while a new one ships.
pub(super) fn run(game: &str, name: Option<&str>) -> Result<(), Failure> {
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
