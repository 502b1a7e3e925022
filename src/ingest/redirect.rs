//! Ingest: a redirect link (`GET /r/{link}`): which link, its campaign, and where it goes.
//!
//! The destination is always the configured one; the request may only change the UTM values
//! appended to it, which are encoded as query values and so cannot change its scheme, host or
//! path.

use url::Url;

use crate::campaign::{Campaign, UTM_PARAMETERS, utm_index};
use crate::config::LinkConfig;
use crate::privacy::page::normalise_utm;

/// The configured link named by the path segment after `/r/`, matched exactly: names are
/// `[A-Za-z0-9._-]`, so anything encoded, with a slash or a backslash is no link.
pub fn find_link<'a>(links: &'a [LinkConfig], segment: &str) -> Option<&'a LinkConfig> {
    links.iter().find(|link| link.name == segment)
}

/// The link's UTM defaults with the query's UTM parameters laid over them: the first non-empty
/// occurrence of each wins, normalised like a page's. Every other parameter is ignored.
pub fn link_utm(defaults: &Campaign, query: Option<&str>) -> Campaign {
    let mut utm = defaults.clone();
    let mut seen = [false; UTM_PARAMETERS.len()];
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let Some(index) = utm_index(&key) else {
            continue;
        };
        let Some(value) = normalise_utm(&value) else {
            continue;
        };
        if !seen[index]
            && let Some(slot) = utm.value_mut(index)
        {
            seen[index] = true;
            *slot = Some(value);
        }
    }
    utm
}

/// Where the link sends the visitor: the configured destination, with the UTM parameters
/// (replacing any of the same name it already has) when the link forwards them.
pub fn destination(link: &LinkConfig, utm: &Campaign) -> Url {
    let mut url = link.destination.clone();
    let values = utm.values();
    if !link.forward_utm || values.iter().all(|value| value.is_none()) {
        return url;
    }
    let replaced = |key: &str| {
        UTM_PARAMETERS
            .iter()
            .zip(values)
            .any(|(name, value)| value.is_some() && key.eq_ignore_ascii_case(name))
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| !replaced(key))
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        query.extend_pairs(kept);
        for (name, value) in UTM_PARAMETERS.iter().zip(values) {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(destination: &str, forward_utm: bool) -> LinkConfig {
        LinkConfig {
            name: "launch".into(),
            game: None,
            destination: Url::parse(destination).expect("url"),
            utm: Campaign {
                source: Some("newsletter".into()),
                medium: Some("email".into()),
                campaign: Some("launch".into()),
                ..Campaign::default()
            },
            forward_utm,
        }
    }

    #[test]
    fn query_utms_override_defaults_one_by_one() {
        let l = link("https://store.example/app/1", true);
        let utm = link_utm(
            &l.utm,
            Some("utm_source=%20Twitter&utm_source=second&UTM_CONTENT=Banner&utm_medium=&gclid=x"),
        );
        assert_eq!(utm.source.as_deref(), Some("twitter"));
        assert_eq!(
            utm.medium.as_deref(),
            Some("email"),
            "empty keeps the default"
        );
        assert_eq!(utm.campaign.as_deref(), Some("launch"));
        assert_eq!(utm.content.as_deref(), Some("banner"));
        assert_eq!(utm.term, None);
    }

    #[test]
    fn destination_keeps_its_own_query_and_fragment_and_replaces_utms() {
        let l = link(
            "https://store.example/app/1?l=en&utm_source=old&utm_term=kept#reviews",
            true,
        );
        let url = destination(&l, &l.utm);
        assert_eq!(
            url.as_str(),
            "https://store.example/app/1?l=en&utm_term=kept&utm_source=newsletter&utm_medium=email&utm_campaign=launch#reviews"
        );
    }

    #[test]
    fn destination_is_untouched_without_forwarding_or_utms() {
        let l = link("https://store.example/app/1?x=1", false);
        assert_eq!(
            destination(&l, &l.utm).as_str(),
            "https://store.example/app/1?x=1"
        );
        let l = link("https://store.example/app/1", true);
        assert_eq!(
            destination(&l, &Campaign::default()).as_str(),
            "https://store.example/app/1"
        );
    }

    #[test]
    fn hostile_utm_values_stay_query_values() {
        let l = link("https://store.example/app/1", true);
        let utm = link_utm(
            &Campaign::default(),
            Some(
                "utm_source=%2F%2Fevil.example&utm_medium=x%26url%3Dhttps%3A%2F%2Fevil.example%23",
            ),
        );
        let url = destination(&l, &utm);
        assert_eq!(url.host_str(), Some("store.example"));
        assert_eq!(url.path(), "/app/1");
        assert_eq!(url.fragment(), None);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            vec![
                ("utm_source".into(), "//evil.example".into()),
                ("utm_medium".into(), "x&url=https://evil.example#".into()),
            ]
        );
    }

    #[test]
    fn names_match_exactly() {
        let links = vec![link("https://store.example/", true)];
        assert!(find_link(&links, "launch").is_some());
        for other in [
            "Launch",
            "launch/",
            "launch%2F",
            "",
            "launch/evil.example",
            "\\launch",
        ] {
            assert!(find_link(&links, other).is_none(), "{other}");
        }
    }
}
