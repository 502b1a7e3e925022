//! Attribution: the aggregates document, built from the store's roll-up rows with small rows
//! merged into `(other)` so totals are kept, the query that asks for it, and the days of it
//! kept rendered.
//!
//! Which visit brought which game open is decided when the event arrives, by the rules of
//! [`crate::link`]; everything here is a pure function of rows, settings and `now`.

mod document;
mod rendered;

#[cfg(test)]
pub(crate) use document::Settings;
pub(crate) use document::{
    ClusterStatus, QueryError, Rows, Unreachable, document, read_rows, retention_days,
};
pub use document::{Document, Query, read_document};
pub use rendered::Rendered;
