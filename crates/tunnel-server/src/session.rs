//! One client's session: admission, the mux, the control stream, and clean-up.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};
use tunnel_mux::{AbortTable, Control, Incoming, Mode, MuxStream};
use tunnel_proto::{Hello, Message, RejectCode, StreamOpen, StreamStatus, Welcome};
use tunnel_transport::{read_message, write_message, Established};

use crate::handshake::{self, HandshakeError};
use crate::{register, visitor, Shared};

/// Frames on the control stream carry JSON registrations; they are bounded all the same.
pub(crate) const CONTROL_MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;
/// Frames queued for the control stream before further aborts are dropped (they are hints).
const CONTROL_QUEUE: usize = 256;

/// What the rest of the server knows about a live session.
pub(crate) struct SessionRef {
    pub id: u64,
    pub client_id: String,
    pub instance: [u8; 16],
    pub peer: SocketAddr,
    pub control: Control,
    /// Cancelled when the session ends, is replaced, or the server shuts down.
    pub cancel: CancellationToken,
    pub aborts: AbortTable,
    ctrl_tx: mpsc::Sender<Message>,
}

impl SessionRef {
    /// Tell the client that the data path of stream `id` failed, so it resets its side.
    pub fn send_abort(&self, id: u32) {
        let _ = self.ctrl_tx.try_send(Message::Abort(id));
    }
}

/// Serve one accepted TCP connection from handshake to disconnect.
pub(crate) async fn handle_connection(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let Ok(permit) = shared.pending.clone().try_acquire_owned() else {
        debug!(%peer, "too many connections still in handshake; closing this one");
        return;
    };
    tunnel_transport::tune_tcp(&tcp);
    let mut nonce = [0u8; 32];
    if let Err(e) = tunnel_transport::fill_random(&mut nonce) {
        warn!(%peer, "cannot draw a random nonce: {e}");
        return;
    }
    let handshake = async {
        let mut est = shared.transport.accept(tcp, peer).await?;
        let binding = est.binding.map(|b| b.to_vec()).unwrap_or_default();
        let hello = handshake::authenticate(&mut est.stream, &binding, &shared.key, nonce).await?;
        Ok::<_, HandshakeError>((est, hello))
    };
    let result = tokio::time::timeout(shared.cfg.handshake_timeout(), handshake).await;
    drop(permit);
    match result {
        Ok(Ok((est, hello))) => run(shared, est, hello).await,
        Ok(Err(HandshakeError::BadKey)) => {
            warn!(%peer, "client rejected: wrong auth key");
        }
        Ok(Err(e)) => info!(%peer, "handshake failed: {e}"),
        Err(_) => info!(
            %peer,
            "handshake timed out after {}s; closed",
            shared.cfg.handshake_timeout
        ),
    }
}

async fn run(shared: Arc<Shared>, est: Established, hello: Hello) {
    let id = shared.next_session_id();
    let span = info_span!("session", id, client = %hello.client_id, peer = %est.peer);
    async move {
        let Established {
            mut stream,
            peer,
            transport,
            ..
        } = est;
        if let Err((code, reason)) = admit(&shared, &hello) {
            warn!("client rejected: {reason}");
            handshake::reject(&mut stream, code, reason).await;
            return;
        }
        let welcome = Message::Welcome(Welcome {
            session_id: id,
            heartbeat_ms: 0,
        });
        if let Err(e) = write_message(&mut stream, &welcome, CONTROL_MAX_FRAME).await {
            info!("client left before the session started: {e}");
            return;
        }
        let (control, incoming) = tunnel_mux::start(stream, Mode::Server, &shared.mux_config());
        let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_QUEUE);
        let session = Arc::new(SessionRef {
            id,
            client_id: hello.client_id.clone(),
            instance: hello.instance,
            peer,
            control,
            cancel: shared.shutdown.child_token(),
            aborts: AbortTable::default(),
            ctrl_tx,
        });
        if let Err(reason) = install(&shared, &session) {
            warn!("client rejected: {reason}");
            session.control.close();
            return;
        }
        info!(%transport, "client connected");
        serve(&shared, &session, incoming, ctrl_rx).await;
        let released = cleanup(&shared, &session);
        info!(proxies_released = released, "client disconnected");
    }
    .instrument(span)
    .await
}

/// Limits and identity checks before a session is welcomed.
fn admit(shared: &Shared, hello: &Hello) -> Result<(), (RejectCode, String)> {
    let sessions = shared.sessions.lock();
    match sessions.get(&hello.client_id) {
        Some(live) if live.instance != hello.instance => Err((
            RejectCode::IdInUse,
            format!(
                "client id {:?} is in use by another running client (connected from {}); give each client its own id",
                hello.client_id, live.peer
            ),
        )),
        Some(_) => Ok(()), // the same process reconnecting: it replaces its stale session
        None if sessions.len() >= shared.cfg.max_clients => Err((
            RejectCode::Limit,
            format!(
                "the server is full ({} clients, max_clients); try again later",
                sessions.len()
            ),
        )),
        None => Ok(()),
    }
}

