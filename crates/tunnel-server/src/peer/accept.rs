//! The `peer_bind` listener: TLS (ALPN `tls-tunnel-peer/1` only), the mutual cluster-key
//! proof, then a multiplexed session on which the peer may only open Forward streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn, Instrument};
use tunnel_mux::{reset_tcp, Mode, MuxConfig};
use tunnel_proto::handshake::{Phase, Throttle};
use tunnel_proto::peer::{AcceptorEvent, PeerAcceptor};
use tunnel_transport::{drive, fill_random, within, Acceptor, BoxedStream, TransportError};

use crate::auth_failures::Refused;
use crate::peer::Peer;
use crate::Shared;

/// TLS and the proofs together; a silent or slow dialer is dropped after this.
pub(super) const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept peers until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, peer: Arc<Peer>, listener: TcpListener) {
    let mut listener = Acceptor::new(listener);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            (tcp, from) = listener.accept() => {
                let Ok(permit) = peer.handshakes.clone().try_acquire_owned() else {
                    debug!(%from, "peer connection reset: too many peer handshakes at once");
                    reset_tcp(tcp);
                    continue;
                };
                let task = serve_link(shared.clone(), peer.clone(), tcp, from, permit);
                shared.tasks.spawn(task.in_current_span());
            }
        }
    }
    info!("no longer accepting peers");
    // Streams forwarded over our own links finish within the grace period, as local ones do.
    shared.hard_stop.cancelled().await;
    peer.pool.close_all(&peer.traffic);
}

async fn serve_link(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    tcp: TcpStream,
    from: SocketAddr,
    permit: OwnedSemaphorePermit,
) {
    let setup = within(Phase::Tls, SETUP_TIMEOUT, setup(&shared, &peer, tcp, from)).await;
    drop(permit);
    let (stream, server_id) = match setup {
        Ok(s) => s,
        Err(e) => {
            let wrong_key = matches!(
                e,
                TransportError::Setup(tunnel_proto::HandshakeError::WrongClusterKey)
            );
            let subject = format!("peer refused {}", from.ip());
            if let Some(more) = shared.limit_warnings.check(subject) {
                if wrong_key {
                    warn!(%from, "peer refused: wrong cluster_key (every server of the cluster needs the same one){more}");
                } else {
                    info!(%from, "peer connection failed: {e}{more}");
                }
            }
            return;
        }
    };
    let span = tracing::info_span!("peer", peer = %server_id, %from);
    // Counted as up while it lasts; its streams count for the peer it authenticated as.
    let inbound = peer.traffic.inbound(&server_id);
    async move {
        info!("peer linked");
        let cfg = MuxConfig::default().with_max_streams(tunnel_mux::MAX_STREAMS_LIMIT);
        let (mux, mut incoming) = tunnel_mux::start(stream, Mode::Server, &cfg);
        loop {
            tokio::select! {
                () = shared.hard_stop.cancelled() => break,
                s = incoming.accept() => match s {
                    Some(s) => {
                        let counters = inbound.counters().clone();
                        let task = super::serve::serve_forward(shared.clone(), peer.clone(), s, from, counters);
                        shared.streams.spawn(task.in_current_span());
                    }
                    None => break,
                },
            }
        }
        mux.close();
        info!("peer link closed");
    }
    .instrument(span)
    .await;
}

/// TLS, then the proofs; the wrong-key limits of the client port apply to the peer's proof.
async fn setup(
    shared: &Shared,
    peer: &Peer,
    tcp: TcpStream,
    from: SocketAddr,
) -> Result<(BoxedStream, String), TransportError> {
    let (mut stream, _, binding) = peer.tls.accept(tcp, from).await?;
    let mut nonce = [0u8; 32];
    fill_random(&mut nonce)?;
    let key = peer.cfg.cluster_key.as_bytes();
    let mut machine = PeerAcceptor::new(key, &peer.cfg.server_id, nonce, binding);
    let AcceptorEvent::Authorize = drive(&mut stream, &mut machine).await? else {
        return Err(unexpected());
    };
    // Reserved and resolved with no await between, as on the client port.
    match shared.auth_failures.try_attempt(from.ip(), Instant::now()) {
        Ok(attempt) => match machine.authorize(Ok(())) {
            Some(true) => attempt.succeeded(),
            _ => {
                attempt.failed(Instant::now());
            }
        },
        Err(Refused::Blocked) => {
            machine.authorize(Err(Throttle::Source));
        }
        Err(Refused::Rate { .. }) => {
            machine.authorize(Err(Throttle::Server));
        }
    }
    match drive(&mut stream, &mut machine).await? {
        AcceptorEvent::Authenticated { server_id } => Ok((stream, server_id)),
        _ => Err(unexpected()),
    }
}

fn unexpected() -> TransportError {
    TransportError::Setup(tunnel_proto::HandshakeError::Unexpected {
        expected: "a peer proof",
        got: "another event",
    })
}
