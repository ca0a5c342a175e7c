#![allow(clippy::unwrap_used)]
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use futures::StreamExt;
use proptest::prelude::*;

use super::*;
use crate::decide::Refusal;
use crate::mem::MemStore;
use crate::store::{TxnOutcome, WatchEvent};

/// A store that yields a pseudo-random number of times before each call, so that two
/// registrations joined in one task interleave differently for each seed.
struct Jitter {
    inner: MemStore,
    rng: AtomicU64,
}

impl Jitter {
    fn new(seed: u64, max_txn_ops: usize) -> Self {
        Jitter {
            inner: MemStore::with_max_txn_ops(max_txn_ops),
            rng: AtomicU64::new(seed | 1),
        }
    }

    async fn pause(&self) {
        // xorshift64: enough to vary the interleaving, and reproducible from the seed.
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        for _ in 0..x % 4 {
            tokio::task::yield_now().await;
        }
    }
}

impl ClusterStore for Jitter {
    fn get_prefix(
        &self,
        prefix: &str,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, i64), ClusterError>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            self.pause().await;
            self.inner.get_prefix(&prefix).await
        })
    }
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, ClusterError>> {
        let key = key.to_string();
        Box::pin(async move {
            self.pause().await;
            self.inner.get(&key).await
        })
    }
    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, ClusterError>> {
        Box::pin(async move {
            self.pause().await;
            self.inner.txn(compares, ops).await
        })
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
        from_revision: i64,
    ) -> BoxFuture<'_, Result<crate::WatchStream, ClusterError>> {
        self.inner.watch(prefix, from_revision)
    }
    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
}

fn who(id: &str, instance: u8, server: &str) -> Claimant {
    Claimant {
        client_id: id.into(),
        instance: [instance; 16],
        server_id: server.into(),
    }
}

fn proxy(name: &str, port: u16, domains: &[&str]) -> ProxyClaim {
    ProxyClaim {
        name: name.into(),
        publish_port: port,
        domains: domains.iter().map(|d| d.to_string()).collect(),
        udp: false,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn done(r: Registered) -> Registration {
    match r {
        Registered::Done(r) => r,
        other => panic!("expected a registration, got {other:?}"),
    }
}

/// Which client id each registry key holds, read back from the store.
async fn owners(store: &MemStore) -> HashMap<String, String> {
    let keys = Keys::new("/t/");
    let (kvs, _) = store.get_prefix("/t/").await.unwrap();
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), held(&keys, kv)?.owner.client_id)))
        .collect()
}

use std::collections::HashMap;

