//! Streams the server opens: one user or visitor connection to one of our proxies.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::{debug, warn};
use tunnel_mux::{relay_tcp, MuxStream, RelayEnd};
use tunnel_proto::{proxy_protocol, Message, PeerText, ProxyKind, StreamOpen, StreamStatus};
use tunnel_transport::{read_message, write_message};

use crate::session::SessionCtx;
use crate::Shared;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DIAL_TRIES: u32 = 3;
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
const DIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;

pub(crate) async fn serve_stream(shared: Arc<Shared>, ctx: Arc<SessionCtx>, mut stream: MuxStream) {
    let header = tokio::time::timeout(HEADER_TIMEOUT, read_message(&mut stream, MAX_FRAME)).await;
    let (name, peer, dest) = match header {
        Ok(Ok(Some(Message::StreamOpen(StreamOpen::Proxy { proxy, peer, dest })))) => {
            (proxy, peer, dest)
        }
        Ok(Ok(Some(other))) => {
            let reason = format!("unexpected {} as a stream header", other.name());
            return answer(&mut stream, StreamStatus::Error(reason)).await;
        }
        _ => return,
    };
    let id = stream.id();
    let guard = ctx.aborts.register(id);
    // The server names a proxy, never an address: we dial only what our own config says.
    let Some(mut cfg) = shared.proxy_config(&name) else {
        if let Some(more) = shared.warn_limits.unknown_proxy.check() {
            let proxy = PeerText(&name);
            warn!(%proxy, "the server asked for a proxy this client does not have{more}");
        }
        return answer(&mut stream, StreamStatus::Error("proxy not found".into())).await;
    };
    // A block's public port picks its local port; the same for every user otherwise.
    cfg.local_addr = crate::publish::local_addr_for(&cfg, dest);
    if cfg.kind == ProxyKind::Udp {
        return crate::udp::serve_flow(&shared, &ctx, &cfg, stream, guard, peer).await;
    }
    // An https proxy's bytes are TLS for the local service: spliced like tcp.
    if !matches!(cfg.kind, ProxyKind::Tcp | ProxyKind::Https) {
        // HTTP proxies dial per request, over shared connections: accept the stream now.
        let ok = Message::StreamStatus(StreamStatus::Ok);
        if write_message(&mut stream, &ok, MAX_FRAME).await.is_err() {
            return;
        }
        let counters = shared.proxy_counters.get(&name);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        counters.active.fetch_add(1, Ordering::Relaxed);
        let upstreams = &shared.http_upstreams;
        let token = guard.token();
        crate::http_proxy::serve(upstreams, &cfg, counters.clone(), stream, token, peer, dest)
            .await;
        counters.active.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let local_addr = cfg.local_addr.clone();
    let local = match dial_with_header(&local_addr, cfg.proxy_protocol, peer, dest).await {
        Ok(s) => s,
        Err(e) => {
            // Every user connection while the service is down would log a line of its own.
            if let Some(more) = shared.proxy_counters.get(&name).failures.check() {
                warn!(proxy = %name, %local_addr, "local service unreachable after {DIAL_TRIES} tries: {e}{more}");
            }
            let reason = format!("connection failed: {local_addr}: {e}");
            return answer(&mut stream, StreamStatus::Error(reason)).await;
        }
    };
    if write_message(
        &mut stream,
        &Message::StreamStatus(StreamStatus::Ok),
        MAX_FRAME,
    )
    .await
    .is_err()
    {
        return;
    }
    let counters = shared.proxy_counters.get(&name);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let bytes = Some(&counters.bytes);
    let end = relay_tcp(local, stream, &shared.pipe, guard.token(), bytes, || {
        ctx.send_abort(id)
    })
    .await;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match end {
        RelayEnd::Failed { error, .. } => {
            debug!(proxy = %name, ?peer, stream = id, "connection failed: {error}");
        }
        end => debug!(proxy = %name, ?peer, stream = id, ?end, "connection finished"),
    }
}

/// Dial, then send the PROXY protocol header if the proxy asks for one.
async fn dial_with_header(
    addr: &str,
    pp: Option<proxy_protocol::Version>,
    peer: Option<SocketAddr>,
    dest: Option<SocketAddr>,
) -> std::io::Result<TcpStream> {
    let mut tcp = dial(addr).await?;
    if let Some(v) = pp {
        tcp.write_all(&proxy_protocol::encode(v, peer, dest))
            .await?;
    }
    Ok(tcp)
}

/// Dial the local service, trying a few times: services restart, and a first SYN can be lost.
pub(crate) async fn dial(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = None;
    for attempt in 0..DIAL_TRIES {
        if attempt > 0 {
            tokio::time::sleep(DIAL_BACKOFF * attempt).await;
        }
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {}s", DIAL_TIMEOUT.as_secs()),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("not dialled")))
}

pub(crate) async fn answer(stream: &mut MuxStream, status: StreamStatus) {
    let _ = write_message(stream, &Message::StreamStatus(status), MAX_FRAME).await;
    let _ = stream.shutdown().await;
}
