//! Rows: the aggregates' rows, one type per kind, as the store reads them from its cells and as
//! the document, the central push and the command line show them; their columns, and the
//! roll-up of small rows into `(other)`. Also the one row that is not an aggregate: a player's
//! own event, shown to that player's data request only.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::campaign::{Campaign, DIMENSIONS, OTHER};

/// Visits of one UTC day with one campaign, referrer, device and country.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficRow {
    pub day: String,
    pub game: Option<String>,
    #[serde(flatten)]
    pub campaign: Campaign,
    pub referrer_host: Option<String>,
    pub device: String,
    /// The visitors' country (ISO 3166-1 alpha-2); `None` without `privacy.geoip_db` or for
    /// an address in no network of it.
    pub country: Option<String>,
    pub visits: i64,
    /// Distinct IP pseudonyms.
    pub visitors: i64,
    pub consented_visits: i64,
}

/// Game events of one UTC day (of the event's time), attributed to one campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversionRow {
    pub day: String,
    pub game: String,
    #[serde(flatten)]
    pub campaign: Campaign,
    pub platform: Option<String>,
    pub storefront: Option<String>,
    /// The players' own country, from each event's address (not the visit's).
    pub country: Option<String>,
    pub event: String,
    pub events: i64,
    /// Distinct user pseudonyms.
    pub users: i64,
    /// Of `users`, how many had an event of the game on the next UTC day.
    pub returned_d1: i64,
    /// Of `users`, how many had an event of the game on one of the next seven UTC days.
    pub returned_d7: i64,
}

/// Visits of one UTC day with one referrer host, and the players they brought: the
/// document's `sources`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRow {
    pub day: String,
    /// The visits' game (`None`: pages that named none) and the players' game.
    pub game: Option<String>,
    /// The referrer's host; `None`: no referrer, or a player with no visit.
    pub referrer_host: Option<String>,
    #[serde(flatten)]
    pub counts: SourceCounts,
}

/// Visits of one UTC day landing on one page, and the players they brought: the document's
/// `pages`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRow {
    pub day: String,
    /// As [`SourceRow::game`].
    pub game: Option<String>,
    /// The landing page, host and path as minimised at ingest (`mygame.example/launch`);
    /// `None`: a server-side visit without a URL, or a player with no visit.
    pub page: Option<String>,
    #[serde(flatten)]
    pub counts: SourceCounts,
}

/// The counts of a source or a page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCounts {
    pub visits: i64,
    /// Distinct IP pseudonyms per traffic row, each counted at the row's first visit, summed
    /// over the traffic rows (docs/api.md).
    pub visitors: i64,
    /// Distinct players of `first_game_open` attributed to it, per conversion row, summed.
    pub players: i64,
}

impl SourceCounts {
    fn add(&mut self, other: &SourceCounts) {
        self.visits += other.visits;
        self.visitors += other.visitors;
        self.players += other.players;
    }

    /// The people a row stands for, at least: compared with `privacy.min_cell_size`.
    fn size(&self) -> i64 {
        self.visitors.max(self.players)
    }
}

/// One event of one player, as a data request shows it: when, what, where from, and the
/// campaign it was attributed to. No address and no pseudonym.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectEvent {
    /// The UTC day of the event's time, as in the conversions.
    pub day: String,
    pub event: String,
    pub platform: Option<String>,
    pub storefront: Option<String>,
    /// The country of the address the event came from, as stored.
    pub country: Option<String>,
    #[serde(flatten)]
    pub campaign: Campaign,
}

impl SubjectEvent {
    /// The columns of the command line's table, in the JSON's order.
    pub fn columns() -> Vec<Column<SubjectEvent>> {
        let mut columns = vec![
            Column::text("day", "DAY", |row: &SubjectEvent| Some(row.day.clone())),
            Column::text("event", "EVENT", |row: &SubjectEvent| {
                Some(row.event.clone())
            }),
            Column::text("platform", "PLATFORM", |row: &SubjectEvent| {
                row.platform.clone()
            }),
            Column::text("storefront", "STOREFRONT", |row: &SubjectEvent| {
                row.storefront.clone()
            }),
            Column::text("country", "COUNTRY", |row: &SubjectEvent| {
                row.country.clone()
            }),
        ];
        columns.extend(campaign_columns(|row: &SubjectEvent| &row.campaign));
        columns
    }
}

