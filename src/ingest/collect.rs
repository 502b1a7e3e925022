//! Ingest: a page visit from the collect script (`POST /collect`) or a redirect link.

use std::net::IpAddr;

use super::fields::{self, Fields, Scalar};
use super::text;
use super::{Code, Ingest, IngestError};
use crate::campaign::Campaign;
use crate::privacy::page::{minimise_page, normalise_utm, referrer_host};
use crate::privacy::ua::{Agent, Device};
use crate::store::{NewVisit, ViewKey};
use crate::text::printable;

/// The JSON body the script sends; only `url` is required.
#[derive(Debug)]
struct CollectBody {
    url: String,
    referrer: Option<String>,
    consent: Option<bool>,
    game: Option<String>,
    /// The page view's random id, so a later consent change updates the same visit.
    id: Option<String>,
}

impl CollectBody {
    const FIELDS: &[&str] = &["url", "referrer", "consent", "game", "id"];

    fn read(body: &[u8]) -> Result<CollectBody, IngestError> {
        let mut fields = Fields::of(text::json_value(body)?, None)?;
        let body = CollectBody {
            url: fields.required_text("url")?,
            referrer: fields.text("referrer")?,
            consent: fields.flag("consent")?,
            game: fields.text("game")?,
            id: fields.text("id")?,
        };
        fields.done(Self::FIELDS)?;
        Ok(body)
    }
}

/// A server-side web visit, as the TRACKS documentation's `/v1/collect` example sends it with
/// a measure key: the campaign comes as fields, the visitor's address as `ip`. `clientId` and
/// `sessionId` are read and dropped, never stored.
#[derive(Debug)]
struct ServerVisitBody {
    /// What the sender calls the visit (`page_view`); any name is a visit.
    event_name: Option<String>,
    /// Unix seconds or milliseconds, or RFC 3339; default the time it arrives.
    timestamp: Option<Scalar>,
    channel: Option<String>,
    campaign: Option<String>,
    source: Option<String>,
    medium: Option<String>,
    term: Option<String>,
    content: Option<String>,
    /// The visitor's address; default the sender's.
    ip: Option<String>,
    /// desktop, mobile, tablet, ...: the device class.
    device: Option<String>,
    browser: Option<String>,
    /// The page, minimised like the script's.
    url: Option<String>,
    referrer: Option<String>,
    consent: Option<bool>,
}

impl ServerVisitBody {
    const FIELDS: &[&str] = &[
        "event_name",
        "timestamp",
        "channel",
        "campaign",
        "source",
        "medium",
        "term",
        "content",
        "clientId",
        "sessionId",
        "ip",
        "device",
        "browser",
        "url",
        "referrer",
        "consent",
    ];

    fn read(body: &[u8]) -> Result<ServerVisitBody, IngestError> {
        let mut fields = Fields::of(text::json_value(body)?, None)?;
        fields.skip("clientId");
        fields.skip("sessionId");
        let body = ServerVisitBody {
            event_name: fields.text("event_name")?,
            timestamp: fields.scalar("timestamp")?,
            channel: fields.text("channel")?,
            campaign: fields.text("campaign")?,
            source: fields.text("source")?,
            medium: fields.text("medium")?,
            term: fields.text("term")?,
            content: fields.text("content")?,
            ip: fields.text("ip")?,
            device: fields.text("device")?,
            browser: fields.text("browser")?,
            url: fields.text("url")?,
            referrer: fields.text("referrer")?,
            consent: fields.flag("consent")?,
        };
        fields.done(Self::FIELDS)?;
        Ok(body)
    }
}

/// A server-side visit: the body, and the measure key that names the game.
#[derive(Debug, Clone, Copy)]
pub struct ServerVisitRequest<'a> {
    pub body: &'a [u8],
    pub bearer: Option<&'a str>,
    /// The sender's address, the visitor's when the body names none.
    pub client_ip: IpAddr,
    /// Unix seconds.
    pub now: i64,
}

/// The request facts a visit is made of.
#[derive(Debug, Clone, Copy)]
pub struct CollectRequest<'a> {
    pub body: &'a [u8],
    pub user_agent: Option<&'a str>,
    pub client_ip: IpAddr,
    /// Unix seconds.
    pub now: i64,
}

/// A visit to a redirect link: the page is the link's own, the UTMs already merged.
#[derive(Debug, Clone)]
pub struct LinkVisit<'a> {
    pub link: &'a str,
    pub game: Option<&'a str>,
    pub page_host: &'a str,
    pub utm: Campaign,
    pub referrer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub client_ip: IpAddr,
    pub now: i64,
}

#[derive(Debug)]
pub enum CollectOutcome {
    Visit(Box<NewVisit>),
    /// A crawler: answered like a visit, counted in metrics, not stored.
    Crawler,
}

impl Ingest {
    pub fn collect(&self, request: CollectRequest<'_>) -> Result<CollectOutcome, IngestError> {
        let body = CollectBody::read(request.body)?;
        if let Some(game) = &body.game
            && !self.game_ids.contains_key(game)
        {
            return Err(IngestError::bad(
                Code::UnknownGame,
                format!("`game`: \"{}\" is not a configured game", printable(game)),
            ));
        }
        if let Some(id) = &body.id
            && !valid_view_id(id)
        {
            return Err(IngestError::bad(
                Code::InvalidId,
                "`id` must be 8 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
            ));
        }
        let consent = body.consent.unwrap_or(false);
        let page = minimise_page(&body.url, consent)
            .map_err(|err| IngestError::bad(Code::InvalidUrl, format!("`url` {err}")))?;
        let device = match self.ua.classify(request.user_agent) {
            Agent::Crawler => return Ok(CollectOutcome::Crawler),
            Agent::Device(device) => device,
        };
        let click_ids = (!page.click_ids.is_empty()).then(|| {
            let map: serde_json::Map<String, serde_json::Value> = page
                .click_ids
                .into_iter()
                .map(|(key, value)| (key, serde_json::Value::String(value)))
                .collect();
            serde_json::Value::Object(map).to_string()
        });
        // The country first: the address is pseudonymised right after.
        let country = self.country(request.client_ip);
        Ok(CollectOutcome::Visit(Box::new(NewVisit {
            received_at: request.now,
            game: body.game,
            ip: self.current_ip(request.client_ip)?,
            page_host: page.host,
            page_path: page.path,
            campaign: page.campaign,
            click_ids,
            referrer_host: body.referrer.as_deref().and_then(referrer_host),
            device,
            consent,
            link: None,
            view: body.id.as_deref().map(ViewKey::of),
            country,
        })))
    }

