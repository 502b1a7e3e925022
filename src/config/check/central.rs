//! Edge: configuration, stage two: `[central]`, where aggregates are pushed.

use toml::Spanned;
use url::Url;

use super::{Charset, Checker};
use crate::config::defaults::{
    DEFAULT_CENTRAL_TIMEOUT_SECS, DEFAULT_PUSH_SCHEDULE, DEFAULT_RETRY_MAX_SECS,
};
use crate::config::error::ConfigError;
use crate::config::raw::{RawCentral, Text};
use crate::config::validated::CentralConfig;

impl Checker<'_> {
    pub(super) fn central(
        &self,
        table: &Spanned<RawCentral>,
    ) -> Result<CentralConfig, ConfigError> {
        let raw = table.get_ref();
        let url = self.central_url(table)?;

        let id_raw = self.required(
            "central.collector_id",
            table,
            raw.collector_id.as_ref(),
            "this collector's id on the central platform",
        )?;
        let collector_id = self.name("central.collector_id", id_raw, Charset::Mixed)?;

        let token_raw = self.required(
            "central.token_file",
            table,
            raw.token_file.as_ref(),
            "the file holding the Bearer token for the central platform",
        )?;
        let token_file = self.path("central.token_file", token_raw)?;

        let push_schedule = self.push_schedule(raw)?;

        let ca_file = raw
            .ca_file
            .as_ref()
            .map(|v| self.path("central.ca_file", v))
            .transpose()?;

        let timeout_secs = match &raw.timeout_secs {
            None => DEFAULT_CENTRAL_TIMEOUT_SECS,
            Some(v) => self.between("central.timeout_secs", v, 1, 600, "")?,
        };
        let retry_max_secs = match &raw.retry_max_secs {
            None => DEFAULT_RETRY_MAX_SECS,
            Some(v) => self.between("central.retry_max_secs", v, 1, 86_400, " (a day)")?,
        };

        Ok(CentralConfig {
            url,
            collector_id,
            token_file,
            push_schedule,
            ca_file,
            timeout_secs,
            retry_max_secs,
        })
    }

    /// The central platform's base URL: no query, fragment or credentials, and https unless
    /// the host is this machine.
    fn central_url(&self, table: &Spanned<RawCentral>) -> Result<Url, ConfigError> {
        let raw = table.get_ref();
        let url_raw = self.required(
            "central.url",
            table,
            raw.url.as_ref(),
            "the http(s) base URL of the central platform",
        )?;
        self.base_url("central.url", url_raw, "central.token_file")
    }

    /// An http(s) base URL that API paths are appended to and that a token travels to: no
    /// query, fragment or credentials (the token is read from `token_key`), and https unless
    /// the host is this machine.
    pub(super) fn base_url(
        &self,
        key: &str,
        url_raw: &Text,
        token_key: &str,
    ) -> Result<Url, ConfigError> {
        let url = self.http_url(key, url_raw)?;
        // It is logged too: nothing else belongs in it.
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.at(
                key,
                url_raw,
                "must be a base URL without query or fragment, e.g. \"https://tracks.example\"",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.at(
                key,
                url_raw,
                format!("must not contain credentials; the token is read from {token_key}"),
            ));
        }
        if url.scheme() == "http" && !is_loopback_host(&url) {
            return Err(self.at(
                key,
                url_raw,
                "must be https:// unless the host is a loopback address (127.0.0.1, ::1, localhost)",
            ));
        }
        Ok(url)
    }

    fn push_schedule(&self, raw: &RawCentral) -> Result<String, ConfigError> {
        let Some(v) = &raw.push_schedule else {
            return Ok(DEFAULT_PUSH_SCHEDULE.to_string());
        };
        check_cron(v.get_ref()).map_err(|why| {
            self.at(
                "central.push_schedule",
                v,
                format!(
                    "must be a cron expression with seconds such as \"0 */15 * * * *\" \
                     (sec min hour day-of-month month day-of-week): {why} (got {:?})",
                    v.get_ref()
                ),
            )
        })?;
        Ok(v.get_ref().clone())
    }
}

