//! The cluster as `/api/stats` and `/metrics` show it.

use serde::Serialize;
use tunnel_cluster::registrar::LeaseState;

use super::Node;

/// The `cluster` object of `/api/stats` (`null` in single-server mode).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterStats {
    pub server_id: String,
    pub backend: &'static str,
    /// `alive`, `unconfirmed` (renewals failing, it may have expired) or `lost`.
    pub lease: &'static str,
    pub draining: bool,
    /// Every server in the registry, this one included, sorted by id.
    pub servers: Vec<ServerStats>,
    /// The registry revision the cache reflects.
    pub registry_revision: i64,
}

/// One server of the cluster.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerStats {
    pub id: String,
    pub peer_addr: String,
    pub draining: bool,
}

impl ClusterStats {
    pub(super) fn of(node: &Node) -> ClusterStats {
        let mut servers: Vec<ServerStats> = node
            .cache()
            .servers()
            .into_iter()
            .map(|(id, r)| ServerStats {
                id,
                peer_addr: r.peer_addr,
                draining: r.draining,
            })
            .collect();
        servers.sort_by(|a, b| a.id.cmp(&b.id));
        ClusterStats {
            server_id: node.server_id().to_string(),
            backend: node.backend(),
            lease: match node.lease_state() {
                LeaseState::Alive => "alive",
                LeaseState::Unconfirmed => "unconfirmed",
                LeaseState::Lost => "lost",
            },
            draining: node.draining(),
            servers,
            registry_revision: node.cache().revision(),
        }
    }
}
