//! The connections of one session ("lanes"): the one that opened it, and the extra ones a
//! client with `connections = N` joins to it. A TLS connection is encrypted and decrypted by
//! one task on one core at each end; spreading busy streams over several lets both machines
//! use more cores.
//!
//! Both engines place a new stream with the same rule ([`Lanes::place`]): the live lane
//! carrying the fewest counted streams, the first one on a tie, so that a peer with one
//! stream at a time keeps using one connection. A stream counts on its lane for as long as
//! its [`LaneSlot`] lives.

use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tunnel_proto::Message;

use crate::control::{spawn_control, ControlChannel, ControlClosed, ControlSender, Heartbeat};
use crate::relay::AbortTable;
use crate::session::MuxHandle;
use crate::stream::MuxStream;
use crate::MuxError;

/// One connection of a session: its mux, the aborts of its streams, its control stream, and
/// how many streams it carries.
#[derive(Debug)]
pub struct Lane {
    /// The id the server welcomed this connection with (the session's own for the first).
    pub id: u64,
    /// The connection's mux: open streams on it, close it.
    pub control: MuxHandle,
    /// The streams on this connection whose data path the peer may abort.
    pub aborts: AbortTable,
    control_tx: ControlSender,
    /// Counted streams on this lane now; placement reads it.
    streams: AtomicUsize,
}

impl Lane {
    /// A lane whose control stream is already served (its sender is `control_tx`).
    pub fn new(id: u64, control: MuxHandle, aborts: AbortTable, control_tx: ControlSender) -> Self {
        Lane {
            id,
            control,
            aborts,
            control_tx,
            streams: AtomicUsize::new(0),
        }
    }

    /// Serve `first` as the control stream of connection `id` (heartbeats, aborts; see
    /// [`spawn_control`]) and make the connection a lane. The engine reads the returned
    /// channel for its own messages and for why the control stream ended.
    pub fn start(
        id: u64,
        control: MuxHandle,
        first: MuxStream,
        heartbeat: Heartbeat,
        max_frame: usize,
    ) -> (Arc<Lane>, ControlChannel) {
        let aborts = AbortTable::default();
        let channel = spawn_control(first, aborts.clone(), heartbeat, max_frame);
        let lane = Lane::new(id, control, aborts, channel.sender.clone());
        (Arc::new(lane), channel)
    }

    /// Queue a message on this lane's control stream.
    pub async fn send(&self, msg: Message) -> Result<(), ControlClosed> {
        self.control_tx.send(msg).await
    }

    /// Queue a message on this lane's control stream without waiting; see
    /// [`ControlSender::try_send`].
    pub fn try_send(&self, msg: Message) -> bool {
        self.control_tx.try_send(msg)
    }

    /// Tell the peer that the data path of stream `id` on this lane failed, so it resets its
    /// side.
    pub fn send_abort(&self, id: u32) {
        self.control_tx.abort(id);
    }

    /// Counted streams on this lane now.
    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Count one more stream on this lane until the slot drops.
    pub fn slot(self: &Arc<Self>) -> LaneSlot {
        self.streams.fetch_add(1, Ordering::AcqRel);
        LaneSlot { lane: self.clone() }
    }

    /// Whether new streams can still go here.
    pub fn is_live(&self) -> bool {
        !self.control.is_closed()
    }

    /// End the connection: streams waiting on it fail at once, finished ones read EOF.
    pub fn close(&self) {
        self.control.close();
    }
}

/// One counted stream on a lane; uncounted on drop. Derefs to the lane.
#[derive(Debug)]
pub struct LaneSlot {
    lane: Arc<Lane>,
}

impl LaneSlot {
    /// The lane that carries the stream.
    pub fn lane(&self) -> &Arc<Lane> {
        &self.lane
    }
}

impl Deref for LaneSlot {
    type Target = Lane;

    fn deref(&self) -> &Lane {
        &self.lane
    }
}

