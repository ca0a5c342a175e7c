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
use tunnel_proto::{Message, PeerText};
use tunnel_transport::{drive, fill_random, read_message, within, write_message};

use crate::peer::accept::SETUP_TIMEOUT;
use crate::peer::{Located, Peer};

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
    pub(crate) fn close_all(&self) {
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

    async fn link(&self, peer: &Peer, addr: &str) -> Result<MuxHandle, String> {
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
        // Dialled without the table's lock; a link that appeared meanwhile wins, ours closes.
        let dialled = dial(peer, addr).await?;
        let mut links = self.links.lock();
        links.retain(|_, h| !h.is_closed());
        if let Some(h) = links.get(addr) {
            dialled.close();
            return Ok(h.clone());
        }
        if links.len() >= MAX_LINKS {
            dialled.close();
            return Err(format!(
                "connection failed: already {MAX_LINKS} peer links open; not dialling {addr}"
            ));
        }
        links.insert(addr.to_owned(), dialled.clone());
        Ok(dialled)
    }

    /// A stream to `addr` with `fwd` written on it; a dead link is redialled once.
    async fn open(&self, peer: &Peer, addr: &str, fwd: &Forward) -> Result<MuxStream, String> {
        let mut redialled = false;
        loop {
            let link = self.link(peer, addr).await?;
            let opened = match link.open().await {
                Ok(mut s) => write_message(
                    &mut s,
                    &Message::Forward(fwd.clone()),
                    PEER_STREAM_MAX_FRAME,
                )
                .await
                .map(|()| s)
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok(s) => return Ok(s),
                Err(e) if !redialled => {
                    debug!(peer = addr, "peer link failed ({e}); dialling again");
                    self.forget(addr);
                    redialled = true;
                }
                Err(e) => {
                    return Err(format!(
                        "connection failed: the peer server {addr} is unreachable ({e})"
                    ))
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
    ) -> Result<(MuxStream, Forwarded), String> {
        let mut s = self.open(peer, &at.peer_addr, fwd).await?;
        let answer =
            tokio::time::timeout(ANSWER_TIMEOUT, read_message(&mut s, PEER_STREAM_MAX_FRAME));
        match answer.await {
            Ok(Ok(Some(Message::Forwarded(f)))) => Ok((s, f)),
            Ok(Ok(Some(other))) => Err(format!(
                "connection failed: the peer server {} answered {}",
                at.server_id,
                other.name()
            )),
            Ok(Ok(None)) => Err(format!(
                "connection failed: the peer server {} closed the stream",
                at.server_id
            )),
            Ok(Err(e)) => Err(format!("connection failed: {e}")),
            Err(_) => Err(format!(
                "connection failed: no answer from the peer server {} within {}s",
                at.server_id,
                ANSWER_TIMEOUT.as_secs()
            )),
        }
    }

    /// Forward to the owner `at` names; on `NotHere`, look the owner up afresh once and try
    /// once more. Never more: a stale registry costs one extra round trip, not a loop. On
    /// failure, the reason is fit to send to a visitor.
    pub(crate) async fn forward(
        &self,
        peer: &Peer,
        at: Located,
        mut fwd: Forward,
    ) -> Result<MuxStream, String> {
        fwd.epoch = at.epoch;
        let (s, answer) = self.forward_once(peer, &at, &fwd).await?;
        let moved = match answer {
            Forwarded::NotHere { epoch } => epoch,
            other => return settle(s, other),
        };
        drop(s);
        debug!(
            proxy = fwd.name,
            from = at.server_id,
            their_epoch = moved,
            "owner moved; looking it up afresh"
        );
        let fresh = peer.locator.locate_fresh(&fwd.name, fwd.publish_port).await;
        let Some(fresh) = fresh.filter(|l| !l.local) else {
            return Err("proxy not found".into());
        };
        fwd.epoch = fresh.epoch;
        let (s, answer) = self.forward_once(peer, &fresh, &fwd).await?;
        match answer {
            Forwarded::NotHere { .. } => {
                Err("proxy not found: its registration is moving; try again".into())
            }
            other => settle(s, other),
        }
    }
}

fn settle(s: MuxStream, answer: Forwarded) -> Result<MuxStream, String> {
    match answer {
        Forwarded::Ok => Ok(s),
        Forwarded::NotFound => Err("proxy not found".into()),
        // The owner's server's words, escaped once for every log line and visitor they reach.
        Forwarded::Denied(reason) => Err(PeerText(&reason).to_string()),
        Forwarded::NotHere { .. } => Err("proxy not found".into()),
    }
}

/// TLS to `addr`, the proofs, and a multiplexed session on which we only open streams.
async fn dial(peer: &Peer, addr: &str) -> Result<MuxHandle, String> {
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
        |e: tunnel_transport::TransportError| {
            format!("connection failed: cannot link to the peer server at {addr}: {e}")
        },
    )?;
    info!(peer = %server_id, %addr, "linked to peer");
    let cfg = MuxConfig::default().with_max_streams(tunnel_mux::MAX_STREAMS_LIMIT);
    let (mux, mut incoming) = tunnel_mux::start(stream, Mode::Client, &cfg);
    // A peer never opens streams toward the dialer: drain (and drop) any it tries.
    tokio::spawn(async move { while incoming.accept().await.is_some() {} });
    Ok(mux)
}
