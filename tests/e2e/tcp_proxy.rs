//! End to end: TCP proxies through a real server and client over real TLS on loopback. The
//! core cases run once per transport (tls, h2, wss, and ws to the server's ws_bind).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::{ClientConfig, ProxyConfig};
use tunnel_testkit::*;

tunnel_testkit::per_transport!(
    curl_reaches_a_local_http_service_through_a_published_port,
    thirty_two_mib_each_way_with_half_close_is_byte_exact,
    two_hundred_concurrent_connections_are_all_correct,
    wrong_auth_key_is_refused_with_a_clear_message_and_no_listener,
    client_exit_closes_its_published_port_within_a_second,
    a_user_abort_resets_the_local_connection,
);

async fn curl_reaches_a_local_http_service_through_a_published_port(kind: TransportKind) {
    if !need("curl") {
        return;
    }
    let web = http_service("hello through the tunnel").await;
    let (_server, _client, port) = publish_tcp(kind, "web", web).await;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through the tunnel"
    );
}

async fn thirty_two_mib_each_way_with_half_close_is_byte_exact(kind: TransportKind) {
    let echo = echo_service().await;
    let (_server, _client, port) = publish_tcp(kind, "echo", echo).await;
    let data = random_bytes(32 << 20, 7);
    let back = roundtrip(published(port), &data).await;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
}

async fn two_hundred_concurrent_connections_are_all_correct(kind: TransportKind) {
    let echo = echo_service().await;
    let (_server, _client, port) = publish_tcp(kind, "echo", echo).await;
    concurrent_roundtrips(port, 200, 16 * 1024, 97).await;
}

/// `count` connections at once through `port`, connection `i` echoing `base + i * step`
/// bytes; each must come back exactly.
async fn concurrent_roundtrips(port: u16, count: u64, base: usize, step: usize) {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            tokio::spawn(async move {
                let data = random_bytes(base + i as usize * step, i);
                let back = roundtrip(published(port), &data).await;
                assert!(back == data, "connection {i} corrupted");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn wrong_auth_key_is_refused_with_a_clear_message_and_no_listener(kind: TransportKind) {
    let server = server_for(kind).await;
    let echo = echo_service().await;
    let port = free_port();
    let cfg = client_config_for(&server, kind)
        .with_auth_key("not-the-key")
        .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port)));
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("auth_key"),
        "unhelpful error: {err}"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(5), c.join())
        .await
        .unwrap();
    assert!(
        stopped.is_err(),
        "a wrong key must stop the client, not retry forever"
    );
    assert_eq!(server.snapshot().proxies, 0);
    assert!(!is_listening(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_service_that_is_down_closes_the_user_connection_promptly() {
    let server = server().await;
    let dead = free_port(); // nothing listens there
    let port = free_port();
    let _client = client(client_config(&server).with_proxy(ProxyConfig::tcp(
        "down",
        &format!("127.0.0.1:{dead}"),
        Some(port),
    )))
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(published(port)).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the user connection hung")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
}

async fn client_exit_closes_its_published_port_within_a_second(kind: TransportKind) {
    let echo = echo_service().await;
    let (server, mut c, port) = publish_tcp(kind, "echo", echo).await;
    assert!(is_listening(port).await);
    assert_eq!(server.snapshot().proxies, 1);
    c.shutdown();
    c.join().await.unwrap();
    eventually(Duration::from_secs(1), "published port closed", || async {
        !is_listening(port).await
    })
    .await;
    eventually(Duration::from_secs(1), "registry empty", || async {
        server.snapshot().proxies == 0 && server.snapshot().clients == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_and_disallowed_ports_are_rejected_with_the_reason() {
    let server = server_with(|c| {
        c.with_allow_ports(["20000-60000"].iter().map(|s| s.parse().unwrap()).collect())
    })
    .await;
    let echo = echo_service().await;
    let port = loop {
        let p = free_port();
        if (20000..=60000).contains(&p) {
            break p;
        }
    };
    let _a = client(
        client_config(&server)
            .with_id("a")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    let mut b = tunnel_client::start(
        client_config(&server)
            .with_id("b")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port)))
            .with_proxy(ProxyConfig::tcp("low", &echo.to_string(), Some(1000)))
            .with_proxy(ProxyConfig::tcp("fine", &echo.to_string(), None)),
    )
    .await
    .unwrap();
    let reply = b.ready().await.unwrap();
    let by_name = |n: &str| {
        reply
            .results
            .iter()
            .find(|r| r.name == n)
            .unwrap()
            .error
            .clone()
    };
    let dup = by_name("echo").expect("duplicate accepted");
    assert!(dup.message.contains("already registered"), "{dup}");
    let low = by_name("low").expect("port 1000 accepted");
    assert_eq!(low.field, "publish_port");
    assert!(low.message.contains("not allowed"), "{low}");
    assert!(by_name("fine").is_none());
    // The first client is untouched.
    let data = random_bytes(100_000, 3);
    assert!(roundtrip(published(port), &data).await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_in_one_client_config_are_refused_before_connecting() {
    let cfg = ClientConfig::new("127.0.0.1:1")
        .with_auth_key(KEY)
        .with_proxy(ProxyConfig::tcp("a", "127.0.0.1:1", None))
        .with_proxy(ProxyConfig::tcp("a", "127.0.0.1:2", None));
    let err = tunnel_client::start(cfg).await.unwrap_err();
    assert!(err.to_string().contains("duplicate proxy name"), "{err}");
}

async fn a_user_abort_resets_the_local_connection(kind: TransportKind) {
    // The local service sees an abort (not a clean EOF) when the user resets.
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let (_server, _client, port) = publish_tcp(kind, "svc", local_addr).await;
    let user = TcpStream::connect(published(port)).await.unwrap();
    let (mut svc, _) = tokio::time::timeout(Duration::from_secs(5), local.accept())
        .await
        .unwrap()
        .unwrap();
    tunnel_mux::reset_tcp(user);
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(Duration::from_secs(5), svc.read(&mut buf))
        .await
        .expect("no teardown");
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, got {r:?}"
    );
    let _ = svc.write_all(b"x").await;
}

/// The embedding setup (`session_threads = 0`: everything on the caller's runtime) against a
/// client whose two connections run on threads of their own: both ways still byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_the_callers_runtime_and_on_client_threads_are_byte_exact() {
    let echo = echo_service().await;
    let server = server_with(|c| c.with_session_threads(0)).await;
    let port = free_port();
    let proxy = ProxyConfig::tcp("echo", &echo.to_string(), Some(port));
    let _client = client(client_config(&server).with_connections(2).with_proxy(proxy)).await;
    concurrent_roundtrips(port, 16, 256 * 1024, 131).await;
}
