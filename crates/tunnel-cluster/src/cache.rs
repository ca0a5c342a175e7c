//! A local copy of the registry, kept current by a watch (design note, section 3, "Shape"):
//! `get_prefix` at revision R, then `watch` from R + 1, so no change falls between the two;
//! on `Compacted` (the watch fell behind etcd's history) or a broken watch, list again.
//!
//! Each batch of the watch (whole revisions) is applied before the revision is published, so
//! a reader woken by a revision sees whole transactions. Which client ids changed is kept in
//! a bounded feed ([`changes`]), so a server reacts to a takeover by looking up those clients
//! only.
//!
//! Lookups are O(1) map reads under a short lock, never awaiting the store: the data path
//! never waits for etcd, and while etcd is away the last view keeps serving (rule 5: the
//! registry being down must not take the data path down).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::keys::{KeyKind, Keys};
use crate::records::{self, ClientRecord, DomainRecord, PortRecord, ProxyRecord, ServerRecord};
use crate::store::{ClusterStore, KeyValue, WatchEvent};
use crate::ClusterError;

pub mod changes;

use changes::ChangeLog;
pub use changes::Changed;

/// The first wait after a failed list or watch; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to reach the store.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The registry as last seen.
#[derive(Debug, Default, Clone)]
struct View {
    servers: HashMap<String, ServerRecord>,
    clients: HashMap<String, ClientRecord>,
    proxies: HashMap<(String, u16), ProxyRecord>,
    ports: HashMap<u16, PortRecord>,
    domains: HashMap<String, DomainRecord>,
}

impl View {
    /// Applies a put; a value that does not decode removes what the key held (it is no
    /// longer a record this server can act on).
    fn put(&mut self, kind: KeyKind, kv: &KeyValue) {
        let bad = |e: ClusterError| {
            tracing::warn!("cluster cache: {e}; the key is ignored");
        };
        match kind {
            KeyKind::Server(id) => match records::decode_plain(&kv.key, &kv.value) {
                Ok(r) => drop(self.servers.insert(id, r)),
                Err(e) => {
                    bad(e);
                    self.remove(KeyKind::Server(id));
                }
            },
            KeyKind::Client(id) => match records::decode(kv) {
                Ok(r) => drop(self.clients.insert(id, r)),
                Err(e) => {
                    bad(e);
                    self.remove(KeyKind::Client(id));
                }
            },
            KeyKind::Proxy { name, port } => match records::decode(kv) {
                Ok(r) => drop(self.proxies.insert((name, port), r)),
                Err(e) => {
                    bad(e);
                    self.remove(KeyKind::Proxy { name, port });
                }
            },
            KeyKind::Port(port) => match records::decode(kv) {
                Ok(r) => drop(self.ports.insert(port, r)),
                Err(e) => {
                    bad(e);
                    self.remove(KeyKind::Port(port));
                }
            },
            KeyKind::Domain(host) => match records::decode(kv) {
                Ok(r) => drop(self.domains.insert(host, r)),
                Err(e) => {
                    bad(e);
                    self.remove(KeyKind::Domain(host));
                }
            },
        }
    }

    fn remove(&mut self, kind: KeyKind) {
        match kind {
            KeyKind::Server(id) => drop(self.servers.remove(&id)),
            KeyKind::Client(id) => drop(self.clients.remove(&id)),
            KeyKind::Proxy { name, port } => drop(self.proxies.remove(&(name, port))),
            KeyKind::Port(port) => drop(self.ports.remove(&port)),
            KeyKind::Domain(host) => drop(self.domains.remove(&host)),
        }
    }
}

/// The watch-fed copy of the registry. Cheap to clone; it is fed while its [`CacheTask`]
/// lives.
#[derive(Debug, Clone)]
pub struct Cache {
    view: Arc<RwLock<View>>,
    revision: watch::Receiver<i64>,
    changes: Arc<Mutex<ChangeLog>>,
}

/// Which server holds which client ([`Cache::placements`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placements {
    /// `(client id, server id)`, by client id, at most the limit asked for.
    pub clients: Vec<(String, String)>,
    /// Every client of the registry, listed or not.
    pub total: usize,
    /// Clients per server id.
    pub per_server: HashMap<String, usize>,
}

/// The task that feeds a [`Cache`]; stops it when dropped.
#[derive(Debug)]
pub struct CacheTask {
    task: JoinHandle<()>,
}

impl Drop for CacheTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cache {
    /// Starts following the registry under `keys`' prefix. The cache is empty (revision 0)
    /// until the first list; [`Cache::caught_up`] waits for a revision.
    pub fn start<S: ClusterStore + ?Sized>(store: Arc<S>, keys: Keys) -> (Cache, CacheTask) {
        let view = Arc::new(RwLock::new(View::default()));
        let (tx, revision) = watch::channel(0);
        let changes = Arc::new(Mutex::new(ChangeLog::new(changes::CAPACITY)));
        let feed = Feed {
            view: view.clone(),
            revision: tx,
            changes: changes.clone(),
        };
        let task = tokio::spawn(follow(store, keys, feed));
        (
            Cache {
                view,
                revision,
                changes,
            },
            CacheTask { task },
        )
    }

    /// The client ids whose `client/<id>` key changed after `revision` (read
    /// [`Cache::revision`] first and pass it next time: every change up to it is in the
    /// answer). [`Changed::Everything`] when the feed cannot tell (the reader is more than
    /// [`changes::CAPACITY`] changes behind, or the cache listed again since).
    pub fn clients_changed_since(&self, revision: i64) -> Changed {
        self.changes.lock().since(revision)
    }

