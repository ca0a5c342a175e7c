//! The server-to-server peer link (cluster mode): a visitor or user connection that reaches
//! this server for a proxy owned by another server is forwarded there over one multiplexed,
//! mutually authenticated TLS connection per peer.
//!
//! - `locate`: where a proxy lives ([`Locate`], [`StaticLocator`]).
//! - `accept`: the `peer_bind` listener; peers authenticated with the cluster key may only
//!   open Forward streams.
//! - `serve`: one Forward on the owner's side, checked and spliced like a local connection.
//! - `pool`: one link per peer, dialled lazily, and the one-retry rule.
//! - `visit`: the visitor path on the forwarding side.
//! - `vhost`: virtual-host requests for a domain another server serves, both ends.
//! - `ports`: `publish_mode = "all"`, every server answers every published port.
//! - `traffic`: what the link carries per peer, for `/api/stats` and `/metrics`.

mod accept;
mod counted;
mod locate;
mod pool;
pub(crate) mod ports;
mod serve;
mod traffic;
mod udp;
mod vhost;
mod visit;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tunnel_transport::{ClientTrust, PeerTls, ServerIdentity};

pub use locate::{Locate, LocateFuture, Located, StaticLocator};

pub(crate) use accept::run as run_listener;
pub(crate) use ports::run as run_ports;
pub(crate) use traffic::{PeerStats, PeerTraffic};
pub(crate) use vhost::{forward_vhost, VhostHop};
pub(crate) use visit::forward_visit;

use crate::ServerError;

/// Peer handshakes in progress at once: the rest are reset, so a flood of TLS handshakes on
/// `peer_bind` cannot take more than this many tasks and buffers.
const MAX_PEER_HANDSHAKES: usize = 64;

/// The peer link's settings (filled from the `[cluster]` table).
#[derive(Clone)]
pub struct PeerConfig {
    /// Where this server accepts peer connections.
    pub peer_bind: SocketAddr,
    /// Where other servers dial this one (`host:port`), as the registry announces it; `None`:
    /// the bound address. The link itself only logs it.
    pub peer_advertise: Option<String>,
    /// This server's id, named in the proofs and the logs.
    pub server_id: String,
    /// The secret every server of the cluster shares; authenticates peers both ways.
    pub cluster_key: String,
    /// Also verify a peer's certificate with this trust (a cluster CA, say); `None`: the
    /// cluster-key proof alone authenticates.
    pub trust: Option<ClientTrust>,
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("peer_bind", &self.peer_bind)
            .field("peer_advertise", &self.peer_advertise)
            .field("server_id", &self.server_id)
            .field("cluster_key", &"***")
            .field("trust", &self.trust)
            .finish()
    }
}

/// Shortest cluster key accepted: it guards every proxy of the cluster.
pub const MIN_CLUSTER_KEY_LEN: usize = 16;

/// The peer link as one server runs it.
pub(crate) struct Peer {
    pub(crate) cfg: PeerConfig,
    pub(crate) tls: PeerTls,
    pub(crate) locator: Arc<dyn Locate>,
    pub(crate) pool: pool::PeerPool,
    pub(crate) handshakes: Arc<Semaphore>,
    /// The forwarding listeners of `publish_mode = "all"`, by port.
    pub(crate) forwarding: ports::Forwarding,
    /// Bytes, streams and failures per peer server.
    pub(crate) traffic: Arc<PeerTraffic>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// Check the settings, bind `peer_bind`.
    pub(crate) async fn bind(
        cfg: PeerConfig,
        locator: Arc<dyn Locate>,
        identity: &ServerIdentity,
    ) -> Result<(Arc<Peer>, TcpListener, SocketAddr), ServerError> {
        if cfg.cluster_key.len() < MIN_CLUSTER_KEY_LEN {
            return Err(ServerError::Config(vec![crate::ConfigProblem::new(
                "cluster.cluster_key",
                format!(
                    "is {} bytes; use at least {MIN_CLUSTER_KEY_LEN} random bytes (e.g. \
                     `openssl rand -base64 24`), the same on every server of the cluster",
                    cfg.cluster_key.len()
                ),
            )]));
        }
        let tls = PeerTls::new(identity, cfg.trust.as_ref())?;
        let addr = cfg.peer_bind;
        let bind_err = |source| ServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let at = listener.local_addr().map_err(bind_err)?;
        let peer = Arc::new(Peer {
            cfg,
            tls,
            locator,
            pool: pool::PeerPool::default(),
            handshakes: Arc::new(Semaphore::new(MAX_PEER_HANDSHAKES)),
            forwarding: ports::Forwarding::default(),
            traffic: Arc::default(),
        });
        Ok((peer, listener, at))
    }

    /// The owner of `(name, port)` when it is another server.
    pub(crate) fn remote_owner(&self, name: &str, port: u16) -> Option<Located> {
        self.locator.locate(name, port).filter(|l| !l.local)
    }
}
