//! Reading the clients file again while clients are connected: a removed client is cut off
//! at once, a narrowed scope withdraws what it no longer allows, and nothing else is
//! touched. A file with problems changes nothing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn, Instrument};
use tunnel_proto::{FieldError, ItemKind, ItemResult, Message, ProxySpec, RegisterReply};

use super::audit::{self, Event};
use super::{file, Clients};
use crate::registry::{ProxyEntry, ProxyKey};
use crate::session::SessionRecord;
use crate::{ConfigProblem, ServerError, Shared};

/// How long a revoked client gets to read why before its connection closes. Its ports are
/// closed before that, at once.
const REVOKE_LINGER: Duration = Duration::from_millis(300);

/// What a reload of the clients file changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientsReload {
    /// Clients the file lists now.
    pub clients: usize,
    /// Ids whose live session was closed: removed from the file, given all-new keys, or
    /// listed now after logging in with the shared key.
    pub revoked: Vec<String>,
    /// Ids whose scope changed.
    pub rescoped: Vec<String>,
    /// Proxies withdrawn from connected clients by a narrower scope, as `id/proxy`.
    pub withdrawn: Vec<String>,
}

/// Read the clients file again and apply it to the live sessions.
pub(crate) fn reload(shared: &Arc<Shared>) -> Result<ClientsReload, ServerError> {
    let store = &shared.credentials;
    let Some(path) = &store.path else {
        return Err(ServerError::Config(vec![ConfigProblem::new(
            "clients_file",
            "this server has no clients_file to reload: set clients_file in its config and \
             restart it",
        )]));
    };
    let _one_at_a_time = store.reloading.lock();
    let new = file::load(path, store.shared_key().as_deref())?;
    Ok(apply(shared, new))
}

/// Put `new`, read from the clients file, in force and apply it to the live sessions. The
/// caller holds [`super::Store::reload_lock`].
pub(crate) fn apply(shared: &Arc<Shared>, new: Clients) -> ClientsReload {
    let store = &shared.credentials;
    let new = Arc::new(new);
    let old = std::mem::replace(&mut *store.table.write(), new.clone());
    shared
        .access
        .follow_scopes(|id| new.get(id).and_then(|c| c.scope.bandwidth_limit));
    let mut report = ClientsReload {
        clients: new.len(),
        ..ClientsReload::default()
    };
    audit_changes(&old, &new, &mut report);
    for (session, entries) in shared.registry.sessions() {
        let id = session.client_id.as_str();
        let why = match (old.get(id), new.get(id)) {
            (Some(_), None) => Some(format!(
                "client id {id:?} was removed from the server's clients_file: access revoked"
            )),
            (None, Some(_)) => Some(format!(
                "client id {id:?} now has its own key in the server's clients_file: the \
                 session made with the shared auth_key ends; log in with the client's own key"
            )),
            // Keys replaced (none of the old ones left), or a certificate-only entry given
            // keys or the other way round; an entry without keys before and after is the
            // same certificate client.
            (Some(o), Some(n))
                if o.keys.is_empty() != n.keys.is_empty()
                    || (!o.keys.is_empty() && !o.keys.iter().any(|k| n.keys.contains(k))) =>
            {
                Some(format!(
                    "the key of client id {id:?} was replaced in the server's clients_file: log \
                 in with the new key"
                ))
            }
            (Some(_), Some(n)) if shared.credentials.logged_in_with_removed_key(id, &n.keys) => {
                Some(format!(
                    "the key client id {id:?} logged in with was removed from the server's \
                     clients_file: log in with its other key"
                ))
            }
            (Some(o), Some(n)) if o.scope != n.scope => {
                let withdrawn =
                    withdraw(shared, &session, &entries, |spec| n.scope.check_proxy(spec));
                report
                    .withdrawn
                    .extend(withdrawn.into_iter().map(|p| format!("{id}/{p}")));
                None
            }
            _ => None,
        };
        if let Some(why) = why {
            revoke(shared, &session, &entries, &why);
            report.revoked.push(id.to_owned());
        }
    }
    info!(
        clients = report.clients,
        revoked = report.revoked.len(),
        rescoped = report.rescoped.len(),
        withdrawn = report.withdrawn.len(),
        "clients_file {} reloaded",
        store
            .path
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display()
    );
    report
}

