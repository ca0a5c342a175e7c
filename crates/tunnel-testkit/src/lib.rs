//! Fixtures for tls-tunnel's end-to-end tests, one of each: the engines in process, the
//! release binaries as processes, a round-robin load balancer, a scratch directory with a certificate, a fault relay, a
//! byte pattern, local services (echo, HTTP, hyper), a raw TLS peer, a client played by hand, a TLS client naming its server (SNI), steady traffic,
//! nginx, PostgreSQL and etcd launchers, a headless browser, log capture, polling, and the
//! rule for tests whose tool is missing.
//!
//! Every item is also re-exported at the root, so a test module starts with
//! `use tunnel_testkit::*;`. A dev-only crate: panics (`unwrap`) are how a fixture fails a test.
//!
//! ```
//! use tunnel_testkit::*;
//!
//! #[tokio::main]
//! async fn main() {
//!     // A server on loopback, and a client publishing an echo service through it.
//!     let server = server().await;
//!     let (_client, port) = bystander(&server, "doc-example").await;
//!     let data = random_bytes(64 << 10, 1);
//!     assert_eq!(roundtrip(published(port), &data).await, data);
//! }
//! ```
#![allow(clippy::unwrap_used)]
#![warn(missing_docs, unreachable_pub)]

pub mod balancer;
pub mod bins;
pub mod browser;
pub mod client_ca;
pub mod cluster;
pub mod cluster_member;
pub mod cluster_process;
pub mod curl;
pub mod dns;
pub mod engines;
pub mod etcd;
pub mod http_services;
pub mod iperf;
pub mod logs;
pub mod net;
pub mod nginx;
pub mod pattern;
pub mod pki;
pub mod poll;
pub mod postgres;
pub mod process;
pub mod raw_client;
pub mod raw_tls;
pub mod relay;
pub mod services;
pub mod sni_client;
pub mod tools;
pub mod traffic;
pub mod udp;

pub use balancer::Balancer;
pub use browser::Browser;
pub use client_ca::{CertName, ClientCa, ClientCertFiles};
pub use cluster::{
    cluster_server, cluster_server_on, cluster_server_with, ClusterServer, CLUSTER_KEY,
};
pub use cluster_member::{etcd_member, etcd_member_config, MEMBER_CLUSTER_KEY};
pub use cluster_process::ClusterMember;
pub use curl::{curl, curl_ok};
pub use dns::{dig_batch, Dnsmasq, TEST_ZONE};
pub use engines::*;
pub use etcd::Etcd;
pub use http_services::{
    h2_tls_service, h2c_service, http1_keepalive, http1_service, status_code, upgrade_echo, Body,
    Seen, Service,
};
pub use iperf::{iperf3_rate, Iperf3};
pub use logs::*;
pub use net::*;
pub use nginx::Nginx;
pub use pattern::random_bytes;
pub use pki::*;
pub use poll::{eventually, log_shows, published_by};
pub use postgres::Postgres;
pub use process::{cpu_seconds_of, Proc};
pub use raw_client::{raw_client, RawClient};
pub use raw_tls::{answer, hello, raw_tls, stranger_tls};
pub use relay::Relay;
pub use services::{
    collect_then_echo_service, echo_service, http_service, own_port_service, read_banner,
    BannerService,
};
pub use sni_client::{fragmented_client_hello, https_get, tls_error, Trickle};
pub use tools::{have, need, skip};
pub use traffic::{quarter_echo_service, Traffic};
pub use udp::{
    free_udp_port, udp_ask, udp_echo_service, udp_own_port_service, udp_socket, udp_tag_service,
};
