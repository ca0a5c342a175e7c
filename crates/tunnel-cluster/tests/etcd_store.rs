//! The etcd store against a real etcd on loopback: the store contract (the same as the
//! in-memory store's), leases and their expiry, watches and compaction, a frozen etcd, auth
//! errors, and the latency figures of one transaction and one lease renewal.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tunnel_cluster::decide::{Claimant, ProxyClaim};
use tunnel_cluster::etcd::{EtcdOptions, EtcdStore};
use tunnel_cluster::registrar::{LeaseKeeper, LeaseState, Registered};
use tunnel_cluster::{Cache, ClusterError, ClusterStore, Compare, Keys, Op, Registrar, WatchEvent};
use tunnel_testkit::{eventually, Etcd};

/// A store on `etcd` with a short request timeout, so failures show fast.
async fn store(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(&options(etcd)).await.unwrap()
}

fn options(etcd: &Etcd) -> EtcdOptions {
    let mut o = EtcdOptions::new([etcd.endpoint()]);
    o.request_timeout = Duration::from_secs(2);
    o
}

fn put(key: &str, value: &str, lease: i64) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease,
    }
}

fn at(key: &str, mod_revision: i64) -> Compare {
    Compare::ModRevision {
        key: key.into(),
        mod_revision,
    }
}

/// The error below `Unavailable`'s wrapper, as text.
fn unwrapped(e: &ClusterError) -> String {
    match e {
        ClusterError::Unavailable(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

/// The crate's conformance check, which `MemStore` passes too: both stores keep one contract.
#[tokio::test]
async fn the_etcd_store_passes_the_store_conformance_check() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    tunnel_cluster::conformance::check(&s, "/conformance/")
        .await
        .unwrap();
}

#[tokio::test]
async fn txn_compares_on_absent_and_on_mod_revision() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    // Absent (0) holds for a new key: the put applies, its revision is the epoch.
    let first = s
        .txn(vec![at("/t/a", 0)], vec![put("/t/a", "1", 0)])
        .await
        .unwrap();
    assert!(first.succeeded);
    let a = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a.value.as_slice(), a.mod_revision),
        (&b"1"[..], first.revision)
    );
    assert_eq!(a.create_revision, first.revision);
    // Absent no longer holds: nothing applies, and the revision does not move.
    let lost = s
        .txn(vec![at("/t/a", 0)], vec![put("/t/a", "2", 0)])
        .await
        .unwrap();
    assert!(!lost.succeeded);
    assert_eq!(lost.revision, first.revision);
    assert_eq!(s.get("/t/a").await.unwrap().unwrap().value, b"1");
    // The seen revision holds: update and a second key, atomically.
    let second = s
        .txn(
            vec![at("/t/a", first.revision), at("/t/b", 0)],
            vec![put("/t/a", "3", 0), put("/t/b", "x", 0)],
        )
        .await
        .unwrap();
    assert!(second.succeeded && second.revision == first.revision + 1);
    // A stale revision fails even with another compare holding; a guarded delete applies.
    let stale = s
        .txn(
            vec![at("/t/a", first.revision)],
            vec![Op::Delete { key: "/t/b".into() }],
        )
        .await
        .unwrap();
    assert!(!stale.succeeded);
    let gone = s
        .txn(
            vec![at("/t/b", second.revision)],
            vec![Op::Delete { key: "/t/b".into() }],
        )
        .await
        .unwrap();
    assert!(gone.succeeded);
    assert_eq!(s.get("/t/b").await.unwrap(), None);
    // A key written twice in one transaction is named (etcd would refuse it unnamed).
    let twice = s
        .txn(
            vec![],
            vec![put("/t/d", "1", 0), Op::Delete { key: "/t/d".into() }],
        )
        .await;
    assert!(
        matches!(&twice, Err(ClusterError::DuplicateKey { key }) if key == "/t/d"),
        "{twice:?}"
    );
    let (kvs, revision) = s.get_prefix("/t/").await.unwrap();
    assert_eq!(revision, gone.revision);
    assert_eq!(
        kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(),
        ["/t/a"]
    );
}

