#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tunnel_cluster::decide::ProxyClaim;
use tunnel_cluster::registrar::{LeaseState, Registered};
use tunnel_cluster::{ClusterStore, MemStore};

use super::{Node, NodeOptions};

const TTL: Duration = Duration::from_secs(10);

fn opts(id: &str, peer: &str) -> NodeOptions {
    NodeOptions {
        server_id: id.to_string(),
        prefix: "/t/".to_string(),
        lease_ttl: TTL,
        peer_addr: peer.to_string(),
        public_addr: "127.0.0.1:8443".to_string(),
        backend: "memory",
    }
}

fn claim(name: &str, port: u16) -> ProxyClaim {
    ProxyClaim {
        name: name.to_string(),
        publish_port: port,
        domains: Vec::new(),
        udp: false,
    }
}

async fn two() -> (Arc<MemStore>, Arc<Node>, Arc<Node>) {
    let store = Arc::new(MemStore::new());
    let dyn_store: Arc<dyn ClusterStore> = store.clone();
    let a = Node::start(dyn_store.clone(), opts("a", "127.0.0.1:7001"))
        .await
        .unwrap();
    let b = Node::start(dyn_store, opts("b", "127.0.0.2:7001"))
        .await
        .unwrap();
    (store, a, b)
}

/// Waits (bounded) until `f` holds on the node's cache.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_node_joins_and_sees_the_other_servers() {
    let (_store, a, b) = two().await;
    until("a sees b", || a.cache().server("b").is_some()).await;
    let s = a.stats();
    assert_eq!(s.server_id, "a");
    assert_eq!(s.lease, "alive");
    let ids: Vec<_> = s.servers.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(s.servers[1].peer_addr, "127.0.0.2:7001");
    assert!(b.stats().registry_revision > 0);
}

#[tokio::test]
async fn locate_finds_the_holder_and_a_takeover_moves_it() {
    let (_store, a, b) = two().await;
    let me = [1; 16];
    let Registered::Done(on_a) = a.register("c1", me, &[claim("web", 8080)]).await.unwrap() else {
        panic!("refused")
    };
    until("b sees web", || b.locate("web", 8080).is_some()).await;
    let at = b.locate("web", 8080).unwrap();
    assert_eq!(at.server_id, "a");
    assert_eq!(at.peer_addr, "127.0.0.1:7001".parse().unwrap());
    assert!(!at.local);
    assert_eq!(at.epoch, on_a.epoch);
    assert!(a.locate("web", 8080).unwrap().local);
    assert_eq!(b.locate("web", 8081), None);

    // Another instance is refused everywhere; the same one moves to b at once.
    let other = b.register("c1", [2; 16], &[claim("web", 8080)]).await;
    assert!(matches!(other, Ok(Registered::IdInUse { server_id }) if server_id == "a"));
    let Registered::Done(on_b) = b.register("c1", me, &[claim("web", 8080)]).await.unwrap() else {
        panic!("refused")
    };
    assert!(on_b.epoch > on_a.epoch);
    until("a sees the move", || {
        a.locate("web", 8080).is_some_and(|l| l.server_id == "b")
    })
    .await;
    let fresh = a.locate_fresh("web", 8080).await.unwrap().unwrap();
    assert_eq!((fresh.server_id.as_str(), fresh.epoch), ("b", on_b.epoch));
    // a's late release of its old registration deletes nothing of b's.
    assert_eq!(a.release(&on_a.held).await.unwrap(), 0);
    assert!(a.locate_fresh("web", 8080).await.unwrap().is_some());
}

#[tokio::test]
async fn published_ports_follow_the_registry() {
    let (_store, a, b) = two().await;
    let mut changes = b.published_ports_changes();
    assert!(b.published_ports().is_empty());
    let Registered::Done(reg) = a
        .register("c1", [1; 16], &[claim("web", 8080), claim("ssh", 0)])
        .await
        .unwrap()
    else {
        panic!("refused")
    };
    tokio::time::timeout(Duration::from_secs(5), changes.changed())
        .await
        .unwrap()
        .unwrap();
    // The private proxy publishes nothing.
    let web = super::PublishedPort {
        port: 8080,
        name: "web".into(),
        udp: false,
    };
    assert_eq!(b.published_ports(), vec![web]);
    assert_eq!(a.release(&reg.held).await.unwrap(), reg.held.len());
    until("the port is gone", || b.published_ports().is_empty()).await;
}

