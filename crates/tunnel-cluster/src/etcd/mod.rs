//! The etcd store (cargo feature `etcd`): [`EtcdStore`] implements [`ClusterStore`] with
//! etcd's v3 API through `etcd-client`.
//!
//! Every request runs under [`EtcdOptions::request_timeout`], so a down, frozen or
//! partitioned etcd fails a caller with [`ClusterError::Unavailable`] around an error that
//! names the endpoints and what to check, never hangs it. Errors a retry cannot cure (wrong
//! password, no permission, a setting) come as [`ClusterError::Etcd`] or
//! [`ClusterError::EtcdConfig`].

mod classify;
mod kv;
mod lease;
mod options;
mod watch;

use std::fmt;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};

pub use options::EtcdOptions;

use crate::store::{ClusterStore, Compare, KeyValue, LeaseId, Op, TxnOutcome, WatchStream};
use crate::ClusterError;
use classify::Context;

/// The largest response etcd may send us: a page of [`ClusterStore::get_prefix`] (1,000
/// records) or one revision of a watch (at most `max_txn_ops` values of etcd's
/// `--max-request-bytes`, 1.5 MiB by default) fits, a runaway one does not.
const MAX_MESSAGE: usize = 16 << 20;

/// A [`ClusterStore`] on an etcd cluster. Cheap to share: clone the `Arc` it is held in; all
/// requests multiplex over one HTTP/2 connection per endpoint.
#[derive(Clone)]
pub struct EtcdStore {
    client: etcd_client::Client,
    cx: Context,
    max_txn_ops: usize,
}

impl EtcdStore {
    /// Connect to the endpoints of `opts` and check that etcd answers (a read of one key,
    /// under the request timeout), so that a wrong address, CA or password shows at start,
    /// named.
    pub async fn connect(opts: &EtcdOptions) -> Result<EtcdStore, ClusterError> {
        let connect = opts.connect_options()?;
        let cx = Context {
            endpoints: opts.endpoint_list(),
            timeout: opts.request_timeout,
        };
        // With a user, connecting logs in: a round trip, bounded like every other.
        let client = cx
            .bounded(
                "connect",
                etcd_client::Client::connect(&opts.endpoints, Some(connect)),
            )
            .await?;
        let store = EtcdStore {
            client,
            cx,
            max_txn_ops: opts.max_txn_ops,
        };
        // etcdctl's health check reads the key "health"; a user without permission on it
        // still proves etcd answers.
        match store
            .cx
            .bounded_raw("connect", store.kv().get("health", None))
            .await?
        {
            Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::PermissionDenied => {
            }
            Err(e) => return Err(store.cx.classify("connect", e)),
            Ok(_) => {}
        }
        Ok(store)
    }

    /// The underlying client, for what the registry does not need (tests compact with it).
    pub fn client(&self) -> &etcd_client::Client {
        &self.client
    }

    fn kv(&self) -> etcd_client::KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
    }
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.cx.endpoints)
            .field("request_timeout", &self.cx.timeout)
            .field("max_txn_ops", &self.max_txn_ops)
            .finish_non_exhaustive()
    }
}

impl ClusterStore for EtcdStore {
    fn get_prefix(
        &self,
        prefix: &str,
    ) -> BoxFuture<'_, Result<(Vec<KeyValue>, i64), ClusterError>> {
        let prefix = prefix.to_owned();
        async move { self.list(&prefix).await }.boxed()
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, ClusterError>> {
        let key = key.to_owned();
        async move { self.read(&key).await }.boxed()
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Option<KeyValue>>, ClusterError>> {
        self.read_many(keys).boxed()
    }

    fn txn(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> BoxFuture<'_, Result<TxnOutcome, ClusterError>> {
        self.transact(compares, ops).boxed()
    }

    fn grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, ClusterError>> {
        self.grant_lease(ttl).boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, ClusterError>> {
        self.renew(lease).boxed()
    }

    fn revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), ClusterError>> {
        self.revoke_lease(lease).boxed()
    }

    fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> BoxFuture<'_, Result<WatchStream, ClusterError>> {
        let prefix = prefix.to_owned();
        async move { self.open_watch(&prefix, from_revision).await }.boxed()
    }

    fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }
}
