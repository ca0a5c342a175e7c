//! The tls-tunnel server engine.
//!
//! Clients connect over TLS, prove they know the shared key, and register their proxies; the
//! server opens a public port for each published proxy and relays every user connection to
//! the owning client as a new stream of that client's one multiplexed connection. Visitors of
//! one client reach another client's proxy through the same registry.
//!
//! The engine is a library first: the `tunnel-server` binary only turns a TOML file into a
//! [`ServerConfig`] and calls [`start`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tunnel_server::ServerError> {
//! let config = tunnel_server::ServerConfig::default()
//!     .with_bind("127.0.0.1:0".parse().unwrap()) // 0.0.0.0:8443 by default
//!     .with_stats_bind(None)
//!     .with_auth_key("a long random key");
//! let server = tunnel_server::start(config).await?;
//! println!("listening on {}, fingerprint {}", server.local_addr(), server.fingerprint());
//! assert_eq!(server.snapshot().clients, 0);
//! server.shutdown();
//! server.join().await;
//! # Ok(()) }
//! ```

// Every public item is documented, and `pub` means reachable from outside the crate. Set
// here rather than in `[workspace.lints]`: Cargo applies those to every target of every
// package, the end-to-end tests and their shared fixtures too.
#![warn(missing_docs, unreachable_pub)]

mod access;
mod auth_failures;
mod auto_port;
mod cluster;
mod config;
mod credentials;
mod drain;
mod error;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod group;
mod handshake;
mod lane;
mod listener;
mod metrics;
pub mod peer;
mod port_grant;
mod ports;
mod pre_auth;
mod register;
mod registry;
mod routes;
mod rules;
mod session;
mod source_limit;
mod stats;
mod stream_budget;
mod udp;
mod vhost;
mod visitor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};
use tunnel_mux::{MuxConfig, PipeConfig};
use tunnel_transport::{Acceptor, Fingerprint, ServerIdentity, Transport, WsTransport};

pub use config::ServerConfig;
pub use credentials::{Bandwidth, Client, Clients, ClientsReload, Patterns, Scope};
pub use error::{ConfigProblem, ServerError};
pub use ports::{PortRange, PortRanges};
pub use registry::{ProxyCounters, ProxyKey};
pub use rules::ReloadReport;

use registry::Registry;

/// State shared by every task of one server.
pub(crate) struct Shared {
    /// The config the server started with. The settings a reload may change are read from
    /// `rules` and `credentials` instead.
    cfg: ServerConfig,
    /// `allow_ports`, `allow_ips` / `deny_ips`, the caps: what a reload may change.
    rules: rules::Live,
    transport: Arc<dyn Transport>,
    /// Sessions by client id, proxies, their routes (see [`registry`]).
    registry: Registry,
    next_session: AtomicU64,
    pre_auth: pre_auth::PreAuth,
    auth_failures: auth_failures::AuthFailures,
    metrics: metrics::ServerMetrics,
    /// Stop accepting clients and user connections; open streams go on.
    shutdown: CancellationToken,
    /// Stop accepting clients (a child of `shutdown`): first step of a cluster drain, which
    /// keeps serving users while its clients move to other servers.
    logins: CancellationToken,
    /// A cluster drain has begun (see [`drain::begin`]).
    draining: std::sync::atomic::AtomicBool,
    /// Cut off from the cluster registry while peers reach it (see `cluster::fence`).
    isolated: std::sync::atomic::AtomicBool,
    /// Close every session and stream now.
    hard_stop: CancellationToken,
    /// Accept loops and sessions.
    tasks: TaskTracker,
    /// One task per user or visitor connection; drained on graceful shutdown.
    streams: TaskTracker,
    pipe: PipeConfig,
    /// Connections per source address on the published ports (`max_conns_per_source`).
    public_sources: source_limit::SourceLimit,
    /// Warnings a peer can cause at will (refusals by the limits above, refused visitors),
    /// one line per subject per [`LIMIT_WARN_WINDOW`].
    limit_warnings: tunnel_transport::WarnLimits<String>,
    /// Client streams still reading their header, all clients (`max_stream_headers`).
    stream_headers: Arc<tokio::sync::Semaphore>,
    limit_metrics: metrics::LimitMetrics,
    /// Server-wide `allow_ips` / `deny_ips`, and the clients' bandwidth limits.
    access: access::Access,
    /// This server's membership of a cluster; `None` in single-server mode.
    cluster: Option<Arc<cluster::Node>>,
    /// The server-to-server peer link, in cluster mode.
    peer: Option<Arc<peer::Peer>>,
    /// The clients file: per-client keys and scopes (`clients_file`).
    credentials: credentials::Store,
    /// The virtual host while it runs, for requests other servers of a cluster forward.
    vhost: std::sync::OnceLock<std::sync::Weak<vhost::Vhost>>,
    /// The ports `publish_port = "auto"` gave out, by client id and proxy name.
    auto_ports: auto_port::AutoPorts,
    /// Where client connections are served (`None`: on the runtime that started us).
    shards: Option<tunnel_mux::SessionThreads>,
}

