//! The tls-tunnel client engine.
//!
//! A client opens one TLS connection to a `tunnel-server`, proves it knows the shared key,
//! registers its proxies and visitors, and then serves every user connection as a stream of
//! that one multiplexed connection. It reconnects by itself with exponential backoff. Given
//! several servers ([`ServerAddr::List`]), it uses one at a time and moves on to the next at
//! once when one is down.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tunnel_client::{ClientConfig, ProxyConfig};
//! # let server = tunnel_server::start(tunnel_server::ServerConfig::default()
//! #     .with_bind("127.0.0.1:0".parse()?).with_stats_bind(None).with_auth_key("a long random key")).await?;
//! # let server_addr = server.local_addr().to_string();
//! # let fingerprint = server.fingerprint();
//! // server_addr is "tunnel.example.com:8443" in real life
//! let config = ClientConfig::new(server_addr)
//!     .with_auth_key("a long random key")
//!     .with_fingerprint(fingerprint)
//!     .with_proxy(ProxyConfig::tcp("web", "127.0.0.1:3000", None));
//! let mut client = tunnel_client::start(config).await?;
//! let verdicts = client.ready().await?;
//! assert!(verdicts.results.iter().all(|r| r.error.is_none()));
//! client.shutdown();
//! client.join().await?;
//! # Ok(()) }
//! ```

// Every public item is documented, and `pub` means reachable from outside the crate. Set
// here rather than in `[workspace.lints]`: Cargo applies those to every target of every
// package, the end-to-end tests and their shared fixtures too.
#![warn(missing_docs, unreachable_pub)]

mod backoff;
mod client_cert;
mod config;
mod error;
mod h2_proxy;
mod health;
mod http_config;
mod http_headers;
mod http_pool;
mod http_proxy;
mod http_upgrade;
mod lanes;
mod proxy;
mod publish;
mod reload;
mod server_addr;
mod servers;
mod session;
mod stats;
mod udp;
mod visitor;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};
use tunnel_mux::{MuxConfig, PipeConfig};
use tunnel_proto::RegisterReply;
use tunnel_transport::WarnLimit;

pub use config::{ClientConfig, ProxyConfig, VisitorConfig};
pub use error::{ClientError, ConfigProblem};
pub use health::{HealthCheck, HealthKind};
pub use http_config::HttpOptions;
pub use publish::PublishPort;
pub use reload::ReloadSummary;
pub use server_addr::ServerAddr;

use backoff::Backoff;
use session::SessionEnd;

/// Where the client stands, as reported by [`ClientHandle::status`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Status {
    /// Not registered yet (first connection, or reconnecting).
    Connecting,
    /// The last attempt failed with this error; another follows, on the next server at once
    /// if `server_addr` lists one not tried yet in this round, else after a backoff.
    Retrying(String),
    /// Connected and registered; the server's verdict for each proxy and visitor.
    Ready(RegisterReply),
    /// Stopped for good, with the reason.
    Stopped(String),
}

pub(crate) struct Shared {
    cfg: ClientConfig,
    key: Vec<u8>,
    /// This client's id on the server; see [`Shared::take_fallback_id`].
    id: RwLock<String>,
    instance: [u8; 16],
    /// Where to connect: `server_addr`, in the order tried.
    servers: servers::Servers,
    /// The parts of the config a reload may change: proxies (by name) and what is registered.
    live: RwLock<Live>,
    /// Running visitor listeners by name, each with its own stop token.
    visitors: parking_lot::Mutex<HashMap<String, visitor::Running>>,
    /// The live session's connections, while there is one.
    current: RwLock<Option<Arc<lanes::Lanes>>>,
    /// A reload happened with no session to tell; the next session re-registers.
    reload_pending: std::sync::atomic::AtomicBool,
    /// One reload at a time, and which verdicts of the next registration reply are news.
    reload: reload::State,
    /// Proxies withdrawn by their health checks, and each check's state.
    health: health::Health,
    status: watch::Sender<Status>,
    shutdown: CancellationToken,
    /// Visitor listeners.
    tasks: TaskTracker,
    /// One task per proxied or visiting connection; drained on graceful shutdown.
    streams: TaskTracker,
    mux: MuxConfig,
    /// With `connections` above 1, where the session and each extra connection run (one
    /// thread per connection, at most one per core; see `tunnel_mux::SessionThreads`).
    threads: Option<tunnel_mux::SessionThreads>,
    pipe: PipeConfig,
    proxy_counters: stats::CounterMap,
    /// Local connections of `http`/`http2` proxies, shared by all their users.
    http_upstreams: http_proxy::Upstreams,
    visitor_counters: stats::CounterMap,
    /// Since when connected, reconnects, the last error: for the dashboard.
    session_log: stats::SessionLog,
    /// Warnings the server or its users can repeat at will.
    warn_limits: Warnings,
    /// The server's rejection that stopped the client, so that [`ClientHandle::ready`] reports
    /// it as the same (permanent) rejection rather than as text.
    stopped_by: std::sync::OnceLock<(tunnel_proto::RejectCode, String)>,
}

