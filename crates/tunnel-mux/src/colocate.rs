//! Stream handlers run inside their session's driver task rather than as tasks of their own.
//!
//! The driver decrypts and demultiplexes every byte of a session; a handler copies its
//! stream's bytes to a socket. As separate tasks, eight busy streams meant eight tasks woken
//! per batch of frames, and tokio's work stealing ran them on the other worker: each frame
//! crossed cores between the driver that filled it and the handler that wrote it, and the
//! kernel's loopback path took its locks from both cores at once. One stream did not pay it
//! (tokio's LIFO slot keeps a single woken task on the waker's core). Measured on the 2-core
//! bench VM: CPU per GB with 8 streams was 1.06-1.18x one stream's as tasks, and the same as
//! one stream's with every handler inside the driver (docs/benchmarks.md, issue #19).
//!
//! Work still spreads across cores by session: each session (and each of a client's
//! `connections`) is its own task. A handler's panic is caught and logged, so it costs its
//! own stream only. When the driver stops, the handlers left run on as one ordinary task, so
//! they see the session's end and finish as they would have on their own.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

/// A handler waiting to be run by the driver.
pub(crate) type Handler = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Hands handlers to the driver; held by the session's shared state.
#[derive(Debug)]
pub(crate) struct Spawner(mpsc::UnboundedSender<Handler>);

impl Spawner {
    /// Run `handler` beside the driver, or as a task of its own once the driver has stopped
    /// taking handlers. (Unbounded: each handler belongs to a stream, and streams are
    /// bounded by `max_streams`.)
    pub(crate) fn spawn(&self, handler: Handler) {
        if let Err(mpsc::error::SendError(handler)) = self.0.send(handler) {
            tokio::spawn(handler);
        }
    }
}

/// The driver's side: the handlers it runs.
pub(crate) struct Handlers {
    rx: mpsc::UnboundedReceiver<Handler>,
    running: FuturesUnordered<Handler>,
}

pub(crate) fn channel() -> (Spawner, Handlers) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handlers = Handlers {
        rx,
        running: FuturesUnordered::new(),
    };
    (Spawner(tx), handlers)
}

impl Handlers {
    /// Take new handlers and run every one that was woken, until none can make progress.
    /// Never ready: the handlers outlive no session poll.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) {
        while let Poll::Ready(Some(handler)) = self.rx.poll_recv(cx) {
            self.running.push(caught(handler));
        }
        // `FuturesUnordered` yields (waking us) after a round over all of them, so one
        // handler that is always ready cannot keep the driver from its socket.
        while let Poll::Ready(Some(())) = self.running.poll_next_unpin(cx) {}
    }

    /// Stop taking handlers (later ones get tasks of their own) and run the rest as one
    /// task until each has finished.
    pub(crate) fn detach(mut self) {
        self.rx.close();
        while let Ok(handler) = self.rx.try_recv() {
            self.running.push(caught(handler));
        }
        if self.running.is_empty() {
            return;
        }
        let mut running = self.running;
        tokio::spawn(async move { while running.next().await.is_some() {} });
    }
}

/// A handler whose panic ends only itself (the hook has already printed it).
fn caught(handler: Handler) -> Handler {
    Box::pin(AssertUnwindSafe(handler).catch_unwind().map(|r| {
        if r.is_err() {
            tracing::error!("a stream handler panicked; its stream was dropped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn handlers_run_and_a_panic_costs_only_its_own() {
        let (spawner, mut handlers) = channel();
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..3 {
            let done = done.clone();
            spawner.spawn(Box::pin(async move {
                tokio::task::yield_now().await;
                assert!(i != 1, "handler 1 fails");
                done.fetch_add(1, Ordering::SeqCst);
            }));
        }
        let driver = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                handlers.poll(cx);
                if handlers.running.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), driver)
            .await
            .expect("handlers finish")
            .expect("the driver survives a handler's panic");
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn after_detach_handlers_get_tasks_of_their_own() {
        let (spawner, handlers) = channel();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (late_tx, late_rx) = tokio::sync::oneshot::channel();
        // Queued before the driver stopped: run by the detached set.
        spawner.spawn(Box::pin(async move {
            let _ = tx.send(());
        }));
        handlers.detach();
        spawner.spawn(Box::pin(async move {
            let _ = late_tx.send(());
        }));
        let both = async { (rx.await, late_rx.await) };
        let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(5), both)
            .await
            .expect("both handlers ran");
        assert!(a.is_ok() && b.is_ok());
    }
}
