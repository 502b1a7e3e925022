//! Edge: `purge`, everything older than privacy.retention_days deleted now (or, dry, counted).

use std::path::PathBuf;

use super::common::{Failure, carry_out, open_reader, reading_config, unexpected};
use crate::control::{self, Outcome};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print what would be deleted; delete nothing
    #[arg(long)]
    dry_run: bool,
}

pub(super) fn run(explicit: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let now = crate::unix_now();
    let cutoff = now - i64::from(config.privacy.retention_days) * crate::clock::DAY_SECS;
    let (cutoff, report, verb) = if args.dry_run {
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
