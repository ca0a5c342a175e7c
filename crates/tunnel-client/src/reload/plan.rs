//! What a reload does, decided from the running config and the new one alone (no I/O).
//!
//! Every field of [`ClientConfig`], [`ProxyConfig`], [`HttpOptions`] and [`VisitorConfig`] is
//! classified here by destructuring without `..`: a new field does not compile until it is
//! either applied live or named as needing a restart. Nothing is silently ignored.

use std::fmt;

use crate::config::{ClientConfig, ProxyConfig, VisitorConfig};
use crate::error::{ClientError, ConfigProblem};
use crate::http_config::HttpOptions;

/// How to go from the running config to the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) proxies: Changes,
    pub(crate) visitors: Changes,
}

/// Items added, removed and changed, by name, in config order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    pub(crate) added: Vec<String>,
    pub(crate) removed: Vec<String>,
    pub(crate) changed: Vec<Changed>,
}

/// One item whose settings changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Changed {
    pub(crate) name: String,
    /// The config keys that differ, in declaration order.
    pub(crate) fields: Vec<&'static str>,
    /// Whether what the server is told about it differs (else the change is local only).
    pub(crate) server: bool,
}

/// Changed settings of the connection itself, which only a restart applies, by config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) fields: Vec<&'static str>,
}

impl From<Refusal> for ClientError {
    fn from(r: Refusal) -> Self {
        ClientError::Config(
            r.fields
                .into_iter()
                .map(|f| {
                    ConfigProblem::new(
                        f,
                        "cannot change while the client runs: restart the client to apply it",
                    )
                })
                .collect(),
        )
    }
}

impl Plan {
    /// Whether nothing changed.
    pub(crate) fn is_empty(&self) -> bool {
        self.proxies.is_empty() && self.visitors.is_empty()
    }

    /// Whether the server must be sent the new registration.
    pub(crate) fn registers(&self) -> bool {
        self.proxies.registers() || self.visitors.registers()
    }
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    fn registers(&self) -> bool {
        !self.added.is_empty() || !self.removed.is_empty() || self.changed.iter().any(|c| c.server)
    }

    /// Names the server gets news of: added ones and those whose registration changed.
    pub(crate) fn announced(&self) -> impl Iterator<Item = &str> {
        let changed = self.changed.iter().filter(|c| c.server);
        self.added
            .iter()
            .map(String::as_str)
            .chain(changed.map(|c| c.name.as_str()))
    }

    /// Names whose running instance stops: removed and changed ones.
    pub(crate) fn departing(&self) -> impl Iterator<Item = &str> {
        let changed = self.changed.iter().map(|c| c.name.as_str());
        self.removed.iter().map(String::as_str).chain(changed)
    }

    /// Names that start anew: added and changed ones.
    pub(crate) fn arriving(&self) -> impl Iterator<Item = &str> {
        let changed = self.changed.iter().map(|c| c.name.as_str());
        self.added.iter().map(String::as_str).chain(changed)
    }

    fn write(&self, what: &str, f: &mut fmt::Formatter<'_>, sep: &mut &'static str) -> fmt::Result {
        for name in &self.added {
            write!(f, "{sep}{what} {name} added")?;
            *sep = "; ";
        }
        for c in &self.changed {
            write!(
                f,
                "{sep}{what} {} changed ({})",
                c.name,
                c.fields.join(", ")
            )?;
            *sep = "; ";
        }
        for name in &self.removed {
            write!(f, "{sep}{what} {name} removed")?;
            *sep = "; ";
        }
        Ok(())
    }
}

/// One line for the log: "proxy b added; proxy a changed (proxy_protocol)".
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changed");
        }
        let mut sep = "";
        self.proxies.write("proxy", f, &mut sep)?;
        self.visitors.write("visitor", f, &mut sep)
    }
}

/// Compare the running config with `new`. Refused when a setting of the connection itself
/// changed; otherwise what to add, remove and change. Files named by the config (key file,
/// CA bundle) are compared by path: reading them is the caller's business.
pub(crate) fn plan(old: &ClientConfig, new: &ClientConfig) -> Result<Plan, Refusal> {
    // No `..`: a new field must be classified here before this compiles.
    let ClientConfig {
        server_addr,
        transport,
        ws_path,
        server_name,
        auth_key,
        auth_key_file,
        ca_cert,
        server_fingerprint,
        insecure_skip_verify,
        client_cert,
        client_key,
        id,
        proxies,
        visitors,
        connections,
        reconnect_max_delay,
        stats_bind,
        stats_token,
        heartbeat_timeout,
        shutdown_grace,
        log_format,
    } = new;
    let mut restart = Vec::new();
    let mut need = |field: &'static str, same: bool| {
        if !same {
            restart.push(field);
        }
    };
    // The connection, its trust and identity: read once per session or at start.
    // One address written as a string or as a list of one is the same setting.
    need(
        "server_addr",
        server_addr.addrs() == old.server_addr.addrs(),
    );
    need("transport", *transport == old.transport);
    need("ws_path", *ws_path == old.ws_path);
    need("server_name", *server_name == old.server_name);
    need("auth_key", *auth_key == old.auth_key);
    need("auth_key_file", *auth_key_file == old.auth_key_file);
    need("ca_cert", *ca_cert == old.ca_cert);
    need(
        "server_fingerprint",
        *server_fingerprint == old.server_fingerprint,
    );
    need(
        "insecure_skip_verify",
        *insecure_skip_verify == old.insecure_skip_verify,
    );
    need("client_cert", *client_cert == old.client_cert);
    need("client_key", *client_key == old.client_key);
    need("id", *id == old.id);
    need("connections", *connections == old.connections);
    // Read by the reconnect loop, the session and the stats listener when they start; the
    // running ones keep the old values, so applying them now would be a half-truth.
    need(
        "reconnect_max_delay",
        *reconnect_max_delay == old.reconnect_max_delay,
    );
    need("stats_bind", *stats_bind == old.stats_bind);
    need("stats_token", *stats_token == old.stats_token);
    need(
        "heartbeat_timeout",
        *heartbeat_timeout == old.heartbeat_timeout,
    );
    need("shutdown_grace", *shutdown_grace == old.shutdown_grace);
    // The logger is set up once, at start.
    need("log_format", *log_format == old.log_format);
    if !restart.is_empty() {
        return Err(Refusal { fields: restart });
    }
    Ok(Plan {
        proxies: diff(&old.proxies, proxies, |p| &p.name, proxy_fields),
        visitors: diff(&old.visitors, visitors, |v| &v.name, visitor_fields),
    })
}

