//! HTTP: Bearer tokens with scopes for the authenticated API. Tokens are configured as BLAKE3
//! hashes; every configured hash is compared, each in constant time.

use hyper::HeaderMap;
use hyper::header;

use super::error::ApiError;
use crate::config::{Scope, TokenConfig};
use crate::ingest::Code;

/// The token after `Bearer `, if the header is there and well-formed.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// 401 without a known token, 403 with a token that lacks `scope`; the token's entry.
pub(crate) fn authorize<'a>(
    tokens: &'a [TokenConfig],
    headers: &HeaderMap,
    scope: Scope,
) -> Result<&'a TokenConfig, ApiError> {
    let Some(presented) = bearer(headers) else {
        return Err(ApiError::Unauthenticated {
            code: Code::MissingToken,
            message: "send an API token as `Authorization: Bearer <token>`",
        });
    };
    let mut found: Option<&TokenConfig> = None;
    for token in tokens {
        if token.hash.matches(presented.as_bytes()) && found.is_none() {
            found = Some(token);
        }
    }
    match found {
        None => Err(ApiError::Unauthenticated {
            code: Code::InvalidToken,
            message: "the token is not valid",
        }),
        Some(token) if token.scopes.contains(&scope) => Ok(token),
        Some(_) => Err(ApiError::Forbidden {
            message: format!("the token lacks the `{}` scope", scope.as_str()),
        }),
    }
}
