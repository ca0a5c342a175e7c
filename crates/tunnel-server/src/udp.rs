//! Published UDP ports: each user address is a flow, one stream to the proxy's owner
//! carrying framed datagrams (see [`tunnel_mux::serve_udp`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, info_span, Instrument};
use tunnel_mux::{FlowLimits, OpenedFlow, DEFAULT_FLOW_QUEUE, DEFAULT_MAX_FLOWS};
use tunnel_proto::FieldError;

use crate::forward::{begin_public, open_to_owner};
use crate::registry::ProxyEntry;
use crate::Shared;

/// Seconds a flow lives without a datagram when the client does not say (`udp_idle_timeout`).
pub(crate) const DEFAULT_UDP_IDLE: u64 = 60;

/// Bind the proxy's UDP port on the server's `publish_addr`.
pub(crate) async fn bind(shared: &Shared, port: u16) -> Result<UdpSocket, FieldError> {
    // Until now another server's (its client moved here): this one forwarded the port and
    // lets go of it first, as for TCP.
    if let Some(peer) = &shared.peer {
        peer.forwarding.release(port).await;
    }
    let addr = SocketAddr::new(shared.cfg.publish_addr, port);
    UdpSocket::bind(addr).await.map_err(|e| FieldError {
        field: "publish_port".into(),
        message: format!("cannot listen on UDP {addr}: {e}; pick another port"),
    })
}

/// Serve the port until the entry is released or the server shuts down.
pub(crate) async fn run(shared: Arc<Shared>, entry: Arc<ProxyEntry>, socket: UdpSocket) {
    let span = info_span!("udp", proxy = %entry.label());
    let idle = match entry.spec.read().idle_timeout {
        Some(0) | None => DEFAULT_UDP_IDLE,
        Some(secs) => secs,
    };
    let limits = FlowLimits {
        idle: Duration::from_secs(idle),
        max_flows: DEFAULT_MAX_FLOWS,
        queue: DEFAULT_FLOW_QUEUE,
    };
    let stop = entry.public_stop().child_token();
    let on_shutdown = {
        let (stop, shutdown) = (stop.clone(), shared.shutdown.clone());
        async move {
            tokio::select! {
                () = shutdown.cancelled() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        }
    };
    shared.tasks.spawn(on_shutdown);
    let socket = Arc::new(socket);
    let dest = socket.local_addr().ok();
    let counters = entry.counters.udp.clone();
    let what = format!("UDP proxy {}", entry.label());
    let open = {
        let (shared, entry) = (shared.clone(), entry.clone());
        move |peer| open_flow(shared.clone(), entry.clone(), peer, dest)
    };
    let tasks = shared.streams.clone();
    tunnel_mux::serve_udp(socket, limits, counters, stop, tasks, what, open)
        .instrument(span)
        .await;
    entry.public_closed().cancel();
}

/// The stream of a new flow from `peer`: counted like a user connection against the owner's
/// stream limits.
pub(crate) async fn open_flow(
    shared: Arc<Shared>,
    entry: Arc<ProxyEntry>,
    peer: SocketAddr,
    dest: Option<SocketAddr>,
) -> Option<OpenedFlow> {
    if let Some(group) = &entry.group {
        return match crate::group::open(&shared, group, peer, dest).await {
            Ok(o) => Some(OpenedFlow {
                stream: o.stream,
                stop: o.guard.token().clone(),
                keep: Box::new((o.guard, o.slot)),
            }),
            Err(failure) => {
                debug!(%peer, group = %group.name, "UDP flow not opened: no member took it: {failure}");
                None
            }
        };
    }
    let slot = begin_public(&shared, &entry, peer)?;
    match open_to_owner(&entry, slot.lane(), Some(peer), dest).await {
        Ok((stream, guard)) => Some(OpenedFlow {
            stream,
            stop: guard.token().clone(),
            keep: Box::new((guard, slot)),
        }),
        Err(reason) => {
            debug!(%peer, "UDP flow not opened: {reason}");
            None
        }
    }
}