/// What the roll-up and the tables need of a kind of row.
pub(crate) trait Row: Sized {
    /// The part small rows keep when they merge: the rest becomes `(other)`.
    type Group: Ord + Clone;

    fn group(&self) -> Self::Group;
    /// The distinct count compared with `privacy.min_cell_size`.
    fn size(&self) -> i64;
    /// The `(other)` row of `group`, with zero counts.
    fn other(group: &Self::Group) -> Self;
    /// Adds the counts of `row`.
    fn add(&mut self, row: &Self);
    /// The order of the rows' keys, as the store gives them: `ORDER BY` the cells' key, none
    /// as '' (SQLite's BINARY collation is byte order, as `str`'s). Equal means one key.
    fn order(&self, other: &Self) -> Ordering;
    /// The row's columns, in the order of tables and CSV.
    fn columns() -> Vec<Column<Self>>;
}

/// One column of a kind of row.
pub struct Column<R> {
    /// The JSON field and CSV column.
    pub name: &'static str,
    /// The table header.
    pub header: &'static str,
    /// Counts are right-aligned in tables and follow the text columns in CSV.
    pub count: bool,
    pub value: Value<R>,
}

/// A column's text for one row; `None` for none.
pub(crate) type Value<R> = Box<dyn Fn(&R) -> Option<String>>;

impl<R: 'static> Column<R> {
    fn text(
        name: &'static str,
        header: &'static str,
        value: impl Fn(&R) -> Option<String> + 'static,
    ) -> Column<R> {
        Column {
            name,
            header,
            count: false,
            value: Box::new(value),
        }
    }

    fn count(name: &'static str, header: &'static str, value: fn(&R) -> i64) -> Column<R> {
        Column {
            name,
            header,
            count: true,
            value: Box::new(move |row| Some(value(row).to_string())),
        }
    }
}

/// The table headers of the campaign's dimensions, in `Campaign::FIELDS` order.
const CAMPAIGN_HEADERS: [&str; DIMENSIONS] =
    ["SOURCE", "MEDIUM", "CAMPAIGN", "CONTENT", "TERM", "CHANNEL"];

/// The campaign's columns of a row whose campaign `campaign` returns.
fn campaign_columns<R: 'static>(campaign: fn(&R) -> &Campaign) -> impl Iterator<Item = Column<R>> {
    Campaign::FIELDS
        .into_iter()
        .zip(CAMPAIGN_HEADERS)
        .enumerate()
        .map(move |(index, (name, header))| {
            Column::text(name, header, move |row: &R| {
                campaign(row).values()[index].map(str::to_string)
            })
        })
}

impl Row for TrafficRow {
    type Group = (String, Option<String>);

    fn group(&self) -> Self::Group {
        (self.day.clone(), self.game.clone())
    }

    fn size(&self) -> i64 {
        self.visitors
    }

    fn other((day, game): &Self::Group) -> TrafficRow {
        TrafficRow {
            day: day.clone(),
            game: game.clone(),
            campaign: Campaign::other(),
            referrer_host: Some(OTHER.into()),
            device: OTHER.into(),
            country: Some(OTHER.into()),
            visits: 0,
            visitors: 0,
            consented_visits: 0,
        }
    }

    fn add(&mut self, row: &TrafficRow) {
        self.visits += row.visits;
        self.visitors += row.visitors;
        self.consented_visits += row.consented_visits;
    }

    // Field by field, each compared only while the earlier ones tie: an iterator over the key
    // took 1.7 s for 861,217 rows, this a fraction of it.
    fn order(&self, other: &TrafficRow) -> Ordering {
        let (a, b) = (self, other);
        a.day
            .cmp(&b.day)
            .then_with(|| text(&a.game).cmp(text(&b.game)))
            .then_with(|| campaign_order(&a.campaign, &b.campaign))
            .then_with(|| text(&a.referrer_host).cmp(text(&b.referrer_host)))
            .then_with(|| a.device.cmp(&b.device))
            .then_with(|| text(&a.country).cmp(text(&b.country)))
    }

