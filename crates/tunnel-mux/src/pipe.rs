//! The bidirectional forwarder used for every proxied connection.
//!
//! Like `tokio::io::copy_bidirectional` (one task, both directions polled together), plus what
//! a tunnel needs on top: an idle timeout once one side has half-closed (so sockets do not pile
//! up in CLOSE_WAIT), and an explicit "failed" outcome so the caller can abort instead of
//! closing cleanly.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tunnel_proto::{ReadBuffer, SMALL_READ};

use crate::rate::{RateLimit, TokenBucket};

/// Forwarder tuning.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PipeConfig {
    /// Largest read per direction. A direction starts with 8 KiB, grows to this once a read
    /// fills its buffer, and holds no buffer at all while idle. Default 64 KiB.
    pub buffer_size: usize,
    /// After the first EOF, how long the other direction may stay silent before the pipe
    /// gives up. Default 60 s.
    pub half_close_idle: Duration,
    /// How long both directions together may move no byte before the pipe gives up
    /// ([`PipeEnd::Idle`]); `None` (the default) never. Checked by a coarse timer, a quarter
    /// of this apart, against the byte counts: nothing is done per read, and a connection is
    /// closed between 1 and 1.25 times this after its last byte.
    pub idle: Option<Duration>,
    /// Bandwidth limits the connection shares with others (see [`RateLimit`]): each
    /// direction waits for every one of them. Empty (the default): no limit.
    pub rate_limits: Vec<Arc<RateLimit>>,
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            buffer_size: 64 * 1024,
            half_close_idle: Duration::from_secs(60),
            idle: None,
            rate_limits: Vec::new(),
        }
    }
}

impl PipeConfig {
    /// Set the per-direction buffer size (at least 1 byte is used).
    #[must_use]
    pub fn with_buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Set the idle timeout that applies after the first EOF.
    #[must_use]
    pub fn with_half_close_idle(mut self, idle: Duration) -> Self {
        self.half_close_idle = idle;
        self
    }

    /// Give up once no byte moved either way for `idle` (`None` or zero: never).
    #[must_use]
    pub fn with_idle(mut self, idle: Option<Duration>) -> Self {
        self.idle = idle.filter(|d| !d.is_zero());
        self
    }

    /// Limit both directions by these shared limits (a proxy's, its client's).
    #[must_use]
    pub fn with_rate_limits(mut self, limits: Vec<Arc<RateLimit>>) -> Self {
        self.rate_limits = limits;
        self
    }
}

/// How many checks of the byte counts one idle period spans.
const IDLE_CHECKS: u32 = 4;

/// Bytes moved by a pipe, per direction (counted when written to the destination).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Bytes copied from `a` to `b`.
    pub a_to_b: u64,
    /// Bytes copied from `b` to `a`.
    pub b_to_a: u64,
}

/// Live byte counters a pipe adds to as it goes, shared by every connection of a proxy.
/// Updated with one relaxed atomic add per direction per wake-up, never under a lock.
#[derive(Debug, Default)]
pub struct ByteCounters {
    /// Bytes copied from `a` to `b` so far.
    pub a_to_b: AtomicU64,
    /// Bytes copied from `b` to `a` so far.
    pub b_to_a: AtomicU64,
}

impl ByteCounters {
    /// The counts now.
    pub fn snapshot(&self) -> PipeStats {
        PipeStats {
            a_to_b: self.a_to_b.load(Ordering::Relaxed),
            b_to_a: self.b_to_a.load(Ordering::Relaxed),
        }
    }
}

/// How a pipe ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum PipeEnd {
    /// Both directions reached EOF and both writers were shut down.
    Finished(PipeStats),
    /// A read, write or shutdown failed; both directions stopped. The caller should abort
    /// (e.g. [`reset_tcp`] its TCP side and tell the peer).
    Failed {
        /// Bytes moved before the failure.
        stats: PipeStats,
        /// The first error.
        error: io::Error,
    },
    /// One side half-closed and the other direction then moved no byte for `half_close_idle`.
    IdleAfterHalfClose(PipeStats),
    /// Neither direction moved a byte for [`PipeConfig::idle`].
    Idle(PipeStats),
}

