//! The live rules: the top-level settings that govern who may connect and what a client may
//! publish, which `ServerHandle::reload` may change while clients are connected.
//!
//! Every check site takes a snapshot ([`Live::get`]) and releases the lock at once, so a
//! reload swaps the whole set without waiting for anyone and nobody sees half of one.

mod apply;
mod restart;

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;
use tunnel_proto::{Bandwidth, IpFilter};

use crate::{PortRanges, ServerConfig, Shared};

pub(crate) use apply::reload;
pub use apply::ReloadReport;

/// Why a session made with the shared key ends when a reload changes that key.
pub(crate) const SHARED_KEY_CHANGED: &str =
    "the server's shared auth_key changed: log in with the new key";

/// One consistent set of the reloadable rules.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Ports clients may publish on (`allow_ports`).
    pub(crate) allow_ports: PortRanges,
    /// Server-wide `allow_ips` / `deny_ips`, for published ports and the virtual host.
    pub(crate) filter: IpFilter,
    /// Every proxy's cap (`bandwidth_limit`).
    pub(crate) bandwidth_limit: Option<Bandwidth>,
    /// `max_proxies_per_client`.
    pub(crate) max_proxies_per_client: usize,
    /// `max_streams_per_client`, for sessions that start from now on.
    pub(crate) max_streams_per_client: usize,
}

impl Rules {
    /// The rules of `cfg`, whose `problems()` the caller has checked.
    pub(crate) fn of(cfg: &ServerConfig) -> Self {
        // A bad list is refused before start and before a reload; should one get here,
        // fail closed.
        let filter = cfg.ip_filter().unwrap_or_else(|_| {
            IpFilter::new::<&str>(&[], &["0.0.0.0/0", "::/0"]).unwrap_or_default()
        });
        Rules {
            allow_ports: cfg.allow_ports.clone(),
            filter,
            bandwidth_limit: cfg.bandwidth_limit,
            max_proxies_per_client: cfg.max_proxies_per_client,
            max_streams_per_client: cfg.max_streams_per_client,
        }
    }
}

/// The rules in force, swapped whole by a reload.
pub(crate) struct Live {
    /// A watch channel rather than a lock: open user connections wait on it to learn of a
    /// newly denied network.
    current: watch::Sender<Arc<Rules>>,
    /// The config last put in force, which the next reload reports its changes against.
    /// Held by a reload from start to end.
    applied: Mutex<ServerConfig>,
}

impl Live {
    pub(crate) fn new(cfg: &ServerConfig) -> Self {
        Live {
            current: watch::Sender::new(Arc::new(Rules::of(cfg))),
            applied: Mutex::new(cfg.clone()),
        }
    }

    /// The rules now; hold the snapshot, not the borrow.
    pub(crate) fn get(&self) -> Arc<Rules> {
        self.current.borrow().clone()
    }

    /// Put `new` in force; returns the rules it replaced.
    fn swap(&self, new: Rules) -> Arc<Rules> {
        self.current.send_replace(Arc::new(new))
    }
}

/// Resolves once a reload denies `ip` server-wide (`allow_ips` / `deny_ips`), counted and
/// warned about as a refused connection: an open user connection from it then closes.
pub(crate) async fn denied(shared: &Shared, ip: IpAddr) {
    let mut rules = shared.rules.current.subscribe();
    loop {
        if rules.changed().await.is_err() {
            // The server is gone; its connections end otherwise.
            return std::future::pending().await;
        }
        let permits = rules.borrow_and_update().filter.permits(ip);
        if !permits {
            crate::access::count_denied(shared, ip, "the server's reloaded allow_ips / deny_ips");
            return;
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Live").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_server_list_fails_closed() {
        let rules = Rules::of(&ServerConfig::default().with_deny_ips(&["bad"]));
        for ip in ["192.0.2.1", "::1"] {
            assert!(!rules.filter.permits(ip.parse().expect("an address")));
        }
    }
}