/// At most one warning per subject (a source, a proxy, a client) this often about refusals
/// a peer can repeat at will.
const LIMIT_WARN_WINDOW: Duration = Duration::from_secs(60);

impl Shared {
    fn next_connection_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    fn mux_config(&self) -> MuxConfig {
        // The per-client cap is enforced above the mux with a readable error (see
        // `SessionRecord::begin_stream_for`); the mux's own limit only backs it up.
        MuxConfig::default().with_max_streams(self.rules.get().max_streams_per_client.clamp(
            tunnel_mux::DEFAULT_MAX_STREAMS,
            tunnel_mux::MAX_STREAMS_LIMIT,
        ))
    }
}

/// A running server. Dropping it does not stop the server; call [`ServerHandle::shutdown`].
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    vhost_addr: Option<SocketAddr>,
    vhost_https_addr: Option<SocketAddr>,
    stats_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    fingerprint: Fingerprint,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A snapshot of what the server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Connected clients.
    pub clients: usize,
    /// Registered proxies, public and private.
    pub proxies: usize,
}

impl ServerHandle {
    /// The address clients connect to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the plain WebSocket listener (`ws_bind`) listens, if it is on.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// Where the HTTP virtual host (`vhost_http_bind`) listens, if it is on.
    pub fn vhost_addr(&self) -> Option<SocketAddr> {
        self.vhost_addr
    }

    /// Where the HTTPS virtual host (`vhost_https_bind`) listens, if it is on.
    pub fn vhost_https_addr(&self) -> Option<SocketAddr> {
        self.vhost_https_addr
    }

