//! The engines in process: a server and clients on loopback, ports picked by the OS, and the
//! per-transport test matrix.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::{ClientConfig, ClientHandle};
use tunnel_server::{ServerConfig, ServerHandle};

pub use tunnel_transport::TransportKind;

use crate::logs::capture_logs;
use crate::net::free_port;

/// The auth key every fixture's server and client share.
pub const KEY: &str = "test-key-0123456789";

/// Install the one log subscriber of this test binary: it captures engine logs for
/// [`crate::logged`] and echoes them when `RUST_LOG` is set. Every fixture that starts an
/// engine calls it, so which test starts first cannot decide whether logs are captured.
pub fn logs() {
    capture_logs();
}

/// A server on 127.0.0.1 with an OS-picked port, self-signed certificate, published ports on
/// loopback only.
pub async fn server() -> ServerHandle {
    server_with(|c| c).await
}

/// [`server`] with its config changed by `f` first.
pub async fn server_with(f: impl FnOnce(ServerConfig) -> ServerConfig) -> ServerHandle {
    logs();
    tunnel_server::start(f(server_config())).await.unwrap()
}

/// The config [`server`] starts with (to change it and `reload` it, say).
pub fn server_config() -> ServerConfig {
    ServerConfig::default()
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_publish_addr("127.0.0.1".parse().unwrap())
        .with_stats_bind(Some("127.0.0.1:0".parse().unwrap()))
        .with_auth_key(KEY)
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

/// Whether the client's session is up now.
pub fn is_ready(c: &ClientHandle) -> bool {
    matches!(c.status(), tunnel_client::Status::Ready(_))
}

/// A client `id` that serves an echo service as tcp proxy `web` on a fresh published port:
/// the bystander that must keep working while a test attacks or breaks something else.
pub async fn bystander(server: &ServerHandle, id: &str) -> (ClientHandle, u16) {
    let echo = crate::services::echo_service().await;
    let port = free_port();
    let c = client(
        client_config(server)
            .with_id(id)
            .with_proxy(tunnel_client::ProxyConfig::tcp(
                "web",
                &echo.to_string(),
                Some(port),
            )),
    )
    .await;
    (c, port)
}

/// A server every transport reaches: tls, h2 and wss on its TLS port, and (for `ws`) plain
/// WebSocket on a loopback `ws_bind`.
pub async fn server_for(kind: TransportKind) -> ServerHandle {
    server_for_with(kind, |c| c).await
}

/// [`server_for`] with its config changed by `f` first.
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
/// Use it as `tunnel_testkit::per_transport!(case_a, case_b);`.
#[macro_export]
macro_rules! per_transport {
    ($($case:ident),+ $(,)?) => {$(
        mod $case {
            use $crate::TransportKind;
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

/// One answer of a stats endpoint, as [`stats_get`] read it.
#[derive(Debug)]
pub struct StatsAnswer {
    /// The status code.
    pub status: u16,
    /// The head's header lines, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl StatsAnswer {
    /// The first header `name` (lowercase), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// GET `path` from a stats endpoint with these extra request headers (a `Host` among them
/// replaces the default one, the endpoint's address), as a browser or a scraper would.
pub async fn stats_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> StatsAnswer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    StatsAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}
