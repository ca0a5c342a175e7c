//! The connections of one session ("lanes"): the one that opened it and registered, and the
//! extra ones a client with `connections = N` adds so that its streams are not all encrypted
//! on one connection, pinned to one core at each end. Each new stream goes to the lane that
//! carries the fewest streams right now.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tracing::{info, warn, Instrument};
use tunnel_mux::{
    spawn_control, AbortTable, Control, ControlChannel, ControlSender, Incoming, MuxStream,
};
use tunnel_proto::handshake::{JoinTarget, ServerHandshake};
use tunnel_proto::Hello;
use tunnel_transport::{drive, TransportError};

use crate::session::{settle, SessionRef};
use crate::{visitor, Shared};

/// One connection of a session.
pub(crate) struct Lane {
    /// The id this connection was welcomed with (the session's own for the first lane).
    pub id: u64,
    pub control: Control,
    pub aborts: AbortTable,
    control_tx: ControlSender,
    /// Streams on this lane now; placement reads it.
    streams: AtomicUsize,
}

impl Lane {
    pub fn new(id: u64, control: Control, aborts: AbortTable, control_tx: ControlSender) -> Self {
        Lane {
            id,
            control,
            aborts,
            control_tx,
            streams: AtomicUsize::new(0),
        }
    }

    /// Tell the client that the data path of stream `id` on this lane failed.
    pub fn send_abort(&self, id: u32) {
        self.control_tx.abort(id);
    }

    pub fn open_streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    pub(crate) fn count(&self) {
        self.streams.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn uncount(&self) {
        self.streams.fetch_sub(1, Ordering::AcqRel);
    }

    /// End the connection: streams waiting on it fail at once, finished ones read EOF.
    pub fn close(&self) {
        self.control.close();
    }
}

/// Every lane of a session, the first one always present.
pub(crate) struct Lanes {
    first: Arc<Lane>,
    extra: RwLock<Vec<Arc<Lane>>>,
    max: usize,
}

impl Lanes {
    pub fn new(first: Arc<Lane>, max: usize) -> Self {
        Lanes {
            first,
            extra: RwLock::new(Vec::new()),
            max,
        }
    }

    /// The lane carrying the fewest streams; the first lane on a tie, so that a client
    /// with a single stream at a time keeps using one connection.
    pub fn least_loaded(&self) -> Arc<Lane> {
        let extra = self.extra.read();
        if extra.is_empty() {
            return self.first.clone();
        }
        let loads = std::iter::once(&self.first)
            .chain(extra.iter())
            .map(|l| l.open_streams());
        match least(loads).checked_sub(1) {
            Some(i) => extra.get(i).unwrap_or(&self.first).clone(),
            None => self.first.clone(),
        }
    }

    /// The connection that opened the session.
    pub fn first(&self) -> &Arc<Lane> {
        &self.first
    }

    pub fn len(&self) -> usize {
        1 + self.extra.read().len()
    }

    pub fn all(&self) -> Vec<Arc<Lane>> {
        let extra = self.extra.read();
        std::iter::once(&self.first)
            .chain(extra.iter())
            .cloned()
            .collect()
    }

    fn add(&self, lane: Arc<Lane>) -> Result<(), tunnel_proto::HandshakeError> {
        let mut extra = self.extra.write();
        if 1 + extra.len() >= self.max {
            return Err(self.full(1 + extra.len()));
        }
        extra.push(lane);
        Ok(())
    }

    fn remove(&self, id: u64) {
        self.extra.write().retain(|l| l.id != id);
    }

