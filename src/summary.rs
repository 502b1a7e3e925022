//! Summary: the aggregates document per campaign, as a person reads it: visits and game opens
//! joined by campaign, the conversion rate and the players' returns. The command line's table;
//! the dashboard (`http/dashboard.js`) computes the same in the browser, by the same rules.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use crate::attribution::Document;
use crate::campaign::{Campaign, DIRECT, OTHER};
use crate::clock::parse_day;

pub(crate) use crate::campaign::FIRST_OPEN;

/// One campaign over a document's days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CampaignSummary {
    /// `source / medium / campaign`, the parts that are set; `(direct)` or `(other)`.
    pub label: String,
    pub visits: i64,
    /// Distinct visitors per day, summed over the days.
    pub visitors: i64,
    /// `first_game_open` events.
    pub first_opens: i64,
    /// Distinct players per day with a first open, summed over the days.
    pub players: i64,
    /// The players whose next day is over, and how many of them came back on it.
    pub d1: Returns,
    /// The players whose next seven days are over, and how many came back within them.
    pub d7: Returns,
}

/// Players who could have come back by now, and those who did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Returns {
    pub players: i64,
    pub returned: i64,
}

impl Returns {
    /// The share that came back; none while no player's window is over.
    pub(crate) fn rate(&self) -> Option<f64> {
        (self.players > 0).then(|| self.returned as f64 / self.players as f64)
    }
}

impl CampaignSummary {
    /// Players per visitor; none without visitors (game opens that no visit brought).
    pub(crate) fn conversion(&self) -> Option<f64> {
        (self.visitors > 0).then(|| self.players as f64 / self.visitors as f64)
    }

    fn add(&mut self, other: &CampaignSummary) {
        self.visits += other.visits;
        self.visitors += other.visitors;
        self.first_opens += other.first_opens;
        self.players += other.players;
        self.d1.players += other.d1.players;
        self.d1.returned += other.d1.returned;
        self.d7.players += other.d7.players;
        self.d7.returned += other.d7.returned;
    }
}

/// The label a campaign is shown and joined by. A game open's source falls back to its visit's
/// referrer, and is `(direct)` without a visit: a visit's label does the same, so a campaign's
/// visits and opens meet.
pub(crate) fn label(campaign: &Campaign, referrer_host: Option<&str>) -> String {
    let source = campaign.source.as_deref().or(referrer_host);
    match source {
        None | Some(DIRECT) => DIRECT.to_string(),
        Some(OTHER) => OTHER.to_string(),
        Some(source) => [
            Some(source),
            campaign.medium.as_deref(),
            campaign.campaign.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" / "),
    }
}

/// The document's campaigns, most visitors first (then most players), `(direct)` and
/// `(other)` last; and their total. A return counts only once its window is over on `today`
/// (UTC): the day after a player's first day for D1, the seventh for D7.
pub(crate) fn campaigns(
    document: &Document,
    today: NaiveDate,
) -> (Vec<CampaignSummary>, CampaignSummary) {
    let mut by_label: BTreeMap<String, CampaignSummary> = BTreeMap::new();
    fn entry(map: &mut BTreeMap<String, CampaignSummary>, label: String) -> &mut CampaignSummary {
        map.entry(label.clone()).or_insert(CampaignSummary {
            label,
            ..CampaignSummary::default()
        })
    }
    for row in &document.traffic {
        let summary = entry(
            &mut by_label,
            label(&row.campaign, row.referrer_host.as_deref()),
        );
        summary.visits += row.visits;
        summary.visitors += row.visitors;
    }
    for row in document
        .conversions
        .iter()
        .filter(|row| row.event == FIRST_OPEN)
    {
        let summary = entry(&mut by_label, label(&row.campaign, None));
        summary.first_opens += row.events;
        summary.players += row.users;
        let Some(day) = parse_day(&row.day) else {
            continue;
        };
        let over = |days: i64| (today - day).num_days() > days;
        if over(1) {
            summary.d1.players += row.users;
            summary.d1.returned += row.returned_d1;
        }
        if over(7) {
            summary.d7.players += row.users;
            summary.d7.returned += row.returned_d7;
        }
    }
    let mut total = CampaignSummary {
        label: "Total".into(),
        ..CampaignSummary::default()
    };
    let mut campaigns: Vec<CampaignSummary> = by_label.into_values().collect();
    for campaign in &campaigns {
        total.add(campaign);
    }
    campaigns.sort_by_key(|campaign| {
        let last = campaign.label == DIRECT || campaign.label == OTHER;
        (
            last,
            campaign.label == OTHER,
            std::cmp::Reverse(campaign.visitors),
            std::cmp::Reverse(campaign.players),
            campaign.label.clone(),
        )
    });
    (campaigns, total)
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0 { format!("-{out}") } else { out }
}

