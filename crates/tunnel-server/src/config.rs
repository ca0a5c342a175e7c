//! Server configuration: the TOML file format, defaults, and validation.
//!
//! The file's keys, their defaults and the builders live here; the checks of the whole
//! (`ServerConfig::problems`) in `problems`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tunnel_transport::config_file::{self, Schema};
use tunnel_transport::{ServerIdentity, ServerIdentitySource};

use crate::error::{ConfigProblem, ServerError};
use crate::ports::{PortRange, PortRanges};

mod problems;
#[cfg(test)]
mod tests;

/// Everything a server needs. Built from a TOML file ([`ServerConfig::from_file`]) or in code
/// (`ServerConfig::default()` plus the `with_*` setters).
///
/// ```
/// let cfg = tunnel_server::ServerConfig::from_toml(r#"
///     bind = "127.0.0.1:8443"
///     auth_key = "correct horse battery staple"
///     allow_ports = ["8000-8999"]
/// "#).unwrap();
/// assert!(cfg.allow_ports.contains(8080));
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where clients connect (TLS). Default `0.0.0.0:8443`. Serves every TLS-based
    /// transport (tls, h2, wss), told apart by ALPN.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Optional plain-HTTP WebSocket (`ws`) listener, for a TLS-terminating proxy (nginx, a
    /// CDN) in front of the server. Only that proxy should be able to reach it.
    #[serde(default)]
    pub ws_bind: Option<SocketAddr>,
    /// URL path of the HTTP/2 request and the WebSocket upgrade, on `bind` and `ws_bind`.
    /// Default `/tunnel`.
    #[serde(default = "default_ws_path")]
    pub ws_path: String,
    /// The shared key clients prove they know. Never sent over the wire.
    #[serde(default)]
    pub auth_key: Option<String>,
    /// Read the key from this file instead (trailing newline ignored).
    #[serde(default)]
    pub auth_key_file: Option<PathBuf>,
    /// A TOML file of `[[clients]]`, each with its own id, key (or `key_file`, or
    /// `keys = [old, new]` while rotating) and scope. Listed ids must prove themselves with
    /// their own key; the shared key, if any, then logs in unlisted ids only. Read again on
    /// SIGHUP ([`crate::ServerHandle::reload_clients`]). With it, `auth_key` is optional.
    #[serde(default)]
    pub clients_file: Option<PathBuf>,
    /// `"text"` (default) or `"json"`: how the `tunnel-server` binary writes its log. The
    /// engine itself does not read it.
    #[serde(default)]
    pub log_format: tunnel_transport::LogFormat,
    /// PEM certificate chain. Without `tls_cert`/`tls_key` a self-signed certificate is made at start.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Names put in the self-signed certificate (ignored with `tls_cert`). Default `["localhost"]`.
    #[serde(default)]
    pub tls_names: Vec<String>,
    /// PEM file of the CA(s) that issue client certificates (mutual TLS). With it the TLS
    /// port asks every client for a certificate; a verified one proves the client id it
    /// names (its first DNS subject alternative name, else its common name).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that present no certificate from `client_ca`. Needs `client_ca`, and
    /// cannot be combined with `ws_bind` (TLS ends at the proxy, which keeps the client's
    /// certificate). Default false.
    #[serde(default)]
    pub require_client_cert: bool,
    /// Where the `tunnel-server` binary keeps the auth key and self-signed certificate it
    /// generates when neither a key nor a certificate is configured, so that a restart reuses
    /// them. Default `$XDG_STATE_HOME/tls-tunnel`, else `~/.local/state/tls-tunnel`. The
    /// engine itself does not read it.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Where the stats endpoint listens. Default `127.0.0.1:9090`; `""` turns it off.
    #[serde(default = "default_stats_bind", deserialize_with = "optional_addr")]
    pub stats_bind: Option<SocketAddr>,
    /// When set, `/metrics` and `/api/stats` need `Authorization: Bearer <stats_token>`.
    #[serde(default)]
    pub stats_token: Option<String>,
    /// Ports clients may publish on, as `"N"` or `"N-M"`. Default `["1024-65535"]`.
    #[serde(default)]
    pub allow_ports: PortRanges,
    /// The address published ports listen on. Default `0.0.0.0`.
    #[serde(default = "default_publish_addr")]
    pub publish_addr: IpAddr,
    /// Where the HTTP virtual host listens (e.g. `0.0.0.0:80`): `http`/`http2` proxies with
    /// `domains` or `subdomain` are served there, routed by Host. Off by default.
    #[serde(default)]
    pub vhost_http_bind: Option<SocketAddr>,
    /// Where the HTTPS virtual host listens (e.g. `0.0.0.0:443`): `https` proxies with
    /// `domains` or `subdomain` are served there, routed by the ClientHello's server name
    /// (SNI) without decrypting anything. Off by default.
    #[serde(default)]
    pub vhost_https_bind: Option<SocketAddr>,
    /// Lets a proxy claim `subdomain = "app"` for `app.<subdomain_host>` (on either virtual
    /// host).
    #[serde(default)]
    pub subdomain_host: Option<String>,
    /// Seconds a new connection has to finish TLS and authentication. Default 10.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout: u64,
    /// Most clients connected at once. Default 10 000.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Most connections still in TLS or authentication at once. Default 512.
    #[serde(default = "default_max_pending")]
    pub max_pending_handshakes: usize,
    /// Most proxies plus visitors one client may register. Default 128.
    #[serde(default = "default_max_proxies")]
    pub max_proxies_per_client: usize,
    /// Most public ports one client may hold at once, blocks (`"6000-6010"`) counted port by
    /// port: a block is one proxy, so without this a client could take every allowed port.
    /// 0 allows none. Default 1024.
    #[serde(default = "default_max_ports")]
    pub max_ports_per_client: usize,
    /// Most concurrent streams in one client session. Default 1024.
    #[serde(default = "default_max_streams")]
    pub max_streams_per_client: usize,
    /// Most TLS connections one client may carry its streams over (the client's
    /// `connections`); extra connections beyond it are refused with a clear error and the
    /// client goes on with those it has. 1 turns the feature off. Default 8.
    #[serde(default = "default_max_connections")]
    pub max_connections_per_client: usize,
    /// Largest protocol frame accepted, in bytes (handshake frames are capped lower). Default 65536.
    #[serde(default = "default_max_frame")]
    pub max_frame_size: usize,
    /// Threads that carry client connections: each connection (its TLS, its session and
    /// every stream on it) stays on one of them for its life, and new ones go to the least
    /// busy. Unset: one per CPU core. 0: run everything on the runtime that started the
    /// server (for an application embedding it that manages its own threads).
    #[serde(default)]
    pub session_threads: Option<usize>,
    /// Time between heartbeats on each session; whole seconds in the file. Default 10.
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub heartbeat_interval: Duration,
    /// Silence after which a client is declared dead and its ports freed; whole seconds in the
    /// file. Default 30.
    #[serde(
        default = "default_heartbeat_timeout",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub heartbeat_timeout: Duration,
    /// How long open streams may run on after SIGTERM / Ctrl-C before they are closed; whole
    /// seconds in the file. Default 10.
    #[serde(
        default = "default_shutdown_grace",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub shutdown_grace: Duration,
    /// Most host names (`domains` plus `subdomain`) one proxy may claim on the virtual host.
    /// Default 64.
    #[serde(default = "default_max_domains")]
    pub max_domains_per_proxy: usize,
    /// Most `locations` one proxy may list. Default 32.
    #[serde(default = "default_max_locations")]
    pub max_locations_per_proxy: usize,
    /// Most virtual-host routes (each proxy's host names × locations, summed over the
    /// client's proxies) one client may hold. Default 1024.
    #[serde(default = "default_max_routes")]
    pub max_routes_per_client: usize,
    /// Most connections one source address (an IPv6 /64) may hold open on all published
    /// ports together; more are closed at once. 0 = unlimited. Default 256.
    #[serde(default = "default_max_conns_per_source")]
    pub max_conns_per_source: usize,
    /// Most streams one client may have open at once that have not yet sent their whole
    /// header (a visitor naming its target); more are refused. Default 16.
    #[serde(default = "default_max_stream_headers_per_client")]
    pub max_stream_headers_per_client: usize,
    /// The same for all clients together. Default 4096 (at most 16 MiB of partial headers).
    #[serde(default = "default_max_stream_headers")]
    pub max_stream_headers: usize,
    /// Most user connections the virtual host holds at once (the HTTP and the HTTPS one each);
    /// 0 = no limit. Default 10 000.
    #[serde(default = "default_vhost_max_conns")]
    pub vhost_max_conns: usize,
    /// Most virtual-host connections from one address (an IPv6 /64 counts as one); 0 = no
    /// limit. Default 256.
    #[serde(default = "default_vhost_max_conns_per_source")]
    pub vhost_max_conns_per_source: usize,
    /// Seconds a new virtual-host connection (HTTP or HTTPS) may take to send its first byte.
    /// Default 5.
    #[serde(default = "default_vhost_first_byte_timeout")]
    pub vhost_first_byte_timeout: u64,
    /// Seconds a user may take to send a whole request head, counted from its first byte or
    /// from the end of the previous answer (so also the idle keep-alive time); on
    /// `vhost_https_bind`, the whole TLS ClientHello from its first byte. Default 10.
    #[serde(default = "default_vhost_header_timeout")]
    pub vhost_header_timeout: u64,
    /// Largest request head (request line and headers) the virtual host reads, in bytes;
    /// a larger one is answered 431. Default 32768, at least 8192.
    #[serde(default = "default_vhost_max_header_size")]
    pub vhost_max_header_size: usize,
    /// Front proxies (addresses or CIDR blocks, e.g. `["10.0.0.0/8"]`) whose
    /// `X-Forwarded-For`/`-Host`/`-Proto` and `Forwarded` headers the virtual host believes.
    /// From anyone else they are replaced (X-Forwarded-For is appended to). Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// User addresses (CIDRs or addresses, IPv4 and IPv6) allowed on every published port
    /// and the virtual host; empty (the default) means all. Checked before any stream is
    /// opened, and before each proxy's own `allow_ips`.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// User addresses refused on every published port and the virtual host, even when
    /// `allow_ips` lists them.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// The most any proxy may move per second, each direction (`"10MiB"`): a proxy asking
    /// for more, or for no limit, gets this. Default none.
    #[serde(default, deserialize_with = "optional_bandwidth")]
    pub bandwidth_limit: Option<tunnel_proto::Bandwidth>,
    /// Most connections one source address (an IPv6 /64) may have in TLS or authentication
    /// at once on `bind`, so one host cannot hold every pre-authentication slot. Not applied on
    /// `ws_bind`, where every connection comes from the proxy in front. Default 16; 0 = off.
    #[serde(default = "default_pending_per_source")]
    pub pending_handshakes_per_source: usize,
    /// Pending handshakes at which random early drop begins (like sshd's `MaxStartups
    /// start:rate:full`, with `max_pending_handshakes` as full): from here a new connection is
    /// closed with probability `pending_handshakes_drop_percent`, rising linearly to 100 % at
    /// `max_pending_handshakes`, so a flood cannot hold every slot. Default 64; 0 = off.
    #[serde(default = "default_pending_drop_from")]
    pub pending_handshakes_drop_from: usize,
    /// Drop probability (percent) at `pending_handshakes_drop_from`. Default 30.
    #[serde(default = "default_pending_drop_percent")]
    pub pending_handshakes_drop_percent: u8,
    /// Seconds a new connection has to send its first byte (the TLS ClientHello); an idle
    /// connection gives its pre-authentication slot back after this, not after the whole
    /// `handshake_timeout` (which also caps it). Default 3.
    #[serde(default = "default_first_byte_timeout")]
    pub first_byte_timeout: u64,
    /// Most wrong-key logins per second server-wide, summed over all addresses; beyond it
    /// logins are refused (retryably) for a moment before their proof is checked, which
    /// bounds how fast many addresses together can guess the key. Default 20; 0 = off.
    #[serde(default = "default_max_auth_failures_per_second")]
    pub max_auth_failures_per_second: u32,
    /// Cluster mode: several servers sharing one registry (the `[cluster]` table). Absent, or
    /// `backend = "none"`: one server, as without it.
    #[serde(default)]
    pub cluster: Option<tunnel_cluster::ClusterConfig>,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8443))
}
fn default_stats_bind() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
}

