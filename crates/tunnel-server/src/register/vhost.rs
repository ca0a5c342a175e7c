//! What an `http`, `http2` or `https` proxy may claim on the virtual hosts: its routes,
//! auth and caps, checked against this server before anything is taken.

use super::*;

/// What a proxy claims on the virtual host: `(host, location)` pairs and the
/// `Authorization` value its basic auth expects.
pub(super) struct VhostClaim {
    pub(super) pairs: Vec<Pair>,
    pub(super) auth: Option<String>,
    /// The host claimed through `subdomain`, so a conflict on it names that field.
    pub(super) subdomain_host: Option<String>,
}

/// Check an `http`/`http2` proxy's routing and auth settings against this server. Refused by
/// name rather than published unguarded: basic auth is enforced only on the virtual host.
/// `routes_left` is what the client's earlier proxies left of `max_routes_per_client`.
pub(super) fn check_http_route(
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
        if let Some(f) = first_path_or_auth_field(route) {
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

/// The first of the settings only the virtual host can apply (a path or basic auth) that
/// `route` sets.
fn first_path_or_auth_field(route: &tunnel_proto::HttpRoute) -> Option<&'static str> {
    [
        ("locations", !route.locations.is_empty()),
        ("http_user", route.http_user.is_some()),
        ("http_password", route.http_password.is_some()),
    ]
    .into_iter()
    .find_map(|(f, on)| on.then_some(f))
}

/// What an `https` proxy may not set: the server routes it by the TLS server name without
/// decrypting anything, so it sees no path and can ask for no password.
fn check_https_fields(spec: &ProxySpec, route: &tunnel_proto::HttpRoute) -> Result<(), FieldError> {
    if let Some(f) = first_path_or_auth_field(route) {
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

#[cfg(test)]
mod tests {
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
