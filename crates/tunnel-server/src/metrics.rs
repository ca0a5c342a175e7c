//! What the stats endpoint reports: server-wide counters, a snapshot of clients and proxies,
//! and their Prometheus and JSON renderings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use tunnel_admin::{Counts, Event, EventLog, Exposition, Traffic};

use crate::Shared;

/// Upper bounds (seconds) of the handshake histogram buckets.
const HANDSHAKE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Server-wide counters. Relaxed atomics: statistics, not synchronisation.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    started: Instant,
    pub auth_failures: AtomicU64,
    handshake_buckets: [AtomicU64; HANDSHAKE_BUCKETS.len()],
    handshake_count: AtomicU64,
    /// Of those, how many resumed a TLS session with a ticket.
    handshake_resumed: AtomicU64,
    handshake_micros: AtomicU64,
    pub vhost: VhostMetrics,
    /// Connections closed before TLS by the pre-authentication limits, by reason.
    pub preauth_refused: PreAuthRefusals,
    /// Logins refused before their proof was checked: the address is blocked for wrong keys.
    pub auth_refused_blocked: AtomicU64,
    /// Logins refused before their proof was checked: `max_auth_failures_per_second`.
    pub auth_refused_rate: AtomicU64,
    /// Recent refusals for the dashboard (`events` in `/api/stats`).
    pub events: EventLog,
}

/// Why connections were closed before TLS.
#[derive(Debug, Default)]
pub(crate) struct PreAuthRefusals {
    pub per_source: AtomicU64,
    pub full: AtomicU64,
    pub early_drop: AtomicU64,
    pub first_byte_timeout: AtomicU64,
    pub blocked: AtomicU64,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            started: Instant::now(),
            auth_failures: AtomicU64::new(0),
            handshake_buckets: Default::default(),
            handshake_count: AtomicU64::new(0),
            handshake_resumed: AtomicU64::new(0),
            handshake_micros: AtomicU64::new(0),
            vhost: VhostMetrics::default(),
            preauth_refused: PreAuthRefusals::default(),
            auth_refused_blocked: AtomicU64::new(0),
            auth_refused_rate: AtomicU64::new(0),
            events: EventLog::new(),
        }
    }
}