/// An address, or the empty string for "off".
fn optional_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{s:?} is not an address: use \"IP:PORT\" (e.g. \"127.0.0.1:9090\"), or \"\" to turn the endpoint off"
        ))
    })
}
fn optional_bandwidth<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<tunnel_proto::Bandwidth>, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}
fn default_ws_path() -> String {
    tunnel_transport::DEFAULT_WS_PATH.to_owned()
}
fn default_publish_addr() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_max_clients() -> usize {
    10_000
}
fn default_max_ports() -> usize {
    1024
}
fn default_max_pending() -> usize {
    512
}
fn default_max_proxies() -> usize {
    128
}
fn default_max_streams() -> usize {
    1024
}
fn default_max_connections() -> usize {
    8
}
/// More session threads than this is a typo, not a machine.
const MAX_SESSION_THREADS: usize = 1024;

fn default_max_frame() -> usize {
    tunnel_proto::DEFAULT_MAX_FRAME
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(10)
}

fn default_max_domains() -> usize {
    64
}
fn default_max_locations() -> usize {
    32
}
fn default_max_routes() -> usize {
    1024
}
fn default_max_conns_per_source() -> usize {
    256
}
fn default_max_stream_headers_per_client() -> usize {
    16
}
fn default_max_stream_headers() -> usize {
    4096
}
fn default_pending_per_source() -> usize {
    16
}
fn default_pending_drop_from() -> usize {
    64
}
fn default_pending_drop_percent() -> u8 {
    30
}
fn default_first_byte_timeout() -> u64 {
    3
}
fn default_max_auth_failures_per_second() -> u32 {
    20
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: default_bind(),
            ws_bind: None,
            ws_path: default_ws_path(),
            auth_key: None,
            auth_key_file: None,
            clients_file: None,
            log_format: tunnel_transport::LogFormat::Text,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            client_ca: None,
            require_client_cert: false,
            state_dir: None,
            stats_bind: default_stats_bind(),
            stats_token: None,
            allow_ports: PortRanges::default(),
            publish_addr: default_publish_addr(),
            vhost_http_bind: None,
            vhost_https_bind: None,
            subdomain_host: None,
            handshake_timeout: default_handshake_timeout(),
            max_clients: default_max_clients(),
            max_pending_handshakes: default_max_pending(),
            max_proxies_per_client: default_max_proxies(),
            max_ports_per_client: default_max_ports(),
            max_streams_per_client: default_max_streams(),
            max_connections_per_client: default_max_connections(),
            max_frame_size: default_max_frame(),
            session_threads: None,
            heartbeat_interval: default_heartbeat_interval(),
            heartbeat_timeout: default_heartbeat_timeout(),
            shutdown_grace: default_shutdown_grace(),
            max_domains_per_proxy: default_max_domains(),
            max_locations_per_proxy: default_max_locations(),
            max_routes_per_client: default_max_routes(),
            max_conns_per_source: default_max_conns_per_source(),
            max_stream_headers_per_client: default_max_stream_headers_per_client(),
            max_stream_headers: default_max_stream_headers(),
            vhost_max_conns: default_vhost_max_conns(),
            vhost_max_conns_per_source: default_vhost_max_conns_per_source(),
            vhost_first_byte_timeout: default_vhost_first_byte_timeout(),
            vhost_header_timeout: default_vhost_header_timeout(),
            vhost_max_header_size: default_vhost_max_header_size(),
            trusted_proxies: Vec::new(),
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            bandwidth_limit: None,
            pending_handshakes_per_source: default_pending_per_source(),
            pending_handshakes_drop_from: default_pending_drop_from(),
            pending_handshakes_drop_percent: default_pending_drop_percent(),
            first_byte_timeout: default_first_byte_timeout(),
            max_auth_failures_per_second: default_max_auth_failures_per_second(),
            cluster: None,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field("ws_bind", &self.ws_bind)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "***"))
            .field("stats_token", &self.stats_token.as_ref().map(|_| "***"))
            .field("auth_key_file", &self.auth_key_file)
            .field("clients_file", &self.clients_file)
            .field("log_format", &self.log_format)
            .field("client_ca", &self.client_ca)
            .field("require_client_cert", &self.require_client_cert)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("stats_bind", &self.stats_bind)
            .field("allow_ports", &self.allow_ports.to_string())
            .field("publish_addr", &self.publish_addr)
            .field("vhost_http_bind", &self.vhost_http_bind)
            .field("vhost_https_bind", &self.vhost_https_bind)
            .field("subdomain_host", &self.subdomain_host)
            .field("allow_ips", &self.allow_ips)
            .field("deny_ips", &self.deny_ips)
            .field("bandwidth_limit", &self.bandwidth_limit)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl<'de> Deserialize<'de> for PortRanges {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(d)?;
        items
            .iter()
            .map(|s| s.parse::<PortRange>())
            .collect::<Result<PortRanges, _>>()
            .map_err(serde::de::Error::custom)
    }
}

