//! Edge: the aggregates document as a terminal table or CSV (JSON is serde's).

use crate::attribution::Document;

/// Two aligned tables, traffic then conversions, with `-` for none.
pub fn table(document: &Document) -> String {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let mut out = format!(
        "Aggregates {} .. {} (collector {}, {}, lookback {} days)\n\nTraffic\n",
        document.from,
        document.to,
        document.collector_id,
        document.attribution.model,
        document.attribution.lookback_days
    );
    let traffic: Vec<Vec<String>> = document
        .traffic
        .iter()
        .map(|row| {
            vec![
                row.day.clone(),
                dash(&row.game),
                dash(&row.source),
                dash(&row.medium),
                dash(&row.campaign),
                dash(&row.content),
                dash(&row.term),
                dash(&row.referrer_host),
                row.device.clone(),
                row.visits.to_string(),
                row.visitors.to_string(),
                row.consented_visits.to_string(),
            ]
        })
        .collect();
    out.push_str(&aligned(
        &[
            "DAY",
            "GAME",
            "SOURCE",
            "MEDIUM",
            "CAMPAIGN",
            "CONTENT",
            "TERM",
            "REFERRER",
            "DEVICE",
            "VISITS",
            "VISITORS",
            "CONSENTED",
        ],
        &traffic,
        9,
    ));
    out.push_str("\nConversions\n");
    let conversions: Vec<Vec<String>> = document
        .conversions
        .iter()
        .map(|row| {
            vec![
                row.day.clone(),
                row.game.clone(),
                dash(&row.source),
                dash(&row.medium),
                dash(&row.campaign),
                dash(&row.content),
                dash(&row.term),
                dash(&row.platform),
                dash(&row.storefront),
                row.event.clone(),
                row.events.to_string(),
                row.users.to_string(),
            ]
        })
        .collect();
    out.push_str(&aligned(
        &[
            "DAY",
            "GAME",
            "SOURCE",
            "MEDIUM",
            "CAMPAIGN",
            "CONTENT",
            "TERM",
            "PLATFORM",
            "STOREFRONT",
            "EVENT",
            "EVENTS",
            "USERS",
        ],
        &conversions,
        10,
    ));
    out
}

/// Columns padded to their widest cell; columns from `first_number` on are right-aligned.
fn aligned(header: &[&str], rows: &[Vec<String>], first_number: usize) -> String {
    if rows.is_empty() {
        return "  (none)\n".into();
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
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
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One CSV table: a `kind` column (`traffic` or `conversions`) and the union of both row
/// shapes, empty where a field does not apply.
pub fn csv(document: &Document) -> String {
    let mut out = String::from(
        "kind,day,game,source,medium,campaign,content,term,referrer_host,device,platform,\
         storefront,event,visits,visitors,consented_visits,events,users\n",
    );
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    for row in &document.traffic {
        let cells = [
            "traffic".to_string(),
            row.day.clone(),
            text(&row.game),
            text(&row.source),
            text(&row.medium),
            text(&row.campaign),
            text(&row.content),
            text(&row.term),
            text(&row.referrer_host),
            row.device.clone(),
            String::new(),
            String::new(),
            String::new(),
            row.visits.to_string(),
            row.visitors.to_string(),
            row.consented_visits.to_string(),
            String::new(),
            String::new(),
        ];
        out.push_str(&csv_line(&cells));
    }
    for row in &document.conversions {
        let cells = [
            "conversions".to_string(),
            row.day.clone(),
            row.game.clone(),
            text(&row.source),
            text(&row.medium),
            text(&row.campaign),
            text(&row.content),
            text(&row.term),
            String::new(),
            String::new(),
            text(&row.platform),
            text(&row.storefront),
            row.event.clone(),
            String::new(),
            String::new(),
            String::new(),
            row.events.to_string(),
            row.users.to_string(),
        ];
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
    fn table_aligns_numbers_right() {
        let text = aligned(
            &["NAME", "N"],
            &[
                vec!["a".into(), "5".into()],
                vec!["long".into(), "100".into()],
            ],
            1,
        );
        assert_eq!(text, "NAME    N\na       5\nlong  100\n");
    }
}
