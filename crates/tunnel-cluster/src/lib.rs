//! The cluster registry of tls-tunnel: several servers share one registry of which server
//! holds which client, proxy, publish port and domain (issue #16; the design is
//! `notes/cluster-design.md`, section 3, cited below as "the design note").
//!
//! * [`store`]: the seam to the storage engine, [`ClusterStore`]: etcd's v3 KV, Lease, Txn
//!   and Watch narrowed to what the registry needs. The etcd backend (cargo feature `etcd`)
//!   and the in-memory [`MemStore`] implement it.
//! * [`config`]: the server's `[cluster]` table, [`ClusterConfig`], parsed and checked.
//! * [`keys`]: the key layout under the prefix, escaping client-chosen names.
//! * [`records`]: the JSON values, decoded with a size cap.
//! * [`decide`]: the pure registration decision (take, take over, refuse) and its batches.
//! * [`registrar`]: the protocol over a store: register with retries, guarded release,
//!   and the [`LeaseKeeper`](registrar::LeaseKeeper).
//! * [`cache`]: a watch-fed local copy for lookups that never wait for the store.
//! * [`health`]: [`Metered`](health::Metered), a store wrapper counting requests, failures,
//!   writes and lease renewals, for the operator's view and the write-load measurements.
//! * [`mem`]: [`MemStore`], etcd semantics in memory with a manual clock, for tests.
//! * [`conformance`]: the store semantics as one check, for every backend's tests.
//!
//! The rules everything here keeps (the design note's split-brain rules): only a store
//! transaction grants a name, port, domain or client id (compare on mod revision, 0 for
//! absent); the transaction's revision is the registration epoch; every delete is guarded by
//! the revision its writer put; the same `(client_id, instance)` takes over at once from any
//! server, otherwise the first holder keeps what it holds; all of a server's keys hang on its
//! one lease, so they vanish together when it dies.
//!
//! The server (`tunnel-server`, module `cluster`) uses it when its `[cluster]` table sets a
//! backend; single-server mode does not.

#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod conformance;
pub mod decide;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod health;
pub mod keys;
pub mod mem;
pub mod records;
pub mod registrar;
pub mod store;

pub use cache::Cache;
pub use config::{Backend, ClusterConfig, PublishMode};
pub use error::ClusterError;
pub use keys::{KeyKind, Keys};
pub use mem::MemStore;
pub use registrar::Registrar;
pub use store::{
    ClusterStore, Compare, KeyValue, LeaseId, Op, TxnOutcome, WatchEvent, WatchStream,
};
