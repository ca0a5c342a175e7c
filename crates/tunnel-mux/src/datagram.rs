//! UDP flows over streams: one stream per user address, carrying datagrams framed by
//! [`tunnel_proto::datagram`], relayed both ways until the flow idles out.
//!
//! * [`relay_datagrams`] moves datagrams between one stream and a UDP socket (a shared
//!   socket answering one address, or a socket connected to the local service).
//! * [`serve_udp`] receives on a shared socket (a published UDP port, a UDP visitor's bind)
//!   and gives each source address its own flow, bounded in number and in queued datagrams.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel_proto::{encode_datagram, DatagramDecoder, WarnLimit, WARN_WINDOW};

use crate::MuxStream;

/// Flows one shared socket may hold at once: past it, datagrams from new addresses are
/// dropped (counted, warned) rather than opening streams without end.
pub const DEFAULT_MAX_FLOWS: usize = 1024;

/// Datagrams waiting for one flow's stream; more are dropped, as a congested link would.
pub const DEFAULT_FLOW_QUEUE: usize = 256;

/// Receive buffer: any datagram fits.
const RECV_BUF: usize = 65_536;

/// Bytes of ready datagrams gathered into one stream write.
const BATCH: usize = 32 * 1024;

/// Datagrams and bytes moved in one direction.
#[derive(Debug, Default)]
pub struct DirCounters {
    /// Datagrams delivered.
    pub datagrams: AtomicU64,
    /// Their payload bytes.
    pub bytes: AtomicU64,
}

