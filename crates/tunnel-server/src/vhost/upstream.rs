//! Sending a routed request to the proxy's owner over a fresh stream (or, through
//! [`exchange`], to the server of the domain), streaming the answer back, and relaying an
//! upgraded (WebSocket) connection until it ends or idles out.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};
use tunnel_mux::{RateLimit, TokenBucket};

use super::{page, Body, Peer};
use crate::forward::open_to_owner;
use crate::registry::ProxyEntry;
use crate::Shared;

/// The server's own backstop on an answer; the client's `response_timeout` (default 60 s)
/// normally answers 504 first.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(120);
/// Silence, both ways, after which an upgraded connection is closed when the proxy does not
/// say otherwise (`idle_timeout`).
const DEFAULT_UPGRADED_IDLE: Duration = Duration::from_secs(60);

/// Send `req` to `entry`'s owner over a new stream, and stream the answer back.
pub(super) async fn forward(
    shared: &Shared,
    entry: &Arc<ProxyEntry>,
    from: &Peer,
    req: Request<Incoming>,
) -> Response<Body> {
    let (peer, dest) = (from.addr, from.dest);
    let (entry, slot, stream, guard) = match &entry.group {
        // Members are tried in turn, each with its own rules and limits.
        Some(group) => match crate::group::open(shared, group, peer, dest).await {
            Ok(o) => (o.entry, o.slot, o.stream, o.guard),
            Err(failure) => return group_failed(peer, &group.name, failure),
        },
        None => {
            let Some(slot) = crate::forward::begin_public(shared, entry, peer) else {
                return page(StatusCode::SERVICE_UNAVAILABLE, "too busy; try again");
            };
            match open_to_owner(entry, slot.lane(), Some(peer), dest).await {
                Ok((stream, guard)) => (entry.clone(), slot, stream, guard),
                Err(reason) => {
                    debug!(%peer, proxy = %entry.key, "request failed: {reason}");
                    return page(StatusCode::BAD_GATEWAY, "the service is unreachable");
                }
            }
        }
    };
    // The same buckets as the proxy's TCP connections: its own limit and its client's.
    let rates = entry.limits.read().rates();
    let metered = Metered {
        stream,
        entry: entry.clone(),
        request: Pace::new(rates.clone(), RateLimit::a_to_b),
        response: Pace::new(rates, RateLimit::b_to_a),
    };
    // The client aborting the stream ends the exchange at once.
    let abort = guard.token().clone();
    let idle = upgraded_idle(entry.spec.read().idle_timeout);
    let hold = (slot, guard, Active::new(entry.clone()));
    exchange(shared, metered, from, req, abort, hold, idle).await
}

/// The answer when no member of a group took a request.
fn group_failed(
    peer: std::net::SocketAddr,
    group: &str,
    failure: crate::group::Failure,
) -> Response<Body> {
    use crate::group::Failure;
    debug!(%peer, %group, "request failed: no member took it: {failure}");
    match failure {
        Failure::Denied => page(StatusCode::FORBIDDEN, "your address may not use this site"),
        Failure::Busy => page(StatusCode::SERVICE_UNAVAILABLE, "too busy; try again"),
        Failure::Unreachable(_) => page(StatusCode::BAD_GATEWAY, "the service is unreachable"),
    }
}

/// One HTTP/1.1 exchange over `io` (a stream to the owning client, or to the server of the
/// domain): send `req`, stream the answer back, and relay an upgraded connection (silent
/// for `idle` at most). `hold` lives as long as the connection over `io`; `abort` ends it.
pub(super) async fn exchange<S, H>(
    shared: &Shared,
    io: S,
    from: &Peer,
    mut req: Request<Incoming>,
    abort: CancellationToken,
    hold: H,
    idle: Option<Duration>,
) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Send + 'static,
{
    let peer = from.addr;
    let bad_gateway = || page(StatusCode::BAD_GATEWAY, "the service is unreachable");
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(e) => {
            debug!(%peer, "request failed: {e}");
            return bad_gateway();
        }
    };
    // The connection runs until the response body is done (or an upgrade ends), holding the
    // stream's slot; an abort or a hard stop ends it at once.
    let hard_stop = shared.hard_stop.clone();
    shared.streams.spawn(
        async move {
            tokio::select! {
                r = conn.with_upgrades() => if let Err(e) = r { debug!("stream ended: {e}") },
                () = abort.cancelled() => {}
                () = hard_stop.cancelled() => {}
            }
            drop(hold);
        }
        .in_current_span(),
    );
    let user_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = match tokio::time::timeout(RESPONSE_BACKSTOP, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(%peer, "request failed: {e}");
            return bad_gateway();
        }
        Err(_) => {
            return page(
                StatusCode::GATEWAY_TIMEOUT,
                "the service did not answer in time",
            )
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let service_upgrade = hyper::upgrade::on(&mut resp);
        let hard_stop = shared.hard_stop.clone();
        // An upgraded connection keeps its place in the connection limits while it lives.
        let permit = from.permit.clone();
        let task = async move {
            let _permit = permit;
            if let (Ok(u), Ok(s)) = (user_upgrade.await, service_upgrade.await) {
                tokio::select! {
                    () = relay_upgraded(TokioIo::new(u), TokioIo::new(s), idle) => {}
                    () = hard_stop.cancelled() => {}
                }
            }
        };
        shared.streams.spawn(task.in_current_span());
    }
    resp.map(BodyExt::boxed)
}

