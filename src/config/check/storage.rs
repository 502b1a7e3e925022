//! Edge: configuration, stage two: `[storage]`, the database file and its key.

use super::Checker;
use crate::config::defaults::{DEFAULT_CACHE_MIB, DEFAULT_DB_KEY_FILE, DEFAULT_DB_PATH};
use crate::config::error::ConfigError;
use crate::config::raw::RawStorage;
use crate::config::validated::StorageConfig;

impl Checker<'_> {
    pub(super) fn storage(&self, raw: &RawStorage) -> Result<StorageConfig, ConfigError> {
        Ok(StorageConfig {
            path: self.path_or("storage.path", raw.path.as_ref(), DEFAULT_DB_PATH)?,
            key_file: self.path_or(
                "storage.key_file",
                raw.key_file.as_ref(),
                DEFAULT_DB_KEY_FILE,
            )?,
            cache_mib: match &raw.cache_mib {
                None => DEFAULT_CACHE_MIB,
                Some(v) => self.between("storage.cache_mib", v, 2, 65_536, "")?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::config::defaults::DEFAULT_CACHE_MIB;
    use crate::config::parse_str;
    use crate::config::tests::{ok, refused};

    #[test]
    fn storage_paths_resolve_against_the_config_folder() {
        let config = ok("[storage]\npath = \"data/collector.db\"\nkey_file = \"/keys/db.key\"\n");
        assert_eq!(
            config.storage.path,
            PathBuf::from("/etc/tc/data/collector.db")
        );
        assert_eq!(config.storage.key_file, PathBuf::from("/keys/db.key"));

        // A config path with no folder keeps relative paths relative (to the working directory,
        // which is then that folder).
        let config =
            parse_str("[storage]\npath = \"c.db\"\n", Path::new("collector.toml")).unwrap();
        assert_eq!(config.storage.path, PathBuf::from("c.db"));
    }

    #[test]
    fn the_writer_cache_has_a_default_and_bounds() {
        assert_eq!(ok("[storage]\n").storage.cache_mib, DEFAULT_CACHE_MIB);
        assert_eq!(ok("[storage]\ncache_mib = 64\n").storage.cache_mib, 64);
        refused("[storage]\ncache_mib = 1\n", "storage.cache_mib", 2);
        refused("[storage]\ncache_mib = 100000\n", "storage.cache_mib", 2);
    }

    #[test]
    fn storage_paths_must_not_be_empty() {
        refused("[storage]\npath = \"\"\n", "storage.path", 2);
        refused("[storage]\nkey_file = \"\"\n", "storage.key_file", 2);
    }
}
