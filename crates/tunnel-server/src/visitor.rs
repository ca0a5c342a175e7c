//! Streams a client opens toward the server: visitors reaching another client's proxy.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info, warn};
use tunnel_mux::{relay_streams, MuxStream};
use tunnel_proto::{Message, ProtoError, ProxySpec, StreamOpen, StreamStatus};
use tunnel_transport::{read_message, write_message, TransportError};

use crate::forward::{open_to_owner, owner_stream};
use crate::lane::Lane;
use crate::registry::{ProxyEntry, ProxyKey};
use crate::session::{SessionRecord, CONTROL_MAX_FRAME};
use crate::{ServerError, Shared};

/// A client that opens a stream must name its target promptly.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest header a client may open a stream with. A visitor's names a proxy, a port and a
/// secret; the bound keeps what a client can make the server hold per stream small.
pub(crate) const STREAM_HEADER_MAX: usize = 4096;

pub(crate) async fn serve_stream(
    shared: Arc<Shared>,
    visitor: Arc<SessionRecord>,
    lane: Arc<Lane>,
    mut stream: MuxStream,
) {
    let reading = visitor.begin_header(
        &shared.stream_headers,
        shared.cfg.max_stream_headers_per_client,
    );
    let reading = match reading {
        Ok(r) => r,
        Err(reason) => {
            shared
                .limit_metrics
                .headers_refused
                .fetch_add(1, Ordering::Relaxed);
            let subject = format!("headers {}", visitor.client_id);
            if let Some(more) = shared.limit_warnings.check(subject) {
                warn!("{reason}{more}");
            }
            return refuse(&mut stream, reason.to_string()).await;
        }
    };
    let header = tokio::time::timeout(HEADER_TIMEOUT, read_message(&mut stream, STREAM_HEADER_MAX));
    let header = header.await;
    drop(reading);
    let (proxy, port, secret) = match header {
        Ok(Ok(Some(Message::StreamOpen(StreamOpen::Visit {
            proxy,
            publish_port,
            secret,
        })))) => (proxy, publish_port, secret),
        Ok(Ok(Some(other))) => {
            let reason = format!("unexpected {} as a stream header", other.name());
            return refuse(&mut stream, reason).await;
        }
        Ok(Ok(None)) => return,
        // Too large or malformed: say so; the stream was never counted.
        Ok(Err(TransportError::Proto(ProtoError::FrameTooLarge { len, max }))) => {
            let reason = format!(
                "stream refused: a stream header of {len} bytes is over the limit of {max}"
            );
            return refuse(&mut stream, reason).await;
        }
        Ok(Err(e)) => {
            let reason = format!("stream refused: bad stream header ({e})");
            return refuse(&mut stream, reason).await;
        }
        Err(_) => {
            let reason = format!(
                "stream refused: no complete stream header within {}s",
                HEADER_TIMEOUT.as_secs()
            );
            return refuse(&mut stream, reason).await;
        }
    };
    if shared.shutdown.is_cancelled() {
        return refuse(
            &mut stream,
            "connection failed: the server is shutting down".into(),
        )
        .await;
    }
    let key = ProxyKey { name: proxy, port };
    let local = shared.registry.get(&key);
    if local.is_none() {
        let remote = shared
            .peer
            .as_ref()
            .and_then(|p| Some((p.clone(), p.remote_owner(&key.name, port)?)));
        if let Some((peer, at)) = remote {
            // The owner's id is known on its own server only: here a pattern that names an
            // owner cannot match (fail closed), one on the proxy name alone can.
            if let Some(scope) = shared.credentials.scope_of(&visitor.client_id) {
                if let Err(why) = scope.check_visit("", &key.name) {
                    return refuse(&mut stream, format!("access denied: {why}")).await;
                }
            }
            let task =
                crate::peer::forward_visit(shared, peer, visitor, lane, stream, at, port, secret);
            return task.await;
        }
    }
    let Some((entry, owner)) = local else {
        let proxy = key.name;
        // Keyed by the visiting client: the name is its choice, the proxy does not exist.
        let subject = format!("visit unknown {}", visitor.client_id);
        if let Some(more) = shared.limit_warnings.check(subject) {
            info!(proxy, port, "visitor refused: proxy not found{more}");
        }
        return refuse(&mut stream, "proxy not found".into()).await;
    };
    // The visitor's own scope first (clients_file allow_visit), then the owner's rules.
    if let Some(scope) = shared.credentials.scope_of(&visitor.client_id) {
        if let Err(why) = scope.check_visit(&owner.client_id, &entry.key.name) {
            let subject = format!("visit scope {}", visitor.client_id);
            if let Some(more) = shared.limit_warnings.check(subject) {
                info!(proxy = %entry.label(), "visitor refused: {why}{more}");
            }
            return refuse(&mut stream, format!("access denied: {why}")).await;
        }
    }
    if !visit_allowed(&shared, &entry, &visitor.client_id, &secret) {
        return refuse(&mut stream, "access denied".into()).await;
    }
    entry
        .counters
        .visitor_connections
        .fetch_add(1, Ordering::Relaxed);
    let in_id = stream.id();
    let in_guard = lane.aborts.register(in_id);
    // Both sessions carry this connection, so it counts against both clients' limits.
    let slots = visitor.begin_stream_on(lane).and_then(|a| {
        let b = owner_stream(&shared, &owner, &entry.key)?;
        Ok((a, b))
    });
    let (in_slot, out_slot) = match slots {
        Ok(s) => s,
        Err(reason) => {
            let subject = format!("visit refused {}", entry.key);
            if let Some(more) = shared.limit_warnings.check(subject) {
                info!(proxy = %entry.label(), "visitor refused: {reason}{more}");
            }
            return refuse(&mut stream, reason.to_string()).await;
        }
    };
    let (mut out, out_guard) =
        match open_to_owner(&entry, out_slot.lane(), Some(visitor.peer), None).await {
            Ok(s) => s,
            Err(reason) => {
                let subject = format!("visit failed {}", entry.key);
                if let Some(more) = shared.limit_warnings.check(subject) {
                    info!(proxy = %entry.label(), "visitor connection failed: {reason}{more}");
                }
                return refuse(&mut stream, reason.to_string()).await;
            }
        };
    let ok = Message::StreamStatus(StreamStatus::Ok);
    if write_message(&mut stream, &ok, CONTROL_MAX_FRAME)
        .await
        .is_err()
    {
        return;
    }
    let out_id = out.id();
    entry
        .counters
        .active_streams
        .fetch_add(1, Ordering::Relaxed);
    // Visitors share the proxy's bandwidth limits with its public users.
    let pipe = shared
        .pipe
        .clone()
        .with_rate_limits(entry.limits.read().rates());
    let end = relay_streams(
        &mut stream,
        &mut out,
        &pipe,
        in_guard.token(),
        out_guard.token(),
        Some(&entry.counters.bytes),
        // Either side's failure or abort ends both: tell both clients.
        || {
            in_slot.lane().send_abort(in_id);
            out_slot.lane().send_abort(out_id);
        },
    )
    .await;
    entry
        .counters
        .active_streams
        .fetch_sub(1, Ordering::Relaxed);
    debug!(proxy = %entry.label(), ?end, "visitor connection finished");
}

