//! Servers of one cluster in process, linked by the peer link, with a static registry
//! ([`tunnel_server::peer::StaticLocator`]) each test fills by hand.

use std::net::IpAddr;
use std::sync::Arc;

use tunnel_server::peer::{Located, PeerConfig, StaticLocator};
use tunnel_server::{ServerConfig, ServerHandle};

use crate::engines::KEY;
use crate::logs::capture_logs;

/// The cluster key the fixture's servers share.
pub const CLUSTER_KEY: &str = "cluster-key-0123456789abcdef";

/// One server of a test cluster and its registry.
#[derive(Debug)]
pub struct ClusterServer {
    /// The engine.
    pub server: ServerHandle,
    /// What this server believes about where proxies live.
    pub locator: Arc<StaticLocator>,
    /// Its server id.
    pub id: String,
}

impl ClusterServer {
    /// Where its peer port answers, as `host:port`.
    pub fn peer_addr(&self) -> String {
        self.server.peer_addr().unwrap().to_string()
    }

    /// A registry entry placing virtual host `domain` (as registered) on this server at
    /// `epoch`, as a server with `local` ownership sees it.
    pub fn owns_domain(&self, domain: &str, epoch: u64, local: bool) -> Located {
        self.owns(domain, 0, epoch, local)
    }

    /// A registry entry placing `(name, port)` on this server at `epoch`, as a server with
    /// `local` ownership sees it.
    pub fn owns(&self, name: &str, port: u16, epoch: u64, local: bool) -> Located {
        Located {
            name: name.to_owned(),
            publish_port: port,
            server_id: self.id.clone(),
            peer_addr: self.peer_addr(),
            epoch,
            local,
            udp: false,
        }
    }
}

/// A server with id `id` on loopback, its peer port on an OS-picked port, authenticating peers
/// with `cluster_key`, publishing ports on 127.0.0.1.
pub async fn cluster_server(id: &str, cluster_key: &str) -> ClusterServer {
    cluster_server_on(id, cluster_key, crate::net::loopback(1)).await
}

/// [`cluster_server`] publishing ports on `publish` (another loopback address for each server,
/// so that they bind the same port, as servers on separate hosts do).
pub async fn cluster_server_on(id: &str, cluster_key: &str, publish: IpAddr) -> ClusterServer {
    cluster_server_with(id, cluster_key, |c| c.with_publish_addr(publish)).await
}

/// [`cluster_server`] with its config changed by `f` first (a virtual host, say).
pub async fn cluster_server_with(
    id: &str,
    cluster_key: &str,
    f: impl FnOnce(ServerConfig) -> ServerConfig,
) -> ClusterServer {
    capture_logs();
    let cfg = f(ServerConfig::default()
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_publish_addr(crate::net::loopback(1))
        .with_stats_bind(Some("127.0.0.1:0".parse().unwrap()))
        .with_auth_key(KEY));
    let peer = PeerConfig {
        peer_bind: "127.0.0.1:0".parse().unwrap(),
        peer_advertise: None,
        server_id: id.to_owned(),
        cluster_key: cluster_key.to_owned(),
        trust: None,
    };
    let locator = Arc::new(StaticLocator::new());
    let server = tunnel_server::start_clustered(cfg, peer, locator.clone())
        .await
        .unwrap();
    ClusterServer {
        server,
        locator,
        id: id.to_owned(),
    }
}
