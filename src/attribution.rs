//! Attribution: the linking rules handed to the store, and the aggregates document built from
//! its roll-up cells, with small cells merged into `(other)` rows so totals are kept.
//!
//! Linking itself happens in the store's writer when an event arrives (one consistent view of
//! the visits); everything here is a pure function of cells, settings and `now`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;

use crate::clock::{DAY_SECS, day_of, parse_day, rfc3339};
use crate::config::{AttributionConfig, AttributionModel, Config};
use crate::store::{ConversionCell, LinkRules, Reader, StoreError, TrafficCell};

/// The label of merged small cells.
pub const OTHER: &str = "(other)";

pub fn link_rules(config: &AttributionConfig) -> LinkRules {
    LinkRules {
        lookback_secs: i64::from(config.lookback_days) * DAY_SECS,
        first_touch: config.model == AttributionModel::FirstTouch,
        require_consent: config.require_consent,
    }
}

/// The oldest and the newest UTC day that can still hold data at `now`: the days a document
/// may cover and a push renders.
pub fn retention_days(config: &Config, now: i64) -> (NaiveDate, NaiveDate) {
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
            })?;
            parse_day(value).ok_or_else(|| QueryError {
                field,
                message: "must be a date, YYYY-MM-DD".into(),
            })
        };
        let (from, to) = (day("from", from)?, day("to", to)?);
        if from > to {
            return Err(QueryError {
                field: "from",
                message: "must not be after `to`".into(),
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
            });
        }
        if to > today {
            return Err(QueryError {
                field: "to",
                message: format!("is in the future (today is {today}, UTC)"),
            });
        }
        if let Some(game) = game
            && !config.games.iter().any(|known| known.id == game)
        {
            return Err(QueryError {
                field: "game",
                message: format!("\"{game}\" is not a configured game"),
            });
        }
        Ok(Query {
            from,
            to,
            game: game.map(str::to_string),
        })
    }

    pub fn from_day(&self) -> String {
        self.from.format("%Y-%m-%d").to_string()
    }

    pub fn to_day(&self) -> String {
        self.to.format("%Y-%m-%d").to_string()
    }
}

/// The aggregates document of DESIGN.md, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    pub collector_id: String,
    pub generated_at: String,
    pub from: String,
    pub to: String,
    pub attribution: Settings,
    pub traffic: Vec<TrafficRow>,
    pub conversions: Vec<ConversionRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    pub model: &'static str,
    pub lookback_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficRow {
    pub day: String,
    pub game: Option<String>,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
    pub referrer_host: Option<String>,
    pub device: String,
    pub visits: i64,
    pub visitors: i64,
    pub consented_visits: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConversionRow {
    pub day: String,
    pub game: String,
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
    pub platform: Option<String>,
    pub storefront: Option<String>,
    pub event: String,
    pub events: i64,
    pub users: i64,
}

/// The collector's name in documents: `central.collector_id`, else "local".
pub fn collector_id(config: &Config) -> String {
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
    let (traffic, conversions) =
        reader.cells(&query.from_day(), &query.to_day(), query.game.as_deref())?;
    Ok(document(config, query, traffic, conversions, now))
}

/// Builds the document from the store's cells.
pub fn document(
    config: &Config,
    query: &Query,
    traffic: Vec<TrafficCell>,
    conversions: Vec<ConversionCell>,
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
        traffic: suppress_traffic(traffic.into_iter().map(TrafficRow::from).collect(), min),
        conversions: suppress_conversions(
            conversions.into_iter().map(ConversionRow::from).collect(),
            min,
        ),
    }
}

impl From<TrafficCell> for TrafficRow {
    fn from(cell: TrafficCell) -> TrafficRow {
        TrafficRow {
            day: cell.day,
            game: cell.game,
            source: cell.source,
            medium: cell.medium,
            campaign: cell.campaign,
            content: cell.content,
            term: cell.term,
            referrer_host: cell.referrer_host,
            device: cell.device,
            visits: cell.visits,
            visitors: cell.visitors,
            consented_visits: cell.consented_visits,
        }
    }
}

impl From<ConversionCell> for ConversionRow {
    fn from(cell: ConversionCell) -> ConversionRow {
        ConversionRow {
            day: cell.day,
            game: cell.game,
            source: cell.source,
            medium: cell.medium,
            campaign: cell.campaign,
            content: cell.content,
            term: cell.term,
            platform: cell.platform,
            storefront: cell.storefront,
            event: cell.event,
            events: cell.events,
            users: cell.users,
        }
    }
}

fn other() -> Option<String> {
    Some(OTHER.to_string())
}

