//! Edge: `ledger`, what a data-protection officer runs to check what left the server: the
//! signed ledger listed, verified, or one kept document shown (docs/operations.md, "The
//! ledger").

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::common::{Failure, OutputFormat, open_reader, reading_config};
use crate::config::Config;
use crate::identity::{self, Identity};
use crate::store::LedgerRow;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<LedgerAction>,
    /// table: for a person; json: every field, for scripts
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub(super) enum LedgerAction {
    /// Check the chain and every signature; exit 1 naming the first row that does not hold
    #[command(
        after_help = "Examples:\n  tracks-collector ledger verify\n  tracks-collector ledger verify --document pushed.json"
    )]
    Verify {
        /// Also say which row records this document (its exact bytes), or fail if none does
        #[arg(long, value_name = "FILE")]
        document: Option<PathBuf>,
    },
    /// Print the document a row records (kept with ledger.keep_documents), else its hash
    #[command(after_help = "Example:\n  tracks-collector ledger show 12")]
    Show {
        /// The row's number, as `tracks-collector ledger` lists it
        seq: i64,
    },
}

pub(super) fn run(explicit: Option<PathBuf>, args: Args) -> Result<(), Failure> {
    let config = reading_config(explicit)?;
    let rows = open_reader(&config)?.ledger()?;
    match args.action {
        None => {
            match args.format {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
                OutputFormat::Table => print!("{}", table(&rows)),
            }
            Ok(())
        }
        Some(LedgerAction::Verify { document }) => verify(&config, &rows, document),
        Some(LedgerAction::Show { seq }) => {
            let Some(row) = rows.iter().find(|row| row.seq == seq) else {
                return Err(anyhow::anyhow!("no ledger row {seq}").into());
            };
            match &row.document {
                Some(document) => {
                    use std::io::Write as _;
                    std::io::stdout().write_all(document)?;
                    println!();
                }
                None => println!(
                    "row {seq} keeps only the document's hash (set ledger.keep_documents = true \
                     to keep documents): blake3 {}; check a copy with `tracks-collector ledger \
                     verify --document FILE`",
                    row.document_hash.map(hex::encode).unwrap_or_default()
                ),
            }
            Ok(())
        }
    }
}

fn verify(config: &Config, rows: &[LedgerRow], document: Option<PathBuf>) -> Result<(), Failure> {
    let broken = |message: String| Failure {
        code: 1,
        error: anyhow::anyhow!(message),
    };
    let key = crate::store::verify_ledger(rows)
        .map_err(|broken_row| broken(format!("row {}: {}", broken_row.seq, broken_row.why)))?;
    // The chain ends at the key the collector signs with now.
    if let (Some(key), Ok(current)) = (
        key,
        Identity::load(&identity::key_path(&config.storage.path)),
    ) && key != current.public_key()
    {
        return Err(broken(format!(
            "the ledger's last key {} is not the collector's identity {}",
            identity::fingerprint(&key),
            identity::fingerprint(&current.public_key())
        )));
    }
    println!(
        "ledger: {} row(s), chain and signatures hold{}",
        rows.len(),
        key.map(|key| format!("; signing key {}", identity::fingerprint(&key)))
            .unwrap_or_default()
    );
    if let Some(path) = document {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let hash = *blake3::hash(&bytes).as_bytes();
        match rows.iter().find(|row| row.document_hash == Some(hash)) {
            Some(row) => println!(
                "{}: recorded by row {} ({} to {}, {} {})",
                path.display(),
                row.seq,
                row.kind,
                row.destination,
                row.from,
                row.to
            ),
            None => {
                return Err(broken(format!(
                    "{}: no ledger row records this document (blake3 {}): it was changed, or \
                     never left this collector",
                    path.display(),
                    hex::encode(hash)
                )));
            }
        }
    }
    Ok(())
}

/// One line per row: when, what, where, which days, how big, and the start of its hash.
fn table(rows: &[LedgerRow]) -> String {
    if rows.is_empty() {
        return "the ledger is empty: no document has left yet\n".into();
    }
    let mut out = format!(
        "{:>5}  {:<20}  {:<8}  {:<10}  {:<10}  {:>9}  {:<16}  DESTINATION\n",
        "ROW", "TIME (UTC)", "KIND", "FROM", "TO", "BYTES", "DOCUMENT HASH"
    );
    for row in rows {
        let time = chrono::DateTime::from_timestamp(row.at, 0)
            .map(|time| time.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        let hash = row
            .document_hash
            .map(|hash| hex::encode(&hash[..8]))
            .unwrap_or_else(|| "-".into());
        let destination = match row.kind.as_str() {
            "rotation" => format!(
                "new key {}",
                row.new_key
                    .as_deref()
                    .and_then(|key| <[u8; 32]>::try_from(key).ok())
                    .map(|key| identity::fingerprint(&key))
                    .unwrap_or_default()
            ),
            "anchor" => format!("stands for {} pruned row(s)", row.size),
            _ => row
                .destination
                .chars()
                .filter(|c| !c.is_control())
                .collect(),
        };
        out.push_str(&format!(
            "{:>5}  {:<20}  {:<8}  {:<10}  {:<10}  {:>9}  {:<16}  {destination}\n",
            row.seq, time, row.kind, row.from, row.to, row.size, hash
        ));
    }
    out
}
