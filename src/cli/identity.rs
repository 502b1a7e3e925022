//! Edge: `identity`, the collector's public key and fingerprint, or a new key (docs/api.md,
//! "Signed documents").

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::common::{Failure, carry_out, reading_config, unexpected};
use crate::control::{Command, Outcome};
use crate::identity::{self, Identity};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<IdentityAction>,
}

#[derive(Debug, Subcommand)]
pub(super) enum IdentityAction {
    /// Make a new key; the ledger records the change, signed by the old key and the new one
    #[command(after_help = "Example:\n  tracks-collector identity rotate")]
    Rotate,
}

pub(super) fn run(explicit: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    match args.action {
        None => {
            let path = identity::key_path(&config.storage.path);
            let identity = Identity::load(&path).context(
                "no identity yet: it is made at the first start of `serve` (or by `init`)",
            )?;
            let public = identity.public_key();
            println!("algorithm    ed25519");
            println!("public key   {}", hex::encode(public));
            println!("fingerprint  {}", identity::fingerprint(&public));
            println!("key file     {}", path.display());
            Ok(())
        }
        Some(IdentityAction::Rotate) => {
            let Outcome::IdentityRotated { seq, fingerprint } =
                carry_out(config, Command::RotateIdentity)?
            else {
                return Err(unexpected());
            };
            println!(
                "new identity {fingerprint}; ledger row {seq} records the change, signed by the \
                 old key and the new one"
            );
            Ok(())
        }
    }
}
