//! Cluster mode (issue #16): this server's place in a registry shared with other servers.
//!
//! [`Node`] holds the server's lease, its `server/<id>` record and the watch-fed cache of the
//! registry. The login path asks it before anything is claimed locally ([`login`]); the
//! tasks of [`follow`] close local sessions another server took over and re-register
//! everything after a lost lease. Single-server mode has no `Node` at all.

pub(crate) mod fence;
pub(crate) mod follow;
pub(crate) mod locate;
pub(crate) mod login;
mod stats;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use tunnel_cluster::cache::CacheTask;
use tunnel_cluster::decide::{Claimant, ProxyClaim};
use tunnel_cluster::health::{Metered, StoreHealth};
use tunnel_cluster::records::{self, ProxyRecord, ServerRecord};
use tunnel_cluster::registrar::{LeaseKeeper, LeaseState, Registered};
use tunnel_cluster::{Cache, ClusterError, ClusterStore, KeyKind, Keys, Registrar};

pub(crate) use stats::ClusterStats;

/// How long a start waits for the cache to show this server's own record.
const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// What a node needs to know about its server.
#[derive(Debug, Clone)]
pub(crate) struct NodeOptions {
    pub server_id: String,
    pub prefix: String,
    pub lease_ttl: Duration,
    /// `peer_advertise`, for the other servers.
    pub peer_addr: String,
    /// The client bind address, for the operator's view.
    pub public_addr: String,
    /// The backend's name in `/api/stats`.
    pub backend: &'static str,
}

/// Where a proxy is served, as the registry says.
// The peer link (forwarding to another server) is its user.
#[allow(dead_code)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// The server holding the proxy's client.
    pub server_id: String,
    /// Its peer link address.
    pub peer_addr: SocketAddr,
    /// The registration epoch of the proxy.
    pub epoch: i64,
    /// Whether that server is this one.
    pub local: bool,
}

/// A publish port of the cluster and the proxy it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishedPort {
    pub port: u16,
    pub name: String,
    /// Datagrams, not connections: the other servers bind it as UDP.
    pub udp: bool,
}

/// What one session holds in the registry: the guards of its release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// The registration epoch (the revision that wrote `client/<id>`).
    pub epoch: i64,
    /// Every key written, with the revision it was written at.
    pub keys: Vec<(String, i64)>,
}

/// This server as a member of the cluster.
pub(crate) struct Node {
    store: Arc<dyn ClusterStore>,
    /// What every call to `store` counted (it is the [`Metered`] wrapper of the backend).
    health: Arc<StoreHealth>,
    registrar: Registrar<dyn ClusterStore>,
    opts: NodeOptions,
    record: Mutex<ServerRecord>,
    /// The current lease; replaced after a lost one, taken at revoke.
    keeper: Mutex<Option<LeaseKeeper>>,
    lease: AtomicI64,
    /// The state of the current lease; a new sender per lease would strand waiters, so one
    /// channel outlives the keepers and a forwarding task copies each keeper's state in.
    lease_state: watch::Sender<LeaseState>,
    lease_forward: Mutex<Option<JoinHandle<()>>>,
    cache: Cache,
    _cache_task: CacheTask,
    ports: watch::Receiver<Vec<PublishedPort>>,
    ports_task: JoinHandle<()>,
    /// Servers already warned about for an unusable peer address: once each, not per lookup.
    #[allow(dead_code)] // for the peer link
    bad_peer_addr: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("server_id", &self.opts.server_id)
            .field("lease", &self.lease.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.ports_task.abort();
        if let Some(t) = self.lease_forward.get_mut().take() {
            t.abort();
        }
    }
}

