//! Edge: configuration, what stage two hands on: the validated values every other module
//! reads. Nothing here reads a file; `check` builds these from `raw`.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use crate::campaign::Campaign;

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
    /// `None` when the `[cluster]` section is absent: this node's aggregates are its own.
    pub cluster: Option<ClusterConfig>,
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

/// `[cluster]`: the other collectors behind the same load balancer, whose cells this node
/// merges into one view (docs/operations.md, "More than one server").
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name in the merged view.
    pub node: String,
    /// This node pushes the merged documents to the central platform; the others push nothing.
    pub push: bool,
    /// Trust roots for the peers' certificates, beside the system's.
    pub ca_file: Option<PathBuf>,
    /// Bounds connecting to a peer and, separately, waiting for its answer.
    pub timeout_secs: u32,
    pub peers: Vec<PeerConfig>,
}

/// One other node of the cluster.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub name: String,
    /// Its https base URL, as this node reaches it (not through the load balancer).
    pub url: Url,
    /// The token it accepts with the `peer` scope, in clear, one line.
    pub token_file: PathBuf,
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
    /// Another node of the cluster, asking for this node's cells before suppression.
    Peer,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Aggregates => "aggregates",
            Scope::Forget => "forget",
            Scope::Metrics => "metrics",
            Scope::Peer => "peer",
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

impl Config {
    /// Where `key` is set: `file:line: `key``, or the key alone when it takes its default.
    pub fn locate(&self, key: &str) -> String {
        match (&self.source, self.key_lines.get(key)) {
            (Some(file), Some(line)) => format!("{}:{line}: `{key}`", file.display()),
            _ => format!("`{key}` (its default)"),
        }
    }
}
