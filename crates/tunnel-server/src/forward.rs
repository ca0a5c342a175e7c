//! Opening a stream to a proxy's owner: the path shared by public and visitor connections.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tunnel_mux::{AbortGuard, EarlyStream, MuxError, MuxStream};
use tunnel_proto::{Message, StreamOpen};
use tunnel_transport::write_message;

use crate::lane::Lane;
use crate::registry::{ProxyEntry, ProxyKey};
use crate::session::{SessionRecord, StreamSlot, CONTROL_MAX_FRAME};
use crate::visitor::STREAM_HEADER_MAX;
use crate::{ServerError, Shared};

/// Take a stream slot of `owner` for its proxy `key`, within its `max_streams_per_client` and
/// the proxy's fair share; a refusal is counted in the limit metrics (the caller says why).
pub(crate) fn owner_stream(
    shared: &Shared,
    owner: &Arc<SessionRecord>,
    key: &ProxyKey,
) -> Result<StreamSlot, ServerError> {
    let proxies = || shared.registry.proxies_of(owner.id);
    owner.begin_stream_for(key, proxies).inspect_err(|_| {
        shared
            .limit_metrics
            .streams_refused
            .fetch_add(1, Ordering::Relaxed);
    })
}

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
    match owner_stream(shared, &owner, &entry.key) {
        Ok(slot) => Some(slot),
        Err(reason) => {
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
/// On failure, the error's text is fit to send back to a visitor.
pub(crate) async fn open_to_owner(
    entry: &ProxyEntry,
    lane: &Lane,
    peer: Option<SocketAddr>,
    dest: Option<SocketAddr>,
) -> Result<(MuxStream, AbortGuard), ServerError> {
    let (mut stream, guard) = open_early(entry, lane, peer, dest).await?;
    match stream.status().await {
        Ok(()) => Ok((stream.into_inner(), guard)),
        Err(e) => Err(reason_of(&e)),
    }
}

/// [`open_to_owner`] without the wait: the stream is returned as soon as its open is
/// written, for a byte-stream proxy (tcp, https) to relay the user's first bytes at once,
/// a tunnel round trip sooner. Its first read waits for the status (at most
/// `STATUS_TIMEOUT`); if the owner refuses, reads and writes fail and
/// [`EarlyStream::failure`] says why ([`reason_of`]).
pub(crate) async fn open_early(
    entry: &ProxyEntry,
    lane: &Lane,
    peer: Option<SocketAddr>,
    dest: Option<SocketAddr>,
) -> Result<(EarlyStream<MuxStream>, AbortGuard), ServerError> {
    let mut stream = lane
        .control
        .open()
        .await
        .map_err(ServerError::OwnerUnreachable)?;
    let guard = lane.aborts.register(stream.id());
    let open = Message::StreamOpen(StreamOpen::Proxy {
        proxy: entry.key.name.clone(),
        peer,
        dest,
    });
    write_message(&mut stream, &open, CONTROL_MAX_FRAME)
        .await
        .map_err(ServerError::OwnerWrite)?;
    // The owner's answer is short; a bound as small as a stream header's keeps a hostile
    // owner, dialled by its own users, from making the server hold a large partial frame
    // on each of its streams.
    let stream = EarlyStream::new(stream, STREAM_HEADER_MAX, STATUS_TIMEOUT);
    Ok((stream, guard))
}

/// Why the owner did not take a stream; its text is what logs and visitors get.
pub(crate) fn reason_of(e: &MuxError) -> ServerError {
    match e {
        // The owner's words, escaped once (by the error's Display) for every log line and
        // visitor they reach.
        MuxError::Refused { .. } => ServerError::OwnerRefused(e.clone()),
        MuxError::NoStatus { after } => ServerError::OwnerSilent { after: *after },
        _ => ServerError::OwnerStream(e.clone()),
    }
}
