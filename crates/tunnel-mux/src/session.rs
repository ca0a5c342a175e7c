//! Starting a session, the handles (`MuxHandle`, `Incoming`) and the state they share.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::colocate::{self, Spawner};
use crate::send_queue::SendQueue;
use crate::stream::{Gate, MuxStream};
use crate::{driver, MuxConfig, MuxError};

/// Which end of the session we are. The two ends must differ (yamux uses odd stream ids for
/// the client and even ones for the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The end that dialed (the tunnel client).
    Client,
    /// The end that accepted (the tunnel server).
    Server,
}

/// Reply channel of one `open()` call.
pub(crate) type OpenReply = oneshot::Sender<Result<MuxStream, MuxError>>;

/// Open requests waiting in the channel; `open()` callers block on `send` beyond this.
const OPEN_QUEUE: usize = 64;

/// An accepted stream waiting for `accept()`. tokio's mpsc allocates its first 32-slot block
/// up front, so a channel of bare `MuxStream`s (104 bytes) costs every idle session about
/// 3.9 KiB; boxing keeps an idle session's channels small (a pointer per slot), for one
/// allocation per inbound stream. (`OpenReply` is a pointer already.)
pub(crate) type Inbound = Box<MuxStream>;

/// Start a session over any tokio byte stream (typically `Established::stream` after the
/// handshake frames). Spawns the driver task that owns the yamux connection, so it must be
/// called from within a tokio runtime. Out-of-range `cfg` values are clamped (see
/// [`MuxConfig::validate`]).
///
/// The session ends when `MuxHandle::close()` is called, when every `MuxHandle` and the
/// `Incoming` have been dropped, when the peer closes or on an I/O error. Every stream then
/// fails promptly (see [`MuxStream`]).
pub fn start<T>(io: T, mode: Mode, cfg: &MuxConfig) -> (MuxHandle, Incoming)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let eff = cfg.effective();
    let (spawner, handlers) = colocate::channel();
    let shared = Arc::new(Shared::new(eff.max_streams, eff.send_queue, spawner));
    let (open_tx, open_rx) = mpsc::channel(OPEN_QUEUE);
    let (inbound_tx, inbound_rx) = mpsc::channel::<Inbound>(eff.accept_backlog);
    let mode = match mode {
        Mode::Client => yamux::Mode::Client,
        Mode::Server => yamux::Mode::Server,
    };
    tokio::spawn(driver::run(
        io,
        mode,
        eff,
        shared.clone(),
        open_rx,
        inbound_tx,
        handlers,
    ));
    let control = MuxHandle {
        open_tx,
        shared: shared.clone(),
    };
    let incoming = Incoming { inbound_rx, shared };
    (control, incoming)
}

/// Cloneable handle to open streams and to close or watch the session.
#[derive(Clone, Debug)]
pub struct MuxHandle {
    open_tx: mpsc::Sender<OpenReply>,
    shared: Arc<Shared>,
}

impl MuxHandle {
    /// Open a new outbound stream. The peer only learns about it with the first byte written
    /// (yamux opens lazily), so write the stream's open header right away.
    ///
    /// Fails with [`MuxError::Closed`] once the session ended and with
    /// [`MuxError::TooManyStreams`] at the `max_streams` limit (the session stays usable).
    pub async fn open(&self) -> Result<MuxStream, MuxError> {
        if self.shared.is_ended() {
            return Err(MuxError::Closed);
        }
        let (tx, rx) = oneshot::channel();
        self.open_tx.send(tx).await.map_err(|_| MuxError::Closed)?;
        rx.await.unwrap_or(Err(MuxError::Closed))
    }

    /// Where to run a task that will open a stream here and relay it: inside this session's
    /// driver task (see [`crate::SessionSpawner`]).
    pub fn session_spawner(&self) -> crate::SessionSpawner {
        crate::SessionSpawner::new(self.shared.clone())
    }

    /// Close the session: queued stream data and a GoAway are flushed, then the driver ends.
    /// Streams still open are cut (their reads and writes fail). Idempotent, does not wait:
    /// use [`MuxHandle::closed`] for that.
    pub fn close(&self) {
        self.shared.request_close();
    }

    /// Resolves once the driver task has ended, for whatever reason.
    pub async fn closed(&self) {
        self.shared.driver_done.cancelled().await;
    }