#[tokio::test]
async fn get_prefix_reads_every_page_at_one_revision_and_nothing_outside() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    // More keys than one page (1,000), in transactions of the op limit.
    let keys: Vec<String> = (0..2_100).map(|i| format!("/p/k{i:05}")).collect();
    for chunk in keys.chunks(s.max_txn_ops()) {
        let ops = chunk.iter().map(|k| put(k, "v", 0)).collect();
        assert!(s.txn(vec![], ops).await.unwrap().succeeded);
    }
    // Neighbours that share a textual prefix but are outside "/p/".
    let last = s
        .txn(vec![], vec![put("/p0", "out", 0), put("/q/k", "out", 0)])
        .await
        .unwrap();
    let (kvs, revision) = s.get_prefix("/p/").await.unwrap();
    assert_eq!(revision, last.revision);
    let got: Vec<&str> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(got, keys.iter().map(String::as_str).collect::<Vec<_>>());
}

#[tokio::test]
async fn lease_expiry_deletes_all_its_keys_and_only_them() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    let lease = s.grant(Duration::from_secs(2)).await.unwrap();
    let ops = (0..10)
        .map(|i| put(&format!("/l/{i}"), "v", lease))
        .collect();
    assert!(s.txn(vec![], ops).await.unwrap().succeeded);
    assert!(
        s.txn(vec![], vec![put("/l/keep", "v", 0)])
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(s.get("/l/3").await.unwrap().unwrap().lease, lease);
    let granted = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the lease's keys to expire",
        || async { s.get_prefix("/l/").await.unwrap().0.len() == 1 },
    )
    .await;
    // etcd's lessor checks expiry every 500 ms; never before the TTL.
    assert!(
        granted.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        granted.elapsed()
    );
    assert!(matches!(s.keep_alive(lease).await, Err(ClusterError::LeaseGone(l)) if l == lease));
    // Writing with the dead lease is refused as LeaseGone, not as an opaque etcd error.
    let refused = s.txn(vec![], vec![put("/l/late", "v", lease)]).await;
    assert!(
        matches!(refused, Err(ClusterError::LeaseGone(l)) if l == lease),
        "{refused:?}"
    );
}

#[tokio::test]
async fn keep_alive_renews_and_revoke_deletes_the_keys_at_once() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    let lease = s.grant(Duration::from_secs(2)).await.unwrap();
    assert!(
        s.txn(
            vec![],
            vec![put("/r/a", "v", lease), put("/r/b", "v", lease)]
        )
        .await
        .unwrap()
        .succeeded
    );
    // Renewed every 500 ms for twice the TTL: the keys stay.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(s.keep_alive(lease).await.unwrap(), Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(s.get_prefix("/r/").await.unwrap().0.len(), 2);
    let (_, before) = s.get_prefix("/r/").await.unwrap();
    s.revoke(lease).await.unwrap();
    let (kvs, after) = s.get_prefix("/r/").await.unwrap();
    assert!(kvs.is_empty());
    // Both keys went in one revision.
    assert_eq!(after, before + 1);
    assert!(matches!(s.revoke(lease).await, Err(ClusterError::LeaseGone(l)) if l == lease));
    assert!(matches!(s.keep_alive(lease).await, Err(ClusterError::LeaseGone(l)) if l == lease));
}

