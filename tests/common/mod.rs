//! Test support: real servers, clients and services on loopback, ports picked by the OS.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::{ClientConfig, ClientHandle};
use tunnel_server::{ServerConfig, ServerHandle};

mod procs;
#[allow(unused_imports)] // not every test binary spawns processes
pub use procs::*;

pub const KEY: &str = "test-key-0123456789";

/// Install the one log subscriber of this test binary: it captures engine logs for
/// [`logged`] and echoes them when `RUST_LOG` is set. Every fixture that starts an engine calls
/// it, so which test starts first cannot decide whether logs are captured.
pub fn logs() {
    capture_logs();
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
        .with_stats_bind(Some("127.0.0.1:0".parse().unwrap()))
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

// ---------------------------------------------------------------------------------------------
// Log capture, prompt-close checks and a relay that can fake a dead network path.

/// Every formatted log line of this test binary since [`capture_logs`]. Global because the
/// tracing subscriber is: tests running in parallel share it, so give them distinct names.
static LOG_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if std::env::var_os("RUST_LOG").is_some() {
            eprint!("{text}");
        }
        let mut lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
        lines.extend(text.lines().map(str::to_string));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collect engine logs (info and up, or `RUST_LOG`) so tests can check what was reported.
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// Whether some captured line contains every one of `parts`.
pub fn logged(parts: &[&str]) -> bool {
    let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
    lines.iter().any(|l| parts.iter().all(|p| l.contains(p)))
}

/// How many captured lines contain every one of `parts` (e.g. to check rate-limited logs).
pub fn logged_count(parts: &[&str]) -> usize {
    let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
    lines
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Whether any captured line contains `needle` (e.g. a secret that must never be logged).
pub fn logged_anywhere(needle: &str) -> bool {
    logged(&[needle])
}

/// Wait (briefly) until a line containing every one of `parts` was logged.
pub async fn expect_logged(parts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !logged(parts) {
        if Instant::now() >= deadline {
            let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
            let recent = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("no log line contains {parts:?}; the last lines:\n{recent}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback `host:port` for a visitor to bind (the OS picked the port a moment ago).
pub fn visitor_bind() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Connect to `addr` as an application would, send a few bytes, and require the connection
/// to be closed (EOF or reset) within `within` without a single byte coming back.
pub async fn expect_prompt_close(addr: &str, within: Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A refused connection must not reach the service: an echo service would answer this.
    let _ = s.write_all(b"hello?").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(within, s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{addr}: the connection stayed open for {within:?}"));
    if let Ok(n) = read {
        assert_eq!(n, 0, "{addr}: a refused connection delivered {n} bytes");
    }
    assert!(started.elapsed() < within);
}

/// A TCP relay in front of the server. [`Relay::cut`] makes every connection relayed so far
/// look dead to the client (its side is closed) while the server's side stays open and
/// silent, as when a network path dies without a FIN reaching the server. Later connections
/// are relayed normally.
pub struct Relay {
    pub addr: SocketAddr,
    generation: tokio::sync::watch::Sender<u64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Server-side sockets of cut connections, kept open; tests may read them.
    pub held: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let relay = Relay {
            addr,
            generation,
            accepted: Default::default(),
            held: Default::default(),
        };
        let (gen, accepted, held) = (
            relay.generation.clone(),
            relay.accepted.clone(),
            relay.held.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let mut cut = gen.subscribe();
                let held = held.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let was_cut = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => false,
                        _ = cut.changed() => true,
                    };
                    if was_cut {
                        held.lock().unwrap().push(up);
                    }
                });
            }
        });
        relay
    }

    /// Cut every connection relayed so far (see the type's docs).
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A loopback port that refuses connections for as long as the returned socket lives: it is
/// bound but never listens, so unlike a port that was merely free a moment ago, no other
/// listener can take it meanwhile.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// A TCP relay in front of the server whose paths can be frozen: [`FreezeRelay::freeze`]
/// stops forwarding on every connection relayed so far while keeping both of its sockets
/// open, so neither the client nor the server sees an end or an error, only silence, as
/// when a NAT forgets a mapping. Later connections are relayed normally.
pub struct FreezeRelay {
    pub addr: SocketAddr,
    generation: tokio::sync::watch::Sender<u64>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Both sockets of every frozen connection (client side, server side), kept open.
    frozen: std::sync::Arc<std::sync::Mutex<Vec<(TcpStream, TcpStream)>>>,
}

impl FreezeRelay {
    pub async fn start(upstream: SocketAddr) -> FreezeRelay {
        use std::sync::atomic::Ordering;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let relay = FreezeRelay {
            addr,
            generation,
            accepted: Default::default(),
            frozen: Default::default(),
        };
        let (gen, accepted, frozen) = (
            relay.generation.clone(),
            relay.accepted.clone(),
            relay.frozen.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let mut freeze = gen.subscribe();
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let was_frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => false,
                        _ = freeze.changed() => true,
                    };
                    if was_frozen {
                        frozen.lock().unwrap().push((down, up));
                    }
                });
            }
        });
        relay
    }

    /// Freeze every connection relayed so far (see the type's docs).
    pub fn freeze(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections frozen so far (held open, silent both ways).
    pub fn frozen(&self) -> usize {
        self.frozen.lock().unwrap().len()
    }
}