impl PipeEnd {
    /// The byte counts, whatever the outcome.
    pub fn stats(&self) -> PipeStats {
        match self {
            PipeEnd::Finished(s) | PipeEnd::IdleAfterHalfClose(s) | PipeEnd::Idle(s) => *s,
            PipeEnd::Failed { stats, .. } => *stats,
        }
    }
}

/// Copy both ways until both directions hit EOF.
///
/// EOF on one side shuts down (FIN) the other writer while the other direction keeps going.
/// Any error stops both directions ([`PipeEnd::Failed`]). After the first EOF, if no byte moves
/// for `cfg.half_close_idle`, the pipe gives up ([`PipeEnd::IdleAfterHalfClose`]). Writers are
/// flushed only when their reader has nothing more to give, never per chunk.
pub async fn pipe<A, B>(a: &mut A, b: &mut B, cfg: &PipeConfig) -> PipeEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    pipe_counted(a, b, cfg, None).await
}

/// [`pipe`], adding the bytes to `counters` while they move, so statistics stay live during
/// long transfers.
pub async fn pipe_counted<A, B>(
    a: &mut A,
    b: &mut B,
    cfg: &PipeConfig,
    counters: Option<&ByteCounters>,
) -> PipeEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (sa, sb) = (Copied::new(cfg.buffer_size), Copied::new(cfg.buffer_size));
    pipe_from(a, b, sa, sb, cfg, counters).await
}

