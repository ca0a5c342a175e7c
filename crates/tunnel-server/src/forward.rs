//! Opening a stream to a proxy's owner: the path shared by public and visitor connections.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tunnel_mux::{AbortGuard, MuxStream};
use tunnel_proto::{Message, PeerText, StreamOpen, StreamStatus};
use tunnel_transport::{read_message, write_message};

use crate::lane::Lane;
use crate::registry::ProxyEntry;
use crate::session::{StreamSlot, CONTROL_MAX_FRAME};
use crate::visitor::STREAM_HEADER_MAX;
use crate::Shared;

/// Count one more user connection of `entry` (a published port or the virtual host) and take
/// a stream slot of its owner, within the owner's `max_streams_per_client` and the proxy's
/// fair share, so one busy or attacked proxy cannot take the streams of the client's others.
/// A refusal is counted and warned, at most once a minute per proxy.
pub(crate) fn begin_public(
    shared: &Shared,
    entry: &ProxyEntry,
    peer: SocketAddr,
) -> Option<StreamSlot> {
    entry
        .counters
        .public_connections
        .fetch_add(1, Ordering::Relaxed);
    // Released meanwhile: nobody serves it any more.
    let owner = shared.registry.owner(&entry.key)?;
    let proxies = || shared.registry.proxies_of(owner.id);
    match owner.begin_stream_for(&entry.key, proxies) {
        Ok(slot) => Some(slot),
        Err(reason) => {
            shared
                .limit_metrics
                .streams_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(more) = shared
                .limit_warnings
                .check(format!("streams {}", entry.key))
            {
                tracing::warn!(%peer, proxy = %entry.label(), "user connection refused: {reason}{more}");
            }
            None
        }
    }
}

/// How long the owner may take to dial its local service (it tries 3 times) and answer.
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

/// Open a stream over `lane` (a connection of the proxy's owner) for one connection of `entry` from `peer` to `dest` (the address
/// the user reached, for the PROXY protocol), and wait for its status. The
/// stream is watched for aborts from the moment it exists, so an early abort is not lost.
/// On failure, the reason is fit to send back to a visitor.
pub(crate) async fn open_to_owner(
    entry: &ProxyEntry,
    lane: &Lane,
    peer: Option<SocketAddr>,
    dest: Option<SocketAddr>,
) -> Result<(MuxStream, AbortGuard), String> {
    let mut stream = lane
        .control
        .open()
        .await
        .map_err(|e| format!("connection failed: the proxy's client is unreachable ({e})"))?;
    let guard = lane.aborts.register(stream.id());
    let open = Message::StreamOpen(StreamOpen::Proxy {
        proxy: entry.key.name.clone(),
        peer,
        dest,
    });
    write_message(&mut stream, &open, CONTROL_MAX_FRAME)
        .await
        .map_err(|e| format!("connection failed: {e}"))?;
    // The owner's answer is short; a bound as small as a stream header's keeps a hostile
    // owner, dialled by its own users, from making the server hold a large partial frame
    // on each of its streams.
    let status = read_message(&mut stream, STREAM_HEADER_MAX);
    match tokio::time::timeout(STATUS_TIMEOUT, status).await {
        Ok(Ok(Some(Message::StreamStatus(StreamStatus::Ok)))) => Ok((stream, guard)),
        // The owner's words, escaped once here for every log line and visitor they reach.
        Ok(Ok(Some(Message::StreamStatus(StreamStatus::Error(reason))))) => {
            Err(PeerText(&reason).to_string())
        }
        Ok(Ok(Some(other))) => Err(format!(
            "connection failed: the proxy's client answered {}",
            other.name()
        )),
        Ok(Ok(None)) => Err("connection failed: the proxy's client closed the stream".into()),
        Ok(Err(e)) => Err(format!("connection failed: {e}")),
        Err(_) => Err(format!(
            "connection failed: no answer from the proxy's client within {}s",
            STATUS_TIMEOUT.as_secs()
        )),
    }
}