impl ServerConfig {
    /// Parse a TOML document. Every problem in it is reported at once, each with its line and
    /// column: syntax, wrong types, unknown keys (with the closest valid one), bad values.
    /// The checks that need the whole config come after, from [`ServerConfig::problems`].
    pub fn from_toml(text: &str) -> Result<Self, ServerError> {
        Self::parse(text, None)
    }

    /// Read and parse a TOML file, as [`ServerConfig::from_toml`].
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, Some(path))
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Self, ServerError> {
        config_file::parse(text, &Schema::new()).map_err(|problems| ServerError::ConfigSyntax {
            path: path.map(Path::to_path_buf),
            problems,
        })
    }

    /// Set the listen address for clients.
    pub fn with_bind(mut self, bind: SocketAddr) -> Self {
        self.bind = bind;
        self
    }

    /// Also serve plain-HTTP WebSocket on `addr` (for a TLS terminator in front).
    pub fn with_ws_bind(mut self, addr: SocketAddr) -> Self {
        self.ws_bind = Some(addr);
        self
    }

    /// URL path of the HTTP/2 request and the WebSocket upgrade.
    pub fn with_ws_path(mut self, path: impl Into<String>) -> Self {
        self.ws_path = path.into();
        self
    }

    /// Set the shared auth key.
    pub fn with_auth_key(mut self, key: impl Into<String>) -> Self {
        self.auth_key = Some(key.into());
        self
    }

    /// Use a certificate and key from PEM files instead of a self-signed certificate.
    pub fn with_tls_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }

    /// Carry client connections on `threads` threads of their own (0: on the caller's
    /// runtime); see [`ServerConfig::session_threads`].
    pub fn with_session_threads(mut self, threads: usize) -> Self {
        self.session_threads = Some(threads);
        self
    }

    /// How many session threads to start: `session_threads`, or one per core.
    pub fn session_thread_count(&self) -> usize {
        self.session_threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// Serve the stats endpoint on `addr` (`None`: off).
    pub fn with_stats_bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.stats_bind = addr;
        self
    }

    /// The stats endpoint's settings (`stats_bind`, `stats_token`), checked and served the
    /// same way as the client's.
    pub fn admin(&self) -> tunnel_admin::AdminConfig {
        tunnel_admin::AdminConfig::new(self.stats_bind, self.stats_token.clone())
    }

    /// Require this bearer token for `/metrics` and `/api/stats`.
    pub fn with_stats_token(mut self, token: impl Into<String>) -> Self {
        self.stats_token = Some(token.into());
        self
    }

    /// Restrict the ports clients may publish on.
    pub fn with_allow_ports(mut self, ports: PortRanges) -> Self {
        self.allow_ports = ports;
        self
    }

    /// Set the address published ports listen on.
    pub fn with_publish_addr(mut self, addr: IpAddr) -> Self {
        self.publish_addr = addr;
        self
    }

    /// Serve HTTP virtual hosts on `addr`.
    pub fn with_vhost_http_bind(mut self, addr: SocketAddr) -> Self {
        self.vhost_http_bind = Some(addr);
        self
    }

    /// Serve HTTPS virtual hosts (routed by SNI, passed through) on `addr`.
    pub fn with_vhost_https_bind(mut self, addr: SocketAddr) -> Self {
        self.vhost_https_bind = Some(addr);
        self
    }

    /// Let proxies claim `<subdomain>.<host>`.
    pub fn with_subdomain_host(mut self, host: impl Into<String>) -> Self {
        self.subdomain_host = Some(host.into());
        self
    }

    /// Set the heartbeat: ping every `interval`, give a client up after `timeout` of silence.
    pub fn with_heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// Set how long open streams may finish after a shutdown begins.
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Set the most concurrent streams per client.
    pub fn with_max_streams_per_client(mut self, n: usize) -> Self {
        self.max_streams_per_client = n;
        self
    }

    /// Set the most connections one client may spread its streams over.
    pub fn with_max_connections_per_client(mut self, n: usize) -> Self {
        self.max_connections_per_client = n;
        self
    }

    /// Set the most public ports one client may hold (`max_ports_per_client`).
    pub fn with_max_ports_per_client(mut self, n: usize) -> Self {
        self.max_ports_per_client = n;
        self
    }

    /// Set the most proxies plus visitors per client.
    pub fn with_max_proxies_per_client(mut self, n: usize) -> Self {
        self.max_proxies_per_client = n;
        self
    }

    /// Set the most clients at once.
    pub fn with_max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// Set the most connections one source address may hold on the published ports (0: no limit).
    pub fn with_max_conns_per_source(mut self, n: usize) -> Self {
        self.max_conns_per_source = n;
        self
    }

    /// Set the most streams one client may hold with an unfinished header.
    pub fn with_max_stream_headers_per_client(mut self, n: usize) -> Self {
        self.max_stream_headers_per_client = n;
        self
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }

    pub(crate) fn heartbeat(&self) -> tunnel_mux::Heartbeat {
        tunnel_mux::Heartbeat {
            interval: self.heartbeat_interval,
            timeout: self.heartbeat_timeout,
        }
    }

    /// The auth key from `auth_key` or `auth_key_file`.
    pub fn resolve_auth_key(&self) -> Result<String, ConfigProblem> {
        tunnel_transport::resolve_auth_key(self.auth_key.as_deref(), self.auth_key_file.as_deref())
    }

    /// The shared key, if the server has one: from `auth_key` or `auth_key_file`, and
    /// required unless a `clients_file` gives each client its own.
    pub fn shared_key(&self) -> Result<Option<String>, ConfigProblem> {
        let none = self.auth_key.is_none() && self.auth_key_file.is_none();
        if none && self.clients_file.is_some() {
            return Ok(None);
        }
        if none {
            return Err(ConfigProblem::new(
                "auth_key",
                "no key: set auth_key, auth_key_file or the TUNNEL_AUTH_KEY environment \
                 variable, or give each client its own key in a clients_file",
            ));
        }
        self.resolve_auth_key().map(Some)
    }

    /// Ask clients for certificates issued by the CA(s) in `ca` (PEM); `require`: refuse
    /// clients without one.
    pub fn with_client_ca(mut self, ca: impl Into<PathBuf>, require: bool) -> Self {
        self.client_ca = Some(ca.into());
        self.require_client_cert = require;
        self
    }

    /// Set the clients file (per-client keys and scopes).
    pub fn with_clients_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.clients_file = Some(path.into());
        self
    }

    /// Where the server's certificate comes from.
    pub fn identity_source(&self) -> Result<ServerIdentitySource, ConfigProblem> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(ServerIdentitySource::Pem {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => Ok(ServerIdentitySource::SelfSigned {
                names: if self.tls_names.is_empty() {
                    vec!["localhost".to_string()]
                } else {
                    self.tls_names.clone()
                },
            }),
            (Some(_), None) => Err(ConfigProblem::new(
                "tls_key",
                "tls_cert is set but tls_key is not: give the private key file too",
            )),
            (None, Some(_)) => Err(ConfigProblem::new(
                "tls_cert",
                "tls_key is set but tls_cert is not: give the certificate file too",
            )),
        }
    }

    /// Join a cluster (the `[cluster]` table).
    pub fn with_cluster(mut self, cluster: tunnel_cluster::ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Set the most host names one proxy may claim on the virtual host.
    pub fn with_max_domains_per_proxy(mut self, n: usize) -> Self {
        self.max_domains_per_proxy = n;
        self
    }

    /// Set the most locations one proxy may list.
    pub fn with_max_locations_per_proxy(mut self, n: usize) -> Self {
        self.max_locations_per_proxy = n;
        self
    }

    /// Set the most virtual-host routes (host names × locations) one client may hold.
    pub fn with_max_routes_per_client(mut self, n: usize) -> Self {
        self.max_routes_per_client = n;
        self
    }

    /// Set the virtual host's connection limits (0 = no limit).
    pub fn with_vhost_max_conns(mut self, total: usize, per_source: usize) -> Self {
        self.vhost_max_conns = total;
        self.vhost_max_conns_per_source = per_source;
        self
    }

    /// Believe forwarding headers from these front proxies (addresses or CIDR blocks).
    pub fn with_trusted_proxies(mut self, cidrs: &[&str]) -> Self {
        self.trusted_proxies = cidrs.iter().map(|c| (*c).to_owned()).collect();
        self
    }
}