impl Drop for LaneSlot {
    fn drop(&mut self) {
        self.lane.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every lane of a session, the first one always present, at most `max` in all.
///
/// ```
/// use std::sync::Arc;
/// use tokio::io::DuplexStream;
/// use tunnel_mux::{start, Heartbeat, Lane, Lanes, Mode, MuxConfig, MuxError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A lane over an in-memory connection; `_peer` keeps its far end open.
/// async fn lane(id: u64) -> Result<(Arc<Lane>, DuplexStream), MuxError> {
///     let (io, peer) = tokio::io::duplex(64 * 1024);
///     let (control, _incoming) = start(io, Mode::Client, &MuxConfig::default());
///     let first = control.open().await?;
///     let (lane, _channel) = Lane::start(id, control, first, Heartbeat::default(), 64 * 1024);
///     Ok((lane, peer))
/// }
/// let (first, _p1) = lane(1).await?;
/// let (extra, _p2) = lane(2).await?;
/// let lanes = Lanes::new(first, 2);
/// lanes.add(extra)?;
///
/// let a = lanes.place(); // both empty: the first lane
/// let b = lanes.place(); // the second one now carries fewer
/// assert_eq!((a.id, b.id), (1, 2));
/// drop(a); // the stream ended: lane 1 is the least loaded again
/// assert_eq!(lanes.place().id, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Lanes {
    first: Arc<Lane>,
    extra: RwLock<Vec<Arc<Lane>>>,
    /// Places promised to joins still being answered (see [`Lanes::reserve`]); changed only
    /// under the `extra` write lock so that a check and its promise are one step.
    reserved: AtomicUsize,
    max: usize,
}

impl Lanes {
    /// The lanes of a session opened by `first`, which may grow to `max` lanes in all.
    pub fn new(first: Arc<Lane>, max: usize) -> Self {
        Lanes {
            first,
            extra: RwLock::new(Vec::new()),
            reserved: AtomicUsize::new(0),
            max: max.max(1),
        }
    }

    /// The connection that opened the session: control messages (registration) go here.
    pub fn first(&self) -> &Arc<Lane> {
        &self.first
    }

    /// Lanes now, the first included.
    pub fn len(&self) -> usize {
        1 + self.read().len()
    }

    /// Always false: the first lane is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The most lanes this session may have.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Every lane, the first one first.
    pub fn all(&self) -> Vec<Arc<Lane>> {
        let extra = self.read();
        std::iter::once(&self.first)
            .chain(extra.iter())
            .cloned()
            .collect()
    }

    /// The live lane carrying the fewest streams, the first on a tie; the first one when none
    /// is live (opening a stream on it then fails as it should).
    pub fn least_loaded(&self) -> Arc<Lane> {
        let extra = self.read();
        if extra.is_empty() {
            return self.first.clone();
        }
        let lanes: Vec<&Arc<Lane>> = std::iter::once(&self.first).chain(extra.iter()).collect();
        let loads = lanes.iter().map(|l| l.is_live().then(|| l.open_streams()));
        lanes[least(loads)].clone()
    }

    /// Count one more stream on the [least loaded](Lanes::least_loaded) lane.
    pub fn place(&self) -> LaneSlot {
        self.least_loaded().slot()
    }

    /// Whether one more lane fits; [`MuxError::TooManyLanes`] if not.
    pub fn check_room(&self) -> Result<(), MuxError> {
        self.room(self.len())
    }

    fn room(&self, open: usize) -> Result<(), MuxError> {
        if open >= self.max {
            return Err(MuxError::TooManyLanes {
                open,
                max: self.max,
            });
        }
        Ok(())
    }

    /// Add an extra lane, unless the session has `max` already (reserved places count).
    pub fn add(&self, lane: Arc<Lane>) -> Result<(), MuxError> {
        let mut extra = self.write();
        self.room(1 + extra.len() + self.reserved.load(Ordering::Acquire))?;
        extra.push(lane);
        Ok(())
    }

    /// Promise a place to a lane whose join is about to be answered: two joins checked at
    /// once must not both be told yes when only one fits, or the second is dropped after
    /// its client heard "joined" and retries in a loop. The place is freed when the
    /// reservation drops unused.
    pub fn reserve(&self) -> Result<LaneReservation<'_>, MuxError> {
        let extra = self.write();
        self.room(1 + extra.len() + self.reserved.load(Ordering::Acquire))?;
        self.reserved.fetch_add(1, Ordering::AcqRel);
        Ok(LaneReservation {
            lanes: self,
            used: false,
        })
    }

