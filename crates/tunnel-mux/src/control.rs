//! The control stream: the first stream of every session. It carries heartbeats and stream
//! aborts, handled here, and the engines' own messages (registration, updates), handed over.
//!
//! A heartbeat runs both ways: each side pings every `interval` and gives the session up when
//! nothing at all arrives on the control stream for `timeout`. That catches the silent deaths
//! TCP does not report for many minutes (a NAT that forgot the mapping, a router redial),
//! while an idle but healthy session lives forever: pings keep answering.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tunnel_proto::{
    read_message, write_message, FramedError, Message, ProtoError, RejectCode, Rejected,
};

use crate::relay::AbortTable;
use crate::session::Shared;
use crate::MuxStream;

/// Frames queued toward the control stream. Aborts beyond it are dropped: they are hints,
/// and the stream's own end still reaches the peer.
const QUEUE: usize = 256;

/// What the control channels carry. tokio's mpsc allocates its first 32-slot block up front,
/// so a channel of bare `Message`s (88 bytes) costs every idle session about 3.4 KiB; boxing
/// keeps an idle session's channels small (a pointer per slot) for one allocation per message
/// on a path that carries a few messages a minute.
type Queued = Box<Message>;

/// How long a last word to the peer (why we end the session) may take to write.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// How often to ping, and how long a silent peer is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// Time between pings.
    pub interval: Duration,
    /// Silence after which the peer is declared dead.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Sends on a session's control stream; cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlSender(mpsc::Sender<Queued>);

impl ControlSender {
    /// Tell the peer the data path of stream `id` failed, so it resets its side.
    pub fn abort(&self, id: u32) {
        let _ = self.0.try_send(Box::new(Message::Abort(id)));
    }

    /// Queue a message; fails only when the control stream is gone.
    pub async fn send(&self, msg: Message) -> Result<(), ControlClosed> {
        self.0.send(Box::new(msg)).await.map_err(|_| ControlClosed)
    }

    /// Queue a message unless the queue is full or the control stream is gone; returns
    /// whether it was queued. For notices sent to many sessions at once, where one slow peer
    /// must not hold up the rest.
    pub fn try_send(&self, msg: Message) -> bool {
        self.0.try_send(Box::new(msg)).is_ok()
    }
}

/// Receives the peer's messages other than heartbeats and aborts (see [`ControlChannel`]).
#[derive(Debug)]
pub struct ControlInbox(mpsc::Receiver<Queued>);

impl ControlInbox {
    /// The next message from the peer; `None` once the control reader has stopped (its
    /// reason is in [`ControlChannel::ended`]). Cancel-safe, like `mpsc::Receiver::recv`.
    pub async fn recv(&mut self) -> Option<Message> {
        self.0.recv().await.map(|m| *m)
    }
}

/// The control stream has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlClosed;

impl fmt::Display for ControlClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the control stream is closed")
    }
}

impl std::error::Error for ControlClosed {}

/// A running control stream.
#[derive(Debug)]
pub struct ControlChannel {
    /// Queue messages toward the peer.
    pub sender: ControlSender,
    /// Messages from the peer other than heartbeats and aborts.
    pub inbox: ControlInbox,
    /// Ends with the reason when the peer closes, fails, or falls silent past the timeout.
    pub ended: JoinHandle<String>,
    /// Set (before `ended` resolves) when the end was the peer's goodbye.
    by_peer: Arc<AtomicBool>,
}

impl ControlChannel {
    /// Whether the control stream ended because the peer closed the session or its control
    /// stream on purpose (a client that shuts down, say), rather than by a failure, a
    /// heartbeat timeout or our own close. Meaningful once [`ControlChannel::ended`] resolved.
    pub fn closed_by_peer(&self) -> bool {
        self.by_peer.load(Ordering::Acquire)
    }
}

