//! Applying a client's registration: validate each proxy, claim it, open its public port.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{info, warn, Instrument};
use tunnel_cluster::decide::{ProxyClaim, Refusal};
use tunnel_proto::{
    FieldError, ItemKind, ItemResult, ProxyKind, ProxySpec, RegisterReply, RegisterRequest,
    VisitorSpec,
};
use tunnel_proto::{PeerText, Rejected};

use crate::credentials::{audit, Scope};
use crate::metrics::EventKind;
use crate::registry::{proxy_label, ClaimError, ProxyEntry, ProxyKey};
use crate::routes::{self, Conflict, Pair};
use crate::session::SessionRecord;
use crate::{listener, ServerConfig, Shared};

mod vhost;

use vhost::check_http_route;

/// Check and apply every item; each gets its own verdict, and a failed item leaves the others
/// in place. Proxies the session held before (handed over from a stale session of the same
/// client) but no longer lists are released.
///
/// In cluster mode the registry decides first, for every proxy at once; a login it refuses
/// as a whole (the id held elsewhere, the registry unreachable) is the `Err`.
pub(crate) async fn apply(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    req: RegisterRequest,
) -> Result<RegisterReply, Rejected> {
    if shared.credentials.is_revoked(session.id) {
        // Between a revocation and the close that follows it: nothing more is granted.
        return Err(Rejected::new(
            tunnel_proto::RejectCode::Auth,
            "this client's access was revoked (clients_file or auth_key changed)",
        ));
    }
    let total = req.proxies.len() + req.visitors.len();
    // The live rules, read once for the whole registration.
    let rules = shared.rules.get();
    let limit = rules.max_proxies_per_client;
    if total > limit {
        let message = format!(
            "{total} proxies and visitors, but this server allows {limit} per client (max_proxies_per_client)"
        );
        return Ok(refuse_all(shared, session, &req, "proxies", message));
    }
    // The client's own scope (clients_file), read once for the whole registration.
    let scope = shared.credentials.scope_of(&session.client_id);
    if let Some(Err(e)) = scope.as_ref().map(|s| s.check_count(total)) {
        return Ok(refuse_all(shared, session, &req, "proxies", e.to_string()));
    }
    let (claims, mut cluster_refused) = match &shared.cluster {
        Some(node) => {
            let claims = cluster_claims(&shared.cfg, &rules, scope.as_deref(), &req.proxies);
            let refused = crate::cluster::login::register(shared, node, session, claims.clone());
            (claims, refused.await?)
        }
        None => (Vec::new(), HashMap::new()),
    };
    let refused_by_cluster: HashSet<usize> = cluster_refused.keys().copied().collect();
    // Granted by the cluster registry, then refused here (a port this host cannot bind, say).
    let mut failed_here = HashSet::new();

    // Proxies the client no longer lists go first, so a renamed proxy can take its own
    // routes back and the route budget counts only what this registration asks for.
    let listed: HashSet<ProxyKey> = req
        .proxies
        .iter()
        .filter(|spec| same_group(shared, spec))
        .flat_map(|p| crate::port_grant::listed_keys(shared, session, p))
        .collect();
    let (released, closing) = shared.registry.release_except_closing(session.id, &listed);
    for proxy in released {
        info!(%proxy, "proxy no longer in the client's config; released");
    }
    // Their ports may be asked for again below (a proxy renamed, or moved into a group);
    // one deadline for all of them, however many the client released.
    let deadline = tokio::time::Instant::now() + PORT_CLOSE_WAIT;
    for closed in closing {
        let _ = tokio::time::timeout_at(deadline, closed.cancelled_owned()).await;
    }

    let mut results = Vec::with_capacity(total);
    let mut names = HashSet::new();
    let mut kept = HashSet::new();
    let mut routes_left = shared.cfg.max_routes_per_client;
    let mut ports_left = shared.cfg.max_ports_per_client;
    let mut rejected = 0;
    for (i, spec) in req.proxies.into_iter().enumerate() {
        let name = spec.name.clone();
        let ports = ports_wanted(&spec);
        let outcome = match cluster_refused.remove(&i) {
            Some(r) => Err(cluster_refusal(&shared.cfg, &spec, r)),
            None if ports > ports_left => Err(field_error(
                "publish_port",
                format!(
                    "{ports} more ports would pass this server's max_ports_per_client ({}) for \
                     one client; publish fewer or smaller blocks",
                    shared.cfg.max_ports_per_client
                ),
            )),
            None => {
                let scope = scope.as_deref();
                register_proxy(shared, session, scope, spec, &mut names, &mut routes_left).await
            }
        };
        if outcome.is_ok() {
            ports_left -= ports;
        }
        let mut port = None;
        match outcome {
            Ok((ref keys, given)) => {
                kept.extend(keys.iter().cloned());
                port = given;
            }
            Err(ref e) => {
                rejected += 1;
                if !refused_by_cluster.contains(&i) {
                    failed_here.insert(i);
                }
                if rejected <= LOGGED_REJECTIONS {
                    warn!(proxy = %PeerText(&name), "proxy rejected: {}", PeerText(&e.to_string()));
                    refused(shared, session, &format!("proxy {name}: {e}"));
                }
            }
        }
        results.push(ItemResult {
            kind: ItemKind::Proxy,
            name,
            error: outcome.err(),
            port,
        });
    }
    let mut visitor_names = HashSet::new();
    let mut visitors = Vec::new();
    for v in req.visitors {
        let error = check_visitor(&v, &mut visitor_names).err();
        match &error {
            Some(e) => {
                rejected += 1;
                if rejected <= LOGGED_REJECTIONS {
                    warn!(visitor = %PeerText(&v.name), "visitor rejected: {}", PeerText(&e.to_string()));
                    refused(shared, session, &format!("visitor {}: {e}", v.name));
                }
            }
            None => visitors.push(v.clone()),
        }
        results.push(ItemResult {
            kind: ItemKind::Visitor,
            name: v.name,
            error,
            port: None,
        });
    }
    if rejected > LOGGED_REJECTIONS {
        warn!(
            "{} more proxies and visitors of this registration rejected (only the first \
             {LOGGED_REJECTIONS} are logged; the client is told about each)",
            rejected - LOGGED_REJECTIONS
        );
    }
    *session.visitors.write() = visitors;
    // Listed but refused this time (say, a refreshed spec that no longer fits): released too.
    release_unlisted(shared, session, &kept, "refused this time");
    if let Some(node) = &shared.cluster {
        if claims.iter().any(|(i, _)| failed_here.contains(i)) {
            // Registered again without them: their keys go, so that they do not block the
            // names for other clients while nothing serves them.
            let served = claims
                .into_iter()
                .filter(|(i, _)| !failed_here.contains(i) && !refused_by_cluster.contains(i))
                .collect();
            let again = crate::cluster::login::register(shared, node, session, served).await;
            if let Err(r) = again {
                info!(
                    "the registry keys of the proxies refused here stay until the session ends: {}",
                    r.reason
                );
            }
        }
    }
    Ok(RegisterReply { results })
}

