//! Ingest: game events (`POST /measure`), compatible with the TRACKS Measurement API.
//!
//! One event as JSON or as a form, or a JSON array of up to 100 events that is stored
//! all-or-nothing. The Bearer key names the game.

use std::net::IpAddr;

use super::fields::{self, Fields, Scalar};
use super::text;
use super::{Code, GameRules, Ingest, IngestError};
use crate::config::{MAX_BATCH, MeasureKey};
use crate::privacy::{block_hash, event_key, ip_pseudonyms, user_pseudonyms};
use crate::store::NewEvent;
use crate::text::printable;

/// Longest accepted `user_id`.
pub(crate) const MAX_USER_ID_CHARS: usize = 256;
/// How far in the future a `time_stamp` may be: a player's clock may be wrong by hours (set by
/// hand, or to the wrong time zone). Such a time is taken as the receive time: an event cannot
/// have happened later than it arrived.
pub(crate) const FUTURE_SKEW_SECS: i64 = 24 * 3600;
/// Longest accepted `event_id`: a UUID is 36.
pub(crate) const MAX_EVENT_ID_CHARS: usize = 128;

/// A unix time this large is in milliseconds: as seconds it would lie after the year 5000.
const MILLISECONDS_FROM: i64 = 100_000_000_000;

pub(crate) const PLATFORMS: &[&str] = &["pc", "mac", "linux", "android", "ios", "console", "other"];
pub(crate) const STOREFRONTS: &[&str] = &[
    "steam",
    "epic",
    "gog",
    "itch",
    "microsoft",
    "xbox",
    "playstation",
    "nintendo",
    "apple",
    "google",
    "other",
];

/// Other spellings that engines, stores and the TRACKS examples use, and the value each
/// means. Matched after lower-casing and trimming; spaces, dots and dashes count as `_`.
pub(crate) const PLATFORM_ALIASES: &[(&str, &str)] = &[
    ("windows", "pc"),
    ("win", "pc"),
    ("win32", "pc"),
    ("win64", "pc"),
    ("windowsplayer", "pc"),
    ("windowseditor", "pc"),
    ("desktop", "pc"),
    ("osx", "mac"),
    ("macos", "mac"),
    ("mac_os", "mac"),
    ("macosx", "mac"),
    ("osxplayer", "mac"),
    ("osxeditor", "mac"),
    ("linuxplayer", "linux"),
    ("linuxeditor", "linux"),
    ("steamos", "linux"),
    ("steam_deck", "linux"),
    ("iphone", "ios"),
    ("ipad", "ios"),
    ("iphoneplayer", "ios"),
    ("ipados", "ios"),
    ("playstation", "console"),
    ("ps4", "console"),
    ("ps5", "console"),
    ("xbox", "console"),
    ("xboxone", "console"),
    ("xbox_series", "console"),
    ("switch", "console"),
    ("nintendo_switch", "console"),
    ("webglplayer", "other"),
    ("web", "other"),
];

/// As [`PLATFORM_ALIASES`], for `storefront`.
pub(crate) const STOREFRONT_ALIASES: &[(&str, &str)] = &[
    ("itch_io", "itch"),
    ("itchio", "itch"),
    ("egs", "epic"),
    ("epic_games", "epic"),
    ("epicgames", "epic"),
    ("epic_games_store", "epic"),
    ("gog_com", "gog"),
    ("galaxy", "gog"),
    ("ms_store", "microsoft"),
    ("msstore", "microsoft"),
    ("microsoft_store", "microsoft"),
    ("windows_store", "microsoft"),
    ("xbox_store", "xbox"),
    ("game_pass", "xbox"),
    ("psn", "playstation"),
    ("playstation_store", "playstation"),
    ("ps_store", "playstation"),
    ("eshop", "nintendo"),
    ("nintendo_eshop", "nintendo"),
    ("app_store", "apple"),
    ("appstore", "apple"),
    ("mac_app_store", "apple"),
    ("google_play", "google"),
    ("googleplay", "google"),
    ("play_store", "google"),
    ("playstore", "google"),
];