/// Record the session under its client id; a stale session of the same instance hands its
/// proxies over at once, so public ports keep serving.
fn install(shared: &Shared, session: &Arc<SessionRef>) -> Result<(), String> {
    let (old, moved) = {
        let mut sessions = shared.sessions.lock();
        if let Some(live) = sessions.get(&session.client_id) {
            if live.instance != session.instance {
                return Err(format!(
                    "client id {:?} was taken by another client meanwhile",
                    session.client_id
                ));
            }
        }
        let old = sessions.insert(session.client_id.clone(), session.clone());
        // Still under the lock: the old session's clean-up takes it before releasing, so it
        // cannot release the proxies between the insert and the hand-over (a gap).
        let moved = old
            .as_ref()
            .map_or(0, |old| shared.registry.hand_over(old.id, session));
        (old, moved)
    };
    if let Some(old) = old {
        info!(
            old_session = old.id,
            proxies = moved,
            "replaces a stale session of the same client"
        );
        old.cancel.cancel();
        old.aborts.abort_all();
        old.control.close();
    }
    Ok(())
}

async fn serve(
    shared: &Arc<Shared>,
    session: &Arc<SessionRef>,
    mut incoming: Incoming,
    ctrl_rx: mpsc::Receiver<Message>,
) {
    let ctrl = tokio::select! {
        s = accept_control(shared, &mut incoming) => s,
        () = session.cancel.cancelled() => return,
    };
    let mut ctrl = match ctrl {
        Ok(s) => s,
        Err(e) => {
            info!("no control stream: {e}");
            return;
        }
    };
    let reply = match read_message(&mut ctrl, CONTROL_MAX_FRAME).await {
        Ok(Some(Message::Register(req))) => register::apply(shared, session, req).await,
        Ok(Some(other)) => {
            info!("expected a registration, got {}", other.name());
            return;
        }
        Ok(None) => return,
        Err(e) => {
            info!("bad registration: {e}");
            return;
        }
    };
    if let Err(e) =
        write_message(&mut ctrl, &Message::RegisterReply(reply), CONTROL_MAX_FRAME).await
    {
        info!("cannot answer the registration: {e}");
        return;
    }
    let (rd, wr) = tokio::io::split(ctrl);
    let reader = tokio::spawn(control_reader(rd, session.clone()).in_current_span());
    let writer = tokio::spawn(control_writer(wr, ctrl_rx).in_current_span());
    loop {
        tokio::select! {
            () = session.cancel.cancelled() => break,
            s = incoming.accept() => match s {
                Some(stream) => {
                    let task = visitor::serve_stream(shared.clone(), session.clone(), stream);
                    shared.tasks.spawn(task.in_current_span());
                }
                None => break,
            },
        }
    }
    reader.abort();
    writer.abort();
}

/// The client's first stream must be its control stream.
async fn accept_control(shared: &Shared, incoming: &mut Incoming) -> Result<MuxStream, String> {
    let wait = shared.cfg.handshake_timeout();
    let mut s = tokio::time::timeout(wait, incoming.accept())
        .await
        .map_err(|_| "timed out".to_string())?
        .ok_or("session closed")?;
    match tokio::time::timeout(wait, read_message(&mut s, CONTROL_MAX_FRAME)).await {
        Ok(Ok(Some(Message::StreamOpen(StreamOpen::Control)))) => {}
        Ok(Ok(Some(other))) => return Err(format!("first stream was a {}", other.name())),
        Ok(Ok(None)) => return Err("closed".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("timed out".into()),
    }
    write_message(
        &mut s,
        &Message::StreamStatus(StreamStatus::Ok),
        CONTROL_MAX_FRAME,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(s)
}

async fn control_reader(mut rd: tokio::io::ReadHalf<MuxStream>, session: Arc<SessionRef>) {
    loop {
        match read_message(&mut rd, CONTROL_MAX_FRAME).await {
            Ok(Some(Message::Ping(n))) => {
                let _ = session.ctrl_tx.send(Message::Pong(n)).await;
            }
            Ok(Some(Message::Pong(_))) => {}
            Ok(Some(Message::Abort(id))) => {
                session.aborts.abort(id);
            }
            Ok(Some(other)) => {
                info!(
                    "unexpected {} on the control stream; closing the session",
                    other.name()
                );
                break;
            }
            Ok(None) => {
                debug!("control stream closed by the client");
                break;
            }
            Err(e) => {
                info!("control stream failed: {e}");
                break;
            }
        }
    }
    session.cancel.cancel();
}

async fn control_writer(mut wr: tokio::io::WriteHalf<MuxStream>, mut rx: mpsc::Receiver<Message>) {
    while let Some(msg) = rx.recv().await {
        if write_message(&mut wr, &msg, CONTROL_MAX_FRAME)
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Release everything the session holds. Returns how many proxies it released.
fn cleanup(shared: &Shared, session: &SessionRef) -> usize {
    session.cancel.cancel();
    let released = {
        let mut sessions = shared.sessions.lock();
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| s.id == session.id)
        {
            sessions.remove(&session.client_id);
        }
        // Under the lock (see `install`): a successor of the same client has either taken
        // our proxies over already, leaving none to release, or does not exist.
        shared.registry.release_all(session.id)
    };
    session.aborts.abort_all();
    session.control.close();
    for key in &released {
        debug!(proxy = %key, "proxy released");
    }
    released.len()
}