    /// The revision the cache reflects (0 before the first list).
    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }

    /// Waits until the cache reflects `revision` (e.g. a registration's epoch: read your own
    /// writes). Only a revision that wrote under the prefix is ever reached. `false` if the
    /// cache task ended.
    pub async fn caught_up(&self, revision: i64) -> bool {
        let mut rx = self.revision.clone();
        let reached = rx.wait_for(|r| *r >= revision).await.is_ok();
        reached
    }

    /// The server record of `id`.
    pub fn server(&self, id: &str) -> Option<ServerRecord> {
        self.view.read().servers.get(id).cloned()
    }

    /// Every server, by id.
    pub fn servers(&self) -> Vec<(String, ServerRecord)> {
        let v = self.view.read();
        v.servers
            .iter()
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// Who holds client id `id`.
    pub fn client(&self, id: &str) -> Option<ClientRecord> {
        self.view.read().clients.get(id).cloned()
    }

    /// Which server holds which client, for an operator's view: the first `limit` client
    /// ids in order with their server ids, and how many clients each server holds (all of
    /// them, not only those listed).
    pub fn placements(&self, limit: usize) -> Placements {
        let v = self.view.read();
        let mut per_server: HashMap<String, usize> = HashMap::new();
        let mut all: Vec<(&String, &String)> = Vec::with_capacity(v.clients.len());
        for (id, r) in &v.clients {
            match per_server.get_mut(&r.server_id) {
                Some(n) => *n += 1,
                None => drop(per_server.insert(r.server_id.clone(), 1)),
            }
            all.push((id, &r.server_id));
        }
        if all.len() > limit && limit > 0 {
            all.select_nth_unstable_by(limit - 1, |a, b| a.0.cmp(b.0));
        }
        all.truncate(limit);
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Placements {
            clients: all
                .into_iter()
                .map(|(id, server)| (id.clone(), server.clone()))
                .collect(),
            total: v.clients.len(),
            per_server,
        }
    }

    /// Who serves proxy `name` at `port` (0: private).
    pub fn proxy(&self, name: &str, port: u16) -> Option<ProxyRecord> {
        // The map is keyed by owned pairs; a lookup allocates the name once, which is
        // cheaper than a second index.
        self.view
            .read()
            .proxies
            .get(&(name.to_string(), port))
            .cloned()
    }

    /// Which proxy publish port `port` leads to.
    pub fn port(&self, port: u16) -> Option<PortRecord> {
        self.view.read().ports.get(&port).cloned()
    }

    /// Every publish port and what it leads to (for servers that listen on them all).
    pub fn ports(&self) -> Vec<(u16, PortRecord)> {
        let v = self.view.read();
        v.ports.iter().map(|(p, r)| (*p, r.clone())).collect()
    }

    /// Which proxy `host` leads to.
    pub fn domain(&self, host: &str) -> Option<DomainRecord> {
        self.view.read().domains.get(host).cloned()
    }
}

/// List, watch, apply; on any failure, back off and list again. Never returns on its own.
async fn follow<S: ClusterStore + ?Sized>(store: Arc<S>, keys: Keys, feed: Feed) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let err = match follow_once(&*store, &keys, &feed).await {
            Err(e) => e,
            Ok(()) => ClusterError::WatchEnded,
        };
        if matches!(err, ClusterError::Compacted { .. }) {
            tracing::debug!("cluster cache: {err}; listing again");
            backoff = FIRST_BACKOFF;
            continue;
        }
        tracing::warn!(
            "cluster cache: {err}; serving the last view, retrying in {:?}",
            backoff
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What the follow task writes: the view, the changed-ids feed, and the revision they
/// reflect (published last).
struct Feed {
    view: Arc<RwLock<View>>,
    revision: watch::Sender<i64>,
    changes: Arc<Mutex<ChangeLog>>,
}

async fn follow_once<S: ClusterStore + ?Sized>(
    store: &S,
    keys: &Keys,
    feed: &Feed,
) -> Result<(), ClusterError> {
    let (kvs, at) = store.get_prefix(keys.prefix()).await?;
    let mut fresh = View::default();
    for kv in &kvs {
        if let Some(kind) = keys.parse(&kv.key) {
            fresh.put(kind, kv);
        }
    }
    *feed.view.write() = fresh;
    feed.changes.lock().relisted(at);
    feed.revision.send_replace(at);
    let mut batches = store.watch(keys.prefix(), at + 1).await?;
    while let Some(batch) = batches.next().await {
        // A batch is whole revisions: apply all of it before publishing, so that a reader
        // woken by the revision sees the whole transaction, not its first key only.
        let mut rev = 0;
        {
            let mut view = feed.view.write();
            let mut changes = feed.changes.lock();
            for ev in &batch? {
                rev = rev.max(ev.revision());
                let kind = keys.parse(ev.key());
                if let Some(KeyKind::Client(id)) = &kind {
                    changes.record(ev.revision(), id);
                }
                match (ev, kind) {
                    (WatchEvent::Put(kv), Some(kind)) => view.put(kind, kv),
                    (WatchEvent::Delete { .. }, Some(kind)) => view.remove(kind),
                    (_, None) => {}
                }
            }
        }
        feed.revision.send_if_modified(|r| {
            let newer = rev > *r;
            if newer {
                *r = rev;
            }
            newer
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
