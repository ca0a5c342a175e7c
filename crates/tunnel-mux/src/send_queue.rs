//! A bound on the bytes a session's streams have handed to yamux that the connection has not
//! yet written to the transport.
//!
//! yamux gives every stream a command channel of ten frames, and a stream may queue as much as
//! its send window allows (256 KiB at first, megabytes once the peer has let it grow). When
//! the transport is the bottleneck, or the peer stops reading its socket, every busy stream
//! fills its share: 16 stuck streams held ~3.9 MiB in the session here, and a server's streams
//! are fed by strangers' connections, so a client that stops reading could make the server hold
//! a send window's worth for each of up to `max_streams` streams. Holding the queue to a fixed size bounds that memory, and
//! keeps what waits for the transport small (it is copied twice more on its way out).
//!
//! A stream that has nothing queued may always write (so no stream starves and an interactive
//! stream's next frame never waits for a bulk stream's budget); beyond that, a stream writes
//! only while the session's queue is under the limit. The writer side counts a frame when yamux
//! takes it; [`FrameTracker`] watches the bytes the connection writes and counts each data
//! frame's body out as it goes, by stream id (the yamux header is a fixed 12-byte format).

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use crate::session::Shared;

/// Default bound on the session's queued bytes: four 64 KiB frames, enough to keep the
/// transport busy between two wake-ups of the driver (see the module docs).
pub const DEFAULT_SEND_QUEUE: usize = 256 * 1024;

/// The session-wide count and the streams waiting for it to drop.
#[derive(Debug)]
pub(crate) struct SendQueue {
    limit: isize,
    queued: AtomicIsize,
    waiters: Mutex<Vec<Waker>>,
}

/// One stream's share of the queue. `dead` once the stream is dropped: its frames still
/// in yamux's channel may yet be written, and must not be counted out a second time.
#[derive(Debug, Default)]
pub(crate) struct StreamQueue(Mutex<Own>);

#[derive(Debug, Default)]
struct Own {
    queued: isize,
    dead: bool,
    /// The stream's writer while it waits: woken as soon as its own frames have left, even
    /// if other streams keep the session over the limit.
    waker: Option<Waker>,
}

impl SendQueue {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit: isize::try_from(limit).unwrap_or(isize::MAX),
            queued: AtomicIsize::new(0),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Bytes queued now, across the session's streams.
    pub(crate) fn queued(&self) -> usize {
        usize::try_from(self.queued.load(Ordering::Acquire)).unwrap_or(0)
    }

    fn admits(&self, own: &StreamQueue) -> bool {
        own.0.lock().queued <= 0 || self.queued.load(Ordering::Acquire) < self.limit
    }

