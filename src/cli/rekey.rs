//! Edge: `rekey`, the database re-encrypted with a new key, and the old key's place updated.

use std::path::PathBuf;

use super::common::{Failure, reading_config};
use crate::store::{DbKey, KeySources};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A file holding the new key: 64 hex characters, mode 0600
    #[arg(long, value_name = "FILE")]
    new_key_file: PathBuf,
}

pub(super) fn run(explicit: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let new_key_file = args.new_key_file.as_path();
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
