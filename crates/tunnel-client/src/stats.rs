//! The client's own stats endpoint (when `stats_bind` is set): its session, proxies and
//! visitors, with live counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tunnel_admin::{Counts, Exposition, StatsSource, Traffic};
use tunnel_mux::ByteCounters;

use crate::{Shared, Status};

/// Live counters of one proxy or visitor of this client. Relaxed atomics: statistics only.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub active: AtomicU64,
    /// `a` is the local socket (the service, or a visitor's application), `b` the stream.
    pub bytes: ByteCounters,
    /// Failed connections are warned about once per window: users (or the server) can make
    /// them fail in bursts.
    pub failures: tunnel_transport::WarnLimit,
    /// A `udp` proxy's or visitor's datagrams (in = toward the service) and flows; shared
    /// with the visitor's socket, which counts its flows itself.
    pub datagrams: Arc<tunnel_mux::DatagramCounters>,
}

/// Counters by name; entries outlive reloads so totals stay monotonic.
#[derive(Debug, Default)]
pub(crate) struct CounterMap(Mutex<HashMap<String, Arc<Counters>>>);

impl CounterMap {
    pub(crate) fn get(&self, name: &str) -> Arc<Counters> {
        self.0.lock().entry(name.to_string()).or_default().clone()
    }