#[tokio::test]
async fn watch_from_a_revision_sees_puts_and_deletes_in_order() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    let lease = s.grant(Duration::from_secs(30)).await.unwrap();
    // History before the watch starts, which it must replay from `from`.
    let r1 = s
        .txn(vec![], vec![put("/w/a", "1", 0)])
        .await
        .unwrap()
        .revision;
    let r2 = s
        .txn(vec![], vec![put("/w/b", "2", lease), put("/other", "x", 0)])
        .await
        .unwrap()
        .revision;
    let mut events = tunnel_cluster::store::events(s.watch("/w/", r1).await.unwrap());
    let r3 = s
        .txn(vec![], vec![Op::Delete { key: "/w/a".into() }])
        .await
        .unwrap()
        .revision;
    s.revoke(lease).await.unwrap();
    let r4 = r3 + 1;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("the watch delivers within 5 s")
            .expect("the watch does not end")
            .unwrap();
        seen.push(match ev {
            WatchEvent::Put(kv) => (
                format!("put {}={}", kv.key, String::from_utf8_lossy(&kv.value)),
                kv.mod_revision,
            ),
            WatchEvent::Delete { key, mod_revision } => (format!("delete {key}"), mod_revision),
        });
    }
    let want = [
        ("put /w/a=1".to_string(), r1),
        ("put /w/b=2".to_string(), r2),
        ("delete /w/a".to_string(), r3),
        ("delete /w/b".to_string(), r4),
    ];
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_ends_with_compacted() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    let old = s
        .txn(vec![], vec![put("/c/a", "1", 0)])
        .await
        .unwrap()
        .revision;
    let now = s
        .txn(vec![], vec![put("/c/a", "2", 0)])
        .await
        .unwrap()
        .revision;
    s.client().clone().compact(now, None).await.unwrap();
    let mut events = tunnel_cluster::store::events(s.watch("/c/", old).await.unwrap());
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(
        matches!(end, Some(Err(ClusterError::Compacted { revision })) if revision == now),
        "{end:?}"
    );
    assert!(
        events.next().await.is_none(),
        "the stream ends after Compacted"
    );
    // From the compaction revision on, the history is there.
    let mut events = tunnel_cluster::store::events(s.watch("/c/", now).await.unwrap());
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(WatchEvent::Put(kv))) if kv.mod_revision == now));
}

