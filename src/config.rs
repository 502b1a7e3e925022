//! Edge: the TOML configuration file, parsed in two stages (raw file struct, then validated `Config`).
//!
//! Every section of DESIGN.md "Configuration" is parsed and validated here, even those whose
//! features live elsewhere, so a typo is caught at start and nothing read from the file is
//! unwrapped later.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::campaign::Campaign;

/// Where the packaged daemon looks when neither `--config` nor `TRACKS_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tracks-collector/collector.toml";

/// The validated runtime configuration. Built only by [`Config::load`] or [`Config::zero_config`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` for the zero-config local instance.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub privacy: PrivacyConfig,
    pub attribution: AttributionConfig,
    pub games: Vec<GameConfig>,
    pub links: Vec<LinkConfig>,
    /// `None` when the `[central]` section is absent: nothing is pushed.
    pub central: Option<CentralConfig>,
    pub tokens: Vec<TokenConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `None` means plain HTTP, which validation allows only on a loopback `listen` address.
    pub tls: Option<TlsFiles>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    pub allowed_origins: AllowedOrigins,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Browser origins that may post to `/collect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `["*"]`: any origin (never the default).
    Any,
    /// Exact origins, normalised to `scheme://host[:port]` with no trailing slash, lower-case.
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub key_file: PathBuf,
    /// The writer's page cache, in MiB: pages it need not read back and decrypt.
    pub cache_mib: u32,
}

