//! Edge: `rotate-salt`, a new salt now.

use std::path::PathBuf;

use super::common::{Failure, carry_out, reading_config, unexpected};
use crate::control::{self, Outcome};

pub(super) fn run(explicit: Option<PathBuf>) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let Outcome::Rotated = carry_out(config, control::Command::RotateSalt)? else {
        return Err(unexpected());
    };
    println!("a new salt is current");
    Ok(())
}