/// One line per window for each warning a peer can repeat at will; those about one proxy's
/// or visitor's connections are in its [`stats::Counters`].
#[derive(Debug, Default)]
pub(crate) struct Warnings {
    id_taken: WarnLimit,
    unknown_proxy: WarnLimit,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &*self.id.read())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The current settings of proxy `name`.
    fn proxy_config(&self, name: &str) -> Option<ProxyConfig> {
        self.live.read().proxies.get(name).cloned()
    }

    /// Two clients on one machine share a hostname, the default id. When the server says the
    /// id is in use and none was configured, take `<hostname>-<instance>` instead (once) rather
    /// than wait for the other client to leave. Returns whether the id changed.
    fn take_fallback_id(&self, e: &ClientError) -> bool {
        // A certificate proves one id: another would be refused.
        if !e.is_id_in_use() || self.cfg.id.is_some() || self.cfg.client_cert.is_some() {
            return false;
        }
        let mut id = self.id.write();
        if *id != self.cfg.effective_id() {
            return false;
        }
        let suffix: String = self.instance[..3]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let base: String = id.chars().take(64 - 7).collect();
        *id = format!("{base}-{suffix}");
        warn!(
            id = %*id,
            "the default id (the hostname) is in use by another client; using this one instead: set `id` in the config to choose"
        );
        true
    }

    fn register_request(&self) -> tunnel_proto::RegisterRequest {
        // A proxy withdrawn by its health check is left out until it recovers.
        self.health.filter(self.live.read().request.clone())
    }

    /// Start serving a visitor on its bound listener.
    fn spawn_visitor(self: &Arc<Self>, v: VisitorConfig, bound: visitor::Bound) {
        let stop = self.shutdown.child_token();
        let spare = Arc::new(parking_lot::Mutex::new(Some(bound.spare)));
        let ended = tokio_util::sync::CancellationToken::new();
        let running = visitor::Running {
            cfg: v.clone(),
            stop: stop.clone(),
            spare: spare.clone(),
            ended: ended.clone(),
        };
        self.visitors.lock().insert(v.name.clone(), running);
        let span = tracing::info_span!("client", id = %self.id.read());
        let task = visitor::run(self.clone(), v, bound.listener, stop);
        self.tasks.spawn(
            async move {
                task.await;
                // The port closes with the last handle on it.
                spare.lock().take();
                ended.cancel();
            }
            .instrument(span),
        );
    }
}

/// What a reload may change without reconnecting.
#[derive(Debug)]
pub(crate) struct Live {
    /// The config running now: the one started with, as changed by reloads.
    cfg: ClientConfig,
    proxies: HashMap<String, ProxyConfig>,
    request: tunnel_proto::RegisterRequest,
}

impl Live {
    fn from_config(cfg: &ClientConfig) -> Self {
        Live {
            cfg: cfg.clone(),
            proxies: cfg
                .proxies
                .iter()
                .map(|p| (p.name.clone(), p.clone()))
                .collect(),
            request: cfg.register_request(),
        }
    }
}

/// A running client.
#[derive(Debug)]
pub struct ClientHandle {
    shared: Arc<Shared>,
    status: watch::Receiver<Status>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ClientError>>,
}

impl ClientHandle {
    /// Wait until the client is registered and return the server's verdicts, or the error
    /// that stopped it.
    pub async fn ready(&mut self) -> Result<RegisterReply, ClientError> {
        loop {
            match &*self.status.borrow_and_update() {
                Status::Ready(r) => return Ok(r.clone()),
                Status::Stopped(why) => {
                    return Err(match self.shared.stopped_by.get() {
                        Some((code, reason)) => ClientError::Rejected {
                            code: *code,
                            reason: reason.clone(),
                        },
                        None => ClientError::Protocol(why.clone()),
                    })
                }
                Status::Connecting | Status::Retrying(_) => {}
            }
            if self.status.changed().await.is_err() {
                return Err(ClientError::Protocol("the client stopped".into()));
            }
        }
    }