fn default_vhost_max_conns() -> usize {
    10_000
}
fn default_vhost_max_conns_per_source() -> usize {
    256
}
fn default_vhost_first_byte_timeout() -> u64 {
    5
}
fn default_vhost_header_timeout() -> u64 {
    10
}
fn default_vhost_max_header_size() -> usize {
    32 * 1024
}

impl ServerConfig {
    pub(crate) fn first_byte_timeout(&self) -> Duration {
        // Never longer than the whole handshake may take.
        Duration::from_secs(self.first_byte_timeout.min(self.handshake_timeout))
    }

    /// The server-wide `allow_ips` / `deny_ips`.
    pub(crate) fn ip_filter(&self) -> Result<tunnel_proto::IpFilter, tunnel_proto::ProtoError> {
        tunnel_proto::IpFilter::new(&self.allow_ips, &self.deny_ips)
    }

    /// Let users in only from these networks (CIDRs or addresses), on every public port.
    pub fn with_allow_ips(mut self, nets: &[&str]) -> Self {
        self.allow_ips = nets.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Refuse users from these networks on every public port.
    pub fn with_deny_ips(mut self, nets: &[&str]) -> Self {
        self.deny_ips = nets.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Cap every proxy's bandwidth at this rate, each direction.
    pub fn with_bandwidth_limit(mut self, limit: tunnel_proto::Bandwidth) -> Self {
        self.bandwidth_limit = Some(limit);
        self
    }
}
