//! Edge: configuration, stage two: `[log]`, the level and format of the daemon's log.

use super::Checker;
use crate::config::error::ConfigError;
use crate::config::raw::RawLog;
use crate::config::validated::{LogConfig, LogFormat};

impl Checker<'_> {
    pub(super) fn log(&self, raw: &RawLog) -> Result<LogConfig, ConfigError> {
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

#[cfg(test)]
mod tests {
    use crate::config::LogFormat;
    use crate::config::tests::{ok, refused};

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
}
