//! Client configuration: the TOML file format, defaults, and validation.
//!
//! The file's top level and the builders live here; the `[[proxies]]` and `[[visitors]]`
//! entries in `proxy`, the checks of the whole in `problems`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::{ProxyKind, RegisterRequest, VisitorSpec};
use tunnel_transport::config_file;
use tunnel_transport::{ClientCert, ClientTrust, Fingerprint, Transport, TransportKind};

use crate::error::{ClientError, ConfigProblem};
use crate::server_addr::{host_of, ServerAddr};

mod problems;
mod proxy;
#[cfg(test)]
mod tests;

pub(crate) use problems::is_host_port;
pub(crate) use proxy::DEFAULT_UDP_IDLE;
pub use proxy::{ProxyConfig, VisitorConfig};

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
        config_file::parse(text, &proxy::schema()).map_err(|problems| ClientError::ConfigSyntax {
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

    /// The stats endpoint's settings (`stats_bind`, `stats_token`), checked and served the
    /// same way as the server's.
    pub fn admin(&self) -> tunnel_admin::AdminConfig {
        tunnel_admin::AdminConfig::new(self.stats_bind, self.stats_token.clone())
    }
}
