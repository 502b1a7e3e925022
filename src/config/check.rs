//! Edge: configuration, stage two: the raw file validated into `Config`.
//!
//! The first problem found is returned, naming the file, the line and the key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;
use url::Url;

use crate::campaign::Campaign;
use crate::privacy::geo::CountryDb;

use super::defaults::{
    DEFAULT_CACHE_MIB, DEFAULT_CENTRAL_TIMEOUT_SECS, DEFAULT_DB_KEY_FILE, DEFAULT_DB_PATH,
    DEFAULT_HSTS, DEFAULT_LISTEN, DEFAULT_LOOKBACK_DAYS, DEFAULT_PUSH_SCHEDULE,
    DEFAULT_RETRY_MAX_SECS, DEFAULT_TLS_CERT, DEFAULT_TLS_KEY, LETS_ENCRYPT, MAX_BATCH,
    MAX_RETENTION_DAYS, default_events,
};
use super::error::ConfigError;
use super::locate::{friendly_toml_message, join_key, key_at, line_of};
use super::raw::{
    RawAcme, RawAttribution, RawCentral, RawFile, RawGame, RawLedger, RawLimits, RawLink, RawLog,
    RawPrivacy, RawServer, RawStorage, RawToken, Text, TextList,
};
use super::validated::{
    AcmeSettings, AllowedOrigins, AttributionConfig, AttributionModel, CentralConfig,
    ClientIpHeader, Config, GameConfig, LedgerConfig, LimitsConfig, LinkConfig, LogConfig,
    LogFormat, MaxConnections, MeasureKey, PrivacyConfig, RateLimit, RateLimitsConfig, Scope,
    SecretHash, ServerConfig, StorageConfig, TlsFiles, TokenConfig,
};

/// What a missing `measure_key` or token `hash` should hold.
const HASH_WANTED: &str =
    "\"blake3:<64 hex characters>\", the line printed by `tracks-collector token new`";
/// Names end up in URLs, logs and metrics labels: short and plain.
const MAX_NAME_LEN: usize = 64;

/// Which characters a name may use.
#[derive(Clone, Copy)]
enum Charset {
    /// `[a-z0-9._-]`: game ids and event names, compared as written by game code.
    Lower,
    /// `[A-Za-z0-9._-]`: link names, collector ids, token names.
    Mixed,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '.' | '_' | '-')
            || (matches!(self, Charset::Mixed) && c.is_ascii_uppercase())
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Lower => NAME_CHARACTERS,
            Charset::Mixed => "A-Z, a-z, 0-9, '.', '_' and '-'",
        }
    }
}

/// Whether `text` may name a game, an event or a measure key: 1 to 64 characters of
/// [`NAME_CHARACTERS`]. The command line checks `token new --name` with it too.
pub fn is_lower_name(text: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&text.len()) && text.chars().all(|c| Charset::Lower.allows(c))
}

/// What [`is_lower_name`] allows, for messages.
pub const NAME_CHARACTERS: &str = "a-z, 0-9, '.', '_' and '-'";

/// Validates one file's raw values; holds the text so an error can name its line.
pub(super) struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    /// The config file's folder: relative paths are resolved against it.
    base: PathBuf,
    /// The line of each file path and secret hash key the file sets, for later warnings.
    key_lines: std::cell::RefCell<std::collections::BTreeMap<String, usize>>,
    /// The secret hash keys that still hold the example's placeholder.
    placeholders: std::cell::RefCell<Vec<String>>,
}

