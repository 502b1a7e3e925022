//! Edge: configuration, stage two: `[server.acme]`, certificates ordered from an ACME CA.

use toml::Spanned;

use super::Checker;
use crate::config::defaults::LETS_ENCRYPT;
use crate::config::error::ConfigError;
use crate::config::raw::RawAcme;
use crate::config::validated::AcmeSettings;

impl Checker<'_> {
    pub(super) fn acme(&self, raw: &Spanned<RawAcme>) -> Result<AcmeSettings, ConfigError> {
        let table = raw.get_ref();
        let domains: Vec<String> = match &table.domains {
            None => Vec::new(),
            Some(list) => list
                .get_ref()
                .iter()
                .map(|domain| {
                    let name = domain.get_ref().trim().to_ascii_lowercase();
                    let valid = !name.is_empty()
                        && name.len() <= 253
                        && name.split('.').count() >= 2
                        && name.split('.').all(|label| {
                            !label.is_empty()
                                && label.len() <= 63
                                && label
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        });
                    if valid {
                        Ok(name)
                    } else {
                        Err(self.at(
                            "server.acme.domains",
                            domain,
                            format!(
                                "must be a DNS name such as \"collect.studio.example\" (got {:?})",
                                domain.get_ref()
                            ),
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        if domains.is_empty() {
            return Err(self.at(
                "server.acme.domains",
                raw,
                "lists the names to order a certificate for, at least one",
            ));
        }
        let contact = match &table.contact {
            None => Vec::new(),
            Some(value) if value.get_ref().starts_with("mailto:") => vec![value.get_ref().clone()],
            Some(value) => {
                return Err(self.at(
                    "server.acme.contact",
                    value,
                    format!("must be a mailto: address (got {:?})", value.get_ref()),
                ));
            }
        };
        let directory = match &table.directory {
            None => LETS_ENCRYPT.to_string(),
            Some(value) => self.http_url("server.acme.directory", value)?.to_string(),
        };
        Ok(AcmeSettings {
            domains,
            contact,
            directory,
            ca_file: table
                .ca_file
                .as_ref()
                .map(|value| self.path("server.acme.ca_file", value))
                .transpose()?,
            // Empty: beside the database, filled in once [storage] is read.
            cache_dir: table
                .cache_dir
                .as_ref()
                .map(|value| self.path("server.acme.cache_dir", value))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::tests::{ok, refused};

    #[test]
    fn acme_and_certificate_files_exclude_each_other() {
        let acme = "\n[server.acme]\ndomains = [\"collect.studio.example\"]\n";
        let message = refused(
            &format!("[server]\ntls_cert = \"cert.pem\"\n{acme}"),
            "server.tls_cert",
            2,
        );
        assert!(
            message.contains("cannot be set with [server.acme]"),
            "{message}"
        );
        refused(
            &format!("[server]\ntls_key = \"key.pem\"\n{acme}"),
            "server.tls_key",
            2,
        );
        let config = ok(&format!(
            "[storage]\npath = \"/var/lib/tc/collector.db\"\n{acme}"
        ));
        let settings = config.server.acme.expect("acme");
        assert_eq!(settings.directory, crate::config::defaults::LETS_ENCRYPT);
        assert_eq!(settings.cache_dir, PathBuf::from("/var/lib/tc/acme"));
        assert!(config.server.tls.is_none());
        refused("[server.acme]\ndomains = []\n", "server.acme.domains", 1);
        refused(
            "[server.acme]\ndomains = [\"collect.studio.example\"]\ncontact = \"ops@x\"\n",
            "server.acme.contact",
            3,
        );
    }
}
