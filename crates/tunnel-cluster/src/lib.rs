//! The cluster registry of tls-tunnel: several servers share one registry of which server
//! holds which client, proxy, publish port and domain (issue #16; the design is
//! `notes/cluster-design.md`, section 3).
//!
//! * [`store`]: the seam to the storage engine, [`ClusterStore`], etcd's v3 KV, Lease, Txn
//!   and Watch narrowed to what the registry needs. etcd (cargo feature `etcd`) and the
//!   in-memory `MemStore` implement it.
//! * [`ClusterError`]: this crate's one error type.
//!
//! Uniqueness is decided only by store transactions (compare on mod revision), never by a
//! server's local view; the transaction's revision is the registration epoch, and every
//! delete is guarded by it.

#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod cache;
pub mod config;
pub mod decide;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
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
pub use store::{ClusterStore, Compare, KeyValue, LeaseId, Op, TxnOutcome, WatchEvent};