/// Parses `schedule` the way tokio-cron-scheduler 0.15 does (`croner`, seconds required), so a
/// schedule accepted here cannot fail when the job is created.
fn check_cron(schedule: &str) -> Result<(), String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(schedule)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::tests::{ok, refused};

    const CENTRAL: &str = "[central]\nurl = \"https://tracks.example\"\ncollector_id = \"eu-1\"\n\
                           token_file = \"central.token\"\n";

    #[test]
    fn central_parses_with_defaults_and_relative_paths() {
        let central = ok(CENTRAL).central.unwrap();
        assert_eq!(central.url.as_str(), "https://tracks.example/");
        assert_eq!(central.collector_id, "eu-1");
        assert_eq!(central.token_file, PathBuf::from("/etc/tc/central.token"));
        assert_eq!(central.push_schedule, "0 */15 * * * *");
        assert_eq!(central.ca_file, None);
        assert_eq!(central.timeout_secs, 30);
        assert_eq!(central.retry_max_secs, 900);

        let central = ok(&format!(
            "{CENTRAL}push_schedule = \"30 0 3 * * Mon\"\nca_file = \"pki/ca.pem\"\n"
        ))
        .central
        .unwrap();
        assert_eq!(central.push_schedule, "30 0 3 * * Mon");
        assert_eq!(central.ca_file, Some(PathBuf::from("/etc/tc/pki/ca.pem")));
    }

    #[test]
    fn central_required_keys() {
        refused(
            "\n[central]\ncollector_id = \"a\"\ntoken_file = \"t\"\n",
            "central.url",
            2,
        );
        refused(
            "[central]\nurl = \"https://t.example\"\ntoken_file = \"t\"\n",
            "central.collector_id",
            1,
        );
        refused(
            "[central]\nurl = \"https://t.example\"\ncollector_id = \"a\"\n",
            "central.token_file",
            1,
        );
    }

    #[test]
    fn central_values_are_checked() {
        let with = |key: &str, value: &str| {
            CENTRAL
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} =")) {
                        format!("{key} = {value}\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect::<String>()
        };
        refused(&with("url", "\"tracks.example\""), "central.url", 2);
        refused(&with("url", "\"ftp://tracks.example\""), "central.url", 2);
        refused(&with("url", "\"https://t.example/?a=1\""), "central.url", 2);
        refused(&with("url", "\"https://u:p@t.example/\""), "central.url", 2);
        refused(&with("collector_id", "\"eu 1\""), "central.collector_id", 3);
        refused(&with("token_file", "\"\""), "central.token_file", 4);
        refused(&format!("{CENTRAL}ca_file = \"\"\n"), "central.ca_file", 5);
        refused(&with("url", "\"http://tracks.example\""), "central.url", 2);
        assert_eq!(
            ok(&with("url", "\"http://127.0.0.1:9000\""))
                .central
                .unwrap()
                .url
                .as_str(),
            "http://127.0.0.1:9000/"
        );
        refused(
            &format!("{CENTRAL}timeout_secs = 0\n"),
            "central.timeout_secs",
            5,
        );
        refused(
            &format!("{CENTRAL}retry_max_secs = 0\n"),
            "central.retry_max_secs",
            5,
        );
        refused(
            &format!("{CENTRAL}retry_max_secs = \"5\"\n"),
            "central.retry_max_secs",
            5,
        );
    }

    #[test]
    fn push_schedule_is_a_cron_expression_with_seconds() {
        // Five fields is classic cron without seconds: tokio-cron-scheduler refuses it.
        let msg = refused(
            &format!("{CENTRAL}push_schedule = \"*/15 * * * *\"\n"),
            "central.push_schedule",
            5,
        );
        assert!(msg.contains("with seconds"), "{msg}");
        refused(
            &format!("{CENTRAL}push_schedule = \"every 15 minutes\"\n"),
            "central.push_schedule",
            5,
        );
        refused(
            &format!("{CENTRAL}push_schedule = \"0 61 * * * *\"\n"),
            "central.push_schedule",
            5,
        );
        refused(
            &format!("{CENTRAL}push_schedule = \"\"\n"),
            "central.push_schedule",
            5,
        );
    }
}
