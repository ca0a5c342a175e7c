//! One connection to the server: handshake, registration, then serving streams until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};
use tunnel_mux::{
    settle, spawn_control, AbortTable, ControlChannel, Heartbeat, Incoming, Lane, Lanes, Mode,
    MuxHandle, MuxStream,
};
use tunnel_proto::handshake::{ClientBinding, ClientEvent, ClientHandshake, Handshake, Phase};
use tunnel_proto::{Hello, Message, PeerText, RegisterReply, StreamStatus};
use tunnel_transport::{drive, timed_out, write_message, BoxedStream, TransportKind};

use crate::error::ClientError;
use crate::lanes;
use crate::servers::Server;
use crate::{proxy, Shared};

pub(crate) const CONTROL_MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;
/// Connect, TLS and authentication together must finish within this.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The same when `server_addr` lists other servers: one that accepts connections but does
/// not answer (frozen, overloaded) should not hold the client back from a working one for
/// long. A TLS handshake and a key proof take a few round trips, well under a second even
/// across continents.
pub(crate) const LIST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The server answers a registration at once; a silent one is not working.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// One connection of the live session, as visitors and stream handlers see it.
pub(crate) type SessionCtx = Lane;

/// Serve a stream the server opened on `lane`, counted there while it runs so that visitors
/// are placed by every stream a lane carries.
pub(crate) fn spawn_stream(shared: &Arc<Shared>, lane: &Arc<Lane>, stream: MuxStream) {
    let slot = lane.slot();
    let (shared, lane) = (shared.clone(), lane.clone());
    let tracker = shared.streams.clone();
    stream.session_spawner().spawn(
        tracker.track_future(
            async move {
                proxy::serve_stream(shared, lane, stream).await;
                drop(slot);
            }
            .in_current_span(),
        ),
    );
}

/// How a session that got going ended.
pub(crate) enum SessionEnd {
    /// The client is shutting down.
    Shutdown,
    /// The connection was lost; reconnect.
    Lost(String),
    /// The server is draining: a new session is wanted now, while this one goes on serving
    /// its streams in the background until the server closes it.
    Moving,
}

/// The parts of a session that got going, for whoever ends it.
struct Live {
    incoming: Incoming,
    channel: ControlChannel,
    ctx: Arc<Lane>,
    lanes: Arc<Lanes>,
    stop_lanes: CancellationToken,
    lane_tasks: TaskTracker,
}

impl Live {
    /// Close the session; a `lost` one gives its streams a moment to finish first.
    async fn close(self, shared: &Shared, lost: bool) {
        {
            // A session that moved may have a successor already: only its own entry goes.
            let mut current = shared.current.write();
            if current
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, &self.lanes))
            {
                *current = None;
                shared.servers.ended();
            }
        }
        self.stop_lanes.cancel();
        self.lane_tasks.close();
        self.channel.ended.abort();
        // Ends the mux first: streams still waiting on it fail at once, finished ones read EOF.
        self.ctx.control.close();
        if lost {
            let lanes = &self.lanes;
            settle(|| lanes.all().iter().any(|l| l.open_streams() > 0)).await;
        }
        self.ctx.aborts.abort_all();
        self.lane_tasks.wait().await;
        drop(self.incoming);
    }
}

/// The longest a moved session may linger if its server never closes it: its server closes
/// it once the new session has taken over and its streams are done, within its own grace.
const RETIRE_LIMIT: Duration = Duration::from_secs(60);

/// A moved session's last work: serve the streams its server still opens (users who reached
/// it before the new session took over) until the server closes it. Once the new session
/// serves, `Moved` tells the server to route nothing more here; it closes the session when
/// the streams it opened are done, so nothing reaching it in the hand-over fails
/// (make-before-break).
async fn retire(shared: Arc<Shared>, mut live: Live) {
    let limit = tokio::time::sleep(RETIRE_LIMIT);
    tokio::pin!(limit);
    let mut status = shared.status.subscribe();
    let (mut succeeded, mut told) = (false, false);
    let why = loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break "the client is shutting down",
            () = &mut limit => break "it lingered too long",
            _ = &mut live.channel.ended => break "the server closed it",
            msg = live.channel.inbox.recv() => if msg.is_none() { break "the server closed it" },
            s = live.incoming.accept() => match s {
                Some(stream) => spawn_stream(&shared, &live.ctx, stream),
                None => break "the server closed it",
            },
            changed = status.changed(), if !succeeded => {
                if changed.is_err() {
                    break "the client stopped";
                }
                succeeded = live.succeeded(&shared);
            }
        }
        if succeeded && !told {
            // The server stops routing here, lets the open streams finish, and closes.
            told = live.ctx.try_send(Message::Moved);
        }
    };
    info!("old session closed: {why}");
    live.close(&shared, true).await;
}

