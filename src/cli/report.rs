//! Edge: the aggregates document, and a data request's answer, as a terminal table or CSV (JSON
//! is serde's).

use chrono::NaiveDate;

use crate::attribution::Document;
use crate::campaign::Campaign;
use crate::rows::{Column, ConversionRow, Row, SubjectEvent, TrafficRow};
use crate::store::SubjectReport;
use crate::summary;

/// One line per campaign: its visits, the players it brought, the conversion rate and the
/// returns (`crate::summary`); what the columns mean below it.
pub fn summary_table(document: &Document, today: NaiveDate) -> String {
    let (campaigns, total) = summary::campaigns(document, today);
    let mut out = format!(
        "Campaigns {} .. {} (UTC; collector {}, {}, lookback {} days)\n\n",
        document.from,
        document.to,
        document.collector_id,
        document.attribution.model,
        document.attribution.lookback_days
    );
    let header = [
        "CAMPAIGN",
        "VISITS",
        "VISITORS",
        "FIRST OPENS",
        "PLAYERS",
        "CONVERSION",
        "D1 RETURN",
        "D7 RETURN",
    ];
    let line = |campaign: &summary::CampaignSummary| {
        vec![
            printable(&campaign.label),
            summary::thousands(campaign.visits),
            summary::thousands(campaign.visitors),
            summary::thousands(campaign.first_opens),
            summary::thousands(campaign.players),
            summary::percent(campaign.conversion()),
            summary::percent(campaign.d1.rate()),
            summary::percent(campaign.d7.rate()),
        ]
    };
    let mut rows: Vec<Vec<String>> = campaigns.iter().map(line).collect();
    if campaigns.len() > 1 {
        rows.push(line(&total));
    }
    // The numbers are never cut; the label takes what they leave of the width.
    let numbers: usize = (1..header.len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .chain([header[column].len()])
                .max()
                .unwrap_or_default()
                + 2
        })
        .sum();
    let room = TABLE_WIDTH.saturating_sub(numbers).max(MIN_COLUMN);
    for row in &mut rows {
        if row[0].chars().count() > room {
            row[0] = row[0].chars().take(room - 1).chain(['~']).collect();
        }
    }
    out.push_str(&aligned(&header, &rows, 1, &[false], TABLE_WIDTH));
    if !rows.is_empty() {
        out.push_str(SUMMARY_NOTES);
    }
    out
}

/// What the summary's columns mean, wrapped to fit the table's width.
const SUMMARY_NOTES: &str = "
Players: distinct players per day whose first game open the campaign brought. Conversion:
players / visitors. D1 / D7 return: of those players, the share that played again on the
next UTC day / within seven days; only players whose day (or week) is over count, `-` until
then. (direct): no campaign and no referrer; (other): campaigns merged because they had fewer
players or visitors than privacy.min_cell_size. Every row by day, storefront, platform and
device: --detail.
";

/// Two aligned tables, traffic then conversions, with `-` for none.
pub fn table(document: &Document) -> String {
    let mut out = format!(
        "Aggregates {} .. {} (collector {}, {}, lookback {} days)\n\nTraffic\n",
        document.from,
        document.to,
        document.collector_id,
        document.attribution.model,
        document.attribution.lookback_days
    );
    out.push_str(&kind_table(&document.traffic));
    out.push_str("\nConversions\n");
    out.push_str(&kind_table(&document.conversions));
    out
}

/// What is held about one player: a line saying whose and whether blocked, then their events.
pub fn subject_table(report: &SubjectReport) -> String {
    let mut out = format!(
        "Held about this user id of game {}: {} game event(s); blocked: {}\n\n",
        report.game,
        report.events.len(),
        if report.blocked { "yes" } else { "no" }
    );
    out.push_str(&columns_table(&report.events, SubjectEvent::columns()));
    out
}

/// One kind of row as a table, by its column list.
fn kind_table<R: Row>(rows: &[R]) -> String {
    columns_table(rows, R::columns())
}

