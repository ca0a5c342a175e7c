//! The HTTPS virtual host (`vhost_https_bind`): each connection is routed by the server name
//! of its TLS ClientHello to the `https` proxy claiming it, and passed through undecrypted:
//! the user's TLS session ends at the client's own service, with its own certificate.
//!
//! The ClientHello is read with the sans-IO [`ClientHelloReader`] (bounded, any split into
//! segments and records), within `vhost_first_byte_timeout` for its first byte and
//! `vhost_header_timeout` for the rest; the bytes read go to the service first, then the
//! connection is spliced like a published port's. A name no proxy serves (or no name) gets a
//! TLS `unrecognized_name` alert, so the user's client fails at once with a clear error.
//!
//! In a cluster, a name served by a client of another server goes there over the peer link
//! (see [`super::sni_remote`]).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};
use tunnel_mux::{relay_tcp, reset_tcp, AbortGuard, MuxStream, PipeConfig, RelayEnd};
use tunnel_proto::sni::{self, ClientHelloReader, Hello};

use crate::forward::{begin_public, open_early, open_to_owner, reason_of};
use crate::group::open_with_first_flight;
use crate::registry::ProxyEntry;
use crate::session::StreamSlot;
use crate::source_limit::SourcePermit;
use crate::{ServerConfig, Shared};

/// State of the one HTTPS virtual host listener.
struct HttpsVhost {
    shared: Arc<Shared>,
    /// The same bounds as the HTTP virtual host's, counted apart.
    limits: super::limits::Limits,
    refused_log: tunnel_transport::WarnLimit,
}

/// Accept users until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener) {
    let vh = Arc::new(HttpsVhost {
        limits: super::limits::Limits::new(&shared.cfg),
        shared,
        refused_log: tunnel_transport::WarnLimit::default(),
    });
    // Backs off on errors such as EMFILE instead of spinning.
    let mut listener = tunnel_transport::Acceptor::new(listener);
    loop {
        tokio::select! {
            () = vh.shared.shutdown.cancelled() => break,
            (tcp, peer) = listener.accept() => admit(&vh, tcp, peer),
        }
    }
}

/// Serve `tcp` if its source and the vhost have a connection to spare; close it otherwise.
fn admit(vh: &Arc<HttpsVhost>, tcp: TcpStream, peer: SocketAddr) {
    if !crate::access::server_permits(&vh.shared, peer) {
        reset_tcp(tcp);
        return;
    }
    match vh.limits.conns.try_acquire(peer.ip()) {
        Ok(permit) => {
            let task = serve_conn(vh.clone(), tcp, peer, permit);
            vh.shared.streams.spawn(task.in_current_span());
        }
        Err(refusal) => {
            let metrics = &vh.shared.metrics.vhost;
            metrics.https_conns_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(more) = vh.refused_log.check() {
                let conns = &vh.limits.conns;
                warn!(
                    %peer,
                    "HTTPS connection refused: {refusal} (vhost_max_conns_per_source / \
                     vhost_max_conns; {} open, {} from this source){more}",
                    conns.total(),
                    conns.held_by(peer.ip()),
                );
            }
        }
    }
}

/// Why no ClientHello was read.
pub(super) enum NoHello {
    /// Not within the timeouts.
    Timeout,
    /// The connection closed or failed, or the server stops.
    Gone,
}