#[derive(Debug, Clone, Copy)]
pub enum MeasureBody<'a> {
    Json(&'a [u8]),
    Form(&'a [u8]),
}

#[derive(Debug, Clone, Copy)]
pub struct MeasureRequest<'a> {
    pub body: MeasureBody<'a>,
    /// The token after `Bearer `, if the header was there.
    pub bearer: Option<&'a str>,
    pub client_ip: IpAddr,
    /// Unix seconds.
    pub now: i64,
}

/// One event as sent; field names are the Measurement API's.
#[derive(Debug, Default)]
struct RawEvent {
    user_id: Option<Scalar>,
    event_name: Option<String>,
    ip: Option<String>,
    /// Unix seconds (or milliseconds), a number or a string; RFC 3339 is accepted too.
    time_stamp: Option<Scalar>,
    /// RFC 3339, as the TRACKS documentation's newer examples send it; unix time too.
    timestamp: Option<Scalar>,
    platform: Option<String>,
    storefront: Option<String>,
    /// Made by the sender once per event and kept across its retries: the same id for the same
    /// game is counted once.
    event_id: Option<Scalar>,
}

/// What one `/measure` request came to: its events, and the game and key that sent them.
#[derive(Debug)]
pub struct Measured<'a> {
    pub events: Vec<NewEvent>,
    pub game: &'a str,
    /// The name of the measure key, for metrics.
    pub key: &'a str,
}

