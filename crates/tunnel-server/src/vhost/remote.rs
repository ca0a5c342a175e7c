//! In a cluster, a request for a domain another server serves (issue #16): this server finds
//! that server in the registry's cache, opens one Forward stream to it per request, and
//! passes the request on as it came; that server routes, authorises and rewrites it as its
//! own virtual host would ([`super::serve_forwarded`]), with the user's address carried in
//! the Forward. One hop: a forwarded request is routed to local proxies only.
//!
//! Replay: the Forward is answered before any byte of the request is sent, so after a "not
//! here" the request is still whole, and goes to the server a fresh registry read names
//! (once; see [`crate::peer::forward_vhost`]). Once a server said Ok the request is its, and
//! a failure after that is a 502 like any other.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tunnel_mux::MuxStream;
use tunnel_proto::peer::{Forward, ForwardKind};

use super::{page, upstream, Body, Peer, Vhost};
use crate::peer::VhostHop;
use crate::routes::domain_candidates;

/// Where a request no local proxy serves goes.
pub(super) enum Hop {
    /// To another server, which accepted it on this stream.
    Open(Opened),
    /// Here after all: the registry moved the domain to this server.
    Here,
    /// Nowhere: no server has the domain.
    Unknown,
    /// Nowhere for now: the answer to send.
    Failed(Response<Body>),
}

/// A stream the domain's server accepted the request on.
pub(super) struct Opened {
    stream: MuxStream,
    server_id: String,
}

/// Find the server of `host` (the same matching as local routes: the name, then the most
/// specific wildcard) and open the Forward to it.
pub(super) async fn open(vh: &Vhost, from: &Peer, host: &str) -> Hop {
    // Never a second hop: what another server forwarded is routed here or nowhere.
    if from.forwarded {
        return Hop::Unknown;
    }
    let Some(link) = &vh.shared.peer else {
        return Hop::Unknown;
    };
    let found = domain_candidates(host)
        .into_iter()
        .find_map(|d| link.locator.locate_domain(&d).map(|at| (d, at)));
    let Some((domain, at)) = found else {
        return Hop::Unknown;
    };
    if at.local {
        // Registered here, but no local route for this path (or not yet): as today.
        return Hop::Unknown;
    }
    let fwd = Forward {
        kind: ForwardKind::Vhost,
        name: domain,
        publish_port: 0,
        epoch: at.epoch,
        src_addr: Some(from.addr),
        dest_addr: from.dest,
        visitor_client_id: String::new(),
        secret: String::new(),
    };
    match crate::peer::forward_vhost(link, at, fwd).await {
        VhostHop::Open { stream, server_id } => Hop::Open(Opened { stream, server_id }),
        VhostHop::Here => Hop::Here,
        VhostHop::Unknown => Hop::Unknown,
        VhostHop::Moving => Hop::Failed(page(
            StatusCode::BAD_GATEWAY,
            "the tunnel for this host is moving between servers; try again",
        )),
        VhostHop::Failed { server_id, reason } => {
            debug!(peer = %from.addr, server = %server_id, "request not forwarded: {reason}");
            Hop::Failed(page(StatusCode::BAD_GATEWAY, "the service is unreachable"))
        }
    }
}

/// Send `req` as it came over the accepted stream and stream the answer back.
pub(super) async fn send(
    vh: &Vhost,
    from: &Peer,
    hop: Opened,
    req: Request<Incoming>,
) -> Response<Body> {
    debug!(peer = %from.addr, server = %hop.server_id, "request forwarded to the domain's server");
    // The domain's server applies the proxy's idle timeout to an upgraded connection and
    // closes the stream when it ends; closing the stream is the only abort there is.
    let never = CancellationToken::new();
    upstream::exchange(&vh.shared, hop.stream, from, req, never, (), None).await
}
