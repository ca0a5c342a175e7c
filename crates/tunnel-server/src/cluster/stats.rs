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
    /// What the peer link carried to and from each other server (filled by the server,
    /// which holds the link).
    pub peers: Vec<crate::peer::PeerStats>,
    /// Which server holds which client, the first [`MAX_LISTED_CLIENTS`] by id.
    pub clients: Vec<ClientPlace>,
    /// Clients of the registry not in `clients`.
    pub clients_truncated: usize,
}

/// Clients listed at most in `cluster.clients`: the page stays small with many clients.
const MAX_LISTED_CLIENTS: usize = 1000;

/// One client of the cluster and the server holding it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClientPlace {
    pub id: String,
    pub server_id: String,
}

/// One server of the cluster.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerStats {
    pub id: String,
    pub peer_addr: String,
    pub draining: bool,
    /// Clients it holds, as the registry says.
    pub clients: usize,
}

impl ClusterStats {
    pub(super) fn of(node: &Node) -> ClusterStats {
        let placed = node.cache().placements(MAX_LISTED_CLIENTS);
        let mut servers: Vec<ServerStats> = node
            .cache()
            .servers()
            .into_iter()
            .map(|(id, r)| ServerStats {
                peer_addr: r.peer_addr,
                draining: r.draining,
                clients: placed.per_server.get(&id).copied().unwrap_or(0),
                id,
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
            peers: Vec::new(),
            clients_truncated: placed.total.saturating_sub(placed.clients.len()),
            clients: placed
                .clients
                .into_iter()
                .map(|(id, server_id)| ClientPlace { id, server_id })
                .collect(),
        }
    }
}
