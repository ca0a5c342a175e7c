//! The health of the store, counted where every call passes: [`Metered`] wraps any
//! [`ClusterStore`] and counts into a [`StoreHealth`] the requests, the failures, the writes
//! (transactions that put or delete, lease grants and revokes) and the lease renewals, and
//! keeps the last error and when it came. The server shows them (`/api/stats` `cluster.etcd`,
//! `/metrics`), and they are how the registry's write load is measured (issue #16: one
//! transaction per login, none per idle client).
//!
//! A failure is a call the store did not answer (down, frozen, refused, timed out, denied).
//! An answer that says no (a compare that failed, a lease that is gone, a compacted
//! revision) is not one: the store works.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use futures::stream::StreamExt;
use parking_lot::Mutex;

use crate::store::{ClusterStore, Compare, KeyValue, LeaseId, Op, TxnOutcome, WatchStream};
use crate::ClusterError;

/// The counters of one store, shared between the [`Metered`] store and its readers.
#[derive(Debug)]
pub struct StoreHealth {
    requests: AtomicU64,
    failures: AtomicU64,
    writes: AtomicU64,
    keepalives: AtomicU64,
    /// Whether the last call that finished was answered.
    answered: AtomicBool,
    last_error: Mutex<Option<(String, Instant)>>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            keepalives: AtomicU64::new(0),
            // A store is only wrapped once it has answered (connect checks it).
            answered: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// Calls made (watches count once, when opened).
    pub requests: u64,
    /// Calls the store did not answer, and watches that broke.
    pub failures: u64,
    /// Transactions that put or delete, lease grants and lease revokes.
    pub writes: u64,
    /// Lease renewals (counted apart from the writes: they are the idle load).
    pub keepalives: u64,
    /// Whether the last call that finished was answered.
    pub answered: bool,
    /// The last failure's text and how long ago it came.
    pub last_error: Option<(String, Duration)>,
}

/// What a call is, for the counters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    KeepAlive,
}

impl StoreHealth {
    /// The counters now.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            keepalives: self.keepalives.load(Ordering::Relaxed),
            answered: self.answered.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .as_ref()
                .map(|(text, at)| (text.clone(), at.elapsed())),
        }
    }

    fn start(&self, kind: Kind) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match kind {
            Kind::Read => {}
            Kind::Write => {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            Kind::KeepAlive => {
                self.keepalives.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Records how a call ended. The first failure after an answer is a WARN and the first
    /// answer after a failure an INFO: once per outage, not once per call.
    fn end<T>(&self, result: &Result<T, ClusterError>) {
        match result {
            Err(e) if unanswered(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let text = e.to_string();
                *self.last_error.lock() = Some((text.clone(), Instant::now()));
                if self.answered.swap(false, Ordering::Relaxed) {
                    tracing::warn!("cluster store failing: {text}");
                }
            }
            _ => {
                if !self.answered.swap(true, Ordering::Relaxed) {
                    tracing::info!("cluster store answering again");
                }
            }
        }
    }
}

/// Whether `e` means the store did not answer (as opposed to answering no).
fn unanswered(e: &ClusterError) -> bool {
    matches!(
        e,
        ClusterError::Unavailable(_)
            | ClusterError::Etcd { .. }
            | ClusterError::EtcdTimeout { .. }
            | ClusterError::EtcdConfig { .. }
            | ClusterError::WatchEnded
    )
}

/// A [`ClusterStore`] that counts every call into a [`StoreHealth`].
#[derive(Debug)]
pub struct Metered<S: ?Sized> {
    inner: Arc<S>,
    health: Arc<StoreHealth>,
}

impl<S: ClusterStore + ?Sized> Metered<S> {
    /// Wraps `inner`; read the counters through [`Metered::health`].
    pub fn new(inner: Arc<S>) -> Metered<S> {
        Metered {
            inner,
            health: Arc::new(StoreHealth::default()),
        }
    }

    /// The counters.
    pub fn health(&self) -> Arc<StoreHealth> {
        self.health.clone()
    }

    fn counted<'a, T: Send + 'a>(
        &'a self,
        kind: Kind,
        call: BoxFuture<'a, Result<T, ClusterError>>,
    ) -> BoxFuture<'a, Result<T, ClusterError>> {
        self.health.start(kind);
        async move {
            let r = call.await;
            self.health.end(&r);
            r
        }
        .boxed()
    }
}

impl<S: ClusterStore + ?Sized> ClusterStore for Metered<S> {
    fn get_prefix(
        &self,
        prefix: &str,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, i64), ClusterError>> {
        self.counted(Kind::Read, self.inner.get_prefix(prefix))
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, ClusterError>> {
        self.counted(Kind::Read, self.inner.get(key))
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<KeyValue>>, ClusterError>> {
        self.counted(Kind::Read, self.inner.get_many(keys))
    }

    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, ClusterError>> {
        let kind = if ops.is_empty() {
            Kind::Read
        } else {
            Kind::Write
        };
        self.counted(kind, self.inner.txn(compares, ops))
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, ClusterError>> {
        self.counted(Kind::Write, self.inner.grant(ttl))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, ClusterError>> {
        self.counted(Kind::KeepAlive, self.inner.keep_alive(lease))
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), ClusterError>> {
        self.counted(Kind::Write, self.inner.revoke(lease))
    }

    fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> BoxFuture<'_, Result<WatchStream, ClusterError>> {
        let opened = self.counted(Kind::Read, self.inner.watch(prefix, from_revision));
        let health = self.health.clone();
        async move {
            let batches = opened.await?;
            // A watch that breaks is a failure too (a frozen etcd shows there first); one
            // that delivers proves the store answers.
            let counted = batches.map(move |b| {
                health.end(&b);
                b
            });
            Ok(counted.boxed())
        }
        .boxed()
    }

    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::MemStore;

    #[tokio::test]
    async fn calls_are_counted_and_an_outage_is_a_failure_with_its_text() {
        let mem = Arc::new(MemStore::new());
        let s = Metered::new(mem.clone());
        let h = s.health();
        let lease = s.grant(Duration::from_secs(10)).await.unwrap();
        let put = Op::Put {
            key: "/h/a".into(),
            value: vec![],
            lease,
        };
        s.txn(vec![], vec![put]).await.unwrap();
        s.get("/h/a").await.unwrap();
        s.keep_alive(lease).await.unwrap();
        let n = h.snapshot();
        assert_eq!(
            (n.requests, n.writes, n.keepalives, n.failures),
            (4, 2, 1, 0)
        );
        assert!(n.answered && n.last_error.is_none());

        mem.set_down(true);
        assert!(s.get("/h/a").await.is_err());
        let n = h.snapshot();
        assert_eq!((n.requests, n.failures), (5, 1));
        assert!(!n.answered);
        assert!(n.last_error.unwrap().0.contains("down"));

        mem.set_down(false);
        // An answer that says no is an answer.
        assert!(matches!(
            s.keep_alive(12345).await,
            Err(ClusterError::LeaseGone(_))
        ));
        let n = h.snapshot();
        assert!(n.answered);
        assert_eq!((n.failures, n.keepalives), (1, 2));
    }
}
