//! Live reconfiguration as an operator does it: edit the client's file, send SIGHUP.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tunnel_client::{ProxyConfig, VisitorConfig};
use tunnel_testkit::*;

fn client_file(head: &str, proxies: &[(&str, String, u16)]) -> String {
    let mut s = head.to_string();
    for (name, local, port) in proxies {
        s.push_str(&format!(
            "\n[[proxies]]\nname = \"{name}\"\ntype = \"tcp\"\nlocal_addr = \"{local}\"\npublish_port = {port}\n"
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_proxies_without_disturbing_a_running_transfer() {
    let server = server().await;
    let echo = echo_service().await.to_string();
    let (pa, pb) = (free_port(), free_port());
    let pki = Pki::new("reload");
    let file = pki.dir.join("client.toml");
    let log = pki.dir.join("client.log");
    let head = format!(
        "server_addr = \"{}\"\nauth_key = \"{KEY}\"\nserver_fingerprint = \"{}\"\nid = \"reloader\"\n",
        server.local_addr(),
        server.fingerprint()
    );
    std::fs::write(&file, client_file(&head, &[("a", echo.clone(), pa)])).unwrap();
    let client = Proc::spawn(bins::client(), &file, log.clone());
    eventually(Duration::from_secs(10), "proxy a serves", || async {
        is_listening(pa).await
    })
    .await;

    // A long transfer through "a", paced so that it spans both reloads.
    let transfer = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let data = random_bytes(8 << 20, 77);
        let s = tokio::net::TcpStream::connect(published(pa)).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(256 * 1024) {
                w.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        back == expect
    });

    // Add "b".
    std::fs::write(
        &file,
        client_file(&head, &[("a", echo.clone(), pa), ("b", echo.clone(), pb)]),
    )
    .unwrap();
    client.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "proxy b serves after SIGHUP",
        || async { is_listening(pb).await },
    )
    .await;
    let data = random_bytes(50_000, 1);
    assert!(roundtrip(published(pb), &data).await == data);
    assert!(
        !transfer.is_finished(),
        "the transfer should still be running (make it longer)"
    );

    // A broken file changes nothing.
    std::fs::write(&file, "server_addr = [this is not toml").unwrap();
    client.signal("HUP");
    eventually(Duration::from_secs(5), "the refusal is logged", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reload refused")
    })
    .await;
    assert!(roundtrip(published(pb), &data).await == data);
    assert_eq!(server.snapshot().proxies, 2);

    // Remove "b": its port closes, "a" and its transfer go on.
    std::fs::write(&file, client_file(&head, &[("a", echo.clone(), pa)])).unwrap();
    client.signal("HUP");
    eventually(Duration::from_secs(5), "proxy b's port closed", || async {
        !is_listening(pb).await
    })
    .await;
    assert!(
        transfer.await.unwrap(),
        "the transfer through a was corrupted"
    );
    assert!(roundtrip(published(pa), &data).await == data);
    assert_eq!(server.snapshot().clients, 1);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.matches("connected to").count(),
        1,
        "the client reconnected:\n{logged}"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_connection_changes_and_invalid_configs() {
    let server = server().await;
    let echo = echo_service().await.to_string();
    let port = free_port();
    let cfg = client_config(&server).with_proxy(ProxyConfig::tcp("a", &echo, Some(port)));
    let c = client(cfg.clone()).await;

    let mut moved = cfg.clone();
    moved.server_addr = "127.0.0.1:1".into();
    let err = c.reload(moved).await.unwrap_err().to_string();
    assert!(
        err.contains("server_addr") && err.contains("restart"),
        "{err}"
    );
    // Settings read when the session or the stats listener starts are named, not dropped.
    let timeouts = cfg
        .clone()
        .with_heartbeat_timeout(Duration::from_secs(7))
        .with_stats_bind("127.0.0.1:0".parse().unwrap());
    let err = c.reload(timeouts).await.unwrap_err().to_string();
    assert!(
        err.contains("heartbeat_timeout") && err.contains("stats_bind"),
        "{err}"
    );

    let dup = cfg
        .clone()
        .with_proxy(ProxyConfig::tcp("a", &echo, Some(free_port())));
    let err = c.reload(dup).await.unwrap_err().to_string();
    assert!(err.contains("duplicate"), "{err}");

    let same = c.reload(cfg).await.unwrap();
    assert!(same.is_empty());
    let data = random_bytes(10_000, 5);
    assert!(roundtrip(published(port), &data).await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_client_only_settings_and_logs_only_what_changed() {
    let server = server().await;
    let echo = echo_service().await.to_string();
    let (pa, pk, pn) = (free_port(), free_port(), free_port());
    let cfg = client_config(&server)
        .with_proxy(ProxyConfig::tcp("pp-a", &echo, Some(pa)))
        .with_proxy(ProxyConfig::tcp("pp-keep", &echo, Some(pk)));
    let c = client(cfg.clone()).await;
    expect_logged(&["registered", "name=pp-keep"]).await;

    let mut new = cfg.with_proxy(ProxyConfig::tcp("pp-new", &echo, Some(pn)));
    new.proxies[0].proxy_protocol = Some(tunnel_proto::proxy_protocol::Version::V1);
    let summary = c.reload(new).await.unwrap();
    assert_eq!(summary.proxies_changed, ["pp-a"]);
    assert_eq!(summary.proxies_added, ["pp-new"]);
    expect_logged(&["config reloaded: proxy pp-new added; proxy pp-a changed (proxy_protocol)"])
        .await;

    // The echo service sends the PROXY header back with the data.
    let back = roundtrip(published(pa), b"hello").await;
    assert!(
        back.starts_with(b"PROXY TCP4 127.0.0.1 ") && back.ends_with(b"\r\nhello"),
        "{}",
        String::from_utf8_lossy(&back)
    );
    assert!(roundtrip(published(pk), b"plain").await == b"plain");

    // The server's verdicts: the new proxy's, and not again the unchanged ones'.
    expect_logged(&["registered", "name=pp-new"]).await;
    assert_eq!(logged_count(&["registered", "name=pp-keep"]), 1);
    assert_eq!(logged_count(&["registered", "name=pp-a"]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_that_cannot_bind_rolls_the_whole_reload_back() {
    const SECRET: &str = "rollback-secret";
    let server = server().await;
    let echo = echo_service().await.to_string();
    let (x, z) = (visitor_bind(), visitor_bind());
    let cfg = client_config(&server)
        .with_proxy(ProxyConfig::tcp("rb-svc", &echo, None).with_secret(SECRET))
        .with_visitor(VisitorConfig::new("rb-v1", "rb-svc", 0, &x).with_secret(SECRET));
    let c = client(cfg.clone()).await;
    let data = random_bytes(10_000, 9);
    let through = |bind: &str| bind.parse::<std::net::SocketAddr>().unwrap();
    assert!(roundtrip(through(&x), &data).await == data);

    // rb-v1 moves, a proxy is added, and rb-v2 wants a port someone else holds.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let extra = free_port();
    let mut bad = cfg
        .clone()
        .with_proxy(ProxyConfig::tcp("rb-extra", &echo, Some(extra)))
        .with_visitor(VisitorConfig::new("rb-v2", "rb-svc", 0, &taken).with_secret(SECRET));
    bad.visitors[0].bind = z.clone();
    let err = c.reload(bad).await.unwrap_err().to_string();
    assert!(err.contains("rb-v2") && err.contains(&taken), "{err}");

    // Exactly as before: rb-v1 still on x, nothing on z, no new proxy anywhere.
    assert!(roundtrip(through(&x), &data).await == data);
    assert!(tokio::net::TcpStream::connect(&z).await.is_err());
    assert!(!is_listening(extra).await);
    assert_eq!(server.snapshot().proxies, 1);
    assert!(c.reload(cfg.clone()).await.unwrap().is_empty());

    // The same move alone goes through: z serves, x closes.
    let mut moved = cfg.clone();
    moved.visitors[0].bind = z.clone();
    let summary = c.reload(moved).await.unwrap();
    assert_eq!(summary.visitors_changed, ["rb-v1"]);
    assert!(roundtrip(through(&z), &data).await == data);
    eventually(Duration::from_secs(5), "x closed", || async {
        tokio::net::TcpStream::connect(&x).await.is_err()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_swapping_addresses_keep_their_sockets() {
    let server = server().await;
    let echo = echo_service().await.to_string();
    let page = http_service("from-web").await.to_string();
    let (x, w) = (visitor_bind(), visitor_bind());
    let cfg = client_config(&server)
        .with_proxy(ProxyConfig::tcp("sw-echo", &echo, None).with_allow_visitors(&["*"]))
        .with_proxy(ProxyConfig::tcp("sw-web", &page, None).with_allow_visitors(&["*"]))
        .with_visitor(VisitorConfig::new("sw-1", "sw-echo", 0, &x))
        .with_visitor(VisitorConfig::new("sw-2", "sw-web", 0, &w));
    let c = client(cfg.clone()).await;
    let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let at = |bind: &str| bind.parse::<std::net::SocketAddr>().unwrap();
    assert!(roundtrip(at(&x), get).await == get);

    let mut swapped = cfg.clone();
    swapped.visitors[0].bind = w.clone();
    swapped.visitors[1].bind = x.clone();
    let summary = c.reload(swapped).await.unwrap();
    assert_eq!(summary.visitors_changed, ["sw-1", "sw-2"]);
    let back = roundtrip(at(&x), get).await;
    assert!(
        String::from_utf8_lossy(&back).contains("from-web"),
        "{}",
        String::from_utf8_lossy(&back)
    );
    assert!(roundtrip(at(&w), get).await == get);
}
