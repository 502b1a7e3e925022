//! Ingest: a forget request (`POST /api/v1/forget`, `tracks-collector forget`): one player of
//! one game, turned into their pseudonyms under every live salt.

use serde::Deserialize;

use super::measure::MAX_USER_ID_CHARS;
use super::{Ingest, IngestError};
use crate::privacy::{Pseudonym, user_pseudonyms};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ForgetBody {
    game: String,
    user_id: String,
}

/// Whom to forget, as the store can find them.
#[derive(Debug, Clone)]
pub struct ForgetRequest {
    pub game: String,
    pub users: Vec<Pseudonym>,
}

impl Ingest {
    pub fn forget_json(&self, body: &[u8]) -> Result<ForgetRequest, IngestError> {
        let body: ForgetBody = serde_json::from_slice(body)
            .map_err(|err| IngestError::bad("invalid_json", format!("invalid JSON body: {err}")))?;
        self.forget(&body.game, &body.user_id)
    }

    pub fn forget(&self, game: &str, user_id: &str) -> Result<ForgetRequest, IngestError> {
        if !self.game_ids.contains_key(game) {
            return Err(IngestError::bad(
                "unknown_game",
                format!("`game`: \"{game}\" is not a configured game"),
            ));
        }
        let user_id = user_id.trim();
        if user_id.is_empty() || user_id.chars().count() > MAX_USER_ID_CHARS {
            return Err(IngestError::bad(
                "invalid_user_id",
                format!("`user_id` must be 1 to {MAX_USER_ID_CHARS} characters"),
            ));
        }
        let users = self.with_ring(|ring| user_pseudonyms(ring.live(), game, user_id))?;
        Ok(ForgetRequest {
            game: game.to_string(),
            users,
        })
    }
}
