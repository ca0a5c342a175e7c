//! The proxy registry: which session serves each `(proxy name, publish_port)`.
//!
//! The interface is deliberately narrow (claim, look up, hand over, release) so that a later
//! step can back it with a store shared by several servers.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tunnel_proto::ProxySpec;

use crate::routes::{Conflict, Pair, Routes};
use crate::session::SessionRef;

/// The registry key. Private proxies (no `publish_port`) use port 0.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyKey {
    /// The proxy name the client chose.
    pub name: String,
    /// The published port, or 0 for a private proxy.
    pub port: u16,
}

impl fmt::Display for ProxyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == 0 {
            write!(f, "{} (private)", self.name)
        } else {
            write!(f, "{}:{}", self.name, self.port)
        }
    }
}

/// Live counters of one proxy. Relaxed atomics: they are statistics, not synchronisation.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Connections served from the public port.
    pub public_connections: AtomicU64,
    /// Connections served for visitors.
    pub visitor_connections: AtomicU64,
    /// Streams open right now.
    pub active_streams: AtomicU64,
    /// Payload bytes: `a_to_b` from users or visitors toward the service ("in"), `b_to_a`
    /// back ("out"). Updated live by the forwarders.
    pub bytes: tunnel_mux::ByteCounters,
}

/// One registered proxy.
pub(crate) struct ProxyEntry {
    pub key: ProxyKey,
    pub spec: RwLock<ProxySpec>,
    owner: RwLock<Arc<SessionRef>>,
    /// Stops the public listener (if any) when the entry goes away.
    pub listener_stop: CancellationToken,
    pub counters: ProxyCounters,
}

impl ProxyEntry {
    pub(crate) fn new(key: ProxyKey, spec: ProxySpec, owner: Arc<SessionRef>) -> Self {
        ProxyEntry {
            key,
            spec: RwLock::new(spec),
            owner: RwLock::new(owner),
            listener_stop: CancellationToken::new(),
            counters: ProxyCounters::default(),
        }
    }

    /// The session that serves this proxy right now.
    pub(crate) fn owner(&self) -> Arc<SessionRef> {
        self.owner.read().clone()
    }
}

/// What a virtual-host route leads to: the proxy (whose owner may change by hand-over) and
/// the `Authorization` value its basic auth expects, if it has one.
pub(crate) struct RouteTarget {
    pub entry: Arc<ProxyEntry>,
    pub auth: Option<String>,
}

/// Why a claim failed. Neither variant says who holds what is taken: an error text goes to
/// another key holder, who has no business learning other clients' ids.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// Another client holds the key.
    Taken,
    /// One of the `(host, location)` routes collides with what is held.
    RouteTaken(Conflict<ProxyKey>),
}

/// All proxies of all clients, and the virtual-host routes they hold. Routes live and die
/// with their entry: released with it, and following it through a hand-over. They are owned
/// by client id, so a hand-over (same id) keeps them.
#[derive(Default)]
pub(crate) struct Registry {
    map: RwLock<HashMap<ProxyKey, Arc<ProxyEntry>>>,
    routes: RwLock<Routes<ProxyKey, String, Arc<RouteTarget>>>,
}

impl Registry {
    pub(crate) fn get(&self, name: &str, port: u16) -> Option<Arc<ProxyEntry>> {
        let key = ProxyKey {
            name: name.to_string(),
            port,
        };
        self.map.read().get(&key).cloned()
    }

    /// Insert `entry` with its virtual-host `routes` (all or nothing) unless the key or a
    /// route is held by someone else.
    pub(crate) fn claim(
        &self,
        entry: Arc<ProxyEntry>,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        let mut map = self.map.write();
        if map.contains_key(&entry.key) {
            return Err(ClaimError::Taken);
        }
        let target = Arc::new(RouteTarget {
            entry: entry.clone(),
            auth,
        });
        self.routes
            .write()
            .claim(&entry.key, &entry.owner().client_id, routes, target)
            .map_err(ClaimError::RouteTaken)?;
        map.insert(entry.key.clone(), entry);
        Ok(())
    }

    /// Replace the routes of a registered `entry` (a refreshed spec after a hand-over); on a
    /// conflict its old routes stay.
    pub(crate) fn set_routes(
        &self,
        entry: &Arc<ProxyEntry>,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        let _map = self.map.read(); // the entry cannot be released meanwhile
        let target = Arc::new(RouteTarget {
            entry: entry.clone(),
            auth,
        });
        self.routes
            .write()
            .claim(&entry.key, &entry.owner().client_id, routes, target)
            .map_err(ClaimError::RouteTaken)
    }

    /// The proxy serving `host` (a raw Host value) at `path`.
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<Arc<RouteTarget>> {
        self.routes.read().lookup(host, path).cloned()
    }

    /// Move every entry of session `from` to `to` (same client instance, new connection), so
    /// public ports keep serving with no gap. Returns how many moved.
    pub(crate) fn hand_over(&self, from: u64, to: &Arc<SessionRef>) -> usize {
        let map = self.map.read();
        let mut moved = 0;
        for entry in map.values() {
            let mut owner = entry.owner.write();
            if owner.id == from {
                *owner = to.clone();
                moved += 1;
            }
        }
        moved
    }

    /// Entries owned by `session`.
    pub(crate) fn owned_by(&self, session: u64) -> Vec<Arc<ProxyEntry>> {
        self.map
            .read()
            .values()
            .filter(|e| e.owner.read().id == session)
            .cloned()
            .collect()
    }

    /// Remove `key` if `session` still owns it, and stop its listener.
    pub(crate) fn release(&self, key: &ProxyKey, session: u64) -> bool {
        let mut map = self.map.write();
        let owned = map.get(key).is_some_and(|e| e.owner.read().id == session);
        if owned {
            if let Some(e) = map.remove(key) {
                e.listener_stop.cancel();
            }
            self.routes.write().release(key);
        }
        owned
    }

    /// Remove everything `session` owns. Returns the keys removed.
    pub(crate) fn release_all(&self, session: u64) -> Vec<ProxyKey> {
        let mut map = self.map.write();
        let keys: Vec<ProxyKey> = map
            .iter()
            .filter(|(_, e)| e.owner.read().id == session)
            .map(|(k, _)| k.clone())
            .collect();
        let mut routes = self.routes.write();
        for k in &keys {
            if let Some(e) = map.remove(k) {
                e.listener_stop.cancel();
            }
            routes.release(k);
        }
        keys
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}