impl Node {
    /// Joins the cluster over `store`: a lease, this server's record, the cache caught up
    /// with both.
    pub(crate) async fn start(
        store: Arc<dyn ClusterStore>,
        opts: NodeOptions,
    ) -> Result<Arc<Node>, ClusterError> {
        // Every call of the node, its registrar, lease keeper and cache passes here.
        let metered = Arc::new(Metered::new(store));
        let health = metered.health();
        let store: Arc<dyn ClusterStore> = metered;
        let keys = Keys::new(opts.prefix.clone());
        let registrar = Registrar::new(store.clone(), keys.clone());
        let keeper = LeaseKeeper::start(store.clone(), opts.lease_ttl).await?;
        let record = ServerRecord {
            peer_addr: opts.peer_addr.clone(),
            public_addr: opts.public_addr.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            draining: false,
        };
        registrar
            .announce(&opts.server_id, &record, keeper.lease())
            .await?;
        let (cache, cache_task) = Cache::start(store.clone(), keys);
        let (ports_tx, ports) = watch::channel(Vec::new());
        let ports_task = tokio::spawn(follow_ports(cache.clone(), ports_tx));
        let (lease_state, _) = watch::channel(LeaseState::Alive);
        let node = Arc::new(Node {
            store,
            health,
            registrar,
            record: Mutex::new(record),
            lease: AtomicI64::new(0),
            keeper: Mutex::new(None),
            lease_state,
            lease_forward: Mutex::new(None),
            cache,
            _cache_task: cache_task,
            ports,
            ports_task,
            bad_peer_addr: Mutex::new(Default::default()),
            opts,
        });
        node.install_keeper(keeper);
        let me = node.opts.server_id.clone();
        let joined = tokio::time::timeout(JOIN_DEADLINE, async {
            while node.cache.server(&me).is_none() {
                let next = node.cache.revision() + 1;
                if !node.cache.caught_up(next).await {
                    return false;
                }
            }
            true
        })
        .await;
        if joined != Ok(true) {
            return Err(ClusterError::WatchEnded);
        }
        info!(
            "cluster: server {me} joined ({} servers)",
            node.cache.servers().len()
        );
        Ok(node)
    }

