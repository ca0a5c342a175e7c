//! The login path in cluster mode: one registry registration per `Register`, before any
//! local claim, so that a name, port, domain or client id is granted cluster-wide by the
//! store alone (design rule 1).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{debug, info, warn, Instrument};
use tunnel_cluster::decide::{ProxyClaim, Refusal, Verdict};
use tunnel_cluster::registrar::Registered;
use tunnel_proto::{RejectCode, Rejected};

use super::{Held, Node};
use crate::session::SessionRecord;
use crate::Shared;

/// What a client reads when the registry cannot be reached: a retryable refusal (the
/// client reconnects with backoff, maybe to another server).
pub(crate) const UNREACHABLE: &str = "the cluster registry is unreachable; retrying";

/// Registers `session` with `claims` (each tagged with its index in the request). The
/// refusals by index, or the whole login refused.
pub(crate) async fn register(
    shared: &Arc<Shared>,
    node: &Arc<Node>,
    session: &Arc<SessionRecord>,
    claims: Vec<(usize, ProxyClaim)>,
) -> Result<HashMap<usize, Refusal>, Rejected> {
    let (index, claims): (Vec<usize>, Vec<ProxyClaim>) = claims.into_iter().unzip();
    let outcome = node
        .register(&session.client_id, session.instance, &claims)
        .await;
    let reg = match outcome {
        Ok(Registered::Done(reg)) => reg,
        Ok(Registered::IdInUse { server_id }) => {
            info!("the client id is held by another instance on server {server_id}");
            let e = tunnel_proto::HandshakeError::IdInUse {
                id: session.client_id.clone(),
            };
            return Err(Rejected::new(RejectCode::IdInUse, e.wire_reason()));
        }
        Err(e) => {
            warn!("registration refused for now: the cluster registry failed: {e}");
            return Err(Rejected::new(RejectCode::Internal, UNREACHABLE));
        }
    };
    let refused = index
        .into_iter()
        .zip(reg.proxies)
        .filter_map(|(i, v)| match v {
            Verdict::Refused(r) => Some((i, r)),
            _ => None,
        })
        .collect();
    let new = Held {
        epoch: reg.epoch,
        keys: reg.held,
    };
    let old = session.cluster.lock().replace(new.clone());
    // Keys the previous registration of this session wrote and this one did not (a proxy
    // dropped from the client's config): ours no longer.
    if let Some(old) = old {
        let now: HashSet<&String> = new.keys.iter().map(|(k, _)| k).collect();
        let stale: Vec<(String, i64)> = old
            .keys
            .into_iter()
            .filter(|(k, _)| !now.contains(k))
            .collect();
        spawn_release(shared, node, stale);
    }
    Ok(refused)
}

/// Releases what an ended session held, in the background (a slow store must not hold up
/// the session's end), each key only if it still carries this session's revision.
pub(crate) fn release_session(shared: &Arc<Shared>, session: &SessionRecord) {
    let Some(node) = &shared.cluster else {
        return;
    };
    let Some(held) = session.cluster.lock().take() else {
        return;
    };
    if shared.shutdown.is_cancelled() {
        // The stop revokes the lease at its end, which deletes every key at once: one
        // request instead of one per session.
        return;
    }
    spawn_release(shared, node, held.keys);
}

fn spawn_release(shared: &Shared, node: &Arc<Node>, keys: Vec<(String, i64)>) {
    if keys.is_empty() {
        return;
    }
    let node = node.clone();
    let task = async move {
        match node.release(&keys).await {
            Ok(n) => debug!("cluster: released {n} of {} keys", keys.len()),
            // The keys stay until the lease ends; nothing else is wrong.
            Err(e) => warn!(
                "cluster: could not release {} registry keys ({e}); they go with this \
                 server's lease",
                keys.len()
            ),
        }
    };
    shared.tasks.spawn(task.in_current_span());
}

/// The registry keys a proxy needs: its name and port, and every host it serves on the
/// virtual host (normalised as routed; the subdomain under the server's `subdomain_host`).
pub(crate) fn claim_of(cfg: &crate::ServerConfig, spec: &tunnel_proto::ProxySpec) -> ProxyClaim {
    let mut domains = crate::registry::proxy_domains(spec);
    let sub = spec.http.as_ref().and_then(|h| h.subdomain.as_ref());
    if let (Some(sub), Some(base)) = (sub, &cfg.subdomain_host) {
        if let Ok(host) = crate::routes::normalize_domain(&format!("{sub}.{base}")) {
            domains.push(host);
        }
    }
    if spec.kind == tunnel_proto::ProxyKind::Https {
        // Names routed by SNI are a namespace of their own, cluster-wide too.
        domains = domains.iter().map(|d| crate::routes::sni_host(d)).collect();
    }
    domains.sort();
    domains.dedup();
    ProxyClaim {
        name: spec.name.clone(),
        publish_port: spec.publish_port.unwrap_or(0),
        domains,
        udp: spec.kind == tunnel_proto::ProxyKind::Udp,
    }
}
