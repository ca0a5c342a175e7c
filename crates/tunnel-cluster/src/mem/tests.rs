#![allow(clippy::unwrap_used)]
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use proptest::prelude::*;

use super::*;

fn put(key: &str, value: &str, lease: LeaseId) -> Op {
    Op::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        lease,
    }
}

fn absent(key: &str) -> Compare {
    Compare::ModRevision {
        key: key.into(),
        mod_revision: 0,
    }
}

async fn next(s: &mut BoxStream<'static, Result<WatchEvent, ClusterError>>) -> WatchEvent {
    s.next().await.unwrap().unwrap()
}

/// A watch one event at a time.
async fn watch(
    s: &MemStore,
    prefix: &str,
    from: i64,
) -> BoxStream<'static, Result<WatchEvent, ClusterError>> {
    crate::store::events(s.watch(prefix, from).await.unwrap())
}

fn deleted(ev: &WatchEvent) -> (&str, i64) {
    match ev {
        WatchEvent::Delete { key, mod_revision } => (key.as_str(), *mod_revision),
        other => panic!("expected a delete, got {other:?}"),
    }
}

#[tokio::test]
async fn mem_store_passes_the_conformance_check() {
    let s = MemStore::new();
    crate::conformance::check(&s, "/conformance/")
        .await
        .unwrap();
}

#[tokio::test]
async fn revisions_follow_etcd() {
    let s = MemStore::new();
    assert_eq!(s.revision(), 1);
    let out = s
        .txn(vec![absent("/a")], vec![put("/a", "1", 0)])
        .await
        .unwrap();
    assert_eq!(
        out,
        TxnOutcome {
            succeeded: true,
            revision: 2
        }
    );
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (2, 2));
    // Update: create_revision stays, mod_revision moves.
    s.txn(vec![], vec![put("/a", "2", 0)]).await.unwrap();
    let a = s.get("/a").await.unwrap().unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.value.as_slice()),
        (2, 3, &b"2"[..])
    );
    // A failed compare changes nothing and reports the current revision.
    let out = s
        .txn(
            vec![absent("/a")],
            vec![put("/a", "3", 0), put("/b", "3", 0)],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        TxnOutcome {
            succeeded: false,
            revision: 3
        }
    );
    assert!(s.get("/b").await.unwrap().is_none());
    // Deleting an absent key writes nothing.
    let out = s
        .txn(vec![], vec![Op::Delete { key: "/zz".into() }])
        .await
        .unwrap();
    assert_eq!(out.revision, 3);
    // Several ops: one revision.
    let out = s
        .txn(
            vec![],
            vec![
                put("/c", "", 0),
                put("/d", "", 0),
                Op::Delete { key: "/a".into() },
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.revision, 4);
    let (kvs, rev) = s.get_prefix("/").await.unwrap();
    assert_eq!(rev, 4);
    assert_eq!(
        kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/c", "/d"]
    );
}

#[tokio::test]
async fn txn_limits_and_bad_ops_are_refused_whole() {
    let s = MemStore::with_max_txn_ops(2);
    let err = s
        .txn(
            vec![],
            vec![put("/a", "", 0), put("/b", "", 0), put("/c", "", 0)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::TooManyOps { ops: 3, limit: 2 }));
    let err = s
        .txn(vec![absent("/a"), absent("/b"), absent("/c")], vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::TooManyOps { .. }));
    let err = s
        .txn(
            vec![],
            vec![put("/a", "", 0), Op::Delete { key: "/a".into() }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::DuplicateKey { .. }));
    let err = s
        .txn(vec![], vec![put("/a", "", 0), put("/b", "", 99)])
        .await
        .unwrap_err();
    assert!(matches!(err, ClusterError::LeaseGone(99)));
    assert!(s.get_prefix("/").await.unwrap().0.is_empty());
    assert_eq!(s.revision(), 1);
}