impl Live {
    /// Whether a newer session is registered and serving in this one's place.
    fn succeeded(&self, shared: &Shared) -> bool {
        let newer = shared
            .current
            .read()
            .as_ref()
            .is_some_and(|l| !Arc::ptr_eq(l, &self.lanes));
        newer && matches!(*shared.status.borrow(), crate::Status::Ready(_))
    }
}

/// A moment within `within_ms`, drawn at random so that a draining server's clients do not
/// all log in elsewhere at once.
fn jitter(within_ms: u32) -> Duration {
    let mut b = [0u8; 4];
    // No randomness (never seen in practice): move at once rather than not at all.
    if tunnel_transport::fill_random(&mut b).is_err() || within_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from(
        u32::from_le_bytes(b) % within_ms.saturating_add(1),
    ))
}

/// Connect, authenticate and register; then serve until the session ends.
/// An `Err` means the session never got going.
pub(crate) async fn run_once(
    shared: &Arc<Shared>,
    server: &Arc<Server>,
) -> Result<SessionEnd, ClientError> {
    // The short-lived big futures (handshake, registration, drain) are boxed: this future lives
    // as long as the session, and an async fn's future is sized for its largest await state,
    // so inline they would cost an idle session their size for its whole life.
    let hs = Box::pin(handshake(shared, server)).await?;
    let Handshaken {
        stream,
        connection_id,
        heartbeat_ms,
        mut machine,
    } = hs;
    info!(session = connection_id, transport = %shared.cfg.transport, "connected to {}", server.addr);
    let span = tracing::info_span!("session", id = connection_id);
    async move {
        let (control, incoming) = tunnel_mux::start(stream, Mode::Client, &shared.mux);
        let aborts = AbortTable::default();
        // Ping at the server's pace, but at least three times per our own timeout: the
        // server's pongs are what proves a quiet session alive to us, so a timeout shorter
        // than the server's interval must not kill a healthy idle session.
        let timeout = shared.cfg.heartbeat_timeout;
        let heartbeat = Heartbeat {
            interval: Duration::from_millis(u64::from(heartbeat_ms.max(1000))).min(timeout / 3),
            timeout,
        };
        let registered = Box::pin(open_control(
            shared,
            &control,
            &mut machine,
            &aborts,
            heartbeat,
        ))
        .await;
        let (channel, reply) = match registered {
            Ok(c) => c,
            Err(e) => {
                control.close();
                return Err(e);
            }
        };
        let ctx = Arc::new(Lane::new(
            connection_id,
            control,
            aborts,
            channel.sender.clone(),
        ));
        let lanes = Arc::new(Lanes::new(ctx.clone(), shared.cfg.connections));
        *shared.current.write() = Some(lanes.clone());
        let stop_lanes = CancellationToken::new();
        let lane_tasks = TaskTracker::new();
        for _ in 1..shared.cfg.connections {
            // Extra connections join this session, so they go to this session's server.
            let keep = lanes::keep(
                shared.clone(),
                server.clone(),
                lanes.clone(),
                connection_id,
                heartbeat,
                stop_lanes.clone(),
            );
            match &shared.threads {
                Some(threads) => threads.spawn(&lane_tasks, keep),
                None => {
                    lane_tasks.spawn(keep.in_current_span());
                }
            }
        }
        // Ready only now: visitors need `current` the moment a caller sees Ready.
        shared.servers.connected(server);
        shared.session_log.connected();
        shared.status.send_replace(crate::Status::Ready(reply));
        // A reload that raced the registration above re-sends its request now.
        if shared
            .reload_pending
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            let _ = ctx.send(Message::Register(shared.register_request())).await;
        }

        let mut live = Live {
            incoming,
            channel,
            ctx,
            lanes,
            stop_lanes,
            lane_tasks,
        };
        // When the server asked us to move (`Reconnect`): the moment, drawn within its spread.
        let mut move_at: Option<tokio::time::Instant> = None;
        let end = loop {
            let moving = async {
                match move_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shared.shutdown.cancelled() => break SessionEnd::Shutdown,
                () = moving => break SessionEnd::Moving,
                why = &mut live.channel.ended => {
                    break SessionEnd::Lost(why.unwrap_or_else(|e| e.to_string()));
                }
                msg = live.channel.inbox.recv() => match msg {
                    Some(Message::RegisterReply(reply)) => {
                        crate::reload::report(&shared.reload, &reply);
                        let before = match &*shared.status.borrow() {
                            crate::Status::Ready(r) => Some(r.clone()),
                            _ => None,
                        };
                        crate::publish::log_published(shared, before.as_ref(), &reply);
                        shared.status.send_replace(crate::Status::Ready(reply));
                    }
                    Some(Message::Reconnect(within_ms)) if move_at.is_none() => {
                        let delay = jitter(within_ms);
                        info!(
                            "the server is draining: moving to another server in {} ms; this \
                             session keeps serving until the new one has taken over",
                            delay.as_millis()
                        );
                        move_at = Some(tokio::time::Instant::now() + delay);
                    }
                    Some(Message::Reconnect(_)) => {}
                    Some(other) => warn!("unexpected {} on the control stream", other.name()),
                    // The control reader stopped: its reason (a heartbeat timeout, say) is in
                    // `ended`, which resolves at once; "closed" alone would hide it.
                    None => {
                        let why = (&mut live.channel.ended).await;
                        break SessionEnd::Lost(why.unwrap_or_else(|e| e.to_string()));
                    }
                },
                s = live.incoming.accept() => match s {
                    Some(stream) => spawn_stream(shared, &live.ctx, stream),
                    None => break SessionEnd::Lost("the connection closed".into()),
                },
            }
        };
        match end {
            SessionEnd::Moving => {
                let retiring = retire(shared.clone(), live).in_current_span();
                shared.tasks.spawn(retiring);
                return Ok(SessionEnd::Moving);
            }
            SessionEnd::Shutdown => Box::pin(drain(shared, &mut live.incoming)).await,
            SessionEnd::Lost(_) => {}
        }
        let lost = matches!(end, SessionEnd::Lost(_));
        live.close(shared, lost).await;
        Ok(end)
    }
    .instrument(span)
    .await
}