impl Ingest {
    pub fn measure(&self, request: MeasureRequest<'_>) -> Result<Measured<'_>, IngestError> {
        let (game, key) = self.game_for_key(request.bearer)?;
        let (raw, batch) = match request.body {
            MeasureBody::Json(bytes) => parse_json(bytes)?,
            // curl's `-d '{...}'` says form; no form body starts with `{` or `[`.
            MeasureBody::Form(bytes) if looks_like_json(bytes) => parse_json(bytes)?,
            MeasureBody::Form(bytes) => (vec![parse_form(bytes)?], false),
        };
        let field = |index: usize, name: &str| {
            if batch {
                format!("events[{index}].{name}")
            } else {
                name.to_string()
            }
        };
        let mut checked = Vec::with_capacity(raw.len());
        for (index, event) in raw.into_iter().enumerate() {
            checked.push(self.check(game, event, request, |name| field(index, name))?);
        }
        let prefix = self.privacy.ipv6_prefix;
        let events: Vec<NewEvent> = self.with_ring(|ring| {
            checked
                .into_iter()
                .map(|event| NewEvent {
                    received_at: request.now,
                    event_time: event.time,
                    user: user_pseudonyms(ring.live(), &game.id, &event.user_id),
                    block: block_hash(&self.block_key, &game.id, &event.user_id),
                    event_key: event
                        .event_id
                        .as_deref()
                        .map(|id| event_key(&self.block_key, &game.id, id)),
                    // The player's own address, the one their pseudonym is made of.
                    country: self.country(event.ip),
                    ip: ip_pseudonyms(ring.live(), event.ip, prefix),
                    game: game.id.clone(),
                    event: event.name,
                    platform: event.platform,
                    storefront: event.storefront,
                })
                .collect()
        })?;
        // Each event counts for its game's key and for its player's address (by its newest
        // pseudonym, so the buckets hold no address): a leaked key cannot flood the store, nor
        // pour a made-up player's opens onto one visit.
        let players: Vec<[u8; 16]> = events
            .iter()
            .filter_map(|event| event.ip.first().map(|ip| ip.hash))
            .collect();
        self.rates
            .measure(&game.id, &key.name, &players)
            .map_err(IngestError::rate_limited)?;
        Ok(Measured {
            events,
            game: &game.id,
            key: &key.name,
        })
    }

    /// Finds the game whose measure key this is, and which of its keys. Every key's hash is
    /// compared (each in constant time) so the answer time does not tell which game came close.
    pub(super) fn game_for_key(
        &self,
        bearer: Option<&str>,
    ) -> Result<(&GameRules, &MeasureKey), IngestError> {
        let key = bearer.ok_or_else(|| {
            IngestError::unauthorized(
                Code::MissingMeasureKey,
                "send the game's measure key as `Authorization: Bearer <key>`",
            )
        })?;
        let mut found = None;
        for game in &self.games {
            for measure_key in &game.measure_keys {
                if measure_key.hash.matches(key.trim().as_bytes()) && found.is_none() {
                    found = Some((game, measure_key));
                }
            }
        }
        found.ok_or_else(|| {
            IngestError::unauthorized(
                Code::InvalidMeasureKey,
                "the measure key is not valid for any game",
            )
        })
    }

    fn check(
        &self,
        game: &GameRules,
        raw: RawEvent,
        request: MeasureRequest<'_>,
        field: impl Fn(&str) -> String,
    ) -> Result<CheckedEvent, IngestError> {
        let user_id = event_user_id(raw.user_id, &field)?;
        let name = event_name(raw.event_name, game, &field)?;
        let ip = match raw.ip.as_deref().map(str::trim) {
            None | Some("") => request.client_ip,
            Some(text) => text.parse::<IpAddr>().map_err(|_| {
                IngestError::bad(
                    Code::InvalidIp,
                    format!("`{}` is not an IPv4 or IPv6 address", field("ip")),
                )
            })?,
        };
        let (stamp, stamp_field) = one_stamp(raw.time_stamp, raw.timestamp, &field)?;
        let time = self.event_time(stamp, request.now, &stamp_field)?;
        let platform = one_of(
            raw.platform,
            PLATFORMS,
            PLATFORM_ALIASES,
            Code::InvalidPlatform,
            &field("platform"),
        )?;
        let storefront = one_of(
            raw.storefront,
            STOREFRONTS,
            STOREFRONT_ALIASES,
            Code::InvalidStorefront,
            &field("storefront"),
        )?;
        let event_id = raw
            .event_id
            .map(|id| check_event_id(id, &field("event_id")))
            .transpose()?;
        Ok(CheckedEvent {
            user_id,
            name,
            ip,
            time,
            platform,
            storefront,
            event_id,
        })
    }

    /// The time `stamp` names, or `now` without one; a time ahead (within the skew) is `now`.
    pub(super) fn event_time(
        &self,
        stamp: Option<Scalar>,
        now: i64,
        field: &str,
    ) -> Result<i64, IngestError> {
        let Some(stamp) = stamp else {
            return Ok(now);
        };
        let seconds = unix_time(stamp).ok_or_else(|| {
            IngestError::bad(
                Code::InvalidTimeStamp,
                format!(
                    "`{field}` must be unix seconds (or milliseconds), as a number or a string of \
                     digits, or an RFC 3339 time such as 2024-08-29T12:00:00Z"
                ),
            )
        })?;
        let earliest = now - i64::from(self.privacy.retention_days) * 86_400;
        let latest = now + FUTURE_SKEW_SECS;
        if !(earliest..=latest).contains(&seconds) {
            return Err(IngestError::bad(
                Code::TimeStampOutOfWindow,
                format!(
                    "`{field}` is outside the accepted window: at most {} days in the past and {} \
                     hours in the future (server time {now}, also at GET /time)",
                    self.privacy.retention_days,
                    FUTURE_SKEW_SECS / 3600
                ),
            ));
        }
        Ok(seconds.min(now))
    }
}

/// A user id as it is hashed (trimmed): 1 to `MAX_USER_ID_CHARS` characters and no control
/// character. Such an id comes from a bug or an attack, and once hashed it would be a player no
/// one can name in a forget request or tell apart from the id printed without it.
pub(super) fn check_user_id(user_id: &str, field: &str) -> Result<(), IngestError> {
    if user_id.is_empty() || user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(IngestError::bad(
            Code::InvalidUserId,
            format!(
                "`{field}` is required: a string or integer of 1 to {MAX_USER_ID_CHARS} characters"
            ),
        ));
    }
    if user_id.chars().any(crate::text::is_control) {
        return Err(IngestError::bad(
            Code::InvalidUserId,
            format!(
                "`{field}` holds a control character (a C0 or C1 control, DEL or a bidirectional control)"
            ),
        ));
    }
    Ok(())
}

