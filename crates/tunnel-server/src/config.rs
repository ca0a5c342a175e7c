//! Server configuration: the TOML file format, defaults, and validation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tunnel_transport::config_file::{self, Schema};
use tunnel_transport::{ServerIdentity, ServerIdentitySource};

use crate::error::{ConfigProblem, ServerError};
use crate::ports::{PortRange, PortRanges};

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

    /// Mutual TLS settings that cannot work: see [`ServerConfig::require_client_cert`].
    fn client_cert_problems(&self, out: &mut Vec<ConfigProblem>) {
        if !self.require_client_cert {
            return;
        }
        let Some(ca) = &self.client_ca else {
            return out.push(ConfigProblem::new(
                "require_client_cert",
                "needs client_ca: the PEM file of the CA that issues client certificates",
            ));
        };
        if self.ws_bind.is_some() {
            out.push(ConfigProblem::new(
                "require_client_cert",
                "cannot be combined with ws_bind: TLS ends at the proxy in front of ws_bind, \
                 so no client there can present a certificate; remove ws_bind (clients use \
                 wss on bind instead) or set require_client_cert = false",
            ));
        }
        // Without it the server could serve nobody: refuse to start rather than warn.
        let auth = tunnel_transport::ClientAuth {
            ca: ca.clone(),
            require_at_tls: false,
        };
        if let Err(e) = auth.check() {
            out.push(ConfigProblem::new("client_ca", e.to_string()));
        }
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

    /// Every problem with this configuration, TLS files included (they are loaded).
    /// An empty list means the server can start.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if let Err(p) = self.shared_key() {
            out.push(p);
        }
        match self.identity_source() {
            Ok(src @ ServerIdentitySource::Pem { .. }) => {
                if let Err(e) = ServerIdentity::load(&src) {
                    out.push(ConfigProblem::new("tls_cert", e.to_string()));
                }
            }
            Ok(_) => {}
            Err(p) => out.push(p),
        }
        if let Err(m) = tunnel_transport::check_ws_path(&self.ws_path) {
            out.push(ConfigProblem::new("ws_path", m));
        }
        self.client_cert_problems(&mut out);
        if self.ws_bind == Some(self.bind) && self.bind.port() != 0 {
            out.push(ConfigProblem::new(
                "ws_bind",
                "must differ from bind: bind already serves wss; ws_bind is the plain-HTTP \
                 port for a TLS-terminating proxy",
            ));
        }
        if let Some(v) = self.vhost_http_bind {
            if v.port() != 0 && (v == self.bind || Some(v) == self.ws_bind) {
                out.push(ConfigProblem::new(
                    "vhost_http_bind",
                    "must differ from bind and ws_bind: it is the public HTTP port",
                ));
            }
        }
        if let Some(v) = self.vhost_https_bind {
            let taken = [Some(self.bind), self.ws_bind, self.vhost_http_bind];
            if v.port() != 0 && taken.contains(&Some(v)) {
                out.push(ConfigProblem::new(
                    "vhost_https_bind",
                    "must differ from bind, ws_bind and vhost_http_bind: it is the public \
                     HTTPS port",
                ));
            }
        }
        if let Some(host) = &self.subdomain_host {
            if crate::routes::normalize_domain(host).map_or(true, |h| h.starts_with('*')) {
                out.push(ConfigProblem::new(
                    "subdomain_host",
                    format!("{host:?} is not a host name: use e.g. \"tunnel.example.com\""),
                ));
            } else if self.vhost_http_bind.is_none() && self.vhost_https_bind.is_none() {
                out.push(ConfigProblem::new(
                    "subdomain_host",
                    "needs vhost_http_bind or vhost_https_bind: subdomains are served on the \
                     virtual hosts",
                ));
            }
        }
        out.extend(self.admin().problems());
        if self.handshake_timeout == 0 {
            out.push(ConfigProblem::new(
                "handshake_timeout",
                "must be at least 1 (seconds)",
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout <= self.heartbeat_interval {
            out.push(ConfigProblem::new(
                "heartbeat_timeout",
                "must be longer than heartbeat_interval (both in seconds, at least 1)",
            ));
        }
        if self
            .session_threads
            .is_some_and(|n| n > MAX_SESSION_THREADS)
        {
            out.push(ConfigProblem::new(
                "session_threads",
                format!(
                    "must be at most {MAX_SESSION_THREADS} (one per core is plenty; leave it \
                     unset for that)"
                ),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_frame_size) {
            out.push(ConfigProblem::new(
                "max_frame_size",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        for (field, v) in [
            ("max_clients", self.max_clients),
            ("max_pending_handshakes", self.max_pending_handshakes),
            ("max_proxies_per_client", self.max_proxies_per_client),
            ("max_streams_per_client", self.max_streams_per_client),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
            (
                "max_stream_headers_per_client",
                self.max_stream_headers_per_client,
            ),
            ("max_stream_headers", self.max_stream_headers),
        ] {
            if v == 0 {
                out.push(ConfigProblem::new(field, "must be at least 1"));
            }
        }
        out.extend(self.route_cap_problems());
        self.vhost_problems(&mut out);
        out.extend(self.admission_problems());
        out.extend(self.cluster_problems());
        out
    }

    /// The `[cluster]` table's problems, with the client key it must differ from, and
    /// whether this build can talk to its backend.
    fn cluster_problems(&self) -> Vec<ConfigProblem> {
        let Some(c) = self.cluster.as_ref().filter(|c| c.enabled()) else {
            return Vec::new();
        };
        let mut out = c.problems_with(self.resolve_auth_key().ok().as_deref());
        if c.backend == tunnel_cluster::Backend::Etcd && !cfg!(feature = "etcd") {
            out.push(ConfigProblem::new(
                "cluster.backend",
                "this build has no etcd support: build with `cargo build --release --features etcd`",
            ));
        }
        out
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

    fn route_cap_problems(&self) -> Vec<ConfigProblem> {
        [
            ("max_domains_per_proxy", self.max_domains_per_proxy),
            ("max_locations_per_proxy", self.max_locations_per_proxy),
            ("max_routes_per_client", self.max_routes_per_client),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(field, _)| {
            ConfigProblem::new(
                field,
                "must be at least 1: it caps what one client may claim on the virtual host",
            )
        })
        .collect()
    }

    /// Problems with the virtual host's limits and `trusted_proxies`.
    fn vhost_problems(&self, out: &mut Vec<ConfigProblem>) {
        for (field, v) in [
            ("vhost_first_byte_timeout", self.vhost_first_byte_timeout),
            ("vhost_header_timeout", self.vhost_header_timeout),
        ] {
            if v == 0 {
                out.push(ConfigProblem::new(field, "must be at least 1 (seconds)"));
            }
        }
        if self.vhost_max_header_size < crate::vhost::MIN_HEADER_SIZE {
            out.push(ConfigProblem::new(
                "vhost_max_header_size",
                format!("must be at least {} bytes", crate::vhost::MIN_HEADER_SIZE),
            ));
        }
        if let Err(e) = crate::vhost::TrustedProxies::parse(&self.trusted_proxies) {
            out.push(ConfigProblem::new("trusted_proxies", e.to_string()));
        }
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

    /// Problems with the pre-authentication limits.
    fn admission_problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.pending_handshakes_drop_percent > 100 {
            out.push(ConfigProblem::new(
                "pending_handshakes_drop_percent",
                "is a percentage: 0 to 100",
            ));
        }
        if self.first_byte_timeout == 0 {
            out.push(ConfigProblem::new(
                "first_byte_timeout",
                "must be at least 1 (seconds)",
            ));
        }
        if let Err(e) = self.ip_filter() {
            out.push(crate::access::ip_problem(e));
        }
        out
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn duration_builders_keep_milliseconds_and_the_file_reads_seconds() {
        let c = ServerConfig::default()
            .with_auth_key("k")
            .with_heartbeat(Duration::from_millis(1500), Duration::from_millis(4500))
            .with_shutdown_grace(Duration::from_millis(250));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(1500));
        assert_eq!(c.heartbeat().timeout, Duration::from_millis(4500));
        assert_eq!(c.shutdown_grace, Duration::from_millis(250));
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        // 1.5 s against 1.2 s: a truncation to whole seconds would have called these equal.
        let c = c.with_heartbeat(Duration::from_millis(1500), Duration::from_millis(1200));
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["heartbeat_timeout"]);

        let c = ServerConfig::from_toml(
            "auth_key = \"k\"\nheartbeat_interval = 2\nheartbeat_timeout = 7\nshutdown_grace = 0",
        )
        .unwrap();
        let got = (c.heartbeat_interval, c.heartbeat_timeout, c.shutdown_grace);
        assert_eq!(
            got,
            (
                Duration::from_secs(2),
                Duration::from_secs(7),
                Duration::ZERO
            )
        );
        let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert!(ServerConfig::from_toml("auth_key = \"k\"\nshutdown_grace = 1.5").is_err());
    }

    #[test]
    fn require_client_cert_needs_a_client_ca_and_no_ws_bind() {
        let fields = |toml: &str| -> Vec<String> {
            ServerConfig::from_toml(toml)
                .unwrap()
                .problems()
                .into_iter()
                .map(|p| p.field.to_string())
                .collect()
        };
        let base = "auth_key = \"k\"\nrequire_client_cert = true\n";
        assert_eq!(fields(base), ["require_client_cert"]);
        let missing = format!("{base}client_ca = \"/nonexistent/ca.pem\"\n");
        assert_eq!(fields(&missing), ["client_ca"]);
        let ws = format!("{missing}ws_bind = \"127.0.0.1:9\"\n");
        assert_eq!(fields(&ws), ["require_client_cert", "client_ca"]);
        // Without require_client_cert an unreadable client_ca is a WARN at start only.
        assert!(fields("auth_key = \"k\"\nclient_ca = \"/nonexistent/ca.pem\"\n").is_empty());
    }

    #[test]
    fn ws_bind_and_ws_path_are_checked() {
        let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
        assert_eq!((c.ws_bind, c.ws_path.as_str()), (None, "/tunnel"));
        let c = ServerConfig::from_toml(
            "auth_key = \"k\"\nbind = \"127.0.0.1:8443\"\nws_bind = \"127.0.0.1:8443\"\n\
             ws_path = \"no-slash\"",
        )
        .unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["ws_path", "ws_bind"]);
    }

    #[test]
    fn vhost_keys_are_checked() {
        let ok = ServerConfig::from_toml(
            "auth_key = \"k\"\nvhost_http_bind = \"0.0.0.0:80\"\nsubdomain_host = \"t.example.com\"",
        )
        .unwrap();
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        assert_eq!(ok.vhost_http_bind, Some("0.0.0.0:80".parse().unwrap()));
        // A subdomain_host served over https only is fine too.
        let https = ServerConfig::from_toml(
            "auth_key = \"k\"\nvhost_https_bind = \"0.0.0.0:443\"\nsubdomain_host = \"t.example.com\"",
        )
        .unwrap();
        assert!(https.problems().is_empty(), "{:?}", https.problems());
        for (extra, field) in [
            ("subdomain_host = \"t.example.com\"", "subdomain_host"),
            (
                "vhost_http_bind = \"0.0.0.0:80\"\nsubdomain_host = \"*.x\"",
                "subdomain_host",
            ),
            ("vhost_http_bind = \"0.0.0.0:8443\"", "vhost_http_bind"),
            ("vhost_https_bind = \"0.0.0.0:8443\"", "vhost_https_bind"),
            (
                "vhost_http_bind = \"0.0.0.0:80\"\nvhost_https_bind = \"0.0.0.0:80\"",
                "vhost_https_bind",
            ),
        ] {
            let c = ServerConfig::from_toml(&format!("auth_key = \"k\"\n{extra}")).unwrap();
            let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
            assert_eq!(fields, [field], "{extra}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = ServerConfig::from_toml("").unwrap();
        assert_eq!(c.bind, default_bind());
        assert_eq!(c.stats_bind, default_stats_bind());
        let off = ServerConfig::from_toml("stats_bind = \"\"").unwrap();
        assert_eq!(off.stats_bind, None);
        let e = ServerConfig::from_toml("stats_bind = \"localhost\"").unwrap_err();
        assert!(e.to_string().contains("stats_bind"), "{e}");
        assert!(c.allow_ports.contains(1024) && !c.allow_ports.contains(1023));
    }

    #[test]
    fn every_problem_of_a_file_is_reported_in_one_run() {
        let text = "bnid = \"0.0.0.0:1\"\nallow_ports = [\"9000-8000\"]\n\
                    stats_bind = \"localhost\"\nmax_clients = -1\n[foo]\nx = 1\n";
        let Err(ServerError::ConfigSyntax { problems, .. }) = ServerConfig::from_toml(text) else {
            panic!("parsed");
        };
        let shown: Vec<String> = problems
            .iter()
            .map(|p| format!("{:?} {}", p.at.map(|a| (a.line, a.column)), p.field))
            .collect();
        assert_eq!(
            shown,
            [
                "Some((1, 1)) bnid",
                "Some((2, 15)) allow_ports",
                "Some((3, 14)) stats_bind",
                "Some((4, 15)) max_clients",
                "Some((5, 2)) foo",
            ]
        );
        assert!(
            problems[0].message.contains("did you mean `bind`?"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let e = ServerConfig::from_toml("bnid = \"0.0.0.0:1\"").unwrap_err();
        assert!(e.to_string().contains("bnid"), "{e}");
    }

    #[test]
    fn bad_port_range_is_explained() {
        let e = ServerConfig::from_toml("allow_ports = [\"9000-8000\"]").unwrap_err();
        assert!(e.to_string().contains("9000-8000"), "{e}");
    }

    #[test]
    fn cert_without_key_is_a_problem() {
        let c = ServerConfig::from_toml("auth_key = \"k\"\ntls_cert = \"/x.pem\"").unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "tls_key");
    }

    #[test]
    fn missing_key_is_a_problem_and_debug_hides_the_key() {
        let c = ServerConfig::from_toml("").unwrap();
        assert_eq!(c.problems()[0].field, "auth_key");
        let c = c.with_auth_key("hunter2");
        assert!(c.problems().is_empty());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn route_caps_have_defaults_and_refuse_zero() {
        let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
        assert_eq!(
            (
                c.max_domains_per_proxy,
                c.max_locations_per_proxy,
                c.max_routes_per_client
            ),
            (64, 32, 1024)
        );
        let c = ServerConfig::from_toml(
            "auth_key = \"k\"\nmax_domains_per_proxy = 0\nmax_locations_per_proxy = 0\n\
             max_routes_per_client = 0",
        )
        .unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "max_domains_per_proxy",
                "max_locations_per_proxy",
                "max_routes_per_client"
            ]
        );
        let c = ServerConfig::from_toml("auth_key = \"k\"\nmax_routes_per_client = 5").unwrap();
        assert!(c.problems().is_empty());
        assert_eq!(c.max_routes_per_client, 5);
    }

    #[test]
    fn vhost_limits_have_defaults_and_are_checked() {
        let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
        assert_eq!(
            (c.vhost_max_conns, c.vhost_max_conns_per_source),
            (10_000, 256)
        );
        assert_eq!(
            (c.vhost_first_byte_timeout, c.vhost_header_timeout),
            (5, 10)
        );
        assert_eq!(c.vhost_max_header_size, 32 * 1024);
        assert!(c.trusted_proxies.is_empty());
        let c = ServerConfig::from_toml(
            "auth_key = \"k\"\nvhost_header_timeout = 0\nvhost_max_header_size = 100\n\
             trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/99\"]",
        )
        .unwrap();
        let p = c.problems();
        let fields: Vec<_> = p.iter().map(|p| p.field.clone()).collect();
        assert_eq!(
            fields,
            [
                "vhost_header_timeout",
                "vhost_max_header_size",
                "trusted_proxies"
            ]
        );
        assert!(p[2].to_string().contains("10.0.0.0/99"), "{}", p[2]);
    }

    #[test]
    fn admission_keys_have_defaults_and_are_checked() {
        let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
        assert_eq!(
            (
                c.pending_handshakes_per_source,
                c.pending_handshakes_drop_from,
                c.pending_handshakes_drop_percent,
                c.first_byte_timeout,
                c.max_auth_failures_per_second
            ),
            (16, 64, 30, 3, 20)
        );
        let c = ServerConfig::from_toml(
            "auth_key = \"k\"\npending_handshakes_drop_percent = 101\nfirst_byte_timeout = 0",
        )
        .unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["pending_handshakes_drop_percent", "first_byte_timeout"]
        );
    }

    #[test]
    fn ip_lists_and_the_bandwidth_cap_are_read_and_checked() {
        let c = ServerConfig::from_toml(
            "auth_key = \"k\"\nallow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
             deny_ips = [\"10.9.0.0/16\"]\nbandwidth_limit = \"50MiB\"",
        )
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.bandwidth_limit.unwrap().bytes_per_second(), 50 << 20);
        let f = c.ip_filter().unwrap();
        assert!(f.permits("10.1.1.1".parse().unwrap()));
        assert!(!f.permits("10.9.1.1".parse().unwrap()));

        let c =
            ServerConfig::from_toml("auth_key = \"k\"\ndeny_ips = [\"2001:db8::/129\"]").unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "deny_ips");
        assert!(p[0].message.contains("2001:db8::/129"), "{}", p[0]);

        let Err(ServerError::ConfigSyntax { problems, .. }) =
            ServerConfig::from_toml("auth_key = \"k\"\nbandwidth_limit = \"fast\"")
        else {
            panic!("a rate of \"fast\" was accepted");
        };
        assert!(
            problems[0].to_string().contains("is not a rate"),
            "{problems:?}"
        );
    }
}
