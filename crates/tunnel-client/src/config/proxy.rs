//! The `[[proxies]]` and `[[visitors]]` entries: their keys, defaults and builders.

use std::fmt;

use serde::Deserialize;
use tunnel_proto::{ProxyKind, ProxySpec};
use tunnel_transport::config_file::{self, Schema};

/// One `[[proxies]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Unique name; visitors and logs use it.
    pub name: String,
    /// `"tcp"` (default), `"udp"`, `"http"`, `"http2"`, or `"https"` (TLS routed by its
    /// server name on the server's `vhost_https_bind`, passed through to `local_addr`).
    #[serde(rename = "type", default = "default_kind")]
    pub kind: ProxyKind,
    /// The local service, `host:port`. Only this client ever dials it. Required; defaulted
    /// only so that a misspelt key is reported by name (with the flattened HTTP keys, serde
    /// would otherwise report the missing field first), and checked in `problems`.
    #[serde(default)]
    pub local_addr: String,
    /// The server port users connect to: a port, `"auto"` (the server picks one) or a
    /// block `"6000-6010"` (tcp and udp). Without it the proxy is private (visitors only).
    #[serde(default)]
    pub publish_port: Option<crate::PublishPort>,
    /// Visitors must present this secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// Client ids allowed to visit, or `["*"]`.
    #[serde(default)]
    pub allow_visitors: Vec<String>,
    /// `"v1"` or `"v2"`: start each local connection with a PROXY protocol header naming the
    /// user's address and the published one (`tcp`, `http` and `https` proxies).
    #[serde(default)]
    pub proxy_protocol: Option<tunnel_proto::proxy_protocol::Version>,
    /// User addresses allowed in, as CIDRs or addresses (IPv4 and IPv6); empty means all.
    /// Enforced by the server.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// User addresses refused, even when `allow_ips` lists them. Enforced by the server.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// `"10MiB"`: bytes per second each direction of this proxy may move, all its
    /// connections together. Enforced by the server, which may lower it.
    #[serde(default)]
    pub bandwidth_limit: Option<String>,
    /// HTTP settings (`type = "http"` / `"http2"`), flat in the TOML table; see
    /// [`HttpOptions`](crate::HttpOptions) for each key.
    #[serde(flatten)]
    pub http: crate::http_config::HttpOptions,
    /// `type = "udp"`: seconds a flow (one user address) lives without a datagram either
    /// way. Default 60.
    #[serde(default)]
    pub udp_idle_timeout: Option<u64>,
    /// Load-balancing group: proxies of any clients with the same `group` and `group_key`
    /// share one `publish_port` (or the same domains).
    #[serde(default)]
    pub group: Option<String>,
    /// The secret that lets this proxy join `group`.
    #[serde(default)]
    pub group_key: Option<String>,
    /// Probe the local service; a failing one withdraws the proxy until it recovers.
    #[serde(default)]
    pub health_check: Option<crate::health::HealthCheck>,
}

/// The keys of a `[[proxies]]` table besides the HTTP ones: serde cannot list the keys of a
/// struct with a flattened field, so an unknown key there is answered from this list.
pub(super) const PROXY_KEYS: [&str; 14] = [
    "name",
    "type",
    "local_addr",
    "publish_port",
    "secret",
    "allow_visitors",
    "proxy_protocol",
    "allow_ips",
    "deny_ips",
    "bandwidth_limit",
    "udp_idle_timeout",
    "group",
    "group_key",
    "health_check",
];

pub(super) fn schema() -> Schema {
    let http = config_file::fields_of::<crate::http_config::HttpOptions>();
    Schema::new().table(
        "proxies[]",
        PROXY_KEYS.into_iter().chain(http.iter().copied()),
    )
}

/// Seconds a UDP flow lives without a datagram when `udp_idle_timeout` is not set.
pub(crate) const DEFAULT_UDP_IDLE: u64 = 60;

fn default_kind() -> ProxyKind {
    ProxyKind::Tcp
}

/// One `[[visitors]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VisitorConfig {
    /// Unique name, for logs.
    pub name: String,
    /// The other client's proxy name.
    pub proxy: String,
    /// That proxy's `publish_port`, or 0 (the default) for a private proxy.
    #[serde(default)]
    pub publish_port: u16,
    /// Where local applications connect, `host:port`.
    pub bind: String,
    /// The proxy's secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// `"tcp"` (default) or `"udp"`: the other client's proxy's type. A `udp` visitor binds
    /// a UDP socket at `bind`, and each local address sending to it is its own flow.
    #[serde(rename = "type", default = "default_kind")]
    pub kind: ProxyKind,
}

impl ProxyConfig {
    /// A TCP proxy for `local_addr`, published on `publish_port` when given.
    pub fn tcp(name: &str, local_addr: &str, publish_port: Option<u16>) -> Self {
        ProxyConfig {
            name: name.to_string(),
            kind: ProxyKind::Tcp,
            local_addr: local_addr.to_string(),
            publish_port: publish_port.map(crate::PublishPort::Port),
            secret: None,
            allow_visitors: Vec::new(),
            proxy_protocol: None,
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            bandwidth_limit: None,
            http: crate::http_config::HttpOptions::default(),
            udp_idle_timeout: None,
            group: None,
            group_key: None,
            health_check: None,
        }
    }

    /// Join load-balancing group `group` with `key`.
    pub fn with_group(mut self, group: &str, key: &str) -> Self {
        self.group = Some(group.to_owned());
        self.group_key = Some(key.to_owned());
        self
    }

