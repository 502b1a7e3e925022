//! Ingest: a page visit from the collect script (`POST /collect`) or a redirect link.

use std::net::IpAddr;

use serde::Deserialize;

use super::{Ingest, IngestError};
use crate::campaign::Campaign;
use crate::privacy::page::{minimise_page, referrer_host};
use crate::privacy::ua::Agent;
use crate::store::NewVisit;

/// The JSON body the script sends; only `url` is required.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectBody {
    url: String,
    #[serde(default)]
    referrer: Option<String>,
    #[serde(default)]
    consent: Option<bool>,
    #[serde(default)]
    game: Option<String>,
    /// The page view's random id, so a later consent change updates the same visit.
    #[serde(default)]
    id: Option<String>,
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
        let body: CollectBody = serde_json::from_slice(request.body)
            .map_err(|err| IngestError::bad("invalid_json", format!("invalid JSON body: {err}")))?;
        if let Some(game) = &body.game
            && !self.game_ids.contains_key(game)
        {
            return Err(IngestError::bad(
                "unknown_game",
                format!("`game`: \"{game}\" is not a configured game"),
            ));
        }
        if let Some(id) = &body.id
            && !valid_view_id(id)
        {
            return Err(IngestError::bad(
                "invalid_id",
                "`id` must be 8 to 64 characters of A-Z, a-z, 0-9, '-' or '_'",
            ));
        }
        let consent = body.consent.unwrap_or(false);
        let page = minimise_page(&body.url, consent)
            .map_err(|err| IngestError::bad("invalid_url", format!("`url` {err}")))?;
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
            view_id: body.id,
        })))
    }

    /// A redirect-link visit; the link's configuration was validated at start.
    pub fn link_visit(&self, visit: LinkVisit<'_>) -> Result<CollectOutcome, IngestError> {
        let device = match self.ua.classify(visit.user_agent) {
            Agent::Crawler => return Ok(CollectOutcome::Crawler),
            Agent::Device(device) => device,
        };
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
            view_id: None,
        })))
    }
}

fn valid_view_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
