//! Edge: the TOML configuration file, parsed in two stages (raw file struct, then validated `Config`).
//!
//! Every section of the configuration (README, "Configure") is parsed and validated here, even
//! those whose features live elsewhere, so a typo is caught at start and nothing read from the
//! file is unwrapped later.
//!
//! Layout, in the order a file goes through it (as ripgrep's `flags/`):
//! - `raw`: stage one, the file as written, every value `Spanned`;
//! - `check`: stage two, raw values validated, one file per section;
//! - `validated`: what stage two hands on, the [`Config`] every other module reads;
//! - `locate`: the dotted key and line that an error names;
//! - `error`: [`ConfigError`], naming the file, the line and the key;
//! - `defaults`: what an omitted key or section takes;
//! - `zero_config`: the configuration of `serve` without a file.
//!
//! This file only loads: each stage imports from the ones below it, never from here.

mod check;
mod defaults;
mod error;
mod locate;
mod raw;
mod validated;
mod zero_config;

use std::path::Path;

use check::Checker;
pub(crate) use check::{NAME_CHARACTERS, is_lower_name};
pub use defaults::DEFAULT_CONFIG_PATH;
pub(crate) use defaults::{
    DEMO_GAME_ID, INIT_LISTEN, MAX_BATCH, ZERO_CONFIG_ADMIN_FILE, ZERO_CONFIG_DIR,
    ZERO_CONFIG_LISTEN,
};
pub(crate) use error::ConfigError;
pub(crate) use validated::{
    AcmeSettings, AllowedOrigins, CentralConfig, ClientIpHeader, ClusterConfig, LedgerConfig,
    LimitsConfig, LogFormat, MaxConnections, PeerConfig, RateLimit, RateLimitsConfig, Scope,
    TokenConfig,
};
pub use validated::{
    AttributionConfig, AttributionModel, Config, GameConfig, LinkConfig, MeasureKey, PrivacyConfig,
    SecretHash, TlsFiles,
};

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
}

/// Parses and validates `text` as the contents of the config file at `path`. `path` is used in
/// error messages and its folder is the base of relative paths.
pub(crate) fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let checker = Checker::new(text, path);
    let raw: raw::RawFile = toml::from_str(text).map_err(|err| checker.toml_error(&err))?;
    checker.config(raw)
}

#[cfg(test)]
mod tests {
    //! Whole files and the zero config; the helpers are shared with the tests in `check` and
    //! `locate`, which parse whole files too and check the key and line of each refusal.

    use std::path::PathBuf;

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
        assert_eq!(config.log, validated::LogConfig::default());
    }

    /// The commented-out `[central]` and `[cluster]` sections are what an operator gets by
    /// removing the `#`s: they must parse, with every key the sections have.
    #[test]
    fn example_central_and_cluster_sections_parse_once_uncommented() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if ["[central]", "[cluster]", "[[cluster.peers]]"].contains(&rest)
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
        let cluster = ok(&uncommented).cluster.expect("the cluster, uncommented");
        assert_eq!((cluster.node.as_str(), cluster.push), ("node1", false));
        assert_eq!(cluster.peers[0].url.as_str(), "https://10.0.0.12/");
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
        assert_eq!(config.log, validated::LogConfig::default());
    }

    #[test]
    fn placeholder_hash_is_syntactically_valid() {
        assert!(SecretHash::parse(ZERO_HASH).is_ok());
        assert!(EXAMPLE.contains(ZERO_HASH));
    }
}
