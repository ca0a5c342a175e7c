//! Client configuration: the TOML file format, defaults, and validation.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::{ProxyKind, ProxySpec, RegisterRequest, VisitorSpec};
use tunnel_transport::config_file::{self, Schema};
use tunnel_transport::{ClientCert, ClientTrust, Fingerprint, Transport, TransportKind};

use crate::error::{ClientError, ConfigProblem};
use crate::server_addr::{host_of, ServerAddr};

/// Everything a client needs. Built from a TOML file ([`ClientConfig::from_file`]) or in code.
///
/// ```
/// let cfg = tunnel_client::ClientConfig::from_toml(r#"
///     server_addr = "tunnel.example.com:8443"
///     auth_key = "correct horse battery staple"
///     server_fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
///
///     [[proxies]]
///     name = "web"
///     type = "tcp"
///     local_addr = "127.0.0.1:3000"
///     publish_port = 8080
/// "#).unwrap();
/// assert!(cfg.problems().is_empty());
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The server, as `host:port`, or a list of servers that serve the same clients: the
    /// client tries them in an order shuffled once at start and moves on when one is down.
    pub server_addr: ServerAddr,
    /// How to reach it: `"tls"` (default), `"h2"`, `"wss"` or `"ws"`.
    #[serde(default, deserialize_with = "transport_kind")]
    pub transport: TransportKind,
    /// URL path of the HTTP/2 request or WebSocket upgrade (h2, wss, ws). Default `/tunnel`.
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
    /// The name the server certificate must carry (and the SNI). Default: the host of the
    /// address being dialled (each entry's own, for a list).
    #[serde(default)]
    pub server_name: Option<String>,
    /// The shared key. Never sent over the wire.
    #[serde(default)]
    pub auth_key: Option<String>,
    /// Read the key from this file instead (trailing newline ignored).
    #[serde(default)]
    pub auth_key_file: Option<PathBuf>,
    /// Trust server certificates issued by this PEM CA bundle.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Trust exactly the server certificate with this SHA-256 fingerprint (`"sha256:HEX"`).
    #[serde(default)]
    pub server_fingerprint: Option<String>,
    /// Accept any server certificate. Only for tests: anyone on the path can read the traffic.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// This client's certificate (PEM chain, end-entity first), presented to a server with
    /// `client_ca` (mutual TLS). Its name (first DNS subject alternative name, else common
    /// name) must be this client's `id`. With it the auth key is optional: the server then
    /// takes the certificate alone, or the certificate and the key when both are set.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The private key of `client_cert` (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// This client's name on the server, unique among live clients. Default: the name of
    /// `client_cert` when there is one (the id it proves), else the hostname.
    #[serde(default)]
    pub id: Option<String>,
    /// Local services to expose.
    #[serde(default)]
    pub proxies: Vec<ProxyConfig>,
    /// Local listeners that reach other clients' proxies.
    #[serde(default)]
    pub visitors: Vec<VisitorConfig>,
    /// TLS connections to the server, 1 to 16. Streams are spread over them (each new one on
    /// the connection carrying the fewest), so several busy streams are encrypted on several
    /// cores at both ends instead of one. The first connection registers; the others join
    /// it, and the server caps them at its `max_connections_per_client`. Default 1.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Longest wait between reconnection attempts; whole seconds in the file. Default 30.
    #[serde(
        default = "default_reconnect_max",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub reconnect_max_delay: Duration,
    /// Serve this client's own stats (`/metrics`, `/api/stats`, `/healthz`) here. Default: off.
    #[serde(default)]
    pub stats_bind: Option<std::net::SocketAddr>,
    /// When set, `/metrics` and `/api/stats` need `Authorization: Bearer <stats_token>`.
    #[serde(default)]
    pub stats_token: Option<String>,
    /// `"text"` (default) or `"json"`: how the `tunnel-client` binary writes its log. The
    /// engine itself does not read it.
    #[serde(default)]
    pub log_format: tunnel_transport::LogFormat,
    /// Silence from the server after which the connection is declared dead and
    /// re-established; whole seconds in the file. Default 30.
    #[serde(
        default = "default_heartbeat_timeout",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub heartbeat_timeout: Duration,
    /// How long open connections may run on after SIGTERM / Ctrl-C before they are closed;
    /// whole seconds in the file. Default 10.
    #[serde(
        default = "default_shutdown_grace",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub shutdown_grace: Duration,
}

