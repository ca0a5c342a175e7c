//! Servers of one cluster sharing a registry in a real etcd ([`crate::Etcd`]), in process,
//! each bound to its own loopback address (127.0.0.`ip`) so that they can publish the same
//! port as real hosts would.

use std::net::SocketAddr;
use std::time::Duration;

use tunnel_cluster::{Backend, ClusterConfig};
use tunnel_server::{ServerConfig, ServerHandle};

use crate::engines::server_with;
use crate::etcd::Etcd;
use crate::net::{free_port, loopback};

/// The cluster key of [`etcd_member`]'s servers.
pub const MEMBER_CLUSTER_KEY: &str = "a cluster key only the servers know";

/// The `[cluster]` table of server `id` under `prefix`, its peer port on 127.0.0.`ip`.
pub fn etcd_member_config(etcd: &Etcd, prefix: &str, id: &str, ip: u8) -> ClusterConfig {
    ClusterConfig {
        backend: Backend::Etcd,
        endpoints: vec![etcd.endpoint()],
        prefix: prefix.to_string(),
        server_id: Some(id.to_string()),
        peer_bind: Some(SocketAddr::new(loopback(ip), free_port())),
        cluster_key: Some(MEMBER_CLUSTER_KEY.to_string()),
        ..ClusterConfig::default()
    }
}

/// Server `id` of the cluster under `prefix` on 127.0.0.`ip`: clients, published ports and
/// the virtual host there, no shutdown grace; then `f` changes the config.
pub async fn etcd_member(
    etcd: &Etcd,
    prefix: &str,
    id: &str,
    ip: u8,
    f: impl FnOnce(ServerConfig) -> ServerConfig,
) -> ServerHandle {
    let cluster = etcd_member_config(etcd, prefix, id, ip);
    server_with(|c| {
        f(c.with_bind(SocketAddr::new(loopback(ip), 0))
            .with_publish_addr(loopback(ip))
            .with_vhost_http_bind(SocketAddr::new(loopback(ip), 0))
            .with_shutdown_grace(Duration::ZERO)
            .with_cluster(cluster))
    })
    .await
}
