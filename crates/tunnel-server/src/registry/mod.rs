//! The registry: which sessions are installed (one per client id), which session serves
//! each `(proxy name, publish_port)`, the virtual-host routes of those proxies, and the
//! load-balancing groups ([`groups`]) whose members share a port or routes.
//!
//! [`state`] holds the data and keeps its invariants; [`backend`] is the narrow trait a store
//! shared by several servers can implement; [`memory`] is the default, in this process.
//! [`Registry`] is what the server uses: the backend, over its own sessions and proxies, and
//! the side effects of a release (stopping a public listener).

mod backend;
#[cfg(test)]
mod group_tests;
mod groups;
mod memory;
mod state;

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_util::sync::CancellationToken;
use tunnel_proto::ProxySpec;

pub(crate) use backend::{ClaimError, Installed, Refused, RegistryBackend, Route, SessionInfo};
pub(crate) use groups::{port_of_group, GroupClaim, GroupHandle};

use crate::routes::Pair;
use crate::session::SessionRecord;

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

/// How logs and rejections name a proxy: `name:port` when it has a public port, else by
/// the hosts it is served on (`web (app.example.com, *.dev.example.com)`), else
/// `name (private)` (reached by visitors only). [`ProxyKey`] alone cannot say: it has no
/// domains.
pub(crate) fn proxy_label(spec: &ProxySpec) -> String {
    if let Some(port) = spec.publish_port {
        return format!("{}:{port}", spec.name);
    }
    let mut hosts = proxy_domains(spec);
    if let Some(sub) = spec.http.as_ref().and_then(|h| h.subdomain.as_ref()) {
        hosts.push(format!("subdomain {sub}"));
    }
    if hosts.is_empty() {
        format!("{} (private)", spec.name)
    } else {
        format!("{} ({})", spec.name, hosts.join(", "))
    }
}

/// The normalised domains of `spec` (as routed), empty when it has none.
pub(crate) fn proxy_domains(spec: &ProxySpec) -> Vec<String> {
    spec.http.as_ref().map_or_else(Vec::new, |h| {
        h.domains
            .iter()
            .map(|d| crate::routes::normalize_domain(d).unwrap_or_else(|_| d.clone()))
            .collect()
    })
}

/// The normalised locations of `spec`, empty when it has none (meaning `/`).
pub(crate) fn proxy_locations(spec: &ProxySpec) -> Vec<String> {
    spec.http.as_ref().map_or_else(Vec::new, |h| {
        h.locations
            .iter()
            .map(|l| crate::routes::normalize_location(l).unwrap_or_else(|_| l.clone()))
            .collect()
    })
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
    /// User connections refused by the proxy's `allow_ips` / `deny_ips`.
    pub denied: AtomicU64,
    /// Datagrams, bytes and flows of a `udp` proxy (zero for the others).
    pub udp: Arc<tunnel_mux::DatagramCounters>,
}

/// One registered proxy. Its owner is the registry's to know (it changes by hand-over).
pub(crate) struct ProxyEntry {
    pub key: ProxyKey,
    pub spec: RwLock<ProxySpec>,
    /// Stops the public listener (if any) when the entry goes away.
    pub listener_stop: CancellationToken,
    /// Cancelled once the public port served through this entry is closed (its listener
    /// dropped), so that the same client can take the port again at once.
    pub port_closed: CancellationToken,
    pub counters: ProxyCounters,
    /// Its `allow_ips` / `deny_ips` and bandwidth limits, set at registration.
    pub limits: RwLock<Arc<crate::access::ProxyLimits>>,
    /// The load-balancing group it is a member of: a public listener or route reached
    /// through this entry serves the group's members in turn.
    pub group: Option<Arc<GroupHandle>>,
}

impl ProxyEntry {
    pub(crate) fn new(key: ProxyKey, spec: ProxySpec) -> Self {
        ProxyEntry {
            key,
            spec: RwLock::new(spec),
            listener_stop: CancellationToken::new(),
            port_closed: CancellationToken::new(),
            counters: ProxyCounters::default(),
            limits: RwLock::default(),
            group: None,
        }
    }

