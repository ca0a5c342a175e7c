//! The connections of one session ("lanes"): the one that opened it and registered, and the
//! extra ones a client with `connections = N` adds so that its streams are not all encrypted
//! on one connection, pinned to one core at each end. [`tunnel_mux::Lanes`] places and
//! counts the streams; this module accepts the joins and serves each extra connection.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tracing::{info, warn, Instrument};
use tunnel_mux::{Control, ControlChannel, Incoming, MuxError, MuxStream};
use tunnel_proto::{Hello, Message, StreamStatus};
use tunnel_transport::{write_message, TransportError};

pub(crate) use tunnel_mux::Lane;

use crate::session::{SessionRef, CONTROL_MAX_FRAME};
use crate::{visitor, Shared};

/// Why the session cannot take one more connection, in the words the client logs.
fn refusal(e: &MuxError) -> String {
    match e {
        MuxError::TooManyLanes { open, max } => format!(
            "extra connection refused: this client already has {open} (the server's \
             max_connections_per_client is {max}); it goes on with those"
        ),
        other => format!("extra connection refused: {other}"),
    }
}

/// Serve a connection whose first stream asked to join session `target` of the same client.
/// `first` is that stream; the caller already welcomed and authenticated the connection.
pub(crate) async fn join(
    shared: &Arc<Shared>,
    id: u64,
    hello: &Hello,
    control: Control,
    incoming: Incoming,
    mut first: MuxStream,
    target: u64,
) {
    let session = match find(shared, hello, target) {
        Ok(s) => s,
        Err(reason) => {
            warn!("{reason}");
            let msg = Message::StreamStatus(StreamStatus::Error(reason));
            let _ = write_message(&mut first, &msg, CONTROL_MAX_FRAME).await;
            let _ = first.shutdown().await;
            control.close();
            return;
        }
    };
    let (lane, channel) = match accept(shared, id, control, first).await {
        Ok(l) => l,
        Err(e) => {
            info!("extra connection left before it joined: {e}");
            return;
        }
    };
    // The check in `find` and this one race only with another join of the same client.
    if let Err(e) = session.lanes.add(lane.clone()) {
        warn!("{}", refusal(&e));
        lane.close();
        return;
    }
    let span = tracing::info_span!("joined", session = session.id);
    async {
        info!(connections = session.lanes.len(), "extra connection joined");
        let why = serve(shared, &session, &lane, incoming, channel).await;
        let by_peer = !session.cancel.is_cancelled();
        session.lanes.retire(&lane, by_peer).await;
        info!(
            connections = session.lanes.len(),
            "extra connection ended: {why}"
        );
    }
    .instrument(span)
    .await;
}

/// Answer a connection's first stream with `Ok` and make it the connection's control stream
/// (heartbeats, aborts): the connection becomes lane `id`. On failure the connection is closed.
pub(crate) async fn accept(
    shared: &Shared,
    id: u64,
    control: Control,
    mut first: MuxStream,
) -> Result<(Arc<Lane>, ControlChannel), TransportError> {
    let ok = Message::StreamStatus(StreamStatus::Ok);
    if let Err(e) = write_message(&mut first, &ok, CONTROL_MAX_FRAME).await {
        control.close();
        return Err(e);
    }
    let hb = shared.cfg.heartbeat();
    Ok(Lane::start(
        id,
        control,
        first,
        hb,
        shared.cfg.max_frame_size,
    ))
}

/// The live session `target` of this client, if it can take one more connection.
fn find(shared: &Shared, hello: &Hello, target: u64) -> Result<Arc<SessionRef>, String> {
    let live = shared
        .registry
        .session(&hello.client_id)
        .filter(|s| s.id == target && s.instance == hello.instance && !s.cancel.is_cancelled());
    let Some(session) = live else {
        return Err(format!(
            "extra connection refused: session {target} of client {:?} is not live (it ended \
             or was replaced); the client joins its new session once it has one",
            hello.client_id
        ));
    };
    session.lanes.check_room().map_err(|e| refusal(&e))?;
    Ok(session.clone())
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