#[tokio::test]
async fn lease_expiry_on_the_manual_clock_deletes_all_keys_at_one_revision() {
    let s = MemStore::new();
    let l = s.grant(Duration::from_secs(10)).await.unwrap();
    let other = s.grant(Duration::from_secs(10)).await.unwrap();
    s.txn(vec![], vec![put("/k/a", "", l), put("/k/b", "", l)])
        .await
        .unwrap();
    s.txn(vec![], vec![put("/k/c", "", l), put("/k/x", "", other)])
        .await
        .unwrap();
    assert_eq!(s.lease_keys(l), ["/k/a", "/k/b", "/k/c"]);
    let mut w = watch(&s, "/k/", s.revision() + 1).await;
    s.advance(Duration::from_secs(6));
    assert_eq!(s.keep_alive(l).await.unwrap(), Duration::from_secs(10));
    s.advance(Duration::from_secs(6));
    // `other` was not renewed: gone at 10 s; `l` lives to 16 s.
    assert!(s.get("/k/x").await.unwrap().is_none());
    assert!(matches!(s.keep_alive(other).await, Err(ClusterError::LeaseGone(id)) if id == other));
    assert_eq!(deleted(&next(&mut w).await), ("/k/x", 4));
    s.advance(Duration::from_secs(4));
    let (kvs, rev) = s.get_prefix("/k/").await.unwrap();
    assert!(kvs.is_empty());
    assert_eq!(rev, 5);
    for key in ["/k/a", "/k/b", "/k/c"] {
        assert_eq!(deleted(&next(&mut w).await), (key, 5));
    }
    assert!(matches!(s.revoke(l).await, Err(ClusterError::LeaseGone(_))));
}

#[tokio::test]
async fn revoke_deletes_the_keys_now_and_rebinding_a_key_moves_it() {
    let s = MemStore::new();
    let a = s.grant(Duration::from_secs(10)).await.unwrap();
    let b = s.grant(Duration::from_secs(10)).await.unwrap();
    s.txn(vec![], vec![put("/k", "a", a), put("/j", "a", a)])
        .await
        .unwrap();
    // Taken over under b's lease: a's end must not delete it.
    s.txn(vec![], vec![put("/k", "b", b)]).await.unwrap();
    s.revoke(a).await.unwrap();
    assert!(s.get("/j").await.unwrap().is_none());
    assert_eq!(s.get("/k").await.unwrap().unwrap().lease, b);
}

#[tokio::test]
async fn watch_replays_from_a_revision_then_follows_with_no_gap() {
    let s = MemStore::new();
    for i in 0..5 {
        s.txn(
            vec![],
            vec![
                put(&format!("/w/{i}"), "", 0),
                put(&format!("/other/{i}"), "", 0),
            ],
        )
        .await
        .unwrap();
    }
    // Revisions 2..=6 hold /w/0../w/4; start mid-history.
    let mut w = watch(&s, "/w/", 4).await;
    s.txn(vec![], vec![Op::Delete { key: "/w/0".into() }])
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        match next(&mut w).await {
            WatchEvent::Put(kv) => seen.push((kv.key, kv.mod_revision)),
            WatchEvent::Delete { key, mod_revision } => seen.push((key, mod_revision)),
        }
    }
    let want: Vec<(String, i64)> = vec![
        ("/w/2".into(), 4),
        ("/w/3".into(), 5),
        ("/w/4".into(), 6),
        ("/w/0".into(), 7),
    ];
    assert_eq!(seen, want);
}