    fn columns() -> Vec<Column<TrafficRow>> {
        let mut columns = vec![
            Column::text("day", "DAY", |row: &TrafficRow| Some(row.day.clone())),
            Column::text("game", "GAME", |row: &TrafficRow| row.game.clone()),
        ];
        columns.extend(campaign_columns(|row: &TrafficRow| &row.campaign));
        columns.extend([
            Column::text("referrer_host", "REFERRER", |row: &TrafficRow| {
                row.referrer_host.clone()
            }),
            Column::text("device", "DEVICE", |row: &TrafficRow| {
                Some(row.device.clone())
            }),
            Column::text("country", "COUNTRY", |row: &TrafficRow| row.country.clone()),
            Column::count("visits", "VISITS", |row| row.visits),
            Column::count("visitors", "VISITORS", |row| row.visitors),
            Column::count("consented_visits", "CONSENTED", |row| row.consented_visits),
        ]);
        columns
    }
}

impl Row for ConversionRow {
    type Group = (String, String, String);

    fn group(&self) -> Self::Group {
        (self.day.clone(), self.game.clone(), self.event.clone())
    }

    fn size(&self) -> i64 {
        self.users
    }

    fn other((day, game, event): &Self::Group) -> ConversionRow {
        ConversionRow {
            day: day.clone(),
            game: game.clone(),
            campaign: Campaign::other(),
            platform: Some(OTHER.into()),
            storefront: Some(OTHER.into()),
            country: Some(OTHER.into()),
            event: event.clone(),
            events: 0,
            users: 0,
            returned_d1: 0,
            returned_d7: 0,
        }
    }

    fn add(&mut self, row: &ConversionRow) {
        self.events += row.events;
        self.users += row.users;
        self.returned_d1 += row.returned_d1;
        self.returned_d7 += row.returned_d7;
    }

    fn order(&self, other: &ConversionRow) -> Ordering {
        let (a, b) = (self, other);
        a.day
            .cmp(&b.day)
            .then_with(|| a.game.cmp(&b.game))
            .then_with(|| campaign_order(&a.campaign, &b.campaign))
            .then_with(|| text(&a.platform).cmp(text(&b.platform)))
            .then_with(|| text(&a.storefront).cmp(text(&b.storefront)))
            .then_with(|| text(&a.country).cmp(text(&b.country)))
            .then_with(|| a.event.cmp(&b.event))
    }

    fn columns() -> Vec<Column<ConversionRow>> {
        let mut columns = vec![
            Column::text("day", "DAY", |row: &ConversionRow| Some(row.day.clone())),
            Column::text("game", "GAME", |row: &ConversionRow| Some(row.game.clone())),
        ];
        columns.extend(campaign_columns(|row: &ConversionRow| &row.campaign));
        columns.extend([
            Column::text("platform", "PLATFORM", |row: &ConversionRow| {
                row.platform.clone()
            }),
            Column::text("storefront", "STOREFRONT", |row: &ConversionRow| {
                row.storefront.clone()
            }),
            Column::text("country", "COUNTRY", |row: &ConversionRow| {
                row.country.clone()
            }),
            Column::text("event", "EVENT", |row: &ConversionRow| {
                Some(row.event.clone())
            }),
            Column::count("events", "EVENTS", |row| row.events),
            Column::count("users", "USERS", |row| row.users),
            Column::count("returned_d1", "D1", |row| row.returned_d1),
            Column::count("returned_d7", "D7", |row| row.returned_d7),
        ]);
        columns
    }
}

impl Row for SourceRow {
    type Group = (String, Option<String>);

    fn group(&self) -> Self::Group {
        (self.day.clone(), self.game.clone())
    }

    fn size(&self) -> i64 {
        self.counts.size()
    }

    fn other((day, game): &Self::Group) -> SourceRow {
        SourceRow {
            day: day.clone(),
            game: game.clone(),
            referrer_host: Some(OTHER.into()),
            counts: SourceCounts::default(),
        }
    }

    fn add(&mut self, row: &SourceRow) {
        self.counts.add(&row.counts);
    }

    fn order(&self, other: &SourceRow) -> Ordering {
        let (a, b) = (self, other);
        a.day
            .cmp(&b.day)
            .then_with(|| text(&a.game).cmp(text(&b.game)))
            .then_with(|| text(&a.referrer_host).cmp(text(&b.referrer_host)))
    }