/// Rows as a table, by a column list. Text columns no row has a value in are left out (and
/// named below the table), and the rest is fitted to `TABLE_WIDTH`.
fn columns_table<R>(rows: &[R], columns: Vec<Column<R>>) -> String {
    let (shown, empty): (Vec<Column<R>>, Vec<Column<R>>) = columns
        .into_iter()
        .partition(|column| column.count || rows.iter().any(|row| (column.value)(row).is_some()));
    let header: Vec<&str> = shown.iter().map(|column| column.header).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            shown
                .iter()
                .map(|column| printable(&(column.value)(row).unwrap_or_else(|| "-".into())))
                .collect()
        })
        .collect();
    let first_number = shown
        .iter()
        .position(|column| column.count)
        .unwrap_or(shown.len());
    // The campaign's free text is cut before the day, game, event and store names.
    let cut_first: Vec<bool> = shown
        .iter()
        .map(|column| Campaign::FIELDS.contains(&column.name) || column.name == "referrer_host")
        .collect();
    let mut out = aligned(&header, &cells, first_number, &cut_first, TABLE_WIDTH);
    if !rows.is_empty() && !empty.is_empty() {
        let names: Vec<&str> = empty.iter().map(|column| column.header).collect();
        out.push_str(&format!("  (no values: {})\n", names.join(", ")));
    }
    out
}

/// The widest a table line gets: a common terminal's width.
const TABLE_WIDTH: usize = 100;
/// A text column is never cut narrower than this.
const MIN_COLUMN: usize = 6;