/// Serve `stream` as the control stream until it ends. The spawned tasks end with it.
pub fn spawn_control(
    stream: MuxStream,
    aborts: AbortTable,
    heartbeat: Heartbeat,
    max_frame: usize,
) -> ControlChannel {
    // Boxed items: see `Queued`.
    let (tx, rx) = mpsc::channel::<Queued>(QUEUE);
    let (inbox_tx, inbox) = mpsc::channel::<Queued>(QUEUE);
    let session = stream.session().clone();
    let (rd, wr) = tokio::io::split(stream);
    let sender = ControlSender(tx);
    // Allocated up front as well, sized for its item: boxed too.
    let (farewell_tx, farewell_rx) = oneshot::channel::<Queued>();
    let mut writer = tokio::spawn(write_loop(
        wr,
        rx,
        farewell_rx,
        heartbeat.interval,
        max_frame,
    ));
    let reader = read_loop(
        rd,
        session,
        sender.clone(),
        inbox_tx,
        aborts,
        heartbeat.timeout,
        max_frame,
    );
    let by_peer = Arc::new(AtomicBool::new(false));
    let peer_closed = by_peer.clone();
    let ended = tokio::spawn(async move {
        let (why, farewell) = reader.await;
        if why == PEER_CLOSED {
            peer_closed.store(true, Ordering::Release);
        }
        if let Some(msg) = farewell {
            // Tell the peer why, briefly: it may be gone as well.
            if farewell_tx.send(Box::new(msg)).is_ok() {
                let _ = tokio::time::timeout(FAREWELL_TIMEOUT, &mut writer).await;
            }
        }
        writer.abort();
        why
    });
    ControlChannel {
        sender,
        inbox: ControlInbox(inbox),
        ended,
        by_peer,
    }
}

/// Why the control stream ended when the peer said goodbye.
const PEER_CLOSED: &str = "the peer closed the session";

async fn read_loop(
    mut rd: ReadHalf<MuxStream>,
    session: Arc<Shared>,
    sender: ControlSender,
    inbox: mpsc::Sender<Queued>,
    aborts: AbortTable,
    timeout: Duration,
    max_frame: usize,
) -> (String, Option<Message>) {
    loop {
        let frame = match tokio::time::timeout(timeout, read_message(&mut rd, max_frame)).await {
            Err(_) => {
                let why = format!(
                    "no heartbeat from the peer for {}s; the connection is dead",
                    timeout.as_secs()
                );
                return (why, None);
            }
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return (PEER_CLOSED.into(), None),
            Ok(Err(FramedError::Proto(ProtoError::FrameTooLarge { len, max }))) => {
                // A frame over our limit will come again on every reconnection: say why
                // before closing, or the peer only sees a bare close and retries forever. The
                // limit is a defence (a peer may be hostile), so neither side is told to raise
                // it: the sender has to send less.
                let farewell = Message::Rejected(Rejected::new(
                    RejectCode::BadConfig,
                    format!(
                        "a control message of {len} bytes is too large: the peer accepts at \
                         most {max} bytes (its max_frame_size); register fewer proxies, \
                         visitors, domains or locations"
                    ),
                ));
                let why = format!(
                    "the peer sent a control message of {len} bytes, over this side's limit \
                     of {max} bytes (max_frame_size); it was told to send less and the \
                     session is closed"
                );
                return (why, Some(farewell));
            }
            // The session ending under the stream fails its read; if the peer ended it (a
            // GoAway, or EOF), that was a goodbye, not a failure.
            Ok(Err(_)) if session.peer_closed.load(Ordering::Acquire) => {
                return (PEER_CLOSED.into(), None)
            }
            Ok(Err(e)) => return (format!("control stream failed: {e}"), None),
        };
        match frame {
            Message::Ping(n) => {
                if sender.send(Message::Pong(n)).await.is_err() {
                    return ("control stream closed".into(), None);
                }
            }
            Message::Pong(_) => {}
            Message::Abort(id) => {
                aborts.abort(id);
            }
            other => {
                if inbox.send(Box::new(other)).await.is_err() {
                    return ("the session stopped listening".into(), None);
                }
            }
        }
    }
}

async fn write_loop(
    mut wr: WriteHalf<MuxStream>,
    mut rx: mpsc::Receiver<Queued>,
    mut farewell: oneshot::Receiver<Queued>,
    interval: Duration,
    max_frame: usize,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the session just proved itself alive
    let mut n: u64 = 0;
    loop {
        let msg = tokio::select! {
            m = rx.recv() => match m {
                Some(m) => m,
                None => return,
            },
            _ = tick.tick() => {
                n = n.wrapping_add(1);
                Box::new(Message::Ping(n))
            }
            Ok(last) = &mut farewell => {
                let _ = write_message(&mut wr, &last, max_frame).await;
                return;
            }
        };
        if write_message(&mut wr, &msg, max_frame).await.is_err() {
            return;
        }
    }
}