/// What the cluster registry is asked for: every proxy that passes this server's own
/// checks of its fields (one that fails them is refused below with the same words as on one
/// server, and claims nothing), by its index in the request.
fn cluster_claims(
    cfg: &ServerConfig,
    rules: &crate::rules::Rules,
    scope: Option<&Scope>,
    proxies: &[ProxySpec],
) -> Vec<(usize, ProxyClaim)> {
    let mut names = HashSet::new();
    proxies
        .iter()
        .enumerate()
        .filter(|(_, spec)| {
            tunnel_proto::validate_name(&spec.name).is_ok()
                // Refused below in cluster mode, claiming nothing.
                && spec.publish_ports.is_none()
                && names.insert(spec.name.as_str())
                && spec.group.is_none()
                && scope.is_none_or(|s| s.check_proxy(spec).is_ok())
                && spec
                    .publish_port
                    .is_none_or(|p| rules.allow_ports.contains(p))
                && check_http_route(cfg, spec, cfg.max_routes_per_client).is_ok()
        })
        .map(|(i, spec)| (i, crate::cluster::login::claim_of(cfg, spec)))
        .collect()
}

/// A proxy the cluster registry refused, in the words one server uses for the same
/// conflict (never naming the holder).
fn cluster_refusal(cfg: &ServerConfig, spec: &ProxySpec, r: Refusal) -> FieldError {
    match r {
        Refusal::NameTaken => taken(&proxy_label(spec)),
        Refusal::PortInUse(port) => field_error(
            "publish_port",
            format!(
                "cannot listen on {}: the port is in use by another proxy in the cluster; pick \
                 another port",
                SocketAddr::new(cfg.publish_addr, port)
            ),
        ),
        Refusal::DomainTaken(host) => {
            let by_subdomain = spec
                .http
                .as_ref()
                .and_then(|h| h.subdomain.as_ref())
                .is_some_and(|sub| host.starts_with(&format!("{sub}.")));
            field_error(
                if by_subdomain { "subdomain" } else { "domains" },
                format!(
                    "host {} is served by another client; choose another domain",
                    routes::display_host(&host)
                ),
            )
        }
        Refusal::TooLarge { keys, limit } => field_error(
            "domains",
            format!(
                "the proxy needs {keys} cluster registry keys, but one registry transaction \
                 holds {limit}; list fewer domains"
            ),
        ),
        Refusal::NameTooLong => field_error(
            "name",
            "too long for the cluster registry: use a shorter name or shorter domains",
        ),
        Refusal::IdInUse { .. } => field_error(
            "name",
            "the client id is in use by another client on another server",
        ),
    }
}

