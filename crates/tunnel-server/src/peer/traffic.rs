//! What the peer link carries, per peer server: the link's state, bytes each way, forwarded
//! streams out (we dialled) and in (we served), and why forwards failed. `/api/stats`
//! (`cluster.peers`) and `/metrics` (`tunnel_peer_*`) show it.
//!
//! The data path only touches atomics of a counter set it looked up once per stream; the
//! table's lock is taken per stream or per link event, never per byte.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tracing::{info, warn};
use tunnel_admin::Exposition;
use tunnel_mux::ByteCounters;

use crate::ServerError;

/// Peers counted at once; a cluster has a few servers, so this only bounds a runaway
/// registry. Past it, a new peer's counts are kept by no one.
const MAX_PEERS: usize = 256;

/// The state of our link to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum LinkState {
    /// No link open either way, and no dial of ours failed: nothing to forward yet.
    Idle = 0,
    /// Dialling it now.
    Connecting = 1,
    /// A link to it (ours or its own to us) is open.
    Up = 2,
    /// The last dial failed, or the link was lost.
    Down = 3,
}

impl LinkState {
    fn from_u8(v: u8) -> LinkState {
        match v {
            1 => LinkState::Connecting,
            2 => LinkState::Up,
            3 => LinkState::Down,
            _ => LinkState::Idle,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            LinkState::Idle => "idle",
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// Why a forward to a peer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The peer no longer holds the proxy (its registration moved); looked up afresh.
    NotHere,
    /// No link to the peer could be made, or the link broke under the stream.
    DialFailed,
    /// The owner's server refused: access denied, proxy not found, stream limit.
    Refused,
    /// The peer closed the stream or did not answer in time.
    NoAnswer,
}

impl Failure {
    const ALL: [Failure; 4] = [
        Failure::NotHere,
        Failure::DialFailed,
        Failure::Refused,
        Failure::NoAnswer,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Failure::NotHere => "not_here",
            Failure::DialFailed => "dial_failed",
            Failure::Refused => "refused",
            Failure::NoAnswer => "no_answer",
        }
    }
}

/// One peer's counters. Relaxed atomics: statistics, not synchronisation.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    state: AtomicU8,
    /// Bumped per outbound link, so that a lost old link does not mark a newer one down.
    generation: AtomicU64,
    /// Links the peer opened to us, open now.
    links_in: AtomicU64,
    /// Payload bytes of forwarded streams: `a_to_b` toward the peer, `b_to_a` from it.
    pub(crate) bytes: ByteCounters,
    streams_out: AtomicU64,
    streams_in: AtomicU64,
    failures: [AtomicU64; Failure::ALL.len()],
}

impl PeerCounters {
    fn state(&self) -> LinkState {
        let s = LinkState::from_u8(self.state.load(Ordering::Relaxed));
        if s != LinkState::Up && self.links_in.load(Ordering::Relaxed) > 0 {
            return LinkState::Up;
        }
        s
    }

    /// A forwarded stream we opened was accepted by the peer.
    pub(crate) fn stream_out(&self) {
        self.streams_out.fetch_add(1, Ordering::Relaxed);
    }

