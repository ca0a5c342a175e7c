//! A cluster server as a process (one that can be killed with -9) sharing a registry in a
//! real [`Etcd`], bound to its own loopback address with its stats endpoint on a known port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::cluster_member::MEMBER_CLUSTER_KEY;
use crate::engines::{stats_json, KEY};
use crate::etcd::Etcd;
use crate::net::{free_port, loopback};
use crate::pki::Pki;
use crate::process::Proc;

/// One server process of a cluster.
#[derive(Debug)]
pub struct ClusterMember {
    /// Its `server_id`.
    pub id: String,
    /// The last byte of its loopback address (127.0.0.`ip`).
    pub ip: u8,
    /// The process.
    pub proc: Proc,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Its stats endpoint (`/api/stats`, `/metrics`).
    pub stats: SocketAddr,
}

impl ClusterMember {
    /// Server `id` as a process bound to 127.0.0.`ip` (clients, peers, published ports, stats),
    /// in the cluster under `prefix` with `lease_ttl` seconds, serving `pki`'s certificate;
    /// returns once it takes connections (it has joined the cluster by then).
    pub async fn spawn(
        pki: &Pki,
        etcd: &Etcd,
        prefix: &str,
        id: &str,
        ip: u8,
        lease_ttl: u64,
    ) -> ClusterMember {
        ClusterMember::spawn_with(pki, etcd, prefix, id, ip, lease_ttl, "").await
    }

    /// [`ClusterMember::spawn`] with `extra` top-level TOML lines in its config (before the
    /// `[cluster]` table).
    pub async fn spawn_with(
        pki: &Pki,
        etcd: &Etcd,
        prefix: &str,
        id: &str,
        ip: u8,
        lease_ttl: u64,
        extra: &str,
    ) -> ClusterMember {
        let ip4 = loopback(ip);
        let addr = SocketAddr::new(ip4, free_port());
        let stats = SocketAddr::new(ip4, free_port());
        let cfg = pki.write(
            &format!("member-{id}.toml"),
            &format!(
                "bind = \"{addr}\"\nauth_key = \"{KEY}\"\ntls_cert = {:?}\ntls_key = {:?}\n\
                 publish_addr = \"{ip4}\"\nstats_bind = \"{stats}\"\n{extra}\n\
                 [cluster]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n\
                 server_id = \"{id}\"\nlease_ttl = {lease_ttl}\npeer_bind = \"{ip4}:{}\"\n\
                 cluster_key = \"{MEMBER_CLUSTER_KEY}\"\n",
                pki.cert.display().to_string(),
                pki.key.display().to_string(),
                etcd.endpoint(),
                free_port(),
            ),
        );
        let mut proc = Proc::spawn(
            crate::bins::server(),
            &cfg,
            pki.dir.join(format!("member-{id}.log")),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(addr).await.is_err() {
            assert!(proc.is_running(), "server {id} exited:\n{}", proc.log());
            assert!(Instant::now() < deadline, "server {id} did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ClusterMember {
            id: id.to_owned(),
            ip,
            proc,
            addr,
            stats,
        }
    }

    /// Its `/api/stats` `cluster.etcd` object (the store's health and counters).
    pub async fn etcd_stats(&self) -> serde_json::Value {
        stats_json(self.stats).await["cluster"]["etcd"].clone()
    }
}
