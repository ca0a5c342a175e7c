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
    /// The rules of `spec`, registered by `client_id` under `scope`, on a server whose own
    /// `bandwidth_limit` is `cap`.
    pub(crate) fn new(
        access: &Access,
        cap: Option<Bandwidth>,
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
        let bandwidth = match (own, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let client_rate = scope
            .and_then(|s| s.bandwidth_limit)
            .map(|b| access.client_rate(client_id, b));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tunnel_proto::ProxyKind;

    fn spec(allow: &[&str], deny: &[&str], limit: Option<u64>) -> ProxySpec {
        let list = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        ProxySpec {
            name: "p".into(),
            kind: ProxyKind::Tcp,
            publish_port: Some(7000),
            secret: None,
            allow_visitors: Vec::new(),
            http: None,
            idle_timeout: None,
            allow_ips: list(allow),
            deny_ips: list(deny),
            bandwidth_limit: limit,
            group: None,
            group_key: None,
        }
    }

    fn scope(limit: &str) -> Scope {
        Scope {
            bandwidth_limit: Some(limit.parse().unwrap()),
            ..Scope::default()
        }
    }

    fn mib(n: u64) -> Bandwidth {
        Bandwidth::from_bytes_per_second(n << 20)
    }

    #[test]
    fn a_bad_list_from_a_client_is_refused_by_field() {
        let access = Access::new(&ServerConfig::default());
        let e = ProxyLimits::new(&access, None, "c", None, &spec(&[], &["10.0.0.0/33"], None))
            .unwrap_err();
        assert_eq!(e.field, "deny_ips");
        assert!(e.message.contains("\"10.0.0.0/33\""), "{e}");
        let e =
            ProxyLimits::new(&access, None, "c", None, &spec(&["nope"], &[], None)).unwrap_err();
        assert_eq!(e.field, "allow_ips");
    }

    #[test]
    fn the_server_cap_wins_over_a_higher_or_missing_proxy_limit() {
        let access = Access::new(&ServerConfig::default());
        let of = |limit: Option<u64>, cap: Option<Bandwidth>| {
            ProxyLimits::new(&access, cap, "c", None, &spec(&[], &[], limit))
                .unwrap()
                .bandwidth
        };
        assert_eq!(of(Some(10 << 20), Some(mib(2))), Some(mib(2)));
        assert_eq!(of(Some(1 << 20), Some(mib(2))), Some(mib(1)));
        assert_eq!(of(None, Some(mib(2))), Some(mib(2)));
        assert_eq!(of(Some(3 << 20), None), Some(mib(3)));
        assert_eq!(of(None, None), None);
    }

    #[test]
    fn a_client_limit_is_one_bucket_for_all_its_proxies_and_follows_reloads() {
        let access = Access::new(&ServerConfig::default());
        let sc = scope("1MiB");
        let a = ProxyLimits::new(&access, None, "c", Some(&sc), &spec(&[], &[], None)).unwrap();
        let b = ProxyLimits::new(&access, None, "c", Some(&sc), &spec(&[], &[], Some(5))).unwrap();
        let other = ProxyLimits::new(&access, None, "d", Some(&sc), &spec(&[], &[], None)).unwrap();
        let (ra, rb) = (a.rates(), b.rates());
        assert_eq!((ra.len(), rb.len()), (1, 2));
        assert!(Arc::ptr_eq(&ra[0], &rb[1]), "one bucket for client c");
        assert!(
            !Arc::ptr_eq(&ra[0], &other.rates()[0]),
            "another for client d"
        );

        access.follow_scopes(|id| (id == "c").then(|| mib(4)));
        assert_eq!(a.client_bandwidth(), Some(mib(4)));
        assert_eq!(other.client_bandwidth(), None, "d's limit was lifted");
    }

    #[test]
    fn a_bad_server_list_fails_closed() {
        let access = Access::new(&ServerConfig::default().with_deny_ips(&["bad"]));
        assert!(!access.filter.permits("192.0.2.1".parse().unwrap()));
        assert!(!access.filter.permits("::1".parse().unwrap()));
    }
}
