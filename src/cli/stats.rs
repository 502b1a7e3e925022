//! Edge: `stats`, what the database holds (counts, ages, sizes) and the refusals the daemon
//! saved; no personal data.

use std::path::PathBuf;

use super::common::{Failure, OutputFormat, open_reader, reading_config};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// table: for a person; json: for scripts and monitoring
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

pub(super) fn run(explicit: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let stats = open_reader(&config)?.stats()?;
    // Saved by a running daemon (or the last one) beside the database.
    let refusals = crate::metrics::RefusalReport::load(
        &config
            .storage
            .path
            .with_file_name(crate::metrics::REFUSALS_FILE),
    );
    match args.format {
        OutputFormat::Json => {
            let mut json = serde_json::to_value(&stats)?;
            json["refusals"] = serde_json::to_value(&refusals)?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        OutputFormat::Table => {
            let age = |time: Option<i64>| match time {
                Some(time) => format!("{} ago", human_duration(crate::unix_now() - time)),
                None => "-".into(),
            };
            println!("database        {}", config.storage.path.display());
            println!("visits          {}", stats.visits);
            println!("game events     {}", stats.events);
            println!("live salts      {}", stats.salts);
            println!("current salt    {}", age(stats.current_salt_created_at));
            println!("oldest record   {}", age(stats.oldest_record));
            println!("newest record   {}", age(stats.newest_record));
            println!(
                "file size       {} bytes (+ {} bytes WAL)",
                stats.database_bytes, stats.wal_bytes
            );
            let outbox = &stats.outbox;
            match &config.central {
                Some(central) => println!("central push    {}", central.url),
                None => println!("central push    off (no [central] section)"),
            }
            println!(
                "outbox          {} pending (oldest queued {}), {} refused for good",
                outbox.pending,
                age(outbox.oldest_pending_at),
                outbox.rejected
            );
            println!("last success    {}", age(outbox.last_success_at));
            if let Some(error) = &outbox.last_error {
                println!("last failure    {error}");
            }
            match &refusals {
                None => println!("refusals        - (no daemon has saved any here)"),
                Some(report) => {
                    let total: u64 = report.refusals.iter().map(|r| r.count).sum();
                    println!(
                        "refusals        {total} since the daemon started {} (as of {})",
                        age(Some(report.since)),
                        age(Some(report.as_of))
                    );
                    for refusal in &report.refusals {
                        println!(
                            "  {:<14}{:<32}{:>8}",
                            refusal.endpoint, refusal.reason, refusal.count
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h {}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d {}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}
