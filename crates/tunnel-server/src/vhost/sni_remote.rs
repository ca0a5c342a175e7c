//! HTTPS by SNI across the servers of a cluster, both ends. A ClientHello naming a host whose
//! `https` proxy is on another server goes there over the peer link, as an HTTP request does
//! (one Forward stream per connection, one hop): the ClientHello first, then the raw bytes.
//! That server reads the ClientHello again and routes it to its own proxies only, so it
//! trusts nothing but the bytes; a name it does not serve (any more) gets the alert there.
//!
//! https names sit in the cluster registry as routed ([`crate::routes::sni_host`]), apart
//! from http names, and travel in [`ForwardKind::Vhost`] Forwards: the owner's side tells
//! them apart by that form.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tunnel_mux::{relay_streams, relay_tcp, MuxStream};
use tunnel_proto::peer::{Forward as PeerForward, ForwardKind, Forwarded, PEER_STREAM_MAX_FRAME};
use tunnel_proto::Message;
use tunnel_transport::write_message;

use super::sni::{ended, open_with_hello, pipe_of, read_hello, refuse, server_name};
use crate::forward::begin_public;
use crate::peer::{Peer, VhostHop};
use crate::routes::{domain_candidates, sni_host};
use crate::Shared;

/// What became of a connection offered to the cluster.
pub(super) enum Forward {
    /// Another server took it, and it has been relayed there to its end.
    Sent,
    /// The registry places the name here after all: route it locally.
    Here(TcpStream),
    /// No server takes it.
    Nowhere(TcpStream),
}

/// Send `tcp`, whose ClientHello `hello` names `name`, to the server of `name`'s `https`
/// proxy (the name itself, else the most specific wildcard over it), if that is another one.
pub(super) async fn forward(
    shared: &Arc<Shared>,
    tcp: TcpStream,
    user: SocketAddr,
    name: &str,
    hello: &[u8],
) -> Forward {
    let Some(link) = &shared.peer else {
        return Forward::Nowhere(tcp);
    };
    let found = domain_candidates(name)
        .into_iter()
        .map(|d| sni_host(&d))
        .find_map(|d| link.locator.locate_domain(&d).map(|at| (d, at)));
    let Some((domain, at)) = found else {
        return Forward::Nowhere(tcp);
    };
    if at.local {
        // Registered here, but no local route (not yet, or no more).
        return Forward::Nowhere(tcp);
    }
    let fwd = PeerForward {
        kind: ForwardKind::Vhost,
        name: domain,
        publish_port: 0,
        epoch: at.epoch,
        src_addr: Some(user),
        dest_addr: tcp.local_addr().ok(),
        visitor_client_id: String::new(),
        secret: String::new(),
    };
    let mut stream = match crate::peer::forward_vhost(link, at, fwd).await {
        VhostHop::Open { stream, server_id } => {
            debug!(%user, server = %server_id, "HTTPS connection forwarded to the name's server");
            stream
        }
        VhostHop::Here => return Forward::Here(tcp),
        VhostHop::Unknown | VhostHop::Moving => return Forward::Nowhere(tcp),
        VhostHop::Failed { server_id, reason } => {
            debug!(%user, server = %server_id, "HTTPS connection not forwarded: {reason}");
            return Forward::Nowhere(tcp);
        }
    };
    use tokio::io::AsyncWriteExt;
    if stream.write_all(hello).await.is_err() || stream.flush().await.is_err() {
        return Forward::Sent;
    }
    // The name's server applies the proxy's idle timeout and limits, and closes the stream
    // when the connection ends: closing is the only abort a peer stream has.
    let never = CancellationToken::new();
    let _ = relay_tcp(tcp, stream, &shared.pipe, &never, None, || {}).await;
    Forward::Sent
}

/// The owner's side: serve a forwarded HTTPS connection here if the registry places its name
/// here, routed by the ClientHello it carries to this server's own `https` proxies.
pub(crate) async fn serve_forwarded(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut stream: MuxStream,
    fwd: PeerForward,
    link: SocketAddr,
) {
    match peer.locator.locate_domain(&fwd.name) {
        Some(at) if at.local => {}
        other => {
            let epoch = other.map_or(0, |at| at.epoch);
            return answer(&mut stream, Forwarded::NotHere { epoch }).await;
        }
    }
    if !send(&mut stream, Forwarded::Ok).await {
        return;
    }
    let user = fwd.src_addr.unwrap_or(link);
    let mut hello = Vec::new();
    let read = tokio::select! {
        r = read_hello(&shared.cfg, &mut stream, &mut hello) => r,
        () = shared.shutdown.cancelled() => return,
    };
    let Some(name) = server_name(&shared, user, read) else {
        return;
    };
    // Never forwarded again: this server's proxies, or the alert.
    let Some(route) = shared.registry.route_sni(&name) else {
        shared
            .metrics
            .vhost
            .https_unrouted
            .fetch_add(1, Ordering::Relaxed);
        debug!(%user, %name, "forwarded HTTPS connection for a name not served here; refused");
        return refuse(stream).await;
    };
    let entry = route.entry.clone();
    if !crate::access::proxy_permits(&shared, &entry, user.ip()) {
        return;
    }
    let Some(slot) = begin_public(&shared, &entry, user) else {
        return;
    };
    let Some((mut out, guard)) = open_with_hello(&entry, &slot, user, fwd.dest_addr, &hello).await
    else {
        return;
    };
    debug!(proxy = %entry.label(), %user, "forwarded HTTPS connection served here");
    let pipe = pipe_of(&shared, &entry);
    let id = out.id();
    let counters = &entry.counters;
    counters.active_streams.fetch_add(1, Ordering::Relaxed);
    let never = CancellationToken::new();
    let end = relay_streams(
        &mut stream,
        &mut out,
        &pipe,
        &never,
        guard.token(),
        Some(&counters.bytes),
        || slot.lane().send_abort(id),
    )
    .await;
    counters.active_streams.fetch_sub(1, Ordering::Relaxed);
    ended(&shared, user, id, &end);
}

async fn send(stream: &mut MuxStream, answer: Forwarded) -> bool {
    let msg = Message::Forwarded(answer);
    write_message(stream, &msg, PEER_STREAM_MAX_FRAME)
        .await
        .is_ok()
}

async fn answer(stream: &mut MuxStream, answer: Forwarded) {
    use tokio::io::AsyncWriteExt;
    let _ = send(stream, answer).await;
    let _ = stream.shutdown().await;
}
