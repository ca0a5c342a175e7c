//! The node's background work that needs the server: closing local sessions another server
//! took over (design, "Replacement"), and registering everything again after a lost lease
//! (split-brain rule 6: the store's state wins, local losers close).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn, Instrument};
use tunnel_cluster::cache::Changed;
use tunnel_cluster::registrar::{LeaseState, Registered};

use super::login::claim_of;
use super::{Held, Node};
use crate::session::SessionRecord;
use crate::Shared;

/// The first wait after a failed attempt at a new lease; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the node's tasks on the server's tracker; they end with the server.
pub(crate) fn spawn(shared: &Arc<Shared>) {
    let Some(node) = &shared.cluster else {
        return;
    };
    let span = tracing::info_span!("cluster", server = %node.server_id());
    let takeovers = watch_takeovers(shared.clone(), node.clone());
    shared.tasks.spawn(takeovers.instrument(span.clone()));
    let lease = keep_registered(shared.clone(), node.clone());
    shared.tasks.spawn(lease.instrument(span.clone()));
    let fence = super::fence::run(shared.clone(), node.clone());
    shared.tasks.spawn(fence.instrument(span));
}

/// After every change of the registry: a local session whose client the registry now shows
/// on another server, at a newer epoch, was replaced there; it is closed. Only the clients
/// whose key changed are looked at (the cache's feed); all local sessions only when the feed
/// cannot tell (it overflowed, or the cache listed again).
async fn watch_takeovers(shared: Arc<Shared>, node: Arc<Node>) {
    let mut seen = node.cache().revision();
    loop {
        let next = node.cache().revision() + 1;
        tokio::select! {
            () = shared.hard_stop.cancelled() => return,
            reached = node.cache().caught_up(next) => if !reached { return },
        }
        // Read before asking: every change up to `now` is in the answer, so the next
        // question may start there.
        let now = node.cache().revision();
        match node.cache().clients_changed_since(seen) {
            Changed::Everything => {
                for (session, _) in shared.registry.sessions() {
                    close_if_replaced(&shared, node.as_ref(), &session);
                }
            }
            Changed::Clients(ids) => {
                for id in ids {
                    if let Some(session) = shared.registry.session(&id) {
                        close_if_replaced(&shared, node.as_ref(), &session);
                    }
                }
            }
        }
        seen = now;
    }
}

fn close_if_replaced(shared: &Shared, node: &Node, session: &Arc<SessionRecord>) {
    let Some(epoch) = session.cluster.lock().as_ref().map(|h| h.epoch) else {
        return;
    };
    let Some(rec) = node.cache().client(&session.client_id) else {
        return;
    };
    if rec.server_id != node.server_id() && rec.epoch > epoch && !session.cancel.is_cancelled() {
        let draining = shared.draining.load(std::sync::atomic::Ordering::Acquire);
        info!(
            session = session.id,
            client = %session.client_id,
            "replaced by a newer session of the same client on server {}; {}",
            rec.server_id,
            if draining {
                "closing this one once the client says the new one serves"
            } else {
                "closing this one"
            }
        );
        // Ours no longer: the new session rewrote every key, so there is nothing to release.
        session.cluster.lock().take();
        // Draining, the client moved because we asked: its old session stays whole until
        // the client closes it, once its new one serves (make-before-break), so that
        // nothing routed here in the meantime fails. Otherwise it retires now.
        if !draining {
            crate::session::retire(shared, session);
        }
    }
}

/// Waits for the lease to be lost; then takes a new one and registers every local session
/// again.
async fn keep_registered(shared: Arc<Shared>, node: Arc<Node>) {
    let mut states = node.lease_states();
    loop {
        tokio::select! {
            () = shared.hard_stop.cancelled() => return,
            lost = states.wait_for(|s| *s == LeaseState::Lost) => if lost.is_err() { return },
        }
        if shared.shutdown.is_cancelled() {
            return;
        }
        warn!(
            "cluster: the lease of server {} is lost and every registry key on it is gone; \
             taking a new lease and registering every session again",
            node.server_id()
        );
        let mut backoff = FIRST_BACKOFF;
        while let Err(e) = node.renew_lease().await {
            warn!("cluster: cannot take a new lease: {e}; retrying in {backoff:?}");
            tokio::select! {
                () = shared.hard_stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        reregister_all(&shared, &node).await;
    }
}

/// Registers every live session again on the new lease. What another client took meanwhile
/// stays theirs: the local proxy is closed; a client id taken by another instance closes
/// the session.
pub(crate) async fn reregister_all(shared: &Shared, node: &Node) {
    for (session, entries) in shared.registry.sessions() {
        if session.cancel.is_cancelled() {
            continue;
        }
        let claims: Vec<_> = entries
            .iter()
            .map(|e| claim_of(&shared.cfg, &e.spec.read()))
            .collect();
        match node
            .register(&session.client_id, session.instance, &claims)
            .await
        {
            Ok(Registered::IdInUse { server_id }) => {
                warn!(
                    session = session.id,
                    client = %session.client_id,
                    "another instance of the client took its id on server {server_id} while \
                     this server's lease was lost; closing this session"
                );
                session.cluster.lock().take();
                session.cancel.cancel();
            }
            Ok(Registered::Done(reg)) => {
                let mut keep = HashSet::new();
                for (entry, verdict) in entries.iter().zip(&reg.proxies) {
                    if verdict.granted() {
                        keep.insert(entry.key.clone());
                    } else {
                        warn!(
                            client = %session.client_id,
                            proxy = %entry.label(),
                            "another client took the proxy while this server's lease was \
                             lost; closing it here ({verdict:?})"
                        );
                    }
                }
                shared.registry.release_except(session.id, &keep);
                *session.cluster.lock() = Some(Held {
                    epoch: reg.epoch,
                    keys: reg.held,
                });
            }
            Err(e) => warn!(
                client = %session.client_id,
                "cluster: cannot register the session again: {e}; it keeps serving from \
                 this server"
            ),
        }
    }
}