    fn install_keeper(&self, keeper: LeaseKeeper) {
        self.lease.store(keeper.lease(), Ordering::Relaxed);
        let mut rx = keeper.state();
        let tx = self.lease_state.clone();
        tx.send_replace(*rx.borrow());
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let s = *rx.borrow();
                tx.send_replace(s);
            }
        });
        if let Some(old) = self.lease_forward.lock().replace(forward) {
            old.abort();
        }
        *self.keeper.lock() = Some(keeper);
    }

    /// This server's id.
    pub(crate) fn server_id(&self) -> &str {
        &self.opts.server_id
    }

    /// The lease the registrations hang on.
    pub(crate) fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }

    /// The lease as last renewed.
    pub(crate) fn lease_state(&self) -> LeaseState {
        *self.lease_state.borrow()
    }

    /// Follows the lease state (across new leases).
    pub(crate) fn lease_states(&self) -> watch::Receiver<LeaseState> {
        self.lease_state.subscribe()
    }

    /// The counters of every store call.
    pub(crate) fn store_health(&self) -> &StoreHealth {
        &self.health
    }

    /// The watch-fed registry.
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Takes a new lease and announces this server on it again (after the old one was lost:
    /// every key on it is gone).
    pub(crate) async fn renew_lease(&self) -> Result<(), ClusterError> {
        let keeper = LeaseKeeper::start(self.store.clone(), self.opts.lease_ttl).await?;
        let record = self.record.lock().clone();
        self.registrar
            .announce(&self.opts.server_id, &record, keeper.lease())
            .await?;
        self.install_keeper(keeper);
        Ok(())
    }

    /// Registers a session's client and proxies, every key on this server's lease.
    pub(crate) async fn register(
        &self,
        client_id: &str,
        instance: [u8; 16],
        proxies: &[ProxyClaim],
    ) -> Result<Registered, ClusterError> {
        let who = Claimant {
            client_id: client_id.to_string(),
            instance,
            server_id: self.opts.server_id.clone(),
        };
        self.registrar.register(&who, self.lease(), proxies).await
    }

    /// Deletes what a registration wrote, each key only if still ours.
    pub(crate) async fn release(&self, held: &[(String, i64)]) -> Result<usize, ClusterError> {
        self.registrar.release(held).await
    }

    /// Marks this server draining in its record (takes no new logins; balancers and peers
    /// see it).
    pub(crate) async fn set_draining(&self) -> Result<(), ClusterError> {
        let record = {
            let mut r = self.record.lock();
            r.draining = true;
            r.clone()
        };
        self.registrar
            .announce(&self.opts.server_id, &record, self.lease())
            .await
    }

    /// Whether this server is draining.
    pub(crate) fn draining(&self) -> bool {
        self.record.lock().draining
    }

    /// The lease's time to live (`lease_ttl`).
    pub(crate) fn lease_ttl(&self) -> Duration {
        self.opts.lease_ttl
    }

    /// How many other servers of the cluster take new clients (registered, not draining).
    pub(crate) fn other_live_servers(&self) -> usize {
        self.cache()
            .servers()
            .into_iter()
            .filter(|(id, r)| id.as_str() != self.server_id() && !r.draining)
            .count()
    }

    /// Ends the lease now: every key of this server vanishes at one revision. The last
    /// step of a graceful stop.
    pub(crate) async fn revoke(&self) -> Result<(), ClusterError> {
        let keeper = self.keeper.lock().take();
        match keeper {
            Some(k) => k.revoke(&*self.store).await,
            None => Ok(()),
        }
    }

    /// Stops renewing the lease without revoking it, as a crashed server would: its keys
    /// vanish after the TTL.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn stop_renewing(&self) {
        if let Some(k) = self.keeper.lock().as_ref() {
            k.stop();
        }
    }

    /// Where proxy `name` at `publish_port` (0: private) is served, from the cache.
    pub(crate) fn locate(&self, name: &str, publish_port: u16) -> Option<Located> {
        let rec = self.cache.proxy(name, publish_port)?;
        self.located(rec)
    }

    /// [`Node::locate`] from one linearizable read of the store (the one re-read after a
    /// peer said "not here").
    pub(crate) async fn locate_fresh(
        &self,
        name: &str,
        publish_port: u16,
    ) -> Result<Option<Located>, ClusterError> {
        let key = self.registrar.keys().key(&KeyKind::Proxy {
            name: name.to_string(),
            port: publish_port,
        })?;
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let rec: ProxyRecord = records::decode(&kv)?;
        Ok(self.located(rec))
    }

    fn located(&self, rec: ProxyRecord) -> Option<Located> {
        let server = self.cache.server(&rec.server_id)?;
        let peer_addr = match server.peer_addr.parse() {
            Ok(a) => a,
            Err(_) => {
                if self.bad_peer_addr.lock().insert(rec.server_id.clone()) {
                    warn!(
                        "cluster: server {} advertises peer address {:?}, not ip:port; it \
                         cannot be reached (set its cluster.peer_advertise to an IP address)",
                        rec.server_id, server.peer_addr
                    );
                }
                return None;
            }
        };
        Some(Located {
            local: rec.server_id == self.opts.server_id,
            server_id: rec.server_id,
            peer_addr,
            epoch: rec.epoch,
        })
    }

    /// Every publish port in the cluster and the proxy it leads to, sorted by port.
    pub(crate) fn published_ports(&self) -> Vec<PublishedPort> {
        self.ports.borrow().clone()
    }

    /// [`Node::published_ports`], as it changes.
    pub(crate) fn published_ports_changes(&self) -> watch::Receiver<Vec<PublishedPort>> {
        self.ports.clone()
    }

    /// The view for `/api/stats`.
    pub(crate) fn stats(&self) -> ClusterStats {
        ClusterStats::of(self)
    }

    pub(crate) fn backend(&self) -> &'static str {
        self.opts.backend
    }
}

