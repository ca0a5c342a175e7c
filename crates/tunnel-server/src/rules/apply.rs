//! Applying a new server config to a running server: the rules and the shared key swap at
//! once, the clients file is read again, and what the new rules no longer allow is taken
//! back from the clients that hold it. Nothing else is touched.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tracing::{info, warn};
use tunnel_proto::{FieldError, ProxySpec};

use super::{restart, Rules};
use crate::credentials::{reload as clients, Clients};
use crate::registry::ProxyEntry;
use crate::session::SessionRecord;
use crate::{ClientsReload, ConfigProblem, ServerConfig, ServerError, Shared};

/// What a reload of the server's config changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadReport {
    /// Settings applied live that differ from the config in force before, by key.
    pub changed: Vec<&'static str>,
    /// Settings that differ from the running server's but only a restart applies, by key.
    pub needs_restart: Vec<&'static str>,
    /// Ids whose session ended because the shared `auth_key` it logged in with changed.
    pub ended: Vec<String>,
    /// Proxies withdrawn because the new rules no longer allow them, as `id/proxy`.
    pub withdrawn: Vec<String>,
    /// The clients file, read again, when the server has one.
    pub clients: Option<ClientsReload>,
}

/// Put `new` in force on a running server. A config with problems (or a clients file with
/// problems) changes nothing and returns every problem.
pub(crate) fn reload(shared: &Arc<Shared>, new: ServerConfig) -> Result<ReloadReport, ServerError> {
    let problems = new.problems();
    if !problems.is_empty() {
        return Err(ServerError::Config(problems));
    }
    let key = new
        .shared_key()
        .map_err(|p| ServerError::Config(vec![p]))?
        .unwrap_or_default();
    if shared
        .peer
        .as_ref()
        .is_some_and(|p| !key.is_empty() && p.cfg.cluster_key == key)
    {
        return Err(ServerError::Config(vec![ConfigProblem::new(
            "auth_key",
            "equals the cluster_key: a client could then pass as a server; use a separate \
             secret",
        )]));
    }
    let store = &shared.credentials;
    let _one_at_a_time = store.reload_lock();
    // Read before anything changes: a clients file with problems keeps everything as it is.
    let table = match store.path() {
        Some(path) => Some(Clients::load(
            path,
            Some(key.as_str()).filter(|k| !k.is_empty()),
        )?),
        None => None,
    };
    if !key.is_empty() {
        crate::warn_if_short(key.as_bytes());
    }

    let mut applied = shared.rules.applied.lock();
    let key_changed = store.shared_key().unwrap_or_default() != key.as_bytes();
    let mut report = ReloadReport {
        changed: live_changes(&applied, &new, key_changed),
        needs_restart: restart::needs_restart(&shared.cfg, &new),
        ..ReloadReport::default()
    };
    store.set_shared_key(key.as_bytes());
    report.clients = table.map(|t| clients::apply(shared, t));
    let old = shared.rules.swap(Rules::of(&new));
    *applied = new;
    drop(applied);
    let rules = shared.rules.get();

    let gone: HashSet<String> = report
        .clients
        .iter()
        .flat_map(|c| c.revoked.iter().cloned())
        .collect();
    for (session, entries) in shared.registry.sessions() {
        let id = session.client_id.as_str();
        if gone.contains(id) || store.is_revoked(session.id) {
            continue;
        }
        if key_changed && store.used_shared_key(id) {
            clients::revoke(shared, &session, &entries, super::SHARED_KEY_CHANGED);
            report.ended.push(id.to_owned());
            continue;
        }
        if old.bandwidth_limit != rules.bandwidth_limit {
            for entry in &entries {
                let spec = entry.spec.read().clone();
                let limits = entry.limits.read().under_cap(&spec, rules.bandwidth_limit);
                *entry.limits.write() = Arc::new(limits);
            }
        }
        let over = over_cap(&session, &entries, rules.max_proxies_per_client);
        let withdrawn = clients::withdraw(shared, &session, &entries, |spec| {
            allowed(&rules, &over, spec)
        });
        report
            .withdrawn
            .extend(withdrawn.into_iter().map(|p| format!("{id}/{p}")));
    }
    if !report.needs_restart.is_empty() {
        warn!(
            "config reload: {} changed but need a restart to take effect; the running values \
             stay in force",
            report.needs_restart.join(", ")
        );
    }
    info!(
        changed = ?report.changed,
        ended = ?report.ended,
        withdrawn = ?report.withdrawn,
        "config reloaded: {}",
        if report.changed.is_empty() {
            "no live setting changed".to_owned()
        } else {
            format!("{} applied", report.changed.join(", "))
        }
    );
    Ok(report)
}

