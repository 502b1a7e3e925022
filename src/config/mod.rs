//! Edge: the TOML configuration file, parsed in two stages (raw file struct, then validated `Config`).
//!
//! Every section of the configuration (README, "Configure") is parsed and validated here, even
//! those whose features live elsewhere, so a typo is caught at start and nothing read from the
//! file is unwrapped later.
//!
//! Layout, in the order a file goes through it (as ripgrep's `flags/`):
//! - `raw`: stage one, the file as written, every value `Spanned`;
//! - `check`: stage two, raw values validated into the [`Config`] below;
//! - `locate`: the dotted key and line that an error names;
//! - `defaults`: what an omitted key or section takes.

mod check;
pub use check::{NAME_CHARACTERS, is_lower_name};
mod defaults;
mod locate;
mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::campaign::Campaign;

use check::Checker;
pub use defaults::{
    DEFAULT_CACHE_MIB, DEFAULT_CONFIG_PATH, DEFAULT_EVENTS, DEMO_GAME_ID, INIT_LISTEN, MAX_BATCH,
    ZERO_CONFIG_ADMIN_FILE, ZERO_CONFIG_DIR, ZERO_CONFIG_LISTEN,
};
use defaults::{
    DEFAULT_CONNECTIONS_PER_ADDRESS, DEFAULT_FAILED_AUTH_RATE, DEFAULT_HANDSHAKE_TIMEOUT_SECS,
    DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_HSTS, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_LOOKBACK_DAYS,
    DEFAULT_MAX_CONNECTION_AGE_SECS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MEASURE_KEY_RATE,
    DEFAULT_PLAYER_RATE, DEFAULT_PUBLIC_RATE, DEFAULT_VISIT_RATE, MAX_RETENTION_DAYS,
    ZERO_CONFIG_ADMIN, ZERO_CONFIG_ORIGINS, ZERO_CONFIG_PROXIES,
};

/// The validated runtime configuration. Built only by [`Config::load`] or [`Config::zero_config`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` for the zero-config local instance.
    pub source: Option<PathBuf>,
    /// The line of each file path and secret hash key the file sets (`server.tls_cert`,
    /// `tokens[0].hash`, ...), so a warning about it can point at it.
    pub key_lines: std::collections::BTreeMap<String, usize>,
    /// The secret hash keys that still hold the example's all-zero placeholder: no key or token
    /// opens them (`check-config` refuses the file, `serve` warns).
    pub placeholders: Vec<String>,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub privacy: PrivacyConfig,
    pub attribution: AttributionConfig,
    pub games: Vec<GameConfig>,
    pub links: Vec<LinkConfig>,
    /// `None` when the `[central]` section is absent: nothing is pushed.
    pub central: Option<CentralConfig>,
    pub tokens: Vec<TokenConfig>,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub ledger: LedgerConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `None` means plain HTTP, which validation allows only on a loopback `listen` address,
    /// or certificates from ACME (`acme`).
    pub tls: Option<TlsFiles>,
    /// Certificates from an ACME CA instead of files.
    pub acme: Option<AcmeSettings>,
    /// Peers whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Peers (a load balancer passing TLS through) that must open every connection with a
    /// PROXY protocol v2 header naming the client; no other peer may send one.
    pub proxy_protocol_from: Vec<IpNet>,
    /// The one header a trusted proxy names the client in; no other is read.
    pub client_ip_header: ClientIpHeader,
    /// Addresses (a monitoring system) whose calls to the keyless endpoints are not counted
    /// against a rate limit; the trusted proxies are exempt too.
    pub monitor_addresses: Vec<IpNet>,
    pub allowed_origins: AllowedOrigins,
    /// The `Strict-Transport-Security` value sent on every TLS answer; `None` (`hsts = ""`)
    /// sends none. Printable ASCII with a `max-age`, so it is always a valid header value.
    pub hsts: Option<String>,
}

/// What one connection and one client address may hold (`[limits]`): every phase of a
/// connection has a deadline, so nothing a client leaves unfinished is held for long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Connections one socket peer may hold at once (IPv6 counted by /64). Trusted proxies
    /// are exempt: one of them speaks for many clients.
    pub connections_per_address: u32,
    pub max_connections: MaxConnections,
    /// For the TLS handshake.
    pub handshake_timeout: Duration,
    /// From the connection's start (after TLS) to its first request's headers: the first bytes,
    /// the HTTP/1.1-or-HTTP/2 detection and the headers; and for each HTTP/1.1 request head.
    pub header_timeout: Duration,
    /// How long a connection that has been answered may go without a request in flight
    /// (HTTP/2: then GOAWAY).
    pub idle_timeout: Duration,
    /// After this a connection is retired with its next answer (HTTP/1.1 `Connection: close`,
    /// HTTP/2 GOAWAY), so no client holds one forever by keeping it busy.
    pub max_connection_age: Duration,
    /// The largest request head: the HTTP/1.1 read buffer and HTTP/2's header list (431 above).
    pub max_header_bytes: u32,
    /// Token buckets of the public endpoints.
    pub rates: RateLimitsConfig,
}

