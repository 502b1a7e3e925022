//! Privacy: an address reduced to its country (ISO 3166-1 alpha-2) through a MaxMind-format
//! (MMDB) country database, once, before the address is pseudonymised. Only the two letters
//! are kept: no network, city, coordinates or anything else of the record.
//!
//! The database is a file the sysadmin keeps current (GeoLite2 Country, DB-IP Lite Country,
//! or a City edition, which holds the same country record); SIGHUP reads it again, and a
//! broken new file leaves the old one in use.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use maxminddb::{MaxMindDbError, PathElement, Reader};

/// Where a record keeps the country's code, as in MaxMind's and DB-IP's country and city
/// databases. The registered country (of the network's owner) is not the player's, and is
/// not used, as Plausible does not.
const ISO_CODE: [PathElement<'static>; 2] =
    [PathElement::Key("country"), PathElement::Key("iso_code")];

/// Codes that say "unknown" rather than name a country: DB-IP's `ZZ`, and `XX`, which some
/// tools write for the same.
const UNKNOWN: [&str; 2] = ["ZZ", "XX"];

/// A country: two upper-case ASCII letters of ISO 3166-1 alpha-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Two ASCII letters, any case; `None` for anything else and for the "unknown" codes.
    pub fn parse(code: &str) -> Option<Country> {
        let bytes: [u8; 2] = code.as_bytes().try_into().ok()?;
        if !bytes.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let country = Country(bytes.map(|b| b.to_ascii_uppercase()));
        (!UNKNOWN.contains(&country.as_str())).then_some(country)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII letters get in (see `parse`).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a database file cannot be used. Never names an address.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a MaxMind DB (MMDB) file, or it is damaged: {message}")]
    NotMmdb { path: PathBuf, message: String },
    #[error(
        "{path} is a \"{kind}\" database, not a country database: use GeoLite2 Country, DB-IP \
         Lite Country (or a City edition of either)"
    )]
    NotCountries { path: PathBuf, kind: String },
}

/// One database file, read whole into memory and checked.
pub struct CountryDb {
    reader: Reader<Vec<u8>>,
}

impl fmt::Debug for CountryDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl CountryDb {
    /// Reads and verifies the file: its search tree and every record must decode, and its type
    /// must be a country (or city) database, so a lookup never meets a damaged record later.
    pub fn open(path: &Path) -> Result<CountryDb, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let not_mmdb = |err: MaxMindDbError| GeoError::NotMmdb {
            path: path.to_path_buf(),
            message: err.to_string(),
        };
        let reader = Reader::from_source(bytes).map_err(not_mmdb)?;
        let kind = reader.metadata().database_type.to_ascii_lowercase();
        if !(kind.contains("country") || kind.contains("city")) {
            return Err(GeoError::NotCountries {
                path: path.to_path_buf(),
                kind: reader.metadata().database_type.clone(),
            });
        }
        reader.verify().map_err(not_mmdb)?;
        Ok(CountryDb { reader })
    }

    /// The country of `ip`, or `None`: an address in no network of the database, a record
    /// without a country, or an unknown code.
    pub fn lookup(&self, ip: IpAddr) -> Option<Country> {
        // An IPv4 address written as IPv6 is looked up as IPv4: databases file them there.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            IpAddr::V4(_) => ip,
        };
        // Errors (an IPv6 address in an IPv4-only database) mean "no country"; the file was
        // verified when it was read.
        let found = self.reader.lookup(ip).ok()?;
        let code: &str = found.decode_path(&ISO_CODE).ok()??;
        Country::parse(code)
    }

    /// What the file is, for the log: its type and build day.
    pub fn describe(&self) -> String {
        let metadata = self.reader.metadata();
        let built = i64::try_from(metadata.build_epoch)
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
            .map_or_else(
                || "?".to_string(),
                |time| time.format("%Y-%m-%d").to_string(),
            );
        format!("{} (built {built})", metadata.database_type)
    }
}

/// The country database in use by the daemon: read at start, read again on SIGHUP.
#[derive(Debug)]
pub struct Countries {
    path: PathBuf,
    /// Swapped whole on reload; a lookup holds the read lock for its microseconds only.
    db: RwLock<Arc<CountryDb>>,
}

impl Countries {
    pub fn open(path: &Path) -> Result<Countries, GeoError> {
        Ok(Countries {
            path: path.to_path_buf(),
            db: RwLock::new(Arc::new(CountryDb::open(path)?)),
        })
    }

    pub fn country(&self, ip: IpAddr) -> Option<Country> {
        self.current().lookup(ip)
    }

