//! One connection to the server: handshake, registration, then serving streams until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};
use tunnel_mux::{
    settle, spawn_control, AbortTable, Control, ControlChannel, Heartbeat, Incoming, Lane, Lanes,
    Mode, MuxStream,
};
use tunnel_proto::{
    auth, AuthResponse, Hello, Message, PeerText, RegisterReply, StreamOpen, StreamStatus,
};
use tunnel_transport::{read_message, write_message, BoxedStream, TransportError, TransportKind};

use crate::error::ClientError;
use crate::lanes;
use crate::{proxy, Shared};

pub(crate) const CONTROL_MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;
/// Connect, TLS and authentication together must finish within this.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// The server answers a registration at once; a silent one is not working.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(15);
/// One connection of the live session, as visitors and stream handlers see it.
pub(crate) type SessionCtx = Lane;

/// Serve a stream the server opened on `lane`, counted there while it runs so that visitors
/// are placed by every stream a lane carries.
pub(crate) fn spawn_stream(shared: &Arc<Shared>, lane: &Arc<Lane>, stream: MuxStream) {
    let slot = lane.slot();
    let task = proxy::serve_stream(shared.clone(), lane.clone(), stream);
    shared.streams.spawn(
        async move {
            task.await;
            drop(slot);
        }
        .in_current_span(),
    );
}

/// How a session that got going ended.
pub(crate) enum SessionEnd {
    /// The client is shutting down.
    Shutdown,
    /// The connection was lost; reconnect.
    Lost(String),
}

/// Connect, authenticate and register; then serve until the session ends.
/// An `Err` means the session never got going.
pub(crate) async fn run_once(shared: &Arc<Shared>) -> Result<SessionEnd, ClientError> {
    // The short-lived big futures (handshake, registration, drain) are boxed: this future lives
    // as long as the session, and an async fn's future is sized for its largest await state,
    // so inline they would cost an idle session their size for its whole life.
    let hs = Box::pin(tokio::time::timeout(CONNECT_TIMEOUT, handshake(shared)))
        .await
        .map_err(|_| TransportError::Timeout)??;
    let Handshaken {
        stream,
        session_id,
        heartbeat_ms,
    } = hs;
    info!(session = session_id, transport = %shared.cfg.transport, "connected to {}", shared.cfg.server_addr);
    let span = tracing::info_span!("session", id = session_id);
    async move {
        let (control, mut incoming) = tunnel_mux::start(stream, Mode::Client, &shared.mux);
        let aborts = AbortTable::default();
        // Ping at the server's pace, but at least three times per our own timeout: the
        // server's pongs are what proves a quiet session alive to us, so a timeout shorter
        // than the server's interval must not kill a healthy idle session.
        let timeout = shared.cfg.heartbeat_timeout;
        let heartbeat = Heartbeat {
            interval: Duration::from_millis(u64::from(heartbeat_ms.max(1000))).min(timeout / 3),
            timeout,
        };
        let registered = Box::pin(open_control(shared, &control, &aborts, heartbeat)).await;
        let (mut channel, reply) = match registered {
            Ok(c) => c,
            Err(e) => {
                control.close();
                return Err(e);
            }
        };
        let ctx = Arc::new(Lane::new(
            session_id,
            control,
            aborts,
            channel.sender.clone(),
        ));
        let lanes = Arc::new(Lanes::new(ctx.clone(), shared.cfg.connections));
        *shared.current.write() = Some(lanes.clone());
        let stop_lanes = CancellationToken::new();
        let lane_tasks = TaskTracker::new();
        for _ in 1..shared.cfg.connections {
            let keep = lanes::keep(
                shared.clone(),
                lanes.clone(),
                session_id,
                heartbeat,
                stop_lanes.clone(),
            );
            lane_tasks.spawn(keep.in_current_span());
        }
        // Ready only now: visitors need `current` the moment a caller sees Ready.
        shared.status.send_replace(crate::Status::Ready(reply));
        // A reload that raced the registration above re-sends its request now.
        if shared
            .reload_pending
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            let _ = ctx.send(Message::Register(shared.register_request())).await;
        }

        let end = loop {
            tokio::select! {
                () = shared.shutdown.cancelled() => break SessionEnd::Shutdown,
                why = &mut channel.ended => {
                    break SessionEnd::Lost(why.unwrap_or_else(|e| e.to_string()));
                }
                msg = channel.inbox.recv() => match msg {
                    Some(Message::RegisterReply(reply)) => {
                        crate::reload::report(&shared.reload, &reply);
                        shared.status.send_replace(crate::Status::Ready(reply));
                    }
                    Some(other) => warn!("unexpected {} on the control stream", other.name()),
                    // The control reader stopped: its reason (a heartbeat timeout, say) is in
                    // `ended`, which resolves at once; "closed" alone would hide it.
                    None => {
                        let why = (&mut channel.ended).await;
                        break SessionEnd::Lost(why.unwrap_or_else(|e| e.to_string()));
                    }
                },
                s = incoming.accept() => match s {
                    Some(stream) => spawn_stream(shared, &ctx, stream),
                    None => break SessionEnd::Lost("the connection closed".into()),
                },
            }
        };
        if let SessionEnd::Shutdown = end {
            Box::pin(drain(shared, &mut incoming)).await;
        }
        *shared.current.write() = None;
        stop_lanes.cancel();
        lane_tasks.close();
        channel.ended.abort();
        // Ends the mux first: streams still waiting on it fail at once, finished ones read EOF.
        ctx.control.close();
        if let SessionEnd::Lost(_) = end {
            settle(|| !shared.streams.is_empty()).await;
        }
        ctx.aborts.abort_all();
        lane_tasks.wait().await;
        Ok(end)
    }
    .instrument(span)
    .await
}