/// Token buckets: a client may send `burst` at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// The buckets of `/collect`, `/r/` and `/measure`, of the keyless endpoints and of failed
/// authentications (429 with `Retry-After` when one is dry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitsConfig {
    /// Visits (`/collect`, `/r/`) per client address (IPv6 by /64).
    pub address: RateLimit,
    /// Game events per game's measure key: a studio's telemetry relay sends thousands.
    pub measure_key: RateLimit,
    /// Game events per player address (the event's `ip`).
    pub player: RateLimit,
    /// Calls to the endpoints anyone may call without a key, per client address.
    pub public: RateLimit,
    /// Failed authentications on `/metrics` and `/api/*`, per client address: once spent, the
    /// address's next attempts are refused before their token is looked at.
    pub failed_auth: RateLimit,
}

/// The total connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxConnections {
    /// Derived from the open-file limit at start (`"auto"`, the default).
    Auto,
    /// At most this many, and still kept below the open-file limit.
    At(u32),
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let secs = |n: u32| Duration::from_secs(u64::from(n));
        LimitsConfig {
            connections_per_address: DEFAULT_CONNECTIONS_PER_ADDRESS,
            max_connections: MaxConnections::Auto,
            handshake_timeout: secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            header_timeout: secs(DEFAULT_HEADER_TIMEOUT_SECS),
            idle_timeout: secs(DEFAULT_IDLE_TIMEOUT_SECS),
            max_connection_age: secs(DEFAULT_MAX_CONNECTION_AGE_SECS),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            rates: RateLimitsConfig {
                address: DEFAULT_VISIT_RATE,
                measure_key: DEFAULT_MEASURE_KEY_RATE,
                player: DEFAULT_PLAYER_RATE,
                public: DEFAULT_PUBLIC_RATE,
                failed_auth: DEFAULT_FAILED_AUTH_RATE,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[server.acme]`: certificates ordered and renewed from an ACME CA (Let's Encrypt), answered
/// with TLS-ALPN-01 on the listening port, instead of `tls_cert` / `tls_key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    /// `mailto:` addresses the CA may write to about the certificates.
    pub contact: Vec<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// Extra roots to trust the directory's TLS with (a private CA, Pebble in the tests).
    pub ca_file: Option<PathBuf>,
    /// The account key and the certificates, kept across restarts (mode 0700).
    pub cache_dir: PathBuf,
}

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory, for trying the setup without its rate limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// Browser origins that may post to `/collect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `["*"]`: any origin (never the default).
    Any,
    /// Exact origins, normalised to `scheme://host[:port]` with no trailing slash, lower-case;
    /// `scheme://host:*` allows every port of the host.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Whether a browser's `Origin` header value may post here.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        match self {
            AllowedOrigins::Any => true,
            AllowedOrigins::List(list) => {
                list.iter().any(|allowed| match allowed.strip_suffix(":*") {
                    Some(host) => {
                        origin == host
                            || origin.strip_prefix(host).is_some_and(|rest| {
                                rest.strip_prefix(':').is_some_and(|port| {
                                    !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
                                })
                            })
                    }
                    None => *allowed == origin,
                })
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub path: PathBuf,
    pub key_file: PathBuf,
    /// The writer's page cache, in MiB: pages it need not read back and decrypt.
    pub cache_mib: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivacyConfig {
    /// 1..=30.
    pub retention_days: u32,
    /// >= 1.
    pub salt_rotation_hours: u32,
    /// 48..=128: how many leading bits of an IPv6 address are kept before hashing.
    pub ipv6_prefix: u8,
    /// >= 1; 1 means no suppression.
    pub min_cell_size: u32,
    /// A MaxMind-format country database (GeoLite2 Country, DB-IP Lite Country): each visit's
    /// and event's address is reduced to its country at ingest. `None` (the default): no
    /// country is resolved.
    pub geoip_db: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionConfig {
    pub model: AttributionModel,
    /// 1..=retention_days.
    pub lookback_days: u32,
    pub require_consent: bool,
}

/// The header a trusted proxy names the client in (`server.client_ip_header`). One, configured:
/// a proxy that sets one kind passes the client's own headers of the others through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx `$proxy_add_x_forwarded_for`, HAProxy
    /// `option forwardfor`).
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
    /// `X-Real-IP: client`, set (not appended) by the proxy.
    XRealIp,
    /// The socket peer is the client, whatever the headers say.
    None,
}

impl ClientIpHeader {
    pub const NAMES: [&str; 4] = ["x-forwarded-for", "forwarded", "x-real-ip", "none"];

    pub fn parse(name: &str) -> Option<ClientIpHeader> {
        Some(match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => ClientIpHeader::XForwardedFor,
            "forwarded" => ClientIpHeader::Forwarded,
            "x-real-ip" => ClientIpHeader::XRealIp,
            "none" => ClientIpHeader::None,
            _ => return None,
        })
    }

    /// Without trusted proxies no header is believed; with them, `X-Forwarded-For`, which
    /// both nginx and HAProxy examples in docs/operations.md set.
    pub fn default_for(trusted_proxies: &[IpNet]) -> ClientIpHeader {
        if trusted_proxies.is_empty() {
            ClientIpHeader::None
        } else {
            ClientIpHeader::XForwardedFor
        }
    }
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
    /// The Bearer keys this game's builds and relays send to `/measure`, each by its BLAKE3
    /// hash and a name: `measure_key` and the entries of `measure_keys`, at least one. Several
    /// let a leaked key be replaced while builds that carry it are still in the field.
    pub measure_keys: Vec<MeasureKey>,
    /// Allowed `event_name` values; default `first_game_open`, `game_open`.
    pub events: Vec<String>,
}

/// One measure key of a game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasureKey {
    /// Shown in metrics: the entry's `name`, else the key that holds it (`measure_key`,
    /// `measure_keys[1]`). Unique within the game.
    pub name: String,
    pub hash: SecretHash,
}