    /// Reads the file again (after `geoipupdate`); on any error the database in use stays.
    /// Answers what is in use now.
    pub fn reload(&self) -> Result<String, GeoError> {
        let db = Arc::new(CountryDb::open(&self.path)?);
        let described = db.describe();
        // A poisoned lock only means a panic elsewhere while swapping: the value is whole.
        *self
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = db;
        Ok(described)
    }

    pub fn describe(&self) -> String {
        self.current().describe()
    }

    fn current(&self) -> Arc<CountryDb> {
        self.db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// The test databases' writer, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/mmdb.rs"]
pub(crate) mod mmdb;

#[cfg(test)]
mod tests {
    use super::mmdb::{Network, write_country_db};
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn networks() -> Vec<Network> {
        vec![
            Network::new("203.0.113.0/24", "de"),
            Network::new("198.51.100.0/25", "FR"),
            Network::new("198.51.100.128/25", "ZZ"),
            Network::new("2001:db8:cafe::/48", "JP"),
        ]
    }

    #[test]
    fn codes_are_two_letters_upper_case_and_known() {
        assert_eq!(
            Country::parse("de").map(|c| c.to_string()),
            Some("DE".into())
        );
        for bad in ["", "D", "DEU", "d1", "ZZ", "xx", "É"] {
            assert_eq!(Country::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ipv4_ipv6_and_addresses_in_no_network() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("countries.mmdb");
        write_country_db(&path, "GeoLite2-Country", &networks()).expect("mmdb");
        let db = CountryDb::open(&path).expect("opens");
        let country = |text: &str| db.lookup(ip(text)).map(|c| c.to_string());
        assert_eq!(country("203.0.113.77").as_deref(), Some("DE"));
        assert_eq!(country("::ffff:203.0.113.77").as_deref(), Some("DE"));
        assert_eq!(country("198.51.100.1").as_deref(), Some("FR"));
        assert_eq!(country("198.51.100.200"), None, "ZZ is unknown");
        assert_eq!(country("2001:db8:cafe:beef::1").as_deref(), Some("JP"));
        assert_eq!(country("2001:db8:caff::1"), None);
        assert_eq!(country("192.0.2.1"), None);
        assert_eq!(country("127.0.0.1"), None);
        assert!(db.describe().starts_with("GeoLite2-Country (built "));
    }

    #[test]
    fn missing_damaged_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.mmdb");
        assert!(matches!(
            CountryDb::open(&missing),
            Err(GeoError::Read { .. })
        ));
        let garbage = dir.path().join("garbage.mmdb");
        std::fs::write(&garbage, b"not a database at all").expect("write");
        let err = CountryDb::open(&garbage).expect_err("garbage");
        assert!(matches!(err, GeoError::NotMmdb { .. }), "{err}");
        // A real file cut short: the metadata marker survives only at the end, so cut the tree.
        let good = dir.path().join("good.mmdb");
        write_country_db(&good, "DBIP-Country-Lite", &networks()).expect("mmdb");
        let mut bytes = std::fs::read(&good).expect("read");
        bytes.drain(..24);
        let damaged = dir.path().join("damaged.mmdb");
        std::fs::write(&damaged, &bytes).expect("write");
        let err = CountryDb::open(&damaged).expect_err("damaged");
        assert!(matches!(err, GeoError::NotMmdb { .. }), "{err}");
        let asn = dir.path().join("asn.mmdb");
        write_country_db(&asn, "GeoLite2-ASN", &networks()).expect("mmdb");
        let err = CountryDb::open(&asn).expect_err("not countries");
        assert!(err.to_string().contains("\"GeoLite2-ASN\""), "{err}");
    }

    #[test]
    fn a_reload_swaps_the_file_and_a_broken_one_keeps_the_old() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("countries.mmdb");
        write_country_db(&path, "GeoLite2-Country", &networks()).expect("mmdb");
        let countries = Countries::open(&path).expect("opens");
        let country = |text: &str| countries.country(ip(text)).map(|c| c.to_string());
        assert_eq!(country("203.0.113.77").as_deref(), Some("DE"));
        write_country_db(
            &path,
            "GeoLite2-Country",
            &[Network::new("203.0.113.0/24", "AT")],
        )
        .expect("mmdb");
        countries.reload().expect("reloads");
        assert_eq!(country("203.0.113.77").as_deref(), Some("AT"));
        assert_eq!(country("198.51.100.1"), None);
        std::fs::write(&path, b"half a download").expect("write");
        assert!(countries.reload().is_err());
        assert_eq!(
            country("203.0.113.77").as_deref(),
            Some("AT"),
            "the old one stays"
        );
    }
}
