//! `MuxStream`: one yamux stream with tokio I/O traits and prompt wake-up on session end.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::io::AsyncWrite as _;
use futures::stream::Stream as _;
use futures::task::AtomicWaker;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};

use crate::send_queue::StreamQueue;
use crate::session::Shared;

/// Wakers of the tasks blocked on one stream, so the driver can wake them when the session ends:
/// yamux leaves readers and credit-starved writers parked forever after a graceful close
/// (rust-yamux#216).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    read: AtomicWaker,
    write: AtomicWaker,
    /// This stream's bytes in the session's send queue.
    pub(crate) queue: StreamQueue,
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
/// * It is also an `AsyncBufRead` that lends out the received frames themselves: a caller that
///   writes them on (the forwarder) saves copying every byte into a buffer of its own.
#[derive(Debug)]
pub struct MuxStream {
    inner: yamux::Stream,
    id: u32,
    gate: Arc<Gate>,
    shared: Arc<Shared>,
    shut_down: bool,
    /// The frame being read: yamux hands each one over as the buffer it was received into,
    /// so taking it whole (instead of yamux copying it out piecemeal) leaves one copy, to
    /// whoever reads, or none for `AsyncBufRead` users. `frame.as_ref()[pos..]` is unread.
    frame: Option<yamux::Packet>,
    pos: usize,
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
            frame: None,
            pos: 0,
        }
    }

    /// The yamux stream id (odd: opened by the client side, even: by the server side).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Where to run the task that serves this stream: inside the session's driver task
    /// rather than as a task of its own (see [`SessionSpawner`]).
    pub fn session_spawner(&self) -> SessionSpawner {
        SessionSpawner::new(self.shared.clone())
    }

    /// The session this stream belongs to.
    pub(crate) fn session(&self) -> &Arc<Shared> {
        &self.shared
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
        self.shared.send_queue.forget(&self.gate.queue);
        self.shared.deregister(self.id);
    }
}

impl MuxStream {
    /// Make sure an unread frame is at hand; `Ready(Ok(()))` without one is EOF.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.frame.is_none() {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    // yamux never queues empty frames today; skip them should it ever do.
                    if !frame.as_ref().is_empty() {
                        self.frame = Some(frame);
                        self.pos = 0;
                    }
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => {
                    // yamux ends the stream for FIN and for RST alike. Without our own FIN,
                    // only an RST (or the session dying) moves the stream to Closed; a FIN
                    // leaves it RecvClosed.
                    if !self.shut_down && self.inner.is_closed() {
                        let err = if self.shared.is_ended() {
                            self.session_ended_error()
                        } else {
                            io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                format!("stream {}: reset by the peer", self.id),
                            )
                        };
                        return Poll::Ready(Err(err));
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => {
                    // Register before checking: the driver sets `ended` before waking gates.
                    self.gate.read.register(cx.waker());
                    if self.shared.is_ended() {
                        return Poll::Ready(Err(self.session_ended_error()));
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    fn unread(&self) -> &[u8] {
        self.frame.as_ref().map_or(&[], |f| &f.as_ref()[self.pos..])
    }

    /// Mark `n` unread bytes (at most all of them) as read; a used-up frame is freed.
    fn advance(&mut self, n: usize) {
        let len = self.frame.as_ref().map_or(0, |f| f.as_ref().len());
        self.pos = (self.pos + n).min(len);
        if self.pos == len {
            self.frame = None;
            self.pos = 0;
        }
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // The caller may hand over a buffer that already holds bytes of its own.
        let start = buf.filled().len();
        // Fill `buf` from as many frames as are ready (a reader with a large buffer gets
        // small frames in one go), but never wait once something was copied.
        while buf.remaining() > 0 {
            if this.frame.is_none() && buf.filled().len() == start {
                std::task::ready!(this.poll_frame(cx))?;
            } else if this.frame.is_none() {
                match this.poll_frame(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) | Poll::Pending => break,
                }
            }
            let unread = this.unread();
            if unread.is_empty() {
                break; // EOF
            }
            let n = unread.len().min(buf.remaining());
            buf.put_slice(&unread[..n]);
            this.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncBufRead for MuxStream {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_frame(cx))?;
        Poll::Ready(Ok(this.unread()))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        self.get_mut().advance(amt);
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
        if this
            .shared
            .send_queue
            .poll_admit(&this.gate.queue, cx)
            .is_pending()
        {
            // `end()` wakes queue waiters too.
            return this.pending_write(cx);
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.pending_write(cx),
            Poll::Ready(Ok(n)) => {
                this.shared.send_queue.add(&this.gate.queue, n);
                Poll::Ready(Ok(n))
            }
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

/// Engines move streams and handles into spawned tasks and share `MuxHandle` across them.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + Unpin + 'static>() {}
    assert_send_sync::<MuxStream>();
    assert_send_sync::<crate::MuxHandle>();
    assert_send_sync::<crate::Incoming>();
};

/// Runs stream handlers inside their session's driver task instead of spawning them: the
/// bytes a handler moves were decrypted on that task, so they are still in the same core's
/// cache, and the runtime does not move them between workers (eight busy streams as tasks of
/// their own cost 6-18 % more CPU per byte than one). Use it for handlers that mostly wait on
/// I/O; CPU-heavy work belongs in a task of its own, since it would hold up every stream of
/// the session. A handler's panic ends that handler only. Once the session has ended,
/// handlers get tasks of their own.
///
/// ```
/// use tokio::io::AsyncWriteExt;
/// use tunnel_mux::{start, Mode, MuxConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = tokio::io::duplex(256 * 1024);
/// let (client, _incoming) = start(a, Mode::Client, &MuxConfig::default());
/// let (_server, mut server_incoming) = start(b, Mode::Server, &MuxConfig::default());
/// let mut out = client.open().await?;
/// let (done_tx, done_rx) = tokio::sync::oneshot::channel();
/// out.session_spawner().spawn(async move {
///     let sent = out.write_all(b"hi").await;
///     let _ = done_tx.send(sent.is_ok());
/// });
/// assert!(done_rx.await?);
/// assert!(server_incoming.accept().await.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SessionSpawner(Arc<Shared>);

impl SessionSpawner {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self(shared)
    }

    /// Run `handler` beside the session's driver (or, once the session ended, as a task).
    pub fn spawn<F>(&self, handler: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.0.spawner.spawn(Box::pin(handler));
    }
}

impl std::fmt::Debug for SessionSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SessionSpawner").field(&self.0).finish()
    }
}
