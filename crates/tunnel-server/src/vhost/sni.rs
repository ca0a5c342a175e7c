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
//! Routes are this server's own: in a cluster, a name served by a client of another server is
//! not forwarded there (it gets the alert here).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};
use tunnel_mux::{relay_tcp, reset_tcp, RelayEnd};
use tunnel_proto::sni::{self, ClientHelloReader, Hello};

use crate::forward::{begin_public, open_to_owner};
use crate::registry::ProxyEntry;
use crate::source_limit::SourcePermit;
use crate::Shared;

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
enum NoHello {
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
    let shutdown = vh.shared.shutdown.clone();
    let mut hello = Vec::new();
    let answer = tokio::select! {
        r = read_hello(&vh, &mut tcp, &mut hello) => r,
        () = shutdown.cancelled() => Err(NoHello::Gone),
    };
    let metrics = &vh.shared.metrics.vhost;
    let name = match answer {
        Ok(Hello::Sni(name)) => name,
        Ok(Hello::NoSni) => {
            metrics.https_unrouted.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "HTTPS connection without a server name (SNI); refused");
            return refuse(tcp).await;
        }
        Ok(Hello::NotTls(why)) => {
            metrics.https_unrouted.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "HTTPS connection closed: {why}");
            return;
        }
        Ok(Hello::NeedMore) | Err(NoHello::Gone) => return,
        Err(NoHello::Timeout) => {
            metrics.https_hello_timeouts.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "no whole TLS ClientHello in time (vhost_first_byte_timeout / vhost_header_timeout); closing");
            return;
        }
    };
    let Some(route) = vh.shared.registry.route_sni(&name) else {
        metrics.https_unrouted.fetch_add(1, Ordering::Relaxed);
        debug!(%peer, %name, "no https proxy serves this name; refused");
        return refuse(tcp).await;
    };
    let entry = route.entry.clone();
    if !crate::access::proxy_permits(&vh.shared, &entry, peer.ip()) {
        reset_tcp(tcp);
        return;
    }
    let Some(slot) = begin_public(&vh.shared, &entry, peer) else {
        return;
    };
    splice(&vh.shared, &entry, tcp, peer, &hello, &slot).await;
    drop(permit);
}

/// Read until the ClientHello is complete (its bytes stay in `buf`), the first byte within
/// `vhost_first_byte_timeout` and the whole within `vhost_header_timeout` after it.
async fn read_hello(
    vh: &HttpsVhost,
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Hello, NoHello> {
    let mut reader = ClientHelloReader::new();
    let mut deadline = Instant::now() + vh.limits.first_byte;
    let mut chunk = [0u8; 2048];
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return Err(NoHello::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(NoHello::Gone),
            Ok(Ok(n)) => n,
        };
        if buf.is_empty() {
            deadline = Instant::now() + vh.limits.header;
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
async fn refuse(mut tcp: TcpStream) {
    let alert = sni::unrecognized_name_alert();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = tcp.write_all(&alert).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// Open a stream to the proxy's owner, replay the ClientHello, then relay both ways like a
/// published port's connection (the proxy's idle timeout and bandwidth limits included).
async fn splice(
    shared: &Arc<Shared>,
    entry: &Arc<ProxyEntry>,
    tcp: TcpStream,
    peer: SocketAddr,
    hello: &[u8],
    slot: &crate::session::StreamSlot,
) {
    let idle = crate::listener::idle_of(entry);
    let rates = entry.limits.read().rates();
    let pipe = shared.pipe.clone().with_idle(idle).with_rate_limits(rates);
    // The address the user actually reached, which a PROXY header names as destination.
    let dest = tcp.local_addr().ok();
    let (mut stream, guard) = match open_to_owner(entry, slot.lane(), Some(peer), dest).await {
        Ok(s) => s,
        Err(reason) => {
            debug!(%peer, "HTTPS connection closed: {reason}");
            return;
        }
    };
    if stream.write_all(hello).await.is_err() || stream.flush().await.is_err() {
        return;
    }
    let counters = &entry.counters;
    let hello_len = u64::try_from(hello.len()).unwrap_or(u64::MAX);
    counters
        .bytes
        .a_to_b
        .fetch_add(hello_len, Ordering::Relaxed);
    counters.active_streams.fetch_add(1, Ordering::Relaxed);
    let id = stream.id();
    let end = relay_tcp(
        tcp,
        stream,
        &pipe,
        guard.token(),
        Some(&counters.bytes),
        || slot.lane().send_abort(id),
    )
    .await;
    counters.active_streams.fetch_sub(1, Ordering::Relaxed);
    match end {
        RelayEnd::Failed { error, .. } => debug!(%peer, stream = id, "connection failed: {error}"),
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
