//! Public listeners: one per published proxy, each user connection relayed to the owner.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument};
use tunnel_mux::{relay_tcp, reset_tcp, EarlyStream, MuxStream, RelayEnd};

use crate::forward::{open_early, reason_of};
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
                () = entry.public_stop().cancelled() => {
                    // Consumes the listener: the port is closed when it returns.
                    hand_over_backlog(&shared, &entry, listener);
                    entry.public_closed().cancel();
                    break;
                }
                () = shared.shutdown.cancelled() => break,
                (tcp, peer) = listener.accept() => {
                    // Denied before it takes a source slot or a stream.
                    if !crate::access::server_permits(&shared, peer) {
                        reset_tcp(tcp);
                        continue;
                    }
                    let Some(permit) = admit(&shared, peer) else {
                        // Closed at once, and with a reset: no TIME_WAIT left here.
                        reset_tcp(tcp);
                        continue;
                    };
                    if let Here::NotHere(tcp, permit) = serve_here(&shared, &entry, tcp, peer, permit) {
                        // Released as it arrived: its client moved to another server.
                        route_elsewhere(&shared, &entry, tcp, peer, permit);
                    }
                }
            }
        }
        debug!("public port closed");
    }
    .instrument(span)
    .await
}

/// Whether a user connection is served by a proxy of this server.
pub(crate) enum Here {
    /// Served (or refused by the owner's stream limits, and closed).
    Served,
    /// The proxy is not registered here (any more): the connection and its permit, back.
    NotHere(TcpStream, SourcePermit),
}

/// Serve a user connection of `entry` here if it is still registered: its stream slot is
/// taken now, before the task starts, so that a session retiring meanwhile (its client moved
/// to another server) sees it and waits for it. The proxy's own `allow_ips` / `deny_ips` are
/// checked here, where it is registered: a connection forwarded by another server of a
/// cluster is checked on the user's address it carries.
pub(crate) fn serve_here(
    shared: &Arc<Shared>,
    entry: &Arc<ProxyEntry>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: SourcePermit,
) -> Here {
    if let Some(group) = &entry.group {
        // A member is picked per connection, and its slot taken then.
        let task = serve_group_user(shared.clone(), group.clone(), tcp, peer, permit);
        shared.streams.spawn(task.in_current_span());
        return Here::Served;
    }
    if shared.registry.owner(&entry.key).is_none() {
        return Here::NotHere(tcp, permit);
    }
    if !crate::access::proxy_permits(shared, entry, peer.ip()) {
        reset_tcp(tcp);
        return Here::Served;
    }
    let Some(slot) = crate::forward::begin_public(shared, entry, peer) else {
        return Here::Served;
    };
    // The whole connection, its stream's open included, runs in the owner's session task
    // on its thread (see `tunnel_mux::SessionThreads`): no hop back and forth per open.
    let tcp = match tunnel_mux::Portable::new(tcp, shared.shards.as_ref()) {
        Ok(tcp) => tcp,
        Err(e) => {
            debug!(%peer, "user connection closed: {e}");
            return Here::Served;
        }
    };
    let spawner = slot.lane().control.session_spawner();
    let task = serve_user(shared.clone(), entry.clone(), tcp, peer, permit, slot);
    spawner.spawn(shared.streams.track_future(task.in_current_span()));
    Here::Served
}

/// A released proxy's connections that arrived before its port closed: in cluster mode its
/// client moved to another server, and they are forwarded there instead of being reset.
fn route_elsewhere(
    shared: &Arc<Shared>,
    entry: &ProxyEntry,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: SourcePermit,
) {
    match &shared.peer {
        Some(p) => {
            let key = &entry.key;
            crate::peer::ports::route_user(shared, p, tcp, peer, &key.name, key.port, permit);
        }
        None => reset_tcp(tcp),
    }
}

