//! Edge: configuration, stage two: `[[links]]`, the marketing links `/r/{link}` redirects.

use toml::Spanned;

use super::{Charset, Checker};
use crate::campaign::Campaign;
use crate::config::error::ConfigError;
use crate::config::raw::{RawLink, Text};
use crate::config::validated::{GameConfig, LinkConfig};

impl Checker<'_> {
    pub(super) fn links(
        &self,
        raw: &[Spanned<RawLink>],
        games: &[GameConfig],
    ) -> Result<Vec<LinkConfig>, ConfigError> {
        let mut links: Vec<LinkConfig> = Vec::new();
        for (i, table) in raw.iter().enumerate() {
            let link = table.get_ref();
            let key = |name: &str| format!("links[{i}].{name}");

            let name_raw = self.required(&key("name"), table, link.name.as_ref(), "a link name")?;
            let name = self.name(&key("name"), name_raw, Charset::Mixed)?;
            if let Some(j) = links.iter().position(|l| l.name == name) {
                return Err(self.at(
                    &key("name"),
                    name_raw,
                    format!("must be unique, but links[{j}] already uses {name:?}"),
                ));
            }

            let game = match &link.game {
                None => None,
                Some(v) if games.iter().any(|g| &g.id == v.get_ref()) => Some(v.get_ref().clone()),
                Some(v) => {
                    let known: Vec<&str> = games.iter().map(|g| g.id.as_str()).collect();
                    let known = if known.is_empty() {
                        "none is configured".to_string()
                    } else {
                        format!("configured: {}", known.join(", "))
                    };
                    return Err(self.at(
                        &key("game"),
                        v,
                        format!(
                            "must be the id of a game under [[games]] (got {:?}; {known})",
                            v.get_ref()
                        ),
                    ));
                }
            };

            let dest_raw = self.required(
                &key("destination"),
                table,
                link.destination.as_ref(),
                "the http(s) URL the link redirects to",
            )?;
            let destination = self.http_url(&key("destination"), dest_raw)?;

            let utm = match &link.utm {
                None => Campaign::default(),
                Some(utm) => Campaign {
                    source: normalise_utm(utm.source.as_ref()),
                    medium: normalise_utm(utm.medium.as_ref()),
                    campaign: normalise_utm(utm.campaign.as_ref()),
                    content: normalise_utm(utm.content.as_ref()),
                    term: normalise_utm(utm.term.as_ref()),
                    // A link's visits come from the visitor's browser: no channel.
                    channel: None,
                },
            };

            links.push(LinkConfig {
                name,
                game,
                destination,
                utm,
                forward_utm: link.forward_utm.as_ref().is_none_or(|v| *v.get_ref()),
            });
        }
        Ok(links)
    }
}

fn normalise_utm(value: Option<&Text>) -> Option<String> {
    value
        .map(|v| v.get_ref().trim().to_lowercase())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::campaign::Campaign;
    use crate::config::tests::{game, ok, refused};

    fn link(name: &str, extra: &str) -> String {
        format!(
            "[[links]]\nname = \"{name}\"\ndestination = \"https://store.example/app/1\"\n{extra}"
        )
    }

    #[test]
    fn links_parse_and_normalise_utm() {
        let config = ok(&format!(
            "{}{}",
            game("my-game", 1),
            link(
                "Steam-Launch",
                "game = \"my-game\"\nutm = { source = \" NewsLetter \", medium = \"\", \
                 term = \"Dice Game\" }\n"
            )
        ));
        let l = &config.links[0];
        assert_eq!(l.name, "Steam-Launch");
        assert_eq!(l.game.as_deref(), Some("my-game"));
        assert_eq!(l.destination.as_str(), "https://store.example/app/1");
        assert_eq!(
            l.utm,
            Campaign {
                source: Some("newsletter".to_string()),
                medium: None,
                campaign: None,
                content: None,
                term: Some("dice game".to_string()),
                channel: None,
            }
        );
        assert!(l.forward_utm);
        let config = ok(&link("x", "forward_utm = false\n"));
        assert!(!config.links[0].forward_utm);
        assert_eq!(config.links[0].game, None);
        assert_eq!(config.links[0].utm, Campaign::default());
    }

    #[test]
    fn link_name_is_checked() {
        refused(&link("a/b", ""), "links[0].name", 2);
        refused(&link(&"x".repeat(65), ""), "links[0].name", 2);
        refused(
            "[[links]]\ndestination = \"https://x.example\"\n",
            "links[0].name",
            1,
        );
        let msg = refused(
            &format!("{}{}", link("a", ""), link("a", "")),
            "links[1].name",
            5,
        );
        assert!(msg.contains("unique"), "{msg}");
    }

    #[test]
    fn link_game_must_be_configured() {
        let msg = refused(
            &format!("{}{}", game("a", 1), link("l", "game = \"b\"\n")),
            "links[0].game",
            7,
        );
        assert!(msg.contains("configured: a"), "{msg}");
        refused(&link("l", "game = \"b\"\n"), "links[0].game", 4);
    }

    #[test]
    fn link_destination_is_an_http_url() {
        refused("[[links]]\nname = \"l\"\n", "links[0].destination", 1);
        for bad in [
            "/relative",
            "store.example/app",
            "ftp://store.example/",
            "javascript:alert(1)",
        ] {
            refused(
                &format!("[[links]]\nname = \"l\"\ndestination = \"{bad}\"\n"),
                "links[0].destination",
                3,
            );
        }
    }
}