impl DirCounters {
    fn add(&self, len: usize) {
        self.datagrams.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// Live counters of a UDP proxy or visitor. Relaxed atomics: statistics only.
#[derive(Debug, Default)]
pub struct DatagramCounters {
    /// From users (or visitors) toward the service.
    pub inbound: DirCounters,
    /// From the service back.
    pub outbound: DirCounters,
    /// Flows open now.
    pub flows_open: AtomicU64,
    /// Flows opened so far.
    pub flows_total: AtomicU64,
    /// Datagrams dropped: a flow's queue was full, or no flow could be opened for them.
    pub dropped: AtomicU64,
}

/// How a flow ended.
#[derive(Debug, PartialEq, Eq)]
pub enum FlowEnd {
    /// No datagram either way for the idle timeout.
    Idle,
    /// The other end closed the stream (its flow idled out, or it went away).
    PeerClosed,
    /// The flow was stopped from outside (abort, shutdown, proxy removed).
    Stopped,
    /// The stream failed, or carried something that is not framed datagrams.
    Failed(String),
}

/// Where a flow's datagrams toward the stream come from.
#[derive(Debug)]
pub enum Uplink<'a> {
    /// Queued by [`serve_udp`] from a shared socket.
    Queue(&'a mut mpsc::Receiver<Bytes>),
    /// Received on a socket connected to the peer (the local service).
    Connected(&'a UdpSocket),
}

/// Where a flow's datagrams from the stream go.
#[derive(Debug, Clone, Copy)]
pub enum Downlink<'a> {
    /// Sent from a shared socket to the flow's address.
    To(&'a UdpSocket, SocketAddr),
    /// Sent on a connected socket.
    Connected(&'a UdpSocket),
}

/// Relay datagrams between `stream` and the UDP side until the flow idles for `idle`, either
/// end closes, or `stop` fires. `up` counts datagrams onto the stream, `down` off it. The
/// stream is half-closed at the end, so the other end's flow closes too.
pub async fn relay_datagrams(
    mut stream: MuxStream,
    uplink: Uplink<'_>,
    downlink: Downlink<'_>,
    idle: Duration,
    stop: &CancellationToken,
    up: &DirCounters,
    down: &DirCounters,
) -> FlowEnd {
    let start = Instant::now();
    // Milliseconds since `start` of the last datagram either way: both directions touch it.
    let last = AtomicU64::new(0);
    let touch = || last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    let (mut rd, mut wr) = tokio::io::split(&mut stream);
    let end = {
        let to_stream = async {
            let mut frame = BytesMut::with_capacity(RECV_BUF);
            let mut buf = vec![0u8; RECV_BUF];
            let mut uplink = uplink;
            loop {
                frame.clear();
                // Wait for one datagram, then take what else is ready, up to BATCH bytes:
                // one stream write per burst instead of one per datagram.
                let mut first = true;
                while frame.len() < BATCH {
                    let got = match &mut uplink {
                        Uplink::Queue(rx) if first => match rx.recv().await {
                            Some(b) => Some(b),
                            None => return FlowEnd::Stopped,
                        },
                        Uplink::Queue(rx) => rx.try_recv().ok(),
                        Uplink::Connected(sock) if first => match sock.recv(&mut buf).await {
                            Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
                            // An ICMP unreachable from the service, reported on the next read.
                            Err(_) => continue,
                        },
                        Uplink::Connected(sock) => match sock.try_recv(&mut buf) {
                            Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                            Err(_) => continue,
                        },
                    };
                    let Some(dg) = got else { break };
                    first = false;
                    // Over the limit only from an IPv6 jumbo-sized sender: dropped.
                    if encode_datagram(&dg, &mut frame).is_ok() {
                        up.add(dg.len());
                    }
                }
                if let Err(e) = wr.write_all(&frame).await {
                    return FlowEnd::Failed(e.to_string());
                }
                touch();
            }
        };
        let from_stream = async {
            let mut decoder = DatagramDecoder::new();
            let mut buf = BytesMut::with_capacity(RECV_BUF);
            loop {
                match rd.read_buf(&mut buf).await {
                    Ok(0) => return FlowEnd::PeerClosed,
                    Ok(_) => {}
                    Err(e) => return FlowEnd::Failed(e.to_string()),
                }
                loop {
                    let dg = match decoder.decode(&mut buf) {
                        Ok(Some(dg)) => dg,
                        Ok(None) => break,
                        Err(e) => return FlowEnd::Failed(e.to_string()),
                    };
                    // UDP: a send that fails (no route, buffer full) loses the datagram.
                    let sent = match downlink {
                        Downlink::To(sock, to) => sock.send_to(&dg, to).await.is_ok(),
                        Downlink::Connected(sock) => sock.send(&dg).await.is_ok(),
                    };
                    if sent {
                        down.add(dg.len());
                    }
                    touch();
                }
            }
        };
        let idle_out = async {
            loop {
                let since = Duration::from_millis(last.load(Ordering::Relaxed));
                let deadline = start + since + idle;
                if Instant::now() >= deadline {
                    return FlowEnd::Idle;
                }
                tokio::time::sleep_until(deadline.into()).await;
            }
        };
        tokio::select! {
            e = to_stream => e,
            e = from_stream => e,
            e = idle_out => e,
            () = stop.cancelled() => FlowEnd::Stopped,
        }
    };
    let _ = wr.shutdown().await;
    end
}

/// A new flow's stream, opened by the caller of [`serve_udp`].
pub struct OpenedFlow {
    /// The stream, its header exchanged: datagrams only from here on.
    pub stream: MuxStream,
    /// Fires when the stream is aborted or its session ends.
    pub stop: CancellationToken,
    /// Held for the flow's lifetime (abort registration, stream slots), dropped at its end.
    pub keep: Box<dyn Send>,
}

impl std::fmt::Debug for OpenedFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedFlow")
            .field("stream", &self.stream.id())
            .finish_non_exhaustive()
    }
}

/// Limits of [`serve_udp`].
#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    /// A flow closes after this long without a datagram either way.
    pub idle: Duration,
    /// Flows open at once.
    pub max_flows: usize,
    /// Datagrams queued per flow.
    pub queue: usize,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Bytes>)>>>;
/// Receive on `socket` until `stop`, one flow per source address: the first datagram of an
/// address calls `open` (in the flow's own task, so a slow open delays no other address)
/// while its datagrams queue. `what` names the socket in warnings.
pub async fn serve_udp<O, F>(
    socket: Arc<UdpSocket>,
    limits: FlowLimits,
    counters: Arc<DatagramCounters>,
    stop: CancellationToken,
    tasks: TaskTracker,
    what: String,
    open: O,
) where
    O: Fn(SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = Option<OpenedFlow>> + Send + 'static,
{
    let open = Arc::new(open);
    let flows: Flows = Arc::default();
    let full_warning = WarnLimit::new(WARN_WINDOW * 6);
    let mut buf = vec![0u8; RECV_BUF];
    let mut next_id = 0u64;
    loop {
        let (n, from) = tokio::select! {
            () = stop.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // An ICMP error for an earlier send_to (Linux reports it here): not fatal.
                Err(_) => continue,
            },
        };
        let dg = Bytes::copy_from_slice(&buf[..n]);
        let tx = {
            let mut map = flows.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&from) {
                Some((_, tx)) if !tx.is_closed() => Some(tx.clone()),
                _ => {
                    map.remove(&from);
                    if map.len() >= limits.max_flows {
                        None
                    } else {
                        let (tx, rx) = mpsc::channel(limits.queue.max(1));
                        next_id += 1;
                        map.insert(from, (next_id, tx.clone()));
                        let task = run_flow(
                            socket.clone(),
                            from,
                            rx,
                            next_id,
                            flows.clone(),
                            counters.clone(),
                            limits.idle,
                            stop.clone(),
                            open(from),
                        );
                        tasks.spawn(task);
                        Some(tx)
                    }
                }
            }
        };
        let Some(tx) = tx else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(more) = full_warning.check_at(Instant::now()) {
                tracing::warn!(
                    %from,
                    "{what}: {} UDP flows open, the most allowed; datagrams from new addresses \
                     are dropped until some idle out{more}",
                    limits.max_flows
                );
            }
            continue;
        };
        if tx.try_send(dg).is_err() {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    // Dropping the senders ends every flow's queue: their tasks close their streams.
    flows.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

#[allow(clippy::too_many_arguments)]
async fn run_flow<F>(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    id: u64,
    flows: Flows,
    counters: Arc<DatagramCounters>,
    idle: Duration,
    stop: CancellationToken,
    open: F,
) where
    F: Future<Output = Option<OpenedFlow>> + Send + 'static,
{
    counters.flows_open.fetch_add(1, Ordering::Relaxed);
    counters.flows_total.fetch_add(1, Ordering::Relaxed);
    let opened = tokio::select! {
        o = open => o,
        () = stop.cancelled() => None,
    };
    if let Some(flow) = opened {
        // The socket's stop closes the queue (its sender is dropped): the flow ends then too.
        let end = relay_datagrams(
            flow.stream,
            Uplink::Queue(&mut rx),
            Downlink::To(&socket, peer),
            idle,
            &flow.stop,
            &counters.inbound,
            &counters.outbound,
        )
        .await;
        tracing::debug!(%peer, ?end, "UDP flow closed");
        drop(flow.keep);
    } else {
        // Not opened: what it queued is lost.
        counters
            .dropped
            .fetch_add(rx.len() as u64, Ordering::Relaxed);
    }
    {
        let mut map = flows.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&peer).is_some_and(|(i, _)| *i == id) {
            map.remove(&peer);
        }
    }
    counters.flows_open.fetch_sub(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::{start, Mode, MuxConfig, MuxHandle};

    /// A mux whose far end echoes every stream byte for byte: framed datagrams come back as
    /// the same framed datagrams.
    fn echoing_mux() -> MuxHandle {
        let (a, b) = tokio::io::duplex(1 << 20);
        let cfg = MuxConfig::default();
        let (near, _near_in) = start(a, Mode::Client, &cfg);
        let (_far, mut far_in) = start(b, Mode::Server, &cfg);
        tokio::spawn(async move {
            let _far = _far;
            while let Some(s) = far_in.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = tokio::io::split(s);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        near
    }

    async fn serve(limits: FlowLimits) -> (SocketAddr, Arc<DatagramCounters>, CancellationToken) {
        let mux = echoing_mux();
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let counters = Arc::new(DatagramCounters::default());
        let stop = CancellationToken::new();
        let open = move |_| {
            let mux = mux.clone();
            async move {
                Some(OpenedFlow {
                    stream: mux.open().await.ok()?,
                    stop: CancellationToken::new(),
                    keep: Box::new(()),
                })
            }
        };
        let task = serve_udp(
            socket,
            limits,
            counters.clone(),
            stop.clone(),
            TaskTracker::new(),
            "test".into(),
            open,
        );
        tokio::spawn(task);
        (addr, counters, stop)
    }

    async fn ask(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
        sock.send_to(msg, to).await.unwrap();
        let mut buf = vec![0; RECV_BUF];
        let got = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await;
        let n = got.ok()?.ok()?;
        Some(buf[..n].to_vec())
    }

    #[tokio::test]
    async fn flows_past_the_limit_are_dropped_and_counted_and_idle_ones_close() {
        let limits = FlowLimits {
            idle: Duration::from_millis(1500),
            max_flows: 2,
            queue: 8,
        };
        let (addr, counters, stop) = serve(limits).await;
        let socks = [
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        ];
        assert_eq!(
            ask(&socks[0], addr, b"one").await.as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            ask(&socks[1], addr, b"two").await.as_deref(),
            Some(&b"two"[..])
        );
        // A third address while two flows are open: dropped, counted.
        assert_eq!(ask(&socks[2], addr, b"three").await, None);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(counters.flows_open.load(Ordering::Relaxed), 2);
        // Once the first two idle out, the third gets its flow.
        let deadline = Instant::now() + Duration::from_secs(5);
        while counters.flows_open.load(Ordering::Relaxed) > 0 {
            assert!(Instant::now() < deadline, "idle flows stayed open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            ask(&socks[2], addr, b"three").await.as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(counters.inbound.datagrams.load(Ordering::Relaxed), 3);
        assert_eq!(counters.outbound.bytes.load(Ordering::Relaxed), 11);
        stop.cancel();
    }
}