#[tokio::test]
async fn watch_from_a_compacted_revision_ends_with_compacted() {
    let s = MemStore::new();
    for i in 0..5 {
        s.txn(vec![], vec![put(&format!("/w/{i}"), "", 0)])
            .await
            .unwrap();
    }
    s.compact(4);
    let mut w = watch(&s, "/w/", 3).await;
    match w.next().await {
        Some(Err(ClusterError::Compacted { revision: 4 })) => {}
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after Compacted");
    // From the compaction point on, history is still there.
    let mut w = watch(&s, "/w/", 4).await;
    assert!(matches!(next(&mut w).await, WatchEvent::Put(kv) if kv.mod_revision == 4));
}

#[tokio::test]
async fn a_down_store_answers_unavailable() {
    let s = MemStore::new();
    s.set_down(true);
    assert!(matches!(
        s.get("/a").await,
        Err(ClusterError::Unavailable(_))
    ));
    assert!(matches!(
        s.grant(Duration::from_secs(5)).await,
        Err(ClusterError::Unavailable(_))
    ));
    s.set_down(false);
    assert!(s.get("/a").await.unwrap().is_none());
}

proptest! {
    /// Lease timing on the manual clock: a lease lives exactly while less than its TTL has
    /// passed since the grant or the last renewal; when it ends, all its keys go at one
    /// revision, and a renewal after that says LeaseGone.
    #[test]
    fn leases_live_exactly_ttl_after_the_last_renewal(
        ttl in 2u64..10,
        steps in proptest::collection::vec((0u64..6, any::<bool>()), 1..30),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let s = MemStore::new();
            let l = s.grant(Duration::from_secs(ttl)).await.unwrap();
            s.txn(vec![], vec![put("/l/a", "", l), put("/l/b", "", l)]).await.unwrap();
            let mut w = watch(&s, "/l/", s.revision() + 1).await;
            let (mut now, mut deadline, mut alive) = (0u64, ttl, true);
            for (by, renew) in steps {
                now += by;
                s.advance(Duration::from_secs(by));
                if alive && now >= deadline {
                    alive = false;
                    let a = deleted(&next(&mut w).await).1;
                    let b = deleted(&next(&mut w).await).1;
                    assert_eq!(a, b, "one revision for all keys of the lease");
                }
                assert_eq!(s.get("/l/a").await.unwrap().is_some(), alive, "at {now}s, deadline {deadline}s");
                if renew {
                    let r = s.keep_alive(l).await;
                    if alive {
                        assert_eq!(r.unwrap(), Duration::from_secs(ttl));
                        deadline = now + ttl;
                    } else {
                        assert!(matches!(r, Err(ClusterError::LeaseGone(_))));
                    }
                }
            }
        });
    }
}

#[tokio::test]
async fn a_watch_delivers_one_batch_per_revision_replayed_or_live() {
    let s = MemStore::new();
    let l = s.grant(Duration::from_secs(5)).await.unwrap();
    s.txn(
        vec![],
        vec![put("/b/a", "", l), put("/b/b", "", l), put("/x", "", 0)],
    )
    .await
    .unwrap();
    let from = s.revision();
    let mut w = s.watch("/b/", from).await.unwrap();
    // Replayed: the transaction's two puts under the prefix, together.
    let replayed = w.next().await.unwrap().unwrap();
    assert_eq!(replayed.len(), 2);
    assert!(replayed.iter().all(|e| e.revision() == from));
    // Live: a two-key transaction, then the lease's end, one batch each.
    s.txn(
        vec![],
        vec![put("/b/c", "", l), Op::Delete { key: "/b/a".into() }],
    )
    .await
    .unwrap();
    let live = w.next().await.unwrap().unwrap();
    assert_eq!(live.len(), 2);
    assert!(live.iter().all(|e| e.revision() == from + 1));
    s.advance(Duration::from_secs(5));
    let expiry = w.next().await.unwrap().unwrap();
    let keys: Vec<&str> = expiry.iter().map(|e| e.key()).collect();
    assert_eq!(keys, ["/b/b", "/b/c"]);
    assert!(expiry.iter().all(|e| e.revision() == from + 2));
    assert!(
        w.next().now_or_never().is_none(),
        "nothing else: {:?}",
        w.next().now_or_never()
    );
}