    /// A member of the group of `handle`.
    pub(crate) fn grouped(key: ProxyKey, spec: ProxySpec, handle: Arc<GroupHandle>) -> Self {
        ProxyEntry {
            group: Some(handle),
            ..ProxyEntry::new(key, spec)
        }
    }

    /// What stops the public listener served through this entry: its group's, which
    /// outlives any one member, else its own.
    pub(crate) fn public_stop(&self) -> &CancellationToken {
        self.group.as_ref().map_or(&self.listener_stop, |g| &g.stop)
    }

    /// What the public listener served through this entry cancels once its port is closed.
    pub(crate) fn public_closed(&self) -> &CancellationToken {
        self.group
            .as_ref()
            .map_or(&self.port_closed, |g| &g.port_closed)
    }

    /// The proxy's name for logs: see [`proxy_label`].
    pub(crate) fn label(&self) -> String {
        proxy_label(&self.spec.read())
    }
}

impl SessionInfo for Arc<SessionRecord> {
    fn id(&self) -> u64 {
        self.id
    }

    fn client_id(&self) -> &str {
        &self.client_id
    }

    fn instance(&self) -> [u8; 16] {
        self.instance
    }
}

type Session = Arc<SessionRecord>;
type Entry = Arc<ProxyEntry>;

/// The server's registry: a [`RegistryBackend`] (in memory by default) over this process's
/// sessions and proxies. Released proxies have their public listener stopped here.
pub(crate) struct Registry {
    backend: Box<dyn RegistryBackend<Session, Entry>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            backend: Box::new(memory::MemoryRegistry::default()),
        }
    }
}

impl Registry {
    /// Whether a session of `client_id` and `instance` would be installed now.
    pub(crate) fn admit(
        &self,
        client_id: &str,
        instance: [u8; 16],
        max_clients: usize,
    ) -> Result<(), Refused<Session>> {
        self.backend.admit(client_id, instance, max_clients)
    }

    /// Install `session`, replacing (and taking the proxies of) a stale session of the same
    /// instance.
    pub(crate) fn install_session(
        &self,
        session: Session,
        max_clients: usize,
    ) -> Result<Installed<Session>, Refused<Session>> {
        self.backend.install_session(session, max_clients)
    }

    /// Remove `session` and everything it holds. Returns the keys released.
    pub(crate) fn release_session(&self, session: u64) -> Vec<ProxyKey> {
        let released = self.backend.release_session(session);
        self.stop_emptied_groups(&released);
        stopped(released)
    }

    /// Stop the listener of each group that lost its last member among `released` (a group
    /// founded again since has a handle of its own, and keeps it).
    fn stop_emptied_groups(&self, released: &[(ProxyKey, Entry)]) {
        for (_, entry) in released {
            if let Some(g) = &entry.group {
                let live = self.backend.group_handle(&g.name);
                if !live.is_some_and(|h| Arc::ptr_eq(&h, g)) {
                    g.stop.cancel();
                }
            }
        }
    }

    /// Record `entry` for `session` with its virtual-host `routes` (all or nothing).
    pub(crate) fn claim(
        &self,
        session: u64,
        entry: Entry,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        let key = entry.key.clone();
        self.backend.claim(session, key, entry, routes, auth)
    }

    /// Replace the routes of `key`, held by `session`; on a conflict its old routes stay.
    pub(crate) fn set_routes(
        &self,
        session: u64,
        key: &ProxyKey,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        self.backend.set_routes(session, key, routes, auth)
    }

    /// Remove what `session` holds outside `keep`, and stop their listeners.
    /// Returns the labels ([`proxy_label`]) of the released proxies, for the log.
    pub(crate) fn release_except(&self, session: u64, keep: &HashSet<ProxyKey>) -> Vec<String> {
        let released = self.backend.release_except(session, keep);
        self.stop_emptied_groups(&released);
        let labels = released.iter().map(|(_, e)| e.label()).collect();
        stopped(released);
        labels
    }

