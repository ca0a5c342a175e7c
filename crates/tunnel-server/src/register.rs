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

/// What a proxy claims on the virtual host: `(host, location)` pairs and the
/// `Authorization` value its basic auth expects.
struct VhostClaim {
    pairs: Vec<Pair>,
    auth: Option<String>,
    /// The host claimed through `subdomain`, so a conflict on it names that field.
    subdomain_host: Option<String>,
}

/// Check an `http`/`http2` proxy's routing and auth settings against this server. Refused by
/// name rather than published unguarded: basic auth is enforced only on the virtual host.
/// `routes_left` is what the client's earlier proxies left of `max_routes_per_client`.
fn check_http_route(
    cfg: &ServerConfig,
    spec: &ProxySpec,
    routes_left: usize,
) -> Result<VhostClaim, FieldError> {
    let none = VhostClaim {
        pairs: Vec::new(),
        auth: None,
        subdomain_host: None,
    };
    let Some(route) = &spec.http else {
        if spec.kind == ProxyKind::Https {
            return https_claim(cfg, "domains", Vec::new(), None);
        }
        return Ok(none);
    };
    if matches!(spec.kind, ProxyKind::Tcp | ProxyKind::Udp) {
        return Err(field_error(
            "type",
            format!(
                "HTTP routing settings on a {} proxy; use type = \"http\", \"http2\" or \
                 \"https\"",
                spec.kind
            ),
        ));
    }
    if spec.kind == ProxyKind::Https {
        check_https_fields(spec, route)?;
    }
    // The caps come first, on counts alone: nothing proportional to the peer's lists is done
    // for a registration that is over them.
    check_caps(cfg, route, routes_left)?;
    let sub_base = cfg
        .subdomain_host
        .as_deref()
        .and_then(|b| routes::normalize_domain(b).ok());
    let mut hosts = Vec::new();
    for d in &route.domains {
        let host =
            routes::normalize_domain(d).map_err(|m| field_error("domains", m.to_string()))?;
        if let Some(base) = &sub_base {
            check_outside_subdomains(&host, base)?;
        }
        hosts.push(host);
    }
    let mut subdomain_host = None;
    if let Some(sub) = &route.subdomain {
        let Some(base) = &cfg.subdomain_host else {
            return Err(field_error(
                "subdomain",
                "this server has no subdomain_host: set subdomain_host on the server, or use domains",
            ));
        };
        let label_ok = !sub.is_empty()
            && sub.len() <= 63
            && !sub.starts_with('-')
            && sub.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !label_ok {
            return Err(field_error(
                "subdomain",
                format!("{sub:?} is not one DNS label: use letters, digits and '-' (e.g. \"app\")"),
            ));
        }
        let host = routes::normalize_domain(&format!("{sub}.{base}"))
            .map_err(|m| field_error("subdomain", m.to_string()))?;
        subdomain_host = Some(host.clone());
        hosts.push(host);
    }
    let field = if route.domains.is_empty() {
        "subdomain"
    } else {
        "domains"
    };
    if spec.kind == ProxyKind::Https {
        return https_claim(cfg, field, hosts, subdomain_host);
    }
    if !hosts.is_empty() && cfg.vhost_http_bind.is_none() {
        return Err(field_error(
            field,
            "this server serves no virtual hosts: set vhost_http_bind on the server, or \
             publish the proxy on a publish_port",
        ));
    }
    if hosts.is_empty() {
        let set = [
            ("locations", !route.locations.is_empty()),
            ("http_user", route.http_user.is_some()),
            ("http_password", route.http_password.is_some()),
        ];
        if let Some((f, _)) = set.iter().find(|(_, on)| *on) {
            return Err(field_error(
                f,
                "only applies with domains or subdomain (the server's virtual host)",
            ));
        }
        return Ok(none);
    }
    let auth = match (&route.http_user, &route.http_password) {
        (None, None) => None,
        (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() && !u.contains(':') => {
            if spec.publish_port.is_some() {
                return Err(field_error(
                    "http_user",
                    "basic auth is enforced on the virtual host only, and users would reach \
                     the publish_port without it: remove publish_port or http_user",
                ));
            }
            Some(crate::vhost::basic_credential(u, p))
        }
        _ => {
            return Err(field_error(
                "http_password",
                "set both http_user (without ':') and http_password, non-empty, or neither",
            ))
        }
    };
    let mut locations = Vec::new();
    for l in &route.locations {
        locations.push(
            routes::normalize_location(l).map_err(|m| field_error("locations", m.to_string()))?,
        );
    }
    if locations.is_empty() {
        locations.push("/".to_owned());
    }
    let pairs = hosts
        .iter()
        .flat_map(|h| locations.iter().map(move |l| (h.clone(), l.clone())))
        .collect();
    Ok(VhostClaim {
        pairs,
        auth,
        subdomain_host,
    })
}

/// What an `https` proxy may not set: the server routes it by the TLS server name without
/// decrypting anything, so it sees no path and can ask for no password.
fn check_https_fields(spec: &ProxySpec, route: &tunnel_proto::HttpRoute) -> Result<(), FieldError> {
    let set = [
        ("locations", !route.locations.is_empty()),
        ("http_user", route.http_user.is_some()),
        ("http_password", route.http_password.is_some()),
    ];
    if let Some((f, _)) = set.iter().find(|(_, on)| *on) {
        return Err(field_error(
            f,
            "not available for type = \"https\": the server routes it by the TLS server name \
             and never decrypts, so it sees no path or password; remove it, or serve plain \
             HTTP with type = \"http\"",
        ));
    }
    if spec.publish_port.is_some() {
        return Err(field_error(
            "publish_port",
            "an https proxy is reached on the server's vhost_https_bind by its domains; for a \
             TLS service on a port of its own use type = \"tcp\"",
        ));
    }
    Ok(())
}

/// The routes of an `https` proxy: each host in the https namespace ([`routes::sni_host`]).
fn https_claim(
    cfg: &ServerConfig,
    field: &str,
    hosts: Vec<String>,
    subdomain_host: Option<String>,
) -> Result<VhostClaim, FieldError> {
    if hosts.is_empty() {
        return Err(field_error(
            "domains",
            "an https proxy needs domains or subdomain: the server routes it by the TLS server \
             name (SNI)",
        ));
    }
    if cfg.vhost_https_bind.is_none() {
        return Err(field_error(
            field,
            "this server serves no HTTPS virtual hosts: set vhost_https_bind on the server",
        ));
    }
    Ok(VhostClaim {
        pairs: hosts
            .iter()
            .map(|h| (routes::sni_host(h), "/".to_owned()))
            .collect(),
        auth: None,
        subdomain_host: subdomain_host.map(|h| routes::sni_host(&h)),
    })
}

/// `max_domains_per_proxy`, `max_locations_per_proxy` and what is left of
/// `max_routes_per_client`, each refused with the key to raise.
fn check_caps(
    cfg: &ServerConfig,
    route: &tunnel_proto::HttpRoute,
    routes_left: usize,
) -> Result<(), FieldError> {
    let hosts = route.domains.len() + usize::from(route.subdomain.is_some());
    if hosts > cfg.max_domains_per_proxy {
        return Err(field_error(
            "domains",
            format!(
                "{hosts} host names, but this server allows {} per proxy \
                 (max_domains_per_proxy); the registration is too large",
                cfg.max_domains_per_proxy
            ),
        ));
    }
    let locations = route.locations.len();
    if locations > cfg.max_locations_per_proxy {
        return Err(field_error(
            "locations",
            format!(
                "{locations} locations, but this server allows {} per proxy \
                 (max_locations_per_proxy); the registration is too large",
                cfg.max_locations_per_proxy
            ),
        ));
    }
    let routes = hosts * locations.max(1);
    if routes > routes_left {
        let used = cfg.max_routes_per_client - routes_left;
        return Err(field_error(
            if locations > 1 {
                "locations"
            } else {
                "domains"
            },
            format!(
                "{routes} routes (host names x locations), with {used} held by this client's \
                 other proxies, but this server allows {} per client (max_routes_per_client)",
                cfg.max_routes_per_client
            ),
        ));
    }
    Ok(())
}

/// Names under the server's `subdomain_host` are handed out through `subdomain` only, and a
/// wildcard over them would take them all.
fn check_outside_subdomains(host: &str, base: &str) -> Result<(), FieldError> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name == base || name.ends_with(&format!(".{base}")) {
        return Err(field_error(
            "domains",
            format!(
                "{host} is under this server's subdomain_host {base}, whose names are claimed \
                 with subdomain = \"<label>\" only; use subdomain, or another domain"
            ),
        ));
    }
    if host.starts_with("*.") && base.ends_with(&format!(".{name}")) {
        return Err(field_error(
            "domains",
            format!(
                "{host} would cover this server's subdomain_host {base}, whose names are \
                 claimed with subdomain only; choose a narrower wildcard or exact names"
            ),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod https_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tunnel_proto::HttpRoute;

    fn spec(route: Option<HttpRoute>) -> ProxySpec {
        ProxySpec {
            http: route,
            ..ProxySpec::new("site", ProxyKind::Https)
        }
    }

    fn domains(d: &[&str]) -> HttpRoute {
        HttpRoute {
            domains: d.iter().map(|s| (*s).to_owned()).collect(),
            ..HttpRoute::default()
        }
    }

    fn field_of(cfg: &ServerConfig, spec: &ProxySpec) -> String {
        check_http_route(cfg, spec, 100).err().unwrap().field
    }

    #[test]
    fn an_https_proxy_claims_its_names_in_their_own_namespace() {
        let cfg = ServerConfig::default()
            .with_vhost_https_bind("127.0.0.1:0".parse().unwrap())
            .with_subdomain_host("tunnel.test");
        let mut route = domains(&["A.example", "*.b.example"]);
        route.subdomain = Some("app".into());
        let claim = check_http_route(&cfg, &spec(Some(route)), 100).unwrap();
        let hosts: Vec<_> = claim
            .pairs
            .iter()
            .map(|(h, l)| (h.as_str(), l.as_str()))
            .collect();
        assert_eq!(
            hosts,
            [
                ("a.example.-sni", "/"),
                ("*.b.example.-sni", "/"),
                ("app.tunnel.test.-sni", "/")
            ]
        );
        assert_eq!(claim.auth, None);
        assert_eq!(
            claim.subdomain_host.as_deref(),
            Some("app.tunnel.test.-sni")
        );
    }

    #[test]
    fn an_https_proxy_is_refused_what_needs_decryption_and_what_it_lacks() {
        let cfg = ServerConfig::default().with_vhost_https_bind("127.0.0.1:0".parse().unwrap());
        let mut with_location = domains(&["a.example"]);
        with_location.locations = vec!["/api".into()];
        assert_eq!(field_of(&cfg, &spec(Some(with_location))), "locations");
        let mut with_auth = domains(&["a.example"]);
        with_auth.http_user = Some("u".into());
        with_auth.http_password = Some("p".into());
        assert_eq!(field_of(&cfg, &spec(Some(with_auth))), "http_user");
        let mut published = spec(Some(domains(&["a.example"])));
        published.publish_port = Some(4443);
        assert_eq!(field_of(&cfg, &published), "publish_port");
        // No names at all, with or without a route.
        assert_eq!(field_of(&cfg, &spec(None)), "domains");
        assert_eq!(field_of(&cfg, &spec(Some(HttpRoute::default()))), "domains");
        // A server without vhost_https_bind.
        let off = ServerConfig::default().with_vhost_http_bind("127.0.0.1:0".parse().unwrap());
        let e = check_http_route(&off, &spec(Some(domains(&["a.example"]))), 100)
            .err()
            .unwrap();
        assert!(e.message.contains("vhost_https_bind"), "{e}");
    }
}
