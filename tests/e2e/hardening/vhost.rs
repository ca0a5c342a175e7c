//! The HTTP virtual host under attack (issue #13, items 2, 4, 6, 11, 12, 13): path spellings
//! that dodge a guarded location, credentials leaking to the service, heads and connections
//! that cost the server memory, forged forwarding headers, `Connection` lists that strip what
//! the service relies on, and password guessing. Requests are written by hand over loopback
//! sockets bound to chosen 127.0.0.x sources, so the tests control every byte and address.
use tunnel_testkit::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::ProxyConfig;
use tunnel_server::{ServerConfig, ServerHandle};

/// A local HTTP service that answers every request with its request line and headers, one
/// `name: value` line each, and remembers every request line it saw.
struct Echo {
    addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Echo {
    async fn start() -> Echo {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let log = log.clone();
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let mut text = format!("{} {}\n", req.method(), req.uri());
                    for (k, v) in req.headers() {
                        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                    }
                    log.lock().unwrap().push(text.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        Echo { addr, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A server with the vhost on. Logs are captured here, before any server starts, as the
/// first subscriber of the test binary wins (the auth test reads them).
async fn vhost_server(f: impl FnOnce(ServerConfig) -> ServerConfig) -> ServerHandle {
    capture_logs();
    server_with(|c| f(c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap()))).await
}

/// Send `req` from `127.0.0.<last>` and read the answer to its end.
async fn send_from(last: u8, to: SocketAddr, req: &str) -> String {
    let mut s = connect_from(loopback(last), to).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no complete answer within 10 s to {req:?}");
    String::from_utf8_lossy(&out).into_owned()
}

/// A one-shot request: `Connection: close` plus `extra` header lines.
fn get(host: &str, path: &str, extra: &[&str]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !extra
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("connection:"))
    {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req
}

/// The value of header `name` in the echoed request (the answer's body).
fn echoed<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let body = answer.split_once("\r\n\r\n")?.1;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

fn http_proxy(
    name: &str,
    svc: &Echo,
    f: impl FnOnce(&mut tunnel_client::HttpOptions),
) -> ProxyConfig {
    ProxyConfig::http(name, &svc.addr.to_string(), None).with_http(f)
}

const CREDS: &str = "Authorization: Basic YWRtaW46czNjcmV0"; // admin:s3cret
const WRONG: &str = "Authorization: Basic YWRtaW46Z3Vlc3M="; // admin:guess

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_spellings_do_not_bypass_a_guarded_location_nor_credentials_reach_the_service() {
    let server = vhost_server(|c| c).await;
    let vhost = server.vhost_addr().unwrap();
    // One service behind two proxies, as frp users do: the site is public, /admin is not.
    let svc = Echo::start().await;
    let _c = client(
        client_config(&server)
            .with_proxy(http_proxy("site", &svc, |h| {
                h.domains = vec!["sec.test".into()]
            }))
            .with_proxy(http_proxy("vault", &svc, |h| {
                h.domains = vec!["sec.test".into()];
                h.locations = vec!["/admin".into()];
                h.http_user = Some("admin".into());
                h.http_password = Some("s3cret".into());
            })),
    )
    .await;
    let bystander = send_from(3, vhost, &get("sec.test", "/pub", &[])).await;
    assert_eq!(status_code(&bystander), "200", "{bystander}");
    let before = svc.requests().len();
    for path in [
        "/admin/",
        "/%61dmin/",
        "//admin/",
        "/./admin/",
        "/x/../admin/",
        "/%2e/admin/",
        "/pub/..%2fadmin/",
        "/admin;x=1/",
        "/%2E%2E/admin/",
        "/pub/%2e%2e/admin/",
        "/pub\\..\\admin/",
    ] {
        let got = send_from(2, vhost, &get("sec.test", path, &[])).await;
        assert!(
            ["401", "400"].contains(&status_code(&got)),
            "{path} must be refused: {got}"
        );
    }
    assert_eq!(
        svc.requests().len(),
        before,
        "a bypass reached the service: {:?}",
        &svc.requests()[before..]
    );
    // With the password: the service gets the one spelling the vhost matched, and no
    // credential meant for the server.
    let got = send_from(
        2,
        vhost,
        &get("sec.test", "/x/../%61dmin//page?q=%2F", &[CREDS]),
    )
    .await;
    assert_eq!(status_code(&got), "200", "{got}");
    let seen = svc.requests().pop().unwrap();
    assert!(seen.starts_with("GET /admin/page?q=%2F\n"), "{seen}");
    assert!(
        !seen.to_ascii_lowercase().contains("authorization"),
        "{seen}"
    );
    let bystander = send_from(3, vhost, &get("sec.test", "/pub", &[])).await;
    assert_eq!(status_code(&bystander), "200", "{bystander}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_head_gets_431_and_a_silent_or_slow_connection_is_closed_early() {
    let server = vhost_server(|mut c| {
        c.vhost_first_byte_timeout = 1;
        c.vhost_header_timeout = 2;
        c
    })
    .await;
    let vhost = server.vhost_addr().unwrap();
    let svc = Echo::start().await;
    let _c = client(
        client_config(&server).with_proxy(http_proxy("web", &svc, |h| {
            h.domains = vec!["web.test".into()]
        })),
    )
    .await;
    let big = format!("X-Big: {}", "a".repeat(40 * 1024));
    let got = send_from(2, vhost, &get("web.test", "/", &[&big])).await;
    assert_eq!(status_code(&got), "431", "{}", &got[..got.len().min(200)]);

    // Silent: closed after the first-byte deadline (1 s), not the old 30 s.
    let t0 = Instant::now();
    let mut silent = connect_from(loopback(2), vhost).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "still open: {n:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // Slow: a byte every 200 ms never finishes a head; the whole-head deadline (2 s) ends it.
    let t0 = Instant::now();
    let mut slow = connect_from(loopback(2), vhost).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\n")
        .await
        .unwrap();
    let closed = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if slow.write_all(b"X").await.is_err() || t0.elapsed() > Duration::from_secs(6) {
            break t0.elapsed();
        }
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await
        {
            break t0.elapsed();
        }
    };
    assert!(
        closed < Duration::from_secs(4),
        "slow head held for {closed:?}"
    );

    // Idle keep-alive: closed after the header deadline once the answer is done.
    let mut ka = connect_from(loopback(3), vhost).await.unwrap();
    ka.write_all(get("web.test", "/", &["Connection: keep-alive"]).as_bytes())
        .await
        .unwrap();
    let n = ka.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), ka.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "an idle keep-alive connection stayed open");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    let bystander = send_from(3, vhost, &get("web.test", "/", &[])).await;
    assert_eq!(status_code(&bystander), "200", "{bystander}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_with_1000_slow_connections_is_capped_and_a_bystander_is_served() {
    const CAP: usize = 100;
    let server = vhost_server(|c| c.with_vhost_max_conns(10_000, CAP)).await;
    let vhost = server.vhost_addr().unwrap();
    let svc = Echo::start().await;
    let _c = client(
        client_config(&server).with_proxy(http_proxy("web", &svc, |h| {
            h.domains = vec!["web.test".into()]
        })),
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let Ok(mut s) = connect_from(loopback(2), vhost).await else {
            continue;
        };
        // An unfinished head: the old vhost buffered such heads for 30 s.
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: web.test\r\nX-Pad: ")
            .await;
        conns.push(s);
    }
    // Those over the cap are closed at once; the rest stay open (nothing to read yet).
    let still_open = |conns: &[TcpStream]| {
        conns
            .iter()
            .filter(|s| {
                let mut b = [0u8; 1];
                matches!(s.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while still_open(&conns) > CAP && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(still_open(&conns), CAP, "connections held for one source");
    // Another source still gets its pages meanwhile.
    for _ in 0..3 {
        let got = send_from(3, vhost, &get("web.test", "/", &[])).await;
        assert_eq!(status_code(&got), "200", "{got}");
    }
    let metrics = scrape(&server).await;
    assert!(
        metrics.contains(&format!(
            "tunnel_vhost_connections_refused_total {}",
            1000 - CAP
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_are_replaced_unless_a_trusted_proxy_sent_them() {
    let server = vhost_server(|c| c.with_trusted_proxies(&["127.0.0.9/32"])).await;
    let vhost = server.vhost_addr().unwrap();
    let svc = Echo::start().await;
    let port = free_port();
    let _c = client(
        client_config(&server)
            .with_proxy(http_proxy("fwd", &svc, |h| {
                h.domains = vec!["fwd.test".into()]
            }))
            .with_proxy(ProxyConfig::http(
                "direct",
                &svc.addr.to_string(),
                Some(port),
            )),
    )
    .await;
    let forged = [
        "X-Forwarded-For: 6.6.6.6",
        "X-Forwarded-Host: evil.test",
        "X-Forwarded-Proto: https",
        "X-Real-IP: 6.6.6.6",
        "Forwarded: for=6.6.6.6;host=evil.test;proto=https",
    ];
    // Through the vhost, from an ordinary user.
    let got = send_from(2, vhost, &get("fwd.test", "/", &forged)).await;
    assert_eq!(status_code(&got), "200", "{got}");
    assert_eq!(
        echoed(&got, "x-forwarded-for"),
        Some("6.6.6.6, 127.0.0.2"),
        "{got}"
    );
    assert_eq!(echoed(&got, "x-forwarded-host"), Some("fwd.test"), "{got}");
    assert_eq!(echoed(&got, "x-forwarded-proto"), Some("http"), "{got}");
    assert_eq!(echoed(&got, "x-real-ip"), Some("127.0.0.2"), "{got}");
    assert_eq!(
        echoed(&got, "forwarded"),
        Some("for=127.0.0.2;host=\"fwd.test\";proto=http"),
        "{got}"
    );
    // Through the public port: the client is the first hop and does the same.
    let got = send_from(2, published(port), &get("pub.test", "/", &forged)).await;
    assert_eq!(status_code(&got), "200", "{got}");
    assert_eq!(
        echoed(&got, "x-forwarded-for"),
        Some("6.6.6.6, 127.0.0.2"),
        "{got}"
    );
    assert_eq!(echoed(&got, "x-forwarded-host"), Some("pub.test"), "{got}");
    assert_eq!(echoed(&got, "x-forwarded-proto"), Some("http"), "{got}");
    assert_eq!(echoed(&got, "x-real-ip"), Some("127.0.0.2"), "{got}");
    assert_eq!(
        echoed(&got, "forwarded"),
        Some("for=127.0.0.2;host=\"pub.test\";proto=http"),
        "{got}"
    );
    // A trusted front proxy (TLS terminator) is believed about the user and the scheme.
    let front = [
        "X-Forwarded-For: 6.6.6.6, 198.51.100.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: fwd.test",
    ];
    let got = send_from(9, vhost, &get("fwd.test", "/", &front)).await;
    assert_eq!(
        echoed(&got, "x-forwarded-for"),
        Some("6.6.6.6, 198.51.100.7, 127.0.0.9"),
        "{got}"
    );
    assert_eq!(echoed(&got, "x-forwarded-proto"), Some("https"), "{got}");
    assert_eq!(echoed(&got, "x-real-ip"), Some("198.51.100.7"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_header_cannot_strip_host_or_forwarding_headers() {
    let server = vhost_server(|c| c).await;
    let vhost = server.vhost_addr().unwrap();
    let svc = Echo::start().await;
    let port = free_port();
    let _c = client(
        client_config(&server)
            .with_proxy(http_proxy("web", &svc, |h| {
                h.domains = vec!["web.test".into()]
            }))
            .with_proxy(ProxyConfig::http(
                "direct",
                &svc.addr.to_string(),
                Some(port),
            )),
    )
    .await;
    let hostile = [
        "Connection: close, host, x-forwarded-for, x-real-ip, forwarded, x-hop",
        "X-Hop: 1",
    ];
    for (to, host) in [(vhost, "web.test"), (published(port), "pub.test")] {
        let got = send_from(2, to, &get(host, "/", &hostile)).await;
        assert_eq!(status_code(&got), "200", "{got}");
        assert_eq!(echoed(&got, "host"), Some(host), "{got}");
        assert_eq!(echoed(&got, "x-forwarded-for"), Some("127.0.0.2"), "{got}");
        assert_eq!(echoed(&got, "x-real-ip"), Some("127.0.0.2"), "{got}");
        assert!(echoed(&got, "forwarded").is_some(), "{got}");
        assert_eq!(
            echoed(&got, "x-hop"),
            None,
            "a real hop-by-hop header still goes: {got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_wrong_passwords_are_logged_counted_and_then_refused() {
    let server = vhost_server(|c| c).await;
    let vhost = server.vhost_addr().unwrap();
    let svc = Echo::start().await;
    let _c = client(
        client_config(&server).with_proxy(http_proxy("vault", &svc, |h| {
            h.domains = vec!["guess.test".into()];
            h.http_user = Some("admin".into());
            h.http_password = Some("s3cret".into());
        })),
    )
    .await;
    // Guess as fast as possible on one keep-alive connection for a second.
    let mut s = connect_from(loopback(4), vhost).await.unwrap();
    let guess = get("guess.test", "/", &[WRONG, "Connection: keep-alive"]);
    let (mut unauthorized, mut refused) = (0, 0);
    let t0 = Instant::now();
    let mut buf = vec![0u8; 4096];
    while t0.elapsed() < Duration::from_secs(1) {
        if s.write_all(guess.as_bytes()).await.is_err() {
            break;
        }
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let head = String::from_utf8_lossy(&buf[..n]);
        match status_code(&head) {
            "401" => unauthorized += 1,
            "429" => refused += 1,
            other => panic!("unexpected answer {other}: {head}"),
        }
    }
    assert_eq!(unauthorized, 5, "guesses checked in a second");
    // The right password from the blocked source is refused too, after a delay, until the
    // window ends; every attempt it makes costs it a connection and a second.
    let t0 = Instant::now();
    let got = send_from(4, vhost, &get("guess.test", "/", &[CREDS])).await;
    assert_eq!(status_code(&got), "429", "{got}");
    assert!(got.to_ascii_lowercase().contains("retry-after:"), "{got}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    // A bystander from another address logs in.
    let ok = send_from(5, vhost, &get("guess.test", "/", &[CREDS])).await;
    assert_eq!(status_code(&ok), "200", "{ok}");
    // One fail2ban-friendly line per failure, naming the source.
    expect_logged(&["WARN", "basic auth failed host=guess.test peer=127.0.0.4"]).await;
    assert_eq!(
        logged_count(&["basic auth failed host=guess.test peer=127.0.0.4"]),
        5
    );
    expect_logged(&["basic auth blocked peer=127.0.0.4"]).await;
    let metrics = scrape(&server).await;
    assert!(
        metrics.contains("tunnel_vhost_auth_failures_total 5\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "tunnel_vhost_auth_refused_total {}\n",
            refused + 1
        )),
        "{metrics}"
    );
}

/// The stats endpoint's `/metrics`.
async fn scrape(server: &ServerHandle) -> String {
    let addr = server.stats_addr().unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Item 6's figures: the server binary's memory with 1,000 connections from one source, each
/// holding an unfinished ~400 KiB request head, and how many it accepted. Run in release
/// (`cargo test --release --test e2e hardening::vhost::memory -- --ignored --nocapture`);
/// `VHOST_SERVER_BIN` measures another build (e.g. the base commit's) the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn memory_with_1000_unfinished_heads() {
    let pki = Pki::new("vhost-mem");
    let (port, vhost_port) = (free_port(), free_port());
    let bin = std::env::var("VHOST_SERVER_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| bins::server().to_owned());
    let cfg = pki.write(
        "server.toml",
        &format!(
            "bind = \"127.0.0.1:{port}\"\nauth_key = \"{KEY}\"\ntls_cert = {:?}\ntls_key = {:?}\n\
             stats_bind = \"\"\nvhost_http_bind = \"127.0.0.1:{vhost_port}\"\n",
            pki.cert.display().to_string(),
            pki.key.display().to_string(),
        ),
    );
    let server = Proc::spawn(&bin, &cfg, pki.dir.join("server.log"));
    let vhost = SocketAddr::from(([127, 0, 0, 1], vhost_port));
    eventually(Duration::from_secs(10), "the vhost listens", || async {
        TcpStream::connect(vhost).await.is_ok()
    })
    .await;
    let idle_rss = server.rss_kib();
    let kib: usize = std::env::var("VHOST_HEAD_KIB").map_or(400, |v| v.parse().unwrap());
    let mut head = b"GET / HTTP/1.1\r\nHost: mem.test\r\nX-Pad: ".to_vec();
    head.resize(kib * 1024, b'a');
    let head = Arc::new(head);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let head = head.clone();
            tokio::spawn(async move {
                let mut s = connect_from(loopback(2), vhost).await.ok()?;
                let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(&head)).await;
                Some(s)
            })
        })
        .collect();
    let mut conns = Vec::new();
    for t in tasks {
        if let Some(s) = t.await.unwrap() {
            conns.push(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss = server.rss_kib();
    // Held: still open, nothing to read. Answered: the server read the head and said 431.
    // The rest were closed unread at accept.
    let (mut held, mut answered) = (0, 0);
    for s in &conns {
        let mut b = [0u8; 64];
        match s.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => held += 1,
            Ok(n) if b[..n].starts_with(b"HTTP/1.1 431") => answered += 1,
            _ => {}
        }
    }
    println!(
        "{bin}: idle {idle_rss} KiB; with 1000 unfinished {kib} KiB heads from one source: \
         {rss} KiB RSS; {held} connections held, {answered} answered 431, {} closed at accept",
        conns.len() - held - answered
    );
    // A bystander from another source is served meanwhile (404: no proxy; the point is an answer).
    let got = send_from(3, vhost, &get("other.test", "/", &[])).await;
    assert_eq!(status_code(&got), "404", "{got}");
}
