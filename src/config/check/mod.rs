//! Edge: configuration, stage two: the raw file validated into `Config`.
//!
//! The first problem found is returned, naming the file, the line and the key.
//!
//! One file per section of the file, each an `impl Checker` block; this one holds the checker,
//! the value helpers every section uses, and the names' rules.

mod acme;
mod attribution;
mod central;
mod cluster;
mod games;
mod ledger;
mod limits;
mod links;
mod log;
mod privacy;
mod server;
mod storage;
mod tokens;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use url::Url;

use super::error::ConfigError;
use super::locate::{friendly_toml_message, join_key, key_at, line_of};
use super::raw::{RawFile, Text};
use super::validated::{Config, SecretHash};

/// What a missing `measure_key` or token `hash` should hold.
const HASH_WANTED: &str =
    "\"blake3:<64 hex characters>\", the line printed by `tracks-collector token new`";
/// Names end up in URLs, logs and metrics labels: short and plain.
const MAX_NAME_LEN: usize = 64;

/// Which characters a name may use.
#[derive(Clone, Copy)]
enum Charset {
    /// `[a-z0-9._-]`: game ids and event names, compared as written by game code.
    Lower,
    /// `[A-Za-z0-9._-]`: link names, collector ids, token names.
    Mixed,
}

impl Charset {
    fn allows(self, c: char) -> bool {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '.' | '_' | '-')
            || (matches!(self, Charset::Mixed) && c.is_ascii_uppercase())
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Lower => NAME_CHARACTERS,
            Charset::Mixed => "A-Z, a-z, 0-9, '.', '_' and '-'",
        }
    }
}

/// Whether `text` may name a game, an event or a measure key: 1 to 64 characters of
/// [`NAME_CHARACTERS`]. The command line checks `token new --name` with it too.
pub(crate) fn is_lower_name(text: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&text.len()) && text.chars().all(|c| Charset::Lower.allows(c))
}

/// What [`is_lower_name`] allows, for messages.
pub(crate) const NAME_CHARACTERS: &str = "a-z, 0-9, '.', '_' and '-'";

/// Validates one file's raw values; holds the text so an error can name its line.
pub(super) struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    /// The config file's folder: relative paths are resolved against it.
    base: PathBuf,
    /// The line of each file path and secret hash key the file sets, for later warnings.
    key_lines: std::cell::RefCell<std::collections::BTreeMap<String, usize>>,
    /// The secret hash keys that still hold the example's placeholder.
    placeholders: std::cell::RefCell<Vec<String>>,
}

