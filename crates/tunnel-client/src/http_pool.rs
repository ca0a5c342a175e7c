//! A small pool of HTTP/1.1 keep-alive connections to one proxy's local service.
//!
//! hyper-util's legacy client pools too, but cannot cap the connections it opens; here every
//! connection holds a permit of the proxy's semaphore (`max_local_conns`) for as long as it
//! exists, so a burst of users queues for a free connection instead of opening hundreds.
//! A connection goes back to the idle list once hyper says it can take the next request
//! (its response body fully read), so many users' requests share a handful of connections.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

/// A connection to the local service, ready for one request.
pub(crate) struct Pooled {
    pub sender: http1::SendRequest<Incoming>,
    /// Released when the connection is dropped, freeing a slot.
    pub permit: OwnedSemaphorePermit,
}

struct Idle {
    conn: Pooled,
    since: Instant,
}

/// Connections of one proxy (or, with the PROXY protocol, of one user connection: the
/// header names one user, so its connections cannot be shared).
pub(crate) struct LocalPool {
    addr: String,
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    returned: Notify,
    idle_timeout: Duration,
    /// Written first on every new connection (a PROXY protocol header).
    preamble: Option<Vec<u8>>,
}

impl LocalPool {
    pub(crate) fn new(
        addr: String,
        slots: Arc<Semaphore>,
        idle_timeout: Duration,
        preamble: Option<Vec<u8>>,
    ) -> Self {
        LocalPool {
            addr,
            slots,
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            idle_timeout,
            preamble,
        }
    }

    /// An idle connection, else a new one if a slot is free, else wait for either.
    /// Callers bound the wait (the proxy's response timeout).
    pub(crate) async fn checkout(self: &Arc<Self>) -> io::Result<Pooled> {
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.pop_idle() {
                return Ok(conn);
            }
            tokio::select! {
                permit = self.slots.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| io::Error::other("pool closed"))?;
                    return self.dial(permit).await;
                }
                () = returned => {}
            }
        }
    }

    /// Hand `conn` back once it can carry another request (its response fully read); a
    /// connection that closes meanwhile is dropped with its slot.
    pub(crate) fn checkin(self: &Arc<Self>, mut conn: Pooled) {
        let pool = self.clone();
        tokio::spawn(async move {
            if conn.sender.ready().await.is_ok() {
                pool.idle.lock().push(Idle {
                    conn,
                    since: Instant::now(),
                });
                pool.returned.notify_one();
                // Nobody may ask again: close it once it has idled too long.
                tokio::time::sleep(pool.idle_timeout).await;
                pool.prune();
            }
        });
    }

    fn prune(&self) {
        let timeout = self.idle_timeout;
        self.idle.lock().retain(|i| i.since.elapsed() < timeout);
    }

    /// Most recently used first: it is the least likely to have been closed by the service.
    fn pop_idle(&self) -> Option<Pooled> {
        let mut idle = self.idle.lock();
        while let Some(i) = idle.pop() {
            if i.since.elapsed() < self.idle_timeout && i.conn.sender.is_ready() {
                return Some(i.conn);
            }
        }
        None
    }

    async fn dial(&self, permit: OwnedSemaphorePermit) -> io::Result<Pooled> {
        let mut tcp = crate::proxy::dial(&self.addr).await?;
        if let Some(header) = &self.preamble {
            tcp.write_all(header).await?;
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(io::Error::other)?;
        let addr = self.addr.clone();
        // The connection task ends when the sender and all responses are gone, or the
        // service closes; upgrades (WebSocket) take the socket over.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                debug!(local_addr = %addr, "local connection ended: {e}");
            }
        });
        Ok(Pooled { sender, permit })
    }
}
