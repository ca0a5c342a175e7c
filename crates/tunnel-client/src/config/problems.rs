//! Every problem with a configuration, found at once: each names its field and the fix.

use super::*;

impl ClientConfig {
    /// Every problem with this configuration, TLS files included. Empty means usable.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        self.server_addr.problems(&mut out);
        if let Err(p) = self.resolve_auth_key() {
            out.push(p);
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            out.push(ConfigProblem::new(
                "connections",
                format!(
                    "is {}; it must be between 1 and {MAX_CONNECTIONS} (1 is one TLS connection \
                     for everything; more spread busy streams over more cores)",
                    self.connections
                ),
            ));
        }
        if let Err(m) = tunnel_transport::check_ws_path(&self.ws_path) {
            out.push(ConfigProblem::new("ws_path", m));
        }
        match self.trust() {
            // Without a server (an empty list, reported above) there is no name to check for.
            Ok(ClientTrust::CaFile(_)) if self.server_addr.addrs().is_empty() => {}
            Ok(ClientTrust::CaFile(path)) => {
                if let Err(e) = tunnel_transport::TlsTransport::client(
                    &self.effective_server_name(),
                    &ClientTrust::CaFile(path),
                ) {
                    out.push(ConfigProblem::new("ca_cert", e.to_string()));
                }
            }
            Ok(_) => {}
            Err(p) => out.push(p),
        }
        if let Err(p) = self.client_certificate() {
            out.push(p);
        }
        if let Some(id) = &self.id {
            if let Err(m) = tunnel_proto::validate_name(id) {
                out.push(ConfigProblem::new("id", m.to_string()));
            }
        }
        if self.heartbeat_timeout.is_zero() {
            out.push(ConfigProblem::new(
                "heartbeat_timeout",
                "must be at least 1 (seconds)",
            ));
        }
        if self.reconnect_max_delay.is_zero() {
            out.push(ConfigProblem::new(
                "reconnect_max_delay",
                "must be at least 1 (seconds)",
            ));
        }
        let mut names = HashSet::new();
        for (i, p) in self.proxies.iter().enumerate() {
            let at = |f: &str| format!("proxies[{i}].{f}");
            if let Err(m) = tunnel_proto::validate_name(&p.name) {
                out.push(ConfigProblem::new(at("name"), m.to_string()));
            } else if !names.insert(p.name.clone()) {
                out.push(ConfigProblem::new(
                    at("name"),
                    format!(
                        "duplicate proxy name {:?}: each proxy needs its own name",
                        p.name
                    ),
                ));
            }
            crate::http_config::problems(p, i, &mut out);
            if p.local_addr.is_empty() {
                out.push(ConfigProblem::new(
                    at("local_addr"),
                    "missing: the local service to expose, as host:port (e.g. \"127.0.0.1:3000\")",
                ));
            } else if !crate::publish::is_local_addr(p) {
                out.push(ConfigProblem::new(
                    at("local_addr"),
                    format!(
                        "{:?} is not host:port (e.g. \"127.0.0.1:3000\")",
                        p.local_addr
                    ),
                ));
            }
            crate::publish::problems(p, i, &mut out);
            if let Err(e) = tunnel_proto::IpFilter::new(&p.allow_ips, &p.deny_ips) {
                let field = e.ip_rule_field().unwrap_or("allow_ips");
                out.push(ConfigProblem::new(at(field), e.to_string()));
            }
            if let Some(Err(m)) = p
                .bandwidth_limit
                .as_deref()
                .map(str::parse::<tunnel_proto::Bandwidth>)
            {
                out.push(ConfigProblem::new(at("bandwidth_limit"), m.to_string()));
            }
            crate::udp::problems(p, i, &mut out);
            crate::health::problems(p, i, &mut out);
            group_problems(p, i, &mut out);
            if p.secret.as_deref() == Some("") {
                out.push(ConfigProblem::new(
                    at("secret"),
                    "empty: remove it or set a real secret",
                ));
            }
        }
        let mut vnames = HashSet::new();
        for (i, v) in self.visitors.iter().enumerate() {
            let at = |f: &str| format!("visitors[{i}].{f}");
            if let Err(m) = tunnel_proto::validate_name(&v.name) {
                out.push(ConfigProblem::new(at("name"), m.to_string()));
            } else if !vnames.insert(v.name.clone()) {
                out.push(ConfigProblem::new(
                    at("name"),
                    format!("duplicate visitor name {:?}", v.name),
                ));
            }
            if let Err(m) = tunnel_proto::validate_name(&v.proxy) {
                out.push(ConfigProblem::new(at("proxy"), m.to_string()));
            }
            if !matches!(v.kind, ProxyKind::Tcp | ProxyKind::Udp) {
                out.push(ConfigProblem::new(
                    at("type"),
                    format!(
                        "a visitor is \"tcp\" or \"udp\", not {:?}; http proxies are reached by \
                         their domains",
                        v.kind.to_string()
                    ),
                ));
            }
            if !is_host_port(&v.bind) {
                out.push(ConfigProblem::new(
                    at("bind"),
                    format!("{:?} is not host:port (e.g. \"127.0.0.1:5432\")", v.bind),
                ));
            }
        }
        out.extend(self.admin().problems());
        out
    }
}

/// `group` and `group_key` come together; a group is shared on a `publish_port` or domains.
fn group_problems(p: &ProxyConfig, i: usize, out: &mut Vec<ConfigProblem>) {
    let at = |f: &str| format!("proxies[{i}].{f}");
    match (&p.group, p.group_key.as_deref()) {
        (None, None) => {}
        (None, Some(_)) => out.push(ConfigProblem::new(
            at("group_key"),
            "set without group: add group = \"<name>\", or remove group_key",
        )),
        (Some(_), None | Some("")) => out.push(ConfigProblem::new(
            at("group_key"),
            "missing: a group needs a group_key, the secret every member shares",
        )),
        (Some(g), Some(key)) => {
            if key.len() > 256 {
                out.push(ConfigProblem::new(
                    at("group_key"),
                    format!(
                        "{} bytes long; use at most 256 (the server refuses more)",
                        key.len()
                    ),
                ));
            }
            if let Err(m) = tunnel_proto::validate_name(g) {
                out.push(ConfigProblem::new(
                    at("group"),
                    m.to_string().replace("name", "group"),
                ));
            }
            let hosts = !p.http.domains.is_empty() || p.http.subdomain.is_some();
            if p.publish_port.is_none() && !hosts {
                out.push(ConfigProblem::new(
                    at("group"),
                    "a group shares a publish_port (tcp, udp) or domains (http, https): set one of them",
                ));
            }
            if matches!(
                p.publish_port,
                Some(crate::PublishPort::Auto | crate::PublishPort::Range { .. })
            ) {
                out.push(ConfigProblem::new(
                    at("publish_port"),
                    "a group's members share one fixed port: set a number, not \"auto\" or a range",
                ));
            }
        }
    }
}

pub(crate) fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}
