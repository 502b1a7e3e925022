//! Ingest: a request about one player of one game (`forget`, `unforget`, the data request of
//! `/api/v1/subject`), turned into their pseudonyms under every live salt and their block-list
//! hash.

use super::fields::Fields;
use super::measure::check_user_id;
use super::text;
use super::{Code, Ingest, IngestError};
use crate::privacy::{BlockHash, Pseudonym, block_hash, user_pseudonyms};
use crate::text::printable;

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
        let mut fields = Fields::of(text::json_value(body)?, None)?;
        let game = fields.required_text("game")?;
        let user_id = fields.required_text("user_id")?;
        fields.done(&["game", "user_id"])?;
        self.subject(&game, &user_id)
    }

    pub fn subject(&self, game: &str, user_id: &str) -> Result<Subject, IngestError> {
        if !self.game_ids.contains_key(game) {
            return Err(IngestError::bad(
                Code::UnknownGame,
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
