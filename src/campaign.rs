//! Campaign: the dimensions that say where a visit, and the game opens it brought, came from.
//!
//! One type from the visit's URL through linking and the roll-up cells to every row of the
//! aggregates, flattened into their JSON. A new dimension is a field here (and in `FIELDS`,
//! `values`, `from_values` and `value_mut`), a migration adding its columns, and a table
//! header in `rows`; the store spells its statements from `FIELDS`.

use serde::{Deserialize, Serialize};

/// The source of a game event that no visit brought.
pub(crate) const DIRECT: &str = "(direct)";
/// The event whose players a campaign, a source and a page are credited with: a new player's
/// first open.
pub(crate) const FIRST_OPEN: &str = "first_game_open";
/// The label of rows merged because they were smaller than `privacy.min_cell_size`.
pub(crate) const OTHER: &str = "(other)";

/// The URL query parameters of the first dimensions, in `Campaign::FIELDS` order.
pub(crate) const UTM_PARAMETERS: [&str; 5] = [
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
];

/// The dimension a URL query parameter sets, by its position in `Campaign::FIELDS`; the
/// parameter's name is matched without regard to case.
pub(crate) fn utm_index(parameter: &str) -> Option<usize> {
    UTM_PARAMETERS
        .iter()
        .position(|name| parameter.eq_ignore_ascii_case(name))
}

/// How many dimensions a campaign has.
pub(crate) const DIMENSIONS: usize = 6;

/// The UTM parameters of a visit (or a link's defaults) and its channel, normalised:
/// lower-cased, trimmed, empty means `None`. For a game event, the campaign of the visit that
/// brought it, its source falling back to the visit's referrer, or `(direct)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Campaign {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
    /// The marketing channel a server-side visit names (e.g. `paid_social`); the collect
    /// script and links leave it empty.
    pub channel: Option<String>,
}

impl Campaign {
    /// The dimensions' names, in the order of [`Campaign::values`]: JSON keys, table and CSV
    /// columns, and the columns of the store's cells.
    pub const FIELDS: [&'static str; DIMENSIONS] =
        ["source", "medium", "campaign", "content", "term", "channel"];

    /// Each dimension, in the order of [`Campaign::FIELDS`].
    pub fn values(&self) -> [Option<&str>; DIMENSIONS] {
        [
            self.source.as_deref(),
            self.medium.as_deref(),
            self.campaign.as_deref(),
            self.content.as_deref(),
            self.term.as_deref(),
            self.channel.as_deref(),
        ]
    }

    /// The inverse of [`Campaign::values`].
    pub fn from_values(values: [Option<String>; DIMENSIONS]) -> Campaign {
        let [source, medium, campaign, content, term, channel] = values;
        Campaign {
            source,
            medium,
            campaign,
            content,
            term,
            channel,
        }
    }

    /// A dimension by its position in [`Campaign::FIELDS`], to be set.
    pub fn value_mut(&mut self, index: usize) -> Option<&mut Option<String>> {
        Some(match index {
            0 => &mut self.source,
            1 => &mut self.medium,
            2 => &mut self.campaign,
            3 => &mut self.content,
            4 => &mut self.term,
            5 => &mut self.channel,
            _ => return None,
        })
    }

    /// The campaign of merged small rows: every dimension `(other)`.
    pub fn other() -> Campaign {
        Campaign::from_values(std::array::from_fn(|_| Some(OTHER.to_string())))
    }

    pub fn is_empty(&self) -> bool {
        self.values().iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_fields_line_up_and_round_trip() {
        let mut campaign = Campaign::default();
        for index in 0..DIMENSIONS {
            *campaign.value_mut(index).expect("a dimension") = Some(Campaign::FIELDS[index].into());
        }
        assert_eq!(campaign.source.as_deref(), Some("source"));
        assert_eq!(campaign.term.as_deref(), Some("term"));
        let json = serde_json::to_value(&campaign).expect("json");
        for field in Campaign::FIELDS {
            assert_eq!(json[field], field, "{field}");
        }
        let values = campaign.values().map(|value| value.map(str::to_string));
        assert_eq!(Campaign::from_values(values), campaign);
        assert!(campaign.value_mut(DIMENSIONS).is_none());
        assert!(Campaign::default().is_empty());
        for (index, parameter) in UTM_PARAMETERS.iter().enumerate() {
            assert_eq!(
                parameter.strip_prefix("utm_"),
                Some(Campaign::FIELDS[index])
            );
            assert_eq!(utm_index(&parameter.to_uppercase()), Some(index));
        }
        assert_eq!(utm_index("gclid"), None);
    }
}