/// The values `transport` takes, for serde's "unknown variant" message (which the loader
/// answers with the closest one).
const TRANSPORTS: [&str; 4] = ["tls", "h2", "wss", "ws"];

fn transport_kind<'de, D: serde::Deserializer<'de>>(d: D) -> Result<TransportKind, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::unknown_variant(&s, &TRANSPORTS))
}
fn default_ws_path() -> String {
    tunnel_transport::DEFAULT_WS_PATH.to_owned()
}
/// Most `connections`: past the cores of both machines, more only cost memory.
pub(crate) const MAX_CONNECTIONS: usize = 16;

fn default_connections() -> usize {
    1
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_heartbeat_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

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
const PROXY_KEYS: [&str; 14] = [
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

fn schema() -> Schema {
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

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server_addr", &self.server_addr)
            .field("transport", &self.transport)
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "***"))
            .field("id", &self.id)
            .field("proxies", &self.proxies)
            .field("visitors", &self.visitors)
            .finish_non_exhaustive()
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

impl ClientConfig {
    /// A config for `server_addr` with no proxies yet.
    pub fn new(server_addr: impl Into<String>) -> Self {
        ClientConfig {
            server_addr: ServerAddr::One(server_addr.into()),
            transport: TransportKind::Tls,
            ws_path: default_ws_path(),
            server_name: None,
            auth_key: None,
            auth_key_file: None,
            ca_cert: None,
            server_fingerprint: None,
            insecure_skip_verify: false,
            client_cert: None,
            client_key: None,
            id: None,
            proxies: Vec::new(),
            visitors: Vec::new(),
            connections: default_connections(),
            reconnect_max_delay: default_reconnect_max(),
            heartbeat_timeout: default_heartbeat_timeout(),
            shutdown_grace: default_shutdown_grace(),
            stats_bind: None,
            stats_token: None,
            log_format: tunnel_transport::LogFormat::Text,
        }
    }

    /// Parse a TOML document. Every problem in it is reported at once, each with its line and
    /// column: syntax, wrong types, unknown keys (with the closest valid one), missing keys.
    /// The checks that need the whole config come after, from [`ClientConfig::problems`].
    pub fn from_toml(text: &str) -> Result<Self, ClientError> {
        Self::parse(text, None)
    }

    /// Read and parse a TOML file, as [`ClientConfig::from_toml`].
    pub fn from_file(path: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Self, ClientError> {
        config_file::parse(text, &schema()).map_err(|problems| ClientError::ConfigSyntax {
            path: path.map(Path::to_path_buf),
            problems,
        })
    }

    /// Use any of these servers (see [`ClientConfig::server_addr`]) instead of the one given
    /// to [`ClientConfig::new`].
    pub fn with_server_addrs<S: Into<String>>(
        mut self,
        addrs: impl IntoIterator<Item = S>,
    ) -> Self {
        self.server_addr = ServerAddr::List(addrs.into_iter().map(Into::into).collect());
        self
    }

    /// Reach the server over this transport.
    pub fn with_transport(mut self, kind: TransportKind) -> Self {
        self.transport = kind;
        self
    }

    /// Spread streams over this many connections to the server (see [`ClientConfig::connections`]).
    pub fn with_connections(mut self, n: usize) -> Self {
        self.connections = n;
        self
    }

    /// URL path of the HTTP/2 request or WebSocket upgrade.
    pub fn with_ws_path(mut self, path: impl Into<String>) -> Self {
        self.ws_path = path.into();
        self
    }

    /// Build the configured transport for each server, in the order written. `ws` has no TLS
    /// of its own, so no trust store is loaded for it, and it says loudly what that means.
    pub(crate) fn build_transports(&self) -> Result<Vec<crate::servers::Server>, ClientError> {
        let trust = if self.transport == TransportKind::Ws {
            tracing::warn!(
                "transport = \"ws\": no TLS between this client and {}; the key proof and \
                 everything in the tunnel travel in plain text to whatever terminates TLS for \
                 the server, so only use it behind your own TLS terminator (or use \"wss\"). \
                 ca_cert / server_fingerprint are not used.",
                self.server_addr
            );
            ClientTrust::SystemRoots // not used: ws has no TLS to verify
        } else {
            self.trust().map_err(|p| ClientError::Config(vec![p]))?
        };
        let cert = self
            .client_certificate()
            .map_err(|p| ClientError::Config(vec![p]))?;
        if let Some(info) = cert.as_ref().and_then(ClientCert::info) {
            crate::client_cert::check_at_start(self, info);
        }
        // One transport per certificate name: entries that share a name (all of them when
        // `server_name` is set) share its trust store, loaded and warned about once.
        let mut by_name: Vec<(String, Arc<dyn Transport>)> = Vec::new();
        let mut out = Vec::new();
        for addr in self.server_addr.addrs() {
            let name = self.server_name_for(addr);
            let transport = match by_name.iter().find(|(n, _)| *n == name) {
                Some((_, t)) => t.clone(),
                None => {
                    let t: Arc<dyn Transport> = tunnel_transport::client_transport_with_cert(
                        self.transport,
                        &name,
                        &trust,
                        &self.ws_path,
                        cert.as_ref(),
                    )?
                    .into();
                    by_name.push((name, t.clone()));
                    t
                }
            };
            out.push(crate::servers::Server {
                addr: addr.clone(),
                transport,
            });
        }
        Ok(out)
    }

    /// Set the shared key.
    pub fn with_auth_key(mut self, key: impl Into<String>) -> Self {
        self.auth_key = Some(key.into());
        self
    }

    /// Pin the server certificate.
    pub fn with_fingerprint(mut self, fp: Fingerprint) -> Self {
        self.server_fingerprint = Some(fp.to_string());
        self
    }

    /// Trust this CA bundle.
    pub fn with_ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// Set the name verified against the server certificate.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Set this client's id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Add a proxy.
    pub fn with_proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxies.push(proxy);
        self
    }

    /// Declare the server dead after `timeout` of silence.
    pub fn with_heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }

    /// Set how long open connections may finish after a shutdown begins.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Cap the wait between reconnection attempts.
    pub fn with_reconnect_max_delay(mut self, max: Duration) -> Self {
        self.reconnect_max_delay = max;
        self
    }

    /// Serve this client's stats endpoint on `addr`.
    pub fn with_stats_bind(mut self, addr: std::net::SocketAddr) -> Self {
        self.stats_bind = Some(addr);
        self
    }

    /// Add a visitor.
    pub fn with_visitor(mut self, visitor: VisitorConfig) -> Self {
        self.visitors.push(visitor);
        self
    }

    /// The auth key from `auth_key` or `auth_key_file`; with a `client_cert` and neither,
    /// the empty key, which tells the server the certificate stands alone.
    pub fn resolve_auth_key(&self) -> Result<String, ConfigProblem> {
        if self.client_cert.is_some() && self.auth_key.is_none() && self.auth_key_file.is_none() {
            return Ok(String::new());
        }
        tunnel_transport::resolve_auth_key(self.auth_key.as_deref(), self.auth_key_file.as_deref())
    }

    /// Present the certificate in `cert` with the key in `key` (PEM files) to a server that
    /// asks for one (mutual TLS).
    pub fn with_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }

    /// The client certificate, loaded, if one is configured: both files must be set, and
    /// the key must belong to the certificate. Each problem names its field.
    pub fn client_certificate(&self) -> Result<Option<ClientCert>, ConfigProblem> {
        match (&self.client_cert, &self.client_key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigProblem::new(
                "client_key",
                "client_cert is set but client_key is not: give the certificate's private key \
                 file too",
            )),
            (None, Some(_)) => Err(ConfigProblem::new(
                "client_cert",
                "client_key is set but client_cert is not: give the certificate file too",
            )),
            (Some(_), Some(_)) if self.transport == TransportKind::Ws => Err(ConfigProblem::new(
                "client_cert",
                "transport = \"ws\" has no TLS of its own, so no certificate can be presented \
                 (TLS ends at the proxy in front of the server): use transport = \"wss\", \
                 \"h2\" or \"tls\"",
            )),
            (Some(cert), Some(key)) => {
                let loaded = ClientCert::load(cert, key).map_err(|e| {
                    let field = match &e {
                        tunnel_transport::TransportError::Pem { path, .. } if path == key => {
                            "client_key"
                        }
                        _ => "client_cert",
                    };
                    ConfigProblem::new(field, e.to_string())
                })?;
                Ok(Some(loaded))
            }
        }
    }

    /// The name checked against the certificate: `server_name`, or the host of the first
    /// address of `server_addr` (see [`ClientConfig::server_name_for`] for the others).
    pub fn effective_server_name(&self) -> String {
        let first = self.server_addr.addrs().first().map_or("", String::as_str);
        self.server_name_for(first)
    }

    /// The name checked against the certificate of the server at `addr`: `server_name`, or
    /// the host of `addr`.
    pub fn server_name_for(&self, addr: &str) -> String {
        match &self.server_name {
            Some(n) => n.clone(),
            None => host_of(addr).to_owned(),
        }
    }

    /// How the server certificate is checked.
    pub fn trust(&self) -> Result<ClientTrust, ConfigProblem> {
        let chosen = [
            self.ca_cert.is_some(),
            self.server_fingerprint.is_some(),
            self.insecure_skip_verify,
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if chosen > 1 {
            return Err(ConfigProblem::new(
                "ca_cert",
                "set only one of ca_cert, server_fingerprint and insecure_skip_verify",
            ));
        }
        if let Some(fp) = &self.server_fingerprint {
            let fp: Fingerprint = fp
                .parse()
                .map_err(|e| ConfigProblem::new("server_fingerprint", format!("{e}")))?;
            return Ok(ClientTrust::Fingerprint(fp));
        }
        if let Some(ca) = &self.ca_cert {
            return Ok(ClientTrust::CaFile(ca.clone()));
        }
        if self.insecure_skip_verify {
            return Ok(ClientTrust::InsecureSkipVerify);
        }
        Ok(ClientTrust::SystemRoots)
    }

    /// This client's id: `id`, or the name of `client_cert`, or the hostname made safe for
    /// the wire.
    pub fn effective_id(&self) -> String {
        if let Some(id) = &self.id {
            return id.clone();
        }
        if let Some(cert) = self
            .client_cert
            .as_deref()
            .and_then(tunnel_transport::PeerCert::from_pem_file)
            .filter(|c| !c.name.is_empty())
        {
            return cert.name;
        }
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .or_else(|| std::env::var("COMPUTERNAME").ok())
            .unwrap_or_default();
        let id: String = raw
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        if id.is_empty() {
            "client".to_string()
        } else {
            id
        }
    }

    /// What the server is told: proxies and visitors, without local addresses.
    pub(crate) fn register_request(&self) -> RegisterRequest {
        RegisterRequest {
            proxies: self.proxies.iter().map(ProxyConfig::spec).collect(),
            visitors: self
                .visitors
                .iter()
                .map(|v| VisitorSpec {
                    name: v.name.clone(),
                    proxy: v.proxy.clone(),
                    publish_port: v.publish_port,
                })
                .collect(),
        }
    }

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

    /// The stats endpoint's settings (`stats_bind`, `stats_token`), checked and served the
    /// same way as the server's.
    pub fn admin(&self) -> tunnel_admin::AdminConfig {
        tunnel_admin::AdminConfig::new(self.stats_bind, self.stats_token.clone())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const BASE: &str = "server_addr = \"example.com:8443\"\nauth_key = \"k\"\n";

    #[test]
    fn a_group_member_needs_a_fixed_port_not_auto_nor_a_block() {
        for publish in ["\"auto\"", "\"6000-6003\""] {
            let c = ClientConfig::from_toml(&format!(
                "{BASE}[[proxies]]\nname = \"a\"\nlocal_addr = \"127.0.0.1:7000\"\n\
                 publish_port = {publish}\ngroup = \"g\"\ngroup_key = \"k\"\n"
            ))
            .unwrap();
            let problems = c.problems();
            assert!(
                problems
                    .iter()
                    .any(|p| p.field == "proxies[0].publish_port" && p.message.contains("fixed")),
                "{publish}: {problems:?}"
            );
        }
    }

    #[test]
    fn an_empty_stats_token_is_refused_like_on_the_server() {
        let c = ClientConfig::from_toml(&format!("{BASE}stats_token = \"\"\n")).unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["stats_token"]);
    }

    #[test]
    fn duration_builders_keep_milliseconds_and_the_file_reads_seconds() {
        let c = ClientConfig::from_toml(BASE)
            .unwrap()
            .with_heartbeat_timeout(Duration::from_millis(1500))
            .with_shutdown_grace(Duration::from_millis(250))
            .with_reconnect_max_delay(Duration::from_millis(2500));
        assert_eq!(c.heartbeat_timeout, Duration::from_millis(1500));
        assert_eq!(c.shutdown_grace, Duration::from_millis(250));
        assert_eq!(c.reconnect_max_delay, Duration::from_millis(2500));
        // Sub-second but not zero is a valid setting in code.
        let c = c.with_heartbeat_timeout(Duration::from_millis(500));
        assert!(c.problems().is_empty(), "{:?}", c.problems());

        let toml =
            format!("{BASE}heartbeat_timeout = 4\nshutdown_grace = 0\nreconnect_max_delay = 9\n");
        let c = ClientConfig::from_toml(&toml).unwrap();
        let got = (c.heartbeat_timeout, c.shutdown_grace, c.reconnect_max_delay);
        assert_eq!(
            got,
            (
                Duration::from_secs(4),
                Duration::ZERO,
                Duration::from_secs(9)
            )
        );
        let c = ClientConfig::from_toml(BASE).unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        let c = ClientConfig::from_toml(&format!("{BASE}heartbeat_timeout = 0\n")).unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["heartbeat_timeout"]);
    }

    #[test]
    fn minimal_config_is_valid() {
        let c = ClientConfig::from_toml(BASE).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.effective_server_name(), "example.com");
    }

    #[test]
    fn transport_and_ws_path_parse_and_are_checked() {
        let c = ClientConfig::from_toml(BASE).unwrap();
        assert_eq!(
            (c.transport, c.ws_path.as_str()),
            (TransportKind::Tls, "/tunnel")
        );
        for kind in TransportKind::ALL {
            let c = ClientConfig::from_toml(&format!("{BASE}transport = \"{kind}\"\n")).unwrap();
            assert_eq!(c.transport, kind);
        }
        let e = ClientConfig::from_toml(&format!("{BASE}transport = \"quic\"\n")).unwrap_err();
        assert!(
            e.to_string().contains("transport") && e.to_string().contains("wss"),
            "{e}"
        );
        let e = ClientConfig::from_toml(&format!("{BASE}transport = \"tsl\"\n")).unwrap_err();
        assert!(e.to_string().contains("did you mean `tls`?"), "{e}");
        let listed: Vec<String> = TransportKind::ALL.iter().map(|k| k.to_string()).collect();
        assert_eq!(listed, TRANSPORTS);
        let c = ClientConfig::from_toml(&format!("{BASE}ws_path = \"tunnel\"\n")).unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["ws_path"]);
        let c = ClientConfig::from_toml(&format!("{BASE}ws_path = \"/a b\"\n")).unwrap();
        assert_eq!(c.problems().len(), 1);
    }

    #[test]
    fn connections_defaults_to_one_and_is_bounded() {
        assert_eq!(ClientConfig::from_toml(BASE).unwrap().connections, 1);
        for ok in [1, 4, MAX_CONNECTIONS] {
            let c = ClientConfig::from_toml(&format!("{BASE}connections = {ok}\n")).unwrap();
            assert_eq!((c.connections, c.problems().len()), (ok, 0));
        }
        for bad in [0, MAX_CONNECTIONS + 1] {
            let c = ClientConfig::from_toml(&format!("{BASE}connections = {bad}\n")).unwrap();
            let p = c.problems();
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].field, "connections");
            assert!(p[0].to_string().contains("between 1 and 16"), "{}", p[0]);
        }
        let e = ClientConfig::from_toml(&format!("{BASE}connections = -1\n")).unwrap_err();
        assert!(e.to_string().contains("connections"), "{e}");
    }

    /// `LINE:COLUMN field` of every problem `from_toml` finds.
    fn places(text: &str) -> Vec<String> {
        let Err(ClientError::ConfigSyntax { problems, .. }) = ClientConfig::from_toml(text) else {
            panic!("{text} parsed");
        };
        problems
            .iter()
            .map(|p| {
                let at = p.at.unwrap();
                format!("{}:{} {}", at.line, at.column, p.field)
            })
            .collect()
    }

    #[test]
    fn every_problem_of_a_file_is_reported_in_one_run() {
        let text = "\
server_addr = \"example.com:8443\"
reconect_max_delay = 5
transport = \"quic\"

[[proxies]]
name = \"web\"
local_adr = \"127.0.0.1:3000\"
publish_port = 70000

[[proxies]]
name = \"api\"
type = \"htp\"
max_local_conns = \"many\"

[[visitors]]
name = \"db\"
bind = \"127.0.0.1:5432\"
";
        assert_eq!(
            places(text),
            [
                "2:1 reconect_max_delay",
                "3:13 transport",
                "7:1 proxies[0].local_adr",
                "8:16 proxies[0].publish_port",
                "12:8 proxies[1].type",
                "13:19 proxies[1].max_local_conns",
                "15:1 visitors[0].proxy",
            ]
        );
        let e = ClientConfig::from_toml(text).unwrap_err().to_string();
        // The typo in the flattened [[proxies]] table: named at its own line, with the
        // closest key and the valid ones, the HTTP keys included.
        assert!(
            e.contains(
                "7:1: proxies[0].local_adr: unknown key `local_adr`: did you mean \
                        `local_addr`? valid keys here: name, type, local_addr"
            ) && e.contains("max_local_conns"),
            "{e}"
        );
    }

    #[test]
    fn the_proxy_key_list_holds_only_keys_serde_accepts() {
        for key in PROXY_KEYS {
            // A wrong type, so every listed key gets an error: never an unknown-key one.
            let text = format!("{BASE}[[proxies]]\nname = \"a\"\n{key} = {{}}\n");
            let e = ClientConfig::from_toml(&text).unwrap_err().to_string();
            assert!(!e.contains("unknown key"), "{key}: {e}");
        }
        let e = ClientConfig::from_toml(&format!("{BASE}[[proxies]]\nname = \"a\"\nx = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("idle_timeout") && e.contains("proxy_protocol"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_adr=\"x:1\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("local_adr"), "{e}");
    }

    #[test]
    fn duplicate_names_and_bad_addresses_are_reported_together() {
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:1\"\n\
             [[proxies]]\nname=\"a\"\nlocal_addr=\"nope\"\n"
        ))
        .unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["proxies[1].name", "proxies[1].local_addr"]);
    }

    #[test]
    fn a_proxy_without_local_addr_is_told_to_add_it() {
        let c = ClientConfig::from_toml(&format!("{BASE}[[proxies]]\nname=\"a\"\n")).unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "proxies[0].local_addr");
        assert!(
            p[0].message.starts_with("missing: the local service"),
            "{}",
            p[0]
        );
    }

    #[test]
    fn client_cert_and_client_key_come_together_and_not_over_ws() {
        let fields = |extra: &str| -> Vec<String> {
            ClientConfig::from_toml(&format!("{BASE}{extra}"))
                .unwrap()
                .problems()
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        assert_eq!(fields("client_cert = \"/c.pem\"\n"), ["client_key"]);
        assert_eq!(fields("client_key = \"/k.pem\"\n"), ["client_cert"]);
        let both = "client_cert = \"/nonexistent/c.pem\"\nclient_key = \"/k.pem\"\n";
        assert_eq!(fields(both), ["client_cert"]);
        assert_eq!(
            fields(&format!("{both}transport = \"ws\"\n")),
            ["client_cert"]
        );
        // A certificate stands in for a missing key.
        let c =
            ClientConfig::from_toml("server_addr = \"a:1\"\nclient_cert = \"/c.pem\"\n").unwrap();
        assert_eq!(c.resolve_auth_key().unwrap(), "");
    }

    #[test]
    fn trust_options_are_exclusive() {
        let c = ClientConfig::from_toml(&format!(
            "{BASE}insecure_skip_verify = true\nserver_fingerprint = \"sha256:00\"\n"
        ))
        .unwrap();
        assert!(c.trust().is_err());
    }

    #[test]
    fn server_addr_is_a_string_or_a_list_and_each_entry_names_its_certificate() {
        let c = ClientConfig::from_toml(
            "server_addr = [\"a.example:1\", \"[::1]:2\"]\nauth_key = \"k\"\n",
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.server_addr.addrs(), ["a.example:1", "[::1]:2"]);
        assert_eq!(c.server_name_for("[::1]:2"), "::1");
        assert_eq!(c.effective_server_name(), "a.example");
        let c = c.with_server_name("tunnel.example");
        assert_eq!(c.server_name_for("[::1]:2"), "tunnel.example");
        let c = ClientConfig::new("h:1").with_server_addrs(["a:1", "b:2"]);
        assert_eq!(c.server_addr.to_string(), "a:1, b:2");
        let e = ClientConfig::from_toml("server_addr = 5\nauth_key = \"k\"\n").unwrap_err();
        assert!(
            e.to_string().contains("\"host:port\" or a list of them"),
            "{e}"
        );
    }

    /// `LINE:COLUMN field` of every problem `problems` finds, placed as `--check` does.
    fn placed(text: &str) -> Vec<String> {
        let mut problems = ClientConfig::from_toml(text).unwrap().problems();
        config_file::locate(text, &mut problems);
        problems
            .iter()
            .map(|p| {
                let at = p.at.unwrap();
                format!("{}:{} {}", at.line, at.column, p.field)
            })
            .collect()
    }

    #[test]
    fn a_server_list_problem_is_placed_at_its_entry() {
        let text = "auth_key = \"k\"\nserver_addr = [\n  \"a:1\",\n  \"nope\",\n  \"a:1\",\n]\n";
        assert_eq!(placed(text), ["4:3 server_addr[1]", "5:3 server_addr[2]"]);
        let text = "auth_key = \"k\"\nserver_addr = []\n";
        assert_eq!(placed(text), ["2:1 server_addr"]);
        // A wrong type inside the list is a parse error at the element (named by its key).
        let text = "auth_key = \"k\"\nserver_addr = [\"a:1\", 5]\n";
        assert_eq!(places(text), ["2:23 server_addr"]);
    }

    #[test]
    fn ipv6_server_name() {
        let c = ClientConfig::new("[::1]:8443");
        assert_eq!(c.effective_server_name(), "::1");
    }

    #[test]
    fn https_proxies_parse_and_their_keys_are_checked() {
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"site\"\ntype=\"https\"\nlocal_addr=\"127.0.0.1:443\"\n\
             domains=[\"a.example\", \"*.b.example\"]\nproxy_protocol=\"v2\"\n\
             [[proxies]]\nname=\"sub\"\ntype=\"https\"\nlocal_addr=\"h:1\"\nsubdomain=\"app\"\n"
        ))
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let spec = c.proxies[0].spec();
        assert_eq!(spec.kind.to_string(), "https");
        let route = spec.http.unwrap();
        assert_eq!(route.domains, ["a.example", "*.b.example"]);
        // Spliced like tcp: a tcp proxy's idle default.
        assert_eq!(spec.idle_timeout, Some(300));
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\ntype=\"https\"\nlocal_addr=\"h:1\"\n\
             publish_port=443\nlocations=[\"/api\"]\nhttp_user=\"u\"\nhttp_password=\"p\"\n\
             host_rewrite=\"x\"\n"
        ))
        .unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "proxies[0].domains",
                "proxies[0].publish_port",
                "proxies[0].host_rewrite",
                "proxies[0].locations",
                "proxies[0].http_user",
                "proxies[0].http_password",
            ]
        );
    }

    #[test]
    fn udp_proxies_and_visitors_parse_and_their_keys_are_checked() {
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"dns\"\ntype=\"udp\"\nlocal_addr=\"127.0.0.1:53\"\n\
             publish_port=5353\nudp_idle_timeout=5\n\
             [[visitors]]\nname=\"v\"\ntype=\"udp\"\nproxy=\"dns\"\nbind=\"127.0.0.1:53\"\n"
        ))
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(
            (c.proxies[0].kind, c.visitors[0].kind),
            (ProxyKind::Udp, ProxyKind::Udp)
        );
        // The server learns the flow timeout as the spec's idle_timeout, and no HTTP route.
        let spec = c.proxies[0].spec();
        assert_eq!((spec.idle_timeout, spec.http), (Some(5), None));
        assert_eq!(
            ProxyConfig::udp("d", "h:1", None).spec().idle_timeout,
            Some(60)
        );
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\ntype=\"udp\"\nlocal_addr=\"h:1\"\n\
             udp_idle_timeout=0\nproxy_protocol=\"v2\"\nidle_timeout=3\n\
             [[proxies]]\nname=\"b\"\nlocal_addr=\"h:1\"\nudp_idle_timeout=3\n\
             [[visitors]]\nname=\"v\"\ntype=\"http\"\nproxy=\"a\"\nbind=\"h:2\"\n"
        ))
        .unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "proxies[0].udp_idle_timeout",
                "proxies[0].idle_timeout",
                "proxies[0].proxy_protocol",
                "proxies[1].udp_idle_timeout",
                "visitors[0].type",
            ]
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let c = ClientConfig::new("h:1")
            .with_auth_key("topsecret")
            .with_proxy(ProxyConfig::tcp("a", "h:2", None).with_secret("alsosecret"));
        let s = format!("{c:?}");
        assert!(!s.contains("topsecret") && !s.contains("alsosecret"), "{s}");
    }

    #[test]
    fn ip_lists_and_bandwidth_limit_reach_the_spec_and_bad_ones_are_placed() {
        let text = "auth_key = \"k\"\nserver_addr = \"a:1\"\n[[proxies]]\nname = \"db\"\n\
                    local_addr = \"127.0.0.1:5432\"\npublish_port = 5432\n\
                    allow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny_ips = [\"10.9.9.9\"]\n\
                    bandwidth_limit = \"10MiB\"\n";
        let c = ClientConfig::from_toml(text).unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let spec = c.proxies[0].spec();
        assert_eq!(spec.allow_ips, ["10.0.0.0/8", "2001:db8::/32"]);
        assert_eq!(spec.deny_ips, ["10.9.9.9"]);
        assert_eq!(spec.bandwidth_limit, Some(10 << 20));

        let bad = text
            .replace("\"10.9.9.9\"", "\"10.9.9.9/33\"")
            .replace("\"10MiB\"", "\"10Mbit\"");
        assert_eq!(
            placed(&bad),
            ["8:1 proxies[0].deny_ips", "9:1 proxies[0].bandwidth_limit"]
        );
    }
}
