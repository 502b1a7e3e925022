//! Ingest: a request about one player of one game (`forget`, `unforget`, the data request of
//! `/api/v1/subject`), turned into their pseudonyms under every live salt and their block-list
//! hash.

use serde::Deserialize;

use super::measure::check_user_id;
use super::text::{self, printable};
use super::{Ingest, IngestError};
use crate::privacy::{BlockHash, Pseudonym, block_hash, user_pseudonyms};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    game: String,
    user_id: String,
}

/// One player, as the store can find them.
#[derive(Debug, Clone)]
pub struct Subject {
    pub game: String,
    /// Their pseudonyms under every live salt: what finds their records.
    pub users: Vec<Pseudonym>,
    /// Their entry in the block list.
    pub block: BlockHash,
}

impl Ingest {
    pub fn forget_json(&self, body: &[u8]) -> Result<Subject, IngestError> {
        let body: ForgetBody = text::json_body(body)?;
        self.subject(&body.game, &body.user_id)
    }

    pub fn subject(&self, game: &str, user_id: &str) -> Result<Subject, IngestError> {
        if !self.game_ids.contains_key(game) {
            return Err(IngestError::bad(
                "unknown_game",
                format!("`game`: \"{}\" is not a configured game", printable(game)),
            ));
        }
        // The rules of `/measure`: an id it would refuse was never stored.
        let user_id = user_id.trim();
        check_user_id(user_id, "user_id")?;
        // Without any salt yet there is nothing to find, but a block still holds: unlike
        // `/measure`, this does not wait for the first salt.
        let users = self
            .salts
            .read()
            .map(|ring| user_pseudonyms(ring.live(), game, user_id))
            .map_err(|_| IngestError::no_salt())?;
        Ok(Subject {
            game: game.to_string(),
            users,
            block: block_hash(&self.block_key, game, user_id),
        })
    }
}