    /// Apply a new configuration without reconnecting: added proxies and visitors start,
    /// removed ones stop (their open connections finish), changed ones are updated (new
    /// connections get the new settings), and the rest are not touched. Settings of the
    /// connection itself (server, key, trust, id, connections, timeouts, stats endpoint) need
    /// a restart: changing any of them refuses the reload, naming each. An invalid config, or
    /// a visitor address that cannot be listened on, is refused too; a refused reload leaves
    /// the running config exactly as it was. The server's verdicts arrive as a new
    /// [`Status::Ready`].
    pub async fn reload(&self, cfg: ClientConfig) -> Result<reload::ReloadSummary, ClientError> {
        reload::apply(&self.shared, cfg).await
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Begin a graceful stop: visitor listeners close, connections the server opens are
    /// refused, open connections get `shutdown_grace` to finish; then the session closes.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait for the client to stop; an error says why it stopped by itself. Cancel-safe:
    /// it may be raced against a signal and called again.
    ///
    /// Unlike the server's `ServerHandle::join`, this does not stop the
    /// client: a client does stop by itself (a rejection that cannot heal), and waiting for
    /// that is what `join` without [`ClientHandle::shutdown`] is for. To stop it, call
    /// `shutdown` first; `join` then returns within `shutdown_grace` and the session close.
    pub async fn join(&mut self) -> Result<(), ClientError> {
        (&mut self.task)
            .await
            .unwrap_or_else(|e| Err(ClientError::Protocol(format!("client task failed: {e}"))))
    }
}

/// Validate the config, bind the visitors' listeners, and start connecting in the background.
pub async fn start(cfg: ClientConfig) -> Result<ClientHandle, ClientError> {
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(ClientError::Config(problems));
    }
    let key = cfg
        .resolve_auth_key()
        .map_err(|p| ClientError::Config(vec![p]))?;
    let transports = cfg.build_transports()?;
    let mut instance = [0u8; 16];
    tunnel_transport::fill_random(&mut instance)?;
    let mut random = vec![0u8; servers::Servers::random_len(transports.len())];
    tunnel_transport::fill_random(&mut random)?;
    let servers = servers::Servers::new(transports, &random);
    let listeners = visitor::bind_all(&cfg.visitors).await?;
    let (status_tx, status_rx) = watch::channel(Status::Connecting);
    let threads = session_threads(cfg.connections)?;
    let shared = Arc::new(Shared {
        id: RwLock::new(cfg.effective_id()),
        live: RwLock::new(Live::from_config(&cfg)),
        visitors: parking_lot::Mutex::new(HashMap::new()),
        cfg,
        key: key.into_bytes(),
        instance,
        servers,
        current: RwLock::new(None),
        reload_pending: std::sync::atomic::AtomicBool::new(false),
        reload: reload::State::default(),
        health: health::Health::default(),
        status: status_tx,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        streams: TaskTracker::new(),
        mux: MuxConfig::default(),
        threads,
        pipe: PipeConfig::default(),
        proxy_counters: stats::CounterMap::default(),
        http_upstreams: http_proxy::Upstreams::default(),
        visitor_counters: stats::CounterMap::default(),
        session_log: stats::SessionLog::default(),
        warn_limits: Warnings::default(),
        stopped_by: std::sync::OnceLock::new(),
    });
    let stats = tunnel_admin::StatsListener::bind(&shared.cfg.admin())
        .await
        .map_err(
            |tunnel_admin::AdminError::Bind { addr, source }| ClientError::StatsBind {
                addr,
                source,
            },
        )?;
    if let Some(listener) = stats {
        let source = Arc::new(stats::ClientStats(shared.clone()));
        let task = listener.serve(source, shared.shutdown.clone());
        shared.tasks.spawn(task);
    }
    for (v, l) in listeners {
        shared.spawn_visitor(v, l);
    }
    health::sync(&shared);
    let span = tracing::info_span!("client", id = %shared.id.read());
    let shutdown = shared.shutdown.clone();
    let session = run(shared.clone()).instrument(span);
    let task = match &shared.threads {
        Some(threads) => threads.spawn_joinable(session),
        None => tokio::spawn(session),
    };
    Ok(ClientHandle {
        shared,
        status: status_rx,
        shutdown,
        task,
    })
}

