//! Store: a campaign's columns in each table, spelled from `Campaign::FIELDS`, so a new
//! dimension changes the schema, not each statement.

use rusqlite::Row;
use rusqlite::types::ToSql;

use crate::campaign::{Campaign, DIMENSIONS, UTM_PARAMETERS};

/// How a table names a campaign's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Naming {
    /// The visits: the UTM parameters as in the URL (`utm_source`), others by their name.
    Visits,
    /// Events and cells: every dimension by its name.
    Plain,
}

impl Naming {
    fn column(self, field: &str) -> String {
        let utm = format!("utm_{field}");
        if self == Naming::Visits && UTM_PARAMETERS.contains(&utm.as_str()) {
            utm
        } else {
            field.to_string()
        }
    }
}

/// `{alias}source, {alias}medium, ...`: the campaign's columns, `alias` being empty or e.g.
/// `c.`.
pub(super) fn campaign(naming: Naming, alias: &str) -> String {
    join(|field| format!("{alias}{}", naming.column(field)))
}

/// `coalesce({alias}source, ''), ...`: a campaign as a cell key, '' for none, except a
/// missing source, which is `source_none`.
pub(super) fn campaign_key(naming: Naming, alias: &str, source_none: &str) -> String {
    join(|field| {
        format!(
            "coalesce({alias}{}, '{}')",
            naming.column(field),
            none(field, source_none)
        )
    })
}

/// `{cell}.source = coalesce({log}source, ''), ...` joined by AND: a cell and the records that
/// count in it; `log` is the records' alias, e.g. `l.`.
pub(super) fn campaign_matches(cell: &str, naming: Naming, log: &str, source_none: &str) -> String {
    Campaign::FIELDS
        .iter()
        .map(|field| {
            format!(
                "{cell}.{field} = coalesce({log}{}, '{}')",
                naming.column(field),
                none(field, source_none)
            )
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn none<'a>(field: &str, source_none: &'a str) -> &'a str {
    if field == "source" { source_none } else { "" }
}

/// `1, 2, ...`, `count` of them: result columns by position, for GROUP BY.
pub(super) fn positions(count: usize) -> String {
    (1..=count)
        .map(|index| index.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `?{first}, ?{first + 1}, ...`, `count` of them.
pub(super) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|index| format!("?{index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(column: impl Fn(&str) -> String) -> String {
    Campaign::FIELDS
        .iter()
        .map(|field| column(field))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A record's values as statement parameters: `before` its campaign, the campaign's
/// dimensions, then `after`.
pub(super) fn with_campaign<'a>(
    before: &'a [&'a dyn ToSql],
    campaign: &'a [Option<&'a str>; DIMENSIONS],
    after: &'a [&'a dyn ToSql],
) -> impl rusqlite::Params + 'a {
    let campaign = campaign.iter().map(|value| value as &dyn ToSql);
    rusqlite::params_from_iter(
        before
            .iter()
            .copied()
            .chain(campaign)
            .chain(after.iter().copied()),
    )
}

/// Reads a campaign from the `DIMENSIONS` columns from `first` on; `none` marks a missing
/// value in cell keys ('' there), NULL marks it elsewhere.
pub(super) fn read_campaign(row: &Row<'_>, first: usize) -> rusqlite::Result<Campaign> {
    let mut values: [Option<String>; DIMENSIONS] = Default::default();
    for (offset, value) in values.iter_mut().enumerate() {
        *value = row
            .get::<_, Option<String>>(first + offset)?
            .filter(|text| !text.is_empty());
    }
    Ok(Campaign::from_values(values))
}
