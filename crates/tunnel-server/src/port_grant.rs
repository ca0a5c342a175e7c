//! Registering a proxy whose port the server picks (`publish_port = "auto"`) or that
//! publishes a block of ports (`"6000-6010"`). Each port is its own registry entry
//! `(name, port)` with its own listener; a block is granted whole or refused whole.

use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tracing::{info, Instrument};
use tunnel_proto::{FieldError, PortRequest, ProxyKind, ProxySpec};

use crate::access::ProxyLimits;
use crate::credentials::{audit, Scope};
use crate::register::{claim_error, field_error};
use crate::registry::{ProxyEntry, ProxyKey};
use crate::session::SessionRecord;
use crate::Shared;

/// What an automatic or block proxy got: its registry keys and its (first) port.
pub(crate) struct Granted {
    pub keys: Vec<ProxyKey>,
    pub port: u16,
}

/// Refuse what cannot be an automatic or block proxy, before anything is bound or counted.
pub(crate) fn check(shared: &Shared, spec: &ProxySpec, req: PortRequest) -> Result<(), FieldError> {
    if !matches!(spec.kind, ProxyKind::Tcp | ProxyKind::Udp) {
        return Err(field_error(
            "publish_port",
            format!(
                "\"auto\" and port ranges are for tcp and udp proxies; a {} proxy is reached \
                 by its domains or subdomain: use a fixed publish_port or none",
                spec.kind
            ),
        ));
    }
    if spec.publish_port.is_some() {
        return Err(field_error(
            "publish_port",
            "a fixed port and \"auto\" or a range at once: set one of them",
        ));
    }
    req.check()
        .map_err(|m| field_error("publish_port", m.to_string()))?;
    if shared.cluster.is_some() {
        return Err(field_error(
            "publish_port",
            "\"auto\" and port ranges are not available in cluster mode (every server would \
             have to agree on the port): set a fixed publish_port",
        ));
    }
    Ok(())
}

/// The keys `spec` may hold already, kept through the release of unlisted proxies that
/// runs before registration: its remembered port when automatic, each port of a block.
pub(crate) fn listed_keys(
    shared: &Shared,
    session: &SessionRecord,
    spec: &ProxySpec,
) -> Vec<ProxyKey> {
    let key = |port| ProxyKey {
        name: spec.name.clone(),
        port,
    };
    match spec.publish_ports {
        None => vec![key(spec.publish_port.unwrap_or(0))],
        Some(PortRequest::Auto) => shared
            .auto_ports
            .remembered(&session.client_id, &spec.name)
            .map(key)
            .into_iter()
            .collect(),
        Some(req) if req.check().is_err() => Vec::new(),
        Some(req) => req.ports().into_iter().flatten().map(key).collect(),
    }
}

/// Publish `spec` on the port(s) `req` asks for; checked by [`check`] already.
pub(crate) async fn register(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    scope: Option<&Scope>,
    spec: ProxySpec,
    req: PortRequest,
    limits: Arc<ProxyLimits>,
) -> Result<Granted, FieldError> {
    let granted = match req {
        PortRequest::Auto => auto(shared, session, scope, &spec, &limits).await?,
        PortRequest::Block { first, last } => {
            block(shared, session, scope, &spec, (first, last), &limits).await?
        }
    };
    let what = match req {
        PortRequest::Auto => format!("port {} (auto)", granted.port),
        PortRequest::Block { first, last } => format!("ports {first}-{last}"),
    };
    info!("proxy {} published on {what}", spec.name);
    audit::record(
        audit::Event::Registration,
        Some(&session.client_id),
        Some(session.peer.ip()),
        &format!("proxy {} registered on {what}", spec.name),
        false,
    );
    Ok(granted)
}

async fn auto(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    scope: Option<&Scope>,
    spec: &ProxySpec,
    limits: &Arc<ProxyLimits>,
) -> Result<Granted, FieldError> {
    let client = &session.client_id;
    // Held by this session already (a reload, or a hand-over from its stale session): kept.
    if let Some(port) = shared.auto_ports.remembered(client, &spec.name) {
        let key = key(spec, port);
        if let Some((entry, owner)) = shared.registry.get(&key) {
            if owner.id == session.id {
                refresh(&entry, spec, port, limits);
                shared.auto_ports.remember(client, &spec.name, port);
                return Ok(Granted {
                    keys: vec![key],
                    port,
                });
            }
        }
    }
    // The live rules: a SIGHUP may have changed allow_ports since the start.
    let rules = shared.rules.get();
    let server = &rules.allow_ports;
    let allowed = scope.and_then(|s| s.allow_ports.as_ref()).unwrap_or(server);
    let candidates = shared
        .auto_ports
        .candidates(client, &spec.name, allowed, |p| server.contains(p));
    let tried = candidates.len();
    for port in candidates {
        if shared.registry.get(&key(spec, port)).is_some() {
            continue;
        }
        // Taken by something else (another proxy, another program): the next one.
        let Ok(socket) = bind(shared, spec.kind, port).await else {
            continue;
        };
        let key = claim(shared, session, spec, port, limits, socket)?;
        shared.auto_ports.remember(client, &spec.name, port);
        return Ok(Granted {
            keys: vec![key],
            port,
        });
    }
    let scope_note = if scope.is_some_and(|s| s.allow_ports.is_some()) {
        " and this client's scope"
    } else {
        ""
    };
    Err(field_error(
        "publish_port",
        format!(
            "no free port to pick: tried {tried} within allow_ports ({allowed}){scope_note}; \
             ask the server's operator to widen allow_ports, or set a fixed publish_port"
        ),
    ))
}