    /// A server-side visit (see [`ServerVisitBody`]), for the game the measure key names.
    pub fn server_visit(&self, request: ServerVisitRequest<'_>) -> Result<NewVisit, IngestError> {
        let (game, key) = self.game_for_key(request.bearer)?;
        let body = ServerVisitBody::read(request.body)?;
        if body
            .event_name
            .as_deref()
            .is_some_and(|name| name.trim().is_empty())
        {
            return Err(fields::missing("event_name"));
        }
        let consent = body.consent.unwrap_or(false);
        let page = body
            .url
            .as_deref()
            .map(|url| minimise_page(url, consent))
            .transpose()
            .map_err(|err| IngestError::bad(Code::InvalidUrl, format!("`url` {err}")))?;
        let utm = |value: &Option<String>| value.as_deref().and_then(normalise_utm);
        let mut campaign = Campaign {
            source: utm(&body.source),
            medium: utm(&body.medium),
            campaign: utm(&body.campaign),
            content: utm(&body.content),
            term: utm(&body.term),
            channel: utm(&body.channel),
        };
        // Fields the sender left out fall back to the page's own UTM parameters.
        if let Some(page) = &page {
            for (index, value) in page.campaign.values().into_iter().enumerate() {
                if let (Some(slot @ None), Some(value)) = (campaign.value_mut(index), value) {
                    *slot = Some(value.to_string());
                }
            }
        }
        let ip = match body.ip.as_deref().map(str::trim) {
            None | Some("") => request.client_ip,
            Some(text) => text.parse::<IpAddr>().map_err(|_| {
                IngestError::bad(Code::InvalidIp, "`ip` is not an IPv4 or IPv6 address")
            })?,
        };
        // A backend sends many visitors' visits: it counts against its key and each visitor's
        // address, as game events do, not against its own address.
        let country = self.country(ip);
        let visitor = self.current_ip(ip)?;
        self.rates
            .measure(&game.id, &key.name, &[visitor.hash])
            .map_err(IngestError::rate_limited)?;
        // A visit reported late keeps its own time, so linking sees when it happened.
        let time = self.event_time(body.timestamp, request.now, "timestamp")?;
        Ok(NewVisit {
            received_at: time,
            game: Some(game.id.clone()),
            ip: visitor,
            page_host: page
                .as_ref()
                .map(|page| page.host.clone())
                .unwrap_or_default(),
            page_path: page.map(|page| page.path).unwrap_or_default(),
            campaign,
            click_ids: None,
            referrer_host: body.referrer.as_deref().and_then(referrer_host),
            device: server_device(body.device.as_deref(), body.browser.as_deref()),
            consent,
            link: None,
            view: None,
            country,
        })
    }

    /// A redirect-link visit; the link's configuration was validated at start.
    pub fn link_visit(&self, visit: LinkVisit<'_>) -> Result<CollectOutcome, IngestError> {
        let device = match self.ua.classify(visit.user_agent) {
            Agent::Crawler => return Ok(CollectOutcome::Crawler),
            Agent::Device(device) => device,
        };
        let country = self.country(visit.client_ip);
        Ok(CollectOutcome::Visit(Box::new(NewVisit {
            received_at: visit.now,
            game: visit.game.map(str::to_string),
            ip: self.current_ip(visit.client_ip)?,
            page_host: visit.page_host.to_string(),
            page_path: format!("/r/{}", visit.link),
            campaign: visit.utm,
            click_ids: None,
            referrer_host: visit.referrer.and_then(referrer_host),
            device,
            consent: false,
            link: Some(visit.link.to_string()),
            view: None,
            country,
        })))
    }
}

/// A server-side visit's device class, in woothee's words (as the script's visits are
/// classified): the sender's `device` mapped to pc, smartphone or appliance; its `browser` kept
/// as the family, printable and short.
fn server_device(device: Option<&str>, browser: Option<&str>) -> Device {
    let device = device.map(|text| text.trim().to_ascii_lowercase());
    let category = match device.as_deref() {
        Some("desktop" | "pc" | "computer" | "laptop") => "pc",
        Some("mobile" | "phone" | "smartphone" | "tablet") => "smartphone",
        Some("console" | "tv" | "smarttv" | "smart_tv" | "appliance") => "appliance",
        None | Some("") => UNKNOWN,
        Some(_) => "misc",
    };
    let browser: String = browser
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !crate::text::is_control(*c))
        .take(MAX_BROWSER_CHARS)
        .collect();
    Device {
        category: category.into(),
        os: UNKNOWN.into(),
        browser: if browser.is_empty() {
            UNKNOWN.into()
        } else {
            browser
        },
    }
}

/// What woothee answers for what it cannot tell.
const UNKNOWN: &str = "unknown";
/// Longest browser family kept from a server-side visit.
const MAX_BROWSER_CHARS: usize = 32;

fn valid_view_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