impl ServerMetrics {
    /// Record one successful handshake (TLS + authentication) that took `d`; `resumed`:
    /// its TLS session was resumed with a ticket.
    pub(crate) fn observe_handshake(&self, d: Duration, resumed: bool) {
        if resumed {
            self.handshake_resumed.fetch_add(1, Ordering::Relaxed);
        }
        let secs = d.as_secs_f64();
        for (bound, bucket) in HANDSHAKE_BUCKETS.iter().zip(&self.handshake_buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.handshake_count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.handshake_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Record a refusal for the dashboard's recent events: `kind` is one of [`EventKind`]'s.
    /// O(1) and a short lock: callable on every refused connection of a flood.
    pub(crate) fn event(
        &self,
        kind: EventKind,
        source: IpAddr,
        client: Option<&str>,
        reason: &str,
    ) {
        self.events
            .record(kind.as_str(), &source.to_string(), client, reason);
        crate::credentials::audit::metrics_event(kind, source, client, reason);
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What a recent event reports (`kind` in `/api/stats` `events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A client's login with a wrong auth key.
    AuthFailure,
    /// A login refused before its proof was checked (blocked address, server-wide rate).
    LoginRefused,
    /// A proxy, visitor or whole registration refused.
    RegisterRefused,
    /// Wrong basic-auth credentials on the virtual host.
    VhostAuthFailure,
    /// A virtual-host login refused unchecked after repeated failures.
    VhostLoginRefused,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::AuthFailure => "auth_failure",
            EventKind::LoginRefused => "login_refused",
            EventKind::RegisterRefused => "register_refused",
            EventKind::VhostAuthFailure => "vhost_auth_failure",
            EventKind::VhostLoginRefused => "vhost_login_refused",
        }
    }
}

/// Everything the endpoint shows, taken at one moment.
#[derive(Debug, Serialize)]
pub(crate) struct Snapshot {
    /// Which engine answers: the dashboard picks its view by it.
    pub role: &'static str,
    pub version: &'static str,
    pub uptime_seconds: u64,
    pub auth_failures: u64,
    pub totals: Totals,
    pub clients: Vec<ClientStats>,
    /// Recent refusals, newest first.
    pub events: Vec<Event>,
    /// This server's cluster; `null` in single-server mode.
    pub cluster: Option<crate::cluster::ClusterStats>,
}

/// Sums over all clients.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Totals {
    pub clients: usize,
    pub proxies: usize,
    pub active_streams: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClientStats {
    pub id: String,
    pub address: String,
    /// Unix time, seconds.
    pub connected_since: u64,
    pub connected_seconds: u64,
    pub transport: String,
    /// TLS connections the client's streams are spread over (its `connections`).
    pub connections: usize,
    /// Streams open now on each of those connections, the first one first.
    pub streams_per_connection: Vec<usize>,
    pub active_streams: usize,
    /// Sums over its proxies.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub proxies: Vec<ProxyStats>,
    pub visitors: Vec<VisitorStats>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ProxyStats {
    /// `<client id>/<proxy name>`: unique on the server (names are unique per client only).
    pub key: String,
    pub name: String,
    /// The client id that registered it.
    pub owner: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub publish_port: Option<u16>,
    /// How the client asked for the port when not as a number: `"auto"`, or the block
    /// `"6000-6010"` this port belongs to (each port of a block is listed on its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_ports: Option<String>,
    /// Host names an `http`/`http2`/`https` proxy is served on (normalised); empty otherwise.
    pub domains: Vec<String>,
    /// The subdomain it claims of the server's `subdomain_host`, if any.
    pub subdomain: Option<String>,
    /// Path prefixes within those hosts (normalised); empty means `/`.
    pub locations: Vec<String>,
    pub active_streams: u64,
    pub connections_public: u64,
    pub connections_visitor: u64,
    /// `connections_public` + `connections_visitor`.
    pub connections_total: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// User connections refused by its `allow_ips` / `deny_ips`.
    pub denied_connections: u64,
    /// Its bandwidth limit in force (`"10MiB"` per second, each direction), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<String>,
    /// Its client's limit (clients file scope), shared by the client's proxies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_bandwidth_limit: Option<String>,
    /// Datagrams and flows of a `udp` proxy; absent for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpStats>,
}

/// A `udp` proxy's datagrams (in = toward the service) and flows (one per user address).
#[derive(Debug, Serialize)]
pub(crate) struct UdpStats {
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub flows_open: u64,
    pub flows_total: u64,
    /// Dropped: a flow's queue was full, no flow could be opened, or too many flows.
    pub datagrams_dropped: u64,
}

impl UdpStats {
    fn of(c: &tunnel_mux::DatagramCounters) -> Self {
        UdpStats {
            datagrams_in: c.inbound.datagrams.load(Ordering::Relaxed),
            datagrams_out: c.outbound.datagrams.load(Ordering::Relaxed),
            flows_open: c.flows_open.load(Ordering::Relaxed),
            flows_total: c.flows_total.load(Ordering::Relaxed),
            datagrams_dropped: c.dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct VisitorStats {
    /// `<client id>/<visitor name>`.
    pub key: String,
    pub name: String,
    pub proxy: String,
    pub publish_port: u16,
}

/// `<client id>/<proxy name>`, and `:<port>` for a port of a block, whose ports are
/// entries (and history series) of their own.
fn stats_key(client: &str, spec: &tunnel_proto::ProxySpec) -> String {
    match (spec.publish_ports, spec.publish_port) {
        (Some(tunnel_proto::PortRequest::Block { .. }), Some(port)) => {
            format!("{client}/{}:{port}", spec.name)
        }
        _ => format!("{client}/{}", spec.name),
    }
}

pub(crate) fn snapshot(shared: &Shared) -> Snapshot {
    let sessions = shared.registry.sessions();
    let mut clients: Vec<ClientStats> = sessions
        .iter()
        .map(|(s, entries)| {
            let mut proxies: Vec<ProxyStats> = entries
                .iter()
                .map(|e| {
                    let spec = e.spec.read();
                    let c = &e.counters;
                    let bytes = c.bytes.snapshot();
                    let public = c.public_connections.load(Ordering::Relaxed);
                    let visitor = c.visitor_connections.load(Ordering::Relaxed);
                    let limits = e.limits.read().clone();
                    ProxyStats {
                        key: stats_key(&s.client_id, &spec),
                        name: spec.name.clone(),
                        owner: s.client_id.clone(),
                        kind: spec.kind.to_string(),
                        publish_port: spec.publish_port,
                        publish_ports: spec.publish_ports.map(|r| match r {
                            tunnel_proto::PortRequest::Auto => "auto".to_owned(),
                            tunnel_proto::PortRequest::Block { first, last } => {
                                format!("{first}-{last}")
                            }
                        }),
                        domains: crate::registry::proxy_domains(&spec),
                        subdomain: spec.http.as_ref().and_then(|h| h.subdomain.clone()),
                        locations: crate::registry::proxy_locations(&spec),
                        active_streams: c.active_streams.load(Ordering::Relaxed),
                        connections_public: public,
                        connections_visitor: visitor,
                        connections_total: public.saturating_add(visitor),
                        // A UDP proxy's payload is counted per datagram, not by a pipe.
                        bytes_in: bytes.a_to_b + c.udp.inbound.bytes.load(Ordering::Relaxed),
                        bytes_out: bytes.b_to_a + c.udp.outbound.bytes.load(Ordering::Relaxed),
                        denied_connections: c.denied.load(Ordering::Relaxed),
                        bandwidth_limit: limits.bandwidth.map(|b| b.to_string()),
                        client_bandwidth_limit: limits.client_bandwidth().map(|b| b.to_string()),
                        udp: (spec.kind == tunnel_proto::ProxyKind::Udp)
                            .then(|| UdpStats::of(&c.udp)),
                    }
                })
                .collect();
            proxies.sort_by(|a, b| a.name.cmp(&b.name));
            let lanes = s.lanes.all();
            let since = s
                .connected_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            ClientStats {
                id: s.client_id.clone(),
                address: s.peer.to_string(),
                connected_since: since,
                connected_seconds: SystemTime::now()
                    .duration_since(s.connected_at)
                    .unwrap_or_default()
                    .as_secs(),
                transport: s.transport.to_string(),
                connections: lanes.len(),
                streams_per_connection: lanes.iter().map(|l| l.open_streams()).collect(),
                active_streams: s.open_streams(),
                bytes_in: proxies.iter().map(|p| p.bytes_in).sum(),
                bytes_out: proxies.iter().map(|p| p.bytes_out).sum(),
                proxies,
                visitors: s
                    .visitors
                    .read()
                    .iter()
                    .map(|v| VisitorStats {
                        key: format!("{}/{}", s.client_id, v.name),
                        name: v.name.clone(),
                        proxy: v.proxy.clone(),
                        publish_port: v.publish_port,
                    })
                    .collect(),
            }
        })
        .collect();
    clients.sort_by(|a, b| a.id.cmp(&b.id));
    let mut totals = Totals {
        clients: clients.len(),
        ..Totals::default()
    };
    for p in clients.iter().flat_map(|c| &c.proxies) {
        totals.proxies += 1;
        totals.active_streams += p.active_streams;
        totals.bytes_in += p.bytes_in;
        totals.bytes_out += p.bytes_out;
    }
    Snapshot {
        role: "server",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: shared.metrics.uptime().as_secs(),
        auth_failures: shared.metrics.auth_failures.load(Ordering::Relaxed),
        totals,
        clients,
        events: shared.metrics.events.recent(),
        cluster: shared.cluster.as_ref().map(|n| {
            let mut c = n.stats();
            if let Some(p) = &shared.peer {
                c.peers = p
                    .traffic
                    .stats(&c.server_id, c.servers.iter().map(|s| &*s.id));
            }
            c
        }),
    }
}

/// Each proxy's cumulative counters by its `key`, for the endpoint's history: lighter than
/// a [`snapshot`] (no strings but the keys), taken every second.
pub(crate) fn traffic(shared: &Shared) -> Traffic {
    let mut series = Vec::new();
    for (s, entries) in shared.registry.sessions() {
        for e in entries {
            let bytes = e.counters.bytes.snapshot();
            let key = format!("{}/{}", s.client_id, e.spec.read().name);
            series.push((
                key,
                Counts {
                    bytes_in: bytes.a_to_b,
                    bytes_out: bytes.b_to_a,
                    streams: e.counters.active_streams.load(Ordering::Relaxed),
                },
            ));
        }
    }
    Traffic { series }
}

/// Per-proxy sums by name: two clients may both have a proxy "web" on different ports.
#[derive(Default)]
struct Sums {
    active: u64,
    public: u64,
    visitor: u64,
    bytes_in: u64,
    bytes_out: u64,
    denied: u64,
}

/// The `udp` proxies' datagrams and flows, summed by proxy name.
fn prometheus_udp(page: &mut Exposition, snap: &Snapshot) {
    let mut by_proxy: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for p in snap.clients.iter().flat_map(|c| &c.proxies) {
        if let Some(u) = &p.udp {
            let s = by_proxy.entry(&p.name).or_default();
            s[0] += u.datagrams_in;
            s[1] += u.datagrams_out;
            s[2] += u.flows_open;
            s[3] += u.datagrams_dropped;
        }
    }
    let f = page.counter_family(
        "tunnel_udp_datagrams_total",
        "Datagrams per udp proxy: in = toward the service, out = back.",
    );
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name), ("direction", "in")], s[0]);
        f.sample(&[("proxy", name), ("direction", "out")], s[1]);
    }
    let f = page.gauge_family("tunnel_udp_flows", "UDP flows (user addresses) open now.");
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name)], s[2]);
    }
    let f = page.counter_family(
        "tunnel_udp_dropped_total",
        "Datagrams dropped: a full flow queue, a flow that could not open, too many flows.",
    );
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name)], s[3]);
    }
}

/// Prometheus text exposition format, version 0.0.4.
pub(crate) fn prometheus(shared: &Shared, snap: &Snapshot) -> String {
    let mut by_proxy: BTreeMap<&str, Sums> = BTreeMap::new();
    let mut proxies = 0;
    for p in snap.clients.iter().flat_map(|c| &c.proxies) {
        proxies += 1;
        let s = by_proxy.entry(&p.name).or_default();
        s.active += p.active_streams;
        s.public += p.connections_public;
        s.visitor += p.connections_visitor;
        s.bytes_in += p.bytes_in;
        s.bytes_out += p.bytes_out;
        s.denied += p.denied_connections;
    }
    let mut page = Exposition::new();
    page.gauge(
        "tunnel_clients",
        "Clients connected now.",
        snap.clients.len() as u64,
    );
    page.gauge(
        "tunnel_proxies",
        "Proxies registered now, public and private.",
        proxies,
    );
    let f = page.gauge_family("tunnel_streams_active", "Streams open now, per proxy.");
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name)], s.active);
    }
    let f = page.counter_family(
        "tunnel_connections_total",
        "Connections served, per proxy, from the public port or visitors.",
    );
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name), ("kind", "public")], s.public);
        f.sample(&[("proxy", name), ("kind", "visitor")], s.visitor);
    }
    let f = page.counter_family(
        "tunnel_bytes_total",
        "Payload bytes per proxy: in = toward the service, out = back.",
    );
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name), ("direction", "in")], s.bytes_in);
        f.sample(&[("proxy", name), ("direction", "out")], s.bytes_out);
    }
    let f = page.counter_family(
        "tunnel_denied_connections_total",
        "User connections refused by a proxy's allow_ips / deny_ips, per proxy.",
    );
    for (name, s) in &by_proxy {
        f.sample(&[("proxy", name)], s.denied);
    }
    prometheus_udp(&mut page, snap);
    crate::group::prometheus(shared, &mut page);
    page.counter(
        "tunnel_auth_failures_total",
        "Logins refused for a wrong auth key.",
        snap.auth_failures,
    );
    let m = &shared.metrics;
    let buckets: Vec<(f64, u64)> = HANDSHAKE_BUCKETS
        .iter()
        .zip(&m.handshake_buckets)
        .map(|(bound, n)| (*bound, n.load(Ordering::Relaxed)))
        .collect();
    page.histogram(
        "tunnel_handshake_seconds",
        "Time from TCP accept to an authenticated client.",
        &buckets,
        m.handshake_micros.load(Ordering::Relaxed) as f64 / 1e6,
        m.handshake_count.load(Ordering::Relaxed),
    );
    page.counter(
        "tunnel_handshakes_resumed_total",
        "Authenticated handshakes whose TLS session resumed with a ticket (no certificate signed).",
        m.handshake_resumed.load(Ordering::Relaxed),
    );
    m.vhost.render(&mut page);
    admission(&mut page, m);
    prometheus_limits(&mut page, &shared.limit_metrics);
    page.gauge(
        "tunnel_public_connections",
        "Connections open now on the published ports.",
        shared.public_sources.total() as u64,
    );
    if let Some(c) = &snap.cluster {
        page.gauge(
            "tunnel_cluster_servers",
            "Servers in the cluster registry, this one included.",
            c.servers.len() as u64,
        );
        page.gauge(
            "tunnel_cluster_lease_alive",
            "1 while this server's cluster lease was renewed within its TTL, else 0.",
            u64::from(c.lease == "alive"),
        );
        page.gauge(
            "tunnel_cluster_etcd_up",
            "1 while the last call to the cluster store was answered and the lease is alive.",
            u64::from(c.etcd.healthy),
        );
        page.counter(
            "tunnel_cluster_etcd_requests_total",
            "Calls made to the cluster store.",
            c.etcd.requests,
        );
        page.counter(
            "tunnel_cluster_etcd_failures_total",
            "Calls the cluster store did not answer, and watches that broke.",
            c.etcd.failures,
        );
        page.counter(
            "tunnel_cluster_etcd_writes_total",
            "Writes to the cluster store: transactions that put or delete, lease grants and revokes.",
            c.etcd.writes,
        );
        page.counter(
            "tunnel_cluster_etcd_keepalives_total",
            "Lease renewals sent to the cluster store.",
            c.etcd.keepalives,
        );
    }
    if let Some(p) = &shared.peer {
        let peers = match &snap.cluster {
            Some(c) => c.peers.clone(),
            None => p.traffic.stats(&p.cfg.server_id, []),
        };
        crate::peer::PeerTraffic::render(&mut page, &peers);
    }
    page.render()
}

/// Append counters as `(name, help, value)` rows.
fn counters(page: &mut Exposition, rows: &[(&str, &str, &AtomicU64)]) {
    for (name, help, v) in rows {
        page.counter(name, help, v.load(Ordering::Relaxed));
    }
}

/// Counters of the limits on public connections and client streams (issue #13, item 3 and 8).
#[derive(Debug, Default)]
pub(crate) struct LimitMetrics {
    /// Public connections closed for moving no byte for their proxy's `idle_timeout`.
    pub idle_closed: AtomicU64,
    /// Public connections refused because their source held `max_conns_per_source`.
    pub source_refused: AtomicU64,
    /// Connections refused for the owner's `max_streams_per_client` or a proxy's fair share.
    pub streams_refused: AtomicU64,
    /// Client streams refused for too many unfinished headers.
    pub headers_refused: AtomicU64,
    /// User connections refused by the server-wide `allow_ips` / `deny_ips`.
    pub denied: AtomicU64,
}

/// Appends the [`LimitMetrics`] to a Prometheus page.
pub(crate) fn prometheus_limits(page: &mut Exposition, m: &LimitMetrics) {
    counters(
        page,
        &[
            (
                "tunnel_idle_closed_total",
                "Public connections closed after idle_timeout without traffic.",
                &m.idle_closed,
            ),
            (
                "tunnel_source_refused_total",
                "Public connections refused: their address held max_conns_per_source.",
                &m.source_refused,
            ),
            (
                "tunnel_streams_refused_total",
                "Public or visitor connections refused: max_streams_per_client or a proxy's fair share.",
                &m.streams_refused,
            ),
            (
                "tunnel_stream_headers_refused_total",
                "Client streams refused: too many still sending their header.",
                &m.headers_refused,
            ),
            (
                "tunnel_server_denied_connections_total",
                "User connections refused by the server's allow_ips / deny_ips.",
                &m.denied,
            ),
        ],
    );
}

/// Counters of the HTTP virtual host's defences.
#[derive(Debug, Default)]
pub(crate) struct VhostMetrics {
    /// Wrong basic-auth credentials.
    pub auth_failures: AtomicU64,
    /// Logins refused unchecked because their source failed too often.
    pub auth_refused: AtomicU64,
    /// Connections closed at accept by `vhost_max_conns(_per_source)`.
    pub conns_refused: AtomicU64,
    /// HTTPS virtual-host connections closed at accept by the same limits.
    pub https_conns_refused: AtomicU64,
    /// HTTPS virtual-host connections refused for their ClientHello: a name no proxy serves,
    /// no name, or no TLS.
    pub https_unrouted: AtomicU64,
    /// HTTPS virtual-host connections closed without a whole ClientHello in time.
    pub https_hello_timeouts: AtomicU64,
}

impl VhostMetrics {
    fn render(&self, page: &mut Exposition) {
        counters(
            page,
            &[
                (
                    "tunnel_vhost_auth_failures_total",
                    "Virtual-host requests with wrong basic-auth credentials.",
                    &self.auth_failures,
                ),
                (
                    "tunnel_vhost_auth_refused_total",
                    "Virtual-host logins refused unchecked after repeated failures from their source.",
                    &self.auth_refused,
                ),
                (
                    "tunnel_vhost_connections_refused_total",
                    "Virtual-host connections closed at accept by vhost_max_conns or vhost_max_conns_per_source.",
                    &self.conns_refused,
                ),
                (
                    "tunnel_vhost_https_connections_refused_total",
                    "HTTPS virtual-host connections closed at accept by vhost_max_conns or vhost_max_conns_per_source.",
                    &self.https_conns_refused,
                ),
                (
                    "tunnel_vhost_https_unrouted_total",
                    "HTTPS virtual-host connections refused for their ClientHello: a server name no proxy serves, no name, or not TLS.",
                    &self.https_unrouted,
                ),
                (
                    "tunnel_vhost_https_hello_timeouts_total",
                    "HTTPS virtual-host connections closed without a whole ClientHello within the vhost timeouts.",
                    &self.https_hello_timeouts,
                ),
            ],
        );
    }
}

/// The pre-authentication limits' counters.
fn admission(page: &mut Exposition, m: &ServerMetrics) {
    let r = &m.preauth_refused;
    let f = page.counter_family(
        "tunnel_preauth_refused_total",
        "Connections closed before TLS by the pre-authentication limits.",
    );
    for (reason, n) in [
        ("per_source", &r.per_source),
        ("full", &r.full),
        ("early_drop", &r.early_drop),
        ("first_byte_timeout", &r.first_byte_timeout),
        ("blocked", &r.blocked),
    ] {
        f.sample(&[("reason", reason)], n.load(Ordering::Relaxed));
    }
    let f = page.counter_family(
        "tunnel_auth_refused_total",
        "Logins refused before their proof was checked.",
    );
    for (reason, n) in [
        ("blocked", &m.auth_refused_blocked),
        ("rate", &m.auth_refused_rate),
    ] {
        f.sample(&[("reason", reason)], n.load(Ordering::Relaxed));
    }
}
