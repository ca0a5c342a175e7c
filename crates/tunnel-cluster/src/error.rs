//! The one error type of the crate.

use crate::store::LeaseId;

/// Why a cluster registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The lease expired or was revoked: its keys are gone, and the server must take a new
    /// lease and re-register before it serves again.
    #[error("lease {0:#x} is gone (expired or revoked)")]
    LeaseGone(LeaseId),
    /// A watch asked for history the store no longer keeps: re-list and watch again.
    #[error("revision {revision} is compacted: re-list and watch again")]
    Compacted {
        /// The oldest revision the store still has.
        revision: i64,
    },
    /// The store cannot be reached or refused to answer; retry later.
    #[error("the cluster store is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A transaction carries more compares or ops than the store accepts in one.
    #[error("a transaction of {ops} operations exceeds the store's limit of {limit}")]
    TooManyOps {
        /// The operations asked for.
        ops: usize,
        /// The store's limit ([`ClusterStore::max_txn_ops`](crate::ClusterStore::max_txn_ops)).
        limit: usize,
    },
    /// A value read from the store is not a valid record (larger than the cap, or not the
    /// expected JSON): another writer, or a hostile one, put it there.
    #[error("bad record at {key}: {reason}")]
    BadRecord {
        /// The key holding the value.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registration kept losing races with other servers and gave up.
    #[error("registration lost {attempts} races in a row; retry")]
    Contended {
        /// How many transactions were tried.
        attempts: u32,
    },
    /// A name is too long to be a key segment (keys are never cut: two names would collide).
    #[error("the {what} is {len} bytes long; at most {max} fit in a registry key")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit ([`MAX_SEGMENT`](crate::keys::MAX_SEGMENT)).
        max: usize,
    },
    /// A transaction puts or deletes the same key twice (etcd refuses it too).
    #[error("the transaction writes {key} twice")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// The store ended a watch stream without an error (the connection closed): list again.
    #[error("the store ended the watch")]
    WatchEnded,
    /// An etcd endpoint of the cluster config is not an http:// or https:// URL.
    #[error("{endpoint:?}: use an http:// or https:// URL, e.g. \"http://127.0.0.1:2379\"")]
    EndpointScheme {
        /// The endpoint as configured.
        endpoint: String,
    },
    /// An etcd endpoint of the cluster config has no usable host:port after its scheme.
    #[error("{endpoint:?}: give host:port after the scheme, e.g. \"http://127.0.0.1:2379\"")]
    EndpointHostPort {
        /// The endpoint as configured.
        endpoint: String,
    },
    /// `server_id` cannot be a registry key segment (the host name is used when it is unset).
    #[error(
        "{id:?}: use 1 to {max} of A-Z a-z 0-9 _ . -, unique in the cluster",
        max = crate::config::MAX_SERVER_ID
    )]
    ServerId {
        /// The id, as configured or taken from the host name.
        id: String,
    },
    // --- etcd backend (helper `cetcd`, src/etcd/**) adds its variants below this line. ---
    /// etcd did not answer in time: it is down, unreachable, frozen or without a leader.
    /// Comes wrapped in [`ClusterError::Unavailable`] (retry later).
    #[error(
        "etcd at {endpoints} did not answer {op} within {after:?}: check that etcd runs, is \
         reachable from this host and has a leader (`etcdctl --endpoints={endpoints} endpoint \
         health`)"
    )]
    EtcdTimeout {
        /// The configured endpoints, comma-separated.
        endpoints: String,
        /// The request that timed out (`txn`, `get`, `lease keep-alive`, ...).
        op: &'static str,
        /// The request timeout.
        after: std::time::Duration,
    },
    /// etcd answered a request with an error, or could not be reached. Errors a retry may
    /// cure (connection refused, no leader) come wrapped in [`ClusterError::Unavailable`];
    /// the others (wrong password, no permission) need the operator.
    #[error("etcd at {endpoints}: {op} failed: {detail}; {hint}")]
    Etcd {
        /// The configured endpoints, comma-separated.
        endpoints: String,
        /// The request that failed.
        op: &'static str,
        /// etcd's message (the source's, without the transport's internals).
        detail: String,
        /// What to check.
        hint: &'static str,
        /// etcd's or the transport's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// An etcd setting of the cluster config is unusable.
    #[error("{field}: {reason}")]
    EtcdConfig {
        /// The setting, as the config file names it (`etcd_ca_cert`, `endpoints`, ...).
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
}
