//! Live reconfiguration: apply a new config file to a running client without reconnecting.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};
use tunnel_proto::Message;

use crate::config::{ClientConfig, VisitorConfig};
use crate::error::{ClientError, ConfigProblem};
use crate::{visitor, Live, Shared};

/// What a reload changed, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadSummary {
    /// Proxies added.
    pub proxies_added: Vec<String>,
    /// Proxies removed.
    pub proxies_removed: Vec<String>,
    /// Proxies whose settings changed.
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
}

pub(crate) async fn apply(
    shared: &Arc<Shared>,
    new: ClientConfig,
) -> Result<ReloadSummary, ClientError> {
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(ClientError::Config(problems));
    }
    refuse_connection_changes(&shared.cfg, &new)?;

    // Bind new and changed visitors first: a port in use fails the reload before anything
    // else has changed.
    let running: HashMap<String, VisitorConfig> = shared
        .visitors
        .lock()
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    let mut summary = ReloadSummary::default();
    let mut to_start = Vec::new();
    for v in &new.visitors {
        match running.get(&v.name) {
            None => {
                summary.visitors_added.push(v.name.clone());
                to_start.push(v.clone());
            }
            Some(old) if visitor_differs(old, v) => {
                summary.visitors_changed.push(v.name.clone());
                to_start.push(v.clone());
            }
            Some(_) => {}
        }
    }
    for name in running.keys() {
        if !new.visitors.iter().any(|v| &v.name == name) {
            summary.visitors_removed.push(name.clone());
        }
    }
    // A changed visitor that keeps its bind address must let go of the port first.
    for name in summary
        .visitors_changed
        .iter()
        .chain(&summary.visitors_removed)
    {
        if let Some((_, stop)) = shared.visitors.lock().remove(name) {
            stop.cancel();
        }
    }
    let listeners = visitor::bind_all(&to_start).await?;

    {
        let live = shared.live.read();
        for p in &new.proxies {
            match live.proxies.get(&p.name) {
                None => summary.proxies_added.push(p.name.clone()),
                Some(old) if old.spec() != p.spec() || old.local_addr != p.local_addr => {
                    summary.proxies_changed.push(p.name.clone())
                }
                Some(_) => {}
            }
        }
        for name in live.proxies.keys() {
            if !new.proxies.iter().any(|p| &p.name == name) {
                summary.proxies_removed.push(name.clone());
            }
        }
    }
    *shared.live.write() = Live::from_config(&new);
    for (v, l) in listeners {
        shared.spawn_visitor(v, l);
    }

    // Tell the server over the live session; if there is none, the next connection
    // registers the new set anyway.
    shared.reload_pending.store(true, Ordering::Release);
    let current = shared.current.read().clone();
    if let Some(lanes) = current {
        let ctx = lanes.first();
        if shared.reload_pending.swap(false, Ordering::AcqRel) {
            let _ = ctx.send(Message::Register(shared.register_request())).await;
        }
    }
    if summary.is_empty() {
        info!("config reloaded: nothing changed");
    } else {
        info!(?summary, "config reloaded");
    }
    Ok(summary)
}

fn visitor_differs(a: &VisitorConfig, b: &VisitorConfig) -> bool {
    a.proxy != b.proxy
        || a.publish_port != b.publish_port
        || a.bind != b.bind
        || a.secret != b.secret
}

/// Settings of the connection itself cannot change under a live session.
fn refuse_connection_changes(old: &ClientConfig, new: &ClientConfig) -> Result<(), ClientError> {
    let mut problems = Vec::new();
    let mut check = |field: &str, same: bool| {
        if !same {
            problems.push(ConfigProblem::new(
                field,
                "cannot change while the client runs: restart the client to apply it",
            ));
        }
    };
    check("server_addr", old.server_addr == new.server_addr);
    check("server_name", old.server_name == new.server_name);
    check(
        "transport",
        old.transport == new.transport && old.ws_path == new.ws_path,
    );
    check(
        "auth_key",
        old.auth_key == new.auth_key && old.auth_key_file == new.auth_key_file,
    );
    check(
        "ca_cert",
        old.ca_cert == new.ca_cert
            && old.server_fingerprint == new.server_fingerprint
            && old.insecure_skip_verify == new.insecure_skip_verify,
    );
    check("id", old.id == new.id);
    check("connections", old.connections == new.connections);
    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            warn!("reload refused: {p}");
        }
        Err(ClientError::Config(problems))
    }
}
