//! `MuxStream`: one yamux stream with tokio I/O traits and prompt wake-up on session end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::io::{AsyncRead as _, AsyncWrite as _};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::session::Shared;

/// Wakers of the tasks blocked on one stream, so the driver can wake them when the session ends:
/// yamux leaves readers and credit-starved writers parked forever after a graceful close
/// (rust-yamux#216).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Gate {
    pub(crate) fn wake(&self) {
        self.read.wake();
        self.write.wake();
    }
}

/// One multiplexed stream: a tokio `AsyncRead + AsyncWrite`.
///
/// * `shutdown()` sends a yamux FIN (half-close): the peer reads EOF and may still reply.
/// * Dropping the stream without `shutdown()` resets it (RST).
/// * A read returns EOF (`Ok(0)`) only for a clean FIN. If the peer reset the stream or the
///   session ended, reads fail with `ConnectionReset` / `ConnectionAborted` once buffered data
///   is consumed (after our own `shutdown()` the two cannot be told apart and read as EOF).
/// * Once the session has ended, writes fail promptly instead of waiting for credit.
#[derive(Debug)]
pub struct MuxStream {
    inner: yamux::Stream,
    id: u32,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    shut_down: bool,
}

impl MuxStream {
    /// Wrap a yamux stream; the caller has registered `gate` under `id` in `shared`.
    pub(crate) fn new(inner: yamux::Stream, gate: Arc<Gate>, shared: Arc<Shared>) -> Self {
        Self {
            id: inner.id().val(),
            inner,
            gate,
            shared,
            shut_down: false,
        }
    }

    /// The yamux stream id (odd: opened by the client side, even: by the server side).
    pub fn id(&self) -> u32 {
        self.id
    }

    fn session_ended_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("stream {}: the tunnel session ended", self.id),
        )
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        self.shared.deregister(self.id);
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let dst = buf.initialize_unfilled();
        if dst.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, dst) {
            Poll::Ready(Ok(0)) => {
                // yamux reads EOF for FIN and for RST alike. Without our own FIN, only an RST
                // (or the session dying) moves the stream to Closed; a FIN leaves it RecvClosed.
                if !this.shut_down && this.inner.is_closed() {
                    let err = if this.shared.is_ended() {
                        this.session_ended_error()
                    } else {
                        io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            format!("stream {}: reset by the peer", this.id),
                        )
                    };
                    return Poll::Ready(Err(err));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                // Register before checking: the driver sets `ended` before waking gates.
                this.gate.read.register(cx.waker());
                if this.shared.is_ended() {
                    return Poll::Ready(Err(this.session_ended_error()));
                }
                Poll::Pending
            }
        }
    }
}

impl MuxStream {
    fn pending_write<T>(&self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        self.gate.write.register(cx.waker());
        if self.shared.is_ended() {
            return Poll::Ready(Err(self.session_ended_error()));
        }
        Poll::Pending
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_close(cx) {
            Poll::Ready(Ok(())) => {
                this.shut_down = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.pending_write(cx),
        }
    }
}

/// Engines move streams and handles into spawned tasks and share `Control` across them.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + Unpin + 'static>() {}
    assert_send_sync::<MuxStream>();
    assert_send_sync::<crate::Control>();
    assert_send_sync::<crate::Incoming>();
};
