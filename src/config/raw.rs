//! Edge: configuration, stage one: the file as written, in serde structs.
//!
//! Every value is `Spanned` so an error can name its line, and integers are read as i64 so a
//! negative value gets a range message instead of a type error. Every table denies unknown
//! keys: a misspelt key is refused at start instead of silently taking its default.

use serde::Deserialize;
use toml::Spanned;

pub(super) type Text = Spanned<String>;
pub(super) type TextList = Spanned<Vec<Text>>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFile {
    pub(super) server: RawServer,
    pub(super) storage: RawStorage,
    pub(super) privacy: RawPrivacy,
    pub(super) attribution: RawAttribution,
    pub(super) games: Vec<Spanned<RawGame>>,
    pub(super) links: Vec<Spanned<RawLink>>,
    pub(super) central: Option<Spanned<RawCentral>>,
    pub(super) cluster: Option<Spanned<RawCluster>>,
    pub(super) tokens: Vec<Spanned<RawToken>>,
    pub(super) limits: RawLimits,
    pub(super) log: RawLog,
    pub(super) ledger: RawLedger,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Text>,
    pub(super) tls: Option<Spanned<bool>>,
    pub(super) tls_cert: Option<Text>,
    pub(super) tls_key: Option<Text>,
    pub(super) trusted_proxies: Option<TextList>,
    pub(super) proxy_protocol_from: Option<TextList>,
    pub(super) client_ip_header: Option<Text>,
    pub(super) monitor_addresses: Option<TextList>,
    pub(super) allowed_origins: Option<TextList>,
    pub(super) hsts: Option<Text>,
    pub(super) acme: Option<Spanned<RawAcme>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) path: Option<Text>,
    pub(super) key_file: Option<Text>,
    pub(super) cache_mib: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrivacy {
    pub(super) retention_days: Option<Spanned<i64>>,
    pub(super) salt_rotation_hours: Option<Spanned<i64>>,
    pub(super) ipv6_prefix: Option<Spanned<i64>>,
    pub(super) min_cell_size: Option<Spanned<i64>>,
    pub(super) geoip_db: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAttribution {
    pub(super) model: Option<Text>,
    pub(super) lookback_days: Option<Spanned<i64>>,
    pub(super) require_consent: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGame {
    pub(super) id: Option<Text>,
    pub(super) measure_key: Option<Text>,
    pub(super) measure_keys: Option<Spanned<Vec<Spanned<RawMeasureKey>>>>,
    pub(super) events: Option<TextList>,
}

/// One entry of `measure_keys`: `{ name = "...", hash = "blake3:..." }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMeasureKey {
    pub(super) name: Option<Text>,
    pub(super) hash: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLink {
    pub(super) name: Option<Text>,
    pub(super) game: Option<Text>,
    pub(super) destination: Option<Text>,
    pub(super) utm: Option<RawUtm>,
    pub(super) forward_utm: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUtm {
    pub(super) source: Option<Text>,
    pub(super) medium: Option<Text>,
    pub(super) campaign: Option<Text>,
    pub(super) content: Option<Text>,
    pub(super) term: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCentral {
    pub(super) url: Option<Text>,
    pub(super) collector_id: Option<Text>,
    pub(super) token_file: Option<Text>,
    pub(super) push_schedule: Option<Text>,
    pub(super) ca_file: Option<Text>,
    pub(super) timeout_secs: Option<Spanned<i64>>,
    pub(super) retry_max_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) node: Option<Text>,
    pub(super) push: Option<Spanned<bool>>,
    pub(super) ca_file: Option<Text>,
    pub(super) timeout_secs: Option<Spanned<i64>>,
    pub(super) peers: Option<Spanned<Vec<Spanned<RawPeer>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: Option<Text>,
    pub(super) url: Option<Text>,
    pub(super) token_file: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) name: Option<Text>,
    pub(super) scopes: Option<TextList>,
    pub(super) hash: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) connections_per_address: Option<Spanned<i64>>,
    /// `"auto"` or a number: read as any value so that either gets a message naming the key.
    pub(super) max_connections: Option<Spanned<toml::Value>>,
    pub(super) handshake_timeout_secs: Option<Spanned<i64>>,
    pub(super) header_timeout_secs: Option<Spanned<i64>>,
    pub(super) idle_timeout_secs: Option<Spanned<i64>>,
    pub(super) max_connection_age_secs: Option<Spanned<i64>>,
    pub(super) max_header_bytes: Option<Spanned<i64>>,
    pub(super) visits_per_second: Option<Spanned<i64>>,
    pub(super) visits_burst: Option<Spanned<i64>>,
    pub(super) measure_key_events_per_second: Option<Spanned<i64>>,
    pub(super) measure_key_burst: Option<Spanned<i64>>,
    pub(super) player_events_per_second: Option<Spanned<i64>>,
    pub(super) player_burst: Option<Spanned<i64>>,
    pub(super) public_per_second: Option<Spanned<i64>>,
    pub(super) public_burst: Option<Spanned<i64>>,
    pub(super) failed_auth_per_second: Option<Spanned<i64>>,
    pub(super) failed_auth_burst: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcme {
    pub(super) domains: Option<TextList>,
    pub(super) contact: Option<Text>,
    pub(super) directory: Option<Text>,
    pub(super) ca_file: Option<Text>,
    pub(super) cache_dir: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    pub(super) retention_days: Option<Spanned<i64>>,
    pub(super) keep_documents: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) level: Option<Text>,
    pub(super) format: Option<Text>,
}
