//! A server cut off from the registry while its peers still reach it (design: split brain).
//!
//! Its lease may have expired: another server may already be taking its clients' names, and
//! this one can neither register anyone nor see the takeovers. So once its lease is no
//! longer confirmed it asks its peers over the peer link whether *they* reach the registry.
//! If one does, this server is the one cut off: `/healthz` answers 503 and its clients are
//! asked to move (make-before-break, as in a drain), to servers that can register them. If
//! none does, the registry itself is down: every server keeps its tunnels up (the registry
//! being down must not take the data path down) and only new logins wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tracing::{info, warn};
use tunnel_cluster::registrar::LeaseState;
use tunnel_proto::peer::{Forward, ForwardKind, Forwarded};

use super::Node;
use crate::peer::Located;
use crate::Shared;

/// How long one peer gets to answer a probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What this server answers a peer's probe: `Ok` only if it reaches the registry *now*: its
/// lease is alive, its last call was answered and none failed within a lease's time. The
/// lease state alone lags: two servers that lost etcd together see their leases unconfirmed
/// up to a renewal apart, and the first must not take the other's stale "alive" for an
/// answer (it would send its clients away from a registry outage that hits everyone).
pub(crate) fn probe_answer(shared: &Shared) -> Forwarded {
    let Some(node) = shared.cluster.as_ref() else {
        return Forwarded::Denied("this server has no registry".into());
    };
    if node.lease_state() == LeaseState::Alive && answers_me(node) {
        Forwarded::Ok
    } else {
        Forwarded::Denied("this server does not reach the registry either".into())
    }
}

/// Whether the registry answers this server now: its last call was answered and none failed
/// within a lease's time.
fn answers_me(node: &Node) -> bool {
    let health = node.store_health().snapshot();
    let failed_lately = health
        .last_error
        .as_ref()
        .is_some_and(|(_, ago)| *ago < node.lease_ttl());
    health.answered && !failed_lately
}

/// Watch the lease; while it is not confirmed, probe the peers every `lease_ttl`.
pub(crate) async fn run(shared: Arc<Shared>, node: Arc<Node>) {
    let Some(peer) = shared.peer.clone() else {
        return;
    };
    let mut states = node.lease_states();
    let every = node.lease_ttl().max(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shared.hard_stop.cancelled() => return,
            s = states.wait_for(|s| *s != LeaseState::Alive) => if s.is_err() { return },
        }
        let mut said_alone = false;
        while node.lease_state() != LeaseState::Alive && !shared.shutdown.is_cancelled() {
            // A lease lost while the registry answers (revoked, or expired across a pause)
            // cuts nothing off: the registrar takes a new one at once. Sending clients away
            // then would only make them reconnect, and their ports would blink.
            if !answers_me(&node) {
                let reach = reaching_peers(&peer, &node).await;
                if node.lease_state() == LeaseState::Alive {
                    // It came back while the peers were asked.
                    break;
                }
                act_on(&shared, &reach, &mut said_alone);
            }
            tokio::select! {
                () = shared.hard_stop.cancelled() => return,
                _ = states.wait_for(|s| *s == LeaseState::Alive) => {}
                () = tokio::time::sleep(every) => {}
            }
        }
        if shared.isolated.swap(false, Ordering::AcqRel) {
            info!("cluster: the registry is reachable again; taking clients again");
        }
    }
}

/// Cut off from the registry: with peers that reach it, this server is the one cut off and
/// sends its clients to them; with none, the registry is down for everyone and every tunnel
/// stays.
fn act_on(shared: &Shared, reach: &[String], said_alone: &mut bool) {
    if reach.is_empty() {
        shared.isolated.store(false, Ordering::Release);
        if !*said_alone {
            *said_alone = true;
            info!(
                "cluster: no other server reaches the registry either: every tunnel stays up; \
                 new logins wait for the registry"
            );
        }
    } else if !shared.isolated.swap(true, Ordering::AcqRel) {
        let n = crate::drain::ask_to_move(shared, crate::drain::spread(shared.cfg.shutdown_grace));
        warn!(
            servers = %reach.join(", "),
            "cluster: this server does not reach the registry but other servers do: \
             /healthz answers 503 and {n} clients are asked to move to them"
        );
    } else {
        // Clients that came back (through a balancer) are sent on again.
        crate::drain::ask_to_move(shared, crate::drain::spread(shared.cfg.shutdown_grace));
    }
}

/// The peers (by id) that say they reach the registry, from the servers this one last saw.
async fn reaching_peers(peer: &crate::peer::Peer, node: &Node) -> Vec<String> {
    let me = node.server_id().to_owned();
    let probes = node
        .cache()
        .servers()
        .into_iter()
        .filter(|(id, r)| *id != me && !r.draining)
        .map(|(id, r)| {
            let at = Located {
                name: String::new(),
                publish_port: 0,
                server_id: id.clone(),
                peer_addr: r.peer_addr,
                epoch: 0,
                local: false,
                udp: false,
            };
            async move {
                let fwd = Forward {
                    kind: ForwardKind::Probe,
                    name: String::new(),
                    publish_port: 0,
                    epoch: 0,
                    src_addr: None,
                    dest_addr: None,
                    visitor_client_id: String::new(),
                    secret: String::new(),
                };
                let asked =
                    tokio::time::timeout(PROBE_TIMEOUT, peer.pool.forward_once(peer, &at, &fwd));
                matches!(asked.await, Ok(Ok((_, Forwarded::Ok)))).then_some(id)
            }
        });
    join_all(probes).await.into_iter().flatten().collect()
}
