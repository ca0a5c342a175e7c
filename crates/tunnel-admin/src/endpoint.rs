//! The listener and the accept loop: bounded connections, tracked tasks, back-off on
//! accept errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};
use tunnel_transport::{Acceptor, WarnLimit};

use crate::history::History;
use crate::routes::{route, Served};
use crate::{AdminConfig, AdminError, StatsSource};

/// Longest a peer may take to send a request head, or to start the next one on a kept-alive
/// connection: a scraper sends its request at once, a slow-header peer is cut.
pub const STATS_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may live, however busy: bounds a peer that never reads its answer.
pub const STATS_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Stats connections served at once; more are closed at accept. Scrapers need one or two.
pub const STATS_MAX_CONNECTIONS: usize = 32;
/// Request head buffer (hyper's minimum is 8 KiB); request bodies are never read.
const STATS_MAX_HEAD: usize = 16 * 1024;
/// How often the history reads the engine's counters.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// At most one "connections refused" WARN this often.
const STATS_WARN_EVERY: Duration = Duration::from_secs(10);

/// The endpoint's bound listener, ready to [`StatsListener::serve`].
#[derive(Debug)]
pub struct StatsListener {
    acceptor: Acceptor,
    local_addr: SocketAddr,
    token: Option<Arc<str>>,
}

impl StatsListener {
    /// Listen on `cfg.stats_bind`: `Ok(None)` when the endpoint is off. A bind failure is an
    /// error on both engines (see [`AdminError::Bind`]): a configured endpoint that is
    /// silently absent looks to monitoring like a dead process.
    pub async fn bind(cfg: &AdminConfig) -> Result<Option<Self>, AdminError> {
        let Some(addr) = cfg.stats_bind else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        let local_addr = listener.local_addr().unwrap_or(addr);
        if !local_addr.ip().is_loopback() && cfg.stats_token.is_none() {
            warn!(
                local = %local_addr,
                "the stats endpoint listens beyond loopback without stats_token: anyone who \
                 reaches it can read the tunnel's names, addresses and traffic"
            );
        }
        info!(local = %local_addr, "stats endpoint listening");
        Ok(Some(StatsListener {
            acceptor: Acceptor::new(listener),
            local_addr,
            token: cfg.stats_token.as_deref().map(Into::into),
        }))
    }

    /// Where it listens (the real port when `stats_bind` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve `source` until `stop`, then close the open connections and return once they
    /// are gone. With a token, `/metrics`, `/api/stats` and `/api/history` need
    /// `Authorization: Bearer <token>`; `/healthz` and the dashboard's files never do
    /// (probes have no secrets, the files no data). A sampler task reads
    /// [`StatsSource::traffic`] every second for `/api/history`.
    ///
    /// Bounded: [`STATS_MAX_CONNECTIONS`] at once, a request head within
    /// [`STATS_HEADER_TIMEOUT`] and 16 KiB, a connection for at most
    /// [`STATS_CONNECTION_LIFETIME`]; accepts back off when the process is out of descriptors.
    pub async fn serve(self, source: Arc<dyn StatsSource>, stop: CancellationToken) {
        let StatsListener {
            mut acceptor,
            token,
            ..
        } = self;
        let served = Arc::new(Served {
            source,
            token,
            history: parking_lot::Mutex::new(History::default()),
        });
        let conns = TaskTracker::new();
        conns.spawn(sample(served.clone(), stop.clone()).in_current_span());
        let slots = Arc::new(Semaphore::new(STATS_MAX_CONNECTIONS));
        let refused = WarnLimit::new(STATS_WARN_EVERY);
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => break,
                c = acceptor.accept() => c,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if let Some(more) = refused.check() {
                    warn!(
                        %peer,
                        "stats connection refused: all {STATS_MAX_CONNECTIONS} connections are in use{more}"
                    );
                }
                continue;
            };
            let conn = serve_connection(tcp, peer, served.clone(), slot);
            let stop = stop.clone();
            conns.spawn(
                async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = conn => {}
                    }
                }
                .in_current_span(),
            );
        }
        conns.close();
        conns.wait().await;
    }
}

/// Every [`SAMPLE_EVERY`], read the engine's counters into the history, until `stop`. The
/// reading is taken before the lock: only the ring update runs under it.
async fn sample(served: Arc<Served>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let traffic = served.source.traffic();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        served.history.lock().record(now, &traffic);
    }
}

/// One HTTP/1.1 connection, holding its `slot` until it ends.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    served: Arc<Served>,
    slot: OwnedSemaphorePermit,
) {
    let svc = service_fn(move |req| {
        let r = route(&served, &req);
        async move { Ok::<_, Infallible>(r) }
    });
    let serve = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(STATS_HEADER_TIMEOUT)
        .max_buf_size(STATS_MAX_HEAD)
        .serve_connection(TokioIo::new(tcp), svc);
    match tokio::time::timeout(STATS_CONNECTION_LIFETIME, serve).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(%peer, "stats connection: {e}"),
        Err(_) => debug!(%peer, "stats connection closed: open too long"),
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Up;

    impl StatsSource for Up {
        fn prometheus(&self) -> String {
            "# HELP up Up.\n# TYPE up gauge\nup 1\n".into()
        }
        fn json(&self) -> String {
            "{}\n".into()
        }
        fn healthy(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_naming_stats_bind() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = AdminConfig::new(Some(taken.local_addr().unwrap()), None);
        let err = StatsListener::bind(&cfg).await.unwrap_err();
        assert!(err.to_string().contains("(stats_bind)"), "{err}");
        assert!(StatsListener::bind(&AdminConfig::default())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn serves_until_stopped_and_then_closes_open_connections() {
        let cfg = AdminConfig::new(Some("127.0.0.1:0".parse().unwrap()), None);
        let l = StatsListener::bind(&cfg).await.unwrap().unwrap();
        let addr = l.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(l.serve(Arc::new(Up), stop.clone()));

        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.ends_with("up 1\n"), "{head}");

        // The kept-alive connection must not hold the endpoint open after stop.
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 0);
    }
}
