//! Where a proxy lives in the cluster: the question the peer link asks of the registry.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

/// A boxed future, as [`Locate::locate_fresh`] returns.
pub type LocateFuture<'a> = Pin<Box<dyn Future<Output = Option<Located>> + Send + 'a>>;

/// One proxy's registration as the cluster registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The proxy's name.
    pub name: String,
    /// The registry key's port (0 for a private proxy).
    pub publish_port: u16,
    /// The owning server's id.
    pub server_id: String,
    /// Where the owning server's peer port answers (`peer_advertise`, `host:port`).
    pub peer_addr: String,
    /// The registration's epoch.
    pub epoch: u64,
    /// Whether this server is the owner.
    pub local: bool,
    /// A UDP publish port (only [`Locate::published_ports`] says; false elsewhere).
    pub udp: bool,
}

/// The registry as the peer link needs it. The etcd-backed cluster node implements it; so
/// does [`StaticLocator`], for tests and embedding.
pub trait Locate: Send + Sync + fmt::Debug + 'static {
    /// The owner of `(name, publish_port)` from the local cache, without waiting.
    fn locate(&self, name: &str, publish_port: u16) -> Option<Located>;

    /// The owner as the registry says right now (a linearizable read): used once after a
    /// peer answered `NotHere`.
    fn locate_fresh<'a>(&'a self, name: &'a str, publish_port: u16) -> LocateFuture<'a>;

    /// Every published port of the cluster and who owns it (`publish_mode = "all"`).
    fn published_ports(&self) -> Vec<Located>;

    /// The server whose client registered virtual host `domain`, spelled as registered
    /// (`app.example.com`, `*.example.com`, `<subdomain>.<subdomain_host>`), from the local
    /// cache, without waiting. [`Located::name`] is the domain, its port 0. The default: no
    /// registry of domains, so a virtual host routes to local proxies only.
    fn locate_domain(&self, domain: &str) -> Option<Located> {
        let _ = domain;
        None
    }

    /// [`Locate::locate_domain`] as the registry says right now: used once after the
    /// domain's server answered `NotHere`.
    fn locate_domain_fresh<'a>(&'a self, domain: &'a str) -> LocateFuture<'a> {
        Box::pin(std::future::ready(self.locate_domain(domain)))
    }

    /// Changes whenever [`Locate::published_ports`] may have changed.
    fn port_changes(&self) -> watch::Receiver<u64>;
}

/// A [`Locate`] over a fixed, editable table: no registry, no network.
///
/// [`StaticLocator::set_stale`] makes the cached and the fresh answer differ, as a registry
/// cache does for a moment after an owner moved.
pub struct StaticLocator {
    cached: Mutex<HashMap<(String, u16), Located>>,
    fresh: Mutex<HashMap<(String, u16), Located>>,
    fresh_lookups: AtomicUsize,
    changes: watch::Sender<u64>,
    /// Domain → (cached, fresh) owner.
    domains: Mutex<HashMap<String, (Located, Located)>>,
}