impl<'a> Checker<'a> {
    /// `path` is named in errors; its folder is the base of relative paths.
    pub(super) fn new(text: &'a str, path: &'a Path) -> Checker<'a> {
        Checker {
            text,
            path,
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            key_lines: Default::default(),
            placeholders: Default::default(),
        }
    }

    pub(super) fn config(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let privacy = self.privacy(&raw.privacy)?;
        let games = self.games(&raw.games)?;
        let mut config = Config {
            source: Some(self.path.to_path_buf()),
            key_lines: Default::default(),
            placeholders: Default::default(),
            server: self.server(&raw.server)?,
            storage: self.storage(&raw.storage)?,
            attribution: self.attribution(&raw.attribution, &privacy)?,
            privacy,
            links: self.links(&raw.links, &games)?,
            games,
            central: raw.central.as_ref().map(|c| self.central(c)).transpose()?,
            tokens: self.tokens(&raw.tokens)?,
            limits: self.limits(&raw.limits)?,
            log: self.log(&raw.log)?,
            ledger: self.ledger(&raw.ledger)?,
        };
        if let Some(acme) = config.server.acme.as_mut()
            && acme.cache_dir.as_os_str().is_empty()
        {
            acme.cache_dir = config.storage.path.with_file_name("acme");
        }
        config.key_lines = self.key_lines.take();
        config.placeholders = self.placeholders.take();
        Ok(config)
    }

    fn server(&self, raw: &RawServer) -> Result<ServerConfig, ConfigError> {
        let listen = match &raw.listen {
            None => DEFAULT_LISTEN,
            Some(v) => v.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.at(
                    "server.listen",
                    v,
                    format!(
                        "must be an IP address and a port such as \"0.0.0.0:443\" or \
                         \"[::]:443\" (got {:?})",
                        v.get_ref()
                    ),
                )
            })?,
        };
        // Checked even when TLS is off, so a typo does not wait for the day TLS is turned on.
        let cert = self.path_or("server.tls_cert", raw.tls_cert.as_ref(), DEFAULT_TLS_CERT)?;
        let key = self.path_or("server.tls_key", raw.tls_key.as_ref(), DEFAULT_TLS_KEY)?;
        let tls = match &raw.tls {
            Some(flag) if !*flag.get_ref() => {
                // `to_canonical` so that `[::ffff:127.0.0.1]` counts as the loopback it is.
                if !listen.ip().to_canonical().is_loopback() {
                    return Err(self.at(
                        "server.tls",
                        flag,
                        "plain HTTP is allowed only on a loopback listen address; put a reverse \
                         proxy in front or enable TLS",
                    ));
                }
                None
            }
            _ => Some(TlsFiles { cert, key }),
        };
        let acme = raw.acme.as_ref().map(|acme| self.acme(acme)).transpose()?;
        // ACME brings its own certificates: files named beside it would never be read.
        let tls = match (&acme, tls) {
            (None, tls) => tls,
            (Some(_), _) => {
                for (key, value) in [
                    ("server.tls_cert", &raw.tls_cert),
                    ("server.tls_key", &raw.tls_key),
                ] {
                    if let Some(value) = value {
                        return Err(self.at(
                            key,
                            value,
                            "cannot be set with [server.acme], which orders and renews the \
                             certificate itself: remove one of them",
                        ));
                    }
                }
                if let Some(flag) = raw.tls.as_ref().filter(|flag| !*flag.get_ref()) {
                    return Err(self.at(
                        "server.tls",
                        flag,
                        "turns TLS off, which [server.acme] needs: remove one of them",
                    ));
                }
                None
            }
        };
        let trusted_proxies =
            self.networks("server.trusted_proxies", raw.trusted_proxies.as_ref())?;
        let client_ip_header = match &raw.client_ip_header {
            None => ClientIpHeader::default_for(&trusted_proxies),
            Some(v) => {
                let name = v.get_ref().trim();
                let header = ClientIpHeader::parse(name).ok_or_else(|| {
                    self.at(
                        "server.client_ip_header",
                        v,
                        format!(
                            "must be one of {} (got {name:?})",
                            ClientIpHeader::NAMES.map(|n| format!("\"{n}\"")).join(", ")
                        ),
                    )
                })?;
                if header != ClientIpHeader::None && trusted_proxies.is_empty() {
                    return Err(self.at(
                        "server.client_ip_header",
                        v,
                        format!(
                            "names {name:?}, but no server.trusted_proxies are listed: the \
                             header of a client that is not a trusted proxy is never believed"
                        ),
                    ));
                }
                header
            }
        };
        Ok(ServerConfig {
            listen,
            tls,
            acme,
            trusted_proxies,
            proxy_protocol_from: self.networks(
                "server.proxy_protocol_from",
                raw.proxy_protocol_from.as_ref(),
            )?,
            client_ip_header,
            monitor_addresses: self
                .networks("server.monitor_addresses", raw.monitor_addresses.as_ref())?,
            allowed_origins: self.allowed_origins(raw.allowed_origins.as_ref())?,
            hsts: self.hsts(raw.hsts.as_ref())?,
        })
    }

    fn acme(&self, raw: &Spanned<RawAcme>) -> Result<AcmeSettings, ConfigError> {
        let table = raw.get_ref();
        let domains: Vec<String> = match &table.domains {
            None => Vec::new(),
            Some(list) => list
                .get_ref()
                .iter()
                .map(|domain| {
                    let name = domain.get_ref().trim().to_ascii_lowercase();
                    let valid = !name.is_empty()
                        && name.len() <= 253
                        && name.split('.').count() >= 2
                        && name.split('.').all(|label| {
                            !label.is_empty()
                                && label.len() <= 63
                                && label
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if valid {
                        Ok(name)
                    } else {
                        Err(self.at(
                            "server.acme.domains",
                            domain,
                            format!(
                                "must be a DNS name such as \"collect.studio.example\" (got {:?})",
                                domain.get_ref()
                            ),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        if domains.is_empty() {
            return Err(self.at(
                "server.acme.domains",
                raw,
                "lists the names to order a certificate for, at least one",
            ));
        }
        let contact = match &table.contact {
            None => Vec::new(),
            Some(value) if value.get_ref().starts_with("mailto:") => vec![value.get_ref().clone()],
            Some(value) => {
                return Err(self.at(
                    "server.acme.contact",
                    value,
                    format!("must be a mailto: address (got {:?})", value.get_ref()),
                ));
            }
        };
        let directory = match &table.directory {
            None => LETS_ENCRYPT.to_string(),
            Some(value) => self.http_url("server.acme.directory", value)?.to_string(),
        };
        Ok(AcmeSettings {
            domains,
            contact,
            directory,
            ca_file: table
                .ca_file
                .as_ref()
                .map(|value| self.path("server.acme.ca_file", value))
                .transpose()?,
            // Empty: beside the database, filled in once [storage] is read.
            cache_dir: table
                .cache_dir
                .as_ref()
                .map(|value| self.path("server.acme.cache_dir", value))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    fn hsts(&self, raw: Option<&Text>) -> Result<Option<String>, ConfigError> {
        let Some(value) = raw else {
            return Ok(Some(DEFAULT_HSTS.to_string()));
        };
        let text = value.get_ref().trim();
        if text.is_empty() {
            return Ok(None);
        }
        check_hsts(text).map_err(|why| {
            self.at(
                "server.hsts",
                value,
                format!(
                    "must be a Strict-Transport-Security value such as \"max-age=31536000\" \
                     (optionally with \"; includeSubDomains\"), or \"\" to send none: {why} \
                     (got {text:?})"
                ),
            )
        })?;
        Ok(Some(text.to_string()))
    }

    fn limits(&self, raw: &RawLimits) -> Result<LimitsConfig, ConfigError> {
        let defaults = LimitsConfig::default();
        let secs = |key: &str, value: &Option<Spanned<i64>>, default: Duration, max: u32| {
            value.as_ref().map_or(Ok(default), |v| {
                self.between(key, v, 1, max, "")
                    .map(|n: u32| Duration::from_secs(u64::from(n)))
            })
        };
        let connections_per_address = match &raw.connections_per_address {
            None => defaults.connections_per_address,
            Some(v) => self.between("limits.connections_per_address", v, 1, 1_000_000, "")?,
        };
        let max_connections = match &raw.max_connections {
            None => defaults.max_connections,
            Some(v) => self.max_connections(v)?,
        };
        Ok(LimitsConfig {
            connections_per_address,
            max_connections,
            handshake_timeout: secs(
                "limits.handshake_timeout_secs",
                &raw.handshake_timeout_secs,
                defaults.handshake_timeout,
                300,
            )?,
            header_timeout: secs(
                "limits.header_timeout_secs",
                &raw.header_timeout_secs,
                defaults.header_timeout,
                300,
            )?,
            idle_timeout: secs(
                "limits.idle_timeout_secs",
                &raw.idle_timeout_secs,
                defaults.idle_timeout,
                3600,
            )?,
            max_connection_age: secs(
                "limits.max_connection_age_secs",
                &raw.max_connection_age_secs,
                defaults.max_connection_age,
                7 * 86_400,
            )?,
            // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
            max_header_bytes: match &raw.max_header_bytes {
                None => defaults.max_header_bytes,
                Some(v) => self.between("limits.max_header_bytes", v, 8192, 65_536, "")?,
            },
            rates: RateLimitsConfig {
                address: self.rate(
                    ("limits.visits_per_second", &raw.visits_per_second),
                    ("limits.visits_burst", &raw.visits_burst),
                    defaults.rates.address,
                    1,
                )?,
                // A full batch must fit in one go.
                measure_key: self.rate(
                    (
                        "limits.measure_key_events_per_second",
                        &raw.measure_key_events_per_second,
                    ),
                    ("limits.measure_key_burst", &raw.measure_key_burst),
                    defaults.rates.measure_key,
                    MAX_BATCH as u32,
                )?,
                player: self.rate(
                    (
                        "limits.player_events_per_second",
                        &raw.player_events_per_second,
                    ),
                    ("limits.player_burst", &raw.player_burst),
                    defaults.rates.player,
                    1,
                )?,
                public: self.rate(
                    ("limits.public_per_second", &raw.public_per_second),
                    ("limits.public_burst", &raw.public_burst),
                    defaults.rates.public,
                    1,
                )?,
                failed_auth: self.rate(
                    ("limits.failed_auth_per_second", &raw.failed_auth_per_second),
                    ("limits.failed_auth_burst", &raw.failed_auth_burst),
                    defaults.rates.failed_auth,
                    1,
                )?,
            },
        })
    }

    /// A list of networks in CIDR form or single addresses, host bits dropped (logs then show
    /// the network).
    fn networks(&self, key: &str, list: Option<&TextList>) -> Result<Vec<IpNet>, ConfigError> {
        let mut networks = Vec::new();
        for (i, v) in list.iter().flat_map(|l| l.get_ref()).enumerate() {
            let text = v.get_ref().as_str();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.at(
                        &format!("{key}[{i}]"),
                        v,
                        format!(
                            "must be a network in CIDR form such as \"10.0.0.0/8\" or \
                             \"fd00::/8\", or a single IP address (got {text:?})"
                        ),
                    )
                })?;
            networks.push(net.trunc());
        }
        Ok(networks)
    }

    /// A token bucket: a rate of 1 to 1,000,000 a second and a burst of `min_burst` to
    /// 1,000,000, each key taking its default when omitted.
    fn rate(
        &self,
        (rate_key, rate): (&str, &Option<Spanned<i64>>),
        (burst_key, burst): (&str, &Option<Spanned<i64>>),
        default: RateLimit,
        min_burst: u32,
    ) -> Result<RateLimit, ConfigError> {
        let read = |key: &str, value: &Option<Spanned<i64>>, min: u32, default: NonZeroU32| {
            value.as_ref().map_or(Ok(default), |v| {
                let n: u32 = self.between(key, v, min.max(1), 1_000_000, "")?;
                Ok(NonZeroU32::new(n).unwrap_or(default))
            })
        };
        Ok(RateLimit {
            per_second: read(rate_key, rate, 1, default.per_second)?,
            burst: read(burst_key, burst, min_burst, default.burst)?,
        })
    }

    fn max_connections(&self, value: &Spanned<toml::Value>) -> Result<MaxConnections, ConfigError> {
        let wanted = "must be \"auto\" (derived from the open-file limit) or a number of \
                      connections between 1 and 1000000";
        match value.get_ref() {
            toml::Value::String(text) if text == "auto" => Ok(MaxConnections::Auto),
            toml::Value::Integer(n) => u32::try_from(*n)
                .ok()
                .filter(|n| (1..=1_000_000).contains(n))
                .map(MaxConnections::At)
                .ok_or_else(|| {
                    self.at(
                        "limits.max_connections",
                        value,
                        format!("{wanted} (got {n})"),
                    )
                }),
            other => Err(self.at(
                "limits.max_connections",
                value,
                format!("{wanted} (got {other})"),
            )),
        }
    }

    fn allowed_origins(&self, raw: Option<&TextList>) -> Result<AllowedOrigins, ConfigError> {
        let items = raw.map(|l| l.get_ref().as_slice()).unwrap_or_default();
        if let Some((i, star)) = items.iter().enumerate().find(|(_, v)| v.get_ref() == "*") {
            if items.len() == 1 {
                return Ok(AllowedOrigins::Any);
            }
            return Err(self.at(
                &format!("server.allowed_origins[{i}]"),
                star,
                "\"*\" (any origin) must be the only entry when present; keep either \"*\" or \
                 the exact origins",
            ));
        }
        let mut origins: Vec<String> = Vec::new();
        for (i, v) in items.iter().enumerate() {
            let origin = normalise_origin(v.get_ref()).map_err(|why| {
                self.at(
                    &format!("server.allowed_origins[{i}]"),
                    v,
                    format!(
                        "must be an origin such as \"https://mygame.example\" or \
                         \"http://localhost:8080\" (\"http://localhost:*\" for any port): \
                         scheme, host and optional port, no path, query or fragment ({why}; got \
                         {:?})",
                        v.get_ref()
                    ),
                )
            })?;
            // Two spellings of one origin are harmless; keep one.
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(AllowedOrigins::List(origins))
    }

    fn storage(&self, raw: &RawStorage) -> Result<StorageConfig, ConfigError> {
        Ok(StorageConfig {
            path: self.path_or("storage.path", raw.path.as_ref(), DEFAULT_DB_PATH)?,
            key_file: self.path_or(
                "storage.key_file",
                raw.key_file.as_ref(),
                DEFAULT_DB_KEY_FILE,
            )?,
            cache_mib: match &raw.cache_mib {
                None => DEFAULT_CACHE_MIB,
                Some(v) => self.between("storage.cache_mib", v, 2, 65_536, "")?,
            },
        })
    }

    fn privacy(&self, raw: &RawPrivacy) -> Result<PrivacyConfig, ConfigError> {
        let defaults = PrivacyConfig::default();
        let retention_days = match &raw.retention_days {
            None => defaults.retention_days,
            Some(v) => self.between("privacy.retention_days", v, 1, MAX_RETENTION_DAYS, "")?,
        };
        let salt_rotation_hours = match &raw.salt_rotation_hours {
            None => defaults.salt_rotation_hours,
            // A salt must rotate within the retention window, or it would outlive its data.
            Some(v) => self.between(
                "privacy.salt_rotation_hours",
                v,
                1,
                24 * retention_days,
                " (24 hours times privacy.retention_days)",
            )?,
        };
        let ipv6_prefix = match &raw.ipv6_prefix {
            None => defaults.ipv6_prefix,
            Some(v) => self.between("privacy.ipv6_prefix", v, 48u8, 128, "")?,
        };
        let min_cell_size = match &raw.min_cell_size {
            None => defaults.min_cell_size,
            Some(v) => self.between("privacy.min_cell_size", v, 1, u32::MAX, "")?,
        };
        // Read now, so that `check-config` and `serve` refuse a missing or foreign file with the
        // key's name, instead of a daemon that starts and resolves no country.
        let geoip_db = match &raw.geoip_db {
            None => None,
            Some(v) => {
                let path = self.path("privacy.geoip_db", v)?;
                CountryDb::open(&path)
                    .map_err(|err| self.at("privacy.geoip_db", v, err.to_string()))?;
                Some(path)
            }
        };
        Ok(PrivacyConfig {
            retention_days,
            salt_rotation_hours,
            ipv6_prefix,
            min_cell_size,
            geoip_db,
        })
    }

    fn attribution(
        &self,
        raw: &RawAttribution,
        privacy: &PrivacyConfig,
    ) -> Result<AttributionConfig, ConfigError> {
        let model = match &raw.model {
            None => AttributionModel::LastTouch,
            Some(v) => match v.get_ref().as_str() {
                "last_touch" => AttributionModel::LastTouch,
                "first_touch" => AttributionModel::FirstTouch,
                other => {
                    return Err(self.at(
                        "attribution.model",
                        v,
                        format!("must be \"last_touch\" or \"first_touch\" (got {other:?})"),
                    ));
                }
            },
        };
        let lookback_days = match &raw.lookback_days {
            // Data older than the retention window is gone, so it cannot be looked back into.
            None => DEFAULT_LOOKBACK_DAYS.min(privacy.retention_days),
            Some(v) => self.between(
                "attribution.lookback_days",
                v,
                1,
                privacy.retention_days,
                " (privacy.retention_days)",
            )?,
        };
        Ok(AttributionConfig {
            model,
            lookback_days,
            require_consent: raw.require_consent.as_ref().is_some_and(|v| *v.get_ref()),
        })
    }

    fn games(&self, raw: &[Spanned<RawGame>]) -> Result<Vec<GameConfig>, ConfigError> {
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
        Ok(keys.into_iter().map(|(key, ..)| key).collect())
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

    fn links(
        &self,
        raw: &[Spanned<RawLink>],
        games: &[GameConfig],
    ) -> Result<Vec<LinkConfig>, ConfigError> {
        let mut links: Vec<LinkConfig> = Vec::new();
        for (i, table) in raw.iter().enumerate() {
            let link = table.get_ref();
            let key = |name: &str| format!("links[{i}].{name}");

            let name_raw = self.required(&key("name"), table, link.name.as_ref(), "a link name")?;
            let name = self.name(&key("name"), name_raw, Charset::Mixed)?;
            if let Some(j) = links.iter().position(|l| l.name == name) {
                return Err(self.at(
                    &key("name"),
                    name_raw,
                    format!("must be unique, but links[{j}] already uses {name:?}"),
                ));
            }

            let game = match &link.game {
                None => None,
                Some(v) if games.iter().any(|g| &g.id == v.get_ref()) => Some(v.get_ref().clone()),
                Some(v) => {
                    let known: Vec<&str> = games.iter().map(|g| g.id.as_str()).collect();
                    let known = if known.is_empty() {
                        "none is configured".to_string()
                    } else {
                        format!("configured: {}", known.join(", "))
                    };
                    return Err(self.at(
                        &key("game"),
                        v,
                        format!(
                            "must be the id of a game under [[games]] (got {:?}; {known})",
                            v.get_ref()
                        ),
                    ));
                }
            };

            let dest_raw = self.required(
                &key("destination"),
                table,
                link.destination.as_ref(),
                "the http(s) URL the link redirects to",
            )?;
            let destination = self.http_url(&key("destination"), dest_raw)?;

            let utm = match &link.utm {
                None => Campaign::default(),
                Some(utm) => Campaign {
                    source: normalise_utm(utm.source.as_ref()),
                    medium: normalise_utm(utm.medium.as_ref()),
                    campaign: normalise_utm(utm.campaign.as_ref()),
                    content: normalise_utm(utm.content.as_ref()),
                    term: normalise_utm(utm.term.as_ref()),
                    // A link's visits come from the visitor's browser: no channel.
                    channel: None,
                },
            };

            links.push(LinkConfig {
                name,
                game,
                destination,
                utm,
                forward_utm: link.forward_utm.as_ref().is_none_or(|v| *v.get_ref()),
            });
        }
        Ok(links)
    }

    fn central(&self, table: &Spanned<RawCentral>) -> Result<CentralConfig, ConfigError> {
        let raw = table.get_ref();
        let url_raw = self.required(
            "central.url",
            table,
            raw.url.as_ref(),
            "the http(s) base URL of the central platform",
        )?;
        let url = self.http_url("central.url", url_raw)?;
        // The URL is a base that API paths are appended to, and it is logged: nothing else
        // belongs in it.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.at(
                "central.url",
                url_raw,
                "must be a base URL without query or fragment, e.g. \"https://tracks.example\"",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.at(
                "central.url",
                url_raw,
                "must not contain credentials; the token is read from central.token_file",
            ));
        }
        // The token travels with every push: in clear only to this machine itself.
        if url.scheme() == "http" && !is_loopback_host(&url) {
            return Err(self.at(
                "central.url",
                url_raw,
                "must be https:// unless the host is a loopback address (127.0.0.1, ::1, localhost)",
            ));
        }

        let id_raw = self.required(
            "central.collector_id",
            table,
            raw.collector_id.as_ref(),
            "this collector's id on the central platform",
        )?;
        let collector_id = self.name("central.collector_id", id_raw, Charset::Mixed)?;

        let token_raw = self.required(
            "central.token_file",
            table,
            raw.token_file.as_ref(),
            "the file holding the Bearer token for the central platform",
        )?;
        let token_file = self.path("central.token_file", token_raw)?;

        let push_schedule = match &raw.push_schedule {
            None => DEFAULT_PUSH_SCHEDULE.to_string(),
            Some(v) => {
                check_cron(v.get_ref()).map_err(|why| {
                    self.at(
                        "central.push_schedule",
                        v,
                        format!(
                            "must be a cron expression with seconds such as \"0 */15 * * * *\" \
                             (sec min hour day-of-month month day-of-week): {why} (got {:?})",
                            v.get_ref()
                        ),
                    )
                })?;
                v.get_ref().clone()
            }
        };

        let ca_file = raw
            .ca_file
            .as_ref()
            .map(|v| self.path("central.ca_file", v))
            .transpose()?;

        let timeout_secs = match &raw.timeout_secs {
            None => DEFAULT_CENTRAL_TIMEOUT_SECS,
            Some(v) => self.between("central.timeout_secs", v, 1, 600, "")?,
        };
        let retry_max_secs = match &raw.retry_max_secs {
            None => DEFAULT_RETRY_MAX_SECS,
            Some(v) => self.between("central.retry_max_secs", v, 1, 86_400, " (a day)")?,
        };

        Ok(CentralConfig {
            url,
            collector_id,
            token_file,
            push_schedule,
            ca_file,
            timeout_secs,
            retry_max_secs,
        })
    }

    fn tokens(&self, raw: &[Spanned<RawToken>]) -> Result<Vec<TokenConfig>, ConfigError> {
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
                "a list of scopes: \"aggregates\", \"forget\", \"metrics\"",
            )?;
            if scopes_raw.get_ref().is_empty() {
                return Err(self.at(
                    &key("scopes"),
                    scopes_raw,
                    "must list at least one scope: \"aggregates\", \"forget\" or \"metrics\"",
                ));
            }
            let mut scopes: Vec<Scope> = Vec::new();
            for (j, v) in scopes_raw.get_ref().iter().enumerate() {
                let scope = match v.get_ref().as_str() {
                    "aggregates" => Scope::Aggregates,
                    "forget" => Scope::Forget,
                    "metrics" => Scope::Metrics,
                    other => {
                        return Err(self.at(
                            &format!("{}[{j}]", key("scopes")),
                            v,
                            format!(
                                "must be \"aggregates\", \"forget\" or \"metrics\" (got {other:?})"
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

    fn ledger(&self, raw: &RawLedger) -> Result<LedgerConfig, ConfigError> {
        let defaults = LedgerConfig::default();
        Ok(LedgerConfig {
            retention_days: match &raw.retention_days {
                None => defaults.retention_days,
                Some(v) => self.between("ledger.retention_days", v, 1, 3650, "")?,
            },
            keep_documents: raw
                .keep_documents
                .as_ref()
                .map_or(defaults.keep_documents, |v| *v.get_ref()),
        })
    }

    fn log(&self, raw: &RawLog) -> Result<LogConfig, ConfigError> {
        let level = match &raw.level {
            None => LogConfig::default().level,
            Some(v) => {
                check_log_level(v.get_ref()).map_err(|why| {
                    self.at(
                        "log.level",
                        v,
                        format!(
                            "must be a level (error, warn, info, debug, trace) or a \
                             tracing filter such as \"info,tracks_collector=debug\": {why} \
                             (got {:?})",
                            v.get_ref()
                        ),
                    )
                })?;
                v.get_ref().clone()
            }
        };
        let format = match &raw.format {
            None => LogFormat::Text,
            Some(v) => match v.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.at(
                        "log.format",
                        v,
                        format!("must be \"text\" or \"json\" (got {other:?})"),
                    ));
                }
            },
        };
        Ok(LogConfig { level, format })
    }

    // -- value helpers --------------------------------------------------------------------------

    fn required<'v, T, U>(
        &self,
        key: &str,
        table: &Spanned<U>,
        value: Option<&'v Spanned<T>>,
        what: &str,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        value.ok_or_else(|| self.at(key, table, format!("is required: {what}")))
    }

    fn between<T>(
        &self,
        key: &str,
        value: &Spanned<i64>,
        min: T,
        max: T,
        max_note: &str,
    ) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + PartialOrd + fmt::Display + Copy,
    {
        let got = *value.get_ref();
        T::try_from(got)
            .ok()
            .filter(|v| *v >= min && *v <= max)
            .ok_or_else(|| {
                self.at(
                    key,
                    value,
                    format!("must be between {min} and {max}{max_note} (got {got})"),
                )
            })
    }

    fn name(&self, key: &str, value: &Text, charset: Charset) -> Result<String, ConfigError> {
        let text = value.get_ref();
        if (1..=MAX_NAME_LEN).contains(&text.len()) && text.chars().all(|c| charset.allows(c)) {
            Ok(text.clone())
        } else {
            Err(self.at(
                key,
                value,
                format!(
                    "must be 1 to {MAX_NAME_LEN} characters of {} (got {text:?})",
                    charset.describe()
                ),
            ))
        }
    }

    fn secret(&self, key: &str, value: &Text) -> Result<SecretHash, ConfigError> {
        // Kept so that `check-config` can point at a placeholder left in place.
        self.key_lines
            .borrow_mut()
            .insert(key.to_string(), line_of(self.text, value.span().start));
        // The value is not echoed: someone may have pasted the secret itself here.
        let hash = SecretHash::parse(value.get_ref()).map_err(|why| {
            self.at(
                key,
                value,
                format!(
                    "{why}: the BLAKE3 hash printed by `tracks-collector token new`, never the \
                     secret itself"
                ),
            )
        })?;
        if hash.is_placeholder() {
            self.placeholders.borrow_mut().push(key.to_string());
        }
        Ok(hash)
    }

    fn http_url(&self, key: &str, value: &Text) -> Result<Url, ConfigError> {
        let text = value.get_ref();
        let reject = |why: String| {
            self.at(
                key,
                value,
                format!("must be an absolute http:// or https:// URL ({why}; got {text:?})"),
            )
        };
        let url = Url::parse(text).map_err(|e| reject(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(reject(format!("the scheme is {:?}", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(reject("there is no host".to_string()));
        }
        Ok(url)
    }

    fn path(&self, key: &str, value: &Text) -> Result<PathBuf, ConfigError> {
        if value.get_ref().trim().is_empty() {
            return Err(self.at(key, value, "must be a file path, not an empty string"));
        }
        self.key_lines
            .borrow_mut()
            .insert(key.to_string(), line_of(self.text, value.span().start));
        // `join` keeps an absolute path as it is and puts a relative one under the config folder.
        Ok(self.base.join(value.get_ref()))
    }

    fn path_or(
        &self,
        key: &str,
        value: Option<&Text>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        match value {
            None => Ok(PathBuf::from(default)),
            Some(v) => self.path(key, v),
        }
    }

    // -- errors ---------------------------------------------------------------------------------

    fn at<T>(&self, key: &str, value: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.invalid(key.to_string(), Some(value.span()), message.into())
    }

    fn invalid(&self, key: String, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: span.map(|s| line_of(self.text, s.start)),
            key,
            message,
        }
    }

    /// A syntax, type or unknown-key error from the toml crate, which knows the span but does
    /// not expose the key path: the path is recovered from the document at that span.
    pub(super) fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let span = err.span();
        let message = err.message();
        let mut key = span
            .as_ref()
            .and_then(|s| key_at(self.text, s.start))
            .unwrap_or_default();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            key = join_key(&key, field);
        }
        if key.is_empty() {
            key = "(file)".to_string();
        }
        self.invalid(key, span, friendly_toml_message(message))
    }
}

/// `scheme://host[:port]`, lower-case, default port omitted: what browsers send in `Origin`.
/// An origin as `scheme://host[:port]`; `scheme://host:*` stands for any port of that host
/// (a local development server moves between ports).
fn normalise_origin(text: &str) -> Result<String, String> {
    if let Some(host) = text.strip_suffix(":*") {
        let origin = normalise_origin(host)?;
        if origin
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("it names a port and \":*\"".to_string());
        }
        return Ok(format!("{origin}:*"));
    }
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme is {:?}", url.scheme()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("it contains user info".to_string());
    }
    // `Url` turns an empty path into "/", so a trailing slash is tolerated here.
    if url.path() != "/" {
        return Err(format!("it has the path {:?}", url.path()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("it has a query or fragment".to_string());
    }
    Ok(url.origin().ascii_serialization())
}

fn normalise_utm(value: Option<&Text>) -> Option<String> {
    value
        .map(|v| v.get_ref().trim().to_lowercase())
        .filter(|v| !v.is_empty())
}

/// Parses `schedule` the way tokio-cron-scheduler 0.15 does (`croner`, seconds required), so a
/// schedule accepted here cannot fail when the job is created.
fn check_cron(schedule: &str) -> Result<(), String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn check_log_level(level: &str) -> Result<(), String> {
    if level.trim().is_empty() {
        return Err("it is empty".to_string());
    }
    // EnvFilter reads an unknown bare word as a target name, so `warning` would silently turn
    // logging off; catch the usual misspellings of a level.
    for directive in level.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "warning" | "err" | "information" | "notice" | "critical" | "fatal" | "verbose"
        ) {
            return Err(format!("{directive:?} is not a level name"));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A Strict-Transport-Security value: `;`-separated directives of printable ASCII, one of
/// them `max-age=<seconds>`.
fn check_hsts(text: &str) -> Result<(), String> {
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("only printable ASCII is allowed in a header".into());
    }
    let has_max_age = text.split(';').any(|directive| {
        directive
            .trim()
            .split_once('=')
            .is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("max-age")
                    && !value.trim().is_empty()
                    && value.trim().bytes().all(|b| b.is_ascii_digit())
            })
    });
    if has_max_age {
        Ok(())
    } else {
        Err("a max-age=<seconds> directive is required".into())
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use ipnet::IpNet;

    use crate::campaign::Campaign;
    use crate::privacy::geo::mmdb::{Network, write_country_db};

    use super::super::tests::{game, hash, ok, refused};
    use super::super::{
        AllowedOrigins, AttributionModel, ClientIpHeader, DEFAULT_CACHE_MIB, LimitsConfig,
        LogFormat, MaxConnections, RateLimit, RateLimitsConfig, Scope, TlsFiles, parse_str,
    };

    // -- [server] -------------------------------------------------------------------------------

    #[test]
    fn listen_must_be_a_socket_address() {
        let msg = refused("[server]\nlisten = \"localhost:443\"\n", "server.listen", 2);
        assert!(msg.contains("\"localhost:443\""), "{msg}");
        refused("[server]\nlisten = \"0.0.0.0\"\n", "server.listen", 2);
        assert_eq!(
            ok("[server]\nlisten = \"[::]:8443\"\n").server.listen,
            "[::]:8443".parse().unwrap()
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let msg = refused(
            "[server]\nlisten = \"0.0.0.0:80\"\ntls = false\n",
            "server.tls",
            3,
        );
        assert!(
            msg.contains("plain HTTP is allowed only on a loopback listen address"),
            "{msg}"
        );
        // The default listen address is not loopback either.
        refused("[server]\ntls = false\n", "server.tls", 2);
        refused(
            "[server]\nlisten = \"[::]:80\"\ntls = false\n",
            "server.tls",
            3,
        );

        let config = ok("[server]\nlisten = \"127.0.0.1:8080\"\ntls = false\n");
        assert_eq!(config.server.tls, None);
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            ok("[server]\nlisten = \"[::1]:8080\"\ntls = false\n")
                .server
                .tls,
            None
        );
        assert!(
            ok("[server]\nlisten = \"127.0.0.1:8443\"\ntls = true\n")
                .server
                .tls
                .is_some()
        );
    }

    #[test]
    fn tls_paths_resolve_against_the_config_folder() {
        let config = ok("[server]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/abs/key.pem\"\n");
        assert_eq!(
            config.server.tls,
            Some(TlsFiles {
                cert: PathBuf::from("/etc/tc/tls/cert.pem"),
                key: PathBuf::from("/abs/key.pem"),
            })
        );
        refused("[server]\ntls_cert = \"\"\n", "server.tls_cert", 2);
        refused("[server]\n\ntls_key = \" \"\n", "server.tls_key", 3);
    }

    #[test]
    fn acme_and_certificate_files_exclude_each_other() {
        let acme = "\n[server.acme]\ndomains = [\"collect.studio.example\"]\n";
        let message = refused(
            &format!("[server]\ntls_cert = \"cert.pem\"\n{acme}"),
            "server.tls_cert",
            2,
        );
        assert!(
            message.contains("cannot be set with [server.acme]"),
            "{message}"
        );
        refused(
            &format!("[server]\ntls_key = \"key.pem\"\n{acme}"),
            "server.tls_key",
            2,
        );
        let config = ok(&format!(
            "[storage]\npath = \"/var/lib/tc/collector.db\"\n{acme}"
        ));
        let settings = config.server.acme.expect("acme");
        assert_eq!(settings.directory, crate::config::LETS_ENCRYPT);
        assert_eq!(settings.cache_dir, PathBuf::from("/var/lib/tc/acme"));
        assert!(config.server.tls.is_none());
        refused("[server.acme]\ndomains = []\n", "server.acme.domains", 1);
        refused(
            "[server.acme]\ndomains = [\"collect.studio.example\"]\ncontact = \"ops@x\"\n",
            "server.acme.contact",
            3,
        );
    }

    #[test]
    fn trusted_proxies_are_cidrs_or_single_addresses() {
        let config = ok(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.168.1.7\", \"::1\", \"fd00::1/8\"]\n",
        );
        let expected: Vec<IpNet> = ["10.0.0.0/8", "192.168.1.7/32", "::1/128", "fd00::/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(config.server.trusted_proxies, expected);

        let msg = refused(
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
            "server.trusted_proxies[1]",
            2,
        );
        assert!(msg.contains("CIDR"), "{msg}");
        refused(
            "[server]\ntrusted_proxies = [\n\"proxy.local\"\n]\n",
            "server.trusted_proxies[0]",
            3,
        );
    }

    #[test]
    fn the_client_address_header_is_one_named_kind_and_needs_a_proxy() {
        assert_eq!(ok("").server.client_ip_header, ClientIpHeader::None);
        let proxied = "[server]\ntrusted_proxies = [\"127.0.0.1\"]\n";
        assert_eq!(
            ok(proxied).server.client_ip_header,
            ClientIpHeader::XForwardedFor
        );
        for (name, header) in [
            ("Forwarded", ClientIpHeader::Forwarded),
            ("x-real-ip", ClientIpHeader::XRealIp),
            ("none", ClientIpHeader::None),
        ] {
            let text = format!("{proxied}client_ip_header = \"{name}\"\n");
            assert_eq!(ok(&text).server.client_ip_header, header);
        }
        let msg = refused(
            &format!("{proxied}client_ip_header = \"true-client-ip\"\n"),
            "server.client_ip_header",
            3,
        );
        assert!(msg.contains("\"x-forwarded-for\", \"forwarded\""), "{msg}");
        let msg = refused(
            "[server]\nclient_ip_header = \"forwarded\"\n",
            "server.client_ip_header",
            2,
        );
        assert!(msg.contains("trusted_proxies"), "{msg}");
    }

    #[test]
    fn origins_are_normalised() {
        let config = ok(
            "[server]\nallowed_origins = [\n  \"HTTPS://MyGame.Example:443/\",\n  \
             \"http://localhost:8080\",\n  \"https://a.example:8443\",\n  \
             \"http://b.example:80\",\n  \"https://mygame.example\",\n  \
             \"HTTP://Dev.Example:*\",\n]\n",
        );
        assert_eq!(
            config.server.allowed_origins,
            AllowedOrigins::List(vec![
                "https://mygame.example".to_string(),
                "http://localhost:8080".to_string(),
                "https://a.example:8443".to_string(),
                "http://b.example".to_string(),
                "http://dev.example:*".to_string(),
            ])
        );
        assert!(
            config
                .server
                .allowed_origins
                .allows("http://dev.example:5173")
        );
        assert!(
            !config
                .server
                .allowed_origins
                .allows("http://localhost:8081")
        );
        refused(
            "[server]\nallowed_origins = [\"http://dev.example:8080:*\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        assert_eq!(
            ok("[server]\nallowed_origins = [\"*\"]\n")
                .server
                .allowed_origins,
            AllowedOrigins::Any
        );
    }

    #[test]
    fn bad_origins_are_refused() {
        refused(
            "[server]\nallowed_origins = [\"https://a.example\", \"*\"]\n",
            "server.allowed_origins[1]",
            2,
        );
        let msg = refused(
            "[server]\nallowed_origins = [\n\"https://a.example/landing\"]\n",
            "server.allowed_origins[0]",
            3,
        );
        assert!(msg.contains("path"), "{msg}");
        refused(
            "[server]\nallowed_origins = [\"https://a.example/?x=1\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"https://a.example#top\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"ftp://a.example\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"mygame.example\"]\n",
            "server.allowed_origins[0]",
            2,
        );
        refused(
            "[server]\nallowed_origins = [\"https://user@a.example\"]\n",
            "server.allowed_origins[0]",
            2,
        );
    }

    // -- [storage] ------------------------------------------------------------------------------

    #[test]
    fn storage_paths_resolve_against_the_config_folder() {
        let config = ok("[storage]\npath = \"data/collector.db\"\nkey_file = \"/keys/db.key\"\n");
        assert_eq!(
            config.storage.path,
            PathBuf::from("/etc/tc/data/collector.db")
        );
        assert_eq!(config.storage.key_file, PathBuf::from("/keys/db.key"));

        // A config path with no folder keeps relative paths relative (to the working directory,
        // which is then that folder).
        let config =
            parse_str("[storage]\npath = \"c.db\"\n", Path::new("collector.toml")).unwrap();
        assert_eq!(config.storage.path, PathBuf::from("c.db"));
    }

    #[test]
    fn the_writer_cache_has_a_default_and_bounds() {
        assert_eq!(ok("[storage]\n").storage.cache_mib, DEFAULT_CACHE_MIB);
        assert_eq!(ok("[storage]\ncache_mib = 64\n").storage.cache_mib, 64);
        refused("[storage]\ncache_mib = 1\n", "storage.cache_mib", 2);
        refused("[storage]\ncache_mib = 100000\n", "storage.cache_mib", 2);
    }

    #[test]
    fn storage_paths_must_not_be_empty() {
        refused("[storage]\npath = \"\"\n", "storage.path", 2);
        refused("[storage]\nkey_file = \"\"\n", "storage.key_file", 2);
    }

    // -- [privacy] ------------------------------------------------------------------------------

    #[test]
    fn retention_days_is_1_to_30() {
        let msg = refused(
            "[privacy]\nretention_days = 45\n",
            "privacy.retention_days",
            2,
        );
        assert!(msg.contains("must be between 1 and 30 (got 45)"), "{msg}");
        refused(
            "[privacy]\nretention_days = 0\n",
            "privacy.retention_days",
            2,
        );
        let msg = refused(
            "[privacy]\nretention_days = -1\n",
            "privacy.retention_days",
            2,
        );
        assert!(msg.contains("(got -1)"), "{msg}");
        assert_eq!(
            ok("[privacy]\nretention_days = 1\n").privacy.retention_days,
            1
        );
    }

    #[test]
    fn salt_rotation_hours_fits_the_retention_window() {
        refused(
            "[privacy]\nsalt_rotation_hours = 0\n",
            "privacy.salt_rotation_hours",
            2,
        );
        refused(
            "[privacy]\nsalt_rotation_hours = -24\n",
            "privacy.salt_rotation_hours",
            2,
        );
        let msg = refused(
            "[privacy]\nretention_days = 2\nsalt_rotation_hours = 49\n",
            "privacy.salt_rotation_hours",
            3,
        );
        assert!(msg.contains("between 1 and 48"), "{msg}");
        let config = ok("[privacy]\nretention_days = 2\nsalt_rotation_hours = 48\n");
        assert_eq!(config.privacy.salt_rotation_hours, 48);
        assert_eq!(
            ok("[privacy]\nsalt_rotation_hours = 720\n")
                .privacy
                .salt_rotation_hours,
            720
        );
    }

    #[test]
    fn ipv6_prefix_is_48_to_128() {
        refused("[privacy]\nipv6_prefix = 47\n", "privacy.ipv6_prefix", 2);
        refused("[privacy]\nipv6_prefix = 129\n", "privacy.ipv6_prefix", 2);
        refused("[privacy]\nipv6_prefix = -64\n", "privacy.ipv6_prefix", 2);
        assert_eq!(ok("[privacy]\nipv6_prefix = 48\n").privacy.ipv6_prefix, 48);
        assert_eq!(
            ok("[privacy]\nipv6_prefix = 128\n").privacy.ipv6_prefix,
            128
        );
    }

    /// The country database is read at load: a missing, foreign or damaged file is a
    /// configuration error naming the key and its line.
    #[test]
    fn geoip_db_must_be_a_country_database() {
        let dir = tempfile::tempdir().expect("dir");
        let good = dir.path().join("countries.mmdb");
        write_country_db(
            &good,
            "DBIP-Country-Lite",
            &[Network::new("203.0.113.0/24", "DE")],
        )
        .expect("mmdb");
        let line = |path: &Path| format!("[privacy]\ngeoip_db = \"{}\"\n", path.display());
        assert_eq!(
            ok(&line(&good)).privacy.geoip_db.as_deref(),
            Some(good.as_path())
        );
        assert_eq!(ok("").privacy.geoip_db, None);
        let missing = refused(&line(&dir.path().join("nope.mmdb")), "privacy.geoip_db", 2);
        assert!(missing.contains("nope.mmdb"), "{missing}");
        let garbage = dir.path().join("garbage.mmdb");
        std::fs::write(&garbage, "<html>404</html>").expect("write");
        let shown = refused(&line(&garbage), "privacy.geoip_db", 2);
        assert!(shown.contains("not a MaxMind DB"), "{shown}");
        let asn = dir.path().join("asn.mmdb");
        write_country_db(
            &asn,
            "GeoLite2-ASN",
            &[Network::new("203.0.113.0/24", "DE")],
        )
        .expect("mmdb");
        let shown = refused(&line(&asn), "privacy.geoip_db", 2);
        assert!(shown.contains("not a country database"), "{shown}");
        refused("[privacy]\ngeoip_db = \"\"\n", "privacy.geoip_db", 2);
    }

    #[test]
    fn min_cell_size_is_at_least_1() {
        refused("[privacy]\nmin_cell_size = 0\n", "privacy.min_cell_size", 2);
        refused(
            "[privacy]\nmin_cell_size = 5000000000\n",
            "privacy.min_cell_size",
            2,
        );
        assert_eq!(
            ok("[privacy]\nmin_cell_size = 5\n").privacy.min_cell_size,
            5
        );
    }

    // -- [attribution] --------------------------------------------------------------------------

    #[test]
    fn attribution_model_is_one_of_two() {
        let msg = refused(
            "[attribution]\nmodel = \"linear\"\n",
            "attribution.model",
            2,
        );
        assert!(msg.contains("\"last_touch\" or \"first_touch\""), "{msg}");
        assert_eq!(
            ok("[attribution]\nmodel = \"first_touch\"\n")
                .attribution
                .model,
            AttributionModel::FirstTouch
        );
    }

    #[test]
    fn lookback_days_fits_the_retention_window() {
        refused(
            "[attribution]\nlookback_days = 0\n",
            "attribution.lookback_days",
            2,
        );
        refused(
            "[attribution]\nlookback_days = 31\n",
            "attribution.lookback_days",
            2,
        );
        let msg = refused(
            "[privacy]\nretention_days = 7\n[attribution]\nlookback_days = 14\n",
            "attribution.lookback_days",
            4,
        );
        assert!(msg.contains("between 1 and 7"), "{msg}");
        // Omitted: 14, or the retention window when that is shorter.
        let config = ok("[privacy]\nretention_days = 7\n");
        assert_eq!(config.attribution.lookback_days, 7);
        let config = ok("[privacy]\nretention_days = 20\n");
        assert_eq!(config.attribution.lookback_days, 14);
        let config = ok("[attribution]\nlookback_days = 30\nrequire_consent = true\n");
        assert_eq!(config.attribution.lookback_days, 30);
        assert!(config.attribution.require_consent);
    }

    // -- [[games]] ------------------------------------------------------------------------------

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

    // -- [[links]] ------------------------------------------------------------------------------

    fn link(name: &str, extra: &str) -> String {
        format!(
            "[[links]]\nname = \"{name}\"\ndestination = \"https://store.example/app/1\"\n{extra}"
        )
    }

    #[test]
    fn links_parse_and_normalise_utm() {
        let config = ok(&format!(
            "{}{}",
            game("my-game", 1),
            link(
                "Steam-Launch",
                "game = \"my-game\"\nutm = { source = \" NewsLetter \", medium = \"\", \
                 term = \"Dice Game\" }\n"
            )
        ));
        let l = &config.links[0];
        assert_eq!(l.name, "Steam-Launch");
        assert_eq!(l.game.as_deref(), Some("my-game"));
        assert_eq!(l.destination.as_str(), "https://store.example/app/1");
        assert_eq!(
            l.utm,
            Campaign {
                source: Some("newsletter".to_string()),
                medium: None,
                campaign: None,
                content: None,
                term: Some("dice game".to_string()),
                channel: None,
            }
        );
        assert!(l.forward_utm);
        let config = ok(&link("x", "forward_utm = false\n"));
        assert!(!config.links[0].forward_utm);
        assert_eq!(config.links[0].game, None);
        assert_eq!(config.links[0].utm, Campaign::default());
    }

    #[test]
    fn link_name_is_checked() {
        refused(&link("a/b", ""), "links[0].name", 2);
        refused(&link(&"x".repeat(65), ""), "links[0].name", 2);
        refused(
            "[[links]]\ndestination = \"https://x.example\"\n",
            "links[0].name",
            1,
        );
        let msg = refused(
            &format!("{}{}", link("a", ""), link("a", "")),
            "links[1].name",
            5,
        );
        assert!(msg.contains("unique"), "{msg}");
    }

    #[test]
    fn link_game_must_be_configured() {
        let msg = refused(
            &format!("{}{}", game("a", 1), link("l", "game = \"b\"\n")),
            "links[0].game",
            7,
        );
        assert!(msg.contains("configured: a"), "{msg}");
        refused(&link("l", "game = \"b\"\n"), "links[0].game", 4);
    }

    #[test]
    fn link_destination_is_an_http_url() {
        refused("[[links]]\nname = \"l\"\n", "links[0].destination", 1);
        for bad in [
            "/relative",
            "store.example/app",
            "ftp://store.example/",
            "javascript:alert(1)",
        ] {
            refused(
                &format!("[[links]]\nname = \"l\"\ndestination = \"{bad}\"\n"),
                "links[0].destination",
                3,
            );
        }
    }

    // -- [central] ------------------------------------------------------------------------------

    const CENTRAL: &str = "[central]\nurl = \"https://tracks.example\"\ncollector_id = \"eu-1\"\n\
                           token_file = \"central.token\"\n";

    #[test]
    fn central_parses_with_defaults_and_relative_paths() {
        let central = ok(CENTRAL).central.unwrap();
        assert_eq!(central.url.as_str(), "https://tracks.example/");
        assert_eq!(central.collector_id, "eu-1");
        assert_eq!(central.token_file, PathBuf::from("/etc/tc/central.token"));
        assert_eq!(central.push_schedule, "0 */15 * * * *");
        assert_eq!(central.ca_file, None);
        assert_eq!(central.timeout_secs, 30);
        assert_eq!(central.retry_max_secs, 900);

        let central = ok(&format!(
            "{CENTRAL}push_schedule = \"30 0 3 * * Mon\"\nca_file = \"pki/ca.pem\"\n"
        ))
        .central
        .unwrap();
        assert_eq!(central.push_schedule, "30 0 3 * * Mon");
        assert_eq!(central.ca_file, Some(PathBuf::from("/etc/tc/pki/ca.pem")));
    }

    #[test]
    fn central_required_keys() {
        refused(
            "\n[central]\ncollector_id = \"a\"\ntoken_file = \"t\"\n",
            "central.url",
            2,
        );
        refused(
            "[central]\nurl = \"https://t.example\"\ntoken_file = \"t\"\n",
            "central.collector_id",
            1,
        );
        refused(
            "[central]\nurl = \"https://t.example\"\ncollector_id = \"a\"\n",
            "central.token_file",
            1,
        );
    }

    #[test]
    fn central_values_are_checked() {
        let with = |key: &str, value: &str| {
            CENTRAL
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} =")) {
                        format!("{key} = {value}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect::<String>()
        };
        refused(&with("url", "\"tracks.example\""), "central.url", 2);
        refused(&with("url", "\"ftp://tracks.example\""), "central.url", 2);
        refused(&with("url", "\"https://t.example/?a=1\""), "central.url", 2);
        refused(&with("url", "\"https://u:p@t.example/\""), "central.url", 2);
        refused(&with("collector_id", "\"eu 1\""), "central.collector_id", 3);
        refused(&with("token_file", "\"\""), "central.token_file", 4);
        refused(&format!("{CENTRAL}ca_file = \"\"\n"), "central.ca_file", 5);
        refused(&with("url", "\"http://tracks.example\""), "central.url", 2);
        assert_eq!(
            ok(&with("url", "\"http://127.0.0.1:9000\""))
                .central
                .unwrap()
                .url
                .as_str(),
            "http://127.0.0.1:9000/"
        );
        refused(
            &format!("{CENTRAL}timeout_secs = 0\n"),
            "central.timeout_secs",
            5,
        );
        refused(
            &format!("{CENTRAL}retry_max_secs = 0\n"),
            "central.retry_max_secs",
            5,
        );
        refused(
            &format!("{CENTRAL}retry_max_secs = \"5\"\n"),
            "central.retry_max_secs",
            5,
        );
    }

    #[test]
    fn push_schedule_is_a_cron_expression_with_seconds() {
        // Five fields is classic cron without seconds: tokio-cron-scheduler refuses it.
        let msg = refused(
            &format!("{CENTRAL}push_schedule = \"*/15 * * * *\"\n"),
            "central.push_schedule",
            5,
        );
        assert!(msg.contains("with seconds"), "{msg}");
        refused(
            &format!("{CENTRAL}push_schedule = \"every 15 minutes\"\n"),
            "central.push_schedule",
            5,
        );
        refused(
            &format!("{CENTRAL}push_schedule = \"0 61 * * * *\"\n"),
            "central.push_schedule",
            5,
        );
        refused(
            &format!("{CENTRAL}push_schedule = \"\"\n"),
            "central.push_schedule",
            5,
        );
    }

    // -- [[tokens]] -----------------------------------------------------------------------------

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
            msg.contains("\"aggregates\", \"forget\" or \"metrics\""),
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

    // -- [log] ----------------------------------------------------------------------------------

    #[test]
    fn log_rules() {
        let config = ok("[log]\nlevel = \"warn,tracks_collector=debug\"\nformat = \"json\"\n");
        assert_eq!(config.log.level, "warn,tracks_collector=debug");
        assert_eq!(config.log.format, LogFormat::Json);
        refused("[log]\nlevel = \"tracks_collector=loud\"\n", "log.level", 2);
        refused("[log]\nlevel = \"warning\"\n", "log.level", 2);
        refused("[log]\nlevel = \"\"\n", "log.level", 2);
        let msg = refused("[log]\nformat = \"xml\"\n", "log.format", 2);
        assert!(msg.contains("\"text\" or \"json\""), "{msg}");
    }

    // -- [limits] and HSTS -----------------------------------------------------------------------

    #[test]
    fn limits_have_defaults_that_do_not_limit_a_studio() {
        let limits = ok("").limits;
        assert_eq!(limits, LimitsConfig::default());
        assert_eq!(limits.connections_per_address, 64);
        assert_eq!(limits.max_connections, MaxConnections::Auto);
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_header_bytes, 32 * 1024);
    }

    #[test]
    fn limits_are_read_and_bounded() {
        let limits = ok(
            "[limits]\nconnections_per_address = 8\nmax_connections = 500\n\
             handshake_timeout_secs = 2\nheader_timeout_secs = 3\nidle_timeout_secs = 4\n\
             max_connection_age_secs = 5\nmax_header_bytes = 16384\n\
             visits_per_second = 7\nvisits_burst = 70\nmeasure_key_events_per_second = 900\n\
             measure_key_burst = 1000\nplayer_events_per_second = 3\nplayer_burst = 30\n\
             public_per_second = 4\npublic_burst = 40\nfailed_auth_per_second = 2\n\
             failed_auth_burst = 5\n",
        )
        .limits;
        let rate = |per_second: u32, burst: u32| RateLimit {
            per_second: NonZeroU32::new(per_second).expect("rate"),
            burst: NonZeroU32::new(burst).expect("burst"),
        };
        assert_eq!(
            limits,
            LimitsConfig {
                connections_per_address: 8,
                max_connections: MaxConnections::At(500),
                handshake_timeout: Duration::from_secs(2),
                header_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(4),
                max_connection_age: Duration::from_secs(5),
                max_header_bytes: 16384,
                rates: RateLimitsConfig {
                    address: rate(7, 70),
                    measure_key: rate(900, 1000),
                    player: rate(3, 30),
                    public: rate(4, 40),
                    failed_auth: rate(2, 5),
                },
            }
        );
        let auto = ok("[limits]\nmax_connections = \"auto\"\n").limits;
        assert_eq!(auto.max_connections, MaxConnections::Auto);
        for (line, key) in [
            ("connections_per_address = 0", "connections_per_address"),
            ("max_connections = 0", "max_connections"),
            ("header_timeout_secs = 0", "header_timeout_secs"),
            ("idle_timeout_secs = -1", "idle_timeout_secs"),
            ("max_connection_age_secs = 0", "max_connection_age_secs"),
            ("max_header_bytes = 4096", "max_header_bytes"),
            ("header_bytes = 4096", "header_bytes"),
            ("visits_per_second = 0", "visits_per_second"),
            ("public_burst = 0", "public_burst"),
            ("failed_auth_per_second = 0", "failed_auth_per_second"),
            ("player_burst = 0", "player_burst"),
            // A full batch of 100 must fit in one go.
            ("measure_key_burst = 99", "measure_key_burst"),
        ] {
            refused(&format!("[limits]\n{line}\n"), &format!("limits.{key}"), 2);
        }
        let msg = refused(
            "[limits]\nmax_connections = \"many\"\n",
            "limits.max_connections",
            2,
        );
        assert!(msg.contains("\"auto\""), "{msg}");
    }

    #[test]
    fn hsts_is_on_by_default_and_checked() {
        assert_eq!(ok("").server.hsts.as_deref(), Some("max-age=31536000"));
        let custom = ok("[server]\nhsts = \"max-age=600; includeSubDomains\"\n");
        assert_eq!(
            custom.server.hsts.as_deref(),
            Some("max-age=600; includeSubDomains")
        );
        assert_eq!(ok("[server]\nhsts = \"\"\n").server.hsts, None);
        refused("[server]\nhsts = \"includeSubDomains\"\n", "server.hsts", 2);
        refused("[server]\nhsts = \"max-age=soon\"\n", "server.hsts", 2);
        refused("[server]\nhsts = \"max-age=1\\u0000\"\n", "server.hsts", 2);
    }
}
