//! A read-ahead buffer between the TCP socket and rustls.
//!
//! rustls asks the socket for at most 4 KiB more than it holds, so a 16 KiB record takes
//! several `recv` calls (measured: ~10 KiB per call on a bulk transfer, four times the syscalls
//! of the sending side). Reading up to [`CHUNK`] at once and serving rustls from memory costs a
//! copy but saves most of those calls. The buffer exists only while data flows: an idle
//! session (heartbeats only) holds none, so ten thousand idle clients do not pay 64 KiB each
//! (see [`ReadBuffer`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ReadBuffer;

/// Most bytes read from the socket at once (a bulk transfer).
const CHUNK: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct ReadAhead<T> {
    inner: T,
    buf: ReadBuffer,
    /// The unread bytes of the last socket read are `buf.bytes()[pos..len]`.
    pos: usize,
    len: usize,
}

impl<T> ReadAhead<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            buf: ReadBuffer::new(CHUNK),
            pos: 0,
            len: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.len {
            if dst.remaining() >= CHUNK {
                // A reader that asks for this much gains nothing from the copy.
                return Pin::new(&mut this.inner).poll_read(cx, dst);
            }
            let mut rb = ReadBuf::new(this.buf.space());
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => {
                    this.buf.parked();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    this.buf.filled(n);
                    this.pos = 0;
                    this.len = n;
                    if n == 0 {
                        return Poll::Ready(Ok(())); // EOF
                    }
                }
            }
        }
        let n = dst.remaining().min(this.len - this.pos);
        dst.put_slice(&this.buf.bytes()[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Read until the inner stream has nothing more right now.
    async fn drain_ready<T: AsyncRead + Unpin>(r: &mut ReadAhead<T>, out: &mut Vec<u8>) {
        poll_fn(|cx| loop {
            let mut chunk = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => return Poll::Ready(()),
            }
        })
        .await;
    }

    #[tokio::test]
    async fn bytes_arrive_exactly_in_order_whatever_the_read_sizes() {
        let (mut w, r) = tokio::io::duplex(300 * 1024);
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(7_777) {
                w.write_all(chunk).await.unwrap();
            }
        });
        let mut r = ReadAhead::new(r);
        let mut got = Vec::new();
        let mut sizes = [1usize, 5, 4096, 16_389, 70_000].into_iter().cycle();
        loop {
            let mut chunk = vec![0u8; sizes.next().unwrap()];
            let n = r.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert!(got == data);
    }

    #[tokio::test]
    async fn light_traffic_holds_no_buffer_and_bursts_keep_it() {
        let (mut w, r) = tokio::io::duplex(1024 * 1024);
        let mut r = ReadAhead::new(r);
        let mut out = Vec::new();

        w.write_all(&[1; 100]).await.unwrap();
        drain_ready(&mut r, &mut out).await;
        assert_eq!(out.len(), 100);
        assert_eq!(
            r.buf.allocated(),
            0,
            "a heartbeat-sized read must not keep 64 KiB"
        );

        w.write_all(&[2; 200 * 1024]).await.unwrap();
        drain_ready(&mut r, &mut out).await;
        assert_eq!(out.len(), 100 + 200 * 1024);
        assert_eq!(
            r.buf.allocated(),
            CHUNK,
            "a bulk reader keeps its buffer between wake-ups"
        );
    }
}
