//! The cluster node as the peer link's [`Locate`]: the registry's answer to "which server
//! holds this proxy", and the settings of the link from the `[cluster]` table.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::warn;
use tunnel_cluster::records::{self, DomainRecord, ProxyRecord};
use tunnel_cluster::{ClusterError, KeyKind};

use super::{Located as NodeLocated, Node};
use crate::peer::{Locate, LocateFuture, Located, PeerConfig};
use crate::{ConfigProblem, ServerConfig, ServerError};

/// [`Node`] behind the peer link's [`Locate`].
pub(crate) struct NodeLocator {
    node: Arc<Node>,
    changes: watch::Receiver<u64>,
}

impl fmt::Debug for NodeLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeLocator")
            .field("server_id", &self.node.server_id())
            .finish_non_exhaustive()
    }
}

impl NodeLocator {
    /// Follows the node's port feed for [`Locate::port_changes`] until the node's feed ends.
    pub(crate) fn new(node: Arc<Node>) -> Self {
        let (tx, changes) = watch::channel(0u64);
        let mut ports = node.published_ports_changes();
        tokio::spawn(async move {
            while ports.changed().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
        NodeLocator { node, changes }
    }

    fn convert(name: &str, publish_port: u16, at: NodeLocated) -> Located {
        Located {
            name: name.to_owned(),
            publish_port,
            server_id: at.server_id,
            peer_addr: at.peer_addr.to_string(),
            epoch: u64::try_from(at.epoch).unwrap_or(0),
            local: at.local,
            udp: false,
        }
    }
}

impl Locate for NodeLocator {
    fn locate(&self, name: &str, publish_port: u16) -> Option<Located> {
        let at = self.node.locate(name, publish_port)?;
        Some(Self::convert(name, publish_port, at))
    }

    fn locate_fresh<'a>(&'a self, name: &'a str, publish_port: u16) -> LocateFuture<'a> {
        Box::pin(async move {
            match self.node.locate_fresh(name, publish_port).await {
                Ok(at) => at.map(|at| Self::convert(name, publish_port, at)),
                Err(e) => {
                    warn!("cluster: cannot read where {name}:{publish_port} is served: {e}");
                    None
                }
            }
        })
    }

    fn published_ports(&self) -> Vec<Located> {
        self.node
            .published_ports()
            .into_iter()
            .filter_map(|p| {
                let mut at = self.locate(&p.name, p.port)?;
                at.udp = p.udp;
                Some(at)
            })
            .collect()
    }

    fn port_changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    fn locate_domain(&self, domain: &str) -> Option<Located> {
        let rec = self.node.cache().domain(domain)?;
        let at = self.node.located(domain_as_proxy(rec))?;
        Some(Self::convert(domain, 0, at))
    }

    fn locate_domain_fresh<'a>(&'a self, domain: &'a str) -> LocateFuture<'a> {
        Box::pin(async move {
            match self.domain_fresh(domain).await {
                Ok(at) => at.map(|at| Self::convert(domain, 0, at)),
                Err(e) => {
                    warn!("cluster: cannot read where virtual host {domain} is served: {e}");
                    None
                }
            }
        })
    }
}

impl NodeLocator {
    /// One linearizable read of `domain/<domain>`.
    async fn domain_fresh(&self, domain: &str) -> Result<Option<NodeLocated>, ClusterError> {
        let key = self
            .node
            .registrar
            .keys()
            .key(&KeyKind::Domain(domain.to_owned()))?;
        let Some(kv) = self.node.store.get(&key).await? else {
            return Ok(None);
        };
        let rec: DomainRecord = records::decode(&kv)?;
        Ok(self.node.located(domain_as_proxy(rec)))
    }
}

/// A domain's record in the shape [`Node`] resolves to a server: the same owner, server
/// and epoch; the port is no part of a domain.
fn domain_as_proxy(rec: DomainRecord) -> ProxyRecord {
    ProxyRecord {
        client_id: rec.client_id,
        instance: rec.instance,
        server_id: rec.server_id,
        publish_port: 0,
        epoch: rec.epoch,
    }
}

/// The peer link's settings from `[cluster]`: `problems()` has checked them before start.
pub(crate) fn peer_config(cfg: &ServerConfig) -> Result<Option<PeerConfig>, ServerError> {
    let Some(c) = cfg.cluster.as_ref().filter(|c| c.enabled()) else {
        return Ok(None);
    };
    let problem = |p: ConfigProblem| ServerError::Config(vec![p]);
    let peer_bind = c.peer_bind.ok_or_else(|| {
        problem(ConfigProblem::new(
            "cluster.peer_bind",
            "required with backend = \"etcd\": the address other servers reach this one on",
        ))
    })?;
    Ok(Some(PeerConfig {
        peer_bind,
        peer_advertise: c.peer_advertise(),
        server_id: c.server_id().map_err(problem)?,
        cluster_key: c.cluster_key().map_err(problem)?,
        trust: None,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use tunnel_cluster::decide::ProxyClaim;
    use tunnel_cluster::registrar::Registered;
    use tunnel_cluster::{ClusterStore, MemStore};

    use super::*;
    use crate::cluster::NodeOptions;

    async fn node(store: &Arc<dyn ClusterStore>, id: &str, peer: &str) -> Arc<Node> {
        let opts = NodeOptions {
            server_id: id.into(),
            prefix: "/t/".into(),
            lease_ttl: Duration::from_secs(10),
            peer_addr: peer.into(),
            public_addr: "127.0.0.1:8443".into(),
            backend: "memory",
        };
        Node::start(store.clone(), opts).await.unwrap()
    }

    #[tokio::test]
    async fn a_domain_is_located_from_the_cache_and_afresh_and_follows_a_takeover() {
        let store: Arc<dyn ClusterStore> = Arc::new(MemStore::new());
        let a = node(&store, "a", "127.0.0.1:7001").await;
        let b = node(&store, "b", "127.0.0.2:7001").await;
        let on_a = NodeLocator::new(a.clone());
        let claim = ProxyClaim {
            name: "site".into(),
            publish_port: 0,
            domains: vec!["*.app.test".into()],
            udp: false,
        };
        let Registered::Done(reg) = b
            .register("c", [1; 16], std::slice::from_ref(&claim))
            .await
            .unwrap()
        else {
            panic!("refused")
        };
        // Afresh at once; from the cache once the watch has brought it.
        let fresh = on_a.locate_domain_fresh("*.app.test").await.unwrap();
        assert_eq!(
            (fresh.server_id.as_str(), fresh.peer_addr.as_str()),
            ("b", "127.0.0.2:7001")
        );
        assert_eq!(
            (fresh.name.as_str(), fresh.publish_port, fresh.local),
            ("*.app.test", 0, false)
        );
        assert_eq!(fresh.epoch, u64::try_from(reg.epoch).unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while on_a.locate_domain("*.app.test").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cache never saw it"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(on_a.locate_domain("*.app.test"), Some(fresh));
        assert_eq!(on_a.locate_domain("x.app.test"), None, "as registered only");
        assert_eq!(on_a.locate("*.app.test", 0), None, "a domain is no proxy");

        // The same client instance moves to A: the domain is A's, and local.
        let Registered::Done(_) = a.register("c", [1; 16], &[claim]).await.unwrap() else {
            panic!("refused")
        };
        let fresh = on_a.locate_domain_fresh("*.app.test").await.unwrap();
        assert!(fresh.local && fresh.server_id == "a", "{fresh:?}");
        assert_eq!(on_a.locate_domain_fresh("gone.test").await, None);
    }
}
