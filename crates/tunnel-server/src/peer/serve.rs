//! The owner's side of a Forward: is the proxy here, at that epoch, and may this visitor reach
//! it? Then the same path as a local user or visitor connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use tunnel_mux::{relay_streams, MuxStream};
use tunnel_proto::peer::{Forward, ForwardKind, Forwarded, PEER_STREAM_MAX_FRAME};
use tunnel_proto::Message;
use tunnel_transport::{read_message, write_message};

use crate::forward::{begin_public, open_to_owner, owner_stream};
use crate::listener::idle_of;
use crate::peer::counted::Counted;
use crate::peer::traffic::PeerCounters;
use crate::peer::Peer;
use crate::registry::ProxyKey;
use crate::visitor::visit_allowed;
use crate::{ServerError, Shared};

/// A peer names its Forward promptly.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn serve_forward(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut stream: MuxStream,
    link: SocketAddr,
    counters: Arc<PeerCounters>,
) {
    let header = tokio::time::timeout(
        HEADER_TIMEOUT,
        read_message(&mut stream, PEER_STREAM_MAX_FRAME),
    );
    let fwd = match header.await {
        Ok(Ok(Some(Message::Forward(f)))) => f,
        Ok(Ok(Some(other))) => {
            let reason = format!("a peer stream carries only Forward, not {}", other.name());
            return answer(&mut stream, Forwarded::Denied(reason.to_string())).await;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(%link, "bad Forward from a peer: {e}");
            return answer(&mut stream, Forwarded::Denied(format!("bad Forward: {e}"))).await;
        }
        Err(_) => return,
    };
    if shared.shutdown.is_cancelled() {
        let reason = "connection failed: the server is shutting down".to_owned();
        return answer(&mut stream, Forwarded::Denied(reason)).await;
    }
    if fwd.kind == ForwardKind::Vhost {
        return super::vhost::serve(shared, peer, stream, fwd, link).await;
    }
    if fwd.kind == ForwardKind::Probe {
        return answer(&mut stream, crate::cluster::fence::probe_answer(&shared)).await;
    }
    match decide(&shared, &peer, &fwd).await {
        Ok(()) => serve(shared, stream, fwd, link, &counters).await,
        Err(refusal) => answer(&mut stream, refusal).await,
    }
}

/// How long a forwarded connection waits for a registration this server has made in the
/// registry to be claimed locally too (the two steps of a login, a few milliseconds apart).
const CLAIM_WAIT: Duration = Duration::from_secs(2);
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// Whether this server owns the proxy at the epoch the forwarding server named.
async fn decide(shared: &Shared, peer: &Peer, fwd: &Forward) -> Result<(), Forwarded> {
    let key = ProxyKey {
        name: fwd.name.clone(),
        port: fwd.publish_port,
    };
    // The local session's own registration answers first: this server's cache may not have
    // seen the write that made it the owner yet (the forwarding server read it afresh).
    if fwd.epoch != 0 && held_epoch(shared, &key) == Some(fwd.epoch) {
        return Ok(());
    }
    // Draining: a client that moved keeps its old session here until its new one serves,
    // and that session still carries what reaches it.
    if shared.draining.load(std::sync::atomic::Ordering::Acquire) && live_here(shared, &key) {
        return Ok(());
    }
    if let Some(at) = peer.locator.locate(&fwd.name, fwd.publish_port) {
        if !at.local {
            return Err(Forwarded::NotHere { epoch: 0 });
        }
        if fwd.epoch != 0 && at.epoch != fwd.epoch {
            return Err(Forwarded::NotHere { epoch: at.epoch });
        }
        // Ours in the registry; a client moving here claims it locally a moment later.
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        while shared.registry.get(&key).is_none() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }
    if shared.registry.get(&key).is_none() {
        return Err(Forwarded::NotFound);
    }
    Ok(())
}