/// Open the control stream and register; returns the server's verdicts.
async fn open_control(
    shared: &Shared,
    control: &Control,
    aborts: &AbortTable,
    heartbeat: Heartbeat,
) -> Result<(ControlChannel, RegisterReply), ClientError> {
    let mut ctrl = control
        .open()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let open = Message::StreamOpen(StreamOpen::Control);
    write_message(&mut ctrl, &open, CONTROL_MAX_FRAME).await?;
    match read_message(&mut ctrl, CONTROL_MAX_FRAME).await? {
        Some(Message::StreamStatus(StreamStatus::Ok)) => {}
        other => return Err(unexpected("the control stream's status", other)),
    }
    let mut channel = spawn_control(ctrl, aborts.clone(), heartbeat, CONTROL_MAX_FRAME);
    let req = Message::Register(shared.register_request());
    channel
        .sender
        .send(req)
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let reply = match tokio::time::timeout(REGISTER_TIMEOUT, channel.inbox.recv()).await {
        Ok(Some(Message::RegisterReply(r))) => r,
        Ok(other) => return Err(unexpected("the registration verdict", other)),
        Err(_) => {
            return Err(ClientError::Protocol(format!(
                "no registration verdict within {}s",
                REGISTER_TIMEOUT.as_secs()
            )))
        }
    };
    report(&reply);
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
    pub session_id: u64,
    /// How often the server wants pings.
    pub heartbeat_ms: u32,
}

/// TLS, hello, proof of the key.
pub(crate) async fn handshake(shared: &Shared) -> Result<Handshaken, ClientError> {
    let est = shared.transport.connect(&shared.cfg.server_addr).await?;
    let mut stream = est.stream;
    let hello = Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: shared.id.read().clone(),
        instance: shared.instance,
    };
    write_message(
        &mut stream,
        &Message::Hello(hello.clone()),
        CONTROL_MAX_FRAME,
    )
    .await?;
    let challenge = match read_message(&mut stream, CONTROL_MAX_FRAME).await? {
        Some(Message::Challenge(c)) => c,
        other => return Err(unexpected("a challenge", other)),
    };
    let binding = channel_binding(challenge.bound, est.binding, est.transport)?;
    let mac = auth::compute_mac(&shared.key, &challenge.nonce, &binding, &hello);
    let proof = Message::AuthResponse(AuthResponse { mac });
    write_message(&mut stream, &proof, CONTROL_MAX_FRAME).await?;
    match read_message(&mut stream, CONTROL_MAX_FRAME).await? {
        Some(Message::Welcome(w)) => Ok(Handshaken {
            stream,
            session_id: w.session_id,
            heartbeat_ms: w.heartbeat_ms,
        }),
        other => Err(unexpected("a welcome", other)),
    }
}

/// What to bind the key proof to. The server asks for binding whenever the connection ends
/// in its own TLS; then ours must be the same session. It does not when TLS ends at a proxy
/// in front of it (`ws_bind`), which only WebSocket reaches: a `tls` or `h2` connection that
/// is not asked has been diverted through something that terminates TLS, so it refuses.
fn channel_binding(
    bound: bool,
    ours: Option<[u8; 32]>,
    transport: TransportKind,
) -> Result<Vec<u8>, ClientError> {
    match (bound, ours) {
        (true, Some(b)) => Ok(b.to_vec()),
        (true, None) => Err(ClientError::Protocol(
            "the server requires channel binding, but with transport = \"ws\" this client has \
             no TLS session to bind to: point ws at the server's ws_bind (behind your TLS \
             terminator), or use wss"
                .into(),
        )),
        (false, _) if matches!(transport, TransportKind::Tls | TransportKind::H2) => {
            Err(ClientError::Protocol(format!(
                "the server did not ask for channel binding over {transport}, which it always \
                 does when it terminates TLS itself: something on the path terminates TLS \
                 (a man in the middle?); refusing to authenticate through it"
            )))
        }
        (false, _) => {
            info!("channel binding off: TLS ends at a proxy in front of the server");
            Ok(Vec::new())
        }
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

fn unexpected(wanted: &str, got: Option<Message>) -> ClientError {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn binding_follows_the_server_and_tls_or_h2_never_go_unbound() {
        let ekm = Some([7u8; 32]);
        for kind in TransportKind::ALL {
            // Asked and able: our exporter value.
            if kind != TransportKind::Ws {
                assert_eq!(channel_binding(true, ekm, kind).unwrap(), vec![7u8; 32]);
            }
        }
        // Asked but without TLS of our own: a clear refusal, not a wrong-key failure.
        let e = channel_binding(true, None, TransportKind::Ws).unwrap_err();
        assert!(e.to_string().contains("ws_bind"), "{e}");
        // Not asked: normal for WebSocket behind a TLS terminator...
        for kind in [TransportKind::Wss, TransportKind::Ws] {
            assert_eq!(channel_binding(false, ekm, kind).unwrap(), Vec::<u8>::new());
        }
        // ...but tls and h2 only ever reach the server's own TLS, so someone stripped it.
        for kind in [TransportKind::Tls, TransportKind::H2] {
            let e = channel_binding(false, ekm, kind).unwrap_err();
            assert!(e.to_string().contains("channel binding"), "{e}");
        }
    }
}