#[tokio::test]
async fn a_frozen_etcd_fails_calls_in_time_naming_the_endpoint_and_they_work_after_resume() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    let lease = s.grant(Duration::from_secs(60)).await.unwrap();
    let mut events = tunnel_cluster::store::events(s.watch("/f/", 0).await.unwrap());
    etcd.pause().await;
    for (what, call) in [
        ("get", s.get("/f/a").map(|r| r.map(drop)).boxed()),
        (
            "txn",
            s.txn(vec![], vec![put("/f/a", "1", lease)])
                .map(|r| r.map(drop))
                .boxed(),
        ),
        (
            "keep-alive",
            s.keep_alive(lease).map(|r| r.map(drop)).boxed(),
        ),
        (
            "grant",
            s.grant(Duration::from_secs(5)).map(|r| r.map(drop)).boxed(),
        ),
    ] {
        let started = Instant::now();
        // The outer bound only keeps a broken store from hanging the test.
        let err = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .unwrap_or_else(|_| panic!("{what} hung on a frozen etcd"))
            .expect_err(what);
        let took = started.elapsed();
        // The request timeout is 2 s: bounded, with some slack for a loaded machine.
        assert!(took < Duration::from_secs(4), "{what} took {took:?}");
        assert!(
            matches!(err, ClusterError::Unavailable(_)),
            "{what}: {err:?}"
        );
        let text = unwrapped(&err);
        assert!(
            text.contains(&etcd.endpoint()) && text.contains("did not answer"),
            "{what}: {text}"
        );
    }
    etcd.resume();
    // The same store works again, without a reconnect by the caller.
    let ok = s
        .txn(vec![], vec![put("/f/a", "after", lease)])
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(s.keep_alive(lease).await.unwrap(), Duration::from_secs(60));
    // The watch opened before the freeze still delivers (or ended with an error, never
    // silently): the put made after the thaw arrives. Before it, maybe the put whose txn
    // timed out: etcd had it in its socket and may apply it on waking, so a timed-out write
    // is undecided, as with any store, and the registry re-reads before deciding again.
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap();
        match ev {
            Some(Ok(WatchEvent::Put(kv))) if kv.value == b"after" => break,
            Some(Ok(WatchEvent::Put(kv))) if kv.value == b"1" => continue,
            Some(Err(e)) => {
                assert!(matches!(e, ClusterError::Unavailable(_)), "{e:?}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_watch_on_a_frozen_etcd_ends_with_an_error_instead_of_silence() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let mut o = options(&etcd);
    // etcd's least ping interval (--grpc-keepalive-min-time).
    o.keepalive_interval = Duration::from_secs(5);
    let s = EtcdStore::connect(&o).await.unwrap();
    let mut events = tunnel_cluster::store::events(s.watch("/z/", 0).await.unwrap());
    etcd.pause().await;
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(15), events.next())
        .await
        .expect("the watch ends within ping interval + timeout");
    etcd.resume();
    assert!(
        matches!(end, Some(Err(ClusterError::Unavailable(_)))),
        "{end:?}"
    );
    eprintln!("frozen etcd: watch ended after {:?}", started.elapsed());
}

#[tokio::test]
async fn an_oversized_txn_is_too_many_ops_before_and_at_etcd() {
    if !tunnel_testkit::need("etcd") {
        return;
    }
    // etcd allows 4 ops; the store believes 128.
    let etcd = Etcd::start_with(&["--max-txn-ops=4"]).await;
    let s = store(&etcd).await;
    let five: Vec<Op> = (0..5).map(|i| put(&format!("/o/{i}"), "v", 0)).collect();
    let at_etcd = s.txn(vec![], five.clone()).await;
    assert!(
        matches!(
            at_etcd,
            Err(ClusterError::TooManyOps { ops: 5, limit: 128 })
        ),
        "{at_etcd:?}"
    );
    let mut o = options(&etcd);
    o.max_txn_ops = 4;
    let s = EtcdStore::connect(&o).await.unwrap();
    assert_eq!(s.max_txn_ops(), 4);
    let local = s.txn(vec![], five).await;
    assert!(
        matches!(local, Err(ClusterError::TooManyOps { ops: 5, limit: 4 })),
        "{local:?}"
    );
}

#[tokio::test]
async fn connecting_to_nothing_fails_in_time_naming_the_endpoint() {
    let (_hold, port) = tunnel_testkit::refusing_port();
    let mut o = EtcdOptions::new([format!("http://127.0.0.1:{port}")]);
    o.request_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = EtcdStore::connect(&o).await.expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, ClusterError::Unavailable(_)), "{err:?}");
    assert!(
        unwrapped(&err).contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn etcd_with_auth_takes_the_right_password_and_names_the_settings_for_a_wrong_one() {
    if !tunnel_testkit::need("etcd") {
        return;
    }
    // Login tokens that expire after 1 s, so the test sees one renewed.
    let etcd = Etcd::start_with(&["--auth-token-ttl=1"]).await;
    let mut root = store(&etcd).await.client().clone();
    root.user_add("root", "s3cret", None).await.unwrap();
    root.user_grant_role("root", "root").await.unwrap();
    // The registry's user may touch its prefix only.
    root.role_add("tls-tunnel").await.unwrap();
    let mine = etcd_client::Permission::read_write("/mine/").with_prefix();
    root.role_grant_permission("tls-tunnel", mine)
        .await
        .unwrap();
    root.user_add("tunnel", "pw", None).await.unwrap();
    root.user_grant_role("tunnel", "tls-tunnel").await.unwrap();
    root.auth_enable().await.unwrap();

    let mut o = options(&etcd);
    o.user = Some("tunnel".into());
    o.password = Some("pw".into());
    // Connecting reads "health", which this user may not: that still proves etcd answers.
    let s = EtcdStore::connect(&o).await.unwrap();
    assert!(
        s.txn(vec![], vec![put("/mine/k", "v", 0)])
            .await
            .unwrap()
            .succeeded
    );
    // Past the token's life, requests log in again by themselves.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(
        s.txn(vec![], vec![put("/mine/k", "w", 0)])
            .await
            .unwrap()
            .succeeded
    );
    let denied = s
        .txn(vec![], vec![put("/theirs/k", "v", 0)])
        .await
        .expect_err("outside");
    assert!(
        matches!(denied, ClusterError::Etcd { .. }),
        "not retryable: {denied:?}"
    );
    assert!(
        denied
            .to_string()
            .contains("read and write on the cluster prefix"),
        "{denied}"
    );

    o.password = Some("wrong".into());
    let err = EtcdStore::connect(&o).await.expect_err("wrong password");
    assert!(
        matches!(err, ClusterError::Etcd { .. }),
        "not retryable: {err:?}"
    );
    assert!(
        err.to_string().contains("etcd_user and etcd_password"),
        "{err}"
    );
    let err = EtcdStore::connect(&options(&etcd))
        .await
        .expect_err("no user");
    assert!(
        err.to_string().contains("etcd_user and etcd_password"),
        "{err}"
    );
}

