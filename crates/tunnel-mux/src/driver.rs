//! The task that owns the yamux connection: serves `open()` requests, hands inbound streams to
//! `Incoming`, and on exit makes sure every stream learns that the session is gone.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

use crate::colocate::Handlers;
use crate::config::Effective;
use crate::io::Coalesce;
use crate::send_queue::FrameTracker;
use crate::session::{Inbound, OpenReply, Shared};
use crate::MuxError;

/// How long a graceful close may take to flush before the connection is simply dropped (a
/// peer that stopped reading must not keep the driver alive).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Conn<T> = yamux::Connection<Compat<Coalesce<T>>>;

/// Why the active phase stopped.
enum Exit {
    /// `close()` or every handle dropped: close gracefully.
    Close,
    /// The peer closed (GoAway / EOF).
    PeerClosed,
    /// The connection failed.
    Failed(yamux::ConnectionError),
}

/// Marks the session ended however the driver stops, including a runtime shutdown dropping
/// the task mid-poll.
struct EndGuard(Arc<Shared>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.end();
        self.0.driver_done.cancel();
    }
}

pub(crate) async fn run<T>(
    io: T,
    mode: yamux::Mode,
    eff: Effective,
    shared: Arc<Shared>,
    open_rx: mpsc::Receiver<OpenReply>,
    inbound_tx: mpsc::Sender<Inbound>,
    mut handlers: Handlers,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let _guard = EndGuard(shared.clone());
    // Header and body of each frame leave in one write (see `io.rs`).
    let io = Coalesce::new(io)
        .tracking(FrameTracker::new(shared.clone()))
        .compat();
    let mut conn: Conn<T> = yamux::Connection::new(io, eff.yamux, mode);
    let mut opens = Opens {
        rx: open_rx,
        pending: VecDeque::new(),
        controls_gone: false,
    };

    let exit = poll_fn(|cx| {
        poll_active(
            cx,
            &mut conn,
            &shared,
            &mut opens,
            &inbound_tx,
            &mut handlers,
        )
    })
    .await;

    if matches!(&exit, Exit::PeerClosed) || matches!(&exit, Exit::Failed(e) if is_eof(e)) {
        // Before `end()`: whoever wakes to the end can tell a goodbye from a failure.
        shared
            .peer_closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
    // From here on streams must fail fast instead of waiting for the close to finish.
    shared.end();
    handlers.detach();
    drop(opens);
    match exit {
        Exit::Close => {
            tracing::debug!("closing tunnel session");
            let closing = poll_fn(|cx| conn.poll_close(cx));
            match tokio::time::timeout(CLOSE_TIMEOUT, closing).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("tunnel session close failed: {e}"),
                Err(_) => tracing::debug!("tunnel session close timed out; dropping it"),
            }
        }
        Exit::PeerClosed => tracing::debug!("tunnel session closed by the peer"),
        Exit::Failed(e) => tracing::debug!("tunnel session failed: {e}"),
    }
}

/// The peer closed its end without a goodbye: TCP closed without TLS's close_notify (or
/// mid-frame), as when a client process exits before its close finished. The peer left; the
/// connection did not fail under it (a reset or a timeout would).
fn is_eof(e: &yamux::ConnectionError) -> bool {
    let io = match e {
        yamux::ConnectionError::Io(io) => io,
        yamux::ConnectionError::Decode(yamux::FrameDecodeError::Io(io)) => io,
        _ => return false,
    };
    io.kind() == std::io::ErrorKind::UnexpectedEof
}

/// `open()` requests: the channel, those waiting for yamux, and whether every handle that
/// could send more is gone.
struct Opens {
    rx: mpsc::Receiver<OpenReply>,
    pending: VecDeque<OpenReply>,
    controls_gone: bool,
}

fn poll_active<T>(
    cx: &mut Context<'_>,
    conn: &mut Conn<T>,
    shared: &Arc<Shared>,
    opens: &mut Opens,
    inbound_tx: &mpsc::Sender<Inbound>,
    handlers: &mut Handlers,
) -> Poll<Exit>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    shared.driver_waker.register(cx.waker());
    if shared.close_requested() {
        return Poll::Ready(Exit::Close);
    }
    while !opens.controls_gone {
        match opens.rx.poll_recv(cx) {
            Poll::Ready(Some(reply)) => opens.pending.push_back(reply),
            Poll::Ready(None) => opens.controls_gone = true,
            Poll::Pending => break,
        }
    }
    if opens.controls_gone
        && shared
            .incoming_dropped
            .load(std::sync::atomic::Ordering::Acquire)
    {
        return Poll::Ready(Exit::Close);
    }

    while let Some(reply) = opens.pending.pop_front() {
        if reply.is_closed() {
            continue; // the caller stopped waiting
        }
        if shared.streams().len() >= shared.max_streams {
            let _ = reply.send(Err(MuxError::TooManyStreams {
                limit: shared.max_streams,
            }));
            continue;
        }
        match conn.poll_new_outbound(cx) {
            Poll::Ready(Ok(stream)) => {
                // If the caller is gone the stream is dropped unused; yamux opens lazily, so
                // the peer never hears of it.
                let _ = reply.send(Ok(shared.register(stream)));
            }
            Poll::Ready(Err(e)) => {
                let _ = reply.send(Err(MuxError::Session {
                    reason: e.to_string(),
                }));
                return Poll::Ready(Exit::Failed(e));
            }
            Poll::Pending => {
                // 256 streams still wait for the peer's ACK; yamux wakes us on the next one.
                opens.pending.push_front(reply);
                break;
            }
        }
    }

    // The only call that does socket I/O: poll it on every wake-up, whoever opened what.
    let mut new_streams = 0;
    loop {
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(stream))) => {
                hand_off(shared, inbound_tx, stream);
                new_streams += 1;
                if new_streams == OPENS_PER_TURN {
                    // A burst of opens: let the application take these (and its handlers
                    // refuse or drain them) before more streams' first frames are read in.
                    handlers.poll(cx);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Exit::Failed(e)),
            Poll::Ready(None) => return Poll::Ready(Exit::PeerClosed),
            Poll::Pending => {
                handlers.poll(cx);
                return Poll::Pending;
            }
        }
    }
}

/// Inbound streams handed to the application per turn of the driver.
const OPENS_PER_TURN: usize = 16;

/// Queue an inbound stream for `accept()`, or reset it (by dropping) if we are over a limit.
fn hand_off(shared: &Arc<Shared>, inbound_tx: &mpsc::Sender<Inbound>, stream: yamux::Stream) {
    if shared.streams().len() >= shared.max_streams {
        tracing::debug!(
            stream = stream.id().val(),
            limit = shared.max_streams,
            "resetting inbound stream: too many streams on this session"
        );
        return;
    }
    // Boxed: see `Inbound`.
    match inbound_tx.try_send(Box::new(shared.register(stream))) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(stream)) => {
            if let Some(more) = shared.backlog_full.check_at(std::time::Instant::now()) {
                tracing::warn!(
                    stream = stream.id(),
                    "resetting inbound stream: accept backlog full (the application is not \
                     accepting fast enough; raise accept_backlog){more}"
                );
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}
