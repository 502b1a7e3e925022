//! Edge: configuration, stage two: `[cluster]`, the other nodes behind the same load balancer.

use toml::Spanned;

use super::{Charset, Checker};
use crate::config::defaults::DEFAULT_CENTRAL_TIMEOUT_SECS;
use crate::config::error::ConfigError;
use crate::config::raw::{RawCluster, RawPeer};
use crate::config::validated::{ClusterConfig, PeerConfig};

impl Checker<'_> {
    pub(super) fn cluster(
        &self,
        table: &Spanned<RawCluster>,
        has_central: bool,
    ) -> Result<ClusterConfig, ConfigError> {
        let raw = table.get_ref();
        let node_raw = self.required(
            "cluster.node",
            table,
            raw.node.as_ref(),
            "this node's name in the merged view, e.g. \"node1\"",
        )?;
        let node = self.name("cluster.node", node_raw, Charset::Mixed)?;
        let push = match &raw.push {
            Some(value) if *value.get_ref() => {
                if !has_central {
                    return Err(self.at(
                        "cluster.push",
                        value,
                        "needs a [central] section: it is where this node pushes the merged \
                         documents",
                    ));
                }
                true
            }
            _ => false,
        };
        let ca_file = raw
            .ca_file
            .as_ref()
            .map(|v| self.path("cluster.ca_file", v))
            .transpose()?;
        let timeout_secs = match &raw.timeout_secs {
            None => DEFAULT_CENTRAL_TIMEOUT_SECS,
            Some(v) => self.between("cluster.timeout_secs", v, 1, 600, "")?,
        };
        let peers_raw = self.required(
            "cluster.peers",
            table,
            raw.peers.as_ref(),
            "the other nodes, each a [[cluster.peers]] table with name, url and token_file",
        )?;
        if peers_raw.get_ref().is_empty() {
            return Err(self.at(
                "cluster.peers",
                peers_raw,
                "must name at least one other node",
            ));
        }
        let mut peers: Vec<PeerConfig> = Vec::new();
        for (i, table) in peers_raw.get_ref().iter().enumerate() {
            let peer = self.peer(i, table)?;
            if peer.name == node || peers.iter().any(|known| known.name == peer.name) {
                let name_raw = table.get_ref().name.as_ref().unwrap_or(node_raw);
                return Err(self.at(
                    &format!("cluster.peers[{i}].name"),
                    name_raw,
                    format!(
                        "must differ from cluster.node and from every other peer (got {:?})",
                        peer.name
                    ),
                ));
            }
            peers.push(peer);
        }
        Ok(ClusterConfig {
            node,
            push,
            ca_file,
            timeout_secs,
            peers,
        })
    }
}

impl Checker<'_> {
    /// `[[cluster.peers]]` number `i`.
    fn peer(&self, i: usize, table: &Spanned<RawPeer>) -> Result<PeerConfig, ConfigError> {
        let peer = table.get_ref();
        let key = |name: &str| format!("cluster.peers[{i}].{name}");
        let name_raw = self.required(&key("name"), table, peer.name.as_ref(), "a name")?;
        let name = self.name(&key("name"), name_raw, Charset::Mixed)?;
        let url_raw = self.required(
            &key("url"),
            table,
            peer.url.as_ref(),
            "the node's own https base URL, e.g. \"https://10.0.0.12\"",
        )?;
        let url = self.base_url(&key("url"), url_raw, &key("token_file"))?;
        let token_raw = self.required(
            &key("token_file"),
            table,
            peer.token_file.as_ref(),
            "the file holding the token that node accepts with the \"peer\" scope",
        )?;
        let token_file = self.path(&key("token_file"), token_raw)?;
        Ok(PeerConfig {
            name,
            url,
            token_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::tests::{ok, refused};

    const CLUSTER: &str = "[cluster]\nnode = \"node1\"\n\n[[cluster.peers]]\nname = \"node2\"\n\
                           url = \"https://10.0.0.12\"\ntoken_file = \"peer-node2.token\"\n";

    #[test]
    fn cluster_parses_with_defaults_and_relative_paths() {
        let cluster = ok(CLUSTER).cluster.expect("the section");
        assert_eq!(cluster.node, "node1");
        assert!(!cluster.push);
        assert_eq!(cluster.timeout_secs, 30);
        assert_eq!(cluster.peers.len(), 1);
        assert_eq!(cluster.peers[0].name, "node2");
        assert_eq!(cluster.peers[0].url.as_str(), "https://10.0.0.12/");
        assert_eq!(
            cluster.peers[0].token_file,
            PathBuf::from("/etc/tc/peer-node2.token")
        );
    }

    #[test]
    fn cluster_values_are_checked() {
        refused(
            "[cluster]\n[[cluster.peers]]\nname = \"b\"\n",
            "cluster.node",
            1,
        );
        refused("[cluster]\nnode = \"a\"\n", "cluster.peers", 1);
        refused(
            &CLUSTER.replace("name = \"node2\"", "name = \"node1\""),
            "cluster.peers[0].name",
            5,
        );
        refused(
            &CLUSTER.replace("https://10.0.0.12", "http://10.0.0.12"),
            "cluster.peers[0].url",
            6,
        );
        refused(
            &CLUSTER.replace("token_file = \"peer-node2.token\"\n", ""),
            "cluster.peers[0].token_file",
            4,
        );
        let msg = refused(
            &CLUSTER.replace("node = \"node1\"\n", "node = \"node1\"\npush = true\n"),
            "cluster.push",
            3,
        );
        assert!(msg.contains("[central]"), "{msg}");
    }
}