/// Open the control stream and register; returns the server's verdicts.
async fn open_control(
    shared: &Shared,
    control: &MuxHandle,
    machine: &mut ClientHandshake,
    aborts: &AbortTable,
    heartbeat: Heartbeat,
) -> Result<(ControlChannel, RegisterReply), ClientError> {
    machine.open_control();
    let ctrl = first_stream(control, machine).await?;
    let mut channel = spawn_control(ctrl, aborts.clone(), heartbeat, CONTROL_MAX_FRAME);
    let req = Message::Register(shared.register_request());
    channel
        .sender
        .send(req)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let reply = match tokio::time::timeout(REGISTER_TIMEOUT, channel.inbox.recv()).await {
        Ok(Some(Message::RegisterReply(r))) => r,
        Ok(other) => return Err(unexpected_verdict(other)),
        Err(_) => {
            return Err(ClientError::Protocol(format!(
                "no registration verdict within {}s",
                REGISTER_TIMEOUT.as_secs()
            )))
        }
    };
    report(&reply);
    crate::publish::log_published(shared, None, &reply);
    Ok((channel, reply))
}

/// Graceful stop: no new connections (visitor listeners are closed, streams the server opens
/// are refused), while open ones finish within `shutdown_grace`.
async fn drain(shared: &Shared, incoming: &mut Incoming) {
    let grace = shared.cfg.shutdown_grace;
    shared.streams.close();
    let refuse_new = async {
        while let Some(mut s) = incoming.accept().await {
            let msg = Message::StreamStatus(StreamStatus::Error(
                "connection failed: the client is shutting down".into(),
            ));
            let _ = write_message(&mut s, &msg, CONTROL_MAX_FRAME).await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(grace, shared.streams.wait()) => {
            if r.is_err() {
                info!(open = shared.streams.len(), "grace period over; closing the remaining connections");
            }
        }
        () = refuse_new => {}
    }
}

/// A connection the server welcomed, ready for the mux.
pub(crate) struct Handshaken {
    pub stream: BoxedStream,
    /// The id the server gave this connection.
    pub connection_id: u64,
    /// How often the server wants pings.
    pub heartbeat_ms: u32,
    /// The setup so far: it opens the first stream next (control or join).
    pub machine: ClientHandshake,
}

/// Dial, TLS, hello, proof of the key: within [`CONNECT_TIMEOUT`] in all
/// ([`LIST_CONNECT_TIMEOUT`] when there are other servers to try), and a timeout names the
/// phase it cut.
pub(crate) async fn handshake(shared: &Shared, server: &Server) -> Result<Handshaken, ClientError> {
    let limit = if shared.servers.len() > 1 {
        LIST_CONNECT_TIMEOUT
    } else {
        CONNECT_TIMEOUT
    };
    let deadline = tokio::time::Instant::now() + limit;
    let connect = server.transport.connect(&server.addr);
    let est = tokio::time::timeout_at(deadline, connect)
        .await
        // The TCP connect has its own shorter deadline in the transport, which reports
        // itself: running out of the whole one here means the TLS handshake hung.
        .map_err(|_| timed_out(Phase::Tls, limit))??;
    let mut stream = est.stream;
    let hello = Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: shared.id.read().clone(),
        instance: shared.instance,
    };
    let binding = channel_binding(est.binding, est.transport);
    let mut machine = ClientHandshake::new(hello, &shared.key, binding);
    let welcomed = tokio::time::timeout_at(deadline, drive(&mut stream, &mut machine)).await;
    let welcome = match welcomed {
        Ok(Ok(ClientEvent::Welcomed(w))) => w,
        Ok(Ok(_)) => return Err(unexpected("a welcome")),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(timed_out(machine.phase(), limit).into()),
    };
    if machine.unbound() {
        info!("channel binding off: TLS ends at a proxy in front of the server");
    }
    Ok(Handshaken {
        stream,
        connection_id: welcome.connection_id,
        heartbeat_ms: welcome.heartbeat_ms,
        machine,
    })
}