/// [`pipe_counted`] with the way each side is read chosen by the caller: [`Copied`] into a
/// buffer of the pipe's own, or [`Borrowed`] straight out of the reader's.
pub(crate) async fn pipe_from<A, B, SA, SB>(
    a: &mut A,
    b: &mut B,
    sa: SA,
    sb: SB,
    cfg: &PipeConfig,
    counters: Option<&ByteCounters>,
) -> PipeEnd
where
    A: AsyncWrite + Unpin + ?Sized,
    B: AsyncWrite + Unpin + ?Sized,
    SA: Source<A>,
    SB: Source<B>,
{
    let limits = &cfg.rate_limits[..];
    let mut a_to_b = Direction::new(Limited::new(sa, limits, RateLimit::a_to_b));
    let mut b_to_a = Direction::new(Limited::new(sb, limits, RateLimit::b_to_a));
    let idle = cfg.half_close_idle;
    // Created disarmed; armed at the first EOF. A timer entry is only registered when polled.
    let timer = tokio::time::sleep_until(far_future());
    tokio::pin!(timer);
    let mut half_closed_at: Option<Instant> = None;
    let mut last_progress = Instant::now();
    let mut published = PipeStats::default();
    // The whole-connection idle check: a second timer, armed only when configured, that
    // compares the byte counts every `check`; `quiet` counts the checks that saw no change.
    let check = cfg
        .idle
        .map(|d| (d / IDLE_CHECKS).max(Duration::from_millis(1)));
    let idle_timer = tokio::time::sleep_until(match check {
        Some(c) => deadline(Instant::now(), c),
        None => far_future(),
    });
    tokio::pin!(idle_timer);
    let (mut seen, mut quiet) = (0u64, 0u32);

    poll_fn(|cx| {
        let before = a_to_b.amt + b_to_a.amt;
        let ab = a_to_b.poll(cx, &mut *a, &mut *b);
        let ba = b_to_a.poll(cx, &mut *b, &mut *a);
        let stats = PipeStats {
            a_to_b: a_to_b.amt,
            b_to_a: b_to_a.amt,
        };
        if let Some(c) = counters {
            if stats.a_to_b != published.a_to_b {
                c.a_to_b
                    .fetch_add(stats.a_to_b - published.a_to_b, Ordering::Relaxed);
            }
            if stats.b_to_a != published.b_to_a {
                c.b_to_a
                    .fetch_add(stats.b_to_a - published.b_to_a, Ordering::Relaxed);
            }
            published = stats;
        }
        for r in [ab, ba] {
            if let Poll::Ready(Err(error)) = r {
                return Poll::Ready(PipeEnd::Failed { stats, error });
            }
        }
        if a_to_b.done && b_to_a.done {
            return Poll::Ready(PipeEnd::Finished(stats));
        }
        if let Some(check) = check {
            while idle_timer.as_mut().poll(cx).is_ready() {
                let moved = stats.a_to_b + stats.b_to_a;
                if moved == seen {
                    quiet += 1;
                    if quiet >= IDLE_CHECKS {
                        return Poll::Ready(PipeEnd::Idle(stats));
                    }
                } else {
                    (seen, quiet) = (moved, 0);
                }
                idle_timer.as_mut().reset(deadline(Instant::now(), check));
            }
        }
        if !(a_to_b.eof_seen || b_to_a.eof_seen) {
            return Poll::Pending;
        }
        let now = Instant::now();
        if half_closed_at.is_none() {
            half_closed_at = Some(now);
            last_progress = now;
            timer.as_mut().reset(deadline(now, idle));
        } else if a_to_b.amt + b_to_a.amt != before {
            // Only note the time here; the timer is moved lazily when it fires.
            last_progress = now;
        }
        while timer.as_mut().poll(cx).is_ready() {
            let due = deadline(last_progress, idle);
            if Instant::now() >= due {
                return Poll::Ready(PipeEnd::IdleAfterHalfClose(stats));
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    })
    .await
}

/// Reset a TCP connection on purpose (SO_LINGER 0, then close) so the far end sees an abort
/// (RST), not a clean end of stream. Use it after [`PipeEnd::Failed`].
pub fn reset_tcp(stream: tokio::net::TcpStream) {
    if let Err(e) = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("could not set SO_LINGER 0 before reset: {e}");
    }
    drop(stream);
}

fn far_future() -> Instant {
    // Roughly 30 years, as tokio itself does for "never".
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

fn deadline(from: Instant, idle: Duration) -> Instant {
    from.checked_add(idle).unwrap_or_else(far_future)
}

/// How a direction gets the bytes it writes, from a reader of type `R`.
pub(crate) trait Source<R: ?Sized> {
    /// The bytes to write next, reading more once the last ones are written; empty at EOF.
    fn poll_fill<'a>(
        &'a mut self,
        cx: &mut Context<'_>,
        r: &'a mut R,
    ) -> Poll<io::Result<&'a [u8]>>;
    /// The first `n` bytes of the last fill were written.
    fn consume(&mut self, r: &mut R, n: usize);
    /// The reader returned `Pending`.
    fn parked(&mut self) {}
    /// The reader is done.
    fn release(&mut self) {}
}

/// A direction's source under bandwidth limits: after each write the bytes are charged to
/// every bucket, and while one is in debt the next read waits. Without limits it only
/// passes calls through.
pub(crate) struct Limited<'l, S> {
    inner: S,
    limits: &'l [Arc<RateLimit>],
    bucket: fn(&RateLimit) -> &TokenBucket,
    /// Armed while a bucket is in debt.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

impl<'l, S> Limited<'l, S> {
    fn new(inner: S, limits: &'l [Arc<RateLimit>], bucket: fn(&RateLimit) -> &TokenBucket) -> Self {
        Self {
            inner,
            limits,
            bucket,
            wait: None,
            waiting: false,
        }
    }
}

/// Debts shorter than this are carried to the next read rather than slept off: a timer that
/// fine costs more than it buys, and the bucket remembers the debt either way.
const MIN_WAIT: Duration = Duration::from_millis(1);

impl<R: ?Sized, S: Source<R>> Source<R> for Limited<'_, S> {
    fn poll_fill<'a>(
        &'a mut self,
        cx: &mut Context<'_>,
        r: &'a mut R,
    ) -> Poll<io::Result<&'a [u8]>> {
        if self.waiting {
            if let Some(sleep) = &mut self.wait {
                ready!(sleep.as_mut().poll(cx));
            }
            self.waiting = false;
        }
        self.inner.poll_fill(cx, r)
    }

    fn consume(&mut self, r: &mut R, n: usize) {
        self.inner.consume(r, n);
        if self.limits.is_empty() {
            return;
        }
        let bucket = self.bucket;
        let wait = self
            .limits
            .iter()
            .map(|l| bucket(l).charge(n))
            .max()
            .unwrap_or_default();
        if wait > MIN_WAIT {
            let until = Instant::now() + wait;
            match &mut self.wait {
                Some(sleep) => sleep.as_mut().reset(until),
                None => self.wait = Some(Box::pin(tokio::time::sleep_until(until))),
            }
            self.waiting = true;
        }
    }

    fn parked(&mut self) {
        // Held back by the limit, not idle: keep the read buffer for when the wait ends.
        if !self.waiting {
            self.inner.parked();
        }
    }

    fn release(&mut self) {
        self.inner.release();
    }
}

