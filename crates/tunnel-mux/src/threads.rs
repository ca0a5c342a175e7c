//! Sessions spread over runtimes of one worker thread each, so that a session, its driver
//! and every stream it carries stay on one thread for their whole life. The server carries
//! each client connection on one; the client each of its extra `connections`.
//!
//! On tokio's shared multi-worker runtime a busy session's tasks moved between workers many
//! times a second (whichever worker was polling the reactor took the next wake-up), and each
//! move left the session's frames, buffers and sockets in the other core's cache. With
//! eight busy streams on one session that cost 6-25 % more CPU per byte than one stream;
//! with a single worker per session the difference fell to 1-13 % and CPU per byte itself
//! dropped (docs/benchmarks.md, issue #19). Sessions still use every core: each new
//! connection goes to the thread carrying the fewest.
//!
//! A socket belongs to the reactor of the runtime that registered it, so one accepted on the
//! main runtime is deregistered there and registered again on the thread that serves it
//! ([`Portable`]): its readiness then wakes that thread itself, not a main-runtime worker
//! that would have to wake it.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// How long stopping the threads waits for them; a task stuck in a blocking call must not
/// hold the process.
const STOP_WAIT: Duration = Duration::from_secs(1);

struct Shard {
    runtime: Option<Runtime>,
    handle: Handle,
    /// Tasks placed here and still running.
    load: Arc<AtomicUsize>,
}

/// Runtimes of one worker thread each that sessions are placed on, the least loaded first
/// (by the number of tasks placed there and still running). Dropping it stops the threads
/// (from a thread of its own, waiting at most a second).
///
/// ```
/// use tunnel_mux::SessionThreads;
/// use tokio_util::task::TaskTracker;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let threads = SessionThreads::start(2)?;
/// let tracker = TaskTracker::new();
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// threads.spawn(&tracker, async move {
///     let _ = tx.send(std::thread::current().name().map(str::to_owned));
/// });
/// let name = rx.await.expect("the task ran");
/// assert_eq!(name.as_deref(), Some("tunnel-session-0"));
/// # Ok(())
/// # }
/// ```
pub struct SessionThreads(Vec<Shard>);

impl SessionThreads {
    /// `threads` runtimes (at least one) of one worker each, named `tunnel-session-N`.
    pub fn start(threads: usize) -> io::Result<Self> {
        let mut shards = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let runtime = Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name(format!("tunnel-session-{i}"))
                .enable_all()
                .build()?;
            shards.push(Shard {
                handle: runtime.handle().clone(),
                runtime: Some(runtime),
                load: Arc::new(AtomicUsize::new(0)),
            });
        }
        Ok(Self(shards))
    }

    fn least_loaded(&self) -> &Shard {
        // `start` makes at least one.
        let mut best = &self.0[0];
        for s in &self.0[1..] {
            if s.load.load(Ordering::Relaxed) < best.load.load(Ordering::Relaxed) {
                best = s;
            }
        }
        best
    }

    /// Run `task` on the thread carrying the fewest tasks, tracked by `tracker` and in the
    /// caller's span.
    pub fn spawn<F>(&self, tracker: &TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        // Tracked outside the load count, so a tracker that is done sees the count down too.
        let (handle, task) = self.place(task);
        handle.spawn(tracker.track_future(task.in_current_span()));
    }

    /// Run `task` on the thread carrying the fewest tasks, in the caller's span, and hand
    /// back its join handle.
    pub fn spawn_joinable<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (handle, task) = self.place(task);
        handle.spawn(task.in_current_span())
    }

    /// The least loaded thread, and `task` counted there while it runs.
    fn place<F: Future>(&self, task: F) -> (&Handle, impl Future<Output = F::Output>) {
        let shard = self.least_loaded();
        let load = Load::take(&shard.load);
        let task = async move {
            let _load = load;
            task.await
        };
        (&shard.handle, task)
    }

    /// Serve `tcp` with `serve` on the thread carrying the fewest tasks, the socket
    /// registered with that thread's reactor; tracked by `tracker`, in the caller's span.
    pub fn serve<F, Fut>(&self, tracker: &TaskTracker, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tcp = match Portable::detach(tcp) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("connection dropped: cannot move it to a session thread: {e}");
                return;
            }
        };
        self.spawn(tracker, async move {
            match tcp.attach() {
                Ok(tcp) => serve(tcp).await,
                Err(e) => tracing::warn!("connection dropped: cannot register it: {e}"),
            }
        });
    }
}

impl std::fmt::Debug for SessionThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let loads: Vec<usize> = self
            .0
            .iter()
            .map(|s| s.load.load(Ordering::Relaxed))
            .collect();
        f.debug_struct("SessionThreads")
            .field("loads", &loads)
            .finish()
    }
}

impl Drop for SessionThreads {
    fn drop(&mut self) {
        let runtimes: Vec<Runtime> = self.0.iter_mut().filter_map(|s| s.runtime.take()).collect();
        // Shut down from a thread of its own: this may run on one of these threads (the last
        // task holding the engine), where a runtime cannot wait for itself.
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

/// Counts a task on its thread until dropped.
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
#[derive(Debug)]
pub enum Portable {
    /// Stays with the reactor it is registered with (no session threads).
    Here(TcpStream),
    /// Deregistered; registered again by whichever runtime attaches it.
    Detached(std::net::TcpStream),
}

impl Portable {
    /// Deregister `tcp` from its reactor.
    pub fn detach(tcp: TcpStream) -> io::Result<Self> {
        tcp.into_std().map(Self::Detached)
    }

    /// `tcp` ready to move to whichever session thread will serve it: detached when there
    /// are session threads, left alone when not.
    pub fn new(tcp: TcpStream, threads: Option<&SessionThreads>) -> io::Result<Self> {
        match threads {
            Some(_) => Self::detach(tcp),
            None => Ok(Self::Here(tcp)),
        }
    }

    /// Ready for the runtime this is called on.
    pub fn attach(self) -> io::Result<TcpStream> {
        match self {
            Self::Here(tcp) => Ok(tcp),
            Self::Detached(std) => TcpStream::from_std(std),
        }
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
        let shards = SessionThreads::start(2).unwrap();
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