    /// Where the stats endpoint listens, if it is on (useful with port 0).
    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats_addr
    }

    /// Where the peer link (`peer_bind`) listens, in cluster mode.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// SHA-256 fingerprint of the server certificate, for clients to pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Counts of clients and proxies right now.
    pub fn snapshot(&self) -> Snapshot {
        let (clients, proxies) = self.shared.registry.counts();
        Snapshot { clients, proxies }
    }

    /// Read `clients_file` again and apply it now: a client no longer listed (or whose keys
    /// were all replaced) is disconnected at once with the reason, a narrower scope withdraws
    /// the registrations it no longer allows and tells that client, and nothing else is
    /// touched. A file with problems changes nothing and gives every problem, each at its
    /// line and column. The `tunnel-server` binary calls this on SIGHUP.
    pub fn reload_clients(&self) -> Result<ClientsReload, ServerError> {
        credentials::reload::reload(&self.shared)
    }

    /// Put `new` in force without a restart, and read `clients_file` again (as
    /// [`ServerHandle::reload_clients`] does). Applied live: `auth_key` / `auth_key_file`
    /// (a changed shared key ends the sessions that logged in with the old one),
    /// `allow_ports`, `allow_ips`, `deny_ips` (new connections), `bandwidth_limit` (open
    /// connections too), `max_proxies_per_client`, and `max_streams_per_client` (for
    /// sessions that start from now on). A narrower rule withdraws the registrations it no
    /// longer allows and tells each client why; nothing else is touched. Every other setting
    /// that differs is named in [`ReloadReport::needs_restart`] and keeps its running value.
    /// A config with problems changes nothing and returns every problem.
    ///
    /// In a cluster the rules are this server's own: reload each server.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tunnel_server::ServerError> {
    /// let config = tunnel_server::ServerConfig::default()
    ///     .with_bind("127.0.0.1:0".parse().unwrap())
    ///     .with_stats_bind(None)
    ///     .with_auth_key("a long random key");
    /// let server = tunnel_server::start(config.clone()).await?;
    /// let report = server.reload(config.with_deny_ips(&["192.0.2.0/24"]))?;
    /// assert_eq!(report.changed, ["deny_ips"]);
    /// # server.join().await;
    /// # Ok(()) }
    /// ```
    pub fn reload(&self, new: ServerConfig) -> Result<ReloadReport, ServerError> {
        rules::reload(&self.shared, new)
    }

    /// Begin a graceful shutdown: stop accepting clients and user connections; open streams
    /// go on until they finish or `shutdown_grace` passes (see [`ServerHandle::join`]).
    ///
    /// In cluster mode the server drains first, make-before-break: it takes no new clients,
    /// marks itself draining (`/healthz` answers 503), tells its clients to reconnect to
    /// another server (each at a random moment within half of `shutdown_grace`, at most
    /// 5 s), and keeps serving users and peers until every client has moved or
    /// `shutdown_grace` has passed; only then does it stop accepting users.
    pub fn shutdown(&self) {
        match &self.shared.cluster {
            Some(node) => drain::begin(&self.shared, node),
            None => self.shared.shutdown.cancel(),
        }
    }

    /// Close every session and stream now.
    pub fn abort(&self) {
        self.shared.shutdown.cancel();
        self.shared.hard_stop.cancel();
    }

    /// Stop gracefully and wait until the server has stopped: begin the shutdown (as
    /// [`ServerHandle::shutdown`] does, if it was not called already), wait for open streams
    /// to finish, at most `shutdown_grace`, then close everything and wait for every task to
    /// end. The server never stops by itself, so a `join` that did not shut down would wait
    /// forever.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tunnel_server::ServerError> {
    /// let config = tunnel_server::ServerConfig::default()
    ///     .with_bind("127.0.0.1:0".parse().unwrap())
    ///     .with_stats_bind(None)
    ///     .with_auth_key("a long random key");
    /// let server = tunnel_server::start(config).await?;
    /// // No `shutdown()` first: `join` stops the server itself.
    /// let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), server.join()).await;
    /// assert!(stopped.is_ok(), "join returned");
    /// # Ok(()) }
    /// ```
    pub async fn join(self) {
        self.shutdown();
        self.shared.shutdown.cancelled().await;
        let grace = self.shared.cfg.shutdown_grace;
        self.shared.streams.close();
        if tokio::time::timeout(grace, self.shared.streams.wait())
            .await
            .is_err()
        {
            info!(
                open = self.shared.streams.len(),
                "grace period over; closing the remaining streams"
            );
        }
        self.shared.hard_stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        self.shared.streams.wait().await;
        if let Some(node) = &self.shared.cluster {
            cluster::leave(node).await;
        }
    }
}

/// Bind the client port and start serving. Returns once the server accepts connections.
pub async fn start(cfg: ServerConfig) -> Result<ServerHandle, ServerError> {
    start_with_peer(cfg, None).await
}

/// [`start`] as one server of a cluster: also bind `peer.peer_bind`, and forward visitors of
/// proxies that `locator` places on another server over the peer link.
pub async fn start_clustered(
    cfg: ServerConfig,
    peer: peer::PeerConfig,
    locator: Arc<dyn peer::Locate>,
) -> Result<ServerHandle, ServerError> {
    start_with_peer(cfg, Some((peer, locator))).await
}

