//! A peer stream that adds the bytes it moves to its peer's counters, for the owner's side of
//! a Forward: there the relay's own counter slot already counts for the proxy.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tunnel_mux::ByteCounters;

/// `inner`, counting writes in `a_to_b` (toward the peer) and reads in `b_to_a`: one relaxed
/// add per read or write call, as the relay counts.
pub(super) struct Counted<'a, S> {
    inner: S,
    bytes: &'a ByteCounters,
}

impl<'a, S> Counted<'a, S> {
    pub(super) fn new(inner: S, bytes: &'a ByteCounters) -> Self {
        Counted { inner, bytes }
    }

    fn read(&self, n: usize) {
        self.bytes.b_to_a.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn wrote(&self, n: usize) {
        self.bytes.a_to_b.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncBufRead + Unpin> AsyncBufRead for Counted<'_, S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.read(amt);
        Pin::new(&mut this.inner).consume(amt);
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        this.wrote(n);
        Poll::Ready(Ok(n))
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

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;

    #[tokio::test]
    async fn reads_and_writes_are_counted_each_way_once() {
        let bytes = ByteCounters::default();
        let (near, mut far) = tokio::io::duplex(64);
        let mut s = Counted::new(BufReader::new(near), &bytes);
        s.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        far.write_all(b"abcdefg").await.unwrap();
        let buffered = s.fill_buf().await.unwrap().len();
        assert_eq!(buffered, 7);
        Pin::new(&mut s).consume(3);
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"defg");
        let n = bytes.snapshot();
        assert_eq!((n.a_to_b, n.b_to_a), (5, 7));
    }
}
