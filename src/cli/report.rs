//! Edge: the aggregates document, and a data request's answer, as a terminal table or CSV (JSON
//! is serde's).

use chrono::NaiveDate;

use crate::attribution::Document;
use crate::rows::{Column, ConversionRow, PageRow, Row, SourceRow, SubjectEvent, TrafficRow};
use crate::store::SubjectReport;
use crate::summary;

/// One line per campaign: its visits, the players it brought, the conversion rate and the
/// returns (`crate::summary`); what the columns mean below it. A campaign's name longer than
/// the width leaves it goes on over more lines; it is never cut.
pub(super) fn summary_table(document: &Document, today: NaiveDate, width: usize) -> String {
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
    // The numbers keep their width; the label takes what they leave, over several lines.
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
    let room = width.saturating_sub(numbers).max(MIN_COLUMN);
    out.push_str(&aligned(&header, &rows, 1, Some(room)));
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
device, and the referrer hosts and landing pages: --detail.
";

/// Four tables, traffic, conversions, sources then pages, with `-` for none; each as one block
/// per row where its columns do not fit `width`.
pub(super) fn table(document: &Document, width: usize) -> String {
    let mut out = format!(
        "Aggregates {} .. {} (collector {}, {}, lookback {} days)\n\nTraffic\n",
        document.from,
        document.to,
        document.collector_id,
        document.attribution.model,
        document.attribution.lookback_days
    );
    out.push_str(&kind_table(&document.traffic, width));
    out.push_str("\nConversions\n");
    out.push_str(&kind_table(&document.conversions, width));
    out.push_str("\nSources (referrer hosts)\n");
    out.push_str(&kind_table(&document.sources, width));
    out.push_str("\nPages (landing pages)\n");
    out.push_str(&kind_table(&document.pages, width));
    out
}

/// What is held about one player: a line saying whose and whether blocked, then their events.
pub(super) fn subject_table(report: &SubjectReport, width: usize) -> String {
    let mut out = format!(
        "Held about this user id of game {}: {} game event(s); blocked: {}\n\n",
        report.game,
        report.events.len(),
        if report.blocked { "yes" } else { "no" }
    );
    out.push_str(&columns_table(
        &report.events,
        SubjectEvent::columns(),
        width,
    ));
    out
}

/// One kind of row as a table, by its column list.
fn kind_table<R: Row>(rows: &[R], width: usize) -> String {
    columns_table(rows, R::columns(), width)
}

/// Rows as a table, by a column list. Text columns no row has a value in are left out (and
/// named below the table). Where the rest is wider than `width`, each row is a block of
/// `NAME  value` lines instead: no value is ever cut.
fn columns_table<R>(rows: &[R], columns: Vec<Column<R>>, width: usize) -> String {
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
    let mut out = if natural_width(&header, &cells) <= width {
        aligned(&header, &cells, first_number, None)
    } else {
        blocks(&header, &cells)
    };
    if !rows.is_empty() && !empty.is_empty() {
        let names: Vec<&str> = empty.iter().map(|column| column.header).collect();
        out.push_str(&format!("  (no values: {})\n", names.join(", ")));
    }
    out
}

/// The width a terminal table gets: `COLUMNS` when set, else the terminal's, else 100 (a pipe or
/// a file).
pub(super) fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|columns| columns.trim().parse::<usize>().ok())
        .filter(|columns| *columns > 0)
        .or_else(|| {
            terminal_size::terminal_size_of(std::io::stdout())
                .map(|(terminal_size::Width(columns), _)| usize::from(columns))
        })
        .unwrap_or(DEFAULT_WIDTH)
        .max(MIN_WIDTH)
}

/// The width when there is no terminal to ask.
const DEFAULT_WIDTH: usize = 100;
/// Narrower terminals get this width and wrap the lines themselves.
const MIN_WIDTH: usize = 40;
/// A label column is never wrapped narrower than this.
const MIN_COLUMN: usize = 12;

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

/// A table's width with every cell whole.
fn natural_width(header: &[&str], rows: &[Vec<String>]) -> usize {
    let widths = column_widths(header, rows);
    widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)
}

fn column_widths(header: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    widths
}