async fn start_with_peer(
    cfg: ServerConfig,
    peer: Option<(peer::PeerConfig, Arc<dyn peer::Locate>)>,
) -> Result<ServerHandle, ServerError> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(ServerError::Config(problems));
    }
    let key = cfg
        .shared_key()
        .map_err(|p| ServerError::Config(vec![p]))?
        .unwrap_or_default();
    if !key.is_empty() {
        warn_if_short(key.as_bytes());
    }
    let credentials = credentials::Store::open(cfg.clients_file.as_deref(), key.as_bytes())?;
    let source = cfg
        .identity_source()
        .map_err(|p| ServerError::Config(vec![p]))?;
    let identity = ServerIdentity::load(&source)?;
    let fingerprint = identity.fingerprint();
    // One port for tls, h2 and wss (ALPN tells them apart).
    let transport: Arc<dyn Transport> =
        Arc::new(credentials::certificate::transport(&cfg, &identity)?);
    let listener = TcpListener::bind(cfg.bind)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.bind,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.bind,
        source,
    })?;
    let ws_listener = bind_optional(cfg.ws_bind).await?;
    let vhost_listener = bind_optional(cfg.vhost_http_bind).await?;
    let vhost_https_listener = bind_optional(cfg.vhost_https_bind).await?;
    // Fatal like every other listener (and like the client): a configured endpoint that is
    // silently absent looks to monitoring like a dead server.
    let stats_listener = tunnel_admin::StatsListener::bind(&cfg.admin())
        .await
        .map_err(
            |tunnel_admin::AdminError::Bind { addr, source }| ServerError::StatsBind {
                addr,
                source,
            },
        )?;
    // Last, after every bind: a start that fails leaves no lease behind.
    let cluster = cluster::connect(&cfg, local_addr).await?;
    // A server of a cluster links to its peers; `start_clustered` brings its own locator.
    let peer = match (peer, &cluster) {
        (Some(p), _) => Some(p),
        (None, Some(node)) => match cluster::locate::peer_config(&cfg) {
            Ok(pc) => pc.map(|pc| {
                let locator: Arc<dyn peer::Locate> =
                    Arc::new(cluster::locate::NodeLocator::new(node.clone()));
                (pc, locator)
            }),
            Err(e) => {
                cluster::leave(node).await;
                return Err(e);
            }
        },
        (None, None) => None,
    };
    let peer = match peer {
        Some((pc, _)) if pc.cluster_key == key => {
            return Err(ServerError::Config(vec![ConfigProblem::new(
                "cluster.cluster_key",
                "equals the client auth_key: a client could then pass as a server; use a \
                 separate secret",
            )]));
        }
        Some((pc, locator)) => match peer::Peer::bind(pc, locator, &identity).await {
            Ok(p) => Some(p),
            Err(e) => {
                if let Some(node) = &cluster {
                    cluster::leave(node).await;
                }
                return Err(e);
            }
        },
        None => None,
    };
    let public_sources = source_limit::SourceLimit::new(cfg.max_conns_per_source, 0);
    let stream_headers = Arc::new(tokio::sync::Semaphore::new(cfg.max_stream_headers));
    let shards = match cfg.session_thread_count() {
        0 => None,
        threads => Some(
            tunnel_mux::SessionThreads::start(threads)
                .map_err(|source| ServerError::SessionThreads { threads, source })?,
        ),
    };
    let shutdown = CancellationToken::new();
    let access = access::Access::default();
    let shared = Arc::new(Shared {
        pre_auth: pre_auth::PreAuth::new(&cfg),
        auth_failures: auth_failures::AuthFailures::new(cfg.max_auth_failures_per_second),
        metrics: metrics::ServerMetrics::default(),
        rules: rules::Live::new(&cfg),
        cfg,
        transport,
        registry: Registry::default(),
        next_session: AtomicU64::new(1),
        logins: shutdown.child_token(),
        draining: std::sync::atomic::AtomicBool::new(false),
        isolated: std::sync::atomic::AtomicBool::new(false),
        shutdown,
        hard_stop: CancellationToken::new(),
        tasks: TaskTracker::new(),
        streams: TaskTracker::new(),
        pipe: PipeConfig::default(),
        public_sources,
        limit_warnings: tunnel_transport::WarnLimits::new(LIMIT_WARN_WINDOW),
        stream_headers,
        limit_metrics: metrics::LimitMetrics::default(),
        access,
        cluster,
        peer: peer.as_ref().map(|(p, _, _)| p.clone()),
        credentials,
        vhost: std::sync::OnceLock::new(),
        auto_ports: auto_port::AutoPorts::default(),
        shards,
    });
    cluster::follow::spawn(&shared);
    info!(%local_addr, %fingerprint, "tunnel server listening");
    let stats_addr = stats_listener.as_ref().map(|l| l.local_addr());
    if let Some(l) = stats_listener {
        let source = Arc::new(stats::ServerStats(shared.clone()));
        let task = l.serve(source, shared.hard_stop.clone());
        shared
            .tasks
            .spawn(task.instrument(tracing::info_span!("stats")));
    }
    let accept = accept_loop(shared.clone(), listener, shared.transport.clone(), true);
    shared
        .tasks
        .spawn(accept.instrument(tracing::info_span!("server", %local_addr)));
    let ws_addr = ws_listener.as_ref().map(|(_, at)| *at);
    if let Some((l, at)) = ws_listener {
        info!(
            ws_addr = %at,
            "plain WebSocket (ws) listening: only a TLS-terminating proxy should reach it"
        );
        let ws: Arc<dyn Transport> = Arc::new(WsTransport::plain_server(&shared.cfg.ws_path));
        // Every connection here comes from the proxy in front: no per-source share.
        let accept = accept_loop(shared.clone(), l, ws, false);
        shared
            .tasks
            .spawn(accept.instrument(tracing::info_span!("server", ws_addr = %at)));
    }
    let vhost_addr = vhost_listener.as_ref().map(|(_, at)| *at);
    if let Some((l, at)) = vhost_listener {
        info!(vhost_addr = %at, "HTTP virtual host listening");
        let task = vhost::run(shared.clone(), l);
        shared
            .tasks
            .spawn(task.instrument(tracing::info_span!("vhost", %at)));
    }
    let vhost_https_addr = vhost_https_listener.as_ref().map(|(_, at)| *at);
    if let Some((l, at)) = vhost_https_listener {
        info!(vhost_https_addr = %at, "HTTPS virtual host (by SNI) listening");
        let task = vhost::run_https(shared.clone(), l);
        shared
            .tasks
            .spawn(task.instrument(tracing::info_span!("vhost_https", %at)));
    }
    let peer_addr = peer.as_ref().map(|(_, _, at)| *at);
    if let Some((p, l, at)) = peer {
        let advertise = p
            .cfg
            .peer_advertise
            .clone()
            .unwrap_or_else(|| at.to_string());
        info!(peer_addr = %at, %advertise, server_id = %p.cfg.server_id, "peer link listening");
        // `publish_mode = "owner"`: only the server holding a client listens on its ports.
        let forward_ports = shared
            .cfg
            .cluster
            .as_ref()
            .is_none_or(|c| c.publish_mode != tunnel_cluster::config::PublishMode::Owner);
        if forward_ports {
            let ports = peer::run_ports(shared.clone(), p.clone());
            shared
                .tasks
                .spawn(ports.instrument(tracing::info_span!("cluster ports")));
        }
        let task = peer::run_listener(shared.clone(), p, l);
        shared
            .tasks
            .spawn(task.instrument(tracing::info_span!("peers", %at)));
    }
    Ok(ServerHandle {
        peer_addr,
        local_addr,
        ws_addr,
        vhost_addr,
        vhost_https_addr,
        stats_addr,
        fingerprint,
        shared,
    })
}

