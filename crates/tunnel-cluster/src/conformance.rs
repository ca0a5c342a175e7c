//! The [`ClusterStore`] semantics every backend must share, as one check to run against a
//! live store: [`MemStore`](crate::MemStore) passes it in this crate's tests, and the etcd
//! backend's tests run it against a real etcd. Only what needs no clock is here (lease
//! timing is tested on the manual clock of `MemStore`).
//!
//! It panics on the first difference, naming it: it is test support, not runtime code.

use std::time::Duration;

use futures::StreamExt;

use crate::store::{ClusterStore, Compare, Op, WatchEvent};
use crate::ClusterError;

/// Runs every check under `prefix` (which must hold no keys, and which the checks leave
/// empty). Errors are the store's own (unreachable, say); semantic differences panic.
pub async fn check<S: ClusterStore + ?Sized>(store: &S, prefix: &str) -> Result<(), ClusterError> {
    let k = |s: &str| format!("{prefix}{s}");
    let put = |key: String, v: &str, lease| Op::Put {
        key,
        value: v.as_bytes().to_vec(),
        lease,
    };
    let cmp = |key: String, mod_revision| Compare::ModRevision { key, mod_revision };

    let (before, rev0) = store.get_prefix(prefix).await?;
    assert!(before.is_empty(), "conformance: {prefix} must start empty");
    let mut watch = store.watch(prefix, rev0 + 1).await?;

    // Compare on absent (0), one revision for several puts.
    let t1 = store
        .txn(
            vec![cmp(k("a"), 0), cmp(k("b"), 0)],
            vec![put(k("a"), "1", 0), put(k("b"), "1", 0)],
        )
        .await?;
    assert!(t1.succeeded, "conformance: puts guarded on absent keys");
    assert!(
        t1.revision > rev0,
        "conformance: a write raises the revision"
    );
    let a = store.get(&k("a")).await?.expect("conformance: /a was put");
    assert_eq!(
        (a.create_revision, a.mod_revision),
        (t1.revision, t1.revision)
    );
    let b = store.get(&k("b")).await?.expect("conformance: /b was put");
    assert_eq!(
        b.mod_revision, t1.revision,
        "conformance: one revision per txn"
    );

    // Several keys in one read, in the order asked, absent ones as None.
    let many = store.get_many(&[k("b"), k("absent"), k("a")]).await?;
    let got: Vec<Option<(String, i64)>> = many
        .into_iter()
        .map(|kv| kv.map(|kv| (kv.key, kv.mod_revision)))
        .collect();
    assert_eq!(
        got,
        [
            Some((k("b"), t1.revision)),
            None,
            Some((k("a"), t1.revision))
        ],
        "conformance: get_many"
    );

    // A failed compare applies nothing.
    let t2 = store
        .txn(
            vec![cmp(k("a"), 0)],
            vec![put(k("a"), "2", 0), put(k("c"), "2", 0)],
        )
        .await?;
    assert!(
        !t2.succeeded,
        "conformance: compare on absent fails for a present key"
    );
    assert!(
        store.get(&k("c")).await?.is_none(),
        "conformance: a failed txn applies nothing"
    );

    // Update guarded by mod_revision keeps create_revision.
    let t3 = store
        .txn(vec![cmp(k("a"), t1.revision)], vec![put(k("a"), "3", 0)])
        .await?;
    assert!(t3.succeeded);
    let a = store
        .get(&k("a"))
        .await?
        .expect("conformance: /a still there");
    assert_eq!(
        (a.create_revision, a.mod_revision),
        (t1.revision, t3.revision)
    );
    assert_eq!(a.value, b"3");

    // Leases: keys attach; revoke deletes them all at one revision; LeaseGone after.
    let lease = store.grant(Duration::from_secs(30)).await?;
    let t4 = store
        .txn(
            vec![],
            vec![put(k("l1"), "", lease), put(k("l2"), "", lease)],
        )
        .await?;
    assert!(t4.succeeded);
    assert_eq!(store.get(&k("l1")).await?.map(|kv| kv.lease), Some(lease));
    assert!(store.keep_alive(lease).await? > Duration::ZERO);
    store.revoke(lease).await?;
    assert!(
        store.get(&k("l1")).await?.is_none(),
        "conformance: revoke deletes the lease's keys"
    );
    match store.keep_alive(lease).await {
        Err(ClusterError::LeaseGone(id)) => assert_eq!(id, lease),
        other => panic!("conformance: keep_alive of a revoked lease gave {other:?}"),
    }

    // Guarded delete: a stale revision deletes nothing, the right one deletes.
    let t5 = store
        .txn(
            vec![cmp(k("a"), t1.revision)],
            vec![Op::Delete { key: k("a") }],
        )
        .await?;
    assert!(!t5.succeeded, "conformance: a stale guard must not delete");
    let t6 = store
        .txn(
            vec![cmp(k("a"), t3.revision), cmp(k("b"), t1.revision)],
            vec![Op::Delete { key: k("a") }, Op::Delete { key: k("b") }],
        )
        .await?;
    assert!(t6.succeeded);

    // The watch saw every change in order, no gap, in batches of whole revisions: the
    // events of one transaction or one revoke arrive together, never split.
    let mut seen = Vec::new();
    let mut batches: Vec<Vec<i64>> = Vec::new();
    while seen.len() < 9 {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("conformance: watch events arrive")
            .expect("conformance: the watch stays open")?;
        assert!(!batch.is_empty(), "conformance: an empty watch batch");
        batches.push(batch.iter().map(WatchEvent::revision).collect());
        for ev in batch {
            seen.push(match ev {
                WatchEvent::Put(kv) => (kv.key, kv.mod_revision, true),
                WatchEvent::Delete { key, mod_revision } => (key, mod_revision, false),
            });
        }
    }
    for pair in batches.windows(2) {
        assert!(
            pair[0].last() < pair[1].first(),
            "conformance: a revision split across watch batches: {batches:?}"
        );
    }
    let rel: Vec<(String, bool)> = seen
        .iter()
        .map(|(key, _, put)| (key.trim_start_matches(prefix).to_string(), *put))
        .collect();
    let want: Vec<(String, bool)> = [
        ("a", true),
        ("b", true),
        ("a", true),
        ("l1", true),
        ("l2", true),
        ("l1", false),
        ("l2", false),
        ("a", false),
        ("b", false),
    ]
    .iter()
    .map(|(k, p)| (k.to_string(), *p))
    .collect();
    assert_eq!(rel, want, "conformance: watch events");
    assert!(
        seen.windows(2).all(|w| w[0].1 <= w[1].1),
        "conformance: watch events in revision order: {seen:?}"
    );
    assert_eq!(
        seen[5].1, seen[6].1,
        "conformance: a revoke deletes at one revision"
    );

    // Too many ops in one transaction is an error, not a partial write.
    let many: Vec<Op> = (0..=store.max_txn_ops())
        .map(|i| put(k(&format!("m{i}")), "", 0))
        .collect();
    assert!(
        store.txn(vec![], many).await.is_err(),
        "conformance: max_txn_ops is enforced"
    );
    let (left, _) = store.get_prefix(prefix).await?;
    assert!(
        left.is_empty(),
        "conformance: nothing left under {prefix}: {left:?}"
    );
    Ok(())
}
