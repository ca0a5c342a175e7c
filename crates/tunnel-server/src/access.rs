//! Who may reach a proxy and how fast: `allow_ips` / `deny_ips` (server-wide and per proxy)
//! and `bandwidth_limit` (per proxy, capped by the server's, and per client from its scope).
//!
//! Everything here is enforced by the server, on the user's real address, so neither a
//! client nor its users can lift it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use tracing::warn;
use tunnel_mux::RateLimit;
use tunnel_proto::{Bandwidth, FieldError, IpFilter, ProtoError, ProxySpec};

use crate::error::ConfigProblem;
use crate::registry::ProxyEntry;
use crate::{Scope, ServerConfig, Shared};

/// The server-wide rules, built once at start.
#[derive(Debug)]
pub(crate) struct Access {
    /// `allow_ips` / `deny_ips` of the server config.
    filter: IpFilter,
    /// One limit per client id with a `bandwidth_limit` in its scope, shared by all the
    /// client's proxies (and kept across its reconnects, so reconnecting buys nothing).
    /// Bounded by the clients file, which the operator writes.
    client_rates: Mutex<HashMap<String, Arc<RateLimit>>>,
}

impl Access {
    pub(crate) fn new(cfg: &ServerConfig) -> Self {
        // `problems()` refuses a bad list before start; should one get here, fail closed.
        let filter = cfg.ip_filter().unwrap_or_else(|_| {
            IpFilter::new::<&str>(&[], &["0.0.0.0/0", "::/0"]).unwrap_or_default()
        });
        Access {
            filter,
            client_rates: Mutex::default(),
        }
    }

    fn client_rate(&self, client_id: &str, limit: Bandwidth) -> Arc<RateLimit> {
        let mut rates = self.client_rates.lock();
        let rate = rates
            .entry(client_id.to_owned())
            .or_insert_with(|| Arc::new(RateLimit::new(limit.bytes_per_second())));
        // A reloaded scope takes effect for every connection of the client at once.
        rate.set_rate(limit.bytes_per_second());
        rate.clone()
    }

    /// The clients file was read again: each client's shared limit follows its new scope at
    /// once, for the connections it has too. A limit removed from the scope (or a client
    /// removed from the file) lifts it.
    pub(crate) fn follow_scopes(&self, limit_of: impl Fn(&str) -> Option<Bandwidth>) {
        for (id, rate) in self.client_rates.lock().iter() {
            rate.set_rate(limit_of(id).map_or(UNLIMITED, Bandwidth::bytes_per_second));
        }
    }
}

/// A rate no connection reaches: a lifted limit whose connections still hold its bucket.
const UNLIMITED: u64 = u64::MAX;

/// A config problem for a bad `allow_ips` / `deny_ips` list.
pub(crate) fn ip_problem(e: ProtoError) -> ConfigProblem {
    ConfigProblem::new(e.ip_rule_field().unwrap_or("allow_ips"), e.to_string())
}

/// One proxy's rules, derived from its spec at registration.
#[derive(Debug, Default)]
pub(crate) struct ProxyLimits {
    filter: IpFilter,
    /// The proxy's limit in force: the lower of its own and the server's.
    pub bandwidth: Option<Bandwidth>,
    /// Its client's limit (clients file scope), shared with the client's other proxies.
    client_rate: Option<Arc<RateLimit>>,
    rates: Vec<Arc<RateLimit>>,
}

impl ProxyLimits {
    /// The rules of `spec`, registered by `client_id` under `scope`.
    pub(crate) fn new(
        shared: &Shared,
        client_id: &str,
        scope: Option<&Scope>,
        spec: &ProxySpec,
    ) -> Result<Self, FieldError> {
        let filter = IpFilter::new(&spec.allow_ips, &spec.deny_ips).map_err(|e| FieldError {
            field: e.ip_rule_field().unwrap_or("allow_ips").to_owned(),
            message: e.to_string(),
        })?;
        let own = spec.bandwidth_limit.map(Bandwidth::from_bytes_per_second);
        // The client may lower the server's cap, never lift it.
        let bandwidth = match (own, shared.cfg.bandwidth_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let client_rate = scope
            .and_then(|s| s.bandwidth_limit)
            .map(|b| shared.access.client_rate(client_id, b));
        let mut rates = Vec::new();
        if let Some(b) = bandwidth {
            rates.push(Arc::new(RateLimit::new(b.bytes_per_second())));
        }
        rates.extend(client_rate.clone());
        Ok(ProxyLimits {
            filter,
            bandwidth,
            client_rate,
            rates,
        })
    }

    /// Its client's limit (clients file scope) now, shared with the client's other proxies.
    pub(crate) fn client_bandwidth(&self) -> Option<Bandwidth> {
        let rate = self.client_rate.as_ref()?.rate();
        (rate != UNLIMITED).then(|| Bandwidth::from_bytes_per_second(rate))
    }

    /// The limits a connection of this proxy shares (for [`tunnel_mux::PipeConfig`]).
    pub(crate) fn rates(&self) -> Vec<Arc<RateLimit>> {
        self.rates.clone()
    }
}

/// Whether a user from `peer` may use the published ports and the virtual host at all
/// (server-wide `allow_ips` / `deny_ips`). A refusal is counted and warned about.
pub(crate) fn server_permits(shared: &Shared, peer: SocketAddr) -> bool {
    if shared.access.filter.permits(peer.ip()) {
        return true;
    }
    shared.limit_metrics.denied.fetch_add(1, Ordering::Relaxed);
    warn_denied(shared, peer.ip(), "the server's allow_ips / deny_ips");
    false
}

/// Whether a user at `user` may reach `entry` (its own `allow_ips` / `deny_ips`). A refusal
/// is counted for the proxy and warned about.
pub(crate) fn proxy_permits(shared: &Shared, entry: &ProxyEntry, user: IpAddr) -> bool {
    if entry.limits.read().filter.permits(user) {
        return true;
    }
    entry.counters.denied.fetch_add(1, Ordering::Relaxed);
    let rule = format!("allow_ips / deny_ips of proxy {}", entry.label());
    warn_denied(shared, user, &rule);
    false
}

/// At most one line a minute per source address: a denied host can retry at will.
fn warn_denied(shared: &Shared, ip: IpAddr, rule: &str) {
    let ip = ip.to_canonical();
    if let Some(more) = shared.limit_warnings.check(format!("denied {ip}")) {
        warn!(source = %ip, "user connection denied by {rule}{more}");
    }
}