    /// True once the session can no longer be used: `close()` was called, the peer went away
    /// or the connection failed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_ended()
    }

    /// Bytes this session's streams have written that the connection has not yet passed to
    /// the transport (bounded by [`MuxConfig::send_queue`], give or take one frame per stream).
    pub fn send_queued(&self) -> usize {
        self.shared.send_queue.queued()
    }

    /// Live streams: opened plus accepted (including those still waiting in the accept
    /// backlog), not yet dropped.
    pub fn num_streams(&self) -> usize {
        self.shared.streams().len()
    }
}

/// Receiver of the streams the peer opens.
#[derive(Debug)]
pub struct Incoming {
    inbound_rx: mpsc::Receiver<Inbound>,
    shared: Arc<Shared>,
}

impl Incoming {
    /// The next stream opened by the peer; `None` once the session ended.
    pub async fn accept(&mut self) -> Option<MuxStream> {
        if self.shared.is_ended() {
            return None;
        }
        tokio::select! {
            stream = self.inbound_rx.recv() => stream.filter(|_| !self.shared.is_ended()).map(|s| *s),
            () = self.shared.driver_done.cancelled() => None,
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // The driver closes the session once the Controls are gone too.
        self.shared.incoming_dropped.store(true, Ordering::Release);
        self.shared.driver_waker.wake();
    }
}

/// State shared by the driver, the handles and every stream of one session.
pub(crate) struct Shared {
    /// Session unusable (closing or ended). Set before gates are woken.
    ended: AtomicBool,
    close_requested: AtomicBool,
    /// The peer closed the session (GoAway, EOF, or a close without TLS close_notify), as
    /// opposed to a failure (reset, timeout, protocol error) or our own close. Set before
    /// `ended`.
    pub(crate) peer_closed: AtomicBool,
    pub(crate) incoming_dropped: AtomicBool,
    /// Cancelled when the driver task has finished.
    pub(crate) driver_done: CancellationToken,
    pub(crate) driver_waker: AtomicWaker,
    /// Live streams by id, with the wakers to poke when the session ends.
    streams: Mutex<HashMap<u32, Arc<Gate>>>,
    pub(crate) max_streams: usize,
    /// A peer opening streams faster than we accept would write a warning per stream.
    pub(crate) backlog_full: tunnel_proto::WarnLimit,
    /// Bytes the streams handed yamux that are not yet written (see `send_queue`).
    pub(crate) send_queue: SendQueue,
    /// Stream handlers to run inside the driver (see `colocate`).
    pub(crate) spawner: Spawner,
}

impl Shared {
    pub(crate) fn new(max_streams: usize, send_queue: usize, spawner: Spawner) -> Self {
        Self {
            ended: AtomicBool::new(false),
            close_requested: AtomicBool::new(false),
            peer_closed: AtomicBool::new(false),
            incoming_dropped: AtomicBool::new(false),
            driver_done: CancellationToken::new(),
            driver_waker: AtomicWaker::new(),
            streams: Mutex::new(HashMap::new()),
            max_streams,
            backlog_full: tunnel_proto::WarnLimit::default(),
            send_queue: SendQueue::new(send_queue),
            spawner,
        }
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub(crate) fn close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    fn request_close(&self) {
        self.close_requested.store(true, Ordering::Release);
        self.driver_waker.wake();
    }

    /// Mark the session unusable and wake every blocked stream so it sees that.
    pub(crate) fn end(&self) {
        self.ended.store(true, Ordering::Release);
        let gates: Vec<Arc<Gate>> = self.streams().values().cloned().collect();
        for gate in gates {
            gate.wake();
        }
        self.send_queue.wake_all();
    }

    /// The lock only guards a map, so a panic elsewhere cannot leave it inconsistent.
    pub(crate) fn streams(&self) -> MutexGuard<'_, HashMap<u32, Arc<Gate>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wrap a new yamux stream, counting it as live.
    pub(crate) fn register(self: &Arc<Self>, stream: yamux::Stream) -> MuxStream {
        let gate = Arc::new(Gate::default());
        self.streams().insert(stream.id().val(), gate.clone());
        MuxStream::new(stream, gate, self.clone())
    }

    pub(crate) fn deregister(&self, id: u32) {
        self.streams().remove(&id);
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("ended", &self.is_ended())
            .field("streams", &self.streams().len())
            .field("max_streams", &self.max_streams)
            .finish()
    }
}