async fn serve_conn(
    vh: Arc<HttpsVhost>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: SourcePermit,
) {
    tunnel_transport::tune_tcp(&tcp);
    let shared = &vh.shared;
    let mut hello = Vec::new();
    let answer = tokio::select! {
        r = read_hello(&shared.cfg, &mut tcp, &mut hello) => r,
        () = shared.shutdown.cancelled() => Err(NoHello::Gone),
    };
    // A TLS client without a name gets the alert; what is not TLS is only closed.
    let no_sni = matches!(answer, Ok(Hello::NoSni));
    let Some(name) = server_name(shared, peer, answer) else {
        if no_sni {
            refuse(tcp).await;
        }
        return;
    };
    let mut route = shared.registry.route_sni(&name);
    if route.is_none() {
        // In a cluster, the name may be served through another server.
        tcp = match super::sni_remote::forward(shared, tcp, peer, &name, &hello).await {
            super::sni_remote::Forward::Sent => return,
            super::sni_remote::Forward::Here(tcp) => {
                route = shared.registry.route_sni(&name);
                tcp
            }
            super::sni_remote::Forward::Nowhere(tcp) => tcp,
        };
    }
    let Some(route) = route else {
        shared
            .metrics
            .vhost
            .https_unrouted
            .fetch_add(1, Ordering::Relaxed);
        debug!(%peer, %name, "no https proxy serves this name; refused");
        return refuse(tcp).await;
    };
    // The address the user actually reached, which a PROXY header names as destination.
    let dest = tcp.local_addr().ok();
    // The ClientHello goes out with the open, not after the owner's status: the owner's
    // answer and the user's TLS handshake share one tunnel round trip.
    let (entry, slot, mut stream, guard) = match &route.entry.group {
        // A group's members are checked and tried one by one, as on the HTTP virtual host;
        // the ClientHello goes to each one tried.
        Some(group) => {
            match open_with_first_flight(shared, group, &mut tcp, peer, dest, hello).await {
                Ok(o) => (o.entry, o.slot, o.stream, o.guard),
                Err(failure) => {
                    debug!(%peer, %name, group = %group.name, "HTTPS connection closed: {failure}");
                    reset_tcp(tcp);
                    return;
                }
            }
        }
        None => {
            let entry = route.entry.clone();
            if !crate::access::proxy_permits(shared, &entry, peer.ip()) {
                reset_tcp(tcp);
                return;
            }
            let Some(slot) = begin_public(shared, &entry, peer) else {
                return;
            };
            let (mut stream, guard) = match open_early(&entry, slot.lane(), Some(peer), dest).await
            {
                Ok(o) => o,
                Err(reason) => {
                    debug!(%peer, "HTTPS connection closed: {reason}");
                    return;
                }
            };
            if !replay_hello(&entry, &mut stream, &hello).await {
                return;
            }
            (entry, slot, stream, guard)
        }
    };
    let pipe = pipe_of(shared, &entry);
    let id = stream.get_ref().id();
    let counters = &entry.counters;
    counters.active_streams.fetch_add(1, Ordering::Relaxed);
    let relay = relay_tcp(
        tcp,
        &mut stream,
        &pipe,
        guard.token(),
        Some(&counters.bytes),
        || slot.lane().send_abort(id),
    );
    let end = tokio::select! {
        end = relay => end,
        // A reload denied the user's network: its open connections close too.
        () = crate::rules::denied(shared, peer.ip()) => {
            slot.lane().send_abort(id);
            RelayEnd::Aborted
        }
    };
    counters.active_streams.fetch_sub(1, Ordering::Relaxed);
    match stream.failure() {
        // Refused by the owner after the hello went out: logged as when it was waited for.
        Some(refusal) => debug!(%peer, "HTTPS connection closed: {}", reason_of(refusal)),
        None => ended(shared, peer, id, &end),
    }
    drop(permit);
}

/// The server name of a read ClientHello, or `None` (counted and logged) for anything else.
pub(super) fn server_name(
    shared: &Shared,
    peer: SocketAddr,
    answer: Result<Hello, NoHello>,
) -> Option<String> {
    let metrics = &shared.metrics.vhost;
    match answer {
        Ok(Hello::Sni(name)) => return Some(name),
        Ok(Hello::NoSni) => {
            metrics.https_unrouted.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "HTTPS connection without a server name (SNI); refused");
        }
        Ok(Hello::NotTls(why)) => {
            metrics.https_unrouted.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "HTTPS connection closed: {why}");
        }
        Ok(Hello::NeedMore) | Err(NoHello::Gone) => {}
        Err(NoHello::Timeout) => {
            metrics.https_hello_timeouts.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "no whole TLS ClientHello in time (vhost_first_byte_timeout / vhost_header_timeout); closing");
        }
    }
    None
}