    /// Forget extra lane `id` (no new streams go there); the first lane stays.
    pub fn remove(&self, id: u64) {
        self.extra
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|l| l.id != id);
    }

    /// An extra lane ended: forget it, close it, and abort what still runs on it. `by_peer`
    /// (the peer closed it): its streams get a moment ([`settle`]) to finish first.
    pub async fn retire(&self, lane: &Lane, by_peer: bool) {
        self.remove(lane.id);
        lane.close();
        if by_peer {
            settle(|| lane.open_streams() > 0).await;
        }
        lane.aborts.abort_all();
    }

    /// Abort every stream of every lane and close them all now.
    pub fn close_all(&self) {
        for lane in self.all() {
            lane.aborts.abort_all();
            lane.close();
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Lane>>> {
        self.extra.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Lane>>> {
        self.extra.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A place among a session's lanes kept for one join ([`Lanes::reserve`]).
#[derive(Debug)]
#[must_use = "the place is freed when the reservation drops"]
pub struct LaneReservation<'a> {
    lanes: &'a Lanes,
    used: bool,
}

impl LaneReservation<'_> {
    /// Take the place with `lane`.
    pub fn fill(mut self, lane: Arc<Lane>) {
        let mut extra = self.lanes.write();
        self.lanes.reserved.fetch_sub(1, Ordering::AcqRel);
        self.used = true;
        extra.push(lane);
    }
}

impl Drop for LaneReservation<'_> {
    fn drop(&mut self) {
        if !self.used {
            let _extra = self.lanes.write();
            self.lanes.reserved.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How long the streams of a connection the peer closed may take to finish by themselves.
pub const SETTLE: Duration = Duration::from_millis(500);

/// Wait while `busy` holds, at most [`SETTLE`]: a peer that drained and left sent the last
/// bytes and FIN of its streams just before closing, and cutting at once would reset
/// connections that were about to end cleanly.
pub async fn settle(busy: impl Fn() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while busy() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Index of the smallest load among live lanes (`Some`), the earliest on a tie; 0 when none
/// is live.
fn least(loads: impl IntoIterator<Item = Option<usize>>) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for (i, load) in loads.into_iter().enumerate() {
        let Some(load) = load else { continue };
        match best {
            Some((_, b)) if b <= load => {}
            _ => best = Some((i, load)),
        }
    }
    best.map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{start, Mode, MuxConfig};

    #[test]
    fn placement_takes_the_least_loaded_lane_and_the_first_on_a_tie() {
        let live = |l: &[usize]| l.iter().map(|&n| Some(n)).collect::<Vec<_>>();
        assert_eq!(least(live(&[0])), 0);
        assert_eq!(least(live(&[0, 0, 0])), 0);
        assert_eq!(least(live(&[1, 0, 0])), 1);
        assert_eq!(least(live(&[2, 1, 1, 0])), 3);
        assert_eq!(least(live(&[3, 3, 2, 2])), 2);
        // Filling four empty lanes one stream at a time spreads them evenly.
        let mut loads = [0usize; 4];
        for _ in 0..8 {
            let i = least(live(&loads));
            loads[i] += 1;
        }
        assert_eq!(loads, [2, 2, 2, 2]);
    }

    #[test]
    fn placement_skips_dead_lanes_and_falls_back_to_the_first() {
        assert_eq!(least([Some(3), None, Some(1)]), 2);
        assert_eq!(least([None, Some(5), Some(5)]), 1);
        assert_eq!(least([None, None]), 0);
        assert_eq!(least(std::iter::empty()), 0);
    }

    /// A lane over an in-memory mux; the peer end is returned so that it stays open.
    async fn lane(id: u64) -> (Arc<Lane>, tokio::io::DuplexStream) {
        let (io, peer) = tokio::io::duplex(64 * 1024);
        let (control, _incoming) = start(io, Mode::Client, &MuxConfig::default());
        let first = control.open().await.expect("open the control stream");
        let (lane, _channel) = Lane::start(id, control, first, Heartbeat::default(), 4096);
        (lane, peer)
    }

    #[tokio::test]
    async fn a_reserved_place_is_not_promised_twice_and_is_freed_unused() {
        let (first, _p1) = lane(1).await;
        let (second, _p2) = lane(2).await;
        let (third, _p3) = lane(3).await;
        let lanes = Lanes::new(first, 3);
        let a = lanes.reserve().expect("room for a second lane");
        let b = lanes.reserve().expect("room for a third lane");
        assert!(matches!(
            lanes.reserve(),
            Err(MuxError::TooManyLanes { open: 3, max: 3 })
        ));
        assert!(
            lanes.add(third.clone()).is_err(),
            "add ignored the reservations"
        );
        a.fill(second);
        assert_eq!(lanes.len(), 2);
        drop(b);
        lanes.add(third).expect("the unused place was freed");
        assert_eq!(lanes.len(), 3);
    }

    #[tokio::test]
    async fn slots_count_while_they_live() {
        let (a, _pa) = lane(1).await;
        assert_eq!(a.open_streams(), 0);
        let s1 = a.slot();
        let s2 = a.slot();
        assert_eq!(a.open_streams(), 2);
        assert_eq!(s1.lane().id, 1);
        assert_eq!(s2.id, 1, "a slot derefs to its lane");
        drop(s1);
        assert_eq!(a.open_streams(), 1);
        drop(s2);
        assert_eq!(a.open_streams(), 0);
    }

    #[tokio::test]
    async fn streams_spread_evenly_with_ties_to_the_first() {
        let (a, _pa) = lane(1).await;
        let (b, _pb) = lane(2).await;
        let (c, _pc) = lane(3).await;
        let lanes = Lanes::new(a.clone(), 3);
        assert_eq!(
            lanes.place().id,
            1,
            "one lane, one choice (slot dropped at once)"
        );
        lanes.add(b.clone()).expect("room for the lane");
        lanes.add(c.clone()).expect("room for the lane");
        assert_eq!(lanes.len(), 3);
        let mut slots: Vec<LaneSlot> = (0..6).map(|_| lanes.place()).collect();
        let ids: Vec<u64> = slots.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2, 3, 1, 2, 3]);
        assert_eq!(
            lanes
                .all()
                .iter()
                .map(|l| l.open_streams())
                .collect::<Vec<_>>(),
            [2, 2, 2]
        );
        // Freeing a stream on the second lane makes it the least loaded.
        drop(slots.remove(1));
        assert_eq!(lanes.least_loaded().id, 2);
    }

    #[tokio::test]
    async fn a_removed_or_closed_lane_gets_no_more_streams() {
        let (a, _pa) = lane(1).await;
        let (b, _pb) = lane(2).await;
        let (c, _pc) = lane(3).await;
        let lanes = Lanes::new(a.clone(), 4);
        lanes.add(b.clone()).expect("room for the lane");
        lanes.add(c.clone()).expect("room for the lane");
        let _on_a = a.slot();
        lanes.remove(2);
        assert_eq!(lanes.len(), 2);
        assert_eq!(lanes.least_loaded().id, 3);
        c.close();
        c.control.closed().await;
        assert!(!c.is_live());
        assert_eq!(lanes.least_loaded().id, 1, "only the first is live");
        lanes.remove(1); // the first lane is never removed
        assert_eq!(lanes.first().id, 1);
    }

    #[tokio::test]
    async fn a_session_takes_at_most_max_lanes() {
        let (a, _pa) = lane(1).await;
        let (b, _pb) = lane(2).await;
        let (c, _pc) = lane(3).await;
        let lanes = Lanes::new(a, 2);
        assert!(lanes.check_room().is_ok());
        lanes.add(b).expect("room for the lane");
        assert!(matches!(
            lanes.check_room(),
            Err(MuxError::TooManyLanes { open: 2, max: 2 })
        ));
        assert!(matches!(
            lanes.add(c),
            Err(MuxError::TooManyLanes { open: 2, max: 2 })
        ));
        assert_eq!(lanes.len(), 2);
    }

    #[tokio::test]
    async fn retiring_a_lane_forgets_closes_and_aborts_it() {
        let (a, _pa) = lane(1).await;
        let (b, _pb) = lane(2).await;
        let lanes = Lanes::new(a, 2);
        lanes.add(b.clone()).expect("room for the lane");
        let guard = b.aborts.register(7);
        lanes.retire(&b, true).await; // nothing counted: no wait
        assert_eq!(lanes.len(), 1);
        b.control.closed().await;
        assert!(!b.is_live());
        assert!(guard.token().is_cancelled());
    }
}
