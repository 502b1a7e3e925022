//! Edge: configuration, the values an omitted key or section takes (README, "Configure").
//!
//! Each value is named once, here: `cli` prints the zero-config address, folder and default
//! path from these constants, so its help cannot drift from what `serve` does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Where the packaged daemon looks when neither `--config` nor `TRACKS_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tracks-collector/collector.toml";

/// `storage.cache_mib` unless set: a store of about a million visits fits. SQLite takes the
/// memory only as pages are read, so a smaller store never uses it all.
pub const DEFAULT_CACHE_MIB: u32 = 256;

/// The `event_name` values a game accepts when its `events` key is omitted.
pub const DEFAULT_EVENTS: [&str; 2] = ["first_game_open", "game_open"];

/// The one game of the zero-config local instance.
pub const DEMO_GAME_ID: &str = "demo-game";

/// Where the zero-config local instance listens: loopback only, it is a try-out, not a service.
pub const ZERO_CONFIG_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);

/// Where the zero-config local instance keeps its state, relative to the working directory.
pub const ZERO_CONFIG_DIR: &str = "tracks-data";

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
/// Retention is capped by the privacy promise (README, "Privacy model": kept 30 days, then deleted).
pub(super) const MAX_RETENTION_DAYS: u32 = 30;