    fn columns() -> Vec<Column<SourceRow>> {
        let mut columns = vec![
            Column::text("day", "DAY", |row: &SourceRow| Some(row.day.clone())),
            Column::text("game", "GAME", |row: &SourceRow| row.game.clone()),
            Column::text("referrer_host", "REFERRER", |row: &SourceRow| {
                row.referrer_host.clone()
            }),
        ];
        columns.extend(count_columns(|row: &SourceRow| &row.counts));
        columns
    }
}

impl Row for PageRow {
    type Group = (String, Option<String>);

    fn group(&self) -> Self::Group {
        (self.day.clone(), self.game.clone())
    }

    fn size(&self) -> i64 {
        self.counts.size()
    }

    fn other((day, game): &Self::Group) -> PageRow {
        PageRow {
            day: day.clone(),
            game: game.clone(),
            page: Some(OTHER.into()),
            counts: SourceCounts::default(),
        }
    }

    fn add(&mut self, row: &PageRow) {
        self.counts.add(&row.counts);
    }

    // The store orders by host, then path; the page is the two joined, and a host holds no '/'.
    fn order(&self, other: &PageRow) -> Ordering {
        let (a, b) = (self, other);
        a.day
            .cmp(&b.day)
            .then_with(|| text(&a.game).cmp(text(&b.game)))
            .then_with(|| host_and_path(&a.page).cmp(&host_and_path(&b.page)))
    }

    fn columns() -> Vec<Column<PageRow>> {
        let mut columns = vec![
            Column::text("day", "DAY", |row: &PageRow| Some(row.day.clone())),
            Column::text("game", "GAME", |row: &PageRow| row.game.clone()),
            Column::text("page", "PAGE", |row: &PageRow| row.page.clone()),
        ];
        columns.extend(count_columns(|row: &PageRow| &row.counts));
        columns
    }
}

/// The count columns of a source or a page.
fn count_columns<R: 'static>(counts: fn(&R) -> &SourceCounts) -> [Column<R>; 3] {
    let column = |name, header, count: fn(&SourceCounts) -> i64| Column {
        name,
        header,
        count: true,
        value: Box::new(move |row: &R| Some(count(counts(row)).to_string())) as Value<R>,
    };
    [
        column("visits", "VISITS", |counts| counts.visits),
        column("visitors", "VISITORS", |counts| counts.visitors),
        column("players", "PLAYERS", |counts| counts.players),
    ]
}

