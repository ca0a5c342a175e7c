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
    /// The store's health, as counted by every call (the dashboard renders it as is).
    pub etcd: EtcdStats,
    /// What the peer link carried to and from each other server (filled by the server,
    /// which holds the link).
    pub peers: Vec<crate::peer::PeerStats>,
    /// Which server holds which client, the first [`MAX_LISTED_CLIENTS`] by id.
    pub clients: Vec<ClientPlace>,
    /// Clients of the registry not in `clients`.
    pub clients_truncated: usize,
}

/// `cluster.etcd` of `/api/stats`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EtcdStats {
    /// The last call to the store was answered and the lease is alive.
    pub healthy: bool,
    /// The last failure, and how long ago it came; `null` if none yet.
    pub last_error: Option<String>,
    /// Calls made to the store.
    pub requests: u64,
    /// Calls the store did not answer, and watches that broke.
    pub failures: u64,
    /// Transactions that put or delete, lease grants and revokes.
    pub writes: u64,
    /// Lease renewals.
    pub keepalives: u64,
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
        let h = node.store_health().snapshot();
        let lease = node.lease_state();
        let etcd = EtcdStats {
            healthy: h.answered && lease == LeaseState::Alive,
            last_error: h
                .last_error
                .map(|(text, ago)| format!("{text} ({}s ago)", ago.as_secs())),
            requests: h.requests,
            failures: h.failures,
            writes: h.writes,
            keepalives: h.keepalives,
        };
        ClusterStats {
            server_id: node.server_id().to_string(),
            backend: node.backend(),
            lease: match lease {
                LeaseState::Alive => "alive",
                LeaseState::Unconfirmed => "unconfirmed",
                LeaseState::Lost => "lost",
            },
            draining: node.draining(),
            servers,
            registry_revision: node.cache().revision(),
            etcd,
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