/// `storage.cache_mib` unless set: a store of about a million visits fits. SQLite takes the
/// memory only as pages are read, so a smaller store never uses it all.
pub const DEFAULT_CACHE_MIB: u32 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivacyConfig {
    /// 1..=30.
    pub retention_days: u32,
    /// >= 1.
    pub salt_rotation_hours: u32,
    /// 48..=128: how many leading bits of an IPv6 address are kept before hashing.
    pub ipv6_prefix: u8,
    /// >= 1; 1 means no suppression.
    pub min_cell_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionConfig {
    pub model: AttributionModel,
    /// 1..=retention_days.
    pub lookback_days: u32,
    pub require_consent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributionModel {
    LastTouch,
    FirstTouch,
}

impl AttributionModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AttributionModel::LastTouch => "last_touch",
            AttributionModel::FirstTouch => "first_touch",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GameConfig {
    /// 1..=64 characters of `[a-z0-9._-]`, unique.
    pub id: String,
    /// BLAKE3 of the Bearer key this game's builds send to `/measure`.
    pub measure_key: SecretHash,
    /// Allowed `event_name` values; default `first_game_open`, `game_open`.
    pub events: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The `{link}` of `/r/{link}`: 1..=64 characters of `[A-Za-z0-9._-]`, unique.
    pub name: String,
    /// Must name a configured game when set.
    pub game: Option<String>,
    /// http or https, absolute.
    pub destination: Url,
    /// Default UTM values; lower-cased and trimmed, empty means unset.
    pub utm: Campaign,
    /// Append the UTM parameters to the destination (default true).
    pub forward_utm: bool,
}

#[derive(Debug, Clone)]
pub struct CentralConfig {
    /// http(s) base URL of the central platform.
    pub url: Url,
    pub collector_id: String,
    pub token_file: PathBuf,
    /// A cron expression with seconds, as tokio-cron-scheduler reads it; validated at load.
    pub push_schedule: String,
    pub ca_file: Option<PathBuf>,
    /// Bounds connecting (TCP and TLS) and, separately, waiting for the answer.
    pub timeout_secs: u32,
    /// The longest wait between two attempts to deliver a document.
    pub retry_max_secs: u32,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub hash: SecretHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Aggregates,
    Forget,
    Metrics,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Aggregates => "aggregates",
            Scope::Forget => "forget",
            Scope::Metrics => "metrics",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A tracing-subscriber `EnvFilter` directive such as `info` or `tracks_collector=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret stored as its BLAKE3 digest (`blake3:<64 hex>` in the file), never in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(blake3::Hash);

impl SecretHash {
    pub fn of(secret: &[u8]) -> SecretHash {
        SecretHash(blake3::hash(secret))
    }

    /// Constant-time: `blake3::Hash` equality does not short-circuit.
    pub fn matches(&self, secret: &[u8]) -> bool {
        self.0 == blake3::hash(secret)
    }

    /// The config-file form, `blake3:<hex>`.
    pub fn to_config_string(&self) -> String {
        format!("blake3:{}", self.0.to_hex())
    }

    /// Parses `blake3:<64 lower- or upper-case hex>`.
    pub fn parse(text: &str) -> Result<SecretHash, String> {
        let hex = text
            .strip_prefix("blake3:")
            .ok_or_else(|| "expected \"blake3:<64 hex characters>\"".to_string())?;
        blake3::Hash::from_hex(hex)
            .map(SecretHash)
            .map_err(|_| "expected \"blake3:<64 hex characters>\"".to_string())
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not the secret, but there is no reason to print it either.
        f.write_str("SecretHash(..)")
    }
}

/// A configuration problem, written for the person editing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `key` is the dotted key (`server.listen`, `games[1].measure_key`); `line` is 1-based
    /// when known.
    #[error("{}", invalid_message(.path, .line, .key, .message))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

fn invalid_message(path: &Path, line: &Option<usize>, key: &str, message: &str) -> String {
    match line {
        Some(line) => format!("{}:{line}: `{key}`: {message}", path.display()),
        None => format!("{}: `{key}`: {message}", path.display()),
    }
}

// ---------------------------------------------------------------------------------------------
// Defaults (DESIGN.md "Configuration" shows them; an omitted key or section takes them).
// ---------------------------------------------------------------------------------------------

/// The `event_name` values a game accepts when its `events` key is omitted.
pub const DEFAULT_EVENTS: [&str; 2] = ["first_game_open", "game_open"];

/// The one game of the zero-config local instance.
pub const DEMO_GAME_ID: &str = "demo-game";

/// Where the zero-config local instance listens: loopback only, it is a try-out, not a service.
pub const ZERO_CONFIG_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 443);
const DEFAULT_TLS_CERT: &str = "/etc/tracks-collector/tls/fullchain.pem";
const DEFAULT_TLS_KEY: &str = "/etc/tracks-collector/tls/privkey.pem";
const DEFAULT_DB_PATH: &str = "/var/lib/tracks-collector/collector.db";
const DEFAULT_DB_KEY_FILE: &str = "/var/lib/tracks-collector/db.key";
const DEFAULT_PUSH_SCHEDULE: &str = "0 */15 * * * *";
const DEFAULT_CENTRAL_TIMEOUT_SECS: u32 = 30;
const DEFAULT_RETRY_MAX_SECS: u32 = 900;
const DEFAULT_LOOKBACK_DAYS: u32 = 14;
/// Retention is capped by the privacy promise (DESIGN.md: kept 30 days, then deleted).
const MAX_RETENTION_DAYS: u32 = 30;
/// What a missing `measure_key` or token `hash` should hold.
const HASH_WANTED: &str =
    "\"blake3:<64 hex characters>\", the line printed by `tracks-collector token new`";
/// Names end up in URLs, logs and metrics labels: short and plain.
const MAX_NAME_LEN: usize = 64;

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            retention_days: MAX_RETENTION_DAYS,
            salt_rotation_hours: 24,
            ipv6_prefix: 64,
            min_cell_size: 1,
        }
    }
}

impl Default for AttributionConfig {
    fn default() -> Self {
        AttributionConfig {
            model: AttributionModel::LastTouch,
            lookback_days: DEFAULT_LOOKBACK_DAYS,
            require_consent: false,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: LogFormat::Text,
        }
    }
}

fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect()
}

impl Config {
    /// Reads and validates the file at `path`; relative paths inside it are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // An absolute base keeps relative paths pointing at the same files even if the process
        // changes its working directory later.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        parse_str(&text, &path)
    }

    /// Same as the free function [`parse_str`].
    pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        parse_str(text, path)
    }

    /// The zero-config local instance (`serve` without a config file): loopback only, state kept
    /// in `state_dir`, one demo game.
    pub fn zero_config(state_dir: &Path, demo_measure_key: SecretHash) -> Config {
        Config {
            source: None,
            server: ServerConfig {
                listen: ZERO_CONFIG_LISTEN,
                tls: Some(TlsFiles {
                    cert: state_dir.join("tls").join("cert.pem"),
                    key: state_dir.join("tls").join("key.pem"),
                }),
                trusted_proxies: Vec::new(),
                allowed_origins: AllowedOrigins::List(Vec::new()),
            },
            storage: StorageConfig {
                path: state_dir.join("collector.db"),
                key_file: state_dir.join("db.key"),
                cache_mib: DEFAULT_CACHE_MIB,
            },
            privacy: PrivacyConfig::default(),
            attribution: AttributionConfig::default(),
            games: vec![GameConfig {
                id: DEMO_GAME_ID.to_string(),
                measure_key: demo_measure_key,
                events: default_events(),
            }],
            links: Vec::new(),
            central: None,
            tokens: Vec::new(),
            log: LogConfig::default(),
        }
    }
}

/// Parses and validates `text` as the contents of the config file at `path`. `path` is used in
/// error messages and its folder is the base of relative paths.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let checker = Checker {
        text,
        path,
        base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let raw: RawFile = toml::from_str(text).map_err(|err| checker.toml_error(&err))?;
    checker.config(raw)
}

// ---------------------------------------------------------------------------------------------
// Stage one: the file as written. Every value is `Spanned` so an error can name its line, and
// integers are read as i64 so a negative value gets a range message instead of a type error.
// ---------------------------------------------------------------------------------------------

type Text = Spanned<String>;
type TextList = Spanned<Vec<Text>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawFile {
    server: RawServer,
    storage: RawStorage,
    privacy: RawPrivacy,
    attribution: RawAttribution,
    games: Vec<Spanned<RawGame>>,
    links: Vec<Spanned<RawLink>>,
    central: Option<Spanned<RawCentral>>,
    tokens: Vec<Spanned<RawToken>>,
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Text>,
    tls: Option<Spanned<bool>>,
    tls_cert: Option<Text>,
    tls_key: Option<Text>,
    trusted_proxies: Option<TextList>,
    allowed_origins: Option<TextList>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: Option<Text>,
    key_file: Option<Text>,
    cache_mib: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    retention_days: Option<Spanned<i64>>,
    salt_rotation_hours: Option<Spanned<i64>>,
    ipv6_prefix: Option<Spanned<i64>>,
    min_cell_size: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAttribution {
    model: Option<Text>,
    lookback_days: Option<Spanned<i64>>,
    require_consent: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGame {
    id: Option<Text>,
    measure_key: Option<Text>,
    events: Option<TextList>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    name: Option<Text>,
    game: Option<Text>,
    destination: Option<Text>,
    utm: Option<RawUtm>,
    forward_utm: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUtm {
    source: Option<Text>,
    medium: Option<Text>,
    campaign: Option<Text>,
    content: Option<Text>,
    term: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCentral {
    url: Option<Text>,
    collector_id: Option<Text>,
    token_file: Option<Text>,
    push_schedule: Option<Text>,
    ca_file: Option<Text>,
    timeout_secs: Option<Spanned<i64>>,
    retry_max_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Option<Text>,
    scopes: Option<TextList>,
    hash: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Text>,
    format: Option<Text>,
}

// ---------------------------------------------------------------------------------------------
// Stage two: validation into `Config`. The first problem found is returned.
// ---------------------------------------------------------------------------------------------

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
            Charset::Lower => "a-z, 0-9, '.', '_' and '-'",
            Charset::Mixed => "A-Z, a-z, 0-9, '.', '_' and '-'",
        }
    }
}

struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    /// The config file's folder: relative paths are resolved against it.
    base: PathBuf,
}

impl Checker<'_> {
    fn config(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let privacy = self.privacy(&raw.privacy)?;
        let games = self.games(&raw.games)?;
        Ok(Config {
            source: Some(self.path.to_path_buf()),
            server: self.server(&raw.server)?,
            storage: self.storage(&raw.storage)?,
            attribution: self.attribution(&raw.attribution, &privacy)?,
            privacy,
            links: self.links(&raw.links, &games)?,
            games,
            central: raw.central.as_ref().map(|c| self.central(c)).transpose()?,
            tokens: self.tokens(&raw.tokens)?,
            log: self.log(&raw.log)?,
        })
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
        let mut trusted_proxies = Vec::new();
        for (i, v) in raw
            .trusted_proxies
            .iter()
            .flat_map(|l| l.get_ref())
            .enumerate()
        {
            let text = v.get_ref().as_str();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    self.at(
                        &format!("server.trusted_proxies[{i}]"),
                        v,
                        format!(
                            "must be a network in CIDR form such as \"10.0.0.0/8\" or \
                             \"fd00::/8\", or a single IP address (got {text:?})"
                        ),
                    )
                })?;
            // Host bits are meaningless for matching; drop them so logs show the network.
            trusted_proxies.push(net.trunc());
        }
        Ok(ServerConfig {
            listen,
            tls,
            trusted_proxies,
            allowed_origins: self.allowed_origins(raw.allowed_origins.as_ref())?,
        })
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
                         \"http://localhost:8080\": scheme, host and optional port, no path, \
                         query or fragment ({why}; got {:?})",
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
        Ok(PrivacyConfig {
            retention_days,
            salt_rotation_hours,
            ipv6_prefix,
            min_cell_size,
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

            let key_raw = self.required(
                &key("measure_key"),
                table,
                game.measure_key.as_ref(),
                HASH_WANTED,
            )?;
            let measure_key = self.secret(&key("measure_key"), key_raw)?;
            if let Some(j) = games.iter().position(|g| g.measure_key == measure_key) {
                return Err(self.at(
                    &key("measure_key"),
                    key_raw,
                    format!(
                        "is the same as games[{j}].measure_key; each game needs its own key \
                         because the key names the game"
                    ),
                ));
            }

            let events = match &game.events {
                None => default_events(),
                Some(list) => self.events(&key("events"), list)?,
            };
            games.push(GameConfig {
                id,
                measure_key,
                events,
            });
        }
        Ok(games)
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
        // The value is not echoed: someone may have pasted the secret itself here.
        SecretHash::parse(value.get_ref()).map_err(|why| {
            self.at(
                key,
                value,
                format!(
                    "{why}: the BLAKE3 hash printed by `tracks-collector token new`, never the \
                     secret itself"
                ),
            )
        })
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
    fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
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

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Rewords the serde/toml messages that would otherwise talk about Rust types.
fn friendly_toml_message(message: &str) -> String {
    if message.contains(" as i128") {
        return "is too large: expected an integer in range".to_string();
    }
    let message = message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
        .replace(
            "duplicate key",
            "is defined twice; a key or [section] may appear only once",
        );
    if message.starts_with("invalid type: map, expected an array") {
        // `[games]` instead of `[[games]]` is the usual cause.
        format!("{message}; a repeated section is written with double brackets, like [[games]]")
    } else {
        message
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// The dotted key (`links[0].utm.bogus`) whose key or value covers byte `pos`.
fn key_at(text: &str, pos: usize) -> Option<String> {
    // Recoverable, so syntax errors still get a best-effort document to search.
    let (doc, _) = toml::de::DeTable::parse_recoverable(text);
    key_in_table(doc.get_ref(), pos, "").or_else(|| key_from_text(text, pos))
}

fn covers(span: &Range<usize>, pos: usize) -> bool {
    span.contains(&pos) || (span.is_empty() && span.start == pos)
}

fn key_in_table(table: &toml::de::DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    table.iter().find_map(|(k, v)| {
        let path = join_key(prefix, k.get_ref());
        if covers(&k.span(), pos) {
            Some(path)
        } else {
            key_in_value(v, pos, &path)
        }
    })
}

fn key_in_value(value: &Spanned<toml::de::DeValue<'_>>, pos: usize, path: &str) -> Option<String> {
    // Children first: a table's span (its header or braces) encloses or precedes its keys.
    let inner = match value.get_ref() {
        toml::de::DeValue::Table(table) => key_in_table(table, pos, path),
        toml::de::DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| key_in_value(item, pos, &format!("{path}[{i}]"))),
        _ => None,
    };
    inner.or_else(|| covers(&value.span(), pos).then(|| path.to_string()))
}

/// Fallback for spans the parsed document does not cover (a duplicate key, a broken line): the
/// enclosing `[table]` header plus the key written before `=` on that line.
fn key_from_text(text: &str, pos: usize) -> Option<String> {
    let line_index = line_of(text, pos) - 1;
    let mut header = String::new();
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    for (index, line) in text.lines().enumerate().take(line_index + 1) {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let count = match array_counts.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    array_counts.push((name.clone(), 0));
                    0
                }
            };
            header = format!("{name}[{count}]");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            header = name.trim().to_string();
        } else if index == line_index {
            let key = line.split('=').next().map(str::trim).unwrap_or_default();
            if line.contains('=') && !key.is_empty() {
                return Some(if header.is_empty() {
                    key.to_string()
                } else {
                    format!("{header}.{key}")
                });
            }
        }
    }
    (!header.is_empty()).then_some(header)
}

/// `scheme://host[:port]`, lower-case, default port omitted: what browsers send in `Origin`.
fn normalise_origin(text: &str) -> Result<String, String> {
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
    use super::*;

    const EXAMPLE: &str = include_str!("../config/collector.example.toml");
    const ZERO_HASH: &str =
        "blake3:0000000000000000000000000000000000000000000000000000000000000000";

    fn file() -> &'static Path {
        Path::new("/etc/tc/collector.toml")
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, file())
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(err) => panic!("expected {text:?} to parse, got: {err}"),
        }
    }

    /// Asserts that `text` is refused on exactly `key` at `line`, and returns the full message.
    fn refused(text: &str, key: &str, line: usize) -> String {
        let err = match parse(text) {
            Ok(_) => panic!("expected {text:?} to be refused on `{key}`"),
            Err(err) => err,
        };
        let shown = err.to_string();
        match &err {
            ConfigError::Invalid {
                key: got_key,
                line: got_line,
                ..
            } => {
                assert_eq!(got_key, key, "wrong key in: {shown}");
                assert_eq!(*got_line, Some(line), "wrong line in: {shown}");
            }
            ConfigError::Read { .. } => panic!("unexpected read error: {shown}"),
        }
        assert!(shown.contains(&format!("`{key}`")), "{shown}");
        assert!(
            shown.contains(&format!("collector.toml:{line}:")),
            "{shown}"
        );
        shown
    }

    fn hash(n: u8) -> String {
        SecretHash::of(&[n]).to_config_string()
    }

    fn game(id: &str, n: u8) -> String {
        format!("[[games]]\nid = \"{id}\"\nmeasure_key = \"{}\"\n", hash(n))
    }

    // -- whole files ----------------------------------------------------------------------------

    #[test]
    fn example_file_parses() {
        let config = ok(EXAMPLE);
        assert_eq!(config.server.listen, "0.0.0.0:443".parse().unwrap());
        assert_eq!(
            config.server.allowed_origins,
            AllowedOrigins::List(vec!["https://mygame.example".to_string()])
        );
        assert_eq!(config.games.len(), 1);
        assert_eq!(config.games[0].id, "my-game");
        assert_eq!(config.links[0].utm.source.as_deref(), Some("newsletter"));
        assert!(
            config.central.is_none(),
            "an unedited install must not push"
        );
        assert_eq!(config.tokens[0].scopes, vec![Scope::Aggregates]);
        assert_eq!(config.log, LogConfig::default());
    }

    /// The commented-out `[central]` section is what an operator gets by removing the `#`s:
    /// it must parse, with every key the section has.
    #[test]
    fn example_central_section_parses_once_uncommented() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest == "[central]"
                        || rest.split_once(" = ").is_some_and(|(key, _)| {
                            !key.is_empty()
                                && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    format!("{rest}\n")
                }
                _ => format!("{line}\n"),
            })
            .collect();
        let central = ok(&uncommented).central.expect("the section, uncommented");
        assert_eq!(central.url.as_str(), "https://tracks.example/");
        assert_eq!(central.collector_id, "studio-eu-1");
        assert_eq!(central.push_schedule, "0 */15 * * * *");
        assert_eq!(
            central.ca_file,
            Some(PathBuf::from("/etc/tracks-collector/central-ca.pem"))
        );
        assert_eq!((central.timeout_secs, central.retry_max_secs), (30, 900));
    }

    #[test]
    fn every_toml_under_config_parses() {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "toml") {
                    found.push(path);
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
            &mut found,
        );
        assert!(!found.is_empty(), "no .toml file under config/");
        for path in found {
            if let Err(err) = Config::load(&path) {
                panic!("{err}");
            }
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = ok("");
        assert_eq!(config.source.as_deref(), Some(file()));
        assert_eq!(config.server.listen, DEFAULT_LISTEN);
        assert_eq!(
            config.server.tls,
            Some(TlsFiles {
                cert: PathBuf::from("/etc/tracks-collector/tls/fullchain.pem"),
                key: PathBuf::from("/etc/tracks-collector/tls/privkey.pem"),
            })
        );
        assert!(config.server.trusted_proxies.is_empty());
        assert_eq!(config.server.allowed_origins, AllowedOrigins::List(vec![]));
        assert_eq!(
            config.storage.path,
            PathBuf::from("/var/lib/tracks-collector/collector.db")
        );
        assert_eq!(
            config.storage.key_file,
            PathBuf::from("/var/lib/tracks-collector/db.key")
        );
        assert_eq!(
            config.privacy,
            PrivacyConfig {
                retention_days: 30,
                salt_rotation_hours: 24,
                ipv6_prefix: 64,
                min_cell_size: 1
            }
        );
        assert_eq!(
            config.attribution,
            AttributionConfig {
                model: AttributionModel::LastTouch,
                lookback_days: 14,
                require_consent: false
            }
        );
        assert!(config.games.is_empty());
        assert!(config.links.is_empty());
        assert!(config.central.is_none());
        assert!(config.tokens.is_empty());
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
    }

    #[test]
    fn empty_sections_give_defaults() {
        let config = ok("[server]\n[storage]\n[privacy]\n[attribution]\n[log]\n");
        assert_eq!(config.server.listen, DEFAULT_LISTEN);
        assert_eq!(config.privacy, PrivacyConfig::default());
    }

    #[test]
    fn load_reads_the_file_and_resolves_against_its_folder() {
        let dir = std::env::temp_dir().join(format!("tc-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("collector.toml");
        std::fs::write(&path, "[storage]\npath = \"data/c.db\"\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.storage.path, dir.join("data/c.db"));
        assert_eq!(config.source.as_deref(), Some(path.as_path()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_of_a_missing_file_is_a_read_error() {
        let err = Config::load(Path::new("/nonexistent/collector.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/collector.toml"));
    }

    // -- toml-level errors ----------------------------------------------------------------------

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let msg = refused(
            "[server]\nlisten = \"0.0.0.0:443\"\n\nlisen = \"x\"\n",
            "server.lisen",
            4,
        );
        assert!(msg.contains("unknown key"), "{msg}");
        assert!(msg.contains("`listen`"), "lists the valid keys: {msg}");
    }

    #[test]
    fn unknown_keys_everywhere_are_refused() {
        refused("\n[bogus]\nx = 1\n", "bogus", 2);
        refused("retention_days = 3\n", "retention_days", 1);
        refused(
            &format!("{}colour = \"red\"\n", game("a", 1)),
            "games[0].colour",
            4,
        );
        refused(
            &format!(
                "{}{}\n[[links]]\nname = \"l\"\ndestination = \"https://x.example/\"\n\
                 utm = {{ source = \"a\", sorce = \"b\" }}\n",
                game("a", 1),
                game("b", 2)
            ),
            "links[0].utm.sorce",
            11,
        );
        refused(
            "[central]\nurl = \"https://t.example\"\ntoken = \"x\"\n",
            "central.token",
            3,
        );
        refused(
            "[[tokens]]\nname = \"a\"\nscope = [\"metrics\"]\n",
            "tokens[0].scope",
            3,
        );
        refused("[log]\nlevel = \"info\"\nfile = \"x\"\n", "log.file", 3);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[privacy]\nretention_days = 30\nmin_cell_size = \n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("collector.toml:3:"), "{msg}");
        assert!(msg.contains("privacy.min_cell_size"), "{msg}");

        refused(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten = \"127.0.0.1:2\"\n",
            "server.listen",
            3,
        );
        refused("[log]\n\n[log]\n", "log", 3);
    }

    #[test]
    fn single_brackets_for_a_repeated_section_are_explained() {
        let msg = refused("[games]\nid = \"a\"\n", "games", 1);
        assert!(msg.contains("[[games]]"), "{msg}");
    }

    #[test]
    fn wrong_types_are_named() {
        let msg = refused(
            "[privacy]\nretention_days = \"30\"\n",
            "privacy.retention_days",
            2,
        );
        assert!(msg.contains("expected an integer"), "{msg}");
        refused("[privacy]\nipv6_prefix = 64.0\n", "privacy.ipv6_prefix", 2);
        refused(
            "[privacy]\nmin_cell_size = 99999999999999999999\n",
            "privacy.min_cell_size",
            2,
        );
        refused("[server]\ntls = \"no\"\n", "server.tls", 2);
        refused("[server]\nlisten = 443\n", "server.listen", 2);
        refused(
            "[server]\ntrusted_proxies = \"10.0.0.0/8\"\n",
            "server.trusted_proxies",
            2,
        );
        refused(
            "[server]\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  7,\n]\n",
            "server.trusted_proxies[1]",
            4,
        );
        refused(
            "[attribution]\nrequire_consent = 1\n",
            "attribution.require_consent",
            2,
        );
        refused(
            &format!("{}forward_utm = \"yes\"\n", "[[links]]\nname = \"l\"\n"),
            "links[0].forward_utm",
            3,
        );
    }

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
    fn origins_are_normalised() {
        let config = ok(
            "[server]\nallowed_origins = [\n  \"HTTPS://MyGame.Example:443/\",\n  \
             \"http://localhost:8080\",\n  \"https://a.example:8443\",\n  \
             \"http://b.example:80\",\n  \"https://mygame.example\",\n]\n",
        );
        assert_eq!(
            config.server.allowed_origins,
            AllowedOrigins::List(vec![
                "https://mygame.example".to_string(),
                "http://localhost:8080".to_string(),
                "https://a.example:8443".to_string(),
                "http://b.example".to_string(),
            ])
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
        assert!(config.games[0].measure_key.matches(&[1]));
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

    // -- zero config ----------------------------------------------------------------------------

    #[test]
    fn zero_config_values() {
        let dir = Path::new("./tracks-data");
        let config = Config::zero_config(dir, SecretHash::of(b"demo"));
        assert_eq!(config.source, None);
        assert_eq!(config.server.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            config.server.tls,
            Some(TlsFiles {
                cert: dir.join("tls/cert.pem"),
                key: dir.join("tls/key.pem"),
            })
        );
        assert!(config.server.trusted_proxies.is_empty());
        assert_eq!(config.server.allowed_origins, AllowedOrigins::List(vec![]));
        assert_eq!(config.storage.path, dir.join("collector.db"));
        assert_eq!(config.storage.key_file, dir.join("db.key"));
        assert_eq!(config.privacy, PrivacyConfig::default());
        assert_eq!(config.attribution, AttributionConfig::default());
        assert_eq!(config.games.len(), 1);
        assert_eq!(config.games[0].id, "demo-game");
        assert!(config.games[0].measure_key.matches(b"demo"));
        assert_eq!(config.games[0].events, vec!["first_game_open", "game_open"]);
        assert!(config.links.is_empty());
        assert!(config.central.is_none());
        assert!(config.tokens.is_empty());
        assert_eq!(config.log, LogConfig::default());
    }

    #[test]
    fn placeholder_hash_is_syntactically_valid() {
        assert!(SecretHash::parse(ZERO_HASH).is_ok());
        assert!(EXAMPLE.contains(ZERO_HASH));
    }
}