impl MeasureKey {
    /// The name of the key in `measure_key`.
    pub const SINGLE_NAME: &str = "measure_key";
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

/// `[ledger]`: what left the server, signed and chained (DESIGN, Central TRACKS platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// Rows older than this are replaced by one anchor row. The ledger holds no personal data,
    /// so it outlives the retention window.
    pub retention_days: u32,
    /// Keep each document's bytes in its row, for `ledger show`.
    pub keep_documents: bool,
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            retention_days: 400,
            keep_documents: false,
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

    /// The example configuration's stand-in, all zeros: no secret hashes to it, so a file
    /// that still holds it has no working key or token there.
    pub fn is_placeholder(&self) -> bool {
        self.0.as_bytes().iter().all(|byte| *byte == 0)
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

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            retention_days: MAX_RETENTION_DAYS,
            salt_rotation_hours: 24,
            ipv6_prefix: 64,
            min_cell_size: 1,
            geoip_db: None,
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

    /// Where `key` is set: `file:line: `key``, or the key alone when it takes its default.
    pub fn locate(&self, key: &str) -> String {
        match (&self.source, self.key_lines.get(key)) {
            (Some(file), Some(line)) => format!("{}:{line}: `{key}`", file.display()),
            _ => format!("`{key}` (its default)"),
        }
    }

    /// Same as the free function [`parse_str`].
    pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        parse_str(text, path)
    }

    /// The zero-config local instance (`serve` without a config file): loopback only, state kept
    /// in `state_dir`, one demo game.
    pub fn zero_config(
        state_dir: &Path,
        demo_measure_key: SecretHash,
        admin_token: SecretHash,
    ) -> Config {
        Config {
            source: None,
            key_lines: Default::default(),
            placeholders: Vec::new(),
            server: ServerConfig {
                listen: ZERO_CONFIG_LISTEN,
                tls: Some(TlsFiles {
                    cert: state_dir.join("tls").join("cert.pem"),
                    key: state_dir.join("tls").join("key.pem"),
                }),
                // Local tools (a dev server's proxy, curl with X-Forwarded-For) show a visitor's
                // address as a reverse proxy would, and pages on any local port may report.
                trusted_proxies: ZERO_CONFIG_PROXIES
                    .iter()
                    .filter_map(|net| net.parse().ok())
                    .collect(),
                acme: None,
                proxy_protocol_from: Vec::new(),
                client_ip_header: ClientIpHeader::XForwardedFor,
                monitor_addresses: Vec::new(),
                allowed_origins: AllowedOrigins::List(
                    ZERO_CONFIG_ORIGINS
                        .iter()
                        .map(|origin| origin.to_string())
                        .collect(),
                ),
                hsts: Some(DEFAULT_HSTS.to_string()),
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
                measure_keys: vec![MeasureKey {
                    name: MeasureKey::SINGLE_NAME.to_string(),
                    hash: demo_measure_key,
                }],
                events: default_events(),
            }],
            links: Vec::new(),
            central: None,
            tokens: vec![TokenConfig {
                name: ZERO_CONFIG_ADMIN.to_string(),
                scopes: vec![Scope::Aggregates, Scope::Forget, Scope::Metrics],
                hash: admin_token,
            }],
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            ledger: LedgerConfig::default(),
        }
    }
}

