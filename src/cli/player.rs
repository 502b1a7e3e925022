//! Edge: `forget`, `unforget` and `subject`, a data subject's requests about one player.

use std::path::PathBuf;

use super::common::{Failure, OutputFormat, carry_out, open_reader, reading_config, unexpected};
use super::report;
use crate::control::{self, Outcome};

/// One player of one game, as `forget`, `unforget` and `subject` name them.
#[derive(Debug, clap::Args)]
pub(crate) struct PlayerArgs {
    /// The game's id, as in [[games]]
    #[arg(long)]
    game: String,
    /// The player's id as the game sends it to /measure
    #[arg(long = "user-id", value_name = "ID")]
    user_id: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SubjectArgs {
    #[command(flatten)]
    player: PlayerArgs,
    /// How to print it: a table, or the JSON of GET /api/v1/subject
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

fn player_command(player: PlayerArgs, forget: bool) -> control::Command {
    let PlayerArgs { game, user_id } = player;
    if forget {
        control::Command::Forget { game, user_id }
    } else {
        control::Command::Unforget { game, user_id }
    }
}

pub(super) fn forget(explicit: Option<PathBuf>, player: PlayerArgs) -> Result<(), Failure> {
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

pub(super) fn unforget(explicit: Option<PathBuf>, player: PlayerArgs) -> Result<(), Failure> {
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

/// Reads the file directly: every count and record an answer is made of is committed there
/// (what the daemon holds in memory is only which visitors and addresses were seen), so the
/// answer is the API's at the same moment.
pub(super) fn subject(explicit: Option<PathBuf>, args: SubjectArgs) -> Result<(), Failure> {
    let player = &args.player;
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
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print!(
            "{}",
            report::subject_table(&report, report::terminal_width())
        ),
    }
    Ok(())
}