/// Keeps the list of publish ports current with the cache.
///
/// Subscribers are also told when what [`Node::locate`] answers for a port changes with the
/// list unchanged: the port changed servers under the same proxy name (a server the owner
/// left must now forward the port it served), or its proxy or server record arrived after
/// its port record (until then the port cannot be located, so it was not forwarded).
async fn follow_ports(cache: Cache, tx: watch::Sender<Vec<PublishedPort>>) {
    let mut owners: Vec<(u16, String, bool)> = Vec::new();
    loop {
        let mut ports = cache.ports();
        ports.sort_by_key(|(p, _)| *p);
        let now_owners: Vec<(u16, String, bool)> = ports
            .iter()
            .map(|(p, r)| {
                let known =
                    cache.proxy(&r.name, *p).is_some() && cache.server(&r.server_id).is_some();
                (*p, r.server_id.clone(), known)
            })
            .collect();
        let moved = owners != now_owners;
        owners = now_owners;
        let now: Vec<PublishedPort> = ports
            .into_iter()
            .map(|(port, r)| PublishedPort {
                port,
                name: r.name,
                udp: r.udp,
            })
            .collect();
        tx.send_if_modified(|old| {
            let changed = *old != now || moved;
            *old = now;
            changed
        });
        let next = cache.revision() + 1;
        if !cache.caught_up(next).await {
            return;
        }
    }
}

/// Connects to the configured backend and joins. `None` in single-server mode.
pub(crate) async fn connect(
    cfg: &crate::ServerConfig,
    public_addr: SocketAddr,
) -> Result<Option<Arc<Node>>, crate::ServerError> {
    let Some(c) = cfg.cluster.as_ref().filter(|c| c.enabled()) else {
        return Ok(None);
    };
    let problem = |p| crate::ServerError::Config(vec![p]);
    let opts = NodeOptions {
        server_id: c.server_id().map_err(problem)?,
        prefix: c.prefix.clone(),
        lease_ttl: c.lease_ttl,
        peer_addr: c.peer_advertise().unwrap_or_default(),
        public_addr: public_addr.to_string(),
        backend: "etcd",
    };
    let store = open_store(c).await?;
    let endpoints = c.endpoints.join(", ");
    Node::start(store, opts)
        .await
        .map(Some)
        .map_err(|source| crate::ServerError::Cluster { endpoints, source })
}

#[cfg(feature = "etcd")]
async fn open_store(
    c: &tunnel_cluster::ClusterConfig,
) -> Result<Arc<dyn ClusterStore>, crate::ServerError> {
    let opts = tunnel_cluster::etcd::EtcdOptions::from_config(c);
    match tunnel_cluster::etcd::EtcdStore::connect(&opts).await {
        Ok(s) => Ok(Arc::new(s)),
        Err(source) => Err(crate::ServerError::Cluster {
            endpoints: c.endpoints.join(", "),
            source,
        }),
    }
}

#[cfg(not(feature = "etcd"))]
async fn open_store(
    c: &tunnel_cluster::ClusterConfig,
) -> Result<Arc<dyn ClusterStore>, crate::ServerError> {
    // `problems()` refuses this config before start gets here.
    Err(crate::ServerError::Config(vec![crate::ConfigProblem::new(
        "cluster.backend",
        format!(
            "{:?}: this build has no etcd support: build with `cargo build --release --features etcd`",
            c.backend
        ),
    )]))
}

/// How long a stopping server waits for the store to take its draining mark or its revoke.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// The first step of a graceful stop: the record says draining, so peers and operators see it.
pub(crate) async fn drain(node: &Node) {
    match tokio::time::timeout(STOP_DEADLINE, node.set_draining()).await {
        Ok(Ok(())) => info!("cluster: server {} is draining", node.server_id()),
        Ok(Err(e)) => warn!("cluster: cannot mark this server draining: {e}"),
        Err(_) => warn!("cluster: cannot mark this server draining: the store did not answer"),
    }
}

/// The last step of a graceful stop: the lease ends and every key of this server with it.
pub(crate) async fn leave(node: &Node) {
    match tokio::time::timeout(STOP_DEADLINE, node.revoke()).await {
        Ok(Ok(())) => info!(
            "cluster: server {} left; its lease is revoked",
            node.server_id()
        ),
        Ok(Err(e)) => warn!(
            "cluster: cannot revoke the lease ({e}); this server's keys vanish when it expires"
        ),
        Err(_) => warn!(
            "cluster: the store did not answer the revoke; this server's keys vanish when the \
             lease expires"
        ),
    }
}
