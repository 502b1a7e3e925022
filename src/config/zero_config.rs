//! Edge: configuration, the zero-config local instance: what `serve` runs without a file.

use std::path::Path;

use super::defaults::{
    DEFAULT_CACHE_MIB, DEFAULT_HSTS, DEMO_GAME_ID, ZERO_CONFIG_ADMIN, ZERO_CONFIG_LISTEN,
    ZERO_CONFIG_ORIGINS, ZERO_CONFIG_PROXIES, default_events,
};
use super::validated::{
    AllowedOrigins, AttributionConfig, ClientIpHeader, Config, GameConfig, LedgerConfig,
    LimitsConfig, LogConfig, MeasureKey, PrivacyConfig, Scope, SecretHash, ServerConfig,
    StorageConfig, TlsFiles, TokenConfig,
};

impl Config {
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
            cluster: None,
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
