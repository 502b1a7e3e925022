//! Cluster: the other collectors behind the same load balancer, and one view of all of them.
//!
//! Routing by the client's address keeps the nodes' visitors and players apart, so the sum of
//! the nodes' rows before suppression is what one collector holding all of them would give;
//! `min_cell_size` is applied after the merge, by the document as for one node. Each node
//! answers its peers (`GET /api/v1/cluster/rows`, scope `peer`) with its rows before
//! suppression; any node merges the peers it reaches with its own and says which it merged.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::attribution::{ClusterStatus as Status, Rows, Unreachable};
use crate::central::client::{Client, ClientError, read_token};
use crate::config::{ClusterConfig, PeerConfig};
use crate::rows::{ConversionRow, PageRow, SourceRow, TrafficRow, merge};

/// A peer's answer is read up to this size: a month of a busy node's cells is tens of MB.
const PEER_ANSWER_LIMIT: usize = 1 << 30;

/// The path a node answers its peers on.
pub(crate) const ROWS_PATH: &str = "/api/v1/cluster/rows";

/// A node's rows of a day range before suppression, as it answers its peers.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PeerRows {
    /// The answering node's `cluster.node`: a peer configured twice, or pointing back at
    /// the asking node, would otherwise be counted twice.
    pub node: String,
    pub traffic: Vec<TrafficRow>,
    pub conversions: Vec<ConversionRow>,
    pub sources: Vec<SourceRow>,
    pub pages: Vec<PageRow>,
}

impl PeerRows {
    pub(crate) fn of(node: &str, rows: Rows) -> PeerRows {
        PeerRows {
            node: node.to_string(),
            traffic: rows.traffic,
            conversions: rows.conversions,
            sources: rows.sources,
            pages: rows.pages,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("cannot read the token for peer {node} from {path}: {message}")]
    Token {
        index: usize,
        node: String,
        path: PathBuf,
        message: String,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl ClusterError {
    /// The configuration key of the file at fault.
    pub(crate) fn config_key(&self) -> String {
        match self {
            ClusterError::Token { index, .. } => format!("cluster.peers[{index}].token_file"),
            ClusterError::Client(_) => "cluster.ca_file".into(),
        }
    }
}

/// This node's peers and the client that reads them.
#[derive(Debug)]
pub(crate) struct Cluster {
    config: ClusterConfig,
    client: Client,
}

impl Cluster {
    /// Checks the peers' token files and the trust roots now, so a mistake stops the start.
    pub(crate) fn new(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        for (index, peer) in config.peers.iter().enumerate() {
            read_token(&peer.token_file).map_err(|message| ClusterError::Token {
                index,
                node: peer.name.clone(),
                path: peer.token_file.clone(),
                message,
            })?;
        }
        let client = Client::new(
            config.ca_file.as_deref(),
            Duration::from_secs(u64::from(config.timeout_secs)),
        )?;
        Ok(Cluster {
            config: config.clone(),
            client,
        })
    }

    pub(crate) fn node(&self) -> &str {
        &self.config.node
    }

    /// `local`, this node's rows of `from..=to`, merged with every peer's that can be read.
    pub(crate) async fn merged(
        &self,
        local: Rows,
        from: &str,
        to: &str,
        game: Option<&str>,
    ) -> (Rows, Status) {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, peer) in self.config.peers.iter().enumerate() {
            let (client, peer) = (self.client.clone(), peer.clone());
            let url = rows_url(&peer.url, from, to, game);
            tasks.spawn(async move { (index, fetch(&client, &peer, &url).await) });
        }
        let mut answers: Vec<(usize, Result<PeerRows, String>)> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(answer) => answers.push(answer),
                Err(err) => tracing::error!(error = %err, "a peer's read failed"),
            }
        }
        answers.sort_by_key(|(index, _)| *index);
        let mut status = Status {
            merged: vec![self.config.node.clone()],
            unreachable: Vec::new(),
        };
        let mut all = vec![PeerRows::of(&self.config.node, local)];
        for (index, answer) in answers {
            let name = &self.config.peers[index].name;
            match answer.and_then(|rows| self.checked(name, rows)) {
                Ok(rows) => {
                    status.merged.push(name.clone());
                    all.push(rows);
                }
                Err(error) => {
                    tracing::warn!(node = %name, %error, "a peer is left out of the merged view");
                    status.unreachable.push(Unreachable {
                        node: name.clone(),
                        error,
                    });
                }
            }
        }
        (merge_all(all), status)
    }

    /// A peer's answer, refused when it comes from another node than the one configured.
    fn checked(&self, name: &str, rows: PeerRows) -> Result<PeerRows, String> {
        if rows.node != name {
            return Err(format!(
                "it answered as node {:?}: check its URL in [[cluster.peers]] and its cluster.node",
                rows.node
            ));
        }
        Ok(rows)
    }
}

/// The rows of every node as one store would give them.
fn merge_all(all: Vec<PeerRows>) -> Rows {
    let mut lists = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rows in all {
        lists.0.push(rows.traffic);
        lists.1.push(rows.conversions);
        lists.2.push(rows.sources);
        lists.3.push(rows.pages);
    }
    Rows {
        traffic: merge(lists.0),
        conversions: merge(lists.1),
        sources: merge(lists.2),
        pages: merge(lists.3),
    }
}

/// `{url}/api/v1/cluster/rows?from=…&to=…[&game=…]`, keeping any path prefix of `url`.
fn rows_url(base: &Url, from: &str, to: &str, game: Option<&str>) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{ROWS_PATH}"));
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("from", from).append_pair("to", to);
        if let Some(game) = game {
            query.append_pair("game", game);
        }
    }
    url
}

/// One peer's rows, or why they could not be had, in words for the document and the log.
async fn fetch(client: &Client, peer: &PeerConfig, url: &Url) -> Result<PeerRows, String> {
    let token = read_token(&peer.token_file)
        .map_err(|why| format!("cannot read {}: {why}", peer.token_file.display()))?;
    let fetched = client
        .get(url, &token, PEER_ANSWER_LIMIT)
        .await
        .map_err(|err: ClientError| err.to_string())?;
    if fetched.status != 200 {
        let excerpt = String::from_utf8_lossy(&fetched.body[..fetched.body.len().min(300)])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        return Err(format!("HTTP {}: {excerpt}", fetched.status));
    }
    // A month of cells is tens of MB of JSON: parsed off the async workers.
    tokio::task::spawn_blocking(move || serde_json::from_slice::<PeerRows>(&fetched.body))
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("its answer is not a peer's rows: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_url_keeps_the_base_path_and_encodes_the_query() {
        let base = Url::parse("https://10.0.0.12:8443/collector/").expect("a URL");
        assert_eq!(
            rows_url(&base, "2026-12-01", "2026-12-06", Some("my-game")).as_str(),
            "https://10.0.0.12:8443/collector/api/v1/cluster/rows?from=2026-12-01&to=2026-12-06&game=my-game"
        );
        let base = Url::parse("https://node2").expect("a URL");
        assert_eq!(
            rows_url(&base, "2026-12-01", "2026-12-01", None).as_str(),
            "https://node2/api/v1/cluster/rows?from=2026-12-01&to=2026-12-01"
        );
    }
}
