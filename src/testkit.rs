//! What the integration tests and benches drive directly, without a socket: the store, ingest,
//! the jobs, linking and the TLS set-up. Not an API: it follows the crate's insides.

pub use crate::attribution::{Document, Query, Rendered, read_document};
pub use crate::campaign::Campaign;
pub use crate::clock::{DAY_SECS, day_of, parse_day, utc_day};
pub use crate::config::{
    AttributionConfig, AttributionModel, Config, DEFAULT_CONFIG_PATH, GameConfig, LinkConfig,
    MeasureKey, PrivacyConfig, SecretHash, TlsFiles,
};
pub use crate::control::{Claim, Command, Control, Outcome, Owner, send};
pub use crate::http::tls::{
    CertResolver, GeneratedCert, generate_self_signed, local_names, server_config,
};
pub use crate::ingest::collect::{CollectOutcome, CollectRequest, ServerVisitRequest};
pub use crate::ingest::measure::{MeasureBody, MeasureRequest};
pub use crate::ingest::redirect::{destination, find_link, link_utm};
pub use crate::ingest::{Code, ErrorKind, Ingest, IngestError, OpenedStore};
pub use crate::jobs::{purge, rotate_salt, rotate_salt_if_due};
pub use crate::link::LinkRules;
use crate::privacy::geo::Countries;
pub use crate::privacy::geo::{Country, CountryDb};
pub use crate::privacy::{Pseudonym, Salt, SharedSalts, ip_pseudonym, user_pseudonyms};
pub use crate::rows::{ConversionRow, PageRow, SourceCounts, SourceRow, SubjectEvent, TrafficRow};
pub use crate::store::key::CREDENTIAL_NAME;
pub use crate::store::page_cache;
pub use crate::store::{
    DbKey, EventsWritten, ForgetReport, NewVisit, PurgeReport, Reader, Store, StoreError, ViewKey,
    VisitWrite, start_sqlite,
};
pub use crate::text::is_control;

/// The store at `config`'s `storage.path`, its salts and ingest, wired as the daemon wires
/// them (its folder's lock taken here; the country database of `privacy.geoip_db`, if any).
pub fn open_store(
    config: &crate::config::Config,
    key: DbKey,
) -> Result<OpenedStore, Box<dyn std::error::Error>> {
    let countries = match &config.privacy.geoip_db {
        Some(path) => Some(std::sync::Arc::new(Countries::open(path)?)),
        None => None,
    };
    let lock = crate::store::FolderLock::take(&config.storage.path)?;
    Ok(OpenedStore::open_locked(config, lock, key, countries)?)
}