/// The event's user id as it is hashed: a string (trimmed) or a whole number, checked by
/// `check_user_id`.
fn event_user_id(
    user_id: Option<Scalar>,
    field: &impl Fn(&str) -> String,
) -> Result<String, IngestError> {
    let user_id = match user_id {
        Some(Scalar::Text(text)) => text.trim().to_string(),
        Some(Scalar::Integer(number)) => number.to_string(),
        Some(Scalar::Float(_)) => {
            return Err(IngestError::bad(
                Code::InvalidUserId,
                format!(
                    "`{}` must be a string or a whole number, not a fraction",
                    field("user_id")
                ),
            ));
        }
        None => String::new(),
    };
    if user_id.is_empty() {
        return Err(fields::missing(&field("user_id")));
    }
    check_user_id(&user_id, &field("user_id"))?;
    Ok(user_id)
}

/// The event's name (trimmed), one of those its game declares.
fn event_name(
    name: Option<String>,
    game: &GameRules,
    field: &impl Fn(&str) -> String,
) -> Result<String, IngestError> {
    let name = name.map(|name| name.trim().to_string()).unwrap_or_default();
    if name.is_empty() {
        return Err(fields::missing(&field("event_name")));
    }
    if !game.events.contains(&name) {
        return Err(IngestError::bad(
            Code::UnknownEvent,
            format!(
                "`{}`: \"{}\" is not an event of game \"{}\"; expected one of: {}",
                field("event_name"),
                printable(&name),
                game.id,
                game.events.join(", ")
            ),
        ));
    }
    Ok(name)
}

/// The event's time as sent, under either of its two names but not both, and the name it
/// came under (for the errors).
fn one_stamp(
    time_stamp: Option<Scalar>,
    timestamp: Option<Scalar>,
    field: &impl Fn(&str) -> String,
) -> Result<(Option<Scalar>, String), IngestError> {
    match (time_stamp, timestamp) {
        (Some(_), Some(_)) => Err(IngestError::bad(
            Code::DuplicateField,
            format!(
                "send the time once: `{}` or `{}`, not both",
                field("time_stamp"),
                field("timestamp")
            ),
        )),
        (Some(stamp), None) => Ok((Some(stamp), field("time_stamp"))),
        (None, stamp) => Ok((stamp, field("timestamp"))),
    }
}

/// A time as unix seconds: a number or a string of digits (seconds, or milliseconds by their
/// size), or an RFC 3339 text.
fn unix_time(stamp: Scalar) -> Option<i64> {
    let number = match stamp {
        Scalar::Integer(number) => number,
        Scalar::Float(number) if number.is_finite() => number.floor() as i64,
        Scalar::Float(_) => return None,
        Scalar::Text(text) => {
            let text = text.trim();
            if let Ok(number) = text.parse::<i64>() {
                number
            } else if let Ok(number) = text.parse::<f64>() {
                if !number.is_finite() {
                    return None;
                }
                number.floor() as i64
            } else {
                return chrono::DateTime::parse_from_rfc3339(text)
                    .ok()
                    .map(|time| time.timestamp());
            }
        }
    };
    // unsigned_abs: i64::MIN (a saturated float, a long string of digits) has no i64 opposite.
    Some(
        if number.unsigned_abs() >= MILLISECONDS_FROM.unsigned_abs() {
            number.div_euclid(1000)
        } else {
            number
        },
    )
}

struct CheckedEvent {
    user_id: String,
    name: String,
    ip: IpAddr,
    time: i64,
    platform: Option<String>,
    storefront: Option<String>,
    event_id: Option<String>,
}