/// Rows of fewer than `min` visitors are merged, per day and game, into one row whose text
/// fields are `(other)`; its counts are the sums, so every total is kept. The merged row is
/// kept whatever its size: dropping it would lose the totals.
pub fn suppress_traffic(rows: Vec<TrafficRow>, min: i64) -> Vec<TrafficRow> {
    if min <= 1 {
        return rows;
    }
    let mut kept = Vec::new();
    let mut merged: BTreeMap<(String, Option<String>), TrafficRow> = BTreeMap::new();
    for row in rows {
        if row.visitors >= min {
            kept.push(row);
            continue;
        }
        let slot = merged
            .entry((row.day.clone(), row.game.clone()))
            .or_insert_with(|| TrafficRow {
                day: row.day.clone(),
                game: row.game.clone(),
                source: other(),
                medium: other(),
                campaign: other(),
                content: other(),
                term: other(),
                referrer_host: other(),
                device: OTHER.into(),
                visits: 0,
                visitors: 0,
                consented_visits: 0,
            });
        slot.visits += row.visits;
        slot.visitors += row.visitors;
        slot.consented_visits += row.consented_visits;
    }
    kept.extend(merged.into_values());
    kept.sort_by(|a, b| (&a.day, &a.game).cmp(&(&b.day, &b.game)));
    kept
}

/// As [`suppress_traffic`], by `users`, per day, game and event.
pub fn suppress_conversions(rows: Vec<ConversionRow>, min: i64) -> Vec<ConversionRow> {
    if min <= 1 {
        return rows;
    }
    let mut kept = Vec::new();
    let mut merged: BTreeMap<(String, String, String), ConversionRow> = BTreeMap::new();
    for row in rows {
        if row.users >= min {
            kept.push(row);
            continue;
        }
        let slot = merged
            .entry((row.day.clone(), row.game.clone(), row.event.clone()))
            .or_insert_with(|| ConversionRow {
                day: row.day.clone(),
                game: row.game.clone(),
                source: other(),
                medium: other(),
                campaign: other(),
                content: other(),
                term: other(),
                platform: other(),
                storefront: other(),
                event: row.event.clone(),
                events: 0,
                users: 0,
            });
        slot.events += row.events;
        slot.users += row.users;
    }
    kept.extend(merged.into_values());
    kept.sort_by(|a, b| (&a.day, &a.game, &a.event).cmp(&(&b.day, &b.game, &b.event)));
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(day: &str, source: &str, visits: i64, visitors: i64) -> TrafficRow {
        TrafficRow {
            day: day.into(),
            game: Some("g".into()),
            source: Some(source.into()),
            medium: None,
            campaign: None,
            content: None,
            term: None,
            referrer_host: None,
            device: "pc".into(),
            visits,
            visitors,
            consented_visits: visits / 2,
        }
    }

    #[test]
    fn small_traffic_rows_merge_into_other_keeping_totals() {
        let rows = vec![
            traffic("2026-11-20", "a", 10, 8),
            traffic("2026-11-20", "b", 3, 2),
            traffic("2026-11-20", "c", 2, 1),
            traffic("2026-11-21", "d", 1, 1),
        ];
        let total = |rows: &[TrafficRow]| -> (i64, i64, i64) {
            rows.iter().fold((0, 0, 0), |acc, r| {
                (
                    acc.0 + r.visits,
                    acc.1 + r.visitors,
                    acc.2 + r.consented_visits,
                )
            })
        };
        let out = suppress_traffic(rows.clone(), 3);
        assert_eq!(total(&out), total(&rows));
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].source.as_deref(), Some("a"));
        assert_eq!(out[1].source.as_deref(), Some(OTHER));
        assert_eq!((out[1].visits, out[1].visitors), (5, 3));
        assert_eq!(out[1].device, OTHER);
        assert_eq!(out[2].day, "2026-11-21");
        assert_eq!(out[2].source.as_deref(), Some(OTHER));
        assert_eq!(suppress_traffic(rows.clone(), 1), rows);
    }

    #[test]
    fn small_conversion_rows_merge_per_event() {
        let row = |event: &str, users: i64| ConversionRow {
            day: "2026-11-20".into(),
            game: "g".into(),
            source: Some("x".into()),
            medium: None,
            campaign: None,
            content: None,
            term: None,
            platform: Some("pc".into()),
            storefront: Some("steam".into()),
            event: event.into(),
            events: users + 1,
            users,
        };
        let out = suppress_conversions(
            vec![
                row("first_game_open", 1),
                row("first_game_open", 1),
                row("game_open", 5),
            ],
            2,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].event, "first_game_open");
        assert_eq!((out[0].events, out[0].users), (4, 2));
        assert_eq!(out[0].storefront.as_deref(), Some(OTHER));
        assert_eq!(out[1].source.as_deref(), Some("x"));
    }
}