/// Whether a live local session holds `key`.
fn live_here(shared: &Shared, key: &ProxyKey) -> bool {
    shared
        .registry
        .get(key)
        .is_some_and(|(_, owner)| !owner.cancel.is_cancelled())
}

/// The registration epoch of the local session holding `key`, if any.
fn held_epoch(shared: &Shared, key: &ProxyKey) -> Option<u64> {
    let (_, owner) = shared.registry.get(key)?;
    let held = owner.cluster.lock();
    held.as_ref().and_then(|h| u64::try_from(h.epoch).ok())
}

async fn serve(
    shared: Arc<Shared>,
    mut stream: MuxStream,
    fwd: Forward,
    link: SocketAddr,
    counters: &PeerCounters,
) {
    let key = ProxyKey {
        name: fwd.name.clone(),
        port: fwd.publish_port,
    };
    let Some((entry, owner)) = shared.registry.get(&key) else {
        return answer(&mut stream, Forwarded::NotFound).await;
    };
    let src = fwd.src_addr.unwrap_or(link);
    let slot = match fwd.kind {
        ForwardKind::Public => {
            begin_public(&shared, &entry, src).ok_or(ServerError::OwnerAtStreamLimit)
        }
        ForwardKind::Visitor => {
            if !visit_allowed(&shared, &entry, &fwd.visitor_client_id, &fwd.secret) {
                return answer(&mut stream, Forwarded::Denied("access denied".into())).await;
            }
            entry
                .counters
                .visitor_connections
                .fetch_add(1, Ordering::Relaxed);
            owner_stream(&shared, &owner, &entry.key)
        }
        ForwardKind::Vhost => Err(ServerError::VhostNamesNoProxy),
        ForwardKind::Probe => Err(ServerError::ProbeNamesNoProxy),
    };
    let slot = match slot {
        Ok(s) => s,
        Err(reason) => return answer(&mut stream, Forwarded::Denied(reason.to_string())).await,
    };
    // The real user's address, so PROXY headers and X-Forwarded-For survive the hop.
    let opened = open_to_owner(&entry, slot.lane(), Some(src), fwd.dest_addr).await;
    let (mut out, out_guard) = match opened {
        Ok(s) => s,
        Err(reason) => {
            info!(proxy = %entry.label(), %src, "forwarded connection failed: {reason}");
            return answer(&mut stream, Forwarded::Denied(reason.to_string())).await;
        }
    };
    let ok = Message::Forwarded(Forwarded::Ok);
    if write_message(&mut stream, &ok, PEER_STREAM_MAX_FRAME)
        .await
        .is_err()
    {
        return;
    }
    counters.stream_in();
    debug!(proxy = %entry.label(), %src, "forwarded connection served here");
    let out_id = out.id();
    entry
        .counters
        .active_streams
        .fetch_add(1, Ordering::Relaxed);
    // A peer stream has no abort signal of its own: closing it is the signal.
    let never = CancellationToken::new();
    // A user connection idles out here, where the proxy's settings are, as it would locally.
    let pipe = match fwd.kind {
        ForwardKind::Public => shared.pipe.clone().with_idle(idle_of(&entry)),
        ForwardKind::Visitor | ForwardKind::Vhost | ForwardKind::Probe => shared.pipe.clone(),
    };
    // The relay's counter slot counts for the proxy; the peer's bytes are counted here.
    let mut stream = Counted::new(stream, &counters.bytes);
    let end = relay_streams(
        &mut stream,
        &mut out,
        &pipe,
        &never,
        out_guard.token(),
        Some(&entry.counters.bytes),
        || slot.lane().send_abort(out_id),
    )
    .await;
    entry
        .counters
        .active_streams
        .fetch_sub(1, Ordering::Relaxed);
    debug!(proxy = %entry.label(), %src, ?end, "forwarded connection finished");
}

pub(super) async fn answer(stream: &mut MuxStream, answer: Forwarded) {
    let _ = write_message(stream, &Message::Forwarded(answer), PEER_STREAM_MAX_FRAME).await;
    let _ = stream.shutdown().await;
}