/// p50 and p99 of `samples` (sorted in place).
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

#[tokio::test]
async fn measure_txn_and_keep_alive_latency_on_loopback() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let s = store(&etcd).await;
    let lease = s.grant(Duration::from_secs(30)).await.unwrap();
    // Registration-shaped: compare absent, put under the lease; then a guarded release.
    let mut txns = Vec::new();
    for i in 0..100 {
        let key = format!("/m/proxy/{i}");
        let started = Instant::now();
        let o = s
            .txn(vec![at(&key, 0)], vec![put(&key, "{}", lease)])
            .await
            .unwrap();
        txns.push(started.elapsed());
        assert!(o.succeeded);
    }
    let mut per_call = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        s.keep_alive(lease).await.unwrap();
        per_call.push(started.elapsed());
    }
    // The alternative: one keep-alive stream kept open per lease.
    let mut client = s.client().lease_client();
    let (mut keeper, mut answers) = client.keep_alive(lease).await.unwrap();
    let mut reused = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        keeper.keep_alive().await.unwrap();
        answers.message().await.unwrap().unwrap();
        reused.push(started.elapsed());
    }
    let (t50, t99) = percentiles(&mut txns);
    let (k50, k99) = percentiles(&mut per_call);
    let (r50, r99) = percentiles(&mut reused);
    eprintln!(
        "etcd on loopback, 100 each: txn p50 {t50:?} p99 {t99:?}; keep-alive, stream per call \
         p50 {k50:?} p99 {k99:?}; kept stream p50 {r50:?} p99 {r99:?}"
    );
    // Only a sanity bound: the figures are for the report, not a gate on a shared machine.
    assert!(t99 < Duration::from_secs(1) && k99 < Duration::from_secs(1));
}

fn claimant(id: &str, instance: u8, server: &str) -> Claimant {
    Claimant {
        client_id: id.into(),
        instance: [instance; 16],
        server_id: server.into(),
    }
}

fn web(port: u16) -> ProxyClaim {
    ProxyClaim {
        name: "web".into(),
        publish_port: port,
        domains: vec!["web.example.com".into()],
        udp: false,
    }
}