/// The port closes: connections the kernel accepted already would be reset with the socket.
/// In cluster mode they go where the proxy is now.
fn hand_over_backlog(
    shared: &Arc<Shared>,
    entry: &Arc<ProxyEntry>,
    listener: tunnel_transport::Acceptor,
) {
    if shared.peer.is_none() {
        return;
    }
    for (tcp, peer) in listener.close() {
        if !crate::access::server_permits(shared, peer) {
            reset_tcp(tcp);
            continue;
        }
        match admit(shared, peer) {
            Some(permit) => route_elsewhere(shared, entry, tcp, peer, permit),
            None => reset_tcp(tcp),
        }
    }
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

/// A user connection of a load-balancing group: to the first member that takes it.
async fn serve_group_user(
    shared: Arc<Shared>,
    group: Arc<crate::registry::GroupHandle>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: SourcePermit,
) {
    let dest = tcp.local_addr().ok();
    let open =
        crate::group::open_with_first_flight(&shared, &group, &mut tcp, peer, dest, Vec::new());
    match open.await {
        Ok(o) => {
            relay_user(
                &shared, o.entry, tcp, peer, permit, o.slot, o.stream, o.guard,
            )
            .await
        }
        Err(failure) => {
            debug!(%peer, group = %group.name, "user connection closed: {failure}");
            reset_tcp(tcp);
        }
    }
}

async fn serve_user(
    shared: Arc<Shared>,
    entry: Arc<ProxyEntry>,
    tcp: tunnel_mux::Portable,
    peer: SocketAddr,
    permit: SourcePermit,
    slot: crate::session::StreamSlot,
) {
    let tcp = match tcp.attach() {
        Ok(tcp) => tcp,
        Err(e) => return debug!(%peer, "user connection closed: {e}"),
    };
    // The address the user actually reached, which a PROXY header names as destination.
    let dest = tcp.local_addr().ok();
    // The user's first bytes go out with the open: the owner's status is read as the reply
    // comes back, a tunnel round trip sooner for protocols where the user speaks first.
    let (stream, guard) = match open_early(&entry, slot.lane(), Some(peer), dest).await {
        Ok(s) => s,
        Err(reason) => {
            debug!(%peer, "user connection closed: {reason}");
            return;
        }
    };
    relay_user(&shared, entry, tcp, peer, permit, slot, stream, guard).await;
}

/// Relay a user connection over its stream until either side ends it. The owner may still
/// refuse the stream (its status is read as the relay goes): the user's connection is then
/// reset, and the refusal logged as if it had been waited for.
#[allow(clippy::too_many_arguments)] // the parts of one connection, each moved in once
async fn relay_user(
    shared: &Shared,
    entry: Arc<ProxyEntry>,
    tcp: TcpStream,
    peer: SocketAddr,
    _permit: SourcePermit,
    slot: crate::session::StreamSlot,
    mut stream: EarlyStream<MuxStream>,
    guard: tunnel_mux::AbortGuard,
) {
    tunnel_transport::tune_tcp(&tcp);
    let idle = idle_of(&entry);
    let rates = entry.limits.read().rates();
    let pipe = shared.pipe.clone().with_idle(idle).with_rate_limits(rates);
    let id = stream.get_ref().id();
    entry
        .counters
        .active_streams
        .fetch_add(1, Ordering::Relaxed);
    let counters = Some(&entry.counters.bytes);
    let relay = relay_tcp(tcp, &mut stream, &pipe, guard.token(), counters, || {
        slot.lane().send_abort(id)
    });
    let end = tokio::select! {
        end = relay => end,
        // A reload denied the user's network: its open connections close too.
        () = crate::rules::denied(shared, peer.ip()) => {
            slot.lane().send_abort(id);
            RelayEnd::Aborted
        }
    };
    entry
        .counters
        .active_streams
        .fetch_sub(1, Ordering::Relaxed);
    if let Some(refusal) = stream.failure() {
        debug!(%peer, "user connection closed: {}", reason_of(refusal));
        return;
    }
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