async fn block(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    scope: Option<&Scope>,
    spec: &ProxySpec,
    (first, last): (u16, u16),
    limits: &Arc<ProxyLimits>,
) -> Result<Granted, FieldError> {
    let whole = |p: u16, why: String| {
        field_error(
            "publish_port",
            format!("port {p} of the block {first}-{last} {why}; the whole block is refused"),
        )
    };
    let rules = shared.rules.get();
    let server = &rules.allow_ports;
    for p in first..=last {
        if !server.contains(p) {
            return Err(whole(
                p,
                format!("is not allowed by this server (allow_ports: {server})"),
            ));
        }
        if let Some(scope) = scope {
            scope
                .check_proxy(&spec_for(spec, p))
                .map_err(|e| whole(p, format!("is refused: {}", e.message)))?;
        }
    }
    let mut held = Vec::new();
    for p in first..=last {
        match shared.registry.get(&key(spec, p)) {
            Some((entry, owner)) if owner.id == session.id => held.push((p, entry)),
            Some(_) => {
                return Err(whole(
                    p,
                    "is taken by another client's proxy of this name".into(),
                ))
            }
            None => {}
        }
    }
    // Every free port bound before any is claimed: one that fails drops the others.
    let mut bound = Vec::new();
    for p in first..=last {
        if held.iter().any(|(h, _)| *h == p) {
            continue;
        }
        let socket = bind(shared, spec.kind, p)
            .await
            .map_err(|e| whole(p, format!("cannot be listened on ({})", e.message)))?;
        bound.push((p, socket));
    }
    let mut keys = Vec::with_capacity(usize::from(last - first) + 1);
    for (p, entry) in held {
        refresh(&entry, spec, p, limits);
        keys.push(key(spec, p));
    }
    for (p, socket) in bound {
        // A failure here (the session replaced meanwhile) leaves the ports claimed so far
        // outside the registration's kept keys, and the caller releases them.
        keys.push(claim(shared, session, spec, p, limits, socket)?);
    }
    Ok(Granted { keys, port: first })
}

/// A bound public socket, TCP or UDP by the proxy's type.
enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

async fn bind(shared: &Shared, kind: ProxyKind, port: u16) -> Result<Bound, FieldError> {
    Ok(match kind {
        ProxyKind::Udp => Bound::Udp(crate::udp::bind(shared, port).await?),
        _ => Bound::Tcp(crate::register::bind(shared, port).await?),
    })
}

/// Record the entry of `port` for `session` and start serving its socket.
fn claim(
    shared: &Arc<Shared>,
    session: &SessionRecord,
    spec: &ProxySpec,
    port: u16,
    limits: &Arc<ProxyLimits>,
    socket: Bound,
) -> Result<ProxyKey, FieldError> {
    let key = key(spec, port);
    let spec = spec_for(spec, port);
    let label = crate::registry::proxy_label(&spec);
    let entry = Arc::new(ProxyEntry::new(key.clone(), spec));
    *entry.limits.write() = limits.clone();
    shared
        .registry
        .claim(session.id, entry.clone(), &[], None)
        .map_err(|e| claim_error(&label, &None, e))?;
    match socket {
        Bound::Tcp(l) => {
            let task = crate::listener::run(shared.clone(), entry, l);
            shared.tasks.spawn(task.in_current_span());
        }
        Bound::Udp(s) => {
            let task = crate::udp::run(shared.clone(), entry, s);
            shared.tasks.spawn(task.in_current_span());
        }
    }
    Ok(key)
}

/// A held entry gets the refreshed spec and limits, as a fixed-port proxy's would.
fn refresh(entry: &ProxyEntry, spec: &ProxySpec, port: u16, limits: &Arc<ProxyLimits>) {
    *entry.spec.write() = spec_for(spec, port);
    *entry.limits.write() = limits.clone();
}

fn key(spec: &ProxySpec, port: u16) -> ProxyKey {
    ProxyKey {
        name: spec.name.clone(),
        port,
    }
}

/// The spec one port's entry carries: the request's, with that port as its `publish_port`,
/// so that logs, stats and limits see a proxy on one port as always.
fn spec_for(spec: &ProxySpec, port: u16) -> ProxySpec {
    let mut one = spec.clone();
    one.publish_port = Some(port);
    one
}
