//! Attribution: the aggregates document, built from the store's roll-up rows with small rows
//! merged into `(other)` so totals are kept; the query that asks for it.

use chrono::NaiveDate;
use serde::Serialize;

use crate::campaign::FIRST_OPEN;
use crate::clock::{DAY_SECS, day_of, day_text, parse_day, rfc3339};
use crate::config::Config;
use crate::rows::{ConversionRow, PageRow, SourceRow, TrafficRow, suppress};
use crate::store::{Reader, StoreError};

/// The oldest and the newest UTC day that can still hold data at `now`: the days a document
/// may cover and a push renders.
pub(crate) fn retention_days(config: &Config, now: i64) -> (NaiveDate, NaiveDate) {
    let oldest = day_of(now - i64::from(config.privacy.retention_days) * DAY_SECS);
    (oldest, day_of(now))
}

/// A validated request for a document: a day range inside the retention window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub game: Option<String>,
}

/// Why a query was refused; `field` names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct QueryError {
    pub field: &'static str,
    pub message: String,
    /// The parameter was not sent at all.
    pub missing: bool,
}

impl Query {
    /// `from` and `to` are `YYYY-MM-DD`; the range must lie within the last `retention_days`
    /// days (today included) and `from <= to`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        game: Option<&str>,
        config: &Config,
        now: i64,
    ) -> Result<Query, QueryError> {
        let day = |field: &'static str, value: Option<&str>| {
            let value = value.ok_or_else(|| QueryError {
                field,
                message: "is required (YYYY-MM-DD)".into(),
                missing: true,
            })?;
            parse_day(value).ok_or_else(|| QueryError {
                field,
                message: "must be a date, YYYY-MM-DD".into(),
                missing: false,
            })
        };
        let (from, to) = (day("from", from)?, day("to", to)?);
        if from > to {
            return Err(QueryError {
                field: "from",
                message: "must not be after `to`".into(),
                missing: false,
            });
        }
        let (oldest, today) = retention_days(config, now);
        if from < oldest {
            return Err(QueryError {
                field: "from",
                message: format!(
                    "is outside the retention window: data is kept {} days, the oldest day is {oldest}",
                    config.privacy.retention_days
                ),
                missing: false,
            });
        }
        if to > today {
            return Err(QueryError {
                field: "to",
                message: format!("is in the future (today is {today}, UTC)"),
                missing: false,
            });
        }
        if let Some(game) = game
            && !config.games.iter().any(|known| known.id == game)
        {
            return Err(QueryError {
                field: "game",
                message: format!("\"{game}\" is not a configured game"),
                missing: false,
            });
        }
        Ok(Query {
            from,
            to,
            game: game.map(str::to_string),
        })
    }

    pub fn from_day(&self) -> String {
        day_text(self.from)
    }

    pub fn to_day(&self) -> String {
        day_text(self.to)
    }
}

/// The aggregates document (docs/api.md, "The aggregates document"), field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    pub collector_id: String,
    pub generated_at: String,
    pub from: String,
    pub to: String,
    pub attribution: Settings,
    pub traffic: Vec<TrafficRow>,
    pub conversions: Vec<ConversionRow>,
    /// Referrer hosts, with the players of `first_game_open` they brought (additive,
    /// December 2026).
    pub sources: Vec<SourceRow>,
    /// Landing pages, likewise.
    pub pages: Vec<PageRow>,
    /// In a merged view: which nodes' rows it holds and which could not be read (additive,
    /// December 2026; absent from one node's own document).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// Which nodes a merged document holds: the document's `cluster` field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The nodes whose rows are in the document, the answering one first.
    pub merged: Vec<String>,
    /// The nodes that could not be read, and why; their rows are missing from every count.
    pub unreachable: Vec<Unreachable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    pub node: String,
    pub error: String,
}

/// Every kind of row of a range, before suppression, as the store reads them.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub traffic: Vec<TrafficRow>,
    pub conversions: Vec<ConversionRow>,
    pub sources: Vec<SourceRow>,
    pub pages: Vec<PageRow>,
}

/// Reads every kind of row of the days `from..=to`, optionally of one game.
pub(crate) fn read_rows(
    reader: &Reader,
    from: &str,
    to: &str,
    game: Option<&str>,
) -> Result<Rows, StoreError> {
    let (traffic, conversions) = reader.cells(from, to, game)?;
    let (sources, pages) = reader.sources_and_pages(from, to, game, FIRST_OPEN)?;
    Ok(Rows {
        traffic,
        conversions,
        sources,
        pages,
    })
}

/// Reads every kind of row of one day through the cells' key: what a day costs is its own
/// cells.
pub(crate) fn read_day(reader: &Reader, day: &str, game: Option<&str>) -> Result<Rows, StoreError> {
    let (traffic, conversions) = reader.cells_of_day(day, game)?;
    let (sources, pages) = reader.sources_and_pages_of_day(day, game, FIRST_OPEN)?;
    Ok(Rows {
        traffic,
        conversions,
        sources,
        pages,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub model: &'static str,
    pub lookback_days: u32,
}

/// The collector's name in documents: `central.collector_id`, else "local".
pub(crate) fn collector_id(config: &Config) -> String {
    config
        .central
        .as_ref()
        .map(|central| central.collector_id.clone())
        .unwrap_or_else(|| "local".into())
}

/// Reads the cells of `query` and builds its document: the one path of the API and the CLI.
pub fn read_document(
    reader: &Reader,
    config: &Config,
    query: &Query,
    now: i64,
) -> Result<Document, StoreError> {
    let rows = read_rows(
        reader,
        &query.from_day(),
        &query.to_day(),
        query.game.as_deref(),
    )?;
    Ok(document(config, query, rows, None, now))
}

/// Builds the document from the store's rows, or a cluster's merged rows and which nodes they
/// hold.
pub(crate) fn document(
    config: &Config,
    query: &Query,
    rows: Rows,
    cluster: Option<ClusterStatus>,
    now: i64,
) -> Document {
    let min = i64::from(config.privacy.min_cell_size);
    Document {
        collector_id: collector_id(config),
        generated_at: rfc3339(now),
        from: query.from_day(),
        to: query.to_day(),
        attribution: Settings {
            model: config.attribution.model.as_str(),
            lookback_days: config.attribution.lookback_days,
        },
        traffic: suppress(rows.traffic, min),
        conversions: suppress(rows.conversions, min),
        sources: suppress(rows.sources, min),
        pages: suppress(rows.pages, min),
        cluster,
    }
}