/// Threads for a client with several connections: one per connection, at most one per core,
/// so that each connection's bytes stay on one thread (see `tunnel_mux::SessionThreads`).
/// One connection runs on the caller's runtime.
fn session_threads(connections: usize) -> Result<Option<tunnel_mux::SessionThreads>, ClientError> {
    if connections <= 1 {
        return Ok(None);
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = connections.min(cores);
    tunnel_mux::SessionThreads::start(threads)
        .map(Some)
        .map_err(|source| ClientError::SessionThreads { threads, source })
}

/// Keep a session up until shutdown or a rejection that cannot heal.
async fn run(shared: Arc<Shared>) -> Result<(), ClientError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), shared.cfg.reconnect_max_delay);
    // Whether a session ever got going: decides what a taken id means (see `id_taken_at_start`).
    let mut served = false;
    if shared.servers.len() > 1 {
        info!(
            "servers, in the order they are tried: {}",
            shared.servers.order()
        );
    }
    let result = loop {
        let started = Instant::now();
        let server = shared.servers.next();
        match session::run_once(&shared, &server).await {
            Ok(SessionEnd::Shutdown) => break Ok(()),
            // Make-before-break: the old session serves on in the background; the new one
            // goes to the next server at once.
            Ok(SessionEnd::Moving) => {
                served = true;
                shared.servers.lost();
                backoff.reset();
                continue;
            }
            Ok(SessionEnd::Lost(why)) => {
                served = true;
                shared.servers.lost();
                shared.session_log.failed(&why);
                shared.status.send_replace(Status::Connecting);
                warn!(server = %server.addr, "lost the server: {why}; reconnecting");
                // A session that lived a while was healthy: start the backoff over.
                if started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
            }
            Err(e) if e.is_permanent() => {
                shared.session_log.failed(&e.to_string());
                error!(server = %server.addr, "{e}");
                break Err(e);
            }
            Err(e) if e.is_id_in_use() => {
                shared.session_log.failed(&e.to_string());
                shared.status.send_replace(Status::Retrying(e.to_string()));
                if shared.take_fallback_id(&e) {
                    continue; // a new id: try it at once
                }
                if !served {
                    id_taken_at_start(&shared, &e);
                    break Err(e);
                }
                if let Some(more) = shared.warn_limits.id_taken.check() {
                    warn!(
                        "{e}: another client with the auth key took this id while we were away; \
                         retrying until it leaves{more}"
                    );
                }
            }
            Err(e) => {
                shared.session_log.failed(&e.to_string());
                shared.status.send_replace(Status::Retrying(e.to_string()));
                // Another server may well be up: try it now, and back off only once all
                // of them failed in a row.
                if !shared.servers.failed() {
                    warn!(server = %server.addr, "{e}; trying the next server");
                    if shared.shutdown.is_cancelled() {
                        break Ok(());
                    }
                    continue;
                }
                match shared.servers.len() {
                    1 => warn!(server = %server.addr, "{e}"),
                    n => warn!(server = %server.addr, "{e}; none of the {n} servers could be used"),
                }
            }
        }
        let delay = backoff.next_delay();
        info!("next attempt in {} ms", delay.as_millis());
        tokio::select! {
            () = shared.shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    };
    if let Err(ClientError::Rejected { code, reason }) = &result {
        let _ = shared.stopped_by.set((*code, reason.clone()));
    }
    shared.status.send_replace(Status::Stopped(match &result {
        Ok(()) => "shut down".to_string(),
        Err(e) => e.to_string(),
    }));
    shared.shutdown.cancel();
    shared.tasks.close();
    shared.tasks.wait().await;
    shared.streams.close();
    shared.streams.wait().await;
    result
}

/// A configured id held by another running client before this one ever served: most often
/// a second copy of the same config started by mistake, which must not wait in the
/// background to take over the first one's proxies. Stop and say so. (A client that has
/// served keeps retrying instead: see [`run`].)
fn id_taken_at_start(shared: &Shared, e: &ClientError) {
    error!(
        id = %*shared.id.read(),
        "{e}; stopping: another running client already uses this id (a second copy of this \
         config?). Give each client its own `id`. If the other one was this client's previous \
         run and died, the server frees the id within its heartbeat timeout."
    );
}
