//! The end-to-end tests: one test binary, a module per area, every fixture from
//! `tunnel-testkit`. One binary links once, and its tests share the run's two cores instead of
//! waiting for each other binary by binary.
#![allow(clippy::unwrap_used)]

mod browser;
mod cli;
// Needs the etcd store: `cargo test --features etcd --test e2e cluster::`.
#[cfg(feature = "etcd")]
mod cluster;
// Needs the etcd store: `cargo test --features etcd --test e2e cluster_scale::`.
#[cfg(feature = "etcd")]
mod cluster_scale;
// Needs the etcd store: `cargo test --features etcd --test e2e cluster_visibility::`.
#[cfg(feature = "etcd")]
mod cluster_visibility;
// Needs the etcd store: `cargo test --features etcd --test e2e cluster_vhost::`.
#[cfg(feature = "etcd")]
mod cluster_vhost;
mod configs;
mod connections;
mod credentials;
mod dashboard;
mod early_data;
// Needs the etcd store: `cargo test --features etcd --test e2e failover::`.
#[cfg(feature = "etcd")]
mod failover;
mod faults;
mod groups;
mod hardening;
mod http;
mod https_sni;
mod limits;
mod mtls;
mod nginx;
mod peer;
mod ports;
mod postgres;
mod reload;
mod server_list;
mod server_reload;
mod state_dir;
mod stats;
mod strangers;
mod tcp_proxy;
mod tls12;
mod trust;
mod udp;
mod vhost;
mod visitor;

/// The kit finds the binaries beside the test binary; cargo knows where it built them.
#[test]
fn the_kit_spawns_the_binaries_cargo_built() {
    let same = |found: &str, built: &str| {
        std::fs::canonicalize(found).unwrap() == std::fs::canonicalize(built).unwrap()
    };
    assert!(same(
        tunnel_testkit::bins::server(),
        env!("CARGO_BIN_EXE_tunnel-server")
    ));
    assert!(same(
        tunnel_testkit::bins::client(),
        env!("CARGO_BIN_EXE_tunnel-client")
    ));
}