/// Columns padded to their widest cell; columns from `first_number` on are right-aligned. With
/// `wrap_first`, the first column is at most that wide and a longer cell goes on over the next
/// lines, broken after a space or a `/` where it can be.
fn aligned(
    header: &[&str],
    rows: &[Vec<String>],
    first_number: usize,
    wrap_first: Option<usize>,
) -> String {
    if rows.is_empty() {
        return "  (none)\n".into();
    }
    let mut widths = column_widths(header, rows);
    if let (Some(room), Some(first)) = (wrap_first, widths.first_mut()) {
        *first = (*first).min(room);
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if index > 0 {
                text.push_str("  ");
            }
            if index >= first_number {
                text.push_str(&format!("{cell:>width$}"));
            } else {
                text.push_str(&format!("{cell:<width$}"));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        let mut cells: Vec<&str> = row.iter().map(String::as_str).collect();
        let first_lines = match (wrap_first, cells.first()) {
            (Some(_), Some(first)) => wrapped(first, widths[0]),
            _ => Vec::new(),
        };
        let mut rest = first_lines.iter();
        if let Some(first) = rest.next() {
            cells[0] = first;
        }
        out.push_str(&line(&cells));
        for more in rest {
            out.push_str(&line(&[more]));
        }
    }
    out
}

/// `text` in lines of at most `width` characters, each broken after the last space or `/`
/// that fits, or at `width` where none does. Every character is kept.
fn wrapped(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut rest: Vec<char> = text.chars().collect();
    while rest.len() > width {
        let at = rest[..width]
            .iter()
            .rposition(|c| *c == ' ' || *c == '/')
            .filter(|at| *at > 0)
            .map_or(width, |at| at + 1);
        lines.push(rest[..at].iter().collect::<String>().trim_end().to_string());
        rest = rest[at..]
            .iter()
            .copied()
            .skip_while(|c| *c == ' ')
            .collect();
    }
    lines.push(rest.into_iter().collect());
    lines
}

/// One block per row, a `NAME  value` line per column, for tables wider than the terminal
/// (as `psql`'s expanded display).
fn blocks(header: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "  (none)\n".into();
    }
    let name_width = header.iter().map(|h| h.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for (number, row) in rows.iter().enumerate() {
        out.push_str(&format!("-- row {} --\n", number + 1));
        for (name, value) in header.iter().zip(row) {
            out.push_str(&format!("  {name:<name_width$}  {value}\n"));
        }
    }
    out
}

/// One CSV table: a `kind` column (`traffic`, `conversions`, `sources` or `pages`) and the
/// union of the row shapes (text columns, then counts), empty where a field does not apply.
pub(super) fn csv(document: &Document) -> String {
    let traffic = TrafficRow::columns();
    let conversions = ConversionRow::columns();
    let sources = SourceRow::columns();
    let pages = PageRow::columns();
    let names = csv_columns(&[
        shape(&traffic),
        shape(&conversions),
        shape(&sources),
        shape(&pages),
    ]);
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
    out.push_str(&csv_rows("sources", &document.sources, &sources, &names));
    out.push_str(&csv_rows("pages", &document.pages, &pages, &names));
    out
}

/// A kind's columns: each name and whether it is a count.
fn shape<R>(columns: &[Column<R>]) -> Vec<(&'static str, bool)> {
    columns
        .iter()
        .map(|column| (column.name, column.count))
        .collect()
}

/// Every column of any kind once: the text columns in order of first appearance, then the
/// counts.
fn csv_columns(kinds: &[Vec<(&'static str, bool)>]) -> Vec<&'static str> {
    let all = || kinds.iter().flatten().copied();
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
    use crate::campaign::Campaign;

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
        let names = csv_columns(&[
            shape(&TrafficRow::columns()),
            shape(&ConversionRow::columns()),
            shape(&SourceRow::columns()),
            shape(&PageRow::columns()),
        ]);
        assert_eq!(
            names.join(","),
            "day,game,source,medium,campaign,content,term,channel,referrer_host,device,\
             country,platform,storefront,event,page,visits,visitors,consented_visits,events,users,\
             returned_d1,returned_d7,players"
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
            cluster: None,
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
            sources: vec![],
            pages: vec![],
        };
        let today = crate::clock::parse_day("2026-11-10").expect("day");
        let text = summary_table(&document, today, 100);
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "{line:?}");
        }
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(!text.contains('~'), "nothing is cut: {text}");
        let at = text
            .lines()
            .position(|line| line.starts_with("twitter / social /"))
            .unwrap_or_else(|| panic!("no twitter line in:\n{text}"));
        let twitter = text.lines().nth(at).unwrap_or_default();
        // The name goes on over the next lines, whole: lines that hold its next part alone.
        let label: String = twitter
            .split("  ")
            .next()
            .into_iter()
            .chain(
                text.lines()
                    .skip(at + 1)
                    .take_while(|line| !line.trim().contains("  ") && !line.is_empty()),
            )
            .collect::<String>()
            .replace(' ', "");
        assert_eq!(
            label,
            format!("twitter/social/launch-{}", "x".repeat(80)),
            "{text}"
        );
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
            None,
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
        let text = kind_table(&[row], 100);
        for line in text.lines() {
            assert!(line.chars().count() <= 100, "{line:?}");
        }
        assert!(
            text.starts_with("-- row 1 --\n"),
            "one block per row: {text}"
        );
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b"), "{text}");
        assert!(text.contains("1234567"), "counts are never cut: {text}");
        assert!(text.contains("2026-11-21"), "nor is the day: {text}");
        for whole in [
            long("game"),
            long("medium"),
            long("campaign"),
            long("referrer"),
        ] {
            assert!(text.contains(&whole), "{whole} is cut: {text}");
        }
        assert!(text.contains("  DEVICE"), "{text}");
        assert!(
            text.contains("(no values: CONTENT, TERM, CHANNEL, COUNTRY)"),
            "{text}"
        );
    }

    #[test]
    fn a_table_that_fits_stays_a_table() {
        let text = aligned(
            &["DAY", "VISITS"],
            &[vec!["2026-11-01".into(), "7".into()]],
            1,
            None,
        );
        assert_eq!(
            natural_width(&["DAY", "VISITS"], &[vec!["2026-11-01".into(), "7".into()]]),
            18
        );
        assert_eq!(text, "DAY         VISITS\n2026-11-01       7\n");
    }

    #[test]
    fn wrapping_keeps_every_character_and_breaks_after_a_separator() {
        assert_eq!(
            wrapped("newsletter / email / launch", 20),
            ["newsletter / email /", "launch"]
        );
        assert_eq!(wrapped("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(wrapped("short", 20), ["short"]);
    }
}