/// Whether visitor `client_id` with `secret` may reach `entry` (here, or through a peer
/// server); a refusal is logged, at most once a minute per proxy.
pub(crate) fn visit_allowed(
    shared: &Shared,
    entry: &ProxyEntry,
    client_id: &str,
    secret: &str,
) -> bool {
    let access = check_access(&entry.spec.read(), client_id, secret);
    if let Err(why) = access {
        let subject = format!("visit denied {}", entry.key);
        if let Some(more) = shared.limit_warnings.check(subject) {
            info!(proxy = %entry.label(), visitor = %tunnel_proto::PeerText(client_id), "visitor refused: access denied ({why}){more}");
        }
        return false;
    }
    true
}

/// Whether a visitor may reach a proxy: the proxy must opt in with a secret, an allow list or
/// both, and the visitor must satisfy every one it set.
fn check_access(spec: &ProxySpec, client_id: &str, secret: &str) -> Result<(), ServerError> {
    if spec.secret.is_none() && spec.allow_visitors.is_empty() {
        return Err(ServerError::NotVisitable);
    }
    if let Some(expected) = &spec.secret {
        if !bool::from(expected.as_bytes().ct_eq(secret.as_bytes())) {
            return Err(ServerError::WrongSecret);
        }
    }
    if !spec.allow_visitors.is_empty()
        && !spec
            .allow_visitors
            .iter()
            .any(|id| id == "*" || id == client_id)
    {
        return Err(ServerError::NotAnAllowedVisitor);
    }
    Ok(())
}

pub(crate) async fn refuse(stream: &mut MuxStream, reason: String) {
    let msg = Message::StreamStatus(StreamStatus::Error(reason));
    let _ = write_message(stream, &msg, CONTROL_MAX_FRAME).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_proto::ProxyKind;

    fn spec(secret: Option<&str>, allow: &[&str]) -> ProxySpec {
        ProxySpec {
            secret: secret.map(Into::into),
            allow_visitors: allow.iter().map(|s| s.to_string()).collect(),
            ..ProxySpec::new("db", ProxyKind::Tcp)
        }
    }

    #[test]
    fn access_rules() {
        assert!(check_access(&spec(None, &[]), "c", "").is_err());
        assert!(check_access(&spec(Some("s"), &[]), "c", "s").is_ok());
        assert!(check_access(&spec(Some("s"), &[]), "c", "x").is_err());
        assert!(check_access(&spec(Some("s"), &[]), "c", "").is_err());
        assert!(check_access(&spec(None, &["c"]), "c", "").is_ok());
        assert!(check_access(&spec(None, &["*"]), "anyone", "").is_ok());
        assert!(check_access(&spec(None, &["b"]), "c", "").is_err());
        assert!(check_access(&spec(Some("s"), &["c"]), "c", "s").is_ok());
        assert!(check_access(&spec(Some("s"), &["c"]), "d", "s").is_err());
        assert!(check_access(&spec(Some("s"), &["c"]), "c", "x").is_err());
    }
}
