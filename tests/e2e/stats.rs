//! The stats endpoint as an operator uses it: curl against /metrics, /api/stats, /healthz.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tunnel_client::{ProxyConfig, VisitorConfig};
use tunnel_testkit::*;

/// GET `path` with curl; returns (HTTP status, body).
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// The value of the sample line starting with `series ` in a Prometheus text body.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

async fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    sample(&get(addr, "/metrics", None).await.1, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_lifecycle_and_count_payload_bytes_exactly() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let stats = server.stats_addr().unwrap();
    let echo = echo_service().await;
    let port = free_port();
    assert_eq!(metric(stats, "tunnel_clients").await, Some(0.0));
    // The client reaches the server through a relay, so the test can kill its path.
    let relay = Relay::start(server.local_addr()).await;
    let cfg = client_config(&server)
        .with_id("metered")
        .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port)));
    let mut cfg = cfg;
    cfg.server_addr = relay.addr.to_string();
    let mut c = client(cfg).await;
    assert_eq!(metric(stats, "tunnel_clients").await, Some(1.0));
    assert_eq!(metric(stats, "tunnel_proxies").await, Some(1.0));

    // 3 connections moving 100 000 + 200 000 + 300 000 bytes each way.
    let mut total = 0u64;
    for (i, n) in [100_000usize, 200_000, 300_000].into_iter().enumerate() {
        let data = random_bytes(n, i as u64);
        assert!(roundtrip(published(port), &data).await == data);
        total += n as u64;
    }
    let body = get(stats, "/metrics", None).await.1;
    assert_eq!(
        sample(&body, "tunnel_bytes_total{proxy=\"echo\",direction=\"in\"}"),
        Some(total as f64),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_bytes_total{proxy=\"echo\",direction=\"out\"}"
        ),
        Some(total as f64)
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_connections_total{proxy=\"echo\",kind=\"public\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_connections_total{proxy=\"echo\",kind=\"visitor\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(&body, "tunnel_streams_active{proxy=\"echo\"}"),
        Some(0.0)
    );
    assert!(sample(&body, "tunnel_handshake_seconds_count").unwrap() >= 1.0);
    assert!(body.contains("# TYPE tunnel_handshake_seconds histogram"));
    assert!(body.contains("tunnel_handshake_seconds_bucket{le=\"+Inf\"}"));
    assert!(body.ends_with('\n'));

    // The path dies without the server noticing; the client reconnects and replaces its
    // stale session: still one client and one proxy, never two.
    relay.cut();
    eventually(Duration::from_secs(10), "client reconnected", || async {
        relay.accepted() >= 2
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "reconnected client registered",
        || async { matches!(c.status(), tunnel_client::Status::Ready(_)) },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(metric(stats, "tunnel_clients").await, Some(1.0));
        assert_eq!(metric(stats, "tunnel_proxies").await, Some(1.0));
    }
    // Counters survive the hand-over of the proxy.
    assert_eq!(
        metric(stats, "tunnel_bytes_total{proxy=\"echo\",direction=\"in\"}").await,
        Some(total as f64)
    );

    c.shutdown();
    c.join().await.unwrap();
    eventually(Duration::from_secs(2), "gauges back to zero", || async {
        metric(stats, "tunnel_clients").await == Some(0.0)
            && metric(stats, "tunnel_proxies").await == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_stats_lists_clients_with_their_proxies_visitors_and_counters() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let stats = server.stats_addr().unwrap();
    let echo = echo_service().await;
    let _owner = client(
        client_config(&server)
            .with_id("owner")
            .with_proxy(ProxyConfig::tcp("db", &echo.to_string(), None).with_secret("s")),
    )
    .await;
    let vport = free_port();
    let _visitor = client(client_config(&server).with_id("visitor").with_visitor(
        VisitorConfig::new("to-db", "db", 0, &format!("127.0.0.1:{vport}")).with_secret("s"),
    ))
    .await;
    let data = random_bytes(12_345, 9);
    assert!(roundtrip(published(vport), &data).await == data);

    let (code, body) = get(stats, "/api/stats", None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let owner = clients.iter().find(|c| c["id"] == "owner").unwrap();
    assert_eq!(owner["transport"], "tls");
    assert!(owner["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    let db = &owner["proxies"][0];
    assert_eq!(db["name"], "db");
    assert_eq!(db["type"], "tcp");
    assert!(db["publish_port"].is_null());
    assert_eq!(db["connections_visitor"], 1);
    assert_eq!(db["bytes_in"], 12_345);
    assert_eq!(db["bytes_out"], 12_345);
    let visitor = clients.iter().find(|c| c["id"] == "visitor").unwrap();
    assert_eq!(visitor["visitors"][0]["name"], "to-db");
    assert_eq!(visitor["visitors"][0]["proxy"], "db");
    assert!(
        !body.contains("\"s\""),
        "a secret leaked into the stats: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_guards_metrics_and_stats_but_not_healthz() {
    if !need("curl") {
        return;
    }
    let server = server_with(|c| c.with_stats_token("sekrit")).await;
    let stats = server.stats_addr().unwrap();
    for path in ["/metrics", "/api/stats"] {
        assert_eq!(
            get(stats, path, None).await.0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            get(stats, path, Some("wrong")).await.0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            get(stats, path, Some("sekrit")).await.0,
            200,
            "{path} with the token"
        );
    }
    let (code, body) = get(stats, "/healthz", None).await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(get(stats, "/nope", Some("sekrit")).await.0, 404);
    server.shutdown();
    assert_eq!(
        get(stats, "/healthz", None).await.0,
        503,
        "healthz must fail once draining"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_serves_its_own_stats_when_asked() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let echo = echo_service().await;
    let port = free_port();
    let stats_port = free_port();
    let stats: SocketAddr = format!("127.0.0.1:{stats_port}").parse().unwrap();
    let c = client(
        client_config(&server)
            .with_stats_bind(stats)
            .with_connections(2)
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    eventually(Duration::from_secs(10), "both connections up", || async {
        let body = get(stats, "/metrics", None).await.1;
        sample(&body, "tunnel_client_server_connections") == Some(2.0)
    })
    .await;
    let data = random_bytes(54_321, 4);
    assert!(roundtrip(published(port), &data).await == data);
    let body = get(stats, "/metrics", None).await.1;
    assert_eq!(
        sample(&body, "tunnel_client_connected"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "tunnel_proxy_connections_total{proxy=\"echo\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_proxy_bytes_total{proxy=\"echo\",direction=\"in\"}"
        ),
        Some(54_321.0)
    );
    assert_eq!(
        sample(
            &body,
            "tunnel_proxy_bytes_total{proxy=\"echo\",direction=\"out\"}"
        ),
        Some(54_321.0)
    );
    let (code, json) = get(stats, "/api/stats", None).await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["connected"], true);
    assert_eq!(v["connections"], 2);
    assert_eq!(v["proxies"][0]["name"], "echo");
    assert_eq!(get(stats, "/healthz", None).await.0, 200);
    server.abort();
    eventually(
        Duration::from_secs(10),
        "client healthz fails without a server",
        || async { get(stats, "/healthz", None).await.0 == 503 },
    )
    .await;
    drop(c);
}

/// `(bytes_in, bytes_out)` of the proxy `name` in an `/api/stats` list of proxies.
fn proxy_bytes(proxies: &serde_json::Value, name: &str) -> Option<(u64, u64)> {
    let p = proxies.as_array()?.iter().find(|p| p["name"] == name)?;
    Some((p["bytes_in"].as_u64()?, p["bytes_out"].as_u64()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_counts_http_and_http2_bytes_as_the_server_does() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let server_stats = server.stats_addr().unwrap();
    let (h1, h2) = (http1_service().await, h2c_service().await);
    let (p1, p2) = (free_port(), free_port());
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _c = client(
        client_config(&server)
            .with_id("http-bytes")
            .with_stats_bind(stats)
            .with_proxy(ProxyConfig::http("web1", &h1.addr.to_string(), Some(p1)))
            .with_proxy(ProxyConfig::http2("web2", &h2.addr.to_string(), Some(p2))),
    )
    .await;
    let body = "x".repeat(20_000);
    for (port, version) in [(p1, "--http1.1"), (p2, "--http2-prior-knowledge")] {
        let url = format!("http://127.0.0.1:{port}/echo");
        let out = curl_ok(&[version, "--data-binary", &body, &url]).await;
        assert_eq!(out.len(), body.len());
    }
    // Both ends count the same stream (heads included): once the exchanges are over, the
    // client's numbers are the server's.
    eventually(
        Duration::from_secs(5),
        "client bytes match the server's",
        || async {
            let mine: serde_json::Value =
                serde_json::from_str(&get(stats, "/api/stats", None).await.1).unwrap();
            let theirs: serde_json::Value =
                serde_json::from_str(&get(server_stats, "/api/stats", None).await.1).unwrap();
            let Some(owner) = theirs["clients"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["id"] == "http-bytes"))
            else {
                return false;
            };
            ["web1", "web2"].iter().all(|name| {
                let m = proxy_bytes(&mine["proxies"], name);
                let t = proxy_bytes(&owner["proxies"], name);
                matches!(m, Some((i, o)) if i > 20_000 && o > 20_000) && m == t
            })
        },
    )
    .await;
}