    fn snapshot(&self) -> BTreeMap<String, Arc<Counters>> {
        self.0
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The session's history for the dashboard: since when it is up, how often it came back,
/// the last failure. Written by the reconnect loop, read by `/api/stats`.
#[derive(Debug, Default)]
pub(crate) struct SessionLog {
    /// Unix seconds of the current session's registration; 0 while there is none.
    since: AtomicU64,
    /// Sessions registered so far; every one after the first is a reconnect.
    sessions: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl SessionLog {
    /// A session registered.
    pub(crate) fn connected(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
        self.since.store(unix_now(), Ordering::Relaxed);
    }

    /// The session ended, or an attempt failed, for `why`.
    pub(crate) fn failed(&self, why: &str) {
        self.since.store(0, Ordering::Relaxed);
        // An error text may quote the server; keep a bounded copy.
        let mut why = why.to_owned();
        if why.len() > 500 {
            let mut end = 500;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
        }
        *self.last_error.lock() = Some(why);
    }

    fn since(&self) -> Option<u64> {
        Some(self.since.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    fn reconnects(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed).saturating_sub(1)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Serialize)]
struct Snapshot {
    /// Which engine answers: the dashboard picks its view by it.
    role: &'static str,
    version: &'static str,
    id: String,
    /// `server_addr` as configured; a list is joined with ", ".
    server_addr: String,
    /// The address of the server the live session is on; `null` while disconnected.
    server: Option<String>,
    connected: bool,
    /// Unix seconds the current session registered; `null` while disconnected.
    connected_since: Option<u64>,
    /// Sessions registered after the first.
    reconnects: u64,
    /// Why the last session ended or the last attempt failed; `null` if none has.
    last_error: Option<String>,
    /// TLS connections of the live session (see `connections` in the config); 0 when none.
    connections: usize,
    proxies: Vec<ProxyItem>,
    visitors: Vec<VisitorItem>,
}

/// Live counters of a proxy or visitor.
#[derive(Default, Serialize)]
struct Live {
    connections: u64,
    active_streams: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Only for one that has carried a UDP flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    udp: Option<UdpLive>,
}

/// A `udp` proxy's or visitor's datagrams: in = toward the service, out = back.
#[derive(Default, Serialize)]
struct UdpLive {
    datagrams_in: u64,
    datagrams_out: u64,
    /// Dropped: a full flow queue, a flow that could not open, too many flows.
    datagrams_dropped: u64,
    flows_open: u64,
    flows_total: u64,
}

impl UdpLive {
    fn of(c: &tunnel_mux::DatagramCounters) -> Option<Self> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let total = load(&c.flows_total);
        (total > 0).then(|| UdpLive {
            datagrams_in: load(&c.inbound.datagrams),
            datagrams_out: load(&c.outbound.datagrams),
            datagrams_dropped: load(&c.dropped),
            flows_open: load(&c.flows_open),
            flows_total: total,
        })
    }
}

/// A proxy: its settings (absent for one a reload removed; its counters stay) and counters.
#[derive(Serialize)]
struct ProxyItem {
    /// `proxy/<name>`: the series of `/api/history`.
    key: String,
    name: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    local_addr: Option<String>,
    /// The port users reach: as configured, the one the server gave an automatic proxy
    /// (`null` until it has), or a block's first.
    publish_port: Option<u16>,
    /// `publish_port` as configured when not a plain port: `"auto"` or `"6000-6010"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_ports: Option<String>,
    domains: Vec<String>,
    subdomain: Option<String>,
    locations: Vec<String>,
    /// The load-balancing group it is a member of.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// With a health check: `unknown` (not probed yet), `healthy`, `failing` (still in) or
    /// `withdrawn`.
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'static str>,
    #[serde(flatten)]
    live: Live,
}

/// A visitor: its settings (absent for one a reload removed) and counters.
#[derive(Serialize)]
struct VisitorItem {
    /// `visitor/<name>`: the series of `/api/history`.
    key: String,
    name: String,
    proxy: Option<String>,
    publish_port: Option<u16>,
    bind: Option<String>,
    #[serde(flatten)]
    live: Live,
}

/// The client as a [`StatsSource`].
pub(crate) struct ClientStats(pub Arc<Shared>);

impl ClientStats {
    fn connected(&self) -> bool {
        matches!(*self.0.status.borrow(), Status::Ready(_))
    }

    /// Proxies: `in` = toward the local service (the stream's bytes, `b_to_a`), `out` = back.
    /// Visitors: `in` = from the local application into the tunnel (`a_to_b`), `out` = back.
    fn counters(map: &CounterMap, service_side_is_a: bool) -> Vec<(String, Live)> {
        map.snapshot()
            .into_iter()
            .map(|(name, c)| {
                let b = c.bytes.snapshot();
                let (bytes_in, bytes_out) = if service_side_is_a {
                    (b.b_to_a, b.a_to_b)
                } else {
                    (b.a_to_b, b.b_to_a)
                };
                let d = &c.datagrams;
                let live = Live {
                    connections: c.connections.load(Ordering::Relaxed),
                    active_streams: c.active.load(Ordering::Relaxed),
                    bytes_in: bytes_in + d.inbound.bytes.load(Ordering::Relaxed),
                    bytes_out: bytes_out + d.outbound.bytes.load(Ordering::Relaxed),
                    udp: UdpLive::of(d),
                };
                (name, live)
            })
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        let live = self.0.live.read();
        // Configured ones first (with zero counters before their first connection), then
        // those a reload removed, whose counters remain.
        let mut counters: BTreeMap<String, Live> = Self::counters(&self.0.proxy_counters, true)
            .into_iter()
            .collect();
        let given = match &*self.0.status.borrow() {
            Status::Ready(reply) => crate::publish::given_ports(reply),
            _ => Default::default(),
        };
        let mut names: Vec<&String> = live.proxies.keys().collect();
        names.sort();
        let mut proxies: Vec<ProxyItem> = names
            .into_iter()
            .map(|name| {
                let p = &live.proxies[name];
                ProxyItem {
                    key: format!("proxy/{name}"),
                    name: name.clone(),
                    kind: Some(p.kind.to_string()),
                    local_addr: Some(p.local_addr.clone()),
                    publish_port: p
                        .publish_port
                        .and_then(crate::PublishPort::port)
                        .or_else(|| given.get(name).copied()),
                    publish_ports: p
                        .publish_port
                        .filter(|x| x.port().is_none())
                        .map(|x| x.to_string()),
                    domains: p.http.domains.clone(),
                    subdomain: p.http.subdomain.clone(),
                    locations: p.http.locations.clone(),
                    group: p.group.clone(),
                    health: self.0.health.state(name),
                    live: counters.remove(name).unwrap_or_default(),
                }
            })
            .collect();
        proxies.extend(counters.into_iter().map(|(name, live)| ProxyItem {
            key: format!("proxy/{name}"),
            name,
            kind: None,
            local_addr: None,
            publish_port: None,
            publish_ports: None,
            domains: Vec::new(),
            subdomain: None,
            locations: Vec::new(),
            group: None,
            health: None,
            live,
        }));
        let mut counters: BTreeMap<String, Live> = Self::counters(&self.0.visitor_counters, false)
            .into_iter()
            .collect();
        let mut visitors: Vec<VisitorItem> = live
            .cfg
            .visitors
            .iter()
            .map(|v| VisitorItem {
                key: format!("visitor/{}", v.name),
                name: v.name.clone(),
                proxy: Some(v.proxy.clone()),
                publish_port: Some(v.publish_port),
                bind: Some(v.bind.clone()),
                live: counters.remove(&v.name).unwrap_or_default(),
            })
            .collect();
        visitors.extend(counters.into_iter().map(|(name, live)| VisitorItem {
            key: format!("visitor/{name}"),
            name,
            proxy: None,
            publish_port: None,
            bind: None,
            live,
        }));
        drop(live);
        let log = &self.0.session_log;
        Snapshot {
            role: "client",
            version: env!("CARGO_PKG_VERSION"),
            id: self.0.id.read().clone(),
            server_addr: self.0.cfg.server_addr.to_string(),
            server: self.0.servers.current_addr(),
            connected: self.connected(),
            connected_since: log.since(),
            reconnects: log.reconnects(),
            last_error: log.last_error.lock().clone(),
            connections: self.0.current.read().as_ref().map_or(0, |l| l.len()),
            proxies,
            visitors,
        }
    }
}

impl StatsSource for ClientStats {
    fn prometheus(&self) -> String {
        let s = self.snapshot();
        let mut page = Exposition::new();
        page.gauge(
            "tunnel_client_connected",
            "1 while registered with the server.",
            u64::from(s.connected),
        );
        page.gauge(
            "tunnel_client_server_connections",
            "TLS connections to the server now.",
            s.connections as u64,
        );
        let proxies: Vec<(&str, &Live)> = s
            .proxies
            .iter()
            .map(|p| (p.name.as_str(), &p.live))
            .collect();
        let visitors: Vec<(&str, &Live)> = s
            .visitors
            .iter()
            .map(|v| (v.name.as_str(), &v.live))
            .collect();
        for (what, items) in [("proxy", proxies), ("visitor", visitors)] {
            let f = page.gauge_family(
                &format!("tunnel_{what}_streams_active"),
                "Connections open now.",
            );
            for (name, i) in &items {
                f.sample(&[(what, name)], i.active_streams);
            }
            let f = page.counter_family(
                &format!("tunnel_{what}_connections_total"),
                "Connections served.",
            );
            for (name, i) in &items {
                f.sample(&[(what, name)], i.connections);
            }
            let f = page.counter_family(
                &format!("tunnel_{what}_bytes_total"),
                "Payload bytes: in = toward the service, out = back.",
            );
            for (name, i) in &items {
                f.sample(&[(what, name), ("direction", "in")], i.bytes_in);
                f.sample(&[(what, name), ("direction", "out")], i.bytes_out);
            }
            let f = page.counter_family(
                &format!("tunnel_{what}_datagrams_total"),
                "UDP datagrams: in = toward the service, out = back, dropped = not delivered.",
            );
            for (name, i) in &items {
                let Some(u) = &i.udp else { continue };
                f.sample(&[(what, name), ("direction", "in")], u.datagrams_in);
                f.sample(&[(what, name), ("direction", "out")], u.datagrams_out);
                f.sample(
                    &[(what, name), ("direction", "dropped")],
                    u.datagrams_dropped,
                );
            }
        }
        page.render()
    }

    fn json(&self) -> String {
        let mut body = serde_json::to_string(&self.snapshot())
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        body.push('\n');
        body
    }

    fn traffic(&self) -> Traffic {
        let mut series = Vec::new();
        for (prefix, map, service_side_is_a) in [
            ("proxy", &self.0.proxy_counters, true),
            ("visitor", &self.0.visitor_counters, false),
        ] {
            for (name, l) in Self::counters(map, service_side_is_a) {
                let counts = Counts {
                    bytes_in: l.bytes_in,
                    bytes_out: l.bytes_out,
                    streams: l.active_streams,
                };
                series.push((format!("{prefix}/{name}"), counts));
            }
        }
        Traffic { series }
    }

    /// Healthy while registered with the server.
    fn healthy(&self) -> bool {
        self.connected()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_log_counts_reconnects_and_keeps_a_bounded_last_error() {
        let log = SessionLog::default();
        assert_eq!((log.since(), log.reconnects()), (None, 0));
        log.connected();
        assert!(log.since().is_some_and(|t| t > 1_700_000_000));
        assert_eq!(log.reconnects(), 0);
        log.failed(&"é".repeat(400));
        assert_eq!(log.since(), None);
        let kept = log.last_error.lock().clone().unwrap_or_default();
        assert!(kept.len() <= 500 && kept.len() >= 499, "{}", kept.len());
        log.connected();
        log.failed("lost the server");
        log.connected();
        assert_eq!(log.reconnects(), 2);
        assert_eq!(log.last_error.lock().as_deref(), Some("lost the server"));
    }
}
