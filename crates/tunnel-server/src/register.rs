//! Applying a client's registration: validate each proxy, claim it, open its public port.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn, Instrument};
use tunnel_proto::{
    FieldError, ItemKind, ItemResult, ProxyKind, ProxySpec, RegisterReply, RegisterRequest,
    VisitorSpec,
};

use crate::registry::{ClaimError, ProxyEntry, ProxyKey};
use crate::session::SessionRef;
use crate::{listener, Shared};

/// Check and apply every item; each gets its own verdict, and a failed item leaves the others
/// in place. Proxies the session held before (handed over from a stale session of the same
/// client) but no longer lists are released.
pub(crate) async fn apply(
    shared: &Arc<Shared>,
    session: &Arc<SessionRef>,
    req: RegisterRequest,
) -> RegisterReply {
    let total = req.proxies.len() + req.visitors.len();
    let limit = shared.cfg.max_proxies_per_client;
    if total > limit {
        let message = format!(
            "{total} proxies and visitors, but this server allows {limit} per client (max_proxies_per_client)"
        );
        warn!("registration refused: {message}");
        let results = req
            .proxies
            .iter()
            .map(|p| (ItemKind::Proxy, &p.name))
            .chain(req.visitors.iter().map(|v| (ItemKind::Visitor, &v.name)))
            .map(|(kind, name)| ItemResult {
                kind,
                name: name.clone(),
                error: Some(field_error("proxies", message.clone())),
            })
            .collect();
        return RegisterReply { results };
    }

    let mut results = Vec::with_capacity(total);
    let mut names = HashSet::new();
    let mut kept = HashSet::new();
    for spec in req.proxies {
        let name = spec.name.clone();
        let outcome = register_proxy(shared, session, spec, &mut names).await;
        match &outcome {
            Ok(key) => {
                kept.insert(key.clone());
            }
            Err(e) => warn!(proxy = %name, "proxy rejected: {e}"),
        }
        results.push(ItemResult {
            kind: ItemKind::Proxy,
            name,
            error: outcome.err(),
        });
    }
    let mut visitor_names = HashSet::new();
    let mut visitors = Vec::new();
    for v in req.visitors {
        let error = check_visitor(&v, &mut visitor_names).err();
        match &error {
            Some(e) => warn!(visitor = %v.name, "visitor rejected: {e}"),
            None => visitors.push(v.clone()),
        }
        results.push(ItemResult {
            kind: ItemKind::Visitor,
            name: v.name,
            error,
        });
    }
    *session.visitors.write() = visitors;
    for stale in shared.registry.owned_by(session.id) {
        if !kept.contains(&stale.key) && shared.registry.release(&stale.key, session.id) {
            info!(proxy = %stale.key, "proxy no longer in the client's config; released");
        }
    }
    RegisterReply { results }
}

async fn register_proxy(
    shared: &Arc<Shared>,
    session: &Arc<SessionRef>,
    spec: ProxySpec,
    names: &mut HashSet<String>,
) -> Result<ProxyKey, FieldError> {
    tunnel_proto::validate_name(&spec.name).map_err(|m| field_error("name", m))?;
    if !names.insert(spec.name.clone()) {
        return Err(field_error(
            "name",
            format!(
                "duplicate proxy name {:?}: each proxy of a client needs its own name",
                spec.name
            ),
        ));
    }
    check_http_route(&spec)?;
    if let Some(port) = spec.publish_port {
        if !shared.cfg.allow_ports.contains(port) {
            return Err(field_error(
                "publish_port",
                format!(
                    "port {port} is not allowed by this server (allow_ports: {})",
                    shared.cfg.allow_ports
                ),
            ));
        }
    }
    if spec.secret.as_deref() == Some("") {
        return Err(field_error(
            "secret",
            "an empty secret protects nothing: remove it or set a real one",
        ));
    }
    if spec.allow_visitors.iter().any(|v| v.is_empty()) {
        return Err(field_error(
            "allow_visitors",
            "contains an empty client id; list client ids or \"*\"",
        ));
    }

    let key = ProxyKey {
        name: spec.name.clone(),
        port: spec.publish_port.unwrap_or(0),
    };
    if let Some(existing) = shared.registry.get(&key.name, key.port) {
        if existing.owner().id == session.id {
            // Handed over from this client's stale session: keep its port open, refresh the spec.
            *existing.spec.write() = spec;
            return Ok(key);
        }
        return Err(taken(&key, &existing.owner().client_id));
    }
    let listener = match spec.publish_port {
        Some(port) => Some(bind(shared, port).await?),
        None => None,
    };
    let entry = Arc::new(ProxyEntry::new(key.clone(), spec, session.clone()));
    match shared.registry.claim(entry.clone()) {
        Ok(()) => {}
        Err(ClaimError::Taken { by }) => return Err(taken(&key, &by)),
    }
    if let Some(l) = listener {
        let task = listener::run(shared.clone(), entry, l);
        shared.tasks.spawn(task.in_current_span());
    }
    info!(proxy = %key, "proxy registered");
    Ok(key)
}

async fn bind(shared: &Shared, port: u16) -> Result<TcpListener, FieldError> {
    let addr = SocketAddr::new(shared.cfg.publish_addr, port);
    TcpListener::bind(addr).await.map_err(|e| {
        field_error(
            "publish_port",
            format!("cannot listen on {addr}: {e}; pick another port"),
        )
    })
}

/// `http`/`http2` proxies on a `publish_port` are carried like `tcp` ones (the client
/// parses the HTTP). Host routing and basic auth need the server's virtual host, which this
/// server does not run yet: refuse them by name rather than publish something unguarded.
fn check_http_route(spec: &ProxySpec) -> Result<(), FieldError> {
    let Some(route) = &spec.http else {
        return Ok(());
    };
    if spec.kind == ProxyKind::Tcp {
        return Err(field_error(
            "type",
            "HTTP routing settings on a tcp proxy; use type = \"http\" or \"http2\"",
        ));
    }
    let unsupported = [
        ("domains", !route.domains.is_empty()),
        ("subdomain", route.subdomain.is_some()),
        ("locations", !route.locations.is_empty()),
        (
            "http_user",
            route.http_user.is_some() || route.http_password.is_some(),
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(field_error(
            field,
            "virtual-host routing and basic auth are not served by this server yet; \
             publish the proxy on a publish_port and remove this setting",
        ));
    }
    Ok(())
}

fn check_visitor(v: &VisitorSpec, names: &mut HashSet<String>) -> Result<(), FieldError> {
    tunnel_proto::validate_name(&v.name).map_err(|m| field_error("name", m))?;
    tunnel_proto::validate_name(&v.proxy).map_err(|m| field_error("proxy", m))?;
    if !names.insert(v.name.clone()) {
        return Err(field_error(
            "name",
            format!(
                "duplicate visitor name {:?}: each visitor needs its own name",
                v.name
            ),
        ));
    }
    Ok(())
}

fn taken(key: &ProxyKey, by: &str) -> FieldError {
    field_error(
        "name",
        format!("proxy {key} is already registered by client {by:?}; choose another name or port"),
    )
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}
