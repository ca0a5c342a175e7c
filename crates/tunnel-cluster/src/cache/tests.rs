#![allow(clippy::unwrap_used)]
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use futures::stream;

use super::*;
use crate::decide::{Claimant, ProxyClaim};
use crate::mem::MemStore;
use crate::registrar::{Registered, Registrar};
use crate::store::{Compare, LeaseId, Op, TxnOutcome};

/// Wraps a MemStore to force the awkward paths: a write between the list and the watch,
/// and a first watch that reports `Compacted`.
struct Awkward {
    inner: Arc<MemStore>,
    write_after_list: AtomicBool,
    compact_first_watch: AtomicBool,
    /// Ends the open watches (as a broken connection would).
    cut: Arc<tokio::sync::Notify>,
}

impl ClusterStore for Awkward {
    fn get_prefix(
        &self,
        prefix: &str,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, i64), ClusterError>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let listed = self.inner.get_prefix(&prefix).await?;
            if self.write_after_list.swap(false, Ordering::SeqCst) {
                let value = crate::records::encode(&server("late"));
                self.inner
                    .txn(
                        vec![],
                        vec![Op::Put {
                            key: "/t/server/late".into(),
                            value,
                            lease: 0,
                        }],
                    )
                    .await?;
            }
            Ok(listed)
        })
    }
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, ClusterError>> {
        self.inner.get(key)
    }
    fn txn(&self, c: Vec<Compare>, o: Vec<Op>) -> BoxFuture<'_, Result<TxnOutcome, ClusterError>> {
        self.inner.txn(c, o)
    }
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, ClusterError>> {
        self.inner.grant(ttl)
    }
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, ClusterError>> {
        self.inner.keep_alive(lease)
    }
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), ClusterError>> {
        self.inner.revoke(lease)
    }
    fn watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> BoxFuture<'_, Result<crate::WatchStream, ClusterError>> {
        if self.compact_first_watch.swap(false, Ordering::SeqCst) {
            let s = stream::iter([Err(ClusterError::Compacted { revision: from + 1 })]).boxed();
            return Box::pin(futures::future::ready(Ok(s)));
        }
        let cut = self.cut.clone();
        let inner = self.inner.watch(prefix, from);
        Box::pin(async move {
            let batches = inner.await?;
            let ended = async move { cut.notified().await };
            Ok(batches.take_until(Box::pin(ended)).boxed())
        })
    }
}

fn server(peer: &str) -> ServerRecord {
    ServerRecord {
        peer_addr: format!("{peer}:7001"),
        public_addr: format!("{peer}:7000"),
        version: "test".into(),
        draining: false,
    }
}

async fn caught_up(cache: &Cache, rev: i64) {
    tokio::time::timeout(Duration::from_secs(10), cache.caught_up(rev))
        .await
        .expect("the cache reaches the revision");
}

#[tokio::test]
async fn the_cache_follows_registrations_takeovers_and_lease_expiry() {
    let store = Arc::new(MemStore::new());
    let keys = Keys::new("/t/");
    let (cache, _task) = Cache::start(store.clone(), keys.clone());
    let r = Registrar::new(store.clone(), keys);
    let la = store.grant(Duration::from_secs(10)).await.unwrap();
    let lb = store.grant(Duration::from_secs(10)).await.unwrap();
    let who = |server: &str| Claimant {
        client_id: "c".into(),
        instance: [3; 16],
        server_id: server.into(),
    };
    let proxies = [ProxyClaim {
        name: "web".into(),
        publish_port: 80,
        domains: vec!["a.com".into()],
        udp: false,
    }];
    let Registered::Done(reg) = r.register(&who("A"), la, &proxies).await.unwrap() else {
        panic!()
    };
    caught_up(&cache, reg.epoch).await;
    assert_eq!(cache.client("c").unwrap().server_id, "A");
    assert_eq!(cache.proxy("web", 80).unwrap().epoch, reg.epoch);
    assert_eq!(cache.port(80).unwrap().name, "web");
    assert_eq!(cache.domain("a.com").unwrap().client_id, "c");
    assert!(cache.proxy("web", 81).is_none());

    let Registered::Done(moved) = r.register(&who("B"), lb, &proxies).await.unwrap() else {
        panic!()
    };
    caught_up(&cache, moved.epoch).await;
    assert_eq!(cache.port(80).unwrap().server_id, "B");
    assert_eq!(cache.client("c").unwrap().epoch, moved.epoch);

    store.advance(Duration::from_secs(11));
    caught_up(&cache, store.revision()).await;
    assert!(cache.client("c").is_none());
    assert!(cache.domain("a.com").is_none());
}

#[tokio::test]
async fn nothing_written_between_list_and_watch_is_missed_and_compaction_relists() {
    let inner = Arc::new(MemStore::new());
    inner
        .txn(
            vec![],
            vec![Op::Put {
                key: "/t/server/early".into(),
                value: crate::records::encode(&server("early")),
                lease: 0,
            }],
        )
        .await
        .unwrap();
    let store = Arc::new(Awkward {
        inner: inner.clone(),
        write_after_list: AtomicBool::new(true),
        compact_first_watch: AtomicBool::new(true),
        cut: Default::default(),
    });
    let (cache, _task) = Cache::start(store, Keys::new("/t/"));
    // The first watch fails with Compacted: the cache lists again (seeing "late" this
    // time) and watches from there.
    caught_up(&cache, inner.revision()).await;
    assert!(cache.server("early").is_some());
    assert_eq!(cache.server("late").unwrap().peer_addr, "late:7001");
    inner
        .txn(
            vec![],
            vec![Op::Delete {
                key: "/t/server/early".into(),
            }],
        )
        .await
        .unwrap();
    caught_up(&cache, inner.revision()).await;
    assert!(cache.server("early").is_none());
    assert_eq!(cache.servers().len(), 1);
}

