//! Edge: configuration, stage two: `[[tokens]]`, the API tokens and their scopes.

use toml::Spanned;

use super::{Charset, Checker, HASH_WANTED};
use crate::config::error::ConfigError;
use crate::config::raw::RawToken;
use crate::config::validated::{Scope, TokenConfig};

impl Checker<'_> {
    pub(super) fn tokens(
        &self,
        raw: &[Spanned<RawToken>],
    ) -> Result<Vec<TokenConfig>, ConfigError> {
        let mut tokens: Vec<TokenConfig> = Vec::new();
        for (i, table) in raw.iter().enumerate() {
            let token = table.get_ref();
            let key = |name: &str| format!("tokens[{i}].{name}");

            let name_raw = self.required(&key("name"), table, token.name.as_ref(), "a name")?;
            let name = self.name(&key("name"), name_raw, Charset::Mixed)?;
            if let Some(j) = tokens.iter().position(|t| t.name == name) {
                return Err(self.at(
                    &key("name"),
                    name_raw,
                    format!("must be unique, but tokens[{j}] already uses {name:?}"),
                ));
            }

            let scopes_raw = self.required(
                &key("scopes"),
                table,
                token.scopes.as_ref(),
                "a list of scopes: \"aggregates\", \"forget\", \"metrics\", \"peer\"",
            )?;
            if scopes_raw.get_ref().is_empty() {
                return Err(self.at(
                    &key("scopes"),
                    scopes_raw,
                    "must list at least one scope: \"aggregates\", \"forget\", \"metrics\" or \"peer\"",
                ));
            }
            let mut scopes: Vec<Scope> = Vec::new();
            for (j, v) in scopes_raw.get_ref().iter().enumerate() {
                let scope = match v.get_ref().as_str() {
                    "aggregates" => Scope::Aggregates,
                    "forget" => Scope::Forget,
                    "metrics" => Scope::Metrics,
                    "peer" => Scope::Peer,
                    other => {
                        return Err(self.at(
                            &format!("{}[{j}]", key("scopes")),
                            v,
                            format!(
                                "must be \"aggregates\", \"forget\", \"metrics\" or \"peer\" (got {other:?})"
                            ),
                        ));
                    }
                };
                if !scopes.contains(&scope) {
                    scopes.push(scope);
                }
            }

            let hash_raw = self.required(&key("hash"), table, token.hash.as_ref(), HASH_WANTED)?;
            let hash = self.secret(&key("hash"), hash_raw)?;
            // One secret, two names: which scopes would apply would depend on lookup order.
            if let Some(j) = tokens.iter().position(|t| t.hash == hash) {
                return Err(self.at(
                    &key("hash"),
                    hash_raw,
                    format!(
                        "is the same as tokens[{j}].hash; give each token its own secret with \
                         `tracks-collector token new`"
                    ),
                ));
            }

            tokens.push(TokenConfig { name, scopes, hash });
        }
        Ok(tokens)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Scope;
    use crate::config::tests::{hash, ok, refused};

    fn token(name: &str, scopes: &str, n: u8) -> String {
        format!(
            "[[tokens]]\nname = \"{name}\"\nscopes = {scopes}\nhash = \"{}\"\n",
            hash(n)
        )
    }

    #[test]
    fn tokens_parse() {
        let config = ok(&format!(
            "{}{}",
            token("pull", "[\"aggregates\"]", 1),
            token("ops", "[\"forget\", \"metrics\", \"forget\"]", 2)
        ));
        assert_eq!(config.tokens[0].name, "pull");
        assert_eq!(config.tokens[1].scopes, vec![Scope::Forget, Scope::Metrics]);
        assert!(config.tokens[1].hash.matches(&[2]));
    }

    #[test]
    fn token_rules() {
        refused("[[tokens]]\nscopes = [\"metrics\"]\n", "tokens[0].name", 1);
        refused(&token("a b", "[\"metrics\"]", 1), "tokens[0].name", 2);
        refused(
            &format!(
                "{}{}",
                token("a", "[\"metrics\"]", 1),
                token("a", "[\"metrics\"]", 2)
            ),
            "tokens[1].name",
            6,
        );
        refused(&token("a", "[]", 1), "tokens[0].scopes", 3);
        refused(
            &format!("[[tokens]]\nname = \"a\"\nhash = \"{}\"\n", hash(1)),
            "tokens[0].scopes",
            1,
        );
        let msg = refused(
            &token("a", "[\"metrics\", \"admin\"]", 1),
            "tokens[0].scopes[1]",
            3,
        );
        assert!(
            msg.contains("\"aggregates\", \"forget\", \"metrics\" or \"peer\""),
            "{msg}"
        );
        refused(
            "[[tokens]]\nname = \"a\"\nscopes = [\"metrics\"]\nhash = \"sha256:00\"\n",
            "tokens[0].hash",
            4,
        );
        refused(
            "[[tokens]]\nname = \"a\"\nscopes = [\"metrics\"]\n",
            "tokens[0].hash",
            1,
        );
        refused(
            &format!(
                "{}{}",
                token("a", "[\"metrics\"]", 1),
                token("b", "[\"forget\"]", 1)
            ),
            "tokens[1].hash",
            8,
        );
    }
}
