//! Privacy: a page URL reduced to host + path + UTM parameters, a referrer reduced to its host.
//!
//! Every other query parameter and the fragment are dropped here. Ad click ids survive only
//! with consent.

use url::Url;

use crate::campaign::{Campaign, utm_index};
use crate::text::without_controls;

/// Longest UTM or click-id value kept; longer values are cut (on a character boundary).
pub(crate) const MAX_VALUE_CHARS: usize = 200;
/// Longest path kept; a longer one is cut.
pub(crate) const MAX_PATH_CHARS: usize = 1024;

/// Click ids of the major ad networks: identifiers of one ad click, kept only with consent.
pub(crate) const CLICK_ID_PARAMS: &[&str] = &[
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "fbclid",
    "ttclid",
    "msclkid",
    "twclid",
    "li_fat_id",
    "epik",
    "rdt_cid",
    "sccid",
    "yclid",
    "irclickid",
];

/// The minimised page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub host: String,
    pub path: String,
    pub campaign: Campaign,
    /// `(parameter, value)` pairs; always empty without consent.
    pub click_ids: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PageError {
    #[error("is not an absolute URL")]
    NotAUrl,
    #[error("must be an http or https URL")]
    Scheme,
    #[error("has no host")]
    NoHost,
}

pub(crate) fn minimise_page(raw: &str, consent: bool) -> Result<Page, PageError> {
    let url = Url::parse(raw.trim()).map_err(|_| PageError::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(PageError::Scheme);
    }
    let host = url.host_str().ok_or(PageError::NoHost)?.to_string();
    let mut campaign = Campaign::default();
    let mut click_ids = Vec::new();
    for (key, value) in url.query_pairs() {
        let key = key.to_ascii_lowercase();
        let Some(slot) = utm_index(&key).and_then(|index| campaign.value_mut(index)) else {
            if consent && CLICK_ID_PARAMS.contains(&key.as_str()) {
                let value = without_controls(&value);
                let value = cut(value.trim(), MAX_VALUE_CHARS);
                if !value.is_empty() && !click_ids.iter().any(|(k, _)| k == &key) {
                    click_ids.push((key, value.to_string()));
                }
            }
            continue;
        };
        // The first occurrence wins, as in most analytics tools.
        if slot.is_none() {
            *slot = normalise_utm(&value);
        }
    }
    Ok(Page {
        host,
        path: cut(url.path(), MAX_PATH_CHARS).to_string(),
        campaign,
        click_ids,
    })
}

/// UTM values lose their control characters (a link pasted into a mail or a chat picks up
/// `%0A`, and an attacker's `%1B[...` would reach every terminal that prints the aggregates),
/// then are trimmed and lower-cased; empty means absent.
pub(crate) fn normalise_utm(value: &str) -> Option<String> {
    let value = without_controls(value);
    let value = cut(value.trim(), MAX_VALUE_CHARS).to_lowercase();
    (!value.is_empty()).then_some(value)
}

/// The referrer's host, or `None` for an empty, relative or non-web referrer. A referrer is
/// advisory: a malformed one is dropped rather than rejecting the visit.
pub(crate) fn referrer_host(raw: &str) -> Option<String> {
    let url = Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https" | "android-app") {
        return None;
    }
    url.host_str().map(str::to_string)
}

fn cut(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_host_path_and_utm_only() {
        let page = minimise_page(
            "https://Play.Example.com/launch/?utm_source=%20Twitter%20&utm_medium=Social&utm_campaign=Launch&email=a%40b.c&session=42&gclid=abc#section",
            false,
        )
        .expect("valid url");
        assert_eq!(page.host, "play.example.com");
        assert_eq!(page.path, "/launch/");
        assert_eq!(page.campaign.source.as_deref(), Some("twitter"));
        assert_eq!(page.campaign.medium.as_deref(), Some("social"));
        assert_eq!(page.campaign.campaign.as_deref(), Some("launch"));
        assert_eq!(page.campaign.content, None);
        assert!(page.click_ids.is_empty(), "click ids need consent");
    }

    #[test]
    fn click_ids_only_with_consent() {
        let page =
            minimise_page("https://a.example/?gclid=abc&fbclid=def&x=1", true).expect("valid url");
        assert_eq!(
            page.click_ids,
            vec![
                ("gclid".to_string(), "abc".to_string()),
                ("fbclid".to_string(), "def".to_string())
            ]
        );
    }

    #[test]
    fn empty_utm_is_absent_and_long_values_are_cut() {
        let long = "x".repeat(500);
        let page = minimise_page(
            &format!("https://a.example/?utm_source=&utm_term={long}"),
            false,
        )
        .expect("valid url");
        assert_eq!(page.campaign.source, None);
        assert_eq!(page.campaign.term.map(|t| t.len()), Some(MAX_VALUE_CHARS));
    }

    #[test]
    fn control_characters_never_reach_a_utm_value_or_a_click_id() {
        let page = minimise_page(
            "https://a.example/?utm_source=twit%1Bter%07&utm_medium=%0Aemail%00&utm_term=%E2%80%AEx%C2%85&gclid=a%0Db",
            true,
        )
        .expect("valid url");
        assert_eq!(page.campaign.source.as_deref(), Some("twitter"));
        assert_eq!(page.campaign.medium.as_deref(), Some("email"));
        assert_eq!(page.campaign.term.as_deref(), Some("x"));
        assert_eq!(
            page.click_ids,
            vec![("gclid".to_string(), "ab".to_string())]
        );
        assert_eq!(normalise_utm("%00"), Some("%00".into()), "decoded already");
        assert_eq!(normalise_utm("\u{0}\u{7} "), None, "nothing left");
    }

    #[test]
    fn rejects_non_web_urls() {
        assert_eq!(minimise_page("not a url", false), Err(PageError::NotAUrl));
        assert_eq!(minimise_page("/relative", false), Err(PageError::NotAUrl));
        assert_eq!(
            minimise_page("javascript:alert(1)", false),
            Err(PageError::Scheme)
        );
        assert_eq!(
            minimise_page("file:///etc/passwd", false),
            Err(PageError::Scheme)
        );
    }

    #[test]
    fn referrer_is_its_host() {
        assert_eq!(
            referrer_host("https://t.co/abc?secret=1").as_deref(),
            Some("t.co")
        );
        assert_eq!(referrer_host(""), None);
        assert_eq!(referrer_host("garbage"), None);
        assert_eq!(referrer_host("javascript:void(0)"), None);
    }
}
