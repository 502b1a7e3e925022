//! Edge: configuration, the values an omitted key or section takes (README, "Configure").
//!
//! Each value is named once, here: `cli` prints the zero-config address, folder and default
//! path from these constants, so its help cannot drift from what `serve` does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use super::validated::{
    AttributionConfig, AttributionModel, LedgerConfig, LimitsConfig, LogConfig, LogFormat,
    MaxConnections, PrivacyConfig, RateLimit, RateLimitsConfig,
};

/// Where the packaged daemon looks when neither `--config` nor `TRACKS_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tracks-collector/collector.toml";

/// `storage.cache_mib` unless set: a store of about a million visits fits. SQLite takes the
/// memory only as pages are read, so a smaller store never uses it all.
pub(crate) const DEFAULT_CACHE_MIB: u32 = 256;

/// The `event_name` values a game accepts when its `events` key is omitted.
pub(crate) const DEFAULT_EVENTS: [&str; 2] = ["first_game_open", "game_open"];

/// The one game of the zero-config local instance.
pub(crate) const DEMO_GAME_ID: &str = "demo-game";

/// Where the zero-config local instance listens: loopback only, it is a try-out, not a service.
pub(crate) const ZERO_CONFIG_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);

/// Where the zero-config local instance keeps its state, relative to the working directory.
pub(crate) const ZERO_CONFIG_DIR: &str = "tracks-data";

/// The proxies the zero-config instance trusts: loopback, where local tools run.
pub(super) const ZERO_CONFIG_PROXIES: [&str; 2] = ["127.0.0.0/8", "::1/128"];

/// The browser origins the zero-config instance allows: local pages on any port.
pub(super) const ZERO_CONFIG_ORIGINS: [&str; 2] = ["http://localhost:*", "http://127.0.0.1:*"];

/// The name of the zero-config instance's API token (scopes aggregates, forget, metrics),
/// whose secret it keeps in `admin.token` in its folder.
pub(super) const ZERO_CONFIG_ADMIN: &str = "admin";
/// The file in the zero-config folder that holds that token.
pub(crate) const ZERO_CONFIG_ADMIN_FILE: &str = "admin.token";

/// Where `init` has the configuration it writes listen: beside, not on, the zero-config
/// instance's port, so both can run on one machine.
pub(crate) const INIT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8444);

pub(super) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443);
pub(super) const DEFAULT_TLS_CERT: &str = "/etc/tracks-collector/tls/fullchain.pem";
pub(super) const DEFAULT_TLS_KEY: &str = "/etc/tracks-collector/tls/privkey.pem";
pub(super) const DEFAULT_DB_PATH: &str = "/var/lib/tracks-collector/collector.db";
pub(super) const DEFAULT_DB_KEY_FILE: &str = "/var/lib/tracks-collector/db.key";
pub(super) const DEFAULT_PUSH_SCHEDULE: &str = "0 */15 * * * *";
pub(super) const DEFAULT_CENTRAL_TIMEOUT_SECS: u32 = 30;
pub(super) const DEFAULT_RETRY_MAX_SECS: u32 = 900;
pub(super) const DEFAULT_LOOKBACK_DAYS: u32 = 14;
/// Retention is capped by the privacy promise (docs/privacy.md, "What is deleted, and when").
pub(super) const MAX_RETENTION_DAYS: u32 = 30;

/// `server.hsts` unless set: browsers keep to HTTPS for this host for a year. No
/// `includeSubDomains`: the collector speaks for its own host name only.
pub(super) const DEFAULT_HSTS: &str = "max-age=31536000";

// `[limits]`: what one connection, and one client address, may hold. Each default leaves a
// normal studio unlimited: a telemetry relay keeps tens of keep-alive connections from one
// address, and a browser answers within seconds.

/// Connections one client address (an IPv6 /64) may hold at once.
pub(super) const DEFAULT_CONNECTIONS_PER_ADDRESS: u32 = 64;
/// Seconds a client has to finish its TLS handshake.
pub(super) const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u32 = 10;
/// Seconds a client has, once connected, for its first bytes and a request's headers.
pub(super) const DEFAULT_HEADER_TIMEOUT_SECS: u32 = 10;
/// Seconds a connection may go without a request in flight before it is closed.
pub(super) const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 60;
/// Seconds after which a connection is retired with its next answer.
pub(super) const DEFAULT_MAX_CONNECTION_AGE_SECS: u32 = 3600;
/// The largest request head (request line and headers, HTTP/2's decoded header list).
pub(super) const DEFAULT_MAX_HEADER_BYTES: u32 = 32 * 1024;

/// Most events in one JSON array (`POST /measure`). Here, below ingest, because a measure key's
/// burst (`limits.measure_key_burst`) must hold a full batch.
pub(crate) const MAX_BATCH: usize = 100;

/// A client address may send 200 visits at once, then 20 a second: far above a person, or an
/// office behind one address, far below a flood.
pub(super) const DEFAULT_VISIT_RATE: RateLimit = rate(20, 200);
/// A game's measure key: a telemetry relay sends thousands of events a second.
pub(super) const DEFAULT_MEASURE_KEY_RATE: RateLimit = rate(5_000, 20_000);
/// One player address: game opens come a few a minute, a household or a NAT more.
pub(super) const DEFAULT_PLAYER_RATE: RateLimit = rate(20, 200);
/// One address on the endpoints anyone may call without a key (`/healthz`, `/time`, the
/// script, the dashboard's files, unknown paths): a person or a monitor asks a few a second.
pub(super) const DEFAULT_PUBLIC_RATE: RateLimit = rate(10, 50);
/// Failed authentications of one address (`/metrics`, `/api/*`): a mistyped token is retried a
/// few times; a guesser gets one try a second once the burst is spent.
pub(super) const DEFAULT_FAILED_AUTH_RATE: RateLimit = rate(1, 10);

const fn rate(per_second: u32, burst: u32) -> RateLimit {
    match (NonZeroU32::new(per_second), NonZeroU32::new(burst)) {
        (Some(per_second), Some(burst)) => RateLimit { per_second, burst },
        _ => panic!("a default rate is not zero"),
    }
}

/// Let's Encrypt's production directory, the default.
pub(crate) const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

// Each section's values when it is omitted, from the constants above.

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

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            retention_days: 400,
            keep_documents: false,
        }
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

/// `DEFAULT_EVENTS`, owned, as a game's `events`.
pub(super) fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|e| e.to_string()).collect()
}