/// An event id as it is hashed (trimmed): a string or integer of 1 to `MAX_EVENT_ID_CHARS`
/// characters without control characters, e.g. a UUID.
fn check_event_id(id: Scalar, field: &str) -> Result<String, IngestError> {
    let id = match id {
        Scalar::Text(text) => text.trim().to_string(),
        Scalar::Integer(number) => number.to_string(),
        Scalar::Float(_) => String::new(),
    };
    if id.is_empty()
        || id.chars().count() > MAX_EVENT_ID_CHARS
        || id.chars().any(crate::text::is_control)
    {
        return Err(IngestError::bad(
            Code::InvalidEventId,
            format!(
                "`{field}` must be a string or integer of 1 to {MAX_EVENT_ID_CHARS} characters \
                 without control characters, e.g. a UUID made once per event"
            ),
        ));
    }
    Ok(id)
}

fn parse_json(bytes: &[u8]) -> Result<(Vec<RawEvent>, bool), IngestError> {
    match text::json_value(bytes)? {
        serde_json::Value::Array(items) => {
            if items.is_empty() {
                return Err(IngestError::bad(
                    Code::EmptyBatch,
                    "the event array is empty",
                ));
            }
            if items.len() > MAX_BATCH {
                return Err(IngestError::bad(
                    Code::BatchTooLarge,
                    format!(
                        "at most {MAX_BATCH} events per request (got {})",
                        items.len()
                    ),
                ));
            }
            let mut events = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                events.push(RawEvent::read(Fields::of(
                    item,
                    Some(format!("events[{index}]")),
                )?)?);
            }
            Ok((events, true))
        }
        object @ serde_json::Value::Object(_) => {
            Ok((vec![RawEvent::read(Fields::of(object, None)?)?], false))
        }
        other => Err(IngestError::bad(
            Code::InvalidJson,
            format!(
                "the body must be a JSON object (one event) or an array of objects, not {}",
                match other {
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "true or false",
                    _ => "null",
                }
            ),
        )),
    }
}

impl RawEvent {
    /// The fields, in the order the refusals list them.
    const FIELDS: &[&str] = &[
        "user_id",
        "event_name",
        "ip",
        "time_stamp",
        "timestamp",
        "platform",
        "storefront",
        "event_id",
    ];

    fn read(mut fields: Fields) -> Result<RawEvent, IngestError> {
        let event = RawEvent {
            user_id: fields.scalar("user_id")?,
            event_name: fields.text("event_name")?,
            ip: fields.text("ip")?,
            time_stamp: fields.scalar("time_stamp")?,
            timestamp: fields.scalar("timestamp")?,
            platform: fields.text("platform")?,
            storefront: fields.text("storefront")?,
            event_id: fields.scalar("event_id")?,
        };
        fields.done(Self::FIELDS)?;
        Ok(event)
    }
}

/// Whether a body sent as a form is JSON: its first byte past white space opens an object or
/// an array.
fn looks_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|byte| !byte.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// The Measurement API's form encoding: the same fields as strings.
fn parse_form(bytes: &[u8]) -> Result<RawEvent, IngestError> {
    let mut event = RawEvent::default();
    for (key, value) in text::form_pairs(bytes)? {
        let slot_taken = match key.as_str() {
            "user_id" => event.user_id.replace(Scalar::Text(value)).is_some(),
            "event_name" => event.event_name.replace(value).is_some(),
            "ip" => event.ip.replace(value).is_some(),
            "time_stamp" => event.time_stamp.replace(Scalar::Text(value)).is_some(),
            "timestamp" => event.timestamp.replace(Scalar::Text(value)).is_some(),
            "platform" => event.platform.replace(value).is_some(),
            "storefront" => event.storefront.replace(value).is_some(),
            "event_id" => event.event_id.replace(Scalar::Text(value)).is_some(),
            other => return Err(fields::unknown_field(other, RawEvent::FIELDS)),
        };
        if slot_taken {
            return Err(IngestError::bad(
                Code::DuplicateField,
                format!("field `{}` appears more than once", printable(&key)),
            ));
        }
    }
    Ok(event)
}

