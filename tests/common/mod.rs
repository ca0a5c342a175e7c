//! Test support: real servers, clients and services on loopback, ports picked by the OS.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::{ClientConfig, ClientHandle};
use tunnel_server::{ServerConfig, ServerHandle};

pub const KEY: &str = "test-key-0123456789";

/// Route engine logs to the test output when `RUST_LOG` is set.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A server on 127.0.0.1 with an OS-picked port, self-signed certificate, published ports on
/// loopback only.
pub async fn server() -> ServerHandle {
    server_with(|c| c).await
}

pub async fn server_with(f: impl FnOnce(ServerConfig) -> ServerConfig) -> ServerHandle {
    logs();
    let cfg = ServerConfig::default()
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_publish_addr("127.0.0.1".parse().unwrap())
        .with_auth_key(KEY);
    tunnel_server::start(f(cfg)).await.unwrap()
}

/// A client config that pins `server`'s certificate.
pub fn client_config(server: &ServerHandle) -> ClientConfig {
    ClientConfig::new(server.local_addr().to_string())
        .with_auth_key(KEY)
        .with_fingerprint(server.fingerprint())
}

/// Start a client and wait until the server has answered its registration; panics on any
/// rejected item.
pub async fn client(cfg: ClientConfig) -> ClientHandle {
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .expect("client not ready within 10 s")
        .unwrap();
    for r in &reply.results {
        assert!(r.error.is_none(), "{} rejected: {:?}", r.name, r.error);
    }
    c
}

/// A port that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn is_listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// An echo service: copies back what it reads, and half-closes after the peer does.
pub async fn echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A minimal HTTP/1.1 service answering every request with `body`, closing after one.
pub async fn http_service(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be reproduced.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Send `data` through `addr`, half-close, and return everything read back until EOF.
pub async fn roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let payload = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back
}

pub fn published(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Whether a command exists on this machine.
pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}
