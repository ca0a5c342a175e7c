//! tls-tunnel: a reverse tunnel over one multiplexed TLS connection per client.
//!
//! This package holds the `tunnel-server` and `tunnel-client` binaries, the end-to-end tests,
//! the benches and the embedding examples. The engines live in their own crates and are
//! re-exported here for convenience:
//!
//! - [`server`] — [`tunnel_server`], the public side.
//! - [`client`] — [`tunnel_client`], the side behind NAT.
//! - [`proto`], [`transport`], [`mux`] — the layers underneath.

pub use tunnel_client as client;
pub use tunnel_mux as mux;
pub use tunnel_proto as proto;
pub use tunnel_server as server;
pub use tunnel_transport as transport;

pub mod cli;