    /// Whether `own`'s stream may hand yamux another frame now; if not, the task is woken
    /// when the queue drops under the limit (or [`SendQueue::wake_all`] is called).
    pub(crate) fn poll_admit(&self, own: &StreamQueue, cx: &mut Context<'_>) -> Poll<()> {
        if self.admits(own) {
            return Poll::Ready(());
        }
        own.0.lock().waker = Some(cx.waker().clone());
        {
            let mut waiters = self.waiters.lock();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Checked again after registering: the queue may have drained in between.
        if self.admits(own) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// yamux took `n` bytes of `own`'s stream as a frame.
    pub(crate) fn add(&self, own: &StreamQueue, n: usize) {
        let n = isize::try_from(n).unwrap_or(isize::MAX);
        let mut own = own.0.lock();
        if !own.dead {
            own.queued += n;
            self.queued.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// `n` body bytes of `own`'s stream were written to the transport.
    pub(crate) fn sent(&self, own: &StreamQueue, n: usize) {
        let n = isize::try_from(n).unwrap_or(isize::MAX);
        let (before, emptied) = {
            let mut own = own.0.lock();
            if own.dead {
                return;
            }
            // May go below zero for a moment: the connection can write a frame before the
            // writer, back from yamux, has counted it in.
            let was = own.queued;
            own.queued -= n;
            let emptied = if was > 0 && own.queued <= 0 {
                own.waker.take()
            } else {
                None
            };
            (self.queued.fetch_sub(n, Ordering::AcqRel), emptied)
        };
        if let Some(w) = emptied {
            w.wake();
        }
        if before >= self.limit && before - n < self.limit {
            self.wake_all();
        }
    }

    /// `own`'s stream is gone: whatever it still had queued no longer counts.
    pub(crate) fn forget(&self, own: &StreamQueue) {
        let left = {
            let mut own = own.0.lock();
            own.dead = true;
            std::mem::take(&mut own.queued)
        };
        if left != 0 {
            let before = self.queued.fetch_sub(left, Ordering::AcqRel);
            if before >= self.limit && before - left < self.limit {
                self.wake_all();
            }
        }
    }

    /// Wake every waiting stream (the queue drained, or the session ended).
    pub(crate) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for w in waiters {
            w.wake();
        }
    }
}

/// Follows the yamux frames in the bytes the connection writes: a 12-byte header (version,
/// type, flags, stream id, length, big-endian), then, for a data frame (type 0), `length`
/// bytes of body. Window updates, pings and go-aways carry no body.
pub(crate) struct FrameTracker {
    shared: Arc<Shared>,
    header: [u8; HEADER],
    have: usize,
    /// Body bytes of the current data frame still to come, and its stream's share (`None`
    /// when the stream is gone: its bytes are no one's any more).
    body: usize,
    owner: Option<Arc<crate::stream::Gate>>,
}

const HEADER: usize = 12;
const TYPE_DATA: u8 = 0;

impl FrameTracker {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            header: [0; HEADER],
            have: 0,
            body: 0,
            owner: None,
        }
    }

    /// `bytes` were accepted for writing, in order, right after the previous ones.
    pub(crate) fn wrote(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body > 0 {
                let n = self.body.min(bytes.len());
                self.body -= n;
                bytes = &bytes[n..];
                if let Some(gate) = &self.owner {
                    self.shared.send_queue.sent(&gate.queue, n);
                }
                if self.body == 0 {
                    self.owner = None;
                }
                continue;
            }
            let n = (HEADER - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == HEADER {
                self.have = 0;
                self.start_frame();
            }
        }
    }

    fn start_frame(&mut self) {
        let h = &self.header;
        if h[1] != TYPE_DATA {
            return;
        }
        let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let len = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        self.body = len as usize;
        if self.body > 0 {
            self.owner = self.shared.streams().get(&id).cloned();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use futures::task::noop_waker_ref;

    fn header(kind: u8, id: u32, len: u32) -> Vec<u8> {
        let mut h = vec![0, kind, 0, 0];
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h
    }

    #[test]
    fn a_stream_with_nothing_queued_always_writes_and_others_wait_for_the_limit() {
        let q = SendQueue::new(100);
        let (a, b) = (StreamQueue::default(), StreamQueue::default());
        let mut cx = Context::from_waker(noop_waker_ref());
        q.add(&a, 150);
        assert!(
            q.poll_admit(&a, &mut cx).is_pending(),
            "over the limit with bytes queued"
        );
        assert!(
            q.poll_admit(&b, &mut cx).is_ready(),
            "nothing queued: may write"
        );
        q.sent(&a, 60);
        assert!(
            q.poll_admit(&a, &mut cx).is_ready(),
            "under the limit again"
        );
        q.sent(&a, 90);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn a_waiting_stream_is_woken_when_its_own_frames_left_though_the_session_stays_full() {
        use std::sync::atomic::AtomicUsize;
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let q = SendQueue::new(100);
        let (a, b) = (StreamQueue::default(), StreamQueue::default());
        q.add(&a, 64);
        q.add(&b, 200);
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(woken.clone());
        assert!(q
            .poll_admit(&a, &mut Context::from_waker(&waker))
            .is_pending());
        q.sent(&a, 64);
        assert_eq!(q.queued(), 200, "still over the limit");
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "a was not woken");
        assert!(q
            .poll_admit(&a, &mut Context::from_waker(&waker))
            .is_ready());
    }

    #[test]
    fn a_dropped_streams_bytes_stop_counting_once() {
        let q = SendQueue::new(100);
        let a = StreamQueue::default();
        q.add(&a, 300);
        q.forget(&a);
        assert_eq!(q.queued(), 0);
        // Its frames still leave later: nothing is counted out twice.
        q.sent(&a, 300);
        q.add(&a, 10);
        assert_eq!(q.queued(), 0);
    }

    #[test]
    fn sent_before_counted_in_nets_to_zero() {
        let q = SendQueue::new(100);
        let a = StreamQueue::default();
        q.sent(&a, 64);
        q.add(&a, 64);
        assert_eq!(q.queued(), 0);
        assert!(q
            .poll_admit(&a, &mut Context::from_waker(noop_waker_ref()))
            .is_ready());
    }

    #[test]
    fn the_tracker_counts_data_bodies_out_by_stream_across_split_writes() {
        let shared = Arc::new(Shared::new(16, 1 << 20, crate::colocate::channel().0));
        let gate = Arc::new(crate::stream::Gate::default());
        shared.streams().insert(3, gate.clone());
        shared.send_queue.add(&gate.queue, 1000 + 5);
        let mut wire = header(1, 3, 262_144); // a window update: no body
        wire.extend(header(TYPE_DATA, 3, 1000));
        wire.extend(vec![7u8; 1000]);
        wire.extend(header(2, 0, 42)); // a ping
        wire.extend(header(TYPE_DATA, 5, 9)); // a stream that is gone
        wire.extend(vec![1u8; 9]);
        wire.extend(header(TYPE_DATA, 3, 5));
        wire.extend(vec![2u8; 5]);
        for step in [1usize, 5, 12, 13, 700, wire.len()] {
            let mut t = FrameTracker::new(shared.clone());
            for chunk in wire.chunks(step) {
                t.wrote(chunk);
            }
            assert_eq!(shared.send_queue.queued(), 0, "chunks of {step}");
            shared.send_queue.add(&gate.queue, 1005);
        }
    }
}
