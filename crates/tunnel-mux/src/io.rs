//! The adapter between yamux and the transport stream.
//!
//! yamux writes every frame as two writes, the 12-byte header and then the body, and flushes
//! after each frame. Over TLS that would make the header its own TLS record and its own
//! syscall. Copying both into a buffer fixes that but costs a memcpy of every body. Instead
//! small writes are held back and sent together with the next write as one vectored write
//! (rustls turns that into the same records without copying; TCP into one `writev`).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::send_queue::FrameTracker;

/// Writes up to this size are held back (a yamux header is 12 bytes; a few control frames in
/// a row still fit).
const HOLD: usize = 64;

pub(crate) struct Coalesce<T> {
    inner: T,
    held: [u8; HOLD],
    start: usize,
    end: usize,
    /// Told every byte accepted, in order, so the session's send queue can count frames out.
    tracker: Option<FrameTracker>,
}

impl<T> Coalesce<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            held: [0; HOLD],
            start: 0,
            end: 0,
            tracker: None,
        }
    }

    pub(crate) fn tracking(mut self, tracker: FrameTracker) -> Self {
        self.tracker = Some(tracker);
        self
    }

    /// A write of `buf` returned `r`: report the accepted bytes to the tracker.
    fn accepted(&mut self, buf: &[u8], r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let (Poll::Ready(Ok(n)), Some(t)) = (&r, &mut self.tracker) {
            t.wrote(&buf[..(*n).min(buf.len())]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Write out everything held back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.start < self.end {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.start..self.end]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.start += n;
        }
        self.start = 0;
        self.end = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() <= HOLD - this.end {
            this.held[this.end..this.end + buf.len()].copy_from_slice(buf);
            this.end += buf.len();
            return this.accepted(buf, Poll::Ready(Ok(buf.len())));
        }
        if this.start == this.end {
            let r = Pin::new(&mut this.inner).poll_write(cx, buf);
            return this.accepted(buf, r);
        }
        if !this.inner.is_write_vectored() {
            ready!(this.poll_drain(cx))?;
            let r = Pin::new(&mut this.inner).poll_write(cx, buf);
            return this.accepted(buf, r);
        }
        loop {
            let held = this.end - this.start;
            let bufs = [
                IoSlice::new(&this.held[this.start..this.end]),
                IoSlice::new(buf),
            ];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n >= held {
                this.start = 0;
                this.end = 0;
                if n > held {
                    return this.accepted(buf, Poll::Ready(Ok(n - held)));
                }
                // Only the held bytes went out; the caller's bytes are still to be written.
                let r = Pin::new(&mut this.inner).poll_write(cx, buf);
                return this.accepted(buf, r);
            }
            this.start += n;
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// An in-memory writer that takes at most `max` bytes per call, like a busy socket.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            let n = buf.len().min(this.max);
            this.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            let mut left = this.max;
            for b in bufs {
                let n = b.len().min(left);
                this.out.extend_from_slice(&b[..n]);
                left -= n;
            }
            Poll::Ready(Ok(this.max - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn trickle(max: usize, vectored: bool) -> Coalesce<Trickle> {
        Coalesce::new(Trickle {
            out: Vec::new(),
            max,
            vectored,
            calls: 0,
        })
    }

    #[tokio::test]
    async fn header_and_body_leave_in_one_write() {
        let mut w = trickle(usize::MAX, true);
        w.write_all(&[1; 12]).await.unwrap();
        w.write_all(&[2; 1000]).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.inner.calls, 1);
        assert_eq!(w.inner.out.len(), 1012);
        assert!(w.inner.out[..12].iter().all(|&b| b == 1));
    }

    #[tokio::test]
    async fn partial_writes_keep_every_byte_in_order() {
        for (max, vectored) in [(1, true), (5, true), (13, true), (7, false), (100, false)] {
            let mut w = trickle(max, vectored);
            let mut expected = Vec::new();
            for (i, len) in [12usize, 300, 12, 12, 70, 3, 64, 65, 12, 1]
                .into_iter()
                .enumerate()
            {
                let chunk = vec![i as u8; len];
                w.write_all(&chunk).await.unwrap();
                expected.extend_from_slice(&chunk);
                if i % 3 == 2 {
                    w.flush().await.unwrap();
                }
            }
            w.shutdown().await.unwrap();
            assert!(w.inner.out == expected, "max {max} vectored {vectored}");
        }
    }
}
