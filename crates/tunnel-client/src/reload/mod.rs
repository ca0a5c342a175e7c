//! Live reconfiguration: apply a new config file to a running client without reconnecting.
//!
//! [`plan`](plan::plan) compares the running config with the new one and decides everything
//! (what to add, remove and change, or which settings need a restart); [`apply`] carries it
//! out, binding every new listener before it stops anything, so that a reload that fails
//! leaves the running config exactly as it was.

mod apply;
mod plan;
#[cfg(test)]
mod tests;

use tracing::{error, info};
use tunnel_proto::{ItemKind, PeerText, RegisterReply};

pub(crate) use apply::{announce, apply};

/// What a reload changed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadSummary {
    /// Proxies added.
    pub proxies_added: Vec<String>,
    /// Proxies removed.
    pub proxies_removed: Vec<String>,
    /// Proxies whose settings changed, those only this client uses included.
    pub proxies_changed: Vec<String>,
    /// Visitors added.
    pub visitors_added: Vec<String>,
    /// Visitors removed.
    pub visitors_removed: Vec<String>,
    /// Visitors whose settings changed (restarted).
    pub visitors_changed: Vec<String>,
}

impl ReloadSummary {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.proxies_added.is_empty()
            && self.proxies_removed.is_empty()
            && self.proxies_changed.is_empty()
            && self.visitors_added.is_empty()
            && self.visitors_removed.is_empty()
            && self.visitors_changed.is_empty()
    }

    fn of(plan: &plan::Plan) -> Self {
        let changed = |c: &plan::Changes| c.changed.iter().map(|c| c.name.clone()).collect();
        ReloadSummary {
            proxies_added: plan.proxies.added.clone(),
            proxies_removed: plan.proxies.removed.clone(),
            proxies_changed: changed(&plan.proxies),
            visitors_added: plan.visitors.added.clone(),
            visitors_removed: plan.visitors.removed.clone(),
            visitors_changed: changed(&plan.visitors),
        }
    }
}

/// Reload state of one client.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Reloads run one at a time: each plans against what the previous one left.
    lock: tokio::sync::Mutex<()>,
    /// The items a reload told the server about, whose verdicts are news; `None` when no
    /// reload is waiting for its reply.
    announced: parking_lot::Mutex<Option<Vec<(ItemKind, String)>>>,
}

/// Log the verdicts of a registration reply that came after the first one (a reload's): an
/// acceptance only for what the reload added or changed, a refusal always.
pub(crate) fn report(state: &State, reply: &RegisterReply) {
    let announced = state.announced.lock().take();
    for item in &reply.results {
        let news = announced
            .as_ref()
            .is_none_or(|a| a.iter().any(|(k, n)| *k == item.kind && *n == item.name));
        match &item.error {
            None if news => info!(kind = ?item.kind, name = %PeerText(&item.name), "registered"),
            None => {}
            Some(e) => {
                let why = e.to_string();
                error!(
                    kind = ?item.kind,
                    name = %PeerText(&item.name),
                    "rejected by the server: {}",
                    PeerText(&why)
                );
            }
        }
    }
}