/// The canonical value `value` names, directly or through an alias; none for empty.
fn one_of(
    value: Option<String>,
    allowed: &[&str],
    aliases: &[(&str, &'static str)],
    code: Code,
    field: &str,
) -> Result<Option<String>, IngestError> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_ascii_lowercase();
    if value.is_empty() {
        return Ok(None);
    }
    if allowed.contains(&value.as_str()) {
        return Ok(Some(value));
    }
    let spelled = value.replace([' ', '.', '-'], "_");
    if let Some((_, canonical)) = aliases.iter().find(|(alias, _)| *alias == spelled) {
        Ok(Some(canonical.to_string()))
    } else {
        Err(IngestError::bad(
            code,
            format!(
                "`{field}`: \"{}\" is not one of: {}",
                printable(&value),
                allowed.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_come_as_seconds_milliseconds_or_rfc_3339() {
        let text = |value: &str| unix_time(Scalar::Text(value.into()));
        assert_eq!(text("1724932800"), Some(1_724_932_800));
        assert_eq!(text(" 1724932800.9 "), Some(1_724_932_800));
        assert_eq!(text("1724932800123"), Some(1_724_932_800));
        assert_eq!(text("2024-08-29T12:00:00Z"), Some(1_724_932_800));
        assert_eq!(text("2024-08-29T14:00:00+02:00"), Some(1_724_932_800));
        assert_eq!(text("2024-08-29"), None);
        assert_eq!(text("yesterday"), None);
        assert_eq!(
            unix_time(Scalar::Integer(1_724_932_800_123)),
            Some(1_724_932_800)
        );
        assert_eq!(
            unix_time(Scalar::Float(1_724_932_800.5)),
            Some(1_724_932_800)
        );
        assert_eq!(unix_time(Scalar::Float(f64::NAN)), None);
        // Found by the property tests: these panicked (`abs` of i64::MIN).
        assert_eq!(
            unix_time(Scalar::Float(-1e30)),
            Some(i64::MIN.div_euclid(1000))
        );
        assert!(unix_time(Scalar::Text("-9223372036854775808".into())).is_some());
    }

    #[test]
    fn common_spellings_name_the_canonical_values() {
        let platform = |value: &str| {
            one_of(
                Some(value.into()),
                PLATFORMS,
                PLATFORM_ALIASES,
                Code::InvalidPlatform,
                "platform",
            )
        };
        assert_eq!(platform("Windows"), Ok(Some("pc".into())));
        assert_eq!(platform(" win64 "), Ok(Some("pc".into())));
        assert_eq!(platform("macOS"), Ok(Some("mac".into())));
        assert_eq!(platform("Steam Deck"), Ok(Some("linux".into())));
        assert_eq!(platform("linux"), Ok(Some("linux".into())));
        assert_eq!(platform(""), Ok(None));
        let refused = platform("amiga").expect_err("not a platform");
        assert_eq!(refused.code.as_str(), "invalid_platform");
        let storefront = |value: &str| {
            one_of(
                Some(value.into()),
                STOREFRONTS,
                STOREFRONT_ALIASES,
                Code::InvalidStorefront,
                "storefront",
            )
        };
        assert_eq!(storefront("itch.io"), Ok(Some("itch".into())));
        assert_eq!(storefront("EGS"), Ok(Some("epic".into())));
        assert_eq!(storefront("Epic Games Store"), Ok(Some("epic".into())));
        assert_eq!(storefront("Google Play"), Ok(Some("google".into())));
        for (alias, canonical) in PLATFORM_ALIASES {
            assert!(PLATFORMS.contains(canonical), "{alias}");
        }
        for (alias, canonical) in STOREFRONT_ALIASES {
            assert!(STOREFRONTS.contains(canonical), "{alias}");
        }
    }
}
