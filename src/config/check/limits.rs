//! Edge: configuration, stage two: `[limits]`, what one connection and one client address may hold.

use std::num::NonZeroU32;
use std::time::Duration;

use toml::Spanned;

use super::Checker;
use crate::config::defaults::MAX_BATCH;
use crate::config::error::ConfigError;
use crate::config::raw::RawLimits;
use crate::config::validated::{LimitsConfig, MaxConnections, RateLimit, RateLimitsConfig};

impl Checker<'_> {
    pub(super) fn limits(&self, raw: &RawLimits) -> Result<LimitsConfig, ConfigError> {
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
            rates: self.rates(raw, defaults.rates)?,
        })
    }

    /// The token buckets of `[limits]`, each key taking its default when omitted.
    fn rates(
        &self,
        raw: &RawLimits,
        defaults: RateLimitsConfig,
    ) -> Result<RateLimitsConfig, ConfigError> {
        Ok(RateLimitsConfig {
            address: self.rate(
                ("limits.visits_per_second", &raw.visits_per_second),
                ("limits.visits_burst", &raw.visits_burst),
                defaults.address,
                1,
            )?,
            // A full batch must fit in one go.
            measure_key: self.rate(
                (
                    "limits.measure_key_events_per_second",
                    &raw.measure_key_events_per_second,
                ),
                ("limits.measure_key_burst", &raw.measure_key_burst),
                defaults.measure_key,
                MAX_BATCH as u32,
            )?,
            player: self.rate(
                (
                    "limits.player_events_per_second",
                    &raw.player_events_per_second,
                ),
                ("limits.player_burst", &raw.player_burst),
                defaults.player,
                1,
            )?,
            public: self.rate(
                ("limits.public_per_second", &raw.public_per_second),
                ("limits.public_burst", &raw.public_burst),
                defaults.public,
                1,
            )?,
            failed_auth: self.rate(
                ("limits.failed_auth_per_second", &raw.failed_auth_per_second),
                ("limits.failed_auth_burst", &raw.failed_auth_burst),
                defaults.failed_auth,
                1,
            )?,
        })
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
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::time::Duration;

    use crate::config::tests::{ok, refused};
    use crate::config::{LimitsConfig, MaxConnections, RateLimit, RateLimitsConfig};

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
}
