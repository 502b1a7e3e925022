//! Text: what no stored or echoed text holds, whoever sent it: control characters, which
//! terminals act on and which forge log and table lines. The rules of which input is cleaned
//! and which refused are ingest's (`ingest::text`); these are the pieces they share with the
//! page minimisation of `privacy`.

use std::borrow::Cow;

/// Most characters of a client's value echoed in a refusal.
const MAX_ECHO_CHARS: usize = 64;

/// A character no stored text holds: the C0 and C1 controls and DEL (which terminals act on:
/// `ESC [` sequences, the bell, line breaks that forge log and table lines, NUL), and the
/// bidirectional controls, which reorder what a terminal or a spreadsheet shows.
pub fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
        )
}

/// `text` without its control characters (borrowed when it has none).
pub(crate) fn without_controls(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_control) {
        Cow::Owned(text.chars().filter(|c| !is_control(*c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// Echoes at most 64 characters of a client's value, without control characters.
pub(crate) fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| !is_control(*c))
        .take(MAX_ECHO_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_go_and_the_rest_stays() {
        assert_eq!(
            without_controls("twit\u{1b}[31mter\u{7}\n\0"),
            "twit[31mter"
        );
        assert_eq!(without_controls("a\u{202e}b\u{85}c"), "abc");
        assert!(matches!(
            without_controls("été 🎮"),
            Cow::Borrowed("été 🎮")
        ));
        assert_eq!(printable(&"x\n".repeat(100)).len(), MAX_ECHO_CHARS);
    }
}
