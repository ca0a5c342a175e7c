//! The visitor path on the forwarding side: a client of this server visits a proxy another
//! server owns.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};
use tunnel_mux::{relay_streams, MuxStream};
use tunnel_proto::peer::{Forward, ForwardKind};
use tunnel_proto::{Message, StreamStatus};
use tunnel_transport::write_message;

use crate::lane::Lane;
use crate::peer::{Located, Peer};
use crate::session::{SessionRecord, CONTROL_MAX_FRAME};
use crate::visitor::refuse;
use crate::Shared;

/// Forward visitor stream `stream` (header already read) to the server `at` names. The owner's
/// server checks the secret and `allow_visitors`, so secrets never leave the owner's side
/// except on this authenticated link.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn forward_visit(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    visitor: Arc<SessionRecord>,
    lane: Arc<Lane>,
    mut stream: MuxStream,
    at: Located,
    port: u16,
    secret: String,
) {
    let in_id = stream.id();
    let in_guard = lane.aborts.register(in_id);
    let in_slot = match visitor.begin_stream_on(lane) {
        Ok(s) => s,
        Err(reason) => return refuse(&mut stream, reason.to_string()).await,
    };
    let fwd = Forward {
        kind: ForwardKind::Visitor,
        name: at.name.clone(),
        publish_port: port,
        epoch: at.epoch,
        src_addr: Some(visitor.peer),
        dest_addr: None,
        visitor_client_id: visitor.client_id.clone(),
        secret,
    };
    let owner = at.server_id.clone();
    let opened = match peer.pool.forward(&peer, at, fwd).await {
        Ok(o) => o,
        Err(reason) => {
            debug!(%owner, "visitor connection forwarded to server {owner} failed: {reason}");
            let subject = format!("visit forward {}", visitor.client_id);
            if let Some(more) = shared.limit_warnings.check(subject) {
                info!(%owner, "visitor refused via peer: {reason}{more}");
            }
            return refuse(&mut stream, reason.to_string()).await;
        }
    };
    let owner = opened.server_id;
    debug!(%owner, "visitor connection forwarded to server {owner}");
    let mut out = opened.stream;
    let ok = Message::StreamStatus(StreamStatus::Ok);
    if write_message(&mut stream, &ok, CONTROL_MAX_FRAME)
        .await
        .is_err()
    {
        return;
    }
    let never = CancellationToken::new();
    // The owner's server counts for the proxy; here the bytes count for the peer (a → b is
    // toward it).
    let end = relay_streams(
        &mut stream,
        &mut out,
        &shared.pipe,
        in_guard.token(),
        &never,
        Some(&opened.counters.bytes),
        || in_slot.lane().send_abort(in_id),
    )
    .await;
    debug!(%owner, ?end, "forwarded visitor connection finished");
}
