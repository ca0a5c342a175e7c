//! The client's own stats endpoint (when `stats_bind` is set): its session, proxies and
//! visitors, with live counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tunnel_admin::{Exposition, StatsSource};
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

#[derive(Serialize)]
struct Snapshot {
    version: &'static str,
    id: String,
    server_addr: String,
    connected: bool,
    /// TLS connections of the live session (see `connections` in the config); 0 when none.
    connections: usize,
    proxies: Vec<Item>,
    visitors: Vec<Item>,
}

#[derive(Serialize)]
struct Item {
    name: String,
    connections: u64,
    active_streams: u64,
    bytes_in: u64,
    bytes_out: u64,
}

/// The client as a [`StatsSource`].
pub(crate) struct ClientStats(pub Arc<Shared>);

impl ClientStats {
    fn connected(&self) -> bool {
        matches!(*self.0.status.borrow(), Status::Ready(_))
    }

    /// Proxies: `in` = toward the local service (the stream's bytes, `b_to_a`), `out` = back.
    /// Visitors: `in` = from the local application into the tunnel (`a_to_b`), `out` = back.
    fn items(map: &CounterMap, service_side_is_a: bool) -> Vec<Item> {
        map.snapshot()
            .into_iter()
            .map(|(name, c)| {
                let b = c.bytes.snapshot();
                let (bytes_in, bytes_out) = if service_side_is_a {
                    (b.b_to_a, b.a_to_b)
                } else {
                    (b.a_to_b, b.b_to_a)
                };
                Item {
                    name,
                    connections: c.connections.load(Ordering::Relaxed),
                    active_streams: c.active.load(Ordering::Relaxed),
                    bytes_in,
                    bytes_out,
                }
            })
            .collect()
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: env!("CARGO_PKG_VERSION"),
            id: self.0.id.read().clone(),
            server_addr: self.0.cfg.server_addr.clone(),
            connected: self.connected(),
            connections: self.0.current.read().as_ref().map_or(0, |l| l.len()),
            proxies: Self::items(&self.0.proxy_counters, true),
            visitors: Self::items(&self.0.visitor_counters, false),
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
        for (what, items) in [("proxy", &s.proxies), ("visitor", &s.visitors)] {
            let f = page.gauge_family(
                &format!("tunnel_{what}_streams_active"),
                "Connections open now.",
            );
            for i in items.iter() {
                f.sample(&[(what, &i.name)], i.active_streams);
            }
            let f = page.counter_family(
                &format!("tunnel_{what}_connections_total"),
                "Connections served.",
            );
            for i in items.iter() {
                f.sample(&[(what, &i.name)], i.connections);
            }
            let f = page.counter_family(
                &format!("tunnel_{what}_bytes_total"),
                "Payload bytes: in = toward the service, out = back.",
            );
            for i in items.iter() {
                f.sample(&[(what, &i.name), ("direction", "in")], i.bytes_in);
                f.sample(&[(what, &i.name), ("direction", "out")], i.bytes_out);
            }
        }
        page.render()
    }

    fn json(&self) -> String {
        let mut body = serde_json::to_string_pretty(&self.snapshot())
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        body.push('\n');
        body
    }

    /// Healthy while registered with the server.
    fn healthy(&self) -> bool {
        self.connected()
    }
}