impl fmt::Debug for StaticLocator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticLocator")
            .field("entries", &self.cached.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for StaticLocator {
    fn default() -> Self {
        Self {
            cached: Mutex::default(),
            fresh: Mutex::default(),
            fresh_lookups: AtomicUsize::new(0),
            changes: watch::channel(0).0,
            domains: Mutex::default(),
        }
    }
}

impl StaticLocator {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Record `at` as the owner, both cached and fresh.
    pub fn set(&self, at: Located) {
        self.set_stale(at.clone(), at);
    }

    /// Record a cached answer that differs from the fresh one.
    pub fn set_stale(&self, cached: Located, fresh: Located) {
        let key = (cached.name.clone(), cached.publish_port);
        self.cached.lock().insert(key.clone(), cached);
        self.fresh.lock().insert(key, fresh);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Forget `(name, publish_port)`.
    pub fn remove(&self, name: &str, publish_port: u16) {
        let key = (name.to_owned(), publish_port);
        self.cached.lock().remove(&key);
        self.fresh.lock().remove(&key);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Record `at` as the server of virtual host `domain` (as registered), cached and fresh.
    pub fn set_domain(&self, domain: &str, at: Located) {
        self.set_domain_stale(domain, at.clone(), at);
    }

    /// Record a cached owner of `domain` that differs from the fresh one.
    pub fn set_domain_stale(&self, domain: &str, cached: Located, fresh: Located) {
        self.domains
            .lock()
            .insert(domain.to_owned(), (cached, fresh));
    }

    /// Forget virtual host `domain`.
    pub fn remove_domain(&self, domain: &str) {
        self.domains.lock().remove(domain);
    }

    /// How many fresh lookups were made (of proxies and of domains).
    pub fn fresh_lookups(&self) -> usize {
        self.fresh_lookups.load(Ordering::Relaxed)
    }
}

impl Locate for StaticLocator {
    fn locate(&self, name: &str, publish_port: u16) -> Option<Located> {
        self.cached
            .lock()
            .get(&(name.to_owned(), publish_port))
            .cloned()
    }

    fn locate_fresh<'a>(&'a self, name: &'a str, publish_port: u16) -> LocateFuture<'a> {
        self.fresh_lookups.fetch_add(1, Ordering::Relaxed);
        let found = self
            .fresh
            .lock()
            .get(&(name.to_owned(), publish_port))
            .cloned();
        Box::pin(std::future::ready(found))
    }

    fn published_ports(&self) -> Vec<Located> {
        self.cached
            .lock()
            .values()
            .filter(|l| l.publish_port != 0)
            .cloned()
            .collect()
    }

    fn port_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn locate_domain(&self, domain: &str) -> Option<Located> {
        self.domains
            .lock()
            .get(domain)
            .map(|(cached, _)| cached.clone())
    }

    fn locate_domain_fresh<'a>(&'a self, domain: &'a str) -> LocateFuture<'a> {
        self.fresh_lookups.fetch_add(1, Ordering::Relaxed);
        let found = self.domains.lock().get(domain).map(|(_, f)| f.clone());
        Box::pin(std::future::ready(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str, port: u16, epoch: u64, local: bool) -> Located {
        Located {
            name: name.into(),
            publish_port: port,
            server_id: "b".into(),
            peer_addr: "127.0.0.1:1".into(),
            epoch,
            local,
            udp: false,
        }
    }

    #[tokio::test]
    async fn a_stale_entry_differs_from_the_fresh_one_and_lookups_are_counted() {
        let l = StaticLocator::new();
        l.set_stale(at("db", 0, 1, false), at("db", 0, 2, false));
        assert_eq!(l.locate("db", 0).map(|x| x.epoch), Some(1));
        assert_eq!(l.locate_fresh("db", 0).await.map(|x| x.epoch), Some(2));
        assert_eq!(l.fresh_lookups(), 1);
        assert_eq!(l.locate("db", 1), None, "the port is part of the key");
    }

    #[tokio::test]
    async fn domains_have_their_own_table_with_stale_and_fresh_answers() {
        let l = StaticLocator::new();
        assert_eq!(l.locate_domain("app.test"), None);
        l.set_domain_stale(
            "*.app.test",
            at("*.app.test", 0, 3, false),
            at("*.app.test", 0, 4, false),
        );
        assert_eq!(l.locate_domain("*.app.test").map(|x| x.epoch), Some(3));
        let fresh = l.locate_domain_fresh("*.app.test").await;
        assert_eq!(fresh.map(|x| x.epoch), Some(4));
        assert_eq!(l.fresh_lookups(), 1);
        assert_eq!(l.locate("*.app.test", 0), None, "not a proxy");
        l.remove_domain("*.app.test");
        assert_eq!(l.locate_domain("*.app.test"), None);
    }

    #[tokio::test]
    async fn the_port_feed_lists_published_ports_and_signals_changes() {
        let l = StaticLocator::new();
        let mut changes = l.port_changes();
        l.set(at("web", 8080, 1, false));
        l.set(at("db", 0, 1, false));
        assert!(changes.has_changed().expect("the locator lives"));
        changes.borrow_and_update();
        let ports: Vec<u16> = l.published_ports().iter().map(|x| x.publish_port).collect();
        assert_eq!(ports, [8080], "private proxies have no port to answer");
        l.remove("web", 8080);
        assert!(changes.has_changed().expect("the locator lives"));
        assert!(l.published_ports().is_empty());
    }
}
