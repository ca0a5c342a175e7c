//! One connection to the server: handshake, registration, then serving streams until it ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn, Instrument};
use tunnel_mux::{AbortTable, Control, Mode};
use tunnel_proto::{auth, AuthResponse, Hello, Message, RegisterReply, StreamOpen, StreamStatus};
use tunnel_transport::{read_message, write_message, BoxedStream, TransportError};

use crate::error::ClientError;
use crate::{proxy, Shared};

const CONTROL_MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;
const CONTROL_QUEUE: usize = 256;
/// Connect, TLS and authentication together must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What visitors and stream handlers need of the live session.
#[derive(Debug)]
pub(crate) struct SessionCtx {
    pub control: Control,
    pub aborts: AbortTable,
    ctrl_tx: mpsc::Sender<Message>,
}

impl SessionCtx {
    /// Tell the server the data path of stream `id` failed, so it resets its side.
    pub fn send_abort(&self, id: u32) {
        let _ = self.ctrl_tx.try_send(Message::Abort(id));
    }
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
    let (stream, session_id) = tokio::time::timeout(CONNECT_TIMEOUT, handshake(shared))
        .await
        .map_err(|_| TransportError::Timeout)??;
    let span = tracing::info_span!("session", id = session_id);
    async move {
        let (control, mut incoming) = tunnel_mux::start(stream, Mode::Client, &shared.mux);
        let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_QUEUE);
        let ctx = Arc::new(SessionCtx {
            control,
            aborts: AbortTable::default(),
            ctrl_tx,
        });
        let mut ctrl = ctx
            .control
            .open()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let reply = register(shared, &mut ctrl).await?;
        report(&reply);
        *shared.current.write() = Some(ctx.clone());
        shared.status.send_replace(crate::Status::Ready(reply));

        let (rd, wr) = tokio::io::split(ctrl);
        let mut reader = tokio::spawn(control_reader(rd, ctx.clone()).in_current_span());
        let writer = tokio::spawn(control_writer(wr, ctrl_rx).in_current_span());
        let end = loop {
            tokio::select! {
                () = shared.shutdown.cancelled() => break SessionEnd::Shutdown,
                r = &mut reader => break SessionEnd::Lost(r.unwrap_or_else(|e| e.to_string())),
                s = incoming.accept() => match s {
                    Some(stream) => {
                        let task = proxy::serve_stream(shared.clone(), ctx.clone(), stream);
                        shared.tasks.spawn(task.in_current_span());
                    }
                    None => break SessionEnd::Lost("the connection closed".into()),
                },
            }
        };
        *shared.current.write() = None;
        reader.abort();
        writer.abort();
        ctx.aborts.abort_all();
        ctx.control.close();
        Ok(end)
    }
    .instrument(span)
    .await
}

/// TLS, hello, proof of the key. Returns the stream ready for the mux and the session id.
async fn handshake(shared: &Shared) -> Result<(BoxedStream, u64), ClientError> {
    let est = shared.transport.connect(&shared.cfg.server_addr).await?;
    let mut stream = est.stream;
    let binding = est.binding.map(|b| b.to_vec()).unwrap_or_default();
    let hello = Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: shared.id.clone(),
        instance: shared.instance,
    };
    write_message(
        &mut stream,
        &Message::Hello(hello.clone()),
        CONTROL_MAX_FRAME,
    )
    .await?;
    let nonce = match read_message(&mut stream, CONTROL_MAX_FRAME).await? {
        Some(Message::Challenge(c)) => c.nonce,
        other => return Err(unexpected("a challenge", other)),
    };
    let mac = auth::compute_mac(&shared.key, &nonce, &binding, &hello);
    let proof = Message::AuthResponse(AuthResponse { mac });
    write_message(&mut stream, &proof, CONTROL_MAX_FRAME).await?;
    match read_message(&mut stream, CONTROL_MAX_FRAME).await? {
        Some(Message::Welcome(w)) => {
            info!(session = w.session_id, transport = %est.transport, "connected to {}", shared.cfg.server_addr);
            Ok((stream, w.session_id))
        }
        other => Err(unexpected("a welcome", other)),
    }
}

async fn register(
    shared: &Shared,
    ctrl: &mut tunnel_mux::MuxStream,
) -> Result<RegisterReply, ClientError> {
    let open = Message::StreamOpen(StreamOpen::Control);
    write_message(ctrl, &open, CONTROL_MAX_FRAME).await?;
    match read_message(ctrl, CONTROL_MAX_FRAME).await? {
        Some(Message::StreamStatus(StreamStatus::Ok)) => {}
        other => return Err(unexpected("the control stream's status", other)),
    }
    let req = Message::Register(shared.cfg.register_request());
    write_message(ctrl, &req, CONTROL_MAX_FRAME).await?;
    match read_message(ctrl, CONTROL_MAX_FRAME).await? {
        Some(Message::RegisterReply(r)) => Ok(r),
        other => Err(unexpected("the registration verdict", other)),
    }
}

fn report(reply: &RegisterReply) {
    for item in &reply.results {
        match &item.error {
            None => info!(kind = ?item.kind, name = %item.name, "registered"),
            Some(e) => error!(kind = ?item.kind, name = %item.name, "rejected by the server: {e}"),
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

/// Serves the control stream; returns why it ended.
async fn control_reader(
    mut rd: tokio::io::ReadHalf<tunnel_mux::MuxStream>,
    ctx: Arc<SessionCtx>,
) -> String {
    loop {
        match read_message(&mut rd, CONTROL_MAX_FRAME).await {
            Ok(Some(Message::Ping(n))) => {
                let _ = ctx.ctrl_tx.send(Message::Pong(n)).await;
            }
            Ok(Some(Message::Pong(_))) => {}
            Ok(Some(Message::Abort(id))) => {
                debug!(stream = id, "server aborted a stream");
                ctx.aborts.abort(id);
            }
            Ok(Some(other)) => {
                warn!("unexpected {} on the control stream", other.name());
            }
            Ok(None) => return "the server closed the session".into(),
            Err(e) => return format!("control stream failed: {e}"),
        }
    }
}

async fn control_writer(
    mut wr: tokio::io::WriteHalf<tunnel_mux::MuxStream>,
    mut rx: mpsc::Receiver<Message>,
) {
    while let Some(msg) = rx.recv().await {
        if write_message(&mut wr, &msg, CONTROL_MAX_FRAME)
            .await
            .is_err()
        {
            break;
        }
    }
}
