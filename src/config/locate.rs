//! Edge: configuration, the locator: the dotted key and the line that an error names.
//!
//! The toml crate reports where a problem is (a byte span) but not which key: the key path
//! (`links[0].utm.source`) is recovered from the document at that span.

use std::ops::Range;

use toml::Spanned;

/// 1-based line of a byte offset.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Rewords the serde/toml messages that would otherwise talk about Rust types.
pub(super) fn friendly_toml_message(message: &str) -> String {
    if message.contains(" as i128") {
        return "is too large: expected an integer in range".to_string();
    }
    let message = message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace(
            "duplicate key",
            "is defined twice; a key or [section] may appear only once",
        );
    if message.starts_with("invalid type: map, expected an array") {
        // `[games]` instead of `[[games]]` is the usual cause.
        format!("{message}; a repeated section is written with double brackets, like [[games]]")
    } else {
        message
    }
}

pub(super) fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// The dotted key (`links[0].utm.bogus`) whose key or value covers byte `pos`.
pub(super) fn key_at(text: &str, pos: usize) -> Option<String> {
    // Recoverable, so syntax errors still get a best-effort document to search.
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    key_in_table(doc.get_ref(), pos, "").or_else(|| key_from_text(text, pos))
}

fn covers(span: &Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || (span.is_empty() && span.start == pos)
}

fn key_in_table(table: &toml::de::DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let path = join_key(prefix, k.get_ref());
        if covers(&k.span(), pos) {
            Some(path)
        } else {
            key_in_value(v, pos, &path)
        }
    })
}

fn key_in_value(value: &Spanned<toml::de::DeValue<'_>>, pos: usize, path: &str) -> Option<String> {
    // Children first: a table's span (its header or braces) encloses or precedes its keys.
    let inner = match value.get_ref() {
        toml::de::DeValue::Table(table) => key_in_table(table, pos, path),
        toml::de::DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| key_in_value(item, pos, &format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| covers(&value.span(), pos).then(|| path.to_string()))
}

/// Fallback for spans the parsed document does not cover (a duplicate key, a broken line): the
/// enclosing `[table]` header plus the key written before `=` on that line.
fn key_from_text(text: &str, pos: usize) -> Option<String> {
    let line_index = line_of(text, pos) - 1;
    let mut header = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for (index, line) in text.lines().enumerate().take(line_index + 1) {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.clone(), 0));
                    0
                }
            };
            header = format!("{name}[{count}]");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            header = name.trim().to_string();
        } else if index == line_index {
            let key = line.split('=').next().map(str::trim).unwrap_or_default();
            if line.contains('=') && !key.is_empty() {
                return Some(if header.is_empty() {
                    key.to_string()
                } else {
                    format!("{header}.{key}")
                });
            }
        }
    }
    (!header.is_empty()).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{game, parse, refused};

    // -- toml-level errors ----------------------------------------------------------------------

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let msg = refused(
            "[server]\nlisten = \"0.0.0.0:443\"\n\nlisen = \"x\"\n",
            "server.lisen",
            4,
        );
        assert!(msg.contains("unknown key"), "{msg}");
        assert!(msg.contains("`listen`"), "lists the valid keys: {msg}");
    }

    #[test]
    fn unknown_keys_everywhere_are_refused() {
        refused("\n[bogus]\nx = 1\n", "bogus", 2);
        refused("retention_days = 3\n", "retention_days", 1);
        refused(
            &format!("{}colour = \"red\"\n", game("a", 1)),
            "games[0].colour",
            4,
        );
        refused(
            &format!(
                "{}{}\n[[links]]\nname = \"l\"\ndestination = \"https://x.example/\"\n\
                 utm = {{ source = \"a\", sorce = \"b\" }}\n",
                game("a", 1),
                game("b", 2)
            ),
            "links[0].utm.sorce",
            11,
        );
        refused(
            "[central]\nurl = \"https://t.example\"\ntoken = \"x\"\n",
            "central.token",
            3,
        );
        refused(
            "[[tokens]]\nname = \"a\"\nscope = [\"metrics\"]\n",
            "tokens[0].scope",
            3,
        );
        refused("[log]\nlevel = \"info\"\nfile = \"x\"\n", "log.file", 3);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[privacy]\nretention_days = 30\nmin_cell_size = \n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("collector.toml:3:"), "{msg}");
        assert!(msg.contains("privacy.min_cell_size"), "{msg}");

        refused(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
            "server.listen",
            3,
        );
        refused("[log]\n\n[log]\n", "log", 3);
    }

    #[test]
    fn single_brackets_for_a_repeated_section_are_explained() {
        let msg = refused("[games]\nid = \"a\"\n", "games", 1);
        assert!(msg.contains("[[games]]"), "{msg}");
    }

    #[test]
    fn wrong_types_are_named() {
        let msg = refused(
            "[privacy]\nretention_days = \"30\"\n",
            "privacy.retention_days",
            2,
        );
        assert!(msg.contains("expected an integer"), "{msg}");
        refused("[privacy]\nipv6_prefix = 64.0\n", "privacy.ipv6_prefix", 2);
        refused(
            "[privacy]\nmin_cell_size = 99999999999999999999\n",
            "privacy.min_cell_size",
            2,
        );
        refused("[server]\ntls = \"no\"\n", "server.tls", 2);
        refused("[server]\nlisten = 443\n", "server.listen", 2);
        refused(
            "[server]\ntrusted_proxies = \"10.0.0.0/8\"\n",
            "server.trusted_proxies",
            2,
        );
        refused(
            "[server]\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  7,\n]\n",
            "server.trusted_proxies[1]",
            4,
        );
        refused(
            "[attribution]\nrequire_consent = 1\n",
            "attribution.require_consent",
            2,
        );
        refused(
            &format!("{}forward_utm = \"yes\"\n", "[[links]]\nname = \"l\"\n"),
            "links[0].forward_utm",
            3,
        );
    }
}