    fn full(&self, n: usize) -> tunnel_proto::HandshakeError {
        tunnel_proto::HandshakeError::LanesFull {
            lanes: n,
            max: self.max,
        }
    }
}

/// Serve a connection whose first stream asked to join session `target` of the same client.
/// `first` is that stream; the caller already welcomed and authenticated the connection, and
/// `machine` decides whether the join is accepted.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn join(
    shared: &Arc<Shared>,
    id: u64,
    hello: &Hello,
    control: Control,
    incoming: Incoming,
    mut first: MuxStream,
    mut machine: ServerHandshake,
    target: u64,
) {
    let found = find(shared, hello);
    machine.join(found.as_ref().map(|(_, view)| view.clone()));
    let session = match drive(&mut first, &mut machine).await {
        Ok(_joined) => found.map(|(s, _)| s),
        Err(TransportError::Setup(refusal)) => {
            warn!("{refusal}");
            control.close();
            return;
        }
        Err(e) => {
            info!("extra connection left before it joined: {e}");
            control.close();
            return;
        }
    };
    let Some(session) = session.filter(|s| s.id == target) else {
        control.close();
        return;
    };
    let (lane, channel) = accept(shared, id, control, first);
    // The check in the machine and this one race only with another join of the same client.
    if let Err(reason) = session.lanes.add(lane.clone()) {
        warn!("{reason}");
        lane.close();
        return;
    }
    let span = tracing::info_span!("joined", session = session.id);
    async {
        info!(connections = session.lanes.len(), "extra connection joined");
        let why = serve(shared, &session, &lane, incoming, channel).await;
        session.lanes.remove(lane.id);
        let by_peer = !session.cancel.is_cancelled();
        lane.close();
        if by_peer {
            settle(|| lane.open_streams() > 0).await;
        }
        lane.aborts.abort_all();
        info!(
            connections = session.lanes.len(),
            "extra connection ended: {why}"
        );
    }
    .instrument(span)
    .await;
}

/// Make a connection's first stream, already answered `Ok`, its control stream (heartbeats,
/// aborts): the connection becomes lane `id`.
pub(crate) fn accept(
    shared: &Shared,
    id: u64,
    control: Control,
    first: MuxStream,
) -> (Arc<Lane>, ControlChannel) {
    let aborts = AbortTable::default();
    let hb = shared.cfg.heartbeat();
    let channel = spawn_control(first, aborts.clone(), hb, shared.cfg.max_frame_size);
    let lane = Lane::new(id, control, aborts, channel.sender.clone());
    (Arc::new(lane), channel)
}

/// The session `hello`'s client id leads to, and what the join decision needs of it.
fn find(shared: &Shared, hello: &Hello) -> Option<(Arc<SessionRef>, JoinTarget)> {
    let sessions = shared.sessions.lock();
    let session = sessions.get(&hello.client_id)?;
    let view = JoinTarget {
        session: session.id,
        client_id: session.client_id.clone(),
        instance: session.instance,
        live: !session.cancel.is_cancelled(),
        lanes: session.lanes.len(),
        max_lanes: session.lanes.max,
    };
    Some((session.clone(), view))
}

/// Accept the streams the client opens on this lane (visitors) until the lane or the session
/// ends; returns why.
async fn serve(
    shared: &Arc<Shared>,
    session: &Arc<SessionRef>,
    lane: &Arc<Lane>,
    mut incoming: Incoming,
    mut channel: ControlChannel,
) -> String {
    let why = loop {
        tokio::select! {
            () = session.cancel.cancelled() => break "the session ended".to_string(),
            why = &mut channel.ended => break why.unwrap_or_else(|e| e.to_string()),
            msg = channel.inbox.recv() => match msg {
                Some(other) => break format!(
                    "unexpected {} on an extra connection (registration goes over the first)",
                    other.name()
                ),
                None => break (&mut channel.ended).await.unwrap_or_else(|e| e.to_string()),
            },
            s = incoming.accept() => match s {
                Some(stream) => {
                    let task =
                        visitor::serve_stream(shared.clone(), session.clone(), lane.clone(), stream);
                    shared.streams.spawn(task.in_current_span());
                }
                None => break "the connection closed".to_string(),
            },
        }
    };
    channel.ended.abort();
    why
}

/// Index of the smallest load, the earliest on a tie.
fn least(loads: impl IntoIterator<Item = usize>) -> usize {
    let mut best = (0, usize::MAX);
    for (i, load) in loads.into_iter().enumerate() {
        if load < best.1 {
            best = (i, load);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::least;

    #[test]
    fn placement_takes_the_least_loaded_lane_and_the_first_on_a_tie() {
        assert_eq!(least([0]), 0);
        assert_eq!(least([0, 0, 0]), 0);
        assert_eq!(least([1, 0, 0]), 1);
        assert_eq!(least([2, 1, 1, 0]), 3);
        assert_eq!(least([3, 3, 2, 2]), 2);
        // Filling four empty lanes one stream at a time spreads them evenly.
        let mut loads = [0usize; 4];
        for _ in 0..8 {
            let i = least(loads);
            loads[i] += 1;
        }
        assert_eq!(loads, [2, 2, 2, 2]);
    }
}
