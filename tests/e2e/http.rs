//! End to end: PROXY protocol, `http` and `http2` proxies through a real server and client,
//! with real HTTP services and real clients (curl, hyper) on loopback.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::ProxyConfig;
use tunnel_proto::proxy_protocol::Version;
use tunnel_testkit::*;

/// A service that reads one PROXY header (v1 line or v2 block), sends it back, and closes.
async fn header_echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                if s.read_exact(&mut head[..5]).await.is_err() {
                    return;
                }
                let mut got = head[..5].to_vec();
                if &head[..5] == b"PROXY" {
                    while !got.ends_with(b"\r\n") && got.len() < 108 {
                        let Ok(b) = s.read_u8().await else { return };
                        got.push(b);
                    }
                } else {
                    if s.read_exact(&mut head[5..]).await.is_err() {
                        return;
                    }
                    got = head.to_vec();
                    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
                    let mut rest = vec![0u8; len];
                    if s.read_exact(&mut rest).await.is_err() {
                        return;
                    }
                    got.extend_from_slice(&rest);
                }
                let _ = s.write_all(&got).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// The v2 header for TCP over IPv4, built by hand from the spec's layout.
fn v2_tcp4(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    for a in [src, dst] {
        let SocketAddr::V4(a) = a else {
            panic!("v4 expected")
        };
        h.extend_from_slice(&a.ip().octets());
    }
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_reach_a_tcp_service_byte_for_byte() {
    let server = server().await;
    let svc = header_echo_service().await;
    let (p1, p2) = (free_port(), free_port());
    let _client = client(
        client_config(&server)
            .with_proxy(
                ProxyConfig::tcp("pp1", &svc.to_string(), Some(p1))
                    .with_proxy_protocol(Version::V1),
            )
            .with_proxy(
                ProxyConfig::tcp("pp2", &svc.to_string(), Some(p2))
                    .with_proxy_protocol(Version::V2),
            ),
    )
    .await;
    for (port, v2) in [(p1, false), (p2, true)] {
        let mut s = TcpStream::connect(published(port)).await.unwrap();
        let src = s.local_addr().unwrap();
        let dst = published(port);
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let want = if v2 {
            v2_tcp4(src, dst)
        } else {
            format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\n", src.port()).into_bytes()
        };
        assert_eq!(got, want, "v2={v2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_accepts_proxy_protocol_v1_and_v2() {
    if !Nginx::available() || !need("curl") {
        return;
    }
    let pki = Pki::new("nginx-pp");
    let nginx_port = free_port();
    let _nginx = Nginx::start(
        &pki.dir,
        nginx_port,
        &format!(
            "listen 127.0.0.1:{nginx_port} proxy_protocol;\n\
             location / {{ return 200 \"$proxy_protocol_addr $proxy_protocol_port\"; }}"
        ),
    )
    .await;
    let server = server().await;
    let (p1, p2) = (free_port(), free_port());
    let local = format!("127.0.0.1:{nginx_port}");
    let _client = client(
        client_config(&server)
            .with_proxy(ProxyConfig::tcp("ng1", &local, Some(p1)).with_proxy_protocol(Version::V1))
            .with_proxy(ProxyConfig::tcp("ng2", &local, Some(p2)).with_proxy_protocol(Version::V2)),
    )
    .await;
    for port in [p1, p2] {
        // A fixed source port, so the address nginx reports can be checked exactly. A port
        // that was free a moment ago may be taken by the time curl binds it (other tests
        // open thousands of connections): curl says so with exit code 45, then pick again.
        let url = format!("http://127.0.0.1:{port}/");
        let mut attempts = 0;
        let (src, body) = loop {
            let src = free_port();
            let (ok, out, err) = curl(&["--local-port", &src.to_string(), &url]).await;
            if ok {
                break (src, String::from_utf8_lossy(&out).into_owned());
            }
            attempts += 1;
            assert!(
                err.contains("(45)") && attempts < 5,
                "curl through port {port} failed: {err}"
            );
        };
        assert_eq!(body, format!("127.0.0.1 {src}"), "through port {port}");
    }
}

async fn http_proxy(
    server: &tunnel_server::ServerHandle,
    p: ProxyConfig,
) -> tunnel_client::ClientHandle {
    client(client_config(server).with_proxy(p)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_keepalive_requests_over_twenty_connections_share_few_local_ones() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let svc = http1_service().await;
    let port = free_port();
    let p = ProxyConfig::http("web", &svc.addr.to_string(), Some(port))
        .with_http(|h| h.max_local_conns = 4);
    let _c = http_proxy(&server, p).await;
    let url = format!("http://127.0.0.1:{port}/n");
    let users: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // One curl, ten URLs: one keep-alive user connection.
                let mut args = vec!["-w", "|%{num_connects}\n"];
                args.extend(std::iter::repeat_n(url.as_str(), 10));
                let out = curl_ok(&args).await;
                assert_eq!(out.matches("GET /n").count(), 10, "{out}");
                let connects: usize = out
                    .lines()
                    .filter_map(|l| l.strip_prefix('|'))
                    .map(|n| n.parse::<usize>().unwrap())
                    .sum();
                assert_eq!(connects, 1, "curl should reuse its connection: {out}");
            })
        })
        .collect();
    for u in users {
        u.await.unwrap();
    }
    assert_eq!(svc.seen.requests.load(Ordering::SeqCst), 200);
    let local = svc.seen.connections.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&local),
        "200 requests from 20 users used {local} local connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_host_rewrite_and_set_headers() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let svc = http1_service().await;
    let port = free_port();
    let p = ProxyConfig::http("hdr", &svc.addr.to_string(), Some(port)).with_http(|h| {
        h.host_rewrite = Some("internal.local".into());
        h.request_headers
            .insert("x-from-tunnel".into(), "yes".into());
        h.request_headers.insert("x-replaced".into(), "new".into());
        h.response_headers
            .insert("x-served-by".into(), "tunnel".into());
    });
    let _c = http_proxy(&server, p).await;
    let (ok, out, err) = curl(&[
        "-i",
        "-H",
        "Host: public.example",
        "-H",
        "X-Forwarded-For: 2.2.2.2",
        "-H",
        "X-Replaced: old",
        &format!("http://127.0.0.1:{port}/path?q=1"),
    ])
    .await;
    assert!(ok, "{err}");
    let out = String::from_utf8_lossy(&out).to_lowercase();
    assert!(out.contains("x-served-by: tunnel"), "{out}");
    assert!(out.contains("get /path?q=1\n"), "{out}");
    assert!(out.contains("\nhost: internal.local\n"), "{out}");
    assert!(
        out.contains("x-forwarded-for: 2.2.2.2, 127.0.0.1\n"),
        "{out}"
    );
    assert!(out.contains("x-forwarded-host: public.example\n"), "{out}");
    assert!(out.contains("x-forwarded-proto: http\n"), "{out}");
    assert!(out.contains("x-from-tunnel: yes\n"), "{out}");
    assert!(
        out.contains("x-replaced: new\n") && !out.contains("x-replaced: old"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_streams_up_and_down_byte_exact() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let svc = http1_service().await;
    let port = free_port();
    let _c = http_proxy(
        &server,
        ProxyConfig::http("big", &svc.addr.to_string(), Some(port)),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("tt-http-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inp, outp) = (dir.join("in"), dir.join("out"));
    let data = random_bytes(64 << 20, 11);
    std::fs::write(&inp, &data).unwrap();
    curl_ok(&[
        "--max-time",
        "120",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", inp.display()),
        "-o",
        &outp.display().to_string(),
        &format!("http://127.0.0.1:{port}/echo"),
    ])
    .await;
    let back = std::fs::read(&outp).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_passes_raw_bytes_through() {
    let server = server().await;
    let svc = http1_service().await;
    let port = free_port();
    let _c = http_proxy(
        &server,
        ProxyConfig::http("ws", &svc.addr.to_string(), Some(port)),
    )
    .await;
    let head = upgrade_echo(published(port), "x", 3).await;
    assert!(head.contains("upgrade: echo"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_service_gives_504_and_a_dead_one_502() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let svc = http1_service().await;
    let (_hold, dead) = refusing_port();
    let (p1, p2) = (free_port(), free_port());
    let _c = client(
        client_config(&server)
            .with_proxy(
                ProxyConfig::http("slow", &svc.addr.to_string(), Some(p1))
                    .with_http(|h| h.response_timeout = 1),
            )
            .with_proxy(ProxyConfig::http(
                "dead",
                &format!("127.0.0.1:{dead}"),
                Some(p2),
            )),
    )
    .await;
    let code = |port: u16| async move {
        curl_ok(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/slow"),
        ])
        .await
    };
    assert_eq!(code(p1).await, "504");
    assert_eq!(code(p2).await, "502");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_headers_and_garbage_are_refused_without_harm() {
    let server = server().await;
    let svc = http1_service().await;
    let port = free_port();
    let _c = http_proxy(
        &server,
        ProxyConfig::http("lim", &svc.addr.to_string(), Some(port)),
    )
    .await;
    // 64 KiB of headers against the 32 KiB default.
    let mut s = TcpStream::connect(published(port)).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 << 10)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    // Garbage: the connection is closed (perhaps after a 400).
    let mut s = TcpStream::connect(published(port)).await.unwrap();
    let _ = s.write_all(b"\x00\x01garbage\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    assert_eq!(svc.seen.requests.load(Ordering::SeqCst), 0);
    // And the proxy still serves.
    let mut s = TcpStream::connect(published(port)).await.unwrap();
    s.write_all(b"GET /fine HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(String::from_utf8_lossy(&out).contains("GET /fine"));
}

mod h2;

/// One HTTP/1.1 request on a fresh connection to 127.0.0.1:`port`: the status code.
async fn raw_status(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: dead.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_local_service_is_warned_about_once_with_proxy_and_address() {
    capture_logs();
    let server = server().await;
    let (_hold, dead) = refusing_port();
    let addr = format!("127.0.0.1:{dead}");
    let (p1, p2) = (free_port(), free_port());
    let _c = client(
        client_config(&server)
            .with_proxy(ProxyConfig::http("warn-dead-h1", &addr, Some(p1)))
            .with_proxy(ProxyConfig::http2("warn-dead-h2", &addr, Some(p2))),
    )
    .await;
    for (name, port) in [("warn-dead-h1", p1), ("warn-dead-h2", p2)] {
        assert_eq!(raw_status(port).await, "502", "{name}");
        let proxy = format!("proxy={name}");
        let parts = ["WARN", proxy.as_str(), addr.as_str()];
        expect_logged(&parts).await;
        for _ in 0..10 {
            assert_eq!(raw_status(port).await, "502", "{name}");
        }
        assert_eq!(logged_count(&parts), 1, "{name}: one warning per window");
    }
}