/// The registry's own protocol (registrar, lease keeper, watch-fed cache) on two "servers"
/// sharing one real etcd: what the in-memory tests check, on the real store.
#[tokio::test]
async fn the_registry_runs_on_etcd_across_two_servers() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let keys = Keys::new("/tls-tunnel/test/");
    let (a, b) = (Arc::new(store(&etcd).await), Arc::new(store(&etcd).await));
    let (reg_a, reg_b) = (
        Registrar::new(a.clone(), keys.clone()),
        Registrar::new(b.clone(), keys.clone()),
    );
    let lease_a = LeaseKeeper::start(a.clone(), Duration::from_secs(2))
        .await
        .unwrap();
    let lease_b = LeaseKeeper::start(b.clone(), Duration::from_secs(2))
        .await
        .unwrap();
    let (cache_b, _task) = Cache::start(b.clone(), keys.clone());

    // Client c1 (instance 1) on A takes the proxy; B's cache sees it at the epoch.
    let Registered::Done(on_a) = reg_a
        .register(&claimant("c1", 1, "A"), lease_a.lease(), &[web(8080)])
        .await
        .unwrap()
    else {
        panic!("c1 was refused on A");
    };
    assert!(on_a.proxies[0].granted());
    assert!(
        tokio::time::timeout(Duration::from_secs(5), cache_b.caught_up(on_a.epoch))
            .await
            .unwrap()
    );
    assert_eq!(cache_b.proxy("web", 8080).unwrap().server_id, "A");

    // Another client cannot take it through B; another instance of c1 cannot take the id.
    let Registered::Done(other) = reg_b
        .register(&claimant("c2", 2, "B"), lease_b.lease(), &[web(8080)])
        .await
        .unwrap()
    else {
        panic!("c2's own id was refused");
    };
    assert!(!other.proxies[0].granted(), "{:?}", other.proxies);
    let twin = reg_b
        .register(&claimant("c1", 9, "B"), lease_b.lease(), &[web(8080)])
        .await
        .unwrap();
    assert_eq!(
        twin,
        Registered::IdInUse {
            server_id: "A".into()
        }
    );

    // The same instance moving to B takes over at once, at a later epoch.
    let Registered::Done(moved) = reg_b
        .register(&claimant("c1", 1, "B"), lease_b.lease(), &[web(8080)])
        .await
        .unwrap()
    else {
        panic!("the takeover was refused");
    };
    assert!(moved.proxies[0].granted() && moved.epoch > on_a.epoch);
    assert!(
        tokio::time::timeout(Duration::from_secs(5), cache_b.caught_up(moved.epoch))
            .await
            .unwrap()
    );
    assert_eq!(cache_b.proxy("web", 8080).unwrap().server_id, "B");
    // A's late release deletes nothing of B's: every delete is guarded by A's revisions.
    assert_eq!(reg_a.release(&on_a.held).await.unwrap(), 0);
    assert_eq!(cache_b.proxy("web", 8080).unwrap().server_id, "B");

    // B stops renewing (as if killed): within TTL + 1 s its keys are gone, and the cache
    // follows.
    lease_b.stop();
    let stopped = Instant::now();
    eventually(Duration::from_secs(6), "B's keys to expire", || async {
        cache_b.proxy("web", 8080).is_none()
            && b.get_prefix(keys.prefix())
                .await
                .unwrap()
                .0
                .iter()
                .all(|kv| kv.lease != lease_b.lease())
    })
    .await;
    eprintln!(
        "B's keys gone {:?} after its last renewal stopped",
        stopped.elapsed()
    );
    assert!(*lease_a.state().borrow() == LeaseState::Alive);
}

#[tokio::test]
async fn etcd_over_tls_is_trusted_through_etcd_ca_cert_and_a_wrong_ca_is_named() {
    if !tunnel_testkit::need("etcd") {
        return;
    }
    let pki = tunnel_testkit::Pki::new("etcd-tls");
    let (cert_pem, key_pem) =
        tunnel_transport::generate_self_signed_pem(&["127.0.0.1".to_owned()]).unwrap();
    let cert = pki.write("etcd.pem", &cert_pem);
    let key = pki.write("etcd-key.pem", &key_pem);
    let etcd = Etcd::start_tls(&cert, &key).await;
    assert!(etcd.endpoint().starts_with("https://"));

    let mut o = options(&etcd);
    o.ca_cert = Some(cert);
    let s = EtcdStore::connect(&o).await.unwrap();
    assert!(
        s.txn(vec![], vec![put("/tls/k", "v", 0)])
            .await
            .unwrap()
            .succeeded
    );

    // Another CA (the kit's certificate for "localhost"), and the system roots: refused at
    // connect, in time, naming the endpoint and the setting.
    for ca in [Some(pki.cert.clone()), None] {
        o.ca_cert = ca.clone();
        let started = Instant::now();
        let err = EtcdStore::connect(&o)
            .await
            .expect_err("untrusted certificate");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let text = unwrapped(&err);
        eprintln!("ca {ca:?}: {text}");
        assert!(
            text.contains(&etcd.endpoint()) && text.contains("etcd_ca_cert"),
            "{text}"
        );
    }
}
