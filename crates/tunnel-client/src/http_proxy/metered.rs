//! The user connection's stream, counting what it carries into the proxy's byte counters.
//!
//! Counting at the stream (HTTP heads included, and an upgraded connection's raw bytes)
//! gives the same numbers as the server's counters for the proxy, which count the same
//! stream from the other end: `in` = read from the stream, toward the local service;
//! `out` = written to it, back to the user. One relaxed atomic add per chunk.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tunnel_mux::MuxStream;

use crate::stats::Counters;

pub(crate) struct Metered {
    stream: MuxStream,
    counters: Arc<Counters>,
}

impl Metered {
    pub(crate) fn new(stream: MuxStream, counters: Arc<Counters>) -> Self {
        Metered { stream, counters }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            // `a` is the local service, `b` the stream (see `Counters::bytes`).
            self.counters.bytes.b_to_a.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.counters
                .bytes
                .a_to_b
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