/// Every item of `req` refused with `message` (on `field`): the registration is too large.
fn refuse_all(
    shared: &Shared,
    session: &SessionRecord,
    req: &RegisterRequest,
    field: &str,
    message: String,
) -> RegisterReply {
    warn!("registration refused: {message}");
    refused(shared, session, &message);
    let results = req
        .proxies
        .iter()
        .map(|p| (ItemKind::Proxy, &p.name))
        .chain(req.visitors.iter().map(|v| (ItemKind::Visitor, &v.name)))
        .map(|(kind, name)| ItemResult {
            kind,
            name: name.clone(),
            error: Some(field_error(field, message.clone())),
            port: None,
        })
        .collect();
    RegisterReply { results }
}

/// A refusal for the dashboard's recent events, as many as are logged.
fn refused(shared: &Shared, session: &SessionRecord, reason: &str) {
    shared.metrics.event(
        EventKind::RegisterRefused,
        session.peer.ip(),
        Some(&session.client_id),
        reason,
    );
}

fn key_of(spec: &ProxySpec) -> ProxyKey {
    ProxyKey {
        name: spec.name.clone(),
        port: spec.publish_port.unwrap_or(0),
    }
}

/// Whether `spec` is registered already in the group it names (or in none, as it names
/// none), or not registered: a proxy that moves into or out of a group is released and
/// claimed again.
fn same_group(shared: &Shared, spec: &ProxySpec) -> bool {
    shared
        .registry
        .get(&key_of(spec))
        .is_none_or(|(entry, _)| entry.group.as_ref().map(|g| &g.name) == spec.group.as_ref())
}

/// Release what `session` holds outside `keep`.
/// Public ports `spec` asks for: a block's size, one for a port or `"auto"`, else none.
fn ports_wanted(spec: &ProxySpec) -> usize {
    match (&spec.publish_ports, spec.publish_port) {
        (Some(req), _) => req.ports().map_or(1, |r| r.len()),
        (None, Some(_)) => 1,
        (None, None) => 0,
    }
}