/// Control characters (a UTM value may hold an escape sequence) shown escaped, so a table
/// cannot move the cursor, retitle the window or forge lines.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Columns padded to their widest cell; columns from `first_number` on are right-aligned.
/// While a line would be wider than `max_width`, the widest text column marked in `cut_first`
/// loses a character, down to `MIN_COLUMN`, then the widest other text column but the first
/// (the day); a cut cell ends in `~`.
fn aligned(
    header: &[&str],
    rows: &[Vec<String>],
    first_number: usize,
    cut_first: &[bool],
    max_width: usize,
) -> String {
    if rows.is_empty() {
        return "  (none)\n".into();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let total =
        |widths: &[usize]| widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    while total(&widths) > max_width {
        let widest = |preferred: bool| {
            widths[..first_number.min(widths.len())]
                .iter()
                .enumerate()
                .filter(|(index, width)| {
                    *index > 0
                        && **width > MIN_COLUMN
                        && (!preferred || cut_first.get(*index).copied().unwrap_or(false))
                })
                .max_by_key(|(index, width)| (**width, std::cmp::Reverse(*index)))
                .map(|(index, _)| index)
        };
        let Some(index) = widest(true).or_else(|| widest(false)) else {
            break;
        };
        widths[index] -= 1;
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index > 0 {
                text.push_str("  ");
            }
            let cut: String;
            let cell = if cell.chars().count() > *width {
                cut = cell
                    .chars()
                    .take(width.saturating_sub(1))
                    .chain(['~'])
                    .collect();
                cut.as_str()
            } else {
                cell
            };
            if index >= first_number {
                text.push_str(&format!("{cell:>width$}"));
            } else {
                text.push_str(&format!("{cell:<width$}"));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One CSV table: a `kind` column (`traffic` or `conversions`) and the union of both row
/// shapes (text columns, then counts), empty where a field does not apply.
pub fn csv(document: &Document) -> String {
    let traffic = TrafficRow::columns();
    let conversions = ConversionRow::columns();
    let names = csv_columns(&traffic, &conversions);
    let mut out = std::iter::once("kind")
        .chain(names.iter().copied())
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    out.push_str(&csv_rows("traffic", &document.traffic, &traffic, &names));
    out.push_str(&csv_rows(
        "conversions",
        &document.conversions,
        &conversions,
        &names,
    ));
    out
}

/// Every column of either kind once: the text columns in order of first appearance, then the
/// counts.
fn csv_columns(
    traffic: &[Column<TrafficRow>],
    conversions: &[Column<ConversionRow>],
) -> Vec<&'static str> {
    let all = || {
        traffic
            .iter()
            .map(|column| (column.name, column.count))
            .chain(conversions.iter().map(|column| (column.name, column.count)))
    };
    let mut names: Vec<&'static str> = Vec::new();
    for counts in [false, true] {
        for (name, count) in all() {
            if count == counts && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn csv_rows<R: Row>(kind: &str, rows: &[R], columns: &[Column<R>], names: &[&str]) -> String {
    let mut out = String::new();
    for row in rows {
        let mut cells = vec![kind.to_string()];
        cells.extend(names.iter().map(|name| {
            columns
                .iter()
                .find(|column| column.name == *name)
                .and_then(|column| (column.value)(row))
                .unwrap_or_default()
        }));
        out.push_str(&csv_line(&cells));
    }
    out
}

/// RFC 4180 quoting; a cell a spreadsheet would run as a formula (UTM values come from
/// anyone's links) gets a leading `'`.
fn csv_line(cells: &[String]) -> String {
    let quoted: Vec<String> = cells
        .iter()
        .map(|cell| {
            let cell = if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
                format!("'{cell}")
            } else {
                cell.clone()
            };
            if cell.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", cell.replace('"', "\"\""))
            } else {
                cell
            }
        })
        .collect();
    quoted.join(",") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let line = csv_line(&[
            "a,b".into(),
            "say \"hi\"".into(),
            "=cmd()".into(),
            "12".into(),
        ]);
        assert_eq!(line, "\"a,b\",\"say \"\"hi\"\"\",'=cmd(),12\n");
    }

    #[test]
    fn csv_has_every_column_of_both_kinds_once() {
        let names = csv_columns(&TrafficRow::columns(), &ConversionRow::columns());
        assert_eq!(
            names.join(","),
            "day,game,source,medium,campaign,content,term,channel,referrer_host,device,\
             country,platform,storefront,event,visits,visitors,consented_visits,events,users,returned_d1,returned_d7"
        );
    }

    #[test]
    fn the_campaign_table_fits_a_hundred_columns_with_rates() {
        let row = |source: &str, users: i64| ConversionRow {
            day: "2026-11-01".into(),
            game: "g".into(),
            campaign: Campaign {
                source: Some(source.into()),
                medium: Some("social".into()),
                campaign: Some(format!("launch-{}", "x".repeat(80))),
                ..Campaign::default()
            },
            platform: None,
            storefront: None,
            country: None,
            event: "first_game_open".into(),
            events: users,
            users,
            returned_d1: users / 2,
            returned_d7: users / 2 + 1,
        };
        let document = Document {
            collector_id: "local".into(),
            generated_at: String::new(),
            from: "2026-11-01".into(),
            to: "2026-11-10".into(),
            attribution: crate::attribution::Settings {
                model: "last_touch",
                lookback_days: 14,
            },
            traffic: vec![],
            conversions: vec![row("twitter", 1_234_568), row("\u{1b}[2Jreddit", 10)],
        };
        let today = crate::clock::parse_day("2026-11-10").expect("day");
        let text = summary_table(&document, today);
        for line in text.lines() {
            assert!(line.chars().count() <= TABLE_WIDTH, "{line:?}");
        }
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        let twitter = text
            .lines()
            .find(|line| line.starts_with("twitter / social / laun"))
            .unwrap_or_else(|| panic!("no twitter line in:\n{text}"));
        let cells: Vec<&str> = twitter.split_whitespace().collect();
        // Visits, visitors, first opens, players, conversion (no visitors), D1, D7.
        assert_eq!(
            cells[cells.len() - 7..],
            ["0", "0", "1,234,568", "1,234,568", "-", "50.0%", "50.0%"],
            "{text}"
        );
        assert!(
            text.lines().any(|line| line.starts_with("Total ")),
            "{text}"
        );
        assert!(text.contains("--detail"), "{text}");
    }

    #[test]
    fn table_aligns_numbers_right() {
        let text = aligned(
            &["NAME", "N"],
            &[
                vec!["a".into(), "5".into()],
                vec!["long".into(), "100".into()],
            ],
            1,
            &[],
            100,
        );
        assert_eq!(text, "NAME    N\na       5\nlong  100\n");
    }

    #[test]
    fn a_table_fits_a_hundred_columns_and_shows_no_control_characters() {
        let long = |name: &str| format!("{name}-{}", "x".repeat(40));
        let row = TrafficRow {
            day: "2026-11-21".into(),
            game: Some(long("game")),
            campaign: Campaign {
                source: Some("\u{1b}]0;owned\u{7}\nforged".into()),
                medium: Some(long("medium")),
                campaign: Some(long("campaign")),
                content: None,
                term: None,
                channel: None,
            },
            referrer_host: Some(long("referrer")),
            device: "smartphone".into(),
            // Without `privacy.geoip_db` no row has a country, and the column is left out.
            country: None,
            visits: 1_234_567,
            visitors: 1_000_000,
            consented_visits: 5,
        };
        let text = kind_table(&[row]);
        for line in text.lines() {
            assert!(line.chars().count() <= TABLE_WIDTH, "{line:?}");
        }
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b"), "{text}");
        assert!(text.contains("1234567"), "counts are never cut: {text}");
        assert!(text.contains("2026-11-21"), "nor is the day: {text}");
        assert!(
            text.contains("smartphone"),
            "the campaign is cut first: {text}"
        );
        assert!(
            text.contains("(no values: CONTENT, TERM, CHANNEL, COUNTRY)"),
            "{text}"
        );
    }
}
