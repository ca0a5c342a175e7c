//! [`MemStore`]: an in-memory [`ClusterStore`] with etcd's semantics, and a manual clock.
//!
//! It is the reference the etcd backend is held to and the ground of the registry's property
//! tests: lease timing runs on [`MemStore::advance`], never on real time, so a test of a 10 s
//! lease takes microseconds and cannot flake.
//!
//! What it mirrors of etcd: one global revision, raised by one for each write transaction
//! (a transaction that changes nothing raises nothing); `create_revision`/`mod_revision` per
//! key; a lease's expiry or revocation deletes all its keys at one revision; a put under an
//! unknown lease fails; a transaction may not touch a key twice nor carry more than
//! [`max_txn_ops`](ClusterStore::max_txn_ops) compares or ops; a watch replays history from
//! its start revision, then follows live, with no gap, one batch per revision (etcd sends a
//! transaction's events in one response); after [`MemStore::compact`], a watch
//! from an older revision gets `Compacted`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::{self, BoxFuture};
use futures::stream::{self, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::store::{
    ClusterStore, Compare, KeyValue, LeaseId, Op, TxnOutcome, WatchEvent, WatchStream,
};
use crate::ClusterError;

type Events = mpsc::UnboundedSender<Result<Vec<WatchEvent>, ClusterError>>;

/// An in-memory store with etcd semantics and a manual clock (see the module doc).
#[derive(Debug)]
pub struct MemStore {
    state: Mutex<State>,
    down: AtomicBool,
    max_txn_ops: usize,
}

#[derive(Debug, Default)]
struct State {
    revision: i64,
    /// The oldest revision a watch may start from.
    compacted: i64,
    now: Duration,
    kv: BTreeMap<String, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// Every event after `compacted`, in order, with its revision.
    history: Vec<(i64, WatchEvent)>,
    /// The events of the revision being written, sent to the watchers together by
    /// [`State::publish`].
    batch: Vec<WatchEvent>,
    watchers: Vec<(String, Events)>,
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Duration,
    keys: HashSet<String>,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store at revision 1 (etcd starts there too), clock at 0.
    pub fn new() -> Self {
        Self::with_max_txn_ops(128)
    }

    /// An empty store whose transactions carry at most `max` compares or ops (etcd's
    /// `--max-txn-ops`), to test batching with small numbers.
    pub fn with_max_txn_ops(max: usize) -> Self {
        MemStore {
            state: Mutex::new(State {
                revision: 1,
                compacted: 1,
                next_lease: 0x7a11_0000,
                ..State::default()
            }),
            down: AtomicBool::new(false),
            max_txn_ops: max,
        }
    }

    /// Moves the clock by `by`; leases whose deadline has come expire, each deleting its keys
    /// at one revision (in deadline order, as etcd's lessor would).
    pub fn advance(&self, by: Duration) {
        let mut s = self.state.lock();
        s.now += by;
        let now = s.now;
        let mut due: Vec<(Duration, LeaseId)> = s
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        due.sort_unstable();
        for (_, id) in due {
            s.end_lease(id);
            s.publish();
        }
    }

    /// The clock.
    pub fn now(&self) -> Duration {
        self.state.lock().now
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        self.state.lock().revision
    }

    /// Forgets history before `revision`: a later watch from an older revision gets
    /// `Compacted { revision }`, as after etcd's compaction.
    pub fn compact(&self, revision: i64) {
        let mut s = self.state.lock();
        let revision = revision.min(s.revision);
        if revision > s.compacted {
            s.compacted = revision;
            s.history.retain(|(r, _)| *r >= revision);
        }
    }

    /// While down, every call fails with `Unavailable` (a partition, or etcd SIGSTOPped);
    /// leases still expire on [`MemStore::advance`].
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The keys attached to `lease` (empty if it is gone).
    pub fn lease_keys(&self, lease: LeaseId) -> Vec<String> {
        let s = self.state.lock();
        let mut keys: Vec<String> = s
            .leases
            .get(&lease)
            .map(|l| l.keys.iter().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn up(&self) -> Result<(), ClusterError> {
        if self.down.load(Ordering::SeqCst) {
            Err(ClusterError::Unavailable(Box::new(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the in-memory store is down (MemStore::set_down)",
            ))))
        } else {
            Ok(())
        }
    }

    fn txn_now(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<TxnOutcome, ClusterError> {
        self.up()?;
        let limit = self.max_txn_ops;
        if compares.len() > limit || ops.len() > limit {
            return Err(ClusterError::TooManyOps {
                ops: compares.len().max(ops.len()),
                limit,
            });
        }
        let mut touched = HashSet::new();
        for op in &ops {
            let key = match op {
                Op::Put { key, .. } | Op::Delete { key } => key,
            };
            if !touched.insert(key.as_str()) {
                return Err(ClusterError::DuplicateKey { key: key.clone() });
            }
        }
        let mut s = self.state.lock();
        for op in &ops {
            if let Op::Put { lease, .. } = op {
                if *lease != 0 && !s.leases.contains_key(lease) {
                    return Err(ClusterError::LeaseGone(*lease));
                }
            }
        }
        let holds = compares.iter().all(|c| match c {
            Compare::ModRevision { key, mod_revision } => {
                s.kv.get(key).map_or(0, |kv| kv.mod_revision) == *mod_revision
            }
        });
        if !holds {
            return Ok(TxnOutcome {
                succeeded: false,
                revision: s.revision,
            });
        }
        let changes = ops.iter().any(|op| {
            matches!(op, Op::Put { .. })
                || matches!(op, Op::Delete { key } if s.kv.contains_key(key))
        });
        if changes {
            let rev = s.revision + 1;
            s.revision = rev;
            for op in ops {
                match op {
                    Op::Put { key, value, lease } => s.put(key, value, lease, rev),
                    Op::Delete { key } => s.delete(&key, rev),
                }
            }
            s.publish();
        }
        Ok(TxnOutcome {
            succeeded: true,
            revision: s.revision,
        })
    }
}

impl State {
    fn put(&mut self, key: String, value: Vec<u8>, lease: LeaseId, rev: i64) {
        let create_revision = self.kv.get(&key).map_or(rev, |kv| kv.create_revision);
        if let Some(old) = self.kv.get(&key) {
            let old_lease = old.lease;
            if let Some(l) = self.leases.get_mut(&old_lease) {
                l.keys.remove(&key);
            }
        }
        if let Some(l) = self.leases.get_mut(&lease) {
            l.keys.insert(key.clone());
        }
        let kv = KeyValue {
            key: key.clone(),
            value,
            create_revision,
            mod_revision: rev,
            lease,
        };
        self.kv.insert(key, kv.clone());
        self.emit(rev, WatchEvent::Put(kv));
    }

    fn delete(&mut self, key: &str, rev: i64) {
        if let Some(old) = self.kv.remove(key) {
            if let Some(l) = self.leases.get_mut(&old.lease) {
                l.keys.remove(key);
            }
            self.emit(
                rev,
                WatchEvent::Delete {
                    key: key.to_string(),
                    mod_revision: rev,
                },
            );
        }
    }

    /// Revokes or expires `id`: all its keys go at one revision.
    fn end_lease(&mut self, id: LeaseId) -> bool {
        let Some(lease) = self.leases.remove(&id) else {
            return false;
        };
        if !lease.keys.is_empty() {
            let rev = self.revision + 1;
            self.revision = rev;
            let mut keys: Vec<String> = lease.keys.into_iter().collect();
            keys.sort();
            for k in keys {
                self.delete(&k, rev);
            }
        }
        true
    }

    /// Records the event; [`State::publish`] hands it out with the rest of its revision.
    fn emit(&mut self, rev: i64, event: WatchEvent) {
        self.batch.push(event.clone());
        self.history.push((rev, event));
    }

    /// Hands the revision just written to the watchers of its prefixes, as one batch each,
    /// under the lock, so that every watcher sees revisions in order.
    fn publish(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if batch.is_empty() {
            return;
        }
        self.watchers.retain(|(prefix, tx)| {
            let mine: Vec<WatchEvent> = batch
                .iter()
                .filter(|ev| ev.key().starts_with(prefix.as_str()))
                .cloned()
                .collect();
            mine.is_empty() || tx.send(Ok(mine)).is_ok()
        });
    }
}

impl ClusterStore for MemStore {
    fn get_prefix(
        &self,
        prefix: &str,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, i64), ClusterError>> {
        let r = self.up().map(|()| {
            let s = self.state.lock();
            let kvs =
                s.kv.range(prefix.to_string()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(_, kv)| kv.clone())
                    .collect();
            (kvs, s.revision)
        });
        Box::pin(future::ready(r))
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, ClusterError>> {
        let r = self.up().map(|()| self.state.lock().kv.get(key).cloned());
        Box::pin(future::ready(r))
    }

    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, ClusterError>> {
        Box::pin(future::ready(self.txn_now(compares, ops)))
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, ClusterError>> {
        let r = self.up().map(|()| {
            let mut s = self.state.lock();
            s.next_lease += 1;
            let id = s.next_lease;
            let deadline = s.now + ttl;
            s.leases.insert(
                id,
                Lease {
                    ttl,
                    deadline,
                    keys: HashSet::new(),
                },
            );
            id
        });
        Box::pin(future::ready(r))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, ClusterError>> {
        let r = self.up().and_then(|()| {
            let mut s = self.state.lock();
            let now = s.now;
            let l = s
                .leases
                .get_mut(&lease)
                .ok_or(ClusterError::LeaseGone(lease))?;
            l.deadline = now + l.ttl;
            Ok(l.ttl)
        });
        Box::pin(future::ready(r))
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), ClusterError>> {
        let r = self.up().and_then(|()| {
            let mut s = self.state.lock();
            let ended = s.end_lease(lease);
            s.publish();
            if ended {
                Ok(())
            } else {
                Err(ClusterError::LeaseGone(lease))
            }
        });
        Box::pin(future::ready(r))
    }

    fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> BoxFuture<'_, Result<WatchStream, ClusterError>> {
        let r = self.up().map(|()| {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut s = self.state.lock();
            if from_revision < s.compacted {
                let _ = tx.send(Err(ClusterError::Compacted {
                    revision: s.compacted,
                }));
            } else {
                // History and registration under one lock: nothing between them is lost.
                let mut batch: Vec<WatchEvent> = Vec::new();
                for (rev, ev) in &s.history {
                    if *rev < from_revision || !ev.key().starts_with(prefix) {
                        continue;
                    }
                    if batch.first().is_some_and(|b| b.revision() != *rev) {
                        let _ = tx.send(Ok(std::mem::take(&mut batch)));
                    }
                    batch.push(ev.clone());
                }
                if !batch.is_empty() {
                    let _ = tx.send(Ok(batch));
                }
                s.watchers.push((prefix.to_string(), tx));
            }
            stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|ev| (ev, rx)) },
            )
            .boxed()
        });
        Box::pin(future::ready(r))
    }

    fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }
}

#[cfg(test)]
mod tests;
