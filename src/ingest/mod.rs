//! Ingest: what `/collect`, `/r/{link}` and `/measure` accept, validated and minimised into
//! store records.
//!
//! Nothing here knows HTTP: the server hands over the body bytes and the few request facts
//! that matter (client address, User-Agent, Bearer key) and gets a record or an error naming
//! the offending field.

mod code;
pub(crate) mod collect;
mod fields;
pub(crate) mod forget;
pub(crate) mod measure;
pub(crate) mod rate;
pub(crate) mod redirect;
pub(crate) mod text;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use crate::config::{Config, MeasureKey, PrivacyConfig};
use crate::link::LinkRules;
use crate::privacy::geo::{Countries, Country};
use crate::privacy::ua::UaClassifier;
use crate::privacy::{BlockKey, Pseudonym, SaltRing, SharedSalts, ip_pseudonym};
use crate::store::{DbKey, FolderLock, Store, StoreError};
pub use code::Code;

/// Why an input was refused; `http` maps the kind to a status and sends code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct IngestError {
    pub kind: ErrorKind,
    /// Machine-readable, stable: `invalid_json`, `unknown_event`, ...
    pub code: Code,
    /// One sentence for a person, naming the field. Never echoes an IP or a user id.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadInput,
    Unauthorized,
    /// No salt yet: the store is not ready to pseudonymise.
    Unavailable,
    /// The client sent more than its token bucket holds; it may try again after this long.
    RateLimited(std::time::Duration),
}

impl IngestError {
    fn rate_limited(limited: rate::Limited) -> IngestError {
        let what = match limited.bucket {
            "address" | "public" => "too many requests from this address",
            "measure_key" => "too many requests with this game's measure key",
            "failed_auth" => "too many failed authentications from this address",
            _ => "too many requests from this player's address",
        };
        IngestError {
            kind: ErrorKind::RateLimited(limited.retry_after),
            code: Code::RateLimited,
            message: format!(
                "{what}; retry in {} s (see [limits] in the configuration)",
                limited.retry_after.as_secs_f64().ceil()
            ),
        }
    }

    pub fn bad(code: Code, message: impl Into<String>) -> IngestError {
        IngestError {
            kind: ErrorKind::BadInput,
            code,
            message: message.into(),
        }
    }

    fn unauthorized(code: Code, message: impl Into<String>) -> IngestError {
        IngestError {
            kind: ErrorKind::Unauthorized,
            code,
            message: message.into(),
        }
    }

    fn no_salt() -> IngestError {
        IngestError {
            kind: ErrorKind::Unavailable,
            code: Code::NotReady,
            message: "the collector has no salt yet; retry shortly".into(),
        }
    }
}

/// A configured game, as `/measure` sees it.
#[derive(Debug, Clone)]
struct GameRules {
    id: String,
    measure_keys: Vec<MeasureKey>,
    events: Vec<String>,
}

/// A store opened as the daemon opens it: the store, the salt ring read from it, and the
/// ingest that hashes with that ring and writes into the store. The one wiring of the three,
/// for the daemon, the command line, the tests and the benches.
#[derive(Debug)]
pub struct OpenedStore {
    pub store: Store,
    pub salts: SharedSalts,
    pub ingest: Ingest,
}

impl OpenedStore {
    /// Opens `storage.path` with `key` in a folder whose lock is already taken; ingest
    /// resolves countries through `countries` when given.
    pub fn open_locked(
        config: &Config,
        lock: FolderLock,
        key: DbKey,
        countries: Option<Arc<Countries>>,
    ) -> Result<OpenedStore, StoreError> {
        let store = Store::open_locked(
            lock,
            &config.storage.path,
            key,
            LinkRules::new(&config.attribution),
            config.storage.cache_mib,
        )?;
        let salts = Arc::new(RwLock::new(SaltRing::new(store.load_salts()?)));
        let ingest =
            Ingest::new(config, salts.clone(), store.block_key().clone()).with_countries(countries);
        Ok(OpenedStore {
            store,
            salts,
            ingest,
        })
    }
}