/// Open the first stream of a welcomed connection and have the server accept the header
/// `machine` queued (control or join), within [`CONNECT_TIMEOUT`].
pub(crate) async fn first_stream(
    control: &MuxHandle,
    machine: &mut ClientHandshake,
) -> Result<MuxStream, ClientError> {
    let opened = async {
        let mut first = control
            .open()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match drive(&mut first, machine).await? {
            ClientEvent::Accepted => Ok(first),
            _ => Err(unexpected("the first stream's status")),
        }
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, opened).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(machine.phase(), CONNECT_TIMEOUT).into()),
    }
}

/// What to bind the key proof to: our TLS exporter value, if the transport has one. The
/// server asks for binding whenever the connection ends in its own TLS; it does not when TLS
/// ends at a proxy in front of it (`ws_bind`), which only WebSocket reaches: a `tls` or `h2`
/// connection that is not asked has been diverted through something that terminates TLS.
fn channel_binding(exporter: Option<[u8; 32]>, transport: TransportKind) -> ClientBinding {
    ClientBinding {
        exporter,
        always_bound: matches!(transport, TransportKind::Tls | TransportKind::H2)
            .then(|| transport.to_string()),
    }
}

fn report(reply: &RegisterReply) {
    for item in &reply.results {
        match &item.error {
            None => info!(kind = ?item.kind, name = %PeerText(&item.name), "registered"),
            Some(e) => {
                let why = e.to_string();
                error!(
                    kind = ?item.kind,
                    name = %PeerText(&item.name),
                    "rejected by the server: {}",
                    PeerText(&why)
                );
            }
        }
    }
}

fn unexpected_verdict(got: Option<Message>) -> ClientError {
    let wanted = "the registration verdict";
    match got {
        Some(Message::Rejected(r)) => ClientError::Rejected {
            code: r.code,
            reason: r.reason,
        },
        Some(m) => ClientError::Protocol(format!("expected {wanted}, got {}", m.name())),
        None => ClientError::Protocol(format!(
            "the server closed the connection while we waited for {wanted}"
        )),
    }
}

fn unexpected(wanted: &'static str) -> ClientError {
    ClientError::Handshake(tunnel_proto::HandshakeError::Unexpected {
        expected: wanted,
        got: "another event",
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tls_and_h2_never_go_unbound_and_websocket_may() {
        let ekm = Some([7u8; 32]);
        for kind in TransportKind::ALL {
            let b = channel_binding(ekm, kind);
            assert_eq!(b.exporter, ekm);
            let strict = matches!(kind, TransportKind::Tls | TransportKind::H2);
            assert_eq!(b.always_bound.is_some(), strict, "{kind}");
        }
    }
}
