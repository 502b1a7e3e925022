//! Edge: configuration, stage two: `[[games]]`, each game's id, measure keys and events.

use toml::Spanned;

use super::{Charset, Checker, HASH_WANTED};
use crate::config::defaults::default_events;
use crate::config::error::ConfigError;
use crate::config::raw::{RawGame, Text, TextList};
use crate::config::validated::{GameConfig, MeasureKey};

impl Checker<'_> {
    pub(super) fn games(&self, raw: &[Spanned<RawGame>]) -> Result<Vec<GameConfig>, ConfigError> {
        let mut games: Vec<GameConfig> = Vec::new();
        for (i, table) in raw.iter().enumerate() {
            let game = table.get_ref();
            let key = |name: &str| format!("games[{i}].{name}");

            let id_raw = self.required(
                &key("id"),
                table,
                game.id.as_ref(),
                "a game id such as \"my-game\"",
            )?;
            let id = self.name(&key("id"), id_raw, Charset::Lower)?;
            if let Some(j) = games.iter().position(|g| g.id == id) {
                return Err(self.at(
                    &key("id"),
                    id_raw,
                    format!("must be unique, but games[{j}] already uses {id:?}"),
                ));
            }

            let measure_keys = self.measure_keys(i, table, game, &games)?;

            let events = match &game.events {
                None => default_events(),
                Some(list) => self.events(&key("events"), list)?,
            };
            games.push(GameConfig {
                id,
                measure_keys,
                events,
            });
        }
        Ok(games)
    }

    /// The keys of `games[i]`: `measure_key`, then each of `measure_keys`. Every key names one
    /// game, so a key may appear once in the whole file; names are unique within the game.
    fn measure_keys(
        &self,
        i: usize,
        table: &Spanned<RawGame>,
        game: &RawGame,
        earlier: &[GameConfig],
    ) -> Result<Vec<MeasureKey>, ConfigError> {
        let mut keys: Vec<(MeasureKey, String, &Text)> = Vec::new();
        if let Some(hash) = &game.measure_key {
            let key = format!("games[{i}].measure_key");
            let measure_key = MeasureKey {
                name: MeasureKey::SINGLE_NAME.to_string(),
                hash: self.secret(&key, hash)?,
            };
            keys.push((measure_key, key, hash));
        }
        for (j, entry) in game
            .measure_keys
            .iter()
            .flat_map(|list| list.get_ref())
            .enumerate()
        {
            let key = |part: &str| format!("games[{i}].measure_keys[{j}]{part}");
            let hash_raw = self.required(
                &key(".hash"),
                entry,
                entry.get_ref().hash.as_ref(),
                HASH_WANTED,
            )?;
            let hash = self.secret(&key(".hash"), hash_raw)?;
            let name = match &entry.get_ref().name {
                Some(name) => {
                    let name = self.name(&key(".name"), name, Charset::Lower)?;
                    if let Some((_, other, _)) = keys.iter().find(|(k, ..)| k.name == name) {
                        return Err(self.at(
                            &key(".name"),
                            entry,
                            format!(
                                "must be unique within the game, but {other} is named {name:?}"
                            ),
                        ));
                    }
                    name
                }
                None => format!("measure_keys[{j}]"),
            };
            keys.push((MeasureKey { name, hash }, key(".hash"), hash_raw));
        }
        if keys.is_empty() {
            return Err(self.at(
                &format!("games[{i}].measure_key"),
                table,
                format!("is required (or `measure_keys`): {HASH_WANTED}"),
            ));
        }
        self.each_key_once(&keys, earlier)?;
        Ok(keys.into_iter().map(|(key, ..)| key).collect())
    }

    /// Refuses a key already used by an earlier game, or earlier in this one: the key names
    /// the game. `keys` holds each key with the dotted key that set it and its raw value.
    fn each_key_once(
        &self,
        keys: &[(MeasureKey, String, &Text)],
        earlier: &[GameConfig],
    ) -> Result<(), ConfigError> {
        for (n, (measure_key, key, raw)) in keys.iter().enumerate() {
            let mut used = earlier
                .iter()
                .enumerate()
                .flat_map(|(g, other)| {
                    other
                        .measure_keys
                        .iter()
                        .map(move |k| (format!("games[{g}] (key {:?})", k.name), &k.hash))
                })
                .chain(keys[..n].iter().map(|(k, key, _)| (key.clone(), &k.hash)));
            if let Some((other, _)) = used.find(|(_, hash)| **hash == measure_key.hash) {
                return Err(self.at(
                    key,
                    *raw,
                    format!(
                        "is the same key as {other}; each key is used once because the key names \
                         the game"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn events(&self, key: &str, list: &TextList) -> Result<Vec<String>, ConfigError> {
        if list.get_ref().is_empty() {
            return Err(self.at(
                key,
                list,
                "must list at least one event name, e.g. [\"first_game_open\", \"game_open\"]",
            ));
        }
        let mut events: Vec<String> = Vec::new();
        for (j, v) in list.get_ref().iter().enumerate() {
            let event = self.name(&format!("{key}[{j}]"), v, Charset::Lower)?;
            if events.contains(&event) {
                return Err(self.at(
                    &format!("{key}[{j}]"),
                    v,
                    format!("lists {event:?} twice; each event name must appear once"),
                ));
            }
            events.push(event);
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{game, hash, ok, refused};

    #[test]
    fn games_parse_with_default_events() {
        let config = ok(&format!("{}\n{}", game("a", 1), game("b.2_x-y", 2)));
        assert_eq!(config.games.len(), 2);
        assert_eq!(config.games[1].id, "b.2_x-y");
        assert_eq!(config.games[0].events, vec!["first_game_open", "game_open"]);
        assert!(config.games[0].measure_keys[0].hash.matches(&[1]));
        assert_eq!(config.games[0].measure_keys[0].name, "measure_key");
    }

    #[test]
    fn game_id_is_checked() {
        let msg = refused(&game("My Game", 1), "games[0].id", 2);
        assert!(msg.contains("a-z, 0-9"), "{msg}");
        refused(&game("", 1), "games[0].id", 2);
        refused(&game(&"a".repeat(65), 1), "games[0].id", 2);
        ok(&game(&"a".repeat(64), 1));
        let msg = refused(
            &format!("{}{}", game("a", 1), game("a", 2)),
            "games[1].id",
            5,
        );
        assert!(msg.contains("games[0]"), "{msg}");
        refused(
            &format!("[[games]]\nmeasure_key = \"{}\"\n", hash(1)),
            "games[0].id",
            1,
        );
    }

    #[test]
    fn measure_key_is_checked() {
        refused("\n[[games]]\nid = \"a\"\n", "games[0].measure_key", 2);
        let msg = refused(
            "[[games]]\nid = \"a\"\nmeasure_key = \"my-secret-key\"\n",
            "games[0].measure_key",
            3,
        );
        assert!(msg.contains("blake3:<64 hex characters>"), "{msg}");
        assert!(
            !msg.contains("my-secret-key"),
            "must not echo a secret: {msg}"
        );
        refused(
            "[[games]]\nid = \"a\"\nmeasure_key = \"blake3:abc\"\n",
            "games[0].measure_key",
            3,
        );
        let msg = refused(
            &format!("{}{}", game("a", 1), game("b", 1)),
            "games[1].measure_key",
            6,
        );
        assert!(msg.contains("names the game"), "{msg}");
    }

    #[test]
    fn a_game_may_have_several_named_keys() {
        let config = ok(&format!(
            "{}measure_keys = [{{ name = \"relay\", hash = \"{}\" }}, {{ hash = \"{}\" }}]\n",
            game("a", 1),
            hash(2),
            hash(3)
        ));
        let keys: Vec<(&str, bool)> = config.games[0]
            .measure_keys
            .iter()
            .map(|key| (key.name.as_str(), key.hash.matches(&[2])))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("measure_key", false),
                ("relay", true),
                ("measure_keys[1]", false)
            ]
        );
        // `measure_keys` alone is enough.
        let config = ok(&format!(
            "[[games]]\nid = \"a\"\nmeasure_keys = [{{ name = \"build-7\", hash = \"{}\" }}]\n",
            hash(4)
        ));
        assert_eq!(config.games[0].measure_keys.len(), 1);
        assert!(config.games[0].measure_keys[0].hash.matches(&[4]));
    }

    #[test]
    fn measure_keys_are_checked() {
        let with = |keys: &str| format!("[[games]]\nid = \"a\"\nmeasure_keys = [\n{keys}]\n");
        refused(&with(""), "games[0].measure_key", 1);
        refused(
            &with("{ name = \"x\" },\n"),
            "games[0].measure_keys[0].hash",
            4,
        );
        refused(
            &with("{ hash = \"mk_secret\" },\n"),
            "games[0].measure_keys[0].hash",
            4,
        );
        let msg = refused(
            &with(&format!(
                "{{ name = \"Relay!\", hash = \"{}\" }},\n",
                hash(1)
            )),
            "games[0].measure_keys[0].name",
            4,
        );
        assert!(msg.contains("a-z, 0-9"), "{msg}");
        let msg = refused(
            &with(&format!(
                "{{ name = \"x\", hash = \"{}\" }},\n{{ name = \"x\", hash = \"{}\" }},\n",
                hash(1),
                hash(2)
            )),
            "games[0].measure_keys[1].name",
            5,
        );
        assert!(msg.contains("unique"), "{msg}");
        // One key in two places, in one game or across games.
        let msg = refused(
            &with(&format!(
                "{{ hash = \"{}\" }},\n{{ hash = \"{}\" }},\n",
                hash(1),
                hash(1)
            )),
            "games[0].measure_keys[1].hash",
            5,
        );
        assert!(msg.contains("names the game"), "{msg}");
        let msg = refused(
            &format!(
                "{}[[games]]\nid = \"b\"\nmeasure_keys = [{{ hash = \"{}\" }}]\n",
                game("a", 1),
                hash(1)
            ),
            "games[1].measure_keys[0].hash",
            6,
        );
        assert!(msg.contains("games[0]"), "{msg}");
        refused(
            &format!(
                "{}measure_keys = [{{ hash = \"{}\", extra = 1 }}]\n",
                game("a", 1),
                hash(2)
            ),
            "games[0].measure_keys[0].extra",
            4,
        );
    }

    #[test]
    fn events_are_checked() {
        let config = ok(&format!(
            "{}events = [\"level_up\", \"boss.killed\"]\n",
            game("a", 1)
        ));
        assert_eq!(config.games[0].events, vec!["level_up", "boss.killed"]);
        refused(
            &format!("{}events = []\n", game("a", 1)),
            "games[0].events",
            4,
        );
        refused(
            &format!("{}events = [\"ok\", \"Level Up\"]\n", game("a", 1)),
            "games[0].events[1]",
            4,
        );
        refused(
            &format!("{}events = [\"ok\", \"\"]\n", game("a", 1)),
            "games[0].events[1]",
            4,
        );
        let msg = refused(
            &format!("{}events = [\n\"a\",\n\"a\"]\n", game("a", 1)),
            "games[0].events[1]",
            6,
        );
        assert!(msg.contains("twice"), "{msg}");
    }
}
