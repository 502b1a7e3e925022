//! Edge: `aggregates`, a day range's aggregates as a table, JSON or CSV; with `--signed`, the
//! JSON signed by the collector's identity and recorded in the ledger (docs/api.md, "Signed
//! documents").

use std::path::PathBuf;

use clap::ValueEnum;

use super::common::{Failure, carry_out, open_reader, reading_config, unexpected};
use super::report;
use crate::attribution::{ClusterStatus, Document, Query, document, read_rows};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::control::{Command, Outcome};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// First day, YYYY-MM-DD (UTC) [default: six days before --to, so a week is shown]
    #[arg(long, value_name = "DAY")]
    from: Option<String>,
    /// Last day, YYYY-MM-DD (UTC), inclusive [default: today]
    #[arg(long, value_name = "DAY")]
    to: Option<String>,
    /// Only this game (its traffic includes the visits that named no game)
    #[arg(long)]
    game: Option<String>,
    /// table: aligned for a terminal; json: the API's document; csv: one table of both kinds
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
    /// In the table, every traffic and conversions row instead of one line per campaign
    #[arg(long)]
    detail: bool,
    /// With --format json: the document signed with the collector's identity and recorded
    /// in the ledger, as an envelope (docs/api.md, "Signed documents")
    #[arg(long)]
    signed: bool,
    /// The merged view of the cluster ([cluster]): this node's rows with those of every peer
    /// that answers, suppressed after the merge, as the API answers in a cluster
    #[arg(long)]
    cluster: bool,
}

/// Days `aggregates` shows without --from.
const DEFAULT_REPORT_DAYS: u64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ReportFormat {
    Table,
    Json,
    Csv,
}

pub(super) fn run(explicit: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let Args {
        from,
        to,
        game,
        format,
        detail,
        signed,
        cluster,
    } = args;
    if signed && format != ReportFormat::Json {
        return Err(Failure::config(anyhow::anyhow!(
            "--signed signs the JSON document: add --format json"
        )));
    }
    let config = reading_config(explicit)?;
    let now = crate::unix_now();
    let to = to.unwrap_or_else(|| crate::clock::utc_day(now));
    let from = match from {
        Some(from) => from,
        // A week ending on `to`; a `to` that is no day is refused by the query below.
        None => crate::clock::parse_day(&to)
            .and_then(|last| last.checked_sub_days(chrono::Days::new(DEFAULT_REPORT_DAYS - 1)))
            .map_or_else(|| to.clone(), |first| first.to_string()),
    };
    let query = Query::parse(Some(&from), Some(&to), game.as_deref(), &config, now)
        .map_err(Failure::config)?;
    let document = if cluster {
        merged_document(&config, &query, now)?
    } else {
        crate::attribution::read_document(&open_reader(&config)?, &config, &query, now)?
    };
    if format == ReportFormat::Table
        && let Some(cluster) = &document.cluster
    {
        println!("{}", cluster_line(cluster));
    }
    match format {
        ReportFormat::Json if signed => {
            let bytes = serde_json::to_vec(&document)?;
            let envelope = sign_export(config, &query, &bytes)?;
            println!("{}", serde_json::to_string_pretty(&envelope)?);
        }
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&document)?),
        ReportFormat::Table if detail => {
            print!("{}", report::table(&document, report::terminal_width()))
        }
        ReportFormat::Table => print!(
            "{}",
            report::summary_table(
                &document,
                crate::clock::day_of(now),
                report::terminal_width()
            )
        ),
        ReportFormat::Csv => print!("{}", report::csv(&document)),
    }
    Ok(())
}

/// Which nodes a merged table holds, and loudly which it does not.
fn cluster_line(cluster: &ClusterStatus) -> String {
    let mut line = format!("Merged from {}.", cluster.merged.join(", "));
    for node in &cluster.unreachable {
        line += &format!(
            " Not reachable, missing from every count: {} ({}).",
            node.node, node.error
        );
    }
    line
}

/// The document of `query` over this node and every peer of `[cluster]` that answers.
fn merged_document(config: &Config, query: &Query, now: i64) -> Result<Document, Failure> {
    let Some(settings) = &config.cluster else {
        return Err(Failure::config(anyhow::anyhow!(
            "--cluster merges the nodes named in a [cluster] section, and this configuration has \
             none (docs/operations.md, \"More than one server\")"
        )));
    };
    let cluster = Cluster::new(settings).map_err(|err| {
        Failure::config(anyhow::anyhow!(
            "{}: {err}",
            config.locate(&err.config_key())
        ))
    })?;
    let (from, to) = (query.from_day(), query.to_day());
    let rows = read_rows(&open_reader(config)?, &from, &to, query.game.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (rows, status) = runtime.block_on(cluster.merged(rows, &from, &to, query.game.as_deref()));
    Ok(document(config, query, rows, Some(status), now))
}

/// The envelope `aggregates --format json --signed` prints: the document's exact bytes in
/// base16, so that nothing re-encodes them, and what verifies them.
#[derive(Debug, serde::Serialize)]
pub(super) struct SignedExport {
    /// The aggregates document, its exact bytes as hex.
    pub document: String,
    pub signature: String,
    pub ledger_prev: String,
    pub public_key: String,
    pub ledger_row: i64,
}

/// Signs an export through the store's owner (the daemon when it runs) and wraps it.
fn sign_export(config: Config, query: &Query, bytes: &[u8]) -> Result<SignedExport, Failure> {
    let command = Command::SignExport {
        from: query.from_day(),
        to: query.to_day(),
        hash: blake3::hash(bytes).to_hex().to_string(),
        size: bytes.len() as i64,
    };
    let Outcome::Signed {
        seq,
        signature,
        ledger_prev,
        public_key,
    } = carry_out(config, command)?
    else {
        return Err(unexpected());
    };
    Ok(SignedExport {
        document: hex::encode(bytes),
        signature,
        ledger_prev,
        public_key,
        ledger_row: seq,
    })
}
