//! Public listeners: one per published proxy, each user connection relayed to the owner.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument};
use tunnel_mux::{relay_tcp, reset_tcp, RelayEnd};

use crate::forward::open_to_owner;
use crate::registry::ProxyEntry;
use crate::source_limit::{source_of, SourcePermit};
use crate::Shared;

/// Seconds a public connection may idle when its client does not say (an older client):
/// the client's own default for a `tcp` proxy.
const DEFAULT_IDLE_TIMEOUT: u64 = 300;

/// Accept until the entry is released; dropping the listener closes the port at once.
pub(crate) async fn run(shared: Arc<Shared>, entry: Arc<ProxyEntry>, listener: TcpListener) {
    let span = info_span!("listener", proxy = %entry.label());
    // Backs off on errors such as EMFILE instead of spinning, and keeps the port.
    let mut listener = tunnel_transport::Acceptor::new(listener);
    async move {
        loop {
            tokio::select! {
                () = entry.listener_stop.cancelled() => break,
                () = shared.shutdown.cancelled() => break,
                (tcp, peer) = listener.accept() => {
                    let Some(permit) = admit(&shared, peer) else {
                        // Closed at once, and with a reset: no TIME_WAIT left here.
                        reset_tcp(tcp);
                        continue;
                    };
                    let task = serve_user(shared.clone(), entry.clone(), tcp, peer, permit);
                    shared.streams.spawn(task.in_current_span());
                }
            }
        }
        debug!("public port closed");
    }
    .instrument(span)
    .await
}

/// Take a slot of `max_conns_per_source` for a user connection from `peer`, or count and
/// (at most once a minute per source) log why not.
pub(crate) fn admit(shared: &Shared, peer: SocketAddr) -> Option<SourcePermit> {
    match shared.public_sources.try_acquire(peer.ip()) {
        Ok(permit) => Some(permit),
        Err(refusal) => {
            shared
                .limit_metrics
                .source_refused
                .fetch_add(1, Ordering::Relaxed);
            let subject = format!("source {}", source_of(peer.ip()));
            if let Some(more) = shared.limit_warnings.check(subject) {
                warn!(
                    %peer,
                    "user connection refused: {refusal} (max_conns_per_source){more}"
                );
            }
            None
        }
    }
}

/// The proxy's idle timeout for a user connection (`None`: never).
pub(crate) fn idle_of(entry: &ProxyEntry) -> Option<Duration> {
    match entry
        .spec
        .read()
        .idle_timeout
        .unwrap_or(DEFAULT_IDLE_TIMEOUT)
    {
        0 => None,
        secs => Some(Duration::from_secs(secs)),
    }
}

async fn serve_user(
    shared: Arc<Shared>,
    entry: Arc<ProxyEntry>,
    tcp: TcpStream,
    peer: SocketAddr,
    _permit: SourcePermit,
) {
    tunnel_transport::tune_tcp(&tcp);
    let Some(slot) = crate::forward::begin_public(&shared, &entry, peer) else {
        return;
    };
    let idle = idle_of(&entry);
    let pipe = shared.pipe.clone().with_idle(idle);
    // The address the user actually reached, which a PROXY header names as destination.
    let dest = tcp.local_addr().ok();
    let (stream, guard) = match open_to_owner(&entry, slot.lane(), Some(peer), dest).await {
        Ok(s) => s,
        Err(reason) => {
            debug!(%peer, "user connection closed: {reason}");
            return;
        }
    };
    let id = stream.id();
    entry
        .counters
        .active_streams
        .fetch_add(1, Ordering::Relaxed);
    let counters = Some(&entry.counters.bytes);
    let end = relay_tcp(tcp, stream, &pipe, guard.token(), counters, || {
        slot.lane().send_abort(id)
    })
    .await;
    entry
        .counters
        .active_streams
        .fetch_sub(1, Ordering::Relaxed);
    match end {
        RelayEnd::Failed { error, .. } => {
            debug!(%peer, stream = id, "connection failed: {error}");
        }
        RelayEnd::IdleAfterHalfClose(_) => {
            debug!(%peer, stream = id, "half-closed connection went idle; closed");
        }
        RelayEnd::Idle(_) => {
            shared
                .limit_metrics
                .idle_closed
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, stream = id, ?idle, "idle connection closed (idle_timeout)");
        }
        _ => debug!(%peer, stream = id, "connection finished"),
    }
}
