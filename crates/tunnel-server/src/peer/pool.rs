//! The forwarding side: one multiplexed link per peer, dialled on first use and again after it
//! failed, and the rule that a Forward is retried once after a fresh lookup, never relayed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::{debug, info};
use tunnel_mux::{Mode, MuxConfig, MuxHandle, MuxStream};
use tunnel_proto::handshake::Phase;
use tunnel_proto::peer::{DialerEvent, Forward, Forwarded, PeerDialer, PEER_STREAM_MAX_FRAME};
use tunnel_proto::Message;
use tunnel_transport::{drive, fill_random, read_message, within, write_message};

use crate::peer::accept::SETUP_TIMEOUT;
use crate::peer::traffic::{Failure, PeerCounters};
use crate::peer::{Located, Peer};
use crate::ServerError;

/// Links kept at once; a cluster has a few servers, so this only bounds a runaway registry.
const MAX_LINKS: usize = 256;

/// How long the owner's server may take to answer a Forward: it waits for its client's answer
/// (15 s, see `forward::open_to_owner`), plus a margin.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// One link per peer address.
#[derive(Default)]
pub(crate) struct PeerPool {
    links: Mutex<HashMap<String, MuxHandle>>,
    /// One dial per address at a time: a burst of first connections to a peer waits for one
    /// TLS handshake instead of starting one each. Addresses come from the registry, not from
    /// strangers, and the map holds only those dialled.
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PeerPool {
    /// Close every link (the server stops).
    pub(crate) fn close_all(&self, traffic: &super::PeerTraffic) {
        traffic.stop();
        for (_, h) in self.links.lock().drain() {
            h.close();
        }
    }

    fn live(&self, addr: &str) -> Option<MuxHandle> {
        self.links
            .lock()
            .get(addr)
            .filter(|h| !h.is_closed())
            .cloned()
    }

    fn forget(&self, addr: &str) {
        if let Some(h) = self.links.lock().remove(addr) {
            h.close();
        }
    }

    async fn link(
        &self,
        peer: &Peer,
        server_id: &str,
        addr: &str,
    ) -> Result<MuxHandle, ServerError> {
        if let Some(h) = self.live(addr) {
            return Ok(h);
        }
        let gate = {
            let mut dialing = self.dialing.lock();
            if dialing.len() >= MAX_LINKS && !dialing.contains_key(addr) {
                dialing.retain(|_, g| Arc::strong_count(g) > 1);
            }
            dialing.entry(addr.to_owned()).or_default().clone()
        };
        let _one_dial = gate.lock().await;
        if let Some(h) = self.live(addr) {
            return Ok(h);
        }
        peer.traffic.connecting(server_id);
        // Dialled without the table's lock; a link that appeared meanwhile wins, ours closes.
        let dialled = match dial(peer, addr).await {
            Ok(d) => d,
            Err(e) => {
                peer.traffic.dial_failed(server_id, addr, &e);
                return Err(e);
            }
        };
        {
            let mut links = self.links.lock();
            links.retain(|_, h| !h.is_closed());
            if let Some(h) = links.get(addr) {
                dialled.close();
                return Ok(h.clone());
            }
            if links.len() >= MAX_LINKS {
                dialled.close();
                return Err(ServerError::PeerLinksFull {
                    max: MAX_LINKS,
                    addr: addr.to_owned(),
                });
            }
            links.insert(addr.to_owned(), dialled.clone());
        }
        // The link's end is reported once, by this watcher, not by each stream that fails.
        let generation = peer.traffic.linked(server_id);
        let (traffic, watched, id) = (peer.traffic.clone(), dialled.clone(), server_id.to_owned());
        tokio::spawn(async move {
            watched.closed().await;
            traffic.link_lost(&id, generation);
        });
        Ok(dialled)
    }

    /// A stream to `at` with `fwd` written on it; a dead link is redialled once.
    async fn open(&self, peer: &Peer, at: &Located, fwd: &Forward) -> Result<MuxStream, Failed> {
        let addr = at.peer_addr.as_str();
        let mut redialled = false;
        loop {
            let link = self
                .link(peer, &at.server_id, addr)
                .await
                .map_err(|reason| Failed::new(Failure::DialFailed, reason))?;
            let opened = match link.open().await {
                Ok(mut s) => write_message(
                    &mut s,
                    &Message::Forward(fwd.clone()),
                    PEER_STREAM_MAX_FRAME,
                )
                .await
                .map(|()| s)
                .map_err(ServerError::PeerStreamWrite),
                Err(e) => Err(ServerError::PeerStreamOpen(e)),
            };
            match opened {
                Ok(s) => return Ok(s),
                Err(e) if !redialled => {
                    debug!(peer = addr, "peer link failed ({e}); dialling again");
                    self.forget(addr);
                    redialled = true;
                }
                Err(e) => {
                    let e = ServerError::PeerUnreachable {
                        addr: addr.to_owned(),
                        source: Box::new(e),
                    };
                    return Err(Failed::new(Failure::DialFailed, e));
                }
            }
        }
    }

    /// Forward once to `at`: the stream and the owner's server's answer.
    pub(crate) async fn forward_once(
        &self,
        peer: &Peer,
        at: &Located,
        fwd: &Forward,
    ) -> Result<(MuxStream, Forwarded), Failed> {
        let mut s = self.open(peer, at, fwd).await?;
        let answer =
            tokio::time::timeout(ANSWER_TIMEOUT, read_message(&mut s, PEER_STREAM_MAX_FRAME));
        let no_answer = |reason| Err(Failed::new(Failure::NoAnswer, reason));
        match answer.await {
            Ok(Ok(Some(Message::Forwarded(f)))) => Ok((s, f)),
            Ok(Ok(Some(other))) => no_answer(ServerError::PeerAnsweredOther {
                server_id: at.server_id.clone(),
                got: other.name(),
            }),
            Ok(Ok(None)) => no_answer(ServerError::PeerClosed {
                server_id: at.server_id.clone(),
            }),
            Ok(Err(e)) => no_answer(ServerError::PeerRead(e)),
            Err(_) => no_answer(ServerError::PeerSilent {
                server_id: at.server_id.clone(),
                after: ANSWER_TIMEOUT,
            }),
        }
    }

    /// Forward to the owner `at` names; on `NotHere`, look the owner up afresh once and try
    /// once more. Never more: a stale registry costs one extra round trip, not a loop. On
    /// failure, the reason is fit to send to a visitor. Each try counts for the server tried.
    pub(crate) async fn forward(
        &self,
        peer: &Peer,
        at: Located,
        mut fwd: Forward,
    ) -> Result<Opened, ServerError> {
        fwd.epoch = at.epoch;
        let counters = peer.traffic.of(&at.server_id);
        let (s, answer) = self
            .forward_once(peer, &at, &fwd)
            .await
            .map_err(|f| f.count(&counters))?;
        let moved = match answer {
            Forwarded::NotHere { epoch } => epoch,
            other => return settle(s, other, counters, at.server_id),
        };
        counters.failed(Failure::NotHere);
        drop(s);
        debug!(
            proxy = fwd.name,
            from = at.server_id,
            their_epoch = moved,
            "owner moved; looking it up afresh"
        );
        let fresh = peer.locator.locate_fresh(&fwd.name, fwd.publish_port).await;
        let Some(fresh) = fresh.filter(|l| !l.local) else {
            return Err(ServerError::ProxyNotFound);
        };
        fwd.epoch = fresh.epoch;
        let counters = peer.traffic.of(&fresh.server_id);
        let (s, answer) = self
            .forward_once(peer, &fresh, &fwd)
            .await
            .map_err(|f| f.count(&counters))?;
        match answer {
            Forwarded::NotHere { .. } => {
                counters.failed(Failure::NotHere);
                Err(ServerError::ProxyMoving)
            }
            other => settle(s, other, counters, fresh.server_id),
        }
    }
}

/// A forwarded stream the owner's server accepted.
pub(crate) struct Opened {
    pub(crate) stream: MuxStream,
    /// The server it leads to (after a fresh lookup, maybe not the first one named).
    pub(crate) server_id: String,
    /// That server's counters: the relay adds the bytes it moves.
    pub(crate) counters: Arc<PeerCounters>,
}

/// A failed forward: why, for the counters, and the error whose text the visitor reads.
pub(crate) struct Failed {
    why: Failure,
    /// Boxed: beside `why`, a `ServerError` (120 bytes) would make this too large an `Err`.
    reason: Box<ServerError>,
}

impl Failed {
    /// Why, for a caller that counts the failure itself (or not at all).
    pub(crate) fn into_reason(self) -> ServerError {
        *self.reason
    }

