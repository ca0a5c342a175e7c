//! Virtual-host requests across servers (issue #16), both ends. The forwarding side asks the
//! domain's server once, and after "not here" once more where a fresh registry read says
//! ([`forward_vhost`]); the owner's side checks the registry places the domain here and hands
//! the stream to its own virtual host ([`serve`]), which routes it to local proxies only.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tracing::debug;
use tunnel_mux::MuxStream;
use tunnel_proto::peer::{Forward, Forwarded, PEER_STREAM_MAX_FRAME};
use tunnel_proto::Message;
use tunnel_transport::write_message;

use super::serve::answer;
use crate::peer::{Located, Peer};
use crate::{ServerError, Shared};

/// What became of a forwarded virtual-host request before any of it was sent.
pub(crate) enum VhostHop {
    /// Server `server_id` accepted it on `stream`.
    Open {
        /// The accepted stream: the request goes here.
        stream: MuxStream,
        /// The server that accepted it.
        server_id: String,
    },
    /// The fresh registry read places the domain on this server.
    Here,
    /// No server has the domain.
    Unknown,
    /// Still "not here" after the one retry: the domain is between servers.
    Moving,
    /// Refused or unreachable.
    Failed {
        /// The server asked last.
        server_id: String,
        /// Why, for the log.
        reason: ServerError,
    },
}

/// Ask `at`'s server to take `fwd`; on "not here" or an unreachable server, read the owner
/// afresh once and ask that server once. Never more: a stale cache costs one round trip.
pub(crate) async fn forward_vhost(peer: &Peer, at: Located, mut fwd: Forward) -> VhostHop {
    let unreachable = match ask(peer, &at, &fwd).await {
        Asked::Done(hop) => return hop,
        Asked::NotHere(why) => {
            let server = &at.server_id;
            debug!(
                domain = fwd.name,
                server, "{why}; looking the domain up afresh"
            );
            None
        }
        Asked::Unreachable(e) => {
            let server = &at.server_id;
            debug!(
                domain = fwd.name,
                server, "{e}; looking the domain up afresh"
            );
            Some(e)
        }
    };
    let Some(fresh) = peer.locator.locate_domain_fresh(&fwd.name).await else {
        // Gone from the registry, or the registry unreadable: after "not here" the domain
        // is nowhere; after a server that could not be reached, that is the failure.
        return match unreachable {
            Some(reason) => VhostHop::Failed {
                server_id: at.server_id,
                reason,
            },
            None => VhostHop::Unknown,
        };
    };
    if fresh.local {
        return VhostHop::Here;
    }
    fwd.epoch = fresh.epoch;
    match ask(peer, &fresh, &fwd).await {
        Asked::Done(hop) => hop,
        Asked::NotHere(_) => VhostHop::Moving,
        Asked::Unreachable(reason) => VhostHop::Failed {
            server_id: fresh.server_id,
            reason,
        },
    }
}

/// One server's answer; the last two are worth one fresh lookup.
enum Asked {
    Done(VhostHop),
    NotHere(String),
    Unreachable(ServerError),
}

async fn ask(peer: &Peer, at: &Located, fwd: &Forward) -> Asked {
    let failed = |reason: ServerError| VhostHop::Failed {
        server_id: at.server_id.clone(),
        reason,
    };
    match peer.pool.forward_once(peer, at, fwd).await {
        Ok((stream, Forwarded::Ok)) => Asked::Done(VhostHop::Open {
            stream,
            server_id: at.server_id.clone(),
        }),
        Ok((_, Forwarded::NotHere { epoch })) => Asked::NotHere(format!(
            "server {} does not serve it (its epoch {epoch})",
            at.server_id
        )),
        Ok((_, Forwarded::NotFound)) => Asked::Done(VhostHop::Unknown),
        // The owner's server's words, escaped once for the log lines they reach.
        Ok((_, Forwarded::Denied(reason))) => {
            Asked::Done(failed(ServerError::PeerDenied { reason }))
        }
        Err(failed) => Asked::Unreachable(failed.into_reason()),
    }
}

/// The owner's side: serve `fwd`'s request here if the registry places its domain here.
pub(super) async fn serve(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    mut stream: MuxStream,
    fwd: Forward,
    link: SocketAddr,
) {
    if crate::routes::is_sni_host(&fwd.name) {
        // An https name: a TLS connection for the HTTPS virtual host, not an HTTP request.
        return crate::vhost::serve_https_forwarded(shared, peer, stream, fwd, link).await;
    }
    let Some(vh) = shared.vhost.get().and_then(Weak::upgrade) else {
        let reason = "this server has no virtual host (vhost_http_bind)".to_owned();
        return answer(&mut stream, Forwarded::Denied(reason)).await;
    };
    // Not the epoch the other server named: whatever it is, this server's own routes decide
    // which proxy serves the request, as for a request that reached it directly.
    match peer.locator.locate_domain(&fwd.name) {
        Some(at) if at.local => {}
        other => {
            let epoch = other.map_or(0, |at| at.epoch);
            return answer(&mut stream, Forwarded::NotHere { epoch }).await;
        }
    }
    let user = fwd.src_addr.unwrap_or(link);
    let permit = match crate::vhost::admit_forwarded(&vh, user) {
        Ok(p) => p,
        Err(reason) => return answer(&mut stream, Forwarded::Denied(reason.to_string())).await,
    };
    let ok = Message::Forwarded(Forwarded::Ok);
    if write_message(&mut stream, &ok, PEER_STREAM_MAX_FRAME)
        .await
        .is_err()
    {
        return;
    }
    crate::vhost::serve_forwarded(vh, stream, user, fwd.dest_addr, permit).await;
}
