//! Edge: configuration, stage two: `[privacy]`, retention, salts, address truncation and countries.

use super::Checker;
use crate::config::defaults::MAX_RETENTION_DAYS;
use crate::config::error::ConfigError;
use crate::config::raw::RawPrivacy;
use crate::config::validated::PrivacyConfig;
use crate::privacy::geo::CountryDb;

impl Checker<'_> {
    pub(super) fn privacy(&self, raw: &RawPrivacy) -> Result<PrivacyConfig, ConfigError> {
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
        // Read now, so that `check-config` and `serve` refuse a missing or foreign file with the
        // key's name, instead of a daemon that starts and resolves no country.
        let geoip_db = match &raw.geoip_db {
            None => None,
            Some(v) => {
                let path = self.path("privacy.geoip_db", v)?;
                CountryDb::open(&path)
                    .map_err(|err| self.at("privacy.geoip_db", v, err.to_string()))?;
                Some(path)
            }
        };
        Ok(PrivacyConfig {
            retention_days,
            salt_rotation_hours,
            ipv6_prefix,
            min_cell_size,
            geoip_db,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::tests::{ok, refused};
    use crate::privacy::geo::mmdb::{Network, write_country_db};

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

    /// The country database is read at load: a missing, foreign or damaged file is a
    /// configuration error naming the key and its line.
    #[test]
    fn geoip_db_must_be_a_country_database() {
        let dir = tempfile::tempdir().expect("dir");
        let good = dir.path().join("countries.mmdb");
        write_country_db(
            &good,
            "DBIP-Country-Lite",
            &[Network::new("203.0.113.0/24", "DE")],
        )
        .expect("mmdb");
        let line = |path: &Path| format!("[privacy]\ngeoip_db = \"{}\"\n", path.display());
        assert_eq!(
            ok(&line(&good)).privacy.geoip_db.as_deref(),
            Some(good.as_path())
        );
        assert_eq!(ok("").privacy.geoip_db, None);
        let missing = refused(&line(&dir.path().join("nope.mmdb")), "privacy.geoip_db", 2);
        assert!(missing.contains("nope.mmdb"), "{missing}");
        let garbage = dir.path().join("garbage.mmdb");
        std::fs::write(&garbage, "<html>404</html>").expect("write");
        let shown = refused(&line(&garbage), "privacy.geoip_db", 2);
        assert!(shown.contains("not a MaxMind DB"), "{shown}");
        let asn = dir.path().join("asn.mmdb");
        write_country_db(
            &asn,
            "GeoLite2-ASN",
            &[Network::new("203.0.113.0/24", "DE")],
        )
        .expect("mmdb");
        let shown = refused(&line(&asn), "privacy.geoip_db", 2);
        assert!(shown.contains("not a country database"), "{shown}");
        refused("[privacy]\ngeoip_db = \"\"\n", "privacy.geoip_db", 2);
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
}