/// Parses and validates `text` as the contents of the config file at `path`. `path` is used in
/// error messages and its folder is the base of relative paths.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let checker = Checker::new(text, path);
    let raw: raw::RawFile = toml::from_str(text).map_err(|err| checker.toml_error(&err))?;
    checker.config(raw)
}

#[cfg(test)]
mod tests {
    //! Whole files and the zero config; the helpers are shared with the tests in `check` and
    //! `locate`, which parse whole files too and check the key and line of each refusal.

    use super::defaults::DEFAULT_LISTEN;
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/collector.example.toml");
    const ZERO_HASH: &str =
        "blake3:0000000000000000000000000000000000000000000000000000000000000000";

    pub(super) fn file() -> &'static Path {
        Path::new("/etc/tc/collector.toml")
    }

    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, file())
    }

    pub(super) fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(err) => panic!("expected {text:?} to parse, got: {err}"),
        }
    }

    /// Asserts that `text` is refused on exactly `key` at `line`, and returns the full message.
    pub(super) fn refused(text: &str, key: &str, line: usize) -> String {
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

    pub(super) fn hash(n: u8) -> String {
        SecretHash::of(&[n]).to_config_string()
    }

    pub(super) fn game(id: &str, n: u8) -> String {
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
        assert_eq!(config.limits, LimitsConfig::default());
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

    /// The example shows each limit's default as a commented-out line: uncommented, they must
    /// be the defaults.
    #[test]
    fn example_limits_show_the_defaults() {
        let mut in_limits = false;
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| {
                if line.starts_with('[') {
                    in_limits = line == "[limits]";
                }
                match line.strip_prefix("# ") {
                    Some(rest) if in_limits || rest.starts_with("hsts = ") => {
                        if rest.split_once(" = ").is_some_and(|(key, _)| {
                            key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) {
                            return format!("{rest}\n");
                        }
                        format!("{line}\n")
                    }
                    _ => format!("{line}\n"),
                }
            })
            .collect();
        assert!(uncommented.contains("\nmax_header_bytes = "));
        assert!(uncommented.contains("\nplayer_burst = "));
        let config = ok(&uncommented);
        assert_eq!(config.limits, LimitsConfig::default());
        assert_eq!(config.server.hsts.as_deref(), Some("max-age=31536000"));
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
                min_cell_size: 1,
                geoip_db: None,
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

    // -- zero config ----------------------------------------------------------------------------

    #[test]
    fn zero_config_values() {
        let dir = Path::new("./tracks-data");
        let config = Config::zero_config(dir, SecretHash::of(b"demo"), SecretHash::of(b"admin"));
        assert_eq!(config.source, None);
        assert_eq!(config.server.listen, "127.0.0.1:8443".parse().unwrap());
        assert_eq!(
            config.server.tls,
            Some(TlsFiles {
                cert: dir.join("tls/cert.pem"),
                key: dir.join("tls/key.pem"),
            })
        );
        let proxies: Vec<String> = config
            .server
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, vec!["127.0.0.0/8", "::1/128"]);
        let origins = &config.server.allowed_origins;
        assert!(origins.allows("http://localhost:3000"));
        assert!(origins.allows("http://127.0.0.1:8080"));
        assert!(origins.allows("http://localhost"));
        assert!(!origins.allows("https://localhost:3000"));
        assert!(!origins.allows("http://localhost.evil.example:3000"));
        assert!(!origins.allows("http://localhost:"));
        assert!(!origins.allows("https://mygame.example"));
        assert_eq!(config.storage.path, dir.join("collector.db"));
        assert_eq!(config.storage.key_file, dir.join("db.key"));
        assert_eq!(config.privacy, PrivacyConfig::default());
        assert_eq!(config.attribution, AttributionConfig::default());
        assert_eq!(config.games.len(), 1);
        assert_eq!(config.games[0].id, "demo-game");
        assert!(config.games[0].measure_keys[0].hash.matches(b"demo"));
        assert_eq!(config.games[0].events, vec!["first_game_open", "game_open"]);
        assert!(config.links.is_empty());
        assert!(config.central.is_none());
        assert_eq!(config.tokens.len(), 1);
        assert_eq!(config.tokens[0].name, "admin");
        assert_eq!(
            config.tokens[0].scopes,
            vec![Scope::Aggregates, Scope::Forget, Scope::Metrics]
        );
        assert!(config.tokens[0].hash.matches(b"admin"));
        assert_eq!(config.log, LogConfig::default());
    }

    #[test]
    fn placeholder_hash_is_syntactically_valid() {
        assert!(SecretHash::parse(ZERO_HASH).is_ok());
        assert!(EXAMPLE.contains(ZERO_HASH));
    }
}