    fn new(why: Failure, reason: ServerError) -> Self {
        Failed {
            why,
            reason: Box::new(reason),
        }
    }

    fn count(self, counters: &PeerCounters) -> ServerError {
        counters.failed(self.why);
        *self.reason
    }
}

fn settle(
    stream: MuxStream,
    answer: Forwarded,
    counters: Arc<PeerCounters>,
    server_id: String,
) -> Result<Opened, ServerError> {
    let refused = |reason: ServerError| {
        counters.failed(Failure::Refused);
        Err(reason)
    };
    match answer {
        Forwarded::Ok => {
            counters.stream_out();
            Ok(Opened {
                stream,
                server_id,
                counters,
            })
        }
        Forwarded::NotFound => refused(ServerError::ProxyNotFound),
        // The owner's server's words, escaped once (by the error's Display) for every log
        // line and visitor they reach.
        Forwarded::Denied(reason) => refused(ServerError::PeerDenied { reason }),
        Forwarded::NotHere { .. } => refused(ServerError::ProxyNotFound),
    }
}

/// TLS to `addr`, the proofs, and a multiplexed session on which we only open streams.
async fn dial(peer: &Peer, addr: &str) -> Result<MuxHandle, ServerError> {
    let setup = async {
        let (mut stream, _, binding) = peer.tls.connect(addr).await?;
        let mut nonce = [0u8; 32];
        fill_random(&mut nonce)?;
        let key = peer.cfg.cluster_key.as_bytes();
        let mut machine = PeerDialer::new(key, &peer.cfg.server_id, nonce, binding);
        match drive(&mut stream, &mut machine).await? {
            DialerEvent::Accepted { server_id } => Ok((stream, server_id)),
            _ => Err(tunnel_transport::TransportError::Setup(
                tunnel_proto::HandshakeError::Unexpected {
                    expected: "the peer's acceptance",
                    got: "another event",
                },
            )),
        }
    };
    let (stream, server_id) = within(Phase::Tls, SETUP_TIMEOUT, setup).await.map_err(
        |source: tunnel_transport::TransportError| ServerError::PeerLink {
            addr: addr.to_owned(),
            source,
        },
    )?;
    info!(peer = %server_id, %addr, "linked to peer");
    let cfg = MuxConfig::default().with_max_streams(tunnel_mux::MAX_STREAMS_LIMIT);
    let (mux, mut incoming) = tunnel_mux::start(stream, Mode::Client, &cfg);
    // A peer never opens streams toward the dialer: drain (and drop) any it tries.
    tokio::spawn(async move { while incoming.accept().await.is_some() {} });
    Ok(mux)
}
