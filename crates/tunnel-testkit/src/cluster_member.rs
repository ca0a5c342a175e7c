//! Servers of one cluster sharing a registry in a real etcd ([`crate::Etcd`]), in process,
//! each bound to its own loopback address (127.0.0.`ip`) so that they can publish the same
//! port as real hosts would. Needs a server built with the `etcd` feature.

use std::net::SocketAddr;
use std::time::Duration;

use tunnel_server::{ServerConfig, ServerHandle};

use crate::engines::{logs, KEY};
use crate::etcd::Etcd;
use crate::net::{free_port, loopback};

/// The cluster key of [`etcd_member`]'s servers.
pub const MEMBER_CLUSTER_KEY: &str = "a cluster key only the servers know";

/// The `[cluster]` table of server `id` under `prefix`, its peer port on 127.0.0.`ip`, as
/// TOML (the config file's words, so that the fixture needs no crate of the registry).
pub fn etcd_member_config(etcd: &Etcd, prefix: &str, id: &str, ip: u8) -> String {
    let peer_bind = SocketAddr::new(loopback(ip), free_port());
    format!(
        "[cluster]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n\
         server_id = \"{id}\"\npeer_bind = \"{peer_bind}\"\ncluster_key = \"{MEMBER_CLUSTER_KEY}\"\n",
        etcd.endpoint()
    )
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
    logs();
    let toml = format!(
        "auth_key = \"{KEY}\"\n{}",
        etcd_member_config(etcd, prefix, id, ip)
    );
    let cfg = ServerConfig::from_toml(&toml)
        .unwrap()
        .with_bind(SocketAddr::new(loopback(ip), 0))
        .with_publish_addr(loopback(ip))
        .with_stats_bind(Some("127.0.0.1:0".parse().unwrap()))
        .with_vhost_http_bind(SocketAddr::new(loopback(ip), 0))
        .with_shutdown_grace(Duration::ZERO);
    tunnel_server::start(f(cfg)).await.unwrap()
}