    /// A stream the peer forwarded here is being served.
    pub(crate) fn stream_in(&self) {
        self.streams_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A forward to the peer failed for `why`.
    pub(crate) fn failed(&self, why: Failure) {
        self.failures[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// One peer as `/api/stats` shows it (`cluster.peers[]`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PeerStats {
    pub server_id: String,
    /// `up` (a link either way is open), `down` (our last dial failed or our link was lost),
    /// `connecting` (first dial under way) or `idle` (no link, none failed).
    pub state: &'static str,
    /// Payload bytes sent to the peer over forwarded streams.
    pub bytes_out: u64,
    /// Payload bytes received from it.
    pub bytes_in: u64,
    /// Forwarded streams we opened to it that it accepted.
    pub streams_out: u64,
    /// Forwarded streams it opened to us.
    pub streams_in: u64,
    /// Failed forwards to it, by reason (`not_here`, `dial_failed`, `refused`, `no_answer`).
    pub failures: BTreeMap<&'static str, u64>,
}

/// Every peer's counters, by server id.
#[derive(Debug, Default)]
pub(crate) struct PeerTraffic {
    peers: Mutex<HashMap<String, Arc<PeerCounters>>>,
    /// The server stops: links closing now are not news.
    stopping: AtomicBool,
}

impl PeerTraffic {
    /// The counters of peer `server_id` (a detached set past [`MAX_PEERS`]).
    pub(crate) fn of(&self, server_id: &str) -> Arc<PeerCounters> {
        let mut peers = self.peers.lock();
        if let Some(c) = peers.get(server_id) {
            return c.clone();
        }
        let c = Arc::new(PeerCounters::default());
        if peers.len() < MAX_PEERS {
            peers.insert(server_id.to_owned(), c.clone());
        }
        c
    }

    /// We start dialling `server_id`.
    pub(crate) fn connecting(&self, server_id: &str) {
        let c = self.of(server_id);
        let _ = c.state.compare_exchange(
            LinkState::Idle as u8,
            LinkState::Connecting as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Our dial to `server_id` failed: warned about once until it links again.
    pub(crate) fn dial_failed(&self, server_id: &str, addr: &str, reason: &ServerError) {
        let c = self.of(server_id);
        let was = LinkState::from_u8(c.state.swap(LinkState::Down as u8, Ordering::Relaxed));
        if was == LinkState::Down {
            tracing::debug!(peer = %server_id, %addr, "peer still unreachable: {reason}");
        } else {
            warn!(
                peer = %server_id,
                %addr,
                "peer link down: {reason}; connections forwarded to server {server_id} fail until it answers"
            );
        }
    }

    /// Our link to `server_id` is up: returns its generation, for [`PeerTraffic::link_lost`].
    pub(crate) fn linked(&self, server_id: &str) -> u64 {
        let c = self.of(server_id);
        let was = LinkState::from_u8(c.state.swap(LinkState::Up as u8, Ordering::Relaxed));
        if was == LinkState::Down {
            info!(peer = %server_id, "peer link up again");
        }
        c.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Our link of generation `generation` to `server_id` ended. Once per link, at WARN: a
    /// peer that went away is news, each stream that then fails is not.
    pub(crate) fn link_lost(&self, server_id: &str, generation: u64) {
        if self.stopping.load(Ordering::Relaxed) {
            return;
        }
        let c = self.of(server_id);
        if c.generation.load(Ordering::Relaxed) != generation {
            return;
        }
        let up = c
            .state
            .compare_exchange(
                LinkState::Up as u8,
                LinkState::Down as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok();
        if up {
            warn!(peer = %server_id, "peer link down: the link to server {server_id} closed; it is dialled again on the next forwarded connection");
        }
    }

    /// A link from peer `server_id` opened; it counts as up until [`InboundLink`] drops.
    pub(crate) fn inbound(&self, server_id: &str) -> InboundLink {
        let counters = self.of(server_id);
        counters.links_in.fetch_add(1, Ordering::Relaxed);
        InboundLink { counters }
    }

    /// The server stops: closing links are expected.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Every known peer plus `servers` (the registry's, this one `me` excluded), by id.
    pub(crate) fn stats<'a>(
        &self,
        me: &str,
        servers: impl IntoIterator<Item = &'a str>,
    ) -> Vec<PeerStats> {
        let mut all: Vec<(String, Arc<PeerCounters>)> = self
            .peers
            .lock()
            .iter()
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect();
        for id in servers {
            if id != me && !all.iter().any(|(known, _)| known == id) {
                all.push((id.to_owned(), Arc::default()));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter()
            .map(|(server_id, c)| {
                let bytes = c.bytes.snapshot();
                PeerStats {
                    server_id,
                    state: c.state().as_str(),
                    bytes_out: bytes.a_to_b,
                    bytes_in: bytes.b_to_a,
                    streams_out: c.streams_out.load(Ordering::Relaxed),
                    streams_in: c.streams_in.load(Ordering::Relaxed),
                    failures: Failure::ALL
                        .iter()
                        .map(|f| (f.as_str(), c.failures[*f as usize].load(Ordering::Relaxed)))
                        .collect(),
                }
            })
            .collect()
    }

    /// The `tunnel_peer_*` families, one sample set per peer.
    pub(crate) fn render(page: &mut Exposition, peers: &[PeerStats]) {
        let f = page.counter_family(
            "tunnel_peer_bytes_total",
            "Payload bytes of connections forwarded over the peer link, per peer server: out = sent to it, in = received from it.",
        );
        for p in peers {
            f.sample(&[("peer", &p.server_id), ("direction", "out")], p.bytes_out);
            f.sample(&[("peer", &p.server_id), ("direction", "in")], p.bytes_in);
        }
        let f = page.counter_family(
            "tunnel_peer_streams_total",
            "Connections forwarded over the peer link, per peer server: out = this server forwarded to it, in = it forwarded here.",
        );
        for p in peers {
            f.sample(
                &[("peer", &p.server_id), ("direction", "out")],
                p.streams_out,
            );
            f.sample(&[("peer", &p.server_id), ("direction", "in")], p.streams_in);
        }
        let f = page.counter_family(
            "tunnel_peer_failures_total",
            "Connections this server failed to forward to a peer server, by reason: not_here (its registration moved), dial_failed, refused (by the owner's server), no_answer.",
        );
        for p in peers {
            for why in Failure::ALL {
                let n = p.failures.get(why.as_str()).copied().unwrap_or(0);
                f.sample(&[("peer", &p.server_id), ("reason", why.as_str())], n);
            }
        }
        let f = page.gauge_family(
            "tunnel_peer_link_up",
            "1 while a peer link to or from that server is open, else 0.",
        );
        for p in peers {
            f.sample(&[("peer", &p.server_id)], u64::from(p.state == "up"));
        }
    }
}

/// An open link from a peer; counted in its state while alive.
#[derive(Debug)]
pub(crate) struct InboundLink {
    counters: Arc<PeerCounters>,
}

impl InboundLink {
    /// The peer's counters.
    pub(crate) fn counters(&self) -> &Arc<PeerCounters> {
        &self.counters
    }
}

impl Drop for InboundLink {
    fn drop(&mut self) {
        self.counters.links_in.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(t: &PeerTraffic, id: &str) -> PeerStats {
        t.stats("me", [])
            .into_iter()
            .find(|p| p.server_id == id)
            .expect("listed")
    }

    #[test]
    fn a_link_goes_connecting_up_down_and_a_stale_loss_changes_nothing() {
        let t = PeerTraffic::default();
        assert_eq!(t.stats("me", ["me", "b"])[0].state, "idle");
        t.connecting("b");
        assert_eq!(one(&t, "b").state, "connecting");
        let first = t.linked("b");
        assert_eq!(one(&t, "b").state, "up");
        let second = t.linked("b");
        t.link_lost("b", first);
        assert_eq!(one(&t, "b").state, "up", "an old link's end is not news");
        t.link_lost("b", second);
        assert_eq!(one(&t, "b").state, "down");
        let why = ServerError::PeerLinksFull {
            max: 1,
            addr: "127.0.0.1:1".into(),
        };
        t.dial_failed("b", "127.0.0.1:1", &why);
        assert_eq!(one(&t, "b").state, "down");
    }

    #[test]
    fn an_inbound_link_counts_as_up_while_it_lasts() {
        let t = PeerTraffic::default();
        let link = t.inbound("a");
        link.counters().stream_in();
        assert_eq!(one(&t, "a").state, "up");
        assert_eq!(one(&t, "a").streams_in, 1);
        drop(link);
        assert_eq!(one(&t, "a").state, "idle");
    }

    #[test]
    fn failures_are_counted_by_reason_and_rendered() {
        let t = PeerTraffic::default();
        let b = t.of("b");
        b.failed(Failure::Refused);
        b.failed(Failure::Refused);
        b.failed(Failure::NotHere);
        b.stream_out();
        b.bytes.a_to_b.fetch_add(10, Ordering::Relaxed);
        let stats = t.stats("me", ["b", "c"]);
        assert_eq!(
            stats.len(),
            2,
            "a registry server never linked is listed too"
        );
        assert_eq!(stats[0].failures["refused"], 2);
        assert_eq!(stats[0].failures["not_here"], 1);
        let mut page = Exposition::new();
        PeerTraffic::render(&mut page, &stats);
        let text = page.render();
        for line in [
            "tunnel_peer_failures_total{peer=\"b\",reason=\"refused\"} 2",
            "tunnel_peer_streams_total{peer=\"b\",direction=\"out\"} 1",
            "tunnel_peer_bytes_total{peer=\"b\",direction=\"out\"} 10",
            "tunnel_peer_link_up{peer=\"c\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let t = PeerTraffic::default();
        for i in 0..MAX_PEERS + 10 {
            t.of(&format!("s{i}")).stream_out();
        }
        assert_eq!(t.stats("me", []).len(), MAX_PEERS);
    }
}
