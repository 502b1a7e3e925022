//! Edge: configuration, the one error of this boundary: a file that cannot be read or used,
//! named by its path, line and key.

use std::path::{Path, PathBuf};

/// A configuration problem, written for the person editing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `key` is the dotted key (`server.listen`, `games[1].measure_key`); `line` is 1-based
    /// when known.
    #[error("{}", invalid_message(.path, .line, .key, .message))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

fn invalid_message(path: &Path, line: &Option<usize>, key: &str, message: &str) -> String {
    match line {
        Some(line) => format!("{}:{line}: `{key}`: {message}", path.display()),
        None => format!("{}: `{key}`: {message}", path.display()),
    }
}