/// Counts a proxy's stream as active while it lives.
struct Active(Arc<ProxyEntry>);

impl Active {
    fn new(entry: Arc<ProxyEntry>) -> Self {
        entry
            .counters
            .active_streams
            .fetch_add(1, Ordering::Relaxed);
        Active(entry)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0
            .counters
            .active_streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The proxy's `idle_timeout` for an upgraded connection: unset means the default, 0 off.
pub(super) fn upgraded_idle(configured: Option<u64>) -> Option<Duration> {
    match configured {
        None => Some(DEFAULT_UPGRADED_IDLE),
        Some(0) => None,
        Some(secs) => Some(Duration::from_secs(secs)),
    }
}

/// Copy both ways until either side ends, or nothing moved either way for `idle`.
async fn relay_upgraded<A, B>(a: A, b: B, idle: Option<Duration>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(Clock::new());
    let mut a = Touch {
        io: a,
        clock: clock.clone(),
    };
    let mut b = Touch {
        io: b,
        clock: clock.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    let Some(idle) = idle else {
        let _ = copy.await;
        return;
    };
    let mut copy = std::pin::pin!(copy);
    loop {
        tokio::select! {
            _ = copy.as_mut() => return,
            () = tokio::time::sleep_until(clock.last() + idle) => {
                if clock.last() + idle <= Instant::now() {
                    debug!("upgraded connection idle for {}s; closing it", idle.as_secs());
                    return;
                }
            }
        }
    }
}

/// When bytes last moved, in milliseconds since the clock was made.
struct Clock {
    start: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Clock {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// An I/O object that marks the clock whenever it reads bytes.
struct Touch<T> {
    io: T,
    clock: Arc<Clock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touch<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touch<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One direction's bandwidth limits (`bandwidth_limit`, per proxy and per client): what
/// moved is charged to every bucket, and while one is in debt nothing more moves that way.
/// As in the TCP pipe, nothing queues here: the sender is held back by the tunnel's and
/// TCP's windows, so hyper holds no more than its own bounded buffers.
struct Pace {
    rates: Vec<Arc<RateLimit>>,
    bucket: fn(&RateLimit) -> &TokenBucket,
    /// Armed while a bucket is in debt.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Debts shorter than this are carried to the next transfer rather than slept off.
const MIN_WAIT: Duration = Duration::from_millis(1);

impl Pace {
    fn new(rates: Vec<Arc<RateLimit>>, bucket: fn(&RateLimit) -> &TokenBucket) -> Self {
        Pace {
            rates,
            bucket,
            wait: None,
        }
    }

    /// Ready once no bucket is in debt.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(sleep) = &mut self.wait {
            std::task::ready!(sleep.as_mut().poll(cx));
            self.wait = None;
        }
        Poll::Ready(())
    }

    /// Charge `n` bytes that just moved.
    fn charge(&mut self, n: usize) {
        if n == 0 || self.rates.is_empty() {
            return;
        }
        let bucket = self.bucket;
        let wait = self
            .rates
            .iter()
            .map(|r| bucket(r).charge(n))
            .max()
            .unwrap_or_default();
        if wait > MIN_WAIT {
            self.wait = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }
}

/// A stream to the owner that adds what it carries to the proxy's byte counters (requests
/// "in", responses "out"; HTTP heads included, as they travel the tunnel too) and paces
/// each direction by the proxy's bandwidth limits.
struct Metered {
    stream: tunnel_mux::MuxStream,
    entry: Arc<ProxyEntry>,
    request: Pace,
    response: Pace,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.response.poll_ready(cx));
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.entry
                .counters
                .bytes
                .b_to_a
                .fetch_add(n as u64, Ordering::Relaxed);
            self.response.charge(n);
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::task::ready!(self.request.poll_ready(cx));
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.entry
                .counters
                .bytes
                .a_to_b
                .fetch_add(*n as u64, Ordering::Relaxed);
            self.request.charge(*n);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn idle_setting_defaults_and_turns_off() {
        assert_eq!(upgraded_idle(None), Some(DEFAULT_UPGRADED_IDLE));
        assert_eq!(upgraded_idle(Some(0)), None);
        assert_eq!(upgraded_idle(Some(5)), Some(Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_relay_ends_after_idle_and_traffic_keeps_it_open() {
        let (a, mut a_far) = tokio::io::duplex(64);
        let (b, mut b_far) = tokio::io::duplex(64);
        let relay = tokio::spawn(relay_upgraded(a, b, Some(Duration::from_secs(10))));
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(8)).await;
            a_far.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_far.read_exact(&mut one).await.unwrap();
        }
        assert!(!relay.is_finished(), "traffic keeps it open");
        tokio::time::sleep(Duration::from_secs(11)).await;
        tokio::task::yield_now().await;
        assert!(relay.is_finished(), "silence closes it");
    }
}