impl<'a> Checker<'a> {
    /// `path` is named in errors; its folder is the base of relative paths.
    pub(super) fn new(text: &'a str, path: &'a Path) -> Checker<'a> {
        Checker {
            text,
            path,
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            key_lines: Default::default(),
            placeholders: Default::default(),
        }
    }

    pub(super) fn config(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let privacy = self.privacy(&raw.privacy)?;
        let games = self.games(&raw.games)?;
        let mut config = Config {
            source: Some(self.path.to_path_buf()),
            key_lines: Default::default(),
            placeholders: Default::default(),
            server: self.server(&raw.server)?,
            storage: self.storage(&raw.storage)?,
            attribution: self.attribution(&raw.attribution, &privacy)?,
            privacy,
            links: self.links(&raw.links, &games)?,
            games,
            central: raw.central.as_ref().map(|c| self.central(c)).transpose()?,
            cluster: raw
                .cluster
                .as_ref()
                .map(|c| self.cluster(c, raw.central.is_some()))
                .transpose()?,
            tokens: self.tokens(&raw.tokens)?,
            limits: self.limits(&raw.limits)?,
            log: self.log(&raw.log)?,
            ledger: self.ledger(&raw.ledger)?,
        };
        if let Some(acme) = config.server.acme.as_mut()
            && acme.cache_dir.as_os_str().is_empty()
        {
            acme.cache_dir = config.storage.path.with_file_name("acme");
        }
        config.key_lines = self.key_lines.take();
        config.placeholders = self.placeholders.take();
        Ok(config)
    }

    // -- value helpers --------------------------------------------------------------------------

    fn required<'v, T, U>(
        &self,
        key: &str,
        table: &Spanned<U>,
        value: Option<&'v Spanned<T>>,
        what: &str,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        value.ok_or_else(|| self.at(key, table, format!("is required: {what}")))
    }

    fn between<T>(
        &self,
        key: &str,
        value: &Spanned<i64>,
        min: T,
        max: T,
        max_note: &str,
    ) -> Result<T, ConfigError>
    where
        T: TryFrom<i64> + PartialOrd + fmt::Display + Copy,
    {
        let got = *value.get_ref();
        T::try_from(got)
            .ok()
            .filter(|v| *v >= min && *v <= max)
            .ok_or_else(|| {
                self.at(
                    key,
                    value,
                    format!("must be between {min} and {max}{max_note} (got {got})"),
                )
            })
    }

    fn name(&self, key: &str, value: &Text, charset: Charset) -> Result<String, ConfigError> {
        let text = value.get_ref();
        if (1..=MAX_NAME_LEN).contains(&text.len()) && text.chars().all(|c| charset.allows(c)) {
            Ok(text.clone())
        } else {
            Err(self.at(
                key,
                value,
                format!(
                    "must be 1 to {MAX_NAME_LEN} characters of {} (got {text:?})",
                    charset.describe()
                ),
            ))
        }
    }

    fn secret(&self, key: &str, value: &Text) -> Result<SecretHash, ConfigError> {
        // Kept so that `check-config` can point at a placeholder left in place.
        self.key_lines
            .borrow_mut()
            .insert(key.to_string(), line_of(self.text, value.span().start));
        // The value is not echoed: someone may have pasted the secret itself here.
        let hash = SecretHash::parse(value.get_ref()).map_err(|why| {
            self.at(
                key,
                value,
                format!(
                    "{why}: the BLAKE3 hash printed by `tracks-collector token new`, never the \
                     secret itself"
                ),
            )
        })?;
        if hash.is_placeholder() {
            self.placeholders.borrow_mut().push(key.to_string());
        }
        Ok(hash)
    }

    fn http_url(&self, key: &str, value: &Text) -> Result<Url, ConfigError> {
        let text = value.get_ref();
        let reject = |why: String| {
            self.at(
                key,
                value,
                format!("must be an absolute http:// or https:// URL ({why}; got {text:?})"),
            )
        };
        let url = Url::parse(text).map_err(|e| reject(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(reject(format!("the scheme is {:?}", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(reject("there is no host".to_string()));
        }
        Ok(url)
    }

    fn path(&self, key: &str, value: &Text) -> Result<PathBuf, ConfigError> {
        if value.get_ref().trim().is_empty() {
            return Err(self.at(key, value, "must be a file path, not an empty string"));
        }
        self.key_lines
            .borrow_mut()
            .insert(key.to_string(), line_of(self.text, value.span().start));
        // `join` keeps an absolute path as it is and puts a relative one under the config folder.
        Ok(self.base.join(value.get_ref()))
    }

    fn path_or(
        &self,
        key: &str,
        value: Option<&Text>,
        default: &str,
    ) -> Result<PathBuf, ConfigError> {
        match value {
            None => Ok(PathBuf::from(default)),
            Some(v) => self.path(key, v),
        }
    }

    // -- errors ---------------------------------------------------------------------------------

    fn at<T>(&self, key: &str, value: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.invalid(key.to_string(), Some(value.span()), message.into())
    }

    fn invalid(&self, key: String, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: span.map(|s| line_of(self.text, s.start)),
            key,
            message,
        }
    }

    /// A syntax, type or unknown-key error from the toml crate, which knows the span but does
    /// not expose the key path: the path is recovered from the document at that span.
    pub(super) fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let span = err.span();
        let message = err.message();
        let mut key = span
            .as_ref()
            .and_then(|s| key_at(self.text, s.start))
            .unwrap_or_default();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            key = join_key(&key, field);
        }
        if key.is_empty() {
            key = "(file)".to_string();
        }
        self.invalid(key, span, friendly_toml_message(message))
    }
}