/// Accept clients on `listener`, each handshaking over `transport`. `own_address`: the TCP
/// peer is the client (see `session::handle_connection`).
async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    transport: Arc<dyn Transport>,
    own_address: bool,
) {
    let mut listener = Acceptor::new(listener);
    loop {
        tokio::select! {
            () = shared.logins.cancelled() => break,
            (tcp, peer) = listener.accept() => {
                let serve = {
                    let (shared, transport) = (shared.clone(), transport.clone());
                    move |tcp| {
                        session::handle_connection(shared, transport, tcp, peer, own_address)
                    }
                };
                match &shared.shards {
                    Some(shards) => shards.serve(&shared.tasks, tcp, serve),
                    None => {
                        shared.tasks.spawn(serve(tcp).in_current_span());
                    }
                }
            }
        }
    }
    info!("no longer accepting clients");
}

/// Shortest auth key not warned about: with fewer bytes (a word, a PIN) an online guesser
/// needs far fewer tries than the wrong-key limits allow over time.
const MIN_AUTH_KEY_LEN: usize = 16;

fn warn_if_short(key: &[u8]) {
    if key.len() < MIN_AUTH_KEY_LEN {
        warn!(
            "the auth key is only {} bytes: use at least {MIN_AUTH_KEY_LEN} random bytes \
             (e.g. `openssl rand -base64 24`) so it cannot be guessed",
            key.len()
        );
    }
}

/// Listen on `addr` when it is configured; the listener and the address it got (port 0).
async fn bind_optional(
    addr: Option<SocketAddr>,
) -> Result<Option<(TcpListener, SocketAddr)>, ServerError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let bind_err = |source| ServerError::Bind { addr, source };
    let l = TcpListener::bind(addr).await.map_err(bind_err)?;
    let at = l.local_addr().map_err(bind_err)?;
    Ok(Some((l, at)))
}
