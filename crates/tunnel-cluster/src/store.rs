//! The seam between the registry and its storage engine: etcd's v3 KV, Lease, Txn and Watch,
//! narrowed to what the registry needs (the shared contract `cluster-store-trait.md`).
//!
//! Semantics are etcd's, so the in-memory `MemStore` and the etcd backend
//! can be swapped under the same tests: one global revision that every successful write
//! raises by one; `create_revision` and `mod_revision` per key; a key's `mod_revision` of 0
//! in a [`Compare`] means "absent".

use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{BoxStream, StreamExt};

use crate::ClusterError;

/// etcd's lease id; 0 = no lease.
pub type LeaseId = i64;

/// One key and its value, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key, prefix included.
    pub key: String,
    /// The value (a JSON record of `records` for registry keys).
    pub value: Vec<u8>,
    /// The revision that created the key (since its last deletion).
    pub create_revision: i64,
    /// The revision of the last put of the key: the guard of every later update or delete.
    pub mod_revision: i64,
    /// The lease the key is attached to; 0 = none.
    pub lease: LeaseId,
}

/// A transaction guard. `mod_revision == 0` means "the key is absent" (etcd semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's `mod_revision` equals this one (0: the key does not exist).
    ModRevision {
        /// The key compared.
        key: String,
        /// The expected revision.
        mod_revision: i64,
    },
}

/// One write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, attached to `lease` (0: none).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The lease; 0 = none.
        lease: LeaseId,
    },
    /// Remove `key` (nothing if absent).
    Delete {
        /// The key.
        key: String,
    },
}

/// The result of [`ClusterStore::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// All compares held and the ops were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction (the registration epoch when it succeeded).
    pub revision: i64,
}

/// One change seen by [`ClusterStore::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or updated.
    Put(KeyValue),
    /// The key was deleted (explicitly, or by its lease ending) at `mod_revision`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        mod_revision: i64,
    },
}

/// What [`ClusterStore::watch`] yields: batches of events. A batch holds every event of one
/// or more whole revisions, in revision order: the events of one transaction (or of one
/// lease's end) always arrive together, as etcd delivers them in one watch response, so a
/// reader that applies a batch before looking never sees half a transaction.
pub type WatchStream = BoxStream<'static, Result<Vec<WatchEvent>, ClusterError>>;

/// A [`WatchStream`] one event at a time (for readers that do not care where the
/// transactions end).
pub fn events(batches: WatchStream) -> BoxStream<'static, Result<WatchEvent, ClusterError>> {
    batches
        .flat_map(|batch| {
            let items: Vec<Result<WatchEvent, ClusterError>> = match batch {
                Ok(evs) => evs.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        })
        .boxed()
}

impl WatchEvent {
    /// The key the event is about.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(kv) => &kv.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { mod_revision, .. } => *mod_revision,
        }
    }
}

/// What a cluster registry needs of a store: etcd's v3 KV, Lease, Txn and Watch, narrowed.
/// Object-safe (boxed futures) so the server holds an `Arc<dyn ClusterStore>`.
pub trait ClusterStore: Send + Sync + 'static {
    /// Every key under `prefix`, and the store revision they were read at.
    fn get_prefix(&self, prefix: &str)
        -> BoxFuture<'_, Result<(Vec<KeyValue>, i64), ClusterError>>;
    /// One key (linearizable read).
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, ClusterError>>;
    /// Several keys read at one revision, in the order asked (`None`: absent). The default
    /// reads them concurrently, one request each; a backend that can read many in one round
    /// trip (etcd: a transaction of reads) overrides it, so a login costs one read request
    /// whatever its number of proxies.
    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<KeyValue>>, ClusterError>> {
        futures::future::try_join_all(keys.iter().map(|k| self.get(k))).boxed()
    }
    /// If every compare holds, apply every op, atomically; else apply nothing.
    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, ClusterError>>;
    /// A new lease of `ttl`.
    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, ClusterError>>;
    /// Renew `lease` once; the TTL left after renewal; `ClusterError::LeaseGone` if expired.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, ClusterError>>;
    /// End `lease` now, deleting its keys atomically.
    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), ClusterError>>;
    /// Changes under `prefix` from `from_revision` on, in order, no gap, in batches of whole
    /// revisions (see [`WatchStream`]); the stream ends with
    /// `Err(ClusterError::Compacted { .. })` if that revision is gone (re-list then).
    fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> BoxFuture<'_, Result<WatchStream, ClusterError>>;
    /// The largest number of compares or ops one transaction may carry (etcd's
    /// --max-txn-ops, 128 by default).
    fn max_txn_ops(&self) -> usize {
        128
    }
}