// ---------------------------------------------------------------------------------------------
// Transports: the core end-to-end cases run once per transport (see `per_transport!`).

pub use tunnel_transport::TransportKind;

/// A server every transport reaches: tls, h2 and wss on its TLS port, and (for `ws`) plain
/// WebSocket on a loopback `ws_bind`.
pub async fn server_for(kind: TransportKind) -> ServerHandle {
    server_for_with(kind, |c| c).await
}

pub async fn server_for_with(
    kind: TransportKind,
    f: impl FnOnce(ServerConfig) -> ServerConfig,
) -> ServerHandle {
    server_with(|c| match kind {
        TransportKind::Ws => f(c.with_ws_bind("127.0.0.1:0".parse().unwrap())),
        _ => f(c),
    })
    .await
}

/// A server for `kind` and a client publishing `service` as tcp proxy `name` on a fresh port,
/// registered. Returns the server, the client and the published port.
pub async fn publish_tcp(
    kind: TransportKind,
    name: &str,
    service: SocketAddr,
) -> (ServerHandle, ClientHandle, u16) {
    let server = server_for(kind).await;
    let port = free_port();
    let proxy = tunnel_client::ProxyConfig::tcp(name, &service.to_string(), Some(port));
    let c = client(client_config_for(&server, kind).with_proxy(proxy)).await;
    (server, c, port)
}

/// A client config for `kind`: tls, h2 and wss dial the TLS port and pin its certificate;
/// ws dials the server's `ws_bind` (see [`server_for`]).
pub fn client_config_for(server: &ServerHandle, kind: TransportKind) -> ClientConfig {
    match kind {
        TransportKind::Ws => {
            let ws = server
                .ws_addr()
                .expect("start the server with server_for(Ws)");
            ClientConfig::new(ws.to_string())
                .with_auth_key(KEY)
                .with_transport(kind)
        }
        _ => client_config(server).with_transport(kind),
    }
}

/// Turn each `async fn case(kind: TransportKind)` into one test per transport, named
/// `case::tls`, `case::h2`, `case::wss` and `case::ws`, so a failure names its transport.
/// Use it as `crate::per_transport!(case_a, case_b);`.
#[macro_export]
macro_rules! per_transport {
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            use super::TransportKind;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                super::$case(TransportKind::Tls).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn h2() {
                super::$case(TransportKind::H2).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn wss() {
                super::$case(TransportKind::Wss).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ws() {
                super::$case(TransportKind::Ws).await
            }
        }
    )+};
}

/// A TCP relay in front of the server that can end one relayed connection: [`KillRelay::kill`]
/// closes both of its sockets, as when that one path fails, while the others go on.
pub struct KillRelay {
    pub addr: SocketAddr,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl KillRelay {
    pub async fn start(upstream: SocketAddr) -> KillRelay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> =
            Default::default();
        let list = tasks.clone();
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                let task = tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        KillRelay { addr, tasks }
    }

    /// End the `i`-th connection relayed (0 = the first accepted).
    pub fn kill(&self, i: usize) {
        self.tasks.lock().unwrap()[i].abort();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.tasks.lock().unwrap().len()
    }
}

/// GET `path` from a stats endpoint and parse the JSON body.
pub async fn stats_json(addr: SocketAddr) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}