/// Reads into a buffer of the pipe's own: 8 KiB to start, `buffer_size` for bulk, none while
/// idle (see [`ReadBuffer`]).
pub(crate) struct Copied {
    buf: ReadBuffer,
    max: usize,
    /// The bytes of the last read still to be written are `buf.bytes()[pos..cap]`.
    pos: usize,
    cap: usize,
}

impl Copied {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            buf: ReadBuffer::new(size),
            max: size.max(1),
            pos: 0,
            cap: 0,
        }
    }
}

impl<R: AsyncRead + Unpin + ?Sized> Source<R> for Copied {
    fn poll_fill<'a>(
        &'a mut self,
        cx: &mut Context<'_>,
        r: &'a mut R,
    ) -> Poll<io::Result<&'a [u8]>> {
        if self.pos == self.cap {
            let n = if self.buf.allocated() == 0 {
                // Without a buffer (idle, or light traffic), look before allocating: the quiet
                // direction of a pipe is polled on every wake-up of the busy one, and zeroing
                // 8 KiB each time only to find nothing cost more than the bytes moved. Tokio's
                // sockets read into uninitialised memory, so the probe costs nothing.
                let mut probe = [MaybeUninit::<u8>::uninit(); SMALL_READ];
                let mut rb = ReadBuf::uninit(&mut probe[..SMALL_READ.min(self.max)]);
                ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
                let got = rb.filled();
                if !got.is_empty() {
                    self.buf.space()[..got.len()].copy_from_slice(got);
                }
                got.len()
            } else {
                let mut rb = ReadBuf::new(self.buf.space());
                ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
                rb.filled().len()
            };
            self.buf.filled(n);
            self.pos = 0;
            self.cap = n;
        }
        Poll::Ready(Ok(&self.buf.bytes()[self.pos..self.cap]))
    }

    fn consume(&mut self, _: &mut R, n: usize) {
        self.pos = (self.pos + n).min(self.cap);
    }

    fn parked(&mut self) {
        self.buf.parked();
    }

    fn release(&mut self) {
        self.buf.release();
    }
}

/// Writes straight from the reader's own buffer ([`crate::MuxStream`] lends out its received
/// frames), saving a copy of every byte and the pipe's buffer for that direction.
#[derive(Debug, Default)]
pub(crate) struct Borrowed;

impl<R: AsyncBufRead + Unpin + ?Sized> Source<R> for Borrowed {
    fn poll_fill<'a>(
        &'a mut self,
        cx: &mut Context<'_>,
        r: &'a mut R,
    ) -> Poll<io::Result<&'a [u8]>> {
        Pin::new(r).poll_fill_buf(cx)
    }

    fn consume(&mut self, r: &mut R, n: usize) {
        Pin::new(r).consume(n);
    }
}

/// One direction's copy state.
struct Direction<S> {
    src: S,
    amt: u64,
    /// The reader returned EOF (the writer may still be draining or shutting down).
    eof_seen: bool,
    need_flush: bool,
    /// Copied everything and shut the writer down.
    done: bool,
}

impl<S> Direction<S> {
    fn new(src: S) -> Self {
        Self {
            src,
            amt: 0,
            eof_seen: false,
            need_flush: false,
            done: false,
        }
    }

