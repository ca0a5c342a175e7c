//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tunnel_mux::{start, Incoming, Mode, MuxConfig, MuxHandle};

/// Generous upper bound for anything that should happen "promptly" on a loaded 2-core box.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Await `fut`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), different per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A connected loopback TCP pair (client end, server end).
pub async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

pub struct Pair {
    pub client: MuxHandle,
    pub client_in: Incoming,
    pub server: MuxHandle,
    pub server_in: Incoming,
}

/// Two sessions talking over an in-memory duplex.
pub fn duplex_sessions(client_cfg: &MuxConfig, server_cfg: &MuxConfig) -> Pair {
    let (a, b) = tokio::io::duplex(1 << 20);
    let (client, client_in) = start(a, Mode::Client, client_cfg);
    let (server, server_in) = start(b, Mode::Server, server_cfg);
    Pair {
        client,
        client_in,
        server,
        server_in,
    }
}

/// Two sessions talking over loopback TCP.
pub async fn tcp_sessions(cfg: &MuxConfig) -> Pair {
    let (a, b) = tcp_pair().await;
    a.set_nodelay(true).unwrap();
    b.set_nodelay(true).unwrap();
    let (client, client_in) = start(a, Mode::Client, cfg);
    let (server, server_in) = start(b, Mode::Server, cfg);
    Pair {
        client,
        client_in,
        server,
        server_in,
    }
}
