//! The running daemon's shared state: what `http` serves every request with.

use std::sync::Arc;

use crate::config::Config;
use crate::identity::Signer;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::store::Store;

/// The running daemon's shared state. The background tasks do not hold it: `jobs` and
/// `central` get only the parts they use.
#[derive(Debug)]
pub(crate) struct App {
    /// Shared with the push, which renders the aggregates by the same rules as `/api`.
    pub config: Arc<Config>,
    pub store: Store,
    /// Its salt ring is the one the rotation job updates.
    pub ingest: Ingest,
    /// Shared with the deliverer, which counts the push outcomes.
    pub metrics: Arc<Metrics>,
    /// Signs every document a pull takes away; shared with the push and the rotation.
    pub signer: Signer,
    /// With `[server.acme]`: the certificates, for `/metrics` and `/healthz`.
    pub acme: Option<Arc<crate::http::acme::AcmeResolver>>,
    /// With `[cluster]`: the other nodes, whose rows `/api/v1/aggregates` merges with this
    /// node's; shared with the push of the merged documents.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The aggregates document's days, rendered at their current version, which this node's
    /// own documents are put together from.
    pub rendered: crate::attribution::Rendered,
}
