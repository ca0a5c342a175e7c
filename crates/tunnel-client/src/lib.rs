//! The tls-tunnel client engine.
//!
//! A client opens one TLS connection to a `tunnel-server`, proves it knows the shared key,
//! registers its proxies and visitors, and then serves every user connection as a stream of
//! that one multiplexed connection. It reconnects by itself with exponential backoff.
//!
//! ```no_run
//! # async fn run() -> Result<(), tunnel_client::ClientError> {
//! use tunnel_client::{ClientConfig, ProxyConfig};
//! let config = ClientConfig::new("tunnel.example.com:8443")
//!     .with_auth_key("a long random key")
//!     .with_proxy(ProxyConfig::tcp("web", "127.0.0.1:3000", Some(8080)));
//! let mut client = tunnel_client::start(config).await?;
//! let verdicts = client.ready().await?;
//! println!("{verdicts:?}");
//! client.shutdown();
//! client.join().await?;
//! # Ok(()) }
//! ```

mod backoff;
mod config;
mod error;
mod proxy;
mod session;
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
use tunnel_transport::{TlsTransport, Transport};

pub use config::{ClientConfig, ProxyConfig, VisitorConfig};
pub use error::{ClientError, ConfigProblem};

use backoff::Backoff;
use session::{SessionCtx, SessionEnd};

/// Where the client stands, as reported by [`ClientHandle::status`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Status {
    /// Not registered yet (first connection, or reconnecting).
    Connecting,
    /// The last attempt failed with this error; another follows after a backoff.
    Retrying(String),
    /// Connected and registered; the server's verdict for each proxy and visitor.
    Ready(RegisterReply),
    /// Stopped for good, with the reason.
    Stopped(String),
}

pub(crate) struct Shared {
    cfg: ClientConfig,
    key: Vec<u8>,
    id: String,
    instance: [u8; 16],
    transport: Arc<dyn Transport>,
    local_addrs: HashMap<String, String>,
    current: RwLock<Option<Arc<SessionCtx>>>,
    status: watch::Sender<Status>,
    shutdown: CancellationToken,
    /// Visitor listeners.
    tasks: TaskTracker,
    /// One task per proxied or visiting connection; drained on graceful shutdown.
    streams: TaskTracker,
    mux: MuxConfig,
    pipe: PipeConfig,
}

impl Shared {
    fn local_addr_of(&self, proxy: &str) -> Option<String> {
        self.local_addrs.get(proxy).cloned()
    }
}

/// A running client.
#[derive(Debug)]
pub struct ClientHandle {
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
                Status::Stopped(why) => return Err(ClientError::Protocol(why.clone())),
                Status::Connecting | Status::Retrying(_) => {}
            }
            if self.status.changed().await.is_err() {
                return Err(ClientError::Protocol("the client stopped".into()));
            }
        }
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
    let trust = cfg.trust().map_err(|p| ClientError::Config(vec![p]))?;
    let transport: Arc<dyn Transport> =
        Arc::new(TlsTransport::client(&cfg.effective_server_name(), &trust)?);
    let mut instance = [0u8; 16];
    tunnel_transport::fill_random(&mut instance)?;
    let listeners = visitor::bind_all(&cfg.visitors).await?;
    let (status_tx, status_rx) = watch::channel(Status::Connecting);
    let shared = Arc::new(Shared {
        id: cfg.effective_id(),
        local_addrs: cfg
            .proxies
            .iter()
            .map(|p| (p.name.clone(), p.local_addr.clone()))
            .collect(),
        cfg,
        key: key.into_bytes(),
        instance,
        transport,
        current: RwLock::new(None),
        status: status_tx,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
        streams: TaskTracker::new(),
        mux: MuxConfig::default(),
        pipe: PipeConfig::default(),
    });
    let span = tracing::info_span!("client", id = %shared.id);
    for (v, l) in listeners {
        let task = visitor::run(shared.clone(), v, l);
        shared.tasks.spawn(task.instrument(span.clone()));
    }
    let shutdown = shared.shutdown.clone();
    let task = tokio::spawn(run(shared).instrument(span));
    Ok(ClientHandle {
        status: status_rx,
        shutdown,
        task,
    })
}

/// Keep a session up until shutdown or a rejection that cannot heal.
async fn run(shared: Arc<Shared>) -> Result<(), ClientError> {
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(shared.cfg.reconnect_max_delay),
    );
    let result = loop {
        let started = Instant::now();
        match session::run_once(&shared).await {
            Ok(SessionEnd::Shutdown) => break Ok(()),
            Ok(SessionEnd::Lost(why)) => {
                shared.status.send_replace(Status::Connecting);
                warn!("lost the server: {why}; reconnecting");
                // A session that lived a while was healthy: start the backoff over.
                if started.elapsed() > Duration::from_secs(10) {
                    backoff.reset();
                }
            }
            Err(e) if e.is_permanent() => {
                error!("{e}");
                break Err(e);
            }
            Err(e) => {
                warn!("{e}");
                shared.status.send_replace(Status::Retrying(e.to_string()));
            }
        }
        let delay = backoff.next_delay();
        info!("next attempt in {} ms", delay.as_millis());
        tokio::select! {
            () = shared.shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    };
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