/// Read until the ClientHello is complete (its bytes stay in `buf`), the first byte within
/// `vhost_first_byte_timeout` and the whole within `vhost_header_timeout` after it.
pub(super) async fn read_hello<R: AsyncRead + Unpin>(
    cfg: &ServerConfig,
    io: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Hello, NoHello> {
    let mut reader = ClientHelloReader::new();
    let first_byte = Duration::from_secs(cfg.vhost_first_byte_timeout.max(1));
    let mut deadline = Instant::now() + first_byte;
    let mut chunk = [0u8; 2048];
    loop {
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Err(_) => return Err(NoHello::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(NoHello::Gone),
            Ok(Ok(n)) => n,
        };
        if buf.is_empty() {
            deadline = Instant::now() + Duration::from_secs(cfg.vhost_header_timeout.max(1));
        }
        // The reader refuses a hello past its bound, so `buf` stays within it (plus a read).
        buf.extend_from_slice(&chunk[..n]);
        match reader.feed(&chunk[..n]) {
            Hello::NeedMore => {}
            done => return Ok(done),
        }
    }
}

/// Send the `unrecognized_name` alert and close.
pub(super) async fn refuse<W: AsyncWrite + Unpin>(mut io: W) {
    let alert = sni::unrecognized_name_alert();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = io.write_all(&alert).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// Open a stream to the proxy's owner for `user` and replay the ClientHello on it (counted
/// as the proxy's inbound bytes): what follows is a relay, like a published port's.
pub(super) async fn open_with_hello(
    entry: &ProxyEntry,
    slot: &StreamSlot,
    user: SocketAddr,
    dest: Option<SocketAddr>,
    hello: &[u8],
) -> Option<(MuxStream, AbortGuard)> {
    let (mut stream, guard) = match open_to_owner(entry, slot.lane(), Some(user), dest).await {
        Ok(s) => s,
        Err(reason) => {
            debug!(%user, "HTTPS connection closed: {reason}");
            return None;
        }
    };
    replay_hello(entry, &mut stream, hello)
        .await
        .then_some((stream, guard))
}

/// Write the ClientHello read so far to the member's stream, counted as the proxy's inbound
/// bytes; false if the stream failed.
async fn replay_hello<S: AsyncWrite + Unpin>(
    entry: &ProxyEntry,
    stream: &mut S,
    hello: &[u8],
) -> bool {
    if stream.write_all(hello).await.is_err() || stream.flush().await.is_err() {
        return false;
    }
    let len = u64::try_from(hello.len()).unwrap_or(u64::MAX);
    entry
        .counters
        .bytes
        .a_to_b
        .fetch_add(len, Ordering::Relaxed);
    true
}

/// The relay settings of the proxy's connections: its idle timeout and bandwidth limits.
pub(super) fn pipe_of(shared: &Shared, entry: &ProxyEntry) -> PipeConfig {
    let idle = crate::listener::idle_of(entry);
    let rates = entry.limits.read().rates();
    shared.pipe.clone().with_idle(idle).with_rate_limits(rates)
}

/// Log (and count) how a relayed connection ended.
pub(super) fn ended(shared: &Shared, peer: SocketAddr, id: u32, end: &RelayEnd) {
    match end {
        RelayEnd::Failed { error, .. } => debug!(%peer, stream = id, "connection failed: {error}"),
        RelayEnd::Idle(_) => {
            shared
                .limit_metrics
                .idle_closed
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, stream = id, "idle connection closed (idle_timeout)");
        }
        _ => debug!(%peer, stream = id, "connection finished"),
    }
}
