//! `publish_mode = "all"` for UDP ports: a server that does not own the port binds it for
//! datagrams and carries each user address's flow to the owner's server on a peer stream.
//! The stream holds the same length-prefixed datagrams as a flow to a client, so the owner
//! only splices it to its client (a forwarded public connection, [`super::serve`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Instrument};
use tunnel_mux::{DatagramCounters, FlowLimits, OpenedFlow, DEFAULT_FLOW_QUEUE, DEFAULT_MAX_FLOWS};
use tunnel_proto::peer::{Forward, ForwardKind};

use crate::listener::admit;
use crate::peer::Peer;
use crate::Shared;

/// Bind UDP `port` and forward its flows until `stop`; synchronous like the TCP bind, so
/// that it happens under the forwarding lock.
pub(super) fn bind(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    port: u16,
    name: &str,
    stop: CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let addr = SocketAddr::new(shared.cfg.publish_addr, port);
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(socket)?);
    let limits = FlowLimits {
        // The owner's server closes a flow after the proxy's own idle time; this side's
        // only keeps an address's flow no longer than the default.
        idle: Duration::from_secs(crate::udp::DEFAULT_UDP_IDLE),
        max_flows: DEFAULT_MAX_FLOWS,
        queue: DEFAULT_FLOW_QUEUE,
    };
    let what = format!("UDP port {port} forwarded to proxy {name}");
    let dest = socket.local_addr().ok();
    let open = {
        let (shared, peer, name) = (shared.clone(), peer.clone(), name.to_owned());
        move |user| open_flow(shared.clone(), peer.clone(), name.clone(), port, user, dest)
    };
    let tasks = shared.streams.clone();
    let counters = Arc::new(DatagramCounters::default());
    Ok(async move {
        info!("forwarding UDP port to the owner's server");
        tunnel_mux::serve_udp(socket, limits, counters, stop, tasks, what, open)
            .in_current_span()
            .await;
        debug!("forwarding UDP port closed");
    })
}

/// A flow for `user`: here if the proxy is registered here now (its client moved here),
/// else a forwarded stream to the owner's server.
async fn open_flow(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    name: String,
    port: u16,
    user: SocketAddr,
    dest: Option<SocketAddr>,
) -> Option<OpenedFlow> {
    let key = crate::registry::ProxyKey {
        name: name.clone(),
        port,
    };
    if let Some((entry, _)) = shared.registry.get(&key) {
        return crate::udp::open_flow(shared.clone(), entry, user, dest).await;
    }
    let permit = admit(&shared, user)?;
    let at = peer.remote_owner(&name, port)?;
    let owner = at.server_id.clone();
    let fwd = Forward {
        kind: ForwardKind::Public,
        name,
        publish_port: port,
        epoch: at.epoch,
        src_addr: Some(user),
        dest_addr: dest,
        visitor_client_id: String::new(),
        secret: String::new(),
    };
    match peer.pool.forward(&peer, at, fwd).await {
        Ok(opened) => {
            debug!(%user, owner = opened.server_id, "UDP flow forwarded");
            Some(OpenedFlow {
                stream: opened.stream,
                // The owner ends the stream (idle, its client gone); nothing else stops it.
                stop: CancellationToken::new(),
                keep: Box::new(permit),
            })
        }
        Err(reason) => {
            debug!(%user, %owner, "UDP flow not forwarded: {reason}");
            None
        }
    }
}
