//! Whatever reaches the server's one TLS port that is not a tunnel client is answered (HTTP
//! gets a plain 404) or closed promptly, logged once per connection, and the clients of every
//! transport go on working.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::ProxyConfig;
use tunnel_testkit::*;

/// A stranger must be done with well within this.
const PROMPT: Duration = Duration::from_secs(3);

/// Read until the server closes (EOF or reset), which must happen within [`PROMPT`].
async fn answer_then_close<S: AsyncRead + Unpin>(mut s: S, what: &str) -> String {
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(PROMPT, s.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the connection open"));
    assert!(started.elapsed() < PROMPT);
    String::from_utf8_lossy(&got).into_owned()
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    // The server may close before taking it all; that is its right.
    let _ = s.write_all(bytes).await;
    let _ = s.flush().await;
}

/// The stranger's connection was logged exactly once (its local port names it).
async fn logged_once(since: usize, local: SocketAddr, what: &str) {
    let port = format!("127.0.0.1:{}", local.port());
    expect_logged(&["handshake failed", &port]).await;
    assert_eq!(
        logged_count_since(since, &[&port]),
        1,
        "{what}: expected one log line for {port}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_turned_away_promptly_and_logged_once_while_clients_keep_working() {
    capture_logs();
    // Count only this test's lines: the binary's other tests log ports too.
    let since = log_mark();
    let server = server_for(TransportKind::Ws).await;
    let addr = server.local_addr();
    let echo = echo_service().await.to_string();
    let mut clients = Vec::new();
    let mut ports = Vec::new();
    for kind in TransportKind::ALL {
        let port = free_port();
        let cfg = client_config_for(&server, kind)
            .with_id(format!("stranger-test-{kind}"))
            .with_proxy(ProxyConfig::tcp("echo", &echo, Some(port)));
        clients.push(client(cfg).await);
        ports.push(port);
    }

    // Random bytes, and plain HTTP without TLS: not a TLS handshake.
    for (what, bytes) in [
        ("random bytes", random_bytes(4096, 5)),
        ("plain HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let local = s.local_addr().unwrap();
        send(&mut s, &bytes).await;
        answer_then_close(s, what).await;
        logged_once(since, local, what).await;
    }

    // TLS offering no ALPN.
    let tls = stranger_tls(addr, &[]).await;
    let local = tls.get_ref().0.local_addr().unwrap();
    answer_then_close(tls, "no ALPN").await;
    logged_once(since, local, "no ALPN").await;

    // HTTP/1.1 over TLS: a page request, and an upgrade at the wrong path.
    for (what, request) in [
        ("GET /", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "GET /elsewhere",
            "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
    ] {
        let mut tls = stranger_tls(addr, &[b"http/1.1"]).await;
        let local = tls.get_ref().0.local_addr().unwrap();
        send(&mut tls, request.as_bytes()).await;
        let answer = answer_then_close(tls, what).await;
        assert!(
            answer.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{what}: {answer}"
        );
        logged_once(since, local, what).await;
    }

    // What a browser sends: curl over HTTP/2 and HTTP/1.1 gets a 404.
    if need("curl") {
        for flag in ["--http2", "--http1.1"] {
            let out = tokio::process::Command::new("curl")
                .args(["-sk", flag, "--max-time", "5", "-o", "/dev/null"])
                .args(["-w", "%{http_code} %{http_version}"])
                .arg(format!("https://localhost:{}/", addr.port()))
                .output()
                .await
                .unwrap();
            let got = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(got.starts_with("404 "), "curl {flag}: {got}");
        }
    }

    // Every transport's client is still served, and a new one still gets in.
    for (i, port) in ports.iter().enumerate() {
        let data = random_bytes(200_000, i as u64);
        assert!(roundtrip(published(*port), &data).await == data);
    }
    let late = free_port();
    let _late = client(
        client_config_for(&server, TransportKind::H2)
            .with_id("stranger-test-late")
            .with_proxy(ProxyConfig::tcp("echo", &echo, Some(late))),
    )
    .await;
    assert!(roundtrip(published(late), b"still here").await == b"still here");
    assert_eq!(server.snapshot().clients, TransportKind::ALL.len() + 1);
}