#[tokio::test]
async fn a_write_between_list_and_watch_arrives_through_the_watch() {
    let inner = Arc::new(MemStore::new());
    let store = Arc::new(Awkward {
        inner: inner.clone(),
        write_after_list: AtomicBool::new(true),
        compact_first_watch: AtomicBool::new(false),
        cut: Default::default(),
    });
    let (cache, _task) = Cache::start(store, Keys::new("/t/"));
    caught_up(&cache, inner.revision()).await;
    assert!(cache.server("late").is_some());
}

#[tokio::test]
async fn foreign_and_malformed_keys_are_ignored() {
    let store = Arc::new(MemStore::new());
    let (cache, _task) = Cache::start(store.clone(), Keys::new("/t/"));
    store
        .txn(
            vec![],
            vec![
                Op::Put {
                    key: "/t/client/x".into(),
                    value: b"{not json".to_vec(),
                    lease: 0,
                },
                Op::Put {
                    key: "/t/weird/x".into(),
                    value: b"{}".to_vec(),
                    lease: 0,
                },
                Op::Put {
                    key: "/t/port/80".into(),
                    value: vec![b' '; 10_000],
                    lease: 0,
                },
            ],
        )
        .await
        .unwrap();
    caught_up(&cache, store.revision()).await;
    assert!(cache.client("x").is_none());
    assert!(cache.port(80).is_none());
}

#[tokio::test]
async fn the_cache_tells_which_client_ids_changed_and_everything_after_a_relist() {
    let inner = Arc::new(MemStore::new());
    let store = Arc::new(Awkward {
        inner: inner.clone(),
        write_after_list: AtomicBool::new(false),
        compact_first_watch: AtomicBool::new(false),
        cut: Default::default(),
    });
    let keys = Keys::new("/t/");
    let (cache, _task) = Cache::start(store.clone(), keys.clone());
    caught_up(&cache, inner.revision()).await;
    let r = Registrar::new(store.clone(), keys);
    let lease = inner.grant(Duration::from_secs(10)).await.unwrap();
    let who = |id: &str| Claimant {
        client_id: id.into(),
        instance: [1; 16],
        server_id: "A".into(),
    };
    let start = cache.revision();
    for id in ["a", "b", "c"] {
        let Registered::Done(reg) = r.register(&who(id), lease, &[]).await.unwrap() else {
            panic!()
        };
        caught_up(&cache, reg.epoch).await;
    }
    let mid = cache.revision();
    assert_eq!(
        cache.clients_changed_since(start),
        Changed::Clients(vec!["a".into(), "b".into(), "c".into()])
    );
    // A server key is no client's change.
    r.announce("A", &server("a"), lease).await.unwrap();
    let Registered::Done(reg) = r.register(&who("b"), lease, &[]).await.unwrap() else {
        panic!()
    };
    caught_up(&cache, reg.epoch).await;
    assert_eq!(
        cache.clients_changed_since(mid),
        Changed::Clients(vec!["b".into()])
    );
    // The lease ends: every client key goes, each one reported.
    inner.advance(Duration::from_secs(10));
    caught_up(&cache, inner.revision()).await;
    let now = cache.revision();
    let lease2 = inner.grant(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        cache.clients_changed_since(mid),
        Changed::Clients(vec!["b".into(), "a".into(), "c".into()])
    );
    assert_eq!(cache.clients_changed_since(now), Changed::Clients(vec![]));

    // A broken watch makes the cache list again: what happened meanwhile is not known key
    // by key.
    store.cut.notify_waiters();
    r.register(&who("d"), lease2, &[]).await.unwrap();
    let relisted = async {
        while cache.clients_changed_since(now) != Changed::Everything {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), relisted)
        .await
        .expect("the cache listed again");
    assert!(cache.client("d").is_some());
}

#[test]
fn placements_list_the_first_clients_by_id_and_count_all_per_server() {
    let mut view = View::default();
    for (id, server) in [("d", "b"), ("a", "a"), ("c", "b"), ("b", "b")] {
        let r = ClientRecord {
            instance: [0; 16],
            server_id: server.into(),
            epoch: 1,
        };
        view.clients.insert(id.into(), r);
    }
    let cache = Cache {
        view: Arc::new(RwLock::new(view)),
        revision: watch::channel(0).1,
        changes: Arc::new(Mutex::new(ChangeLog::new(changes::CAPACITY))),
    };
    let p = cache.placements(2);
    let pair = |c: &str, s: &str| (c.to_string(), s.to_string());
    assert_eq!(p.clients, [pair("a", "a"), pair("b", "b")]);
    assert_eq!(p.total, 4);
    assert_eq!((p.per_server["a"], p.per_server["b"]), (1, 3));
    assert_eq!(cache.placements(10).clients.len(), 4);
    assert!(cache.placements(0).clients.is_empty());
}
