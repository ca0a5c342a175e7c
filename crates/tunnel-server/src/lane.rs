//! The connections of one session ("lanes"): the one that opened it and registered, and the
//! extra ones a client with `connections = N` adds so that its streams are not all encrypted
//! on one connection, pinned to one core at each end. [`tunnel_mux::Lanes`] places and
//! counts the streams; this module accepts the joins and serves each extra connection.

use std::sync::Arc;

use tracing::{info, warn, Instrument};
use tunnel_mux::{ControlChannel, Incoming, MuxError, MuxHandle, MuxStream};
use tunnel_proto::handshake::{JoinTarget, ServerHandshake};
use tunnel_proto::Hello;
use tunnel_transport::{drive, TransportError};

pub(crate) use tunnel_mux::Lane;

use crate::session::{End, SessionRecord};
use crate::{visitor, Shared};

/// How long a refused join's connection stays open for its answer to be read.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve a connection whose first stream asked to join session `target` of the same client.
/// `first` is that stream; the caller already welcomed and authenticated the connection, and
/// `machine` decides whether the join is accepted.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn join(
    shared: &Arc<Shared>,
    id: u64,
    hello: &Hello,
    control: MuxHandle,
    incoming: Incoming,
    mut first: MuxStream,
    mut machine: ServerHandshake,
    target: u64,
) {
    let found = find(shared, hello);
    // The place is promised before the answer: two joins of one client checked at once must
    // not both hear yes when one fits (the second would be dropped after "joined").
    let reserved = found.as_ref().map(|(s, _)| s.lanes.reserve());
    machine.join(found.as_ref().map(|(_, view)| {
        let mut view = view.clone();
        if let Some(Err(MuxError::TooManyLanes { open, .. })) = &reserved {
            view.lanes = *open;
        }
        view
    }));
    match drive(&mut first, &mut machine).await {
        Ok(_joined) => {}
        Err(TransportError::Setup(refusal)) => {
            warn!("{refusal}");
            // The refusal is queued on the stream: flush it with a FIN before the connection
            // closes, or a loaded client reads a closed connection, takes it for a failure
            // and tries again instead of going on with the connections it has.
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut first).await;
            // Closing at once can still cut the queued answer off: let the client read it and
            // close the connection itself, for at most a second.
            let _ = tokio::time::timeout(REFUSAL_LINGER, control.closed()).await;
            control.close();
            return;
        }
        Err(e) => {
            info!("extra connection left before it joined: {e}");
            control.close();
            return;
        }
    }
    let (Some((session, _)), Some(Ok(place))) = (&found, reserved) else {
        control.close();
        return;
    };
    if session.id != target {
        control.close();
        return;
    }
    let (lane, channel) = accept(shared, id, control, first);
    place.fill(lane.clone());
    let span = tracing::info_span!("joined", session = session.id);
    async {
        info!(connections = session.lanes.len(), "extra connection joined");
        let end = serve(shared, session, &lane, incoming, channel).await;
        let by_peer = !session.cancel.is_cancelled();
        session.lanes.retire(&lane, by_peer).await;
        let connections = session.lanes.len();
        match end {
            End::Goodbye => info!(connections, "extra connection closed by the client"),
            End::Other(why) => info!(connections, "extra connection ended: {why}"),
        }
    }
    .instrument(span)
    .await;
}

/// Make a connection's first stream, already answered `Ok`, its control stream (heartbeats,
/// aborts): the connection becomes lane `id`.
pub(crate) fn accept(
    shared: &Shared,
    id: u64,
    control: MuxHandle,
    first: MuxStream,
) -> (Arc<Lane>, ControlChannel) {
    let hb = shared.cfg.heartbeat();
    Lane::start(id, control, first, hb, shared.cfg.max_frame_size)
}

/// The session `hello`'s client id leads to in the registry, and what the join decision
/// needs of it.
fn find(shared: &Shared, hello: &Hello) -> Option<(Arc<SessionRecord>, JoinTarget)> {
    let session = shared.registry.session(&hello.client_id)?;
    let view = JoinTarget {
        session: session.id,
        client_id: session.client_id.clone(),
        instance: session.instance,
        live: !session.cancel.is_cancelled(),
        lanes: session.lanes.len(),
        max_lanes: session.lanes.max(),
    };
    Some((session, view))
}

/// Accept the streams the client opens on this lane (visitors) until the lane or the session
/// ends; returns why.
async fn serve(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    lane: &Arc<Lane>,
    mut incoming: Incoming,
    mut channel: ControlChannel,
) -> End {
    let end = loop {
        tokio::select! {
            () = session.cancel.cancelled() => break End::Other("the session ended".into()),
            why = &mut channel.ended => break End::of(&channel, why),
            msg = channel.inbox.recv() => match msg {
                Some(other) => break End::Other(format!(
                    "unexpected {} on an extra connection (registration goes over the first)",
                    other.name()
                )),
                None => break End::after_close(&mut channel).await,
            },
            s = incoming.accept() => match s {
                Some(stream) => {
                    let task =
                        visitor::serve_stream(shared.clone(), session.clone(), lane.clone(), stream);
                    shared.streams.spawn(task.in_current_span());
                }
                None => break End::after_close(&mut channel).await,
            },
        }
    };
    channel.ended.abort();
    match end {
        // The session's end closed this lane under its control stream: that is the reason,
        // not the failed read it caused.
        End::Other(_) if session.cancel.is_cancelled() => End::Other("the session ended".into()),
        end => end,
    }
}