/// A share as a percentage with one decimal, `-` for none.
pub(crate) fn percent(share: Option<f64>) -> String {
    share.map_or_else(|| "-".into(), |share| format!("{:.1}%", share * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Settings;
    use crate::rows::{ConversionRow, TrafficRow};

    fn campaign(source: Option<&str>, medium: Option<&str>) -> Campaign {
        Campaign {
            source: source.map(str::to_string),
            medium: medium.map(str::to_string),
            ..Campaign::default()
        }
    }

    fn opens(day: &str, source: &str, users: i64, d1: i64, d7: i64) -> ConversionRow {
        ConversionRow {
            day: day.into(),
            game: "g".into(),
            campaign: campaign(Some(source), (source == "ads").then_some("cpc")),
            platform: None,
            storefront: None,
            country: None,
            event: FIRST_OPEN.into(),
            events: users + 1,
            users,
            returned_d1: d1,
            returned_d7: d7,
        }
    }

    #[test]
    fn campaigns_join_visits_and_opens_and_count_only_finished_returns() {
        let visits = |source: Option<&str>, referrer: Option<&str>, visitors: i64| TrafficRow {
            day: "2026-11-01".into(),
            game: None,
            campaign: campaign(source, source.map(|_| "cpc")),
            referrer_host: referrer.map(str::to_string),
            device: "pc".into(),
            country: None,
            visits: visitors * 2,
            visitors,
            consented_visits: 0,
        };
        let mut game_open = opens("2026-11-01", "ads", 50, 50, 50);
        game_open.event = "game_open".into();
        let document = Document {
            cluster: None,
            collector_id: "local".into(),
            generated_at: String::new(),
            from: "2026-11-01".into(),
            to: "2026-11-10".into(),
            attribution: Settings {
                model: "last_touch",
                lookback_days: 14,
            },
            traffic: vec![
                visits(Some("ads"), None, 400),
                visits(None, Some("t.co"), 10),
                visits(None, None, 1000),
            ],
            conversions: vec![
                // Day +1 and +7 both over on Nov 10 (9 days later).
                opens("2026-11-01", "ads", 10, 4, 6),
                // Day +1 over, day +7 not yet.
                opens("2026-11-08", "ads", 10, 5, 5),
                // Neither over: Nov 9's next day is today.
                opens("2026-11-09", "ads", 10, 3, 3),
                opens("2026-11-01", "t.co", 2, 1, 1),
                opens("2026-11-01", DIRECT, 3, 0, 0),
                game_open,
            ],
            sources: vec![],
            pages: vec![],
        };
        let today = parse_day("2026-11-10").expect("day");
        let (rows, total) = campaigns(&document, today);
        let labels: Vec<&str> = rows.iter().map(|row| row.label.as_str()).collect();
        assert_eq!(labels, ["ads / cpc", "t.co", "(direct)"]);
        let ads = &rows[0];
        assert_eq!((ads.visits, ads.visitors), (800, 400));
        assert_eq!((ads.first_opens, ads.players), (33, 30));
        assert_eq!(percent(ads.conversion()), "7.5%");
        assert_eq!(
            ads.d1,
            Returns {
                players: 20,
                returned: 9
            }
        );
        assert_eq!(
            ads.d7,
            Returns {
                players: 10,
                returned: 6
            }
        );
        assert_eq!(percent(ads.d1.rate()), "45.0%");
        assert_eq!(rows[1].visitors, 10, "a referrer's visits meet its opens");
        assert_eq!((rows[2].visitors, rows[2].players), (1000, 3));
        assert_eq!((total.visitors, total.players), (1410, 35));
        let fresh = campaigns(&document, parse_day("2026-11-03").expect("day")).0;
        assert_eq!(percent(fresh[0].d1.rate()), "40.0%");
        assert_eq!(percent(fresh[0].d7.rate()), "-");
    }

    #[test]
    fn numbers_read_like_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-12_345), "-12,345");
        assert_eq!(percent(Some(0.1234)), "12.3%");
        assert_eq!(percent(None), "-");
    }
}