    /// Whether `claim` may join its group: its live handle, or `None` to found it.
    pub(crate) fn group_check(
        &self,
        claim: &GroupClaim,
    ) -> Result<Option<Arc<GroupHandle>>, ClaimError> {
        self.backend.group_check(claim)
    }

    /// Record `entry` for `session` as a member of `claim`'s group (see
    /// [`RegistryBackend::claim_member`]); its handle is the entry's.
    pub(crate) fn claim_member(
        &self,
        session: u64,
        entry: Entry,
        claim: &GroupClaim,
    ) -> Result<(), ClaimError> {
        let Some(handle) = entry.group.clone() else {
            return Err(ClaimError::Taken);
        };
        let key = entry.key.clone();
        self.backend
            .claim_member(session, key, entry, claim, &handle)
    }

    /// Whether a group publishes on `port`.
    pub(crate) fn group_on_port(&self, port: u16) -> bool {
        self.backend.group_on_port(port)
    }

    /// The members of group `name`, the next in round-robin order first.
    pub(crate) fn group_members(&self, name: &str) -> Vec<Entry> {
        self.backend.group_members(name)
    }

    /// Every group with its members (for the stats endpoint).
    pub(crate) fn groups(&self) -> Vec<(GroupClaim, Vec<Entry>)> {
        self.backend.groups()
    }

    /// [`Registry::release_except`], and the `port_closed` of each released proxy that had a
    /// port of its own: a registration that takes the same port again (the proxy moved into
    /// a group, or renamed) waits for them.
    pub(crate) fn release_except_closing(
        &self,
        session: u64,
        keep: &HashSet<ProxyKey>,
    ) -> (Vec<String>, Vec<CancellationToken>) {
        let released = self.backend.release_except(session, keep);
        self.stop_emptied_groups(&released);
        let labels = released.iter().map(|(_, e)| e.label()).collect();
        let closing = released
            .iter()
            // A group's port closes with its last member only.
            .filter(|(k, e)| k.port != 0 && e.group.as_ref().is_none_or(|g| g.stop.is_cancelled()))
            .map(|(_, e)| e.public_closed().clone())
            .collect();
        stopped(released);
        (labels, closing)
    }

    /// How many proxies `session` holds (O(1): the fair share asks on every refusal).
    pub(crate) fn proxies_of(&self, session: u64) -> usize {
        self.backend.proxies_of(session)
    }

    /// The installed session of `client_id`.
    pub(crate) fn session(&self, client_id: &str) -> Option<Session> {
        self.backend.session(client_id)
    }

    /// The proxy under `key` and the session serving it.
    pub(crate) fn get(&self, key: &ProxyKey) -> Option<(Entry, Session)> {
        self.backend.get(key)
    }

    /// The session serving `key` right now.
    pub(crate) fn owner(&self, key: &ProxyKey) -> Option<Session> {
        self.backend.owner(key)
    }

    /// The proxy serving `host` (a raw Host value) at `path`.
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<Arc<Route<Entry>>> {
        self.backend.route(host, path)
    }

    /// The `https` proxy serving `name`, a ClientHello's server name.
    pub(crate) fn route_sni(&self, name: &str) -> Option<Arc<Route<Entry>>> {
        self.backend.route_sni(name)
    }

    /// Installed sessions and registered proxies.
    pub(crate) fn counts(&self) -> (usize, usize) {
        self.backend.counts()
    }

    /// Every session with its proxies (for the stats endpoint).
    pub(crate) fn sessions(&self) -> Vec<(Session, Vec<Entry>)> {
        self.backend.sessions()
    }
}

/// Stop the listeners of released entries; their keys.
fn stopped(released: Vec<(ProxyKey, Entry)>) -> Vec<ProxyKey> {
    released
        .into_iter()
        .map(|(key, entry)| {
            entry.listener_stop.cancel();
            key
        })
        .collect()
}