fn campaign_order(a: &Campaign, b: &Campaign) -> Ordering {
    let (a, b) = (a.values(), b.values());
    a.iter()
        .zip(b.iter())
        .map(|(a, b)| a.unwrap_or("").cmp(b.unwrap_or("")))
        .find(|order| order.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

fn host_and_path(page: &Option<String>) -> (&str, &str) {
    let page = text(page);
    page.split_at(page.find('/').unwrap_or(page.len()))
}

/// The rows of several stores (the nodes of a cluster) as one store holding all their cells
/// would give them: in the store's order, the counts of one key summed. Exact for every count
/// that sums, which routing by address makes of the distinct ones too (docs/operations.md).
pub(crate) fn merge<R: Row>(lists: Vec<Vec<R>>) -> Vec<R> {
    let mut all: Vec<R> = lists.into_iter().flatten().collect();
    all.sort_unstable_by(R::order);
    let mut merged: Vec<R> = Vec::with_capacity(all.len());
    for row in all {
        match merged.last_mut() {
            Some(last) if last.order(&row).is_eq() => last.add(&row),
            _ => merged.push(row),
        }
    }
    merged
}

/// Rows smaller than `min` are merged, per group, into one row whose text fields are
/// `(other)`; its counts are the sums, so every total is kept. The merged row is kept whatever
/// its size: dropping it would lose the totals.
pub(crate) fn suppress<R: Row>(rows: Vec<R>, min: i64) -> Vec<R> {
    if min <= 1 {
        return rows;
    }
    let mut kept = Vec::new();
    let mut merged: BTreeMap<R::Group, R> = BTreeMap::new();
    for row in rows {
        if row.size() >= min {
            kept.push(row);
            continue;
        }
        merged
            .entry(row.group())
            .or_insert_with_key(R::other)
            .add(&row);
    }
    kept.extend(merged.into_values());
    // Stable: rows of one group keep their order, the merged one last.
    kept.sort_by_cached_key(R::group);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traffic(day: &str, source: &str, visits: i64, visitors: i64) -> TrafficRow {
        TrafficRow {
            day: day.into(),
            game: Some("g".into()),
            campaign: Campaign {
                source: Some(source.into()),
                ..Campaign::default()
            },
            referrer_host: None,
            device: "pc".into(),
            country: Some("DE".into()),
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
        let out = suppress(rows.clone(), 3);
        assert_eq!(total(&out), total(&rows));
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].campaign.source.as_deref(), Some("a"));
        assert_eq!(out[1].campaign, Campaign::other());
        assert_eq!((out[1].visits, out[1].visitors), (5, 3));
        assert_eq!(out[1].device, OTHER);
        assert_eq!(out[1].country.as_deref(), Some(OTHER));
        assert_eq!(out[2].day, "2026-11-21");
        assert_eq!(out[2].campaign.source.as_deref(), Some(OTHER));
        assert_eq!(suppress(rows.clone(), 1), rows);
    }

    #[test]
    fn small_conversion_rows_merge_per_event() {
        let row = |event: &str, users: i64| ConversionRow {
            day: "2026-11-20".into(),
            game: "g".into(),
            campaign: Campaign {
                source: Some("x".into()),
                ..Campaign::default()
            },
            platform: Some("pc".into()),
            storefront: Some("steam".into()),
            country: None,
            event: event.into(),
            events: users + 1,
            users,
            returned_d1: users - 1,
            returned_d7: users,
        };
        let out = suppress(
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
        assert_eq!((out[0].returned_d1, out[0].returned_d7), (0, 2));
        assert_eq!(out[0].storefront.as_deref(), Some(OTHER));
        assert_eq!(out[1].campaign.source.as_deref(), Some("x"));
    }

    #[test]
    fn rows_serialise_with_the_campaign_flattened_in_place() {
        let json = serde_json::to_string(&traffic("2026-11-20", "a", 2, 1)).expect("json");
        assert_eq!(
            json,
            r#"{"day":"2026-11-20","game":"g","source":"a","medium":null,"campaign":null,"content":null,"term":null,"channel":null,"referrer_host":null,"device":"pc","country":"DE","visits":2,"visitors":1,"consented_visits":1}"#
        );
        let names: Vec<&str> = TrafficRow::columns().iter().map(|c| c.name).collect();
        let value = serde_json::to_value(traffic("d", "a", 1, 1)).expect("json");
        let keys: Vec<&str> = value
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, keys, "every field is a column");
    }

    fn page(page: &str, visits: i64, visitors: i64, players: i64) -> PageRow {
        PageRow {
            day: "2026-11-20".into(),
            game: Some("g".into()),
            page: Some(page.into()),
            counts: SourceCounts {
                visits,
                visitors,
                players,
            },
        }
    }

    /// A page (a path with a token in it among them) is reported alone only when its visitors
    /// or its players reach the minimum; the rest merge into `(other)`, totals kept.
    #[test]
    fn small_pages_merge_into_other_by_visitors_or_players() {
        let rows = vec![
            page("mygame.example/", 40, 30, 2),
            page("mygame.example/reset/abc123", 3, 1, 0),
            page("mygame.example/shared", 6, 1, 5),
        ];
        let out = suppress(rows, 5);
        let pages: Vec<&str> = out.iter().filter_map(|row| row.page.as_deref()).collect();
        assert_eq!(pages, ["mygame.example/", "mygame.example/shared", OTHER]);
        assert_eq!(
            out[2].counts,
            SourceCounts {
                visits: 3,
                visitors: 1,
                players: 0
            }
        );
        let json = serde_json::to_string(&out[0]).expect("json");
        assert_eq!(
            json,
            r#"{"day":"2026-11-20","game":"g","page":"mygame.example/","visits":40,"visitors":30,"players":2}"#
        );
        let names: Vec<&str> = PageRow::columns().iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["day", "game", "page", "visits", "visitors", "players"]
        );
        let names: Vec<&str> = SourceRow::columns().iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "day",
                "game",
                "referrer_host",
                "visits",
                "visitors",
                "players"
            ]
        );
    }
}