#[tokio::test]
async fn register_then_take_over_from_another_server_then_refuse_another_instance() {
    let store = Arc::new(MemStore::new());
    let a = Registrar::new(store.clone(), Keys::new("/t/"));
    let b = Registrar::new(store.clone(), Keys::new("/t/"));
    let la = store.grant(Duration::from_secs(10)).await.unwrap();
    let lb = store.grant(Duration::from_secs(10)).await.unwrap();
    let proxies = [proxy("web", 80, &["a.com"]), proxy("db", 0, &[])];

    let first = done(a.register(&who("c", 1, "A"), la, &proxies).await.unwrap());
    assert_eq!(first.client, Verdict::Take);
    assert_eq!(first.held.len(), 5);
    assert!(first.held.iter().all(|(_, rev)| *rev == first.epoch));

    // The same instance reconnects through B: takes everything over at once, no waiting.
    let again = done(b.register(&who("c", 1, "B"), lb, &proxies).await.unwrap());
    assert_eq!(again.client, Verdict::TakeOver);
    assert!(again.epoch > first.epoch);
    assert_eq!(store.lease_keys(lb).len(), 5);
    assert!(store.lease_keys(la).is_empty());
    let rec: ClientRecord =
        records::decode(&store.get("/t/client/c").await.unwrap().unwrap()).unwrap();
    assert_eq!((rec.server_id.as_str(), rec.epoch), ("B", again.epoch));

    // Another instance of the id is refused, on any server, and writes nothing.
    let rev = store.revision();
    let refused = a.register(&who("c", 2, "A"), la, &proxies).await.unwrap();
    assert_eq!(
        refused,
        Registered::IdInUse {
            server_id: "B".into()
        }
    );
    assert_eq!(store.revision(), rev);

    // Another client: its proxies clash, its own id is fine.
    let other = done(
        a.register(
            &who("d", 1, "A"),
            la,
            &[proxy("web", 80, &[]), proxy("x", 81, &["a.com"])],
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        other.proxies,
        vec![
            Verdict::Refused(Refusal::NameTaken),
            Verdict::Refused(Refusal::DomainTaken("a.com".into()))
        ]
    );
}

#[tokio::test]
async fn release_after_a_takeover_deletes_nothing_of_the_newer_owner() {
    let store = Arc::new(MemStore::new());
    let a = Registrar::new(store.clone(), Keys::new("/t/"));
    let b = Registrar::new(store.clone(), Keys::new("/t/"));
    let la = store.grant(Duration::from_secs(10)).await.unwrap();
    let lb = store.grant(Duration::from_secs(10)).await.unwrap();
    let old = done(
        a.register(
            &who("c", 1, "A"),
            la,
            &[proxy("web", 80, &[]), proxy("gone", 0, &[])],
        )
        .await
        .unwrap(),
    );
    // The client moved to B with one proxy fewer; A is slow to notice.
    let new = done(
        b.register(&who("c", 1, "B"), lb, &[proxy("web", 80, &[])])
            .await
            .unwrap(),
    );
    let deleted = a.release(&old.held).await.unwrap();
    // Only the proxy B did not take over was A's to delete.
    assert_eq!(deleted, 1);
    let mut left: Vec<String> = owners(&store).await.into_keys().collect();
    left.sort();
    assert_eq!(left, ["/t/client/c", "/t/port/80", "/t/proxy/web/80"]);
    assert_eq!(store.lease_keys(lb).len(), 3);
    // B's own release removes everything, in one transaction.
    let rev = store.revision();
    assert_eq!(b.release(&new.held).await.unwrap(), 3);
    assert_eq!(store.revision(), rev + 1);
    assert!(owners(&store).await.is_empty());
}

#[tokio::test]
async fn many_proxies_register_in_batches_with_one_epoch() {
    let store = Arc::new(MemStore::with_max_txn_ops(7));
    let r = Registrar::new(store.clone(), Keys::new("/t/"));
    let lease = store.grant(Duration::from_secs(10)).await.unwrap();
    let proxies: Vec<ProxyClaim> = (0..20)
        .map(|i| proxy(&format!("p{i}"), 2000 + i, &[]))
        .collect();
    let reg = done(
        r.register(&who("c", 1, "A"), lease, &proxies)
            .await
            .unwrap(),
    );
    assert!(reg.proxies.iter().all(Verdict::granted));
    assert_eq!(reg.held.len(), 41);
    assert!(store.revision() > reg.epoch + 5, "several batches");
    let (kvs, _) = store.get_prefix("/t/proxy/").await.unwrap();
    assert_eq!(kvs.len(), 20);
    for kv in &kvs {
        let p: ProxyRecord = records::decode(kv).unwrap();
        assert_eq!(p.epoch, reg.epoch, "{}", kv.key);
    }
    // Release in chunks within the limit too.
    assert_eq!(r.release(&reg.held).await.unwrap(), 41);
    assert!(store.get_prefix("/t/").await.unwrap().0.is_empty());
}

#[tokio::test]
async fn lease_expiry_removes_all_keys_of_a_server_in_one_revision() {
    let store = Arc::new(MemStore::new());
    let r = Registrar::new(store.clone(), Keys::new("/t/"));
    let lease = store.grant(Duration::from_secs(10)).await.unwrap();
    for c in ["a", "b", "c"] {
        done(
            r.register(
                &who(c, 1, "A"),
                lease,
                &[proxy(&format!("{c}-web"), 0, &[&format!("{c}.com")])],
            )
            .await
            .unwrap(),
        );
    }
    let mut w = crate::store::events(store.watch("/t/", store.revision() + 1).await.unwrap());
    store.advance(Duration::from_secs(9));
    assert_eq!(owners(&store).await.len(), 9);
    store.advance(Duration::from_secs(1));
    assert!(owners(&store).await.is_empty());
    let mut revs = Vec::new();
    for _ in 0..9 {
        match w.next().await.unwrap().unwrap() {
            WatchEvent::Delete { mod_revision, .. } => revs.push(mod_revision),
            other => panic!("{other:?}"),
        }
    }
    revs.dedup();
    assert_eq!(revs, [store.revision()]);
    // A new login through the dead lease fails; the server must take a new lease.
    let err = r.register(&who("a", 1, "A"), lease, &[]).await.unwrap_err();
    assert!(matches!(err, ClusterError::LeaseGone(_)));
}

#[tokio::test]
async fn a_store_outage_is_an_error_not_a_refusal() {
    let store = Arc::new(MemStore::new());
    let r = Registrar::new(store.clone(), Keys::new("/t/"));
    let lease = store.grant(Duration::from_secs(10)).await.unwrap();
    store.set_down(true);
    let err = r.register(&who("a", 1, "A"), lease, &[]).await.unwrap_err();
    assert!(matches!(err, ClusterError::Unavailable(_)));
}

#[tokio::test(start_paused = true)]
async fn the_lease_keeper_renews_and_reports_loss() {
    let store = Arc::new(MemStore::new());
    let ttl = Duration::from_secs(9);
    let keeper = LeaseKeeper::start(store.clone(), ttl).await.unwrap();
    let mut state = keeper.state();
    // Tokio's paused clock and the store's manual clock move together, 1 s at a time.
    let tick = |n: u32| {
        let store = store.clone();
        async move {
            for _ in 0..n {
                tokio::time::advance(Duration::from_secs(1)).await;
                store.advance(Duration::from_secs(1));
                tokio::task::yield_now().await;
            }
        }
    };
    tick(60).await;
    assert_eq!(*state.borrow(), LeaseState::Alive);
    assert!(
        store.keep_alive(keeper.lease()).await.is_ok(),
        "renewed all along"
    );

    // The store goes away: unconfirmed after the TTL, while the lease (by the store's clock)
    // expires.
    store.set_down(true);
    tick(12).await;
    assert_eq!(*state.borrow_and_update(), LeaseState::Unconfirmed);
    store.set_down(false);
    tick(4).await;
    assert_eq!(*state.borrow(), LeaseState::Lost);
}

#[tokio::test(start_paused = true)]
async fn announce_then_revoke_removes_the_server_and_its_clients() {
    let store = Arc::new(MemStore::new());
    let r = Registrar::new(store.clone(), Keys::new("/t/"));
    let keeper = LeaseKeeper::start(store.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    let record = ServerRecord {
        peer_addr: "127.0.0.1:7001".into(),
        public_addr: "127.0.0.1:7000".into(),
        version: "0".into(),
        draining: false,
    };
    r.announce("A", &record, keeper.lease()).await.unwrap();
    done(
        r.register(&who("c", 1, "A"), keeper.lease(), &[proxy("web", 0, &[])])
            .await
            .unwrap(),
    );
    assert_eq!(owners(&store).await.len(), 2, "the client and its proxy");
    assert!(store.get("/t/server/A").await.unwrap().is_some());
    keeper.revoke(&*store).await.unwrap();
    assert!(store.get_prefix("/t/").await.unwrap().0.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two servers register two different clients wanting overlapping names, ports and
    /// domains, interleaved at random: every key ends with one owner, the owner is the one
    /// whose registration granted it, and no key is granted to both.
    #[test]
    fn racing_servers_never_both_win(seed in any::<u64>(), max in 3usize..10, overlap in 0usize..4) {
        let rt = rt();
        rt.block_on(async {
            let store = Arc::new(Jitter::new(seed, max));
            let a = Registrar::new(store.clone(), Keys::new("/t/"));
            let b = Registrar::new(store.clone(), Keys::new("/t/"));
            let la = store.grant(Duration::from_secs(10)).await.unwrap();
            let lb = store.grant(Duration::from_secs(10)).await.unwrap();
            let all = [
                proxy("web", 80, &["w.com"]),
                proxy("api", 81, &[]),
                proxy("db", 0, &["d.com"]),
                proxy("mq", 82, &[]),
            ];
            let mine: Vec<ProxyClaim> = all.to_vec();
            let theirs: Vec<ProxyClaim> = all[4 - overlap..].iter().cloned()
                .chain([proxy("own", 90, &["own.com"])]).collect();
            let (wa, wb) = (who("x", 1, "A"), who("y", 2, "B"));
            let (ra, rb) = futures::join!(a.register(&wa, la, &mine), b.register(&wb, lb, &theirs));
            let (ra, rb) = (done(ra.unwrap()), done(rb.unwrap()));
            let granted = |reg: &Registration, claims: &[ProxyClaim]| -> Vec<String> {
                claims.iter().zip(&reg.proxies).filter(|(_, v)| v.granted()).map(|(p, _)| p.name.clone()).collect()
            };
            let (ga, gb) = (granted(&ra, &mine), granted(&rb, &theirs));
            for name in &ga {
                assert!(!gb.contains(name), "{name} granted to both");
            }
            let owners = owners(&store.inner).await;
            for (key, rev) in &ra.held {
                assert_eq!(owners.get(key).map(String::as_str), Some("x"), "{key} at {rev}");
            }
            for (key, _) in &rb.held {
                assert_eq!(owners.get(key).map(String::as_str), Some("y"), "{key}");
            }
            // Every stored key is accounted for by exactly one registration.
            assert_eq!(owners.len(), ra.held.len() + rb.held.len());
        });
    }

    /// Two instances of one client id racing through two servers: exactly one holds the id.
    #[test]
    fn racing_instances_of_one_id_never_both_win(seed in any::<u64>()) {
        let rt = rt();
        rt.block_on(async {
            let store = Arc::new(Jitter::new(seed, 128));
            let a = Registrar::new(store.clone(), Keys::new("/t/"));
            let b = Registrar::new(store.clone(), Keys::new("/t/"));
            let la = store.grant(Duration::from_secs(10)).await.unwrap();
            let lb = store.grant(Duration::from_secs(10)).await.unwrap();
            let p = [proxy("web", 80, &[])];
            let (wa, wb) = (who("x", 1, "A"), who("x", 2, "B"));
            let (ra, rb) = futures::join!(a.register(&wa, la, &p), b.register(&wb, lb, &p));
            let wins = [ra.unwrap(), rb.unwrap()]
                .iter()
                .filter(|r| matches!(r, Registered::Done(_)))
                .count();
            assert_eq!(wins, 1);
        });
    }
}
