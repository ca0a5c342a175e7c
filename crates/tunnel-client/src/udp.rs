//! `type = "udp"` proxies on the owner's side: each flow the server opens (one user address)
//! gets its own socket connected to the local service, so replies go back to that user.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use tunnel_mux::{
    relay_datagrams, AbortGuard, Downlink, FlowEnd, FlowLimits, MuxStream, OpenedFlow, Uplink,
    DEFAULT_FLOW_QUEUE, DEFAULT_MAX_FLOWS,
};
use tunnel_proto::{Message, ProxyKind, StreamStatus};
use tunnel_transport::write_message;

use crate::config::{ProxyConfig, VisitorConfig, DEFAULT_UDP_IDLE};
use crate::error::ConfigProblem;
use crate::proxy::answer;
use crate::session::SessionCtx;
use crate::Shared;

/// Serve one flow: the stream's header is read and the proxy is ours and `udp`.
pub(crate) async fn serve_flow(
    shared: &Arc<Shared>,
    ctx: &Arc<SessionCtx>,
    cfg: &ProxyConfig,
    mut stream: MuxStream,
    guard: AbortGuard,
    peer: Option<SocketAddr>,
) {
    let socket = match connect(&cfg.local_addr).await {
        Ok(s) => s,
        Err(e) => {
            let counters = shared.proxy_counters.get(&cfg.name);
            if let Some(more) = counters.failures.check() {
                warn!(proxy = %cfg.name, local_addr = %cfg.local_addr, "cannot reach the local UDP service: {e}{more}");
            }
            let reason = format!("UDP socket failed: {}: {e}", cfg.local_addr);
            return answer(&mut stream, StreamStatus::Error(reason)).await;
        }
    };
    let ok = Message::StreamStatus(StreamStatus::Ok);
    if write_message(&mut stream, &ok, tunnel_proto::DEFAULT_MAX_FRAME)
        .await
        .is_err()
    {
        return;
    }
    let id = stream.id();
    let counters = shared.proxy_counters.get(&cfg.name);
    counters.connections.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let flows = &counters.datagrams;
    flows.flows_open.fetch_add(1, Ordering::Relaxed);
    flows.flows_total.fetch_add(1, Ordering::Relaxed);
    let idle = Duration::from_secs(cfg.udp_idle_timeout.unwrap_or(DEFAULT_UDP_IDLE).max(1));
    // Counted as the datagrams pass, so the stats move during a long flow.
    let relay = relay_datagrams(
        stream,
        Uplink::Connected(&socket),
        Downlink::Connected(&socket),
        idle,
        guard.token(),
        &flows.outbound,
        &flows.inbound,
    );
    // A flow has no end of its own but the idle timeout: a shutdown's grace is for
    // connections finishing, so flows stop at once.
    let end = tokio::select! {
        end = relay => end,
        () = shared.shutdown.cancelled() => FlowEnd::Stopped,
    };
    flows.flows_open.fetch_sub(1, Ordering::Relaxed);
    counters.active.fetch_sub(1, Ordering::Relaxed);
    if let FlowEnd::Failed(_) = end {
        ctx.send_abort(id);
    }
    debug!(proxy = %cfg.name, ?peer, stream = id, ?end, "UDP flow closed");
}

/// Serve a `udp` visitor's socket until `stop`: each local address sending to it gets its
/// own flow, a visit stream to the other client's proxy.
pub(crate) async fn run_visitor(
    shared: Arc<Shared>,
    visitor: Arc<VisitorConfig>,
    socket: UdpSocket,
    stop: CancellationToken,
) {
    let limits = FlowLimits {
        // The owner's udp_idle_timeout closes its side sooner if it is shorter.
        idle: Duration::from_secs(DEFAULT_UDP_IDLE),
        max_flows: DEFAULT_MAX_FLOWS,
        queue: DEFAULT_FLOW_QUEUE,
    };
    let what = format!("UDP visitor {}", visitor.name);
    let counters = shared.visitor_counters.get(&visitor.name).datagrams.clone();
    let tasks = shared.streams.clone();
    let open = move |from| {
        let (shared, visitor) = (shared.clone(), visitor.clone());
        async move {
            let (stream, guard, slot) = crate::visitor::open_visit(&shared, &visitor).await?;
            let counters = shared.visitor_counters.get(&visitor.name);
            counters.connections.fetch_add(1, Ordering::Relaxed);
            debug!(%from, "UDP visitor flow opened");
            Some(OpenedFlow {
                stream,
                stop: guard.token().clone(),
                // The slot counts the stream on its connection while the flow lives.
                keep: Box::new((guard, slot)),
            })
        }
    };
    tunnel_mux::serve_udp(Arc::new(socket), limits, counters, stop, tasks, what, open).await;
}

/// A socket of the service's address family, connected to it: only its answers come in.
async fn connect(local_addr: &str) -> std::io::Result<UdpSocket> {
    let addr = tokio::net::lookup_host(local_addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("the name resolves to no address"))?;
    let any: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(addr).await?;
    Ok(socket)
}

/// Problems with proxy `i`'s UDP settings, appended to `out`.
pub(crate) fn problems(p: &ProxyConfig, i: usize, out: &mut Vec<ConfigProblem>) {
    let at = |f: &str| format!("proxies[{i}].{f}");
    if p.kind != ProxyKind::Udp {
        if p.udp_idle_timeout.is_some() {
            out.push(ConfigProblem::new(
                at("udp_idle_timeout"),
                "only applies to type = \"udp\"; use idle_timeout for the other types",
            ));
        }
        return;
    }
    if p.udp_idle_timeout == Some(0) {
        out.push(ConfigProblem::new(
            at("udp_idle_timeout"),
            "must be at least 1 (seconds without a datagram before a flow closes)",
        ));
    }
    if p.http.idle_timeout.is_some() {
        out.push(ConfigProblem::new(
            at("idle_timeout"),
            "a udp proxy's flows close after udp_idle_timeout; use that key instead",
        ));
    }
    if p.proxy_protocol.is_some() {
        out.push(ConfigProblem::new(
            at("proxy_protocol"),
            "not available for type = \"udp\"; remove it",
        ));
    }
}