fn release_unlisted(shared: &Shared, session: &SessionRecord, keep: &HashSet<ProxyKey>, why: &str) {
    for proxy in shared.registry.release_except(session.id, keep) {
        info!(%proxy, "proxy {why}; released");
    }
}

/// How long a registration waits for the ports it released to close before it binds.
const PORT_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Rejections of one registration logged one by one: a registration of many bad items logs
/// no more than its first few (and their count), whatever the client sends.
const LOGGED_REJECTIONS: usize = 8;

async fn register_proxy(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    scope: Option<&Scope>,
    spec: ProxySpec,
    names: &mut HashSet<String>,
    routes_left: &mut usize,
) -> Result<(Vec<ProxyKey>, Option<u16>), FieldError> {
    tunnel_proto::validate_name(&spec.name).map_err(|m| field_error("name", m.to_string()))?;
    if !names.insert(spec.name.clone()) {
        return Err(field_error(
            "name",
            format!(
                "duplicate proxy name {:?}: each proxy of a client needs its own name",
                spec.name
            ),
        ));
    }
    if let Some(req) = spec.publish_ports {
        if spec.group.is_some() {
            return Err(field_error(
                "publish_port",
                "a group's members share one fixed port: set a number, not \"auto\" or a range",
            ));
        }
        crate::port_grant::check(shared, &spec, req)?;
    }
    if let Some(scope) = scope {
        scope.check_proxy(&spec)?;
    }
    let vhost = check_http_route(&shared.cfg, &spec, *routes_left)?;
    let rules = shared.rules.get();
    let limits = Arc::new(crate::access::ProxyLimits::new(
        &shared.access,
        rules.bandwidth_limit,
        &session.client_id,
        scope,
        &spec,
    )?);
    if let Some(port) = spec.publish_port {
        if !rules.allow_ports.contains(port) {
            return Err(field_error(
                "publish_port",
                format!(
                    "port {port} is not allowed by this server (allow_ports: {})",
                    rules.allow_ports
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

    if let Some(req) = spec.publish_ports {
        let granted = crate::port_grant::register(shared, session, scope, spec, req, limits);
        let granted = granted.await?;
        return Ok((granted.keys, Some(granted.port)));
    }
    let key = key_of(&spec);
    // How rejections name it: by its domains when it has no port (the key cannot say).
    let label = proxy_label(&spec);
    let routes = vhost.pairs.len();
    let group = crate::group::claim_of(
        shared.cluster.is_some(),
        &spec,
        &vhost.pairs,
        vhost.auth.as_ref(),
    )?;
    if let Some((existing, owner)) = shared.registry.get(&key) {
        if owner.id == session.id {
            // Handed over from this client's stale session: keep its port open, refresh the
            // spec and its routes (a group's are the group's).
            if existing.group.is_none() {
                shared
                    .registry
                    .set_routes(session.id, &key, &vhost.pairs, vhost.auth)
                    .map_err(|e| claim_error(&label, &vhost.subdomain_host, e))?;
            }
            *existing.spec.write() = spec;
            *existing.limits.write() = limits;
            *routes_left = routes_left.saturating_sub(routes);
            return Ok((vec![key], None));
        }
        if group.is_some() {
            return Err(field_error(
                "name",
                format!(
                    "proxy {label} is already registered by another client; each member of \
                     a group needs its own proxy name"
                ),
            ));
        }
        return Err(taken(&label));
    }
    if let Some(claim) = group {
        let key = crate::group::join(shared, session, spec, key, &claim, limits).await?;
        *routes_left = routes_left.saturating_sub(routes);
        return Ok((vec![key], None));
    }
    if let Some(port) = spec
        .publish_port
        .filter(|p| shared.registry.group_on_port(*p))
    {
        return Err(claim_error(
            &label,
            &None,
            ClaimError::Group(crate::registry::port_of_group(port)),
        ));
    }
    let udp = match spec.publish_port {
        Some(port) if spec.kind == ProxyKind::Udp => Some(crate::udp::bind(shared, port).await?),
        _ => None,
    };
    let listener = match spec.publish_port {
        Some(port) if udp.is_none() => Some(bind(shared, port).await?),
        _ => None,
    };
    let entry = Arc::new(ProxyEntry::new(key.clone(), spec));
    *entry.limits.write() = limits;
    shared
        .registry
        .claim(session.id, entry.clone(), &vhost.pairs, vhost.auth)
        .map_err(|e| claim_error(&label, &vhost.subdomain_host, e))?;
    *routes_left = routes_left.saturating_sub(routes);
    let proxy = entry.label();
    if let Some(l) = listener {
        let task = listener::run(shared.clone(), entry, l);
        shared.tasks.spawn(task.in_current_span());
    } else if let Some(socket) = udp {
        let task = crate::udp::run(shared.clone(), entry, socket);
        shared.tasks.spawn(task.in_current_span());
    }
    info!(%proxy, "proxy registered");
    audit::record(
        audit::Event::Registration,
        Some(&session.client_id),
        Some(session.peer.ip()),
        &format!("proxy {proxy} registered"),
        false,
    );
    Ok((vec![key], None))
}

pub(crate) async fn bind(shared: &Shared, port: u16) -> Result<TcpListener, FieldError> {
    // The registry gave this client the port: if it was another server's until now, this
    // server forwarded it (`publish_mode = "all"`) and must let go of it first.
    if let Some(peer) = &shared.peer {
        peer.forwarding.release(port).await;
    }
    let addr = SocketAddr::new(shared.cfg.publish_addr, port);
    TcpListener::bind(addr).await.map_err(|e| {
        field_error(
            "publish_port",
            format!("cannot listen on {addr}: {e}; pick another port"),
        )
    })
}

fn check_visitor(v: &VisitorSpec, names: &mut HashSet<String>) -> Result<(), FieldError> {
    tunnel_proto::validate_name(&v.name).map_err(|m| field_error("name", m.to_string()))?;
    tunnel_proto::validate_name(&v.proxy).map_err(|m| field_error("proxy", m.to_string()))?;
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

/// The refusal of a claim: what is taken, never who holds it (an error text reaches another
/// key holder; other clients' ids and addresses are none of its business).
pub(crate) fn claim_error(
    label: &str,
    subdomain_host: &Option<String>,
    e: ClaimError,
) -> FieldError {
    let conflict = match e {
        ClaimError::Group(r) => return field_error(r.field, r.message),
        ClaimError::Taken => return taken(label),
        ClaimError::RouteTaken(c) => c,
        ClaimError::NoSession => {
            return field_error(
                "name",
                "this session was replaced while registering; the client registers again on \
                 its new session",
            )
        }
    };
    let field = |host: &str| {
        if subdomain_host.as_deref() == Some(host) {
            "subdomain"
        } else {
            "domains"
        }
    };
    let shown = routes::display_host;
    match conflict {
        Conflict::Host { host } => field_error(
            field(&host),
            format!(
                "host {} is served by another client; choose another domain",
                shown(&host)
            ),
        ),
        Conflict::Covers { wildcard, name } => field_error(
            field(&wildcard),
            format!(
                "{} would cover {}, which another client serves; choose a narrower wildcard \
                 or exact names",
                shown(&wildcard),
                shown(&name)
            ),
        ),
        Conflict::Under { name, wildcard } => field_error(
            field(&name),
            format!(
                "{} falls under {}, which another client serves; choose another domain",
                shown(&name),
                shown(&wildcard)
            ),
        ),
        Conflict::Location {
            host,
            location,
            holder,
        } => field_error(
            "locations",
            format!(
                "host {} location {location} is already served by this client's proxy \
                 {holder}; give each location to one proxy",
                shown(&host)
            ),
        ),
    }
}

fn taken(label: &str) -> FieldError {
    field_error(
        "name",
        format!(
            "proxy {label} is already registered by another client; choose another name or port"
        ),
    )
}

pub(crate) fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: message.into(),
    }
}
