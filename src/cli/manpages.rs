//! Edge: `manpage`, the man pages the .deb ships.

use std::path::PathBuf;

use anyhow::Context as _;

use super::common::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The folder to write the pages to
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

/// The man pages, generated from the same definitions as `--help` so the two cannot disagree.
/// `packaging/man/` is this output, committed (a test keeps it current).
pub(super) fn run(args: Args, cli: clap::Command) -> Result<(), Failure> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(cli, dir)
        .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
    Ok(())
}