/// One audit line per client whose entry went or whose scope changed, connected or not.
fn audit_changes(old: &Clients, new: &Clients, report: &mut ClientsReload) {
    let mut ids: Vec<&String> = old.by_id.keys().chain(new.by_id.keys()).collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        match (old.get(id), new.get(id)) {
            (Some(_), None) => {
                let why = "removed from the clients_file";
                audit::record(Event::Revocation, Some(id), None, why, false);
            }
            (Some(o), Some(n)) if o.scope != n.scope => {
                report.rescoped.push(id.clone());
                let why = "scope changed in the clients_file";
                audit::record(Event::ScopeChange, Some(id), None, why, false);
            }
            _ => {}
        }
    }
}

/// Close `session`'s ports now, tell it why, and end it.
pub(crate) fn revoke(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    entries: &[Arc<ProxyEntry>],
    why: &str,
) {
    shared.credentials.revoking.lock().insert(session.id);
    for proxy in shared.registry.release_except(session.id, &HashSet::new()) {
        info!(client = %session.client_id, %proxy, "proxy released: {why}");
    }
    audit::record(
        Event::Revocation,
        Some(&session.client_id),
        Some(session.peer.ip()),
        why,
        false,
    );
    let results = entries
        .iter()
        .map(|e| (ItemKind::Proxy, e.spec.read().name.clone()))
        .chain(
            session
                .visitors
                .read()
                .iter()
                .map(|v| (ItemKind::Visitor, v.name.clone())),
        )
        .map(|(kind, name)| ItemResult {
            kind,
            name,
            error: Some(FieldError {
                field: "client_id".into(),
                message: why.to_owned(),
            }),
            port: None,
        })
        .collect();
    let session = session.clone();
    let tasks = shared.tasks.clone();
    let shared = shared.clone();
    let task = async move {
        // The client logs every refused item of a reply: that is how it hears the reason.
        let lane = session.lanes.first().clone();
        let told = lane.send(Message::RegisterReply(RegisterReply { results }));
        let _ = tokio::time::timeout(REVOKE_LINGER, told).await;
        tokio::select! {
            () = tokio::time::sleep(REVOKE_LINGER) => {}
            () = session.cancel.cancelled() => {}
        }
        session.cancel.cancel();
        shared.credentials.revoking.lock().remove(&session.id);
    };
    tasks.spawn(task.in_current_span());
}

/// Withdraw what `session` holds that `check` no longer allows (a narrower scope, or
/// narrower server rules), telling the client each item and why. Returns the names
/// withdrawn.
pub(crate) fn withdraw(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    entries: &[Arc<ProxyEntry>],
    check: impl Fn(&ProxySpec) -> Result<(), FieldError>,
) -> Vec<String> {
    let mut keep: HashSet<ProxyKey> = HashSet::new();
    let mut results = Vec::new();
    let mut withdrawn = Vec::new();
    for entry in entries {
        let spec = entry.spec.read().clone();
        let error = check(&spec).err();
        match &error {
            None => {
                keep.insert(entry.key.clone());
            }
            Some(e) => {
                warn!(client = %session.client_id, proxy = %entry.label(), "proxy withdrawn: {e}");
                audit::record(
                    Event::ScopeChange,
                    Some(&session.client_id),
                    Some(session.peer.ip()),
                    &format!("proxy {} withdrawn: {e}", spec.name),
                    false,
                );
                withdrawn.push(spec.name.clone());
            }
        }
        results.push(ItemResult {
            kind: ItemKind::Proxy,
            // An automatic port stays known to the client through this reply too.
            port: spec.publish_ports.map(|_| entry.key.port),
            name: spec.name,
            error,
        });
    }
    if withdrawn.is_empty() {
        return withdrawn;
    }
    shared.registry.release_except(session.id, &keep);
    results.extend(session.visitors.read().iter().map(|v| ItemResult {
        kind: ItemKind::Visitor,
        name: v.name.clone(),
        error: None,
        port: None,
    }));
    let lane = session.lanes.first().clone();
    let task = async move {
        let told = lane.send(Message::RegisterReply(RegisterReply { results }));
        let _ = tokio::time::timeout(REVOKE_LINGER, told).await;
    };
    shared.tasks.spawn(task.in_current_span());
    withdrawn
}