    fn poll<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Poll<io::Result<()>>
    where
        R: ?Sized,
        S: Source<R>,
        W: AsyncWrite + Unpin + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        while !self.eof_seen {
            // Stay fair to other tasks: a pipe between two always-ready ends would
            // otherwise never yield.
            let coop = ready!(tokio::task::coop::poll_proceed(cx));
            let data = match self.src.poll_fill(cx, r) {
                Poll::Ready(Ok(data)) => data,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing more to read for now: push out what we wrote.
                    if self.need_flush {
                        ready!(Pin::new(&mut *w).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    self.src.parked();
                    return Poll::Pending;
                }
            };
            coop.made_progress();
            if data.is_empty() {
                self.eof_seen = true;
                break;
            }
            let n = ready!(Pin::new(&mut *w).poll_write(cx, data))?;
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the destination accepted no more bytes",
                )));
            }
            self.src.consume(r, n);
            self.amt += n as u64;
            self.need_flush = true;
        }
        if self.need_flush {
            ready!(Pin::new(&mut *w).poll_flush(cx))?;
            self.need_flush = false;
        }
        ready!(Pin::new(&mut *w).poll_shutdown(cx))?;
        self.done = true;
        self.src.release();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Poll one direction until it returns `Pending` (everything readable was copied).
    async fn copy_ready<R, W>(d: &mut Direction<Copied>, r: &mut R, w: &mut W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        poll_fn(|cx| match d.poll(cx, r, w) {
            Poll::Pending => Poll::Ready(()),
            Poll::Ready(res) => panic!("direction ended: {res:?}"),
        })
        .await;
    }

    #[tokio::test]
    async fn idle_directions_hold_no_buffer_and_bulk_ones_grow_and_keep_it() {
        let (mut src, mut r) = tokio::io::duplex(1024 * 1024);
        let (mut w, mut sink) = tokio::io::duplex(1024 * 1024);
        let mut d = Direction::new(Copied::new(64 * 1024));

        src.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        copy_ready(&mut d, &mut r, &mut w).await;
        assert_eq!(
            d.src.buf.allocated(),
            0,
            "a small request must not leave a buffer behind"
        );

        let bulk: Vec<u8> = (0..300 * 1024u32).map(|i| i as u8).collect();
        src.write_all(&bulk).await.unwrap();
        copy_ready(&mut d, &mut r, &mut w).await;
        assert_eq!(
            d.src.buf.allocated(),
            64 * 1024,
            "a bulk direction grows to buffer_size and keeps it"
        );

        drop(w);
        let mut got = Vec::new();
        sink.read_to_end(&mut got).await.unwrap();
        assert_eq!(&got[..18], b"GET / HTTP/1.1\r\n\r\n");
        assert!(got[18..] == bulk[..]);
    }
}

#[cfg(test)]
mod rate_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Move `total` bytes from `a`'s peer to `b`'s peer through a pipe under `cfg`; returns
    /// the (virtual) time it took.
    async fn timed_transfer(cfg: PipeConfig, total: usize) -> Duration {
        let (mut user, mut a) = tokio::io::duplex(64 * 1024);
        let (mut b, mut service) = tokio::io::duplex(64 * 1024);
        let pipe = tokio::spawn(async move { pipe(&mut a, &mut b, &cfg).await });
        let start = Instant::now();
        let writer = tokio::spawn(async move {
            user.write_all(&vec![7u8; total]).await.unwrap();
            user.shutdown().await.unwrap();
            user
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = service.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got += n;
        }
        let took = start.elapsed();
        assert_eq!(got, total);
        drop(service);
        drop(writer.await.unwrap());
        let _ = pipe.await;
        took
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_pipe_moves_at_the_limit() {
        let limit = Arc::new(RateLimit::new(256 * 1024));
        let cfg = PipeConfig::default().with_rate_limits(vec![limit]);
        let took = timed_transfer(cfg, 1024 * 1024).await;
        // 4 s at the rate, less the 100 ms burst, plus at most one read ahead.
        let expect = Duration::from_millis(3900);
        assert!(
            took.abs_diff(expect) < Duration::from_millis(300),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_tightest_of_several_limits_applies() {
        let wide = Arc::new(RateLimit::new(4 * 1024 * 1024));
        let tight = Arc::new(RateLimit::new(128 * 1024));
        let cfg = PipeConfig::default().with_rate_limits(vec![wide, tight]);
        let took = timed_transfer(cfg, 512 * 1024).await;
        assert!(
            took.abs_diff(Duration::from_millis(3900)) < Duration::from_millis(600),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unlimited_pipe_takes_no_time() {
        let took = timed_transfer(PipeConfig::default(), 4 * 1024 * 1024).await;
        assert!(took < Duration::from_millis(10), "{took:?}");
    }
}