/// Match items by name; `fields` names what differs and whether the server must hear of it.
fn diff<T>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
    fields: impl Fn(&T, &T) -> (Vec<&'static str>, bool),
) -> Changes {
    let mut out = Changes::default();
    for n in new {
        match old.iter().find(|o| name(o) == name(n)) {
            None => out.added.push(name(n).clone()),
            Some(o) => {
                let (fields, server) = fields(o, n);
                if !fields.is_empty() {
                    out.changed.push(Changed {
                        name: name(n).clone(),
                        fields,
                        server,
                    });
                }
            }
        }
    }
    for o in old {
        if !new.iter().any(|n| name(n) == name(o)) {
            out.removed.push(name(o).clone());
        }
    }
    out
}

/// The keys of a proxy that differ (all applied live: the next user connection gets them).
fn proxy_fields(old: &ProxyConfig, new: &ProxyConfig) -> (Vec<&'static str>, bool) {
    let ProxyConfig {
        name: _,
        kind,
        local_addr,
        publish_port,
        secret,
        allow_visitors,
        proxy_protocol,
        allow_ips,
        deny_ips,
        bandwidth_limit,
        http,
        udp_idle_timeout,
        group,
        group_key,
        health_check,
    } = new;
    let HttpOptions {
        host_rewrite,
        request_headers,
        response_headers,
        forwarded_headers,
        local_tls,
        local_ca_cert,
        local_tls_insecure,
        max_local_conns,
        max_header_size,
        idle_timeout,
        response_timeout,
        domains,
        subdomain,
        locations,
        http_user,
        http_password,
    } = http;
    let h = &old.http;
    let mut out = Vec::new();
    let mut note = |field: &'static str, same: bool| {
        if !same {
            out.push(field);
        }
    };
    note("type", *kind == old.kind);
    note("local_addr", *local_addr == old.local_addr);
    note("publish_port", *publish_port == old.publish_port);
    note("secret", *secret == old.secret);
    note("allow_visitors", *allow_visitors == old.allow_visitors);
    note("proxy_protocol", *proxy_protocol == old.proxy_protocol);
    note("allow_ips", *allow_ips == old.allow_ips);
    note("deny_ips", *deny_ips == old.deny_ips);
    note("bandwidth_limit", *bandwidth_limit == old.bandwidth_limit);
    note(
        "udp_idle_timeout",
        *udp_idle_timeout == old.udp_idle_timeout,
    );
    note("group", *group == old.group);
    note("group_key", *group_key == old.group_key);
    // Read by the running check at its next probe.
    note("health_check", *health_check == old.health_check);
    note("host_rewrite", *host_rewrite == h.host_rewrite);
    note("request_headers", *request_headers == h.request_headers);
    note("response_headers", *response_headers == h.response_headers);
    note(
        "forwarded_headers",
        *forwarded_headers == h.forwarded_headers,
    );
    note("local_tls", *local_tls == h.local_tls);
    note("local_ca_cert", *local_ca_cert == h.local_ca_cert);
    note(
        "local_tls_insecure",
        *local_tls_insecure == h.local_tls_insecure,
    );
    note("max_local_conns", *max_local_conns == h.max_local_conns);
    note("max_header_size", *max_header_size == h.max_header_size);
    note("idle_timeout", *idle_timeout == h.idle_timeout);
    note("response_timeout", *response_timeout == h.response_timeout);
    note("domains", *domains == h.domains);
    note("subdomain", *subdomain == h.subdomain);
    note("locations", *locations == h.locations);
    note("http_user", *http_user == h.http_user);
    note("http_password", *http_password == h.http_password);
    // What reaches the server is derived, not listed: a key it does not see for this type
    // (`domains` of a `tcp` proxy) changes nothing there.
    let server = old.spec() != new.spec();
    (out, server)
}

/// The keys of a visitor that differ (applied live: its listener restarts, on the same
/// socket when `bind` stays).
fn visitor_fields(old: &VisitorConfig, new: &VisitorConfig) -> (Vec<&'static str>, bool) {
    let VisitorConfig {
        name: _,
        proxy,
        publish_port,
        bind,
        secret,
        kind,
    } = new;
    let mut out = Vec::new();
    let mut note = |field: &'static str, same: bool| {
        if !same {
            out.push(field);
        }
    };
    note("proxy", *proxy == old.proxy);
    note("publish_port", *publish_port == old.publish_port);
    note("bind", *bind == old.bind);
    note("secret", *secret == old.secret);
    note("type", *kind == old.kind);
    let server = *proxy != old.proxy || *publish_port != old.publish_port;
    (out, server)
}
