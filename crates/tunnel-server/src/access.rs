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
use crate::{Scope, Shared};

/// The clients' shared bandwidth limits. (The server-wide `allow_ips` / `deny_ips` are
/// live rules: [`crate::rules`].)
#[derive(Debug, Default)]
pub(crate) struct Access {
    /// One limit per client id with a `bandwidth_limit` in its scope, shared by all the
    /// client's proxies (and kept across its reconnects, so reconnecting buys nothing).
    /// Bounded by the clients file, which the operator writes.
    client_rates: Mutex<HashMap<String, Arc<RateLimit>>>,
}

impl Access {
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
    /// The proxy's own bucket, when it has a limit.
    own_rate: Option<Arc<RateLimit>>,
    rates: Vec<Arc<RateLimit>>,
}

/// The lower of a proxy's own limit and the server's cap: a client may lower the cap, never
/// lift it.
fn capped(own: Option<u64>, cap: Option<Bandwidth>) -> Option<Bandwidth> {
    match (own.map(Bandwidth::from_bytes_per_second), cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
        let bandwidth = capped(spec.bandwidth_limit, cap);
        let client_rate = scope
            .and_then(|s| s.bandwidth_limit)
            .map(|b| access.client_rate(client_id, b));
        let own_rate = bandwidth.map(|b| Arc::new(RateLimit::new(b.bytes_per_second())));
        Ok(ProxyLimits::assemble(
            filter,
            bandwidth,
            client_rate,
            own_rate,
        ))
    }

    fn assemble(
        filter: IpFilter,
        bandwidth: Option<Bandwidth>,
        client_rate: Option<Arc<RateLimit>>,
        own_rate: Option<Arc<RateLimit>>,
    ) -> Self {
        let rates = own_rate.iter().chain(&client_rate).cloned().collect();
        ProxyLimits {
            filter,
            bandwidth,
            client_rate,
            own_rate,
            rates,
        }
    }

    /// These rules under a new server cap (a reload), for `spec`'s proxy: its bucket, when it
    /// has one, changes rate at once, for the connections it has too; a proxy limited only
    /// from now on limits its new connections.
    pub(crate) fn under_cap(&self, spec: &ProxySpec, cap: Option<Bandwidth>) -> Self {
        let bandwidth = capped(spec.bandwidth_limit, cap);
        let own_rate = match (&self.own_rate, bandwidth) {
            (Some(rate), b) => {
                rate.set_rate(b.map_or(UNLIMITED, Bandwidth::bytes_per_second));
                Some(rate.clone())
            }
            (None, Some(b)) => Some(Arc::new(RateLimit::new(b.bytes_per_second()))),
            (None, None) => None,
        };
        ProxyLimits::assemble(
            self.filter.clone(),
            bandwidth,
            self.client_rate.clone(),
            own_rate,
        )
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
    if shared.rules.get().filter.permits(peer.ip()) {
        return true;
    }
    count_denied(shared, peer.ip(), "the server's allow_ips / deny_ips");
    false
}

/// Count and warn about a user connection from `ip` refused (or closed) by `rule`.
pub(crate) fn count_denied(shared: &Shared, ip: IpAddr, rule: &str) {
    shared.limit_metrics.denied.fetch_add(1, Ordering::Relaxed);
    warn_denied(shared, ip, rule);
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
            publish_port: Some(7000),
            allow_ips: list(allow),
            deny_ips: list(deny),
            bandwidth_limit: limit,
            ..ProxySpec::new("p", ProxyKind::Tcp)
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
        let access = Access::default();
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
        let access = Access::default();
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
        let access = Access::default();
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
    fn a_new_cap_changes_the_open_bucket_and_limits_an_unlimited_proxy() {
        let access = Access::default();
        let sp = spec(&[], &[], Some(8 << 20));
        let limited = ProxyLimits::new(&access, Some(mib(4)), "c", None, &sp).unwrap();
        let bucket = limited.rates()[0].clone();
        let lowered = limited.under_cap(&sp, Some(mib(1)));
        assert_eq!(lowered.bandwidth, Some(mib(1)));
        assert!(Arc::ptr_eq(&bucket, &lowered.rates()[0]), "the same bucket");
        assert_eq!(bucket.rate(), 1 << 20, "open connections follow");
        let lifted = lowered.under_cap(&sp, None);
        assert_eq!(lifted.bandwidth, Some(mib(8)), "its own limit stays");

        let free = spec(&[], &[], None);
        let none = ProxyLimits::new(&access, None, "c", None, &free).unwrap();
        assert!(none.rates().is_empty());
        let capped = none.under_cap(&free, Some(mib(2)));
        assert_eq!(capped.rates().len(), 1);
        assert_eq!(capped.bandwidth, Some(mib(2)));
    }
}
