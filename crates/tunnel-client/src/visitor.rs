//! Visitors: local listeners whose connections reach another client's proxy via the server.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info_span, warn, Instrument};
use tunnel_mux::{relay_tcp, RelayEnd};
use tunnel_proto::{Message, PeerText, StreamOpen, StreamStatus};
use tunnel_transport::{read_message, write_message};

use crate::config::VisitorConfig;
use crate::error::ClientError;
use crate::Shared;

/// The server dials the owner, which dials its service up to 3 times: allow for all of it.
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_FRAME: usize = tunnel_proto::DEFAULT_MAX_FRAME;

/// A visitor's listening socket: one handle for its accept loop, and a spare on the same
/// socket, so that a reload can hand the socket to the visitor's next settings without a
/// moment when the port is closed (and without binding it twice).
#[derive(Debug)]
pub(crate) struct Bound {
    pub(crate) listener: TcpListener,
    pub(crate) spare: std::net::TcpListener,
}

impl Bound {
    /// Listen on `v.bind`.
    pub(crate) async fn bind(v: &VisitorConfig) -> Result<Bound, ClientError> {
        let fail = |source| ClientError::VisitorBind {
            name: v.name.clone(),
            bind: v.bind.clone(),
            source,
        };
        let l = TcpListener::bind(&v.bind).await.map_err(fail)?;
        Bound::from_std(l.into_std().map_err(fail)?).map_err(fail)
    }

    /// Another accept loop's handle on the socket `spare` belongs to.
    pub(crate) fn share(
        v: &VisitorConfig,
        spare: &std::net::TcpListener,
    ) -> Result<Bound, ClientError> {
        spare
            .try_clone()
            .and_then(Bound::from_std)
            .map_err(|source| ClientError::VisitorBind {
                name: v.name.clone(),
                bind: v.bind.clone(),
                source,
            })
    }

    fn from_std(l: std::net::TcpListener) -> std::io::Result<Bound> {
        let spare = l.try_clone()?;
        Ok(Bound {
            listener: TcpListener::from_std(l)?,
            spare,
        })
    }
}

/// A visitor being served: its settings, what stops it, and the spare handle on its socket
/// (dropped when its accept loop ends, so that a stopped visitor's port closes).
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) cfg: VisitorConfig,
    pub(crate) stop: tokio_util::sync::CancellationToken,
    pub(crate) spare: Arc<parking_lot::Mutex<Option<std::net::TcpListener>>>,
    /// Cancelled once its accept loop has returned: from then on a socket it shared with
    /// a successor is accepted on by the successor alone.
    pub(crate) ended: tokio_util::sync::CancellationToken,
}

/// Bind every visitor's listener up front, so a taken port is reported at start.
pub(crate) async fn bind_all(
    visitors: &[VisitorConfig],
) -> Result<Vec<(VisitorConfig, Bound)>, ClientError> {
    let mut out = Vec::with_capacity(visitors.len());
    for v in visitors {
        out.push((v.clone(), Bound::bind(v).await?));
    }
    Ok(out)
}

/// Accept until `stop` (client shutdown, or the visitor removed by a reload); each
/// connection is carried over the live session.
pub(crate) async fn run(
    shared: Arc<Shared>,
    visitor: VisitorConfig,
    listener: TcpListener,
    stop: tokio_util::sync::CancellationToken,
) {
    let span = info_span!("visitor", name = %visitor.name);
    let visitor = Arc::new(visitor);
    let mut listener = tunnel_transport::Acceptor::new(listener);
    async move {
        loop {
            tokio::select! {
                // A stopped loop takes no more connections, even ones already waiting.
                biased;
                () = stop.cancelled() => break,
                (tcp, peer) = listener.accept() => {
                    // Also in the visitor's span: with "conn" filtered out (it is
                    // debug), the refusal warnings must still name client and visitor.
                    let task = serve(shared.clone(), visitor.clone(), tcp)
                        .instrument(tracing::debug_span!("conn", %peer));
                    shared.streams.spawn(task.in_current_span());
                }
            }
        }
    }
    .instrument(span)
    .await
}

async fn serve(shared: Arc<Shared>, visitor: Arc<VisitorConfig>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Some(lanes) = shared.current.read().clone() else {
        warn!("not connected to the server; closing the connection");
        return;
    };
    let ctx = lanes.place();
    let mut stream = match ctx.control.open().await {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot open a stream: {e}");
            return;
        }
    };
    let id = stream.id();
    let guard = ctx.aborts.register(id);
    let open = Message::StreamOpen(StreamOpen::Visit {
        proxy: visitor.proxy.clone(),
        publish_port: visitor.publish_port,
        secret: visitor.secret.clone().unwrap_or_default(),
    });
    if let Err(e) = write_message(&mut stream, &open, MAX_FRAME).await {
        warn!("cannot reach the server: {e}");
        return;
    }
    let status = tokio::time::timeout(STATUS_TIMEOUT, read_message(&mut stream, MAX_FRAME)).await;
    let refused = match status {
        Ok(Ok(Some(Message::StreamStatus(StreamStatus::Ok)))) => None,
        // The server's words, often relayed from the proxy's owner: another key holder.
        Ok(Ok(Some(Message::StreamStatus(StreamStatus::Error(reason))))) => {
            Some(format!("refused: {}", PeerText(&reason)))
        }
        Ok(Ok(other)) => Some(format!(
            "unexpected answer from the server: {:?}",
            other.map(|m| m.name())
        )),
        Ok(Err(e)) => Some(format!("stream failed: {e}")),
        Err(_) => Some(format!("no answer within {}s", STATUS_TIMEOUT.as_secs())),
    };
    let counters = shared.visitor_counters.get(&visitor.name);
    if let Some(why) = refused {
        // Whoever refuses can do so for every connection: one line per window.
        if let Some(more) = counters.failures.check() {
            warn!(proxy = %visitor.proxy, "{why}{more}");
        }
        return;
    }
    counters.connections.fetch_add(1, Ordering::Relaxed);
    counters.active.fetch_add(1, Ordering::Relaxed);
    let bytes = Some(&counters.bytes);
    let end = relay_tcp(tcp, stream, &shared.pipe, guard.token(), bytes, || {
        ctx.send_abort(id)
    })
    .await;
    counters.active.fetch_sub(1, Ordering::Relaxed);
    match end {
        RelayEnd::Failed { error, .. } => {
            debug!(stream = id, "connection failed: {error}");
        }
        end => debug!(stream = id, ?end, "connection finished"),
    }
}
