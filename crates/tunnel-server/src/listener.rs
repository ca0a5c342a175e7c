//! Public listeners: one per published proxy, each user connection relayed to the owner.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument};
use tunnel_mux::{relay_tcp, RelayEnd};

use crate::forward::open_to_owner;
use crate::registry::ProxyEntry;
use crate::Shared;

/// Accept until the entry is released; dropping the listener closes the port at once.
pub(crate) async fn run(shared: Arc<Shared>, entry: Arc<ProxyEntry>, listener: TcpListener) {
    let span = info_span!("listener", proxy = %entry.key);
    async move {
        loop {
            tokio::select! {
                () = entry.listener_stop.cancelled() => break,
                () = shared.shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        let task = serve_user(shared.clone(), entry.clone(), tcp, peer);
                        shared.streams.spawn(task.in_current_span());
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning, keep the port.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        debug!("public port closed");
    }
    .instrument(span)
    .await
}

async fn serve_user(shared: Arc<Shared>, entry: Arc<ProxyEntry>, tcp: TcpStream, peer: SocketAddr) {
    tunnel_transport::tune_tcp(&tcp);
    entry
        .counters
        .public_connections
        .fetch_add(1, Ordering::Relaxed);
    let owner = entry.owner();
    let slot = match owner.begin_stream() {
        Ok(slot) => slot,
        Err(reason) => {
            warn!(%peer, "user connection refused: {reason}");
            return;
        }
    };
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
    let end = relay_tcp(tcp, stream, &shared.pipe, guard.token(), counters, || {
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
        _ => debug!(%peer, stream = id, "connection finished"),
    }
}