/// Everything ingest needs, built once from the configuration.
#[derive(Debug)]
pub struct Ingest {
    games: Vec<GameRules>,
    game_ids: HashMap<String, usize>,
    privacy: PrivacyConfig,
    salts: SharedSalts,
    /// The store's: every event's user id is hashed under it, for the writer's block check.
    block_key: BlockKey,
    ua: UaClassifier,
    /// How much each client may send.
    rates: rate::RateLimits,
    /// The country database (`privacy.geoip_db`), shared with the SIGHUP reload; `None`: no
    /// country is resolved.
    countries: Option<Arc<Countries>>,
}

impl Ingest {
    pub fn new(config: &Config, salts: SharedSalts, block_key: BlockKey) -> Ingest {
        let games: Vec<GameRules> = config
            .games
            .iter()
            .map(|game| GameRules {
                id: game.id.clone(),
                measure_keys: game.measure_keys.clone(),
                events: game.events.clone(),
            })
            .collect();
        let game_ids = games
            .iter()
            .enumerate()
            .map(|(index, game)| (game.id.clone(), index))
            .collect();
        Ingest {
            games,
            game_ids,
            privacy: config.privacy.clone(),
            salts,
            // Keyed from the block key, a secret of the store: the buckets' keys reveal no
            // address even in a core dump, and need no random source of their own.
            rates: rate::RateLimits::new(
                &config.limits.rates,
                blake3::derive_key("tracks-collector rate buckets v1", &block_key.0),
                [
                    &config.server.trusted_proxies[..],
                    &config.server.monitor_addresses[..],
                ]
                .concat(),
            ),
            block_key,
            ua: UaClassifier::default(),
            countries: None,
        }
    }

    /// Resolves each visit's and event's country through `countries`.
    pub fn with_countries(mut self, countries: Option<Arc<Countries>>) -> Ingest {
        self.countries = countries;
        self
    }

    /// Takes a visit (`/collect`, `/r/`) from `client` out of its bucket.
    pub fn admit_visit(&self, client: IpAddr) -> Result<(), IngestError> {
        self.rates.visit(client).map_err(IngestError::rate_limited)
    }

    /// Takes a call to an endpoint anyone may call without a key from `client`'s bucket.
    pub fn admit_public(&self, client: IpAddr) -> Result<(), IngestError> {
        self.rates.public(client).map_err(IngestError::rate_limited)
    }

    /// Before a token is looked at: whether `client` may try one now.
    pub fn admit_authentication(&self, client: IpAddr) -> Result<(), IngestError> {
        self.rates
            .authentication(client)
            .map_err(IngestError::rate_limited)
    }

    /// `client` sent a missing or wrong token.
    pub fn failed_authentication(&self, client: IpAddr) {
        self.rates.failed_authentication(client);
    }

    /// Drops the rate buckets of clients that have gone quiet (a task calls it every 5 seconds).
    pub fn forget_idle_clients(&self) {
        self.rates.forget_idle();
    }

    /// Runs `f` on the live salts; refuses while there is no salt at all.
    fn with_ring<T>(&self, f: impl FnOnce(&SaltRing) -> T) -> Result<T, IngestError> {
        let ring = self.salts.read().map_err(|_| IngestError::no_salt())?;
        if ring.current().is_none() {
            return Err(IngestError::no_salt());
        }
        Ok(f(&ring))
    }

    /// The address's country, looked up before the address is pseudonymised: the code is all
    /// that is kept of it.
    fn country(&self, ip: IpAddr) -> Option<Country> {
        self.countries.as_ref()?.country(ip)
    }

    /// The IP's pseudonym under the current salt: what a new visit stores.
    fn current_ip(&self, ip: IpAddr) -> Result<Pseudonym, IngestError> {
        let prefix = self.privacy.ipv6_prefix;
        self.with_ring(|ring| ring.current().map(|salt| ip_pseudonym(salt, ip, prefix)))?
            .ok_or_else(IngestError::no_salt)
    }
}