/// The live settings of `new` that differ from `old`.
fn live_changes(old: &ServerConfig, new: &ServerConfig, key_changed: bool) -> Vec<&'static str> {
    [
        ("auth_key", key_changed),
        ("allow_ports", old.allow_ports != new.allow_ports),
        ("allow_ips", old.allow_ips != new.allow_ips),
        ("deny_ips", old.deny_ips != new.deny_ips),
        (
            "bandwidth_limit",
            old.bandwidth_limit != new.bandwidth_limit,
        ),
        (
            "max_proxies_per_client",
            old.max_proxies_per_client != new.max_proxies_per_client,
        ),
        (
            "max_streams_per_client",
            old.max_streams_per_client != new.max_streams_per_client,
        ),
    ]
    .into_iter()
    .filter_map(|(name, differs)| differs.then_some(name))
    .collect()
}

/// The proxies `session` holds beyond a lowered `max_proxies_per_client` (its visitors
/// count too), each with the refusal: the last ones by name go, so the choice does not
/// depend on the order they happen to be stored in.
fn over_cap(
    session: &SessionRecord,
    entries: &[Arc<ProxyEntry>],
    cap: usize,
) -> HashMap<String, FieldError> {
    let visitors = session.visitors.read().len();
    let total = entries.len() + visitors;
    if total <= cap {
        return HashMap::new();
    }
    let mut names: Vec<String> = entries.iter().map(|e| e.spec.read().name.clone()).collect();
    names.sort();
    let keep = cap.saturating_sub(visitors);
    names
        .into_iter()
        .skip(keep)
        .map(|name| {
            let e = FieldError {
                field: "proxies".into(),
                message: format!(
                    "this server now allows {cap} proxies and visitors per client \
                     (max_proxies_per_client), and this client had {total}"
                ),
            };
            (name, e)
        })
        .collect()
}

/// Whether `spec`, registered before, is still allowed by `rules`.
fn allowed(
    rules: &Rules,
    over: &HashMap<String, FieldError>,
    spec: &ProxySpec,
) -> Result<(), FieldError> {
    if let Some(e) = over.get(&spec.name) {
        return Err(e.clone());
    }
    match spec.publish_port {
        Some(port) if !rules.allow_ports.contains(port) => Err(FieldError {
            field: "publish_port".into(),
            message: format!(
                "port {port} is no longer allowed by this server (allow_ports: {})",
                rules.allow_ports
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tunnel_proto::ProxyKind;

    fn spec(name: &str, port: Option<u16>) -> ProxySpec {
        ProxySpec {
            publish_port: port,
            ..ProxySpec::new(name, ProxyKind::Tcp)
        }
    }

    #[test]
    fn a_port_outside_the_new_range_or_a_proxy_over_the_cap_is_refused_by_field() {
        let ports =
            std::iter::once("8000-8010".parse::<crate::PortRange>().expect("a range")).collect();
        let rules = Rules::of(&ServerConfig::default().with_allow_ports(ports));
        let none = HashMap::new();
        assert!(allowed(&rules, &none, &spec("in", Some(8005))).is_ok());
        assert!(allowed(&rules, &none, &spec("private", None)).is_ok());
        let e = allowed(&rules, &none, &spec("out", Some(9000))).expect_err("outside");
        assert_eq!(e.field, "publish_port");
        assert!(e.message.contains("no longer allowed"), "{e}");
        assert!(e.message.contains("8000-8010"), "{e}");

        let cap = FieldError {
            field: "proxies".into(),
            message: "over".into(),
        };
        let over = HashMap::from([("in".to_owned(), cap.clone())]);
        assert_eq!(allowed(&rules, &over, &spec("in", Some(8005))), Err(cap));
    }

    #[test]
    fn changes_name_only_the_live_settings_that_differ() {
        let old = ServerConfig::default();
        let new = ServerConfig::default()
            .with_deny_ips(&["10.0.0.0/8"])
            .with_max_proxies_per_client(2)
            .with_max_clients(3);
        assert_eq!(
            live_changes(&old, &new, true),
            ["auth_key", "deny_ips", "max_proxies_per_client"]
        );
        assert!(live_changes(&old, &old, false).is_empty());
    }
}