#[tokio::test]
async fn draining_shows_and_a_revoke_removes_every_key_at_once() {
    let (store, a, b) = two().await;
    a.register("c1", [1; 16], &[claim("web", 8080)])
        .await
        .unwrap();
    a.set_draining().await.unwrap();
    until("b sees a draining", || {
        b.stats().servers.iter().any(|s| s.id == "a" && s.draining)
    })
    .await;
    let lease = a.lease();
    assert!(!store.lease_keys(lease).is_empty());
    a.revoke().await.unwrap();
    assert!(store.lease_keys(lease).is_empty());
    until("a is gone from b's view", || {
        b.cache().server("a").is_none() && b.locate("web", 8080).is_none()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_is_replaced_by_a_new_one_with_the_server_record() {
    let (store, a, b) = two().await;
    let old = a.lease();
    let mut states = a.lease_states();
    // a's renewals stop, as if it had been frozen past its TTL.
    a.stop_renewing();
    store.advance(TTL + Duration::from_secs(1));
    until("a is gone", || b.cache().server("a").is_none()).await;
    a.renew_lease().await.unwrap();
    assert_ne!(a.lease(), old);
    assert_eq!(*states.borrow_and_update(), LeaseState::Alive);
    until("a is back", || b.cache().server("a").is_some()).await;
}

const CLUSTER_TOML: &str = r#"
auth_key = "a long random client key"
[cluster]
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
server_id = "a"
peer_bind = "127.0.0.1:7001"
cluster_key = "another long random key"
"#;

#[test]
fn the_cluster_table_parses_and_its_problems_are_named() {
    let cfg = crate::ServerConfig::from_toml(CLUSTER_TOML).unwrap();
    let c = cfg.cluster.as_ref().unwrap();
    assert_eq!(c.server_id.as_deref(), Some("a"));
    let problems = cfg.problems();
    let etcd_missing = problems
        .iter()
        .any(|p| p.field == "cluster.backend" && p.to_string().contains("--features etcd"));
    assert_eq!(etcd_missing, !cfg!(feature = "etcd"), "{problems:?}");
    assert!(
        problems.iter().all(|p| p.field == "cluster.backend"),
        "{problems:?}"
    );

    let same_key = CLUSTER_TOML.replace("another long random key", "a long random client key");
    let problems = crate::ServerConfig::from_toml(&same_key)
        .unwrap()
        .problems();
    assert!(
        problems.iter().any(|p| p.field == "cluster.cluster_key"),
        "{problems:?}"
    );
    // No cluster, or backend "none": nothing to check, single-server mode.
    let none = "auth_key = \"a long random client key\"\n[cluster]\nbackend = \"none\"\n";
    assert!(crate::ServerConfig::from_toml(none)
        .unwrap()
        .problems()
        .is_empty());
}

#[test]
fn an_unknown_cluster_key_is_reported_with_its_line() {
    let bad = CLUSTER_TOML.replace("server_id = \"a\"", "server_idd = \"a\"");
    let err = crate::ServerConfig::from_toml(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("server_idd") && err.contains("6:1: cluster.server_idd"),
        "{err}"
    );
}

#[tokio::test]
async fn a_single_server_shows_no_cluster() {
    let cfg = crate::ServerConfig::default()
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_stats_bind(None)
        .with_auth_key("a long random key");
    let server = crate::start(cfg).await.unwrap();
    assert!(server.shared.cluster.is_none());
    let snap = crate::metrics::snapshot(&server.shared);
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["cluster"], serde_json::Value::Null);
    let page = crate::metrics::prometheus(&server.shared, &snap);
    assert!(!page.contains("tunnel_cluster_"), "{page}");
    server.join().await;
}
