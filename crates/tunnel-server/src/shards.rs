//! Client connections spread over runtimes of one worker thread each ("shards"), so that a
//! session, its driver and every stream it carries stay on one thread for their whole life.
//!
//! On tokio's shared multi-worker runtime a busy session's tasks moved between workers many
//! times a second (whichever worker was polling the reactor took the next wake-up), and each
//! move left the session's frames, buffers and sockets in the other core's cache. With
//! eight busy streams on one session that cost 13-25 % more CPU per byte than one stream;
//! with a single worker per session the difference fell to 1-10 % and CPU per byte itself
//! dropped (docs/benchmarks.md, issue #19). Sessions still use every core: each new
//! connection goes to the shard carrying the fewest.
//!
//! A socket belongs to the reactor of the runtime that registered it, so one accepted on the
//! main runtime is deregistered there and registered again on the shard that serves it
//! ([`Portable`]): its readiness then wakes the shard's own thread, not a main-runtime
//! worker that would have to wake the shard.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ServerError;

/// How long stopping the shards waits for their threads; a task stuck in a blocking call
/// must not hold the process.
const STOP_WAIT: Duration = Duration::from_secs(1);

struct Shard {
    runtime: Option<Runtime>,
    handle: Handle,
    /// Connections being served here.
    load: Arc<AtomicUsize>,
}

/// The shard runtimes of one server.
pub(crate) struct Shards(Vec<Shard>);

impl Shards {
    /// `threads` runtimes of one worker each; none (everything on the caller's runtime) for 0.
    pub(crate) fn start(threads: usize) -> Result<Option<Self>, ServerError> {
        if threads == 0 {
            return Ok(None);
        }
        let mut shards = Vec::with_capacity(threads);
        for i in 0..threads {
            let runtime = Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("tunnel-session-{i}"))
                .enable_all()
                .build()
                .map_err(|source| ServerError::SessionThreads { threads, source })?;
            shards.push(Shard {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
                load: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Some(Self(shards)))
    }

    /// Serve `tcp` with `serve` on the shard carrying the fewest connections, tracked by
    /// `tracker` and in the caller's span.
    pub(crate) fn serve<F, Fut>(&self, tracker: &TaskTracker, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(shard) = self.0.iter().min_by_key(|s| s.load.load(Ordering::Relaxed)) else {
            return;
        };
        let tcp = match Portable::detach(tcp) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("connection dropped: cannot move it to a session thread: {e}");
                return;
            }
        };
        let load = Load::take(&shard.load);
        let task = async move {
            let _load = load;
            match tcp.attach() {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!("connection dropped: cannot register it: {e}"),
            }
        };
        shard
            .handle
            .spawn(tracker.track_future(task.in_current_span()));
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        let runtimes: Vec<Runtime> = self.0.iter_mut().filter_map(|s| s.runtime.take()).collect();
        // Shut down from a thread of its own: this may run on a shard's own worker (the
        // last task holding the server), where a runtime cannot wait for itself.
        let stop = move || {
            for rt in runtimes {
                rt.shutdown_timeout(STOP_WAIT);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("tunnel-session-stop".into())
            .spawn(stop)
        {
            tracing::debug!("session threads left to the process exit: {e}");
        }
    }
}

/// Counts a connection on its shard until dropped.
struct Load(Arc<AtomicUsize>);

impl Load {
    fn take(load: &Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        Self(load.clone())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP connection on its way to the runtime that will serve it.
pub(crate) enum Portable {
    /// Stays with the reactor it is registered with (no shards).
    Here(TcpStream),
    /// Deregistered; registered again by whichever runtime attaches it.
    Detached(std::net::TcpStream),
}

impl Portable {
    pub(crate) fn detach(tcp: TcpStream) -> io::Result<Self> {
        tcp.into_std().map(Self::Detached)
    }

    /// Ready for the runtime this is called on.
    pub(crate) fn attach(self) -> io::Result<TcpStream> {
        match self {
            Self::Here(tcp) => Ok(tcp),
            Self::Detached(std) => TcpStream::from_std(std),
        }
    }
}

/// `tcp` ready to move to the session thread that will serve it, when there are shards.
pub(crate) fn portable(shards: Option<&Shards>, tcp: TcpStream) -> io::Result<Portable> {
    match shards {
        Some(_) => Portable::detach(tcp),
        None => Ok(Portable::Here(tcp)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn connections_go_to_the_least_loaded_shard_and_are_served_there() {
        let main = Builder::new_current_thread().enable_all().build().unwrap();
        let shards = Shards::start(2).unwrap().expect("two shards");
        let tracker = TaskTracker::new();
        main.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mut users = Vec::new();
            let (names_tx, mut names_rx) = tokio::sync::mpsc::unbounded_channel();
            for _ in 0..2 {
                users.push(TcpStream::connect(addr).await.unwrap());
                let (tcp, _) = listener.accept().await.unwrap();
                let names_tx = names_tx.clone();
                shards.serve(&tracker, tcp, move |mut tcp| async move {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    let _ = names_tx.send(name);
                    // Echo until EOF: the connection works on its new reactor.
                    let mut buf = [0u8; 64];
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                // Wait until this one counts, so the next picks the other shard.
                let name = names_rx.recv().await.unwrap();
                assert!(name.starts_with("tunnel-session-"), "{name}");
            }
            assert_eq!(shards.0[0].load.load(Ordering::Relaxed), 1);
            assert_eq!(shards.0[1].load.load(Ordering::Relaxed), 1);
            for user in &mut users {
                user.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                user.read_exact(&mut got).await.unwrap();
                assert_eq!(&got, b"ping");
            }
            drop(users);
            tracker.close();
            tokio::time::timeout(Duration::from_secs(5), tracker.wait())
                .await
                .expect("both connections end on EOF");
        });
        assert_eq!(shards.0[0].load.load(Ordering::Relaxed), 0);
        assert_eq!(shards.0[1].load.load(Ordering::Relaxed), 0);
    }
}
