//! Visitors: local listeners whose connections reach another client's proxy via the server.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, info_span, warn, Instrument};
use tunnel_mux::{relay_tcp, RelayEnd};
use tunnel_mux::{AbortGuard, MuxStream};
use tunnel_proto::{Message, PeerText, ProxyKind, StreamOpen, StreamStatus};
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
    pub(crate) listener: Listener,
    pub(crate) spare: Spare,
}

/// What a visitor serves on: a TCP listener, or the UDP socket of a `type = "udp"` visitor.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A second handle on a visitor's socket.
#[derive(Debug)]
pub(crate) enum Spare {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

impl Spare {
    pub(crate) fn try_clone(&self) -> std::io::Result<Spare> {
        Ok(match self {
            Spare::Tcp(l) => Spare::Tcp(l.try_clone()?),
            Spare::Udp(u) => Spare::Udp(u.try_clone()?),
        })
    }

    /// Whether it can serve visitor `v` (a TCP socket cannot serve a UDP visitor).
    pub(crate) fn fits(&self, v: &VisitorConfig) -> bool {
        matches!(self, Spare::Udp(_)) == (v.kind == ProxyKind::Udp)
    }
}

impl Bound {
    /// Listen on `v.bind`.
    pub(crate) async fn bind(v: &VisitorConfig) -> Result<Bound, ClientError> {
        let fail = |source| ClientError::VisitorBind {
            name: v.name.clone(),
            bind: v.bind.clone(),
            source,
        };
        let spare = if v.kind == ProxyKind::Udp {
            let u = UdpSocket::bind(&v.bind).await.map_err(fail)?;
            Spare::Udp(u.into_std().map_err(fail)?)
        } else {
            let l = TcpListener::bind(&v.bind).await.map_err(fail)?;
            Spare::Tcp(l.into_std().map_err(fail)?)
        };
        Bound::from_std(spare).map_err(fail)
    }

    /// Another accept loop's handle on the socket `spare` belongs to.
    pub(crate) fn share(v: &VisitorConfig, spare: &Spare) -> Result<Bound, ClientError> {
        spare
            .try_clone()
            .and_then(Bound::from_std)
            .map_err(|source| ClientError::VisitorBind {
                name: v.name.clone(),
                bind: v.bind.clone(),
                source,
            })
    }

    fn from_std(s: Spare) -> std::io::Result<Bound> {
        let spare = s.try_clone()?;
        let listener = match s {
            Spare::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listener::Tcp(TcpListener::from_std(l)?)
            }
            Spare::Udp(u) => {
                u.set_nonblocking(true)?;
                Listener::Udp(UdpSocket::from_std(u)?)
            }
        };
        Ok(Bound { listener, spare })
    }
}

/// A visitor being served: its settings, what stops it, and the spare handle on its socket
/// (dropped when its accept loop ends, so that a stopped visitor's port closes).
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) cfg: VisitorConfig,
    pub(crate) stop: tokio_util::sync::CancellationToken,
    pub(crate) spare: Arc<parking_lot::Mutex<Option<Spare>>>,
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
    listener: Listener,
    stop: tokio_util::sync::CancellationToken,
) {
    let span = info_span!("visitor", name = %visitor.name);
    let visitor = Arc::new(visitor);
    let listener = match listener {
        Listener::Tcp(l) => l,
        Listener::Udp(socket) => {
            let task = crate::udp::run_visitor(shared, visitor, socket, stop);
            return task.instrument(span).await;
        }
    };
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
    let Some((stream, guard, ctx)) = open_visit(&shared, &visitor).await else {
        return;
    };
    // The relay runs in the session's own task (see `tunnel_mux::SessionSpawner`), on its
    // thread when it has one.
    let tcp = match tunnel_mux::Portable::new(tcp, shared.threads.as_ref()) {
        Ok(tcp) => tcp,
        Err(e) => {
            debug!("connection closed: {e}");
            return;
        }
    };
    let spawner = stream.session_spawner();
    let tracker = shared.streams.clone();
    let relay = async move {
        let tcp = match tcp.attach() {
            Ok(tcp) => tcp,
            Err(e) => return debug!("connection closed: {e}"),
        };
        let id = stream.id();
        let counters = shared.visitor_counters.get(&visitor.name);
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
    };
    spawner.spawn(tracker.track_future(relay.in_current_span()));
}

/// A stream to the visitor's proxy through the server, accepted by its owner; `None` when
/// it could not be had (warned, once per window for refusals).
pub(crate) async fn open_visit(
    shared: &Shared,
    visitor: &VisitorConfig,
) -> Option<(MuxStream, AbortGuard, tunnel_mux::LaneSlot)> {
    let Some(lanes) = shared.current.read().clone() else {
        warn!("not connected to the server; closing the connection");
        return None;
    };
    let ctx = lanes.place();
    let mut stream = match ctx.control.open().await {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot open a stream: {e}");
            return None;
        }
    };
    let guard = ctx.aborts.register(stream.id());
    let open = Message::StreamOpen(StreamOpen::Visit {
        proxy: visitor.proxy.clone(),
        publish_port: visitor.publish_port,
        secret: visitor.secret.clone().unwrap_or_default(),
    });
    if let Err(e) = write_message(&mut stream, &open, MAX_FRAME).await {
        warn!("cannot reach the server: {e}");
        return None;
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
    if let Some(why) = refused {
        // Whoever refuses can do so for every connection: one line per window.
        let counters = shared.visitor_counters.get(&visitor.name);
        if let Some(more) = counters.failures.check() {
            warn!(proxy = %visitor.proxy, "{why}{more}");
        }
        return None;
    }
    Some((stream, guard, ctx))
}
