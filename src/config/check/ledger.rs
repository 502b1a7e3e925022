//! Edge: configuration, stage two: `[ledger]`, how long what left the server is recorded.

use super::Checker;
use crate::config::error::ConfigError;
use crate::config::raw::RawLedger;
use crate::config::validated::LedgerConfig;

impl Checker<'_> {
    pub(super) fn ledger(&self, raw: &RawLedger) -> Result<LedgerConfig, ConfigError> {
        let defaults = LedgerConfig::default();
        Ok(LedgerConfig {
            retention_days: match &raw.retention_days {
                None => defaults.retention_days,
                Some(v) => self.between("ledger.retention_days", v, 1, 3650, "")?,
            },
            keep_documents: raw
                .keep_documents
                .as_ref()
                .map_or(defaults.keep_documents, |v| *v.get_ref()),
        })
    }
}
