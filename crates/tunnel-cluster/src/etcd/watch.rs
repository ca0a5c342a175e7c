//! Watches: etcd's Watch on a prefix from a revision, as a stream of batches of
//! [`WatchEvent`]s (one batch per watch response, which never splits a revision) that ends
//! with an error whenever continuity is lost.

use etcd_client::{EventType, WatchOptions, WatchResponse, WatchStream};
use futures::stream::StreamExt;

use super::classify::Context;
use super::kv::{convert, prefix_end};
use super::EtcdStore;
use crate::store::{WatchEvent, WatchStream as Batches};
use crate::ClusterError;

/// A watch stream and the batch of its last response not yet handed out.
struct Feed {
    stream: WatchStream,
    pending: Vec<WatchEvent>,
    cx: Context,
}

impl EtcdStore {
    /// Changes under `prefix` from revision `from` on. The stream yields events in revision
    /// order and ends after its first error: `Compacted` when `from` is gone, `Unavailable`
    /// when the connection broke (a frozen etcd is noticed by the HTTP/2 ping, within
    /// `keepalive_interval` + `request_timeout`). Dropping the stream cancels the watch.
    pub(super) async fn open_watch(
        &self,
        prefix: &str,
        from: i64,
    ) -> Result<Batches, ClusterError> {
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_start_revision(from)
            // Empty responses now and then from an idle watch; skipped below.
            .with_progress_notify();
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(super::MAX_MESSAGE);
        let mut stream = self
            .cx
            .bounded("watch", client.watch(prefix, Some(opts)))
            .await?;
        // etcd answers a new watch with a "created" response (or, from some versions on, a
        // cancellation when `from` is compacted): wait for it, so that a watch that is
        // returned is one etcd has registered.
        let first = self.cx.bounded("watch", stream.message()).await?;
        let mut feed = Feed {
            stream,
            pending: Vec::new(),
            cx: self.cx.clone(),
        };
        let first_outcome = match first {
            Some(resp) => feed.take(resp),
            None => Err(feed.ended()),
        };
        let state = match first_outcome {
            Ok(()) => Some(feed),
            Err(e) => {
                // The error is the stream's only item.
                return Ok(futures::stream::once(async move { Err(e) }).boxed());
            }
        };
        Ok(futures::stream::unfold(state, next).boxed())
    }
}

/// The next batch, or the error that ends the stream.
async fn next(
    state: Option<Feed>,
) -> Option<(Result<Vec<WatchEvent>, ClusterError>, Option<Feed>)> {
    let mut feed = state?;
    loop {
        if !feed.pending.is_empty() {
            let batch = std::mem::take(&mut feed.pending);
            return Some((Ok(batch), Some(feed)));
        }
        let outcome = match feed.stream.message().await {
            Ok(Some(resp)) => feed.take(resp),
            Ok(None) => Err(feed.ended()),
            Err(e) => Err(feed.cx.classify("watch", e)),
        };
        if let Err(e) = outcome {
            return Some((Err(e), None));
        }
    }
}

impl Feed {
    /// Queue the events of `resp`; the error a cancellation means.
    fn take(&mut self, resp: WatchResponse) -> Result<(), ClusterError> {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Err(ClusterError::Compacted {
                    revision: resp.compact_revision(),
                });
            }
            return Err(self.cx.classify(
                "watch",
                etcd_client::Error::WatchError(format!(
                    "etcd cancelled the watch: {}",
                    resp.cancel_reason()
                )),
            ));
        }
        // Created and progress responses carry no events.
        for event in resp.events() {
            let Some(kv) = event.kv().and_then(convert) else {
                continue;
            };
            self.pending.push(match event.event_type() {
                EventType::Put => WatchEvent::Put(kv),
                EventType::Delete => WatchEvent::Delete {
                    key: kv.key,
                    mod_revision: kv.mod_revision,
                },
            });
        }
        Ok(())
    }

    fn ended(&self) -> ClusterError {
        self.cx.classify(
            "watch",
            etcd_client::Error::WatchError("etcd closed the watch stream".into()),
        )
    }
}