    /// Probe the local service (see [`HealthCheck`](crate::HealthCheck)).
    pub fn with_health_check(mut self, check: crate::health::HealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// A UDP proxy for `local_addr`, published on `publish_port` when given.
    pub fn udp(name: &str, local_addr: &str, publish_port: Option<u16>) -> Self {
        let mut p = ProxyConfig::tcp(name, local_addr, publish_port);
        p.kind = ProxyKind::Udp;
        p
    }

    /// Publish on `"auto"` or a block of ports instead (see [`crate::PublishPort`]).
    pub fn with_publish_port(mut self, publish: crate::PublishPort) -> Self {
        self.publish_port = Some(publish);
        self
    }

    /// An HTTPS proxy for `local_addr` (a TLS service) claiming `domains` on the server's
    /// `vhost_https_bind`: routed by the TLS server name, passed through undecrypted.
    pub fn https(name: &str, local_addr: &str, domains: &[&str]) -> Self {
        let mut p = ProxyConfig::tcp(name, local_addr, None);
        p.kind = ProxyKind::Https;
        p.http.domains = domains.iter().map(|d| d.to_string()).collect();
        p
    }

    /// Close a UDP flow after this many seconds without a datagram (`udp_idle_timeout`).
    pub fn with_udp_idle_timeout(mut self, secs: u64) -> Self {
        self.udp_idle_timeout = Some(secs);
        self
    }

    /// Let visitors in with this secret.
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_string());
        self
    }

    /// Close public connections idle this many seconds (0: never); see
    /// [`HttpOptions::idle_timeout`](crate::HttpOptions::idle_timeout).
    pub fn with_idle_timeout(mut self, secs: u64) -> Self {
        self.http.idle_timeout = Some(secs);
        self
    }

    /// Let users in only from these networks (CIDRs or addresses).
    pub fn with_allow_ips(mut self, nets: &[&str]) -> Self {
        self.allow_ips = nets.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Refuse users from these networks (CIDRs or addresses).
    pub fn with_deny_ips(mut self, nets: &[&str]) -> Self {
        self.deny_ips = nets.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Limit each direction to this rate (`"10MiB"`).
    pub fn with_bandwidth_limit(mut self, rate: &str) -> Self {
        self.bandwidth_limit = Some(rate.to_string());
        self
    }

    /// Let visitors in from these client ids (`"*"` for any).
    pub fn with_allow_visitors(mut self, ids: &[&str]) -> Self {
        self.allow_visitors = ids.iter().map(|s| s.to_string()).collect();
        self
    }

    pub(crate) fn spec(&self) -> ProxySpec {
        ProxySpec {
            name: self.name.clone(),
            kind: self.kind,
            publish_port: self.publish_port.and_then(crate::PublishPort::port),
            publish_ports: self.publish_port.and_then(crate::PublishPort::request),
            secret: self.secret.clone(),
            allow_visitors: self.allow_visitors.clone(),
            http: self.http.route(self.kind),
            idle_timeout: Some(match self.kind {
                ProxyKind::Udp => self.udp_idle_timeout.unwrap_or(DEFAULT_UDP_IDLE),
                kind => self.http.public_idle(kind),
            }),
            allow_ips: self.allow_ips.clone(),
            deny_ips: self.deny_ips.clone(),
            // Checked by `problems` before any registration; a bad value is not sent.
            bandwidth_limit: self
                .bandwidth_limit
                .as_deref()
                .and_then(|b| b.parse::<tunnel_proto::Bandwidth>().ok())
                .map(tunnel_proto::Bandwidth::bytes_per_second),
            group: self.group.clone(),
            group_key: self.group_key.clone(),
        }
    }
}

impl VisitorConfig {
    /// A visitor listening on `bind` for proxy `proxy` (port 0 = private proxy).
    pub fn new(name: &str, proxy: &str, publish_port: u16, bind: &str) -> Self {
        VisitorConfig {
            name: name.to_string(),
            proxy: proxy.to_string(),
            publish_port,
            bind: bind.to_string(),
            secret: None,
            kind: ProxyKind::Tcp,
        }
    }

    /// A UDP visitor (see [`VisitorConfig::kind`]).
    pub fn udp(mut self) -> Self {
        self.kind = ProxyKind::Udp;
        self
    }

    /// Present this secret to the proxy.
    pub fn with_secret(mut self, secret: &str) -> Self {
        self.secret = Some(secret.to_string());
        self
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("name", &self.name)
            .field("type", &self.kind)
            .field("local_addr", &self.local_addr)
            .field("publish_port", &self.publish_port)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("allow_visitors", &self.allow_visitors)
            .field("proxy_protocol", &self.proxy_protocol)
            .field("allow_ips", &self.allow_ips)
            .field("deny_ips", &self.deny_ips)
            .field("bandwidth_limit", &self.bandwidth_limit)
            .field("http", &self.http)
            .field("udp_idle_timeout", &self.udp_idle_timeout)
            .field("group", &self.group)
            .field("group_key", &self.group_key.as_ref().map(|_| "***"))
            .field("health_check", &self.health_check)
            .finish()
    }
}

impl fmt::Debug for VisitorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VisitorConfig")
            .field("name", &self.name)
            .field("proxy", &self.proxy)
            .field("publish_port", &self.publish_port)
            .field("type", &self.kind)
            .field("bind", &self.bind)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}
