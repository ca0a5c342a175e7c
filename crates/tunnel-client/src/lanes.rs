//! The connections of the live session ("lanes"): the first one, which registered, and the
//! `connections - 1` extra ones that join it. A single TLS connection is encrypted and
//! decrypted by one task on one core at each end; spreading busy streams over several lets
//! both machines use more cores. Each visitor stream goes to the lane carrying the fewest
//! streams ([`Lanes::place`]); the server places the streams it opens the same way. This
//! module dials the extra connections and keeps them joined.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use tunnel_mux::{Heartbeat, Incoming, Lane, Mode};
use tunnel_proto::{HandshakeError, Message, StreamStatus};
use tunnel_transport::write_message;

use crate::backoff::Backoff;
use crate::error::ClientError;
use crate::servers::Server;
use crate::session::{self, CONTROL_MAX_FRAME};
use crate::Shared;

pub(crate) use tunnel_mux::Lanes;

/// Why joining failed.
enum JoinError {
    /// The server said no (a limit, or the session is gone): retrying cannot help until the
    /// next session.
    Refused(String),
    /// The connection failed; try again.
    Failed(ClientError),
}

impl From<ClientError> for JoinError {
    fn from(e: ClientError) -> Self {
        JoinError::Failed(e)
    }
}

/// Keep one extra connection joined to `session` until `stop` (the session ended).
pub(crate) async fn keep(
    shared: Arc<Shared>,
    server: Arc<Server>,
    lanes: Arc<Lanes>,
    session: u64,
    heartbeat: Heartbeat,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), shared.cfg.reconnect_max_delay);
    loop {
        // Dropping the attempt mid-handshake is clean; once joined, `serve` watches `stop`
        // itself so that it can close what it opened.
        let joined = tokio::select! {
            r = Box::pin(join(&shared, &server, session, heartbeat)) => r,
            () = stop.cancelled() => return,
        };
        match joined {
            Ok((ctx, incoming, channel)) => {
                let started = Instant::now();
                let span = tracing::info_span!("lane", id = ctx.id);
                let why = serve(&shared, &lanes, ctx, incoming, channel, &stop)
                    .instrument(span)
                    .await;
                let Some(why) = why else { return };
                warn!("extra connection lost: {why}; reconnecting it");
                if started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
            }
            Err(JoinError::Refused(reason)) => {
                warn!("{}", tunnel_proto::PeerText(&reason));
                return;
            }
            Err(JoinError::Failed(e)) => warn!("extra connection failed: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// Connect, authenticate, and ask to join `session`.
async fn join(
    shared: &Shared,
    server: &Server,
    session: u64,
    heartbeat: Heartbeat,
) -> Result<(Arc<Lane>, Incoming, tunnel_mux::ControlChannel), JoinError> {
    let mut hs = session::handshake(shared, server).await?;
    let (control, incoming) = tunnel_mux::start(hs.stream, Mode::Client, &shared.mux);
    hs.machine.join(session);
    let first = match session::first_stream(&control, &mut hs.machine).await {
        Ok(s) => s,
        Err(e) => {
            control.close();
            return Err(match e {
                ClientError::Handshake(HandshakeError::StreamRefused { reason }) => {
                    JoinError::Refused(reason)
                }
                e => JoinError::Failed(e),
            });
        }
    };
    let (ctx, channel) = Lane::start(
        hs.connection_id,
        control,
        first,
        heartbeat,
        CONTROL_MAX_FRAME,
    );
    Ok((ctx, incoming, channel))
}

/// Serve the streams the server opens on this connection until it ends (`Some(why)`) or the
/// session does (`None`).
async fn serve(
    shared: &Arc<Shared>,
    lanes: &Lanes,
    ctx: Arc<Lane>,
    mut incoming: Incoming,
    mut channel: tunnel_mux::ControlChannel,
    stop: &CancellationToken,
) -> Option<String> {
    if let Err(e) = lanes.add(ctx.clone()) {
        // Not reached: the client keeps `connections - 1` extra lanes, one per task.
        warn!("extra connection dropped: {e}");
        ctx.close();
        return None;
    }
    info!(connections = lanes.len(), "extra connection joined");
    let why = loop {
        tokio::select! {
            () = stop.cancelled() => break None,
            why = &mut channel.ended => break Some(why.unwrap_or_else(|e| e.to_string())),
            msg = channel.inbox.recv() => match msg {
                Some(other) => debug!("unexpected {} on an extra connection", other.name()),
                None => break Some((&mut channel.ended).await.unwrap_or_else(|e| e.to_string())),
            },
            s = incoming.accept() => match s {
                // Draining: the first connection refuses new streams the same way.
                Some(mut s) if shared.shutdown.is_cancelled() => {
                    let msg = Message::StreamStatus(StreamStatus::Error(
                        "connection failed: the client is shutting down".into(),
                    ));
                    shared.streams.spawn(async move {
                        let _ = write_message(&mut s, &msg, CONTROL_MAX_FRAME).await;
                    });
                }
                Some(stream) => session::spawn_stream(shared, &ctx, stream),
                None => break Some("the connection closed".into()),
            },
        }
    };
    channel.ended.abort();
    lanes.retire(&ctx, why.is_some()).await;
    why
}
