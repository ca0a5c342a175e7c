//! The dashboard's side of the stats endpoint: its files and headers, the rebinding guard,
//! and the data it shows (totals, keys, history, recent events, the client's session).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tunnel_client::ProxyConfig;
use tunnel_testkit::*;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' \
                   data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_without_the_token_and_every_answer_has_strict_headers() {
    let server = server_with(|c| c.with_stats_token("sekrit")).await;
    let stats = server.stats_addr().unwrap();
    let page = stats_get(stats, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<canvas id=\"chart\""), "{}", page.body);
    for path in ["/app.js", "/app.css", "/favicon.svg"] {
        assert_eq!(stats_get(stats, path, &[]).await.status, 200, "{path}");
    }
    let auth = bearer("sekrit");
    for (path, token, status) in [
        ("/", None, 200),
        ("/api/stats", None, 401),
        ("/api/stats", Some(auth.as_str()), 200),
        ("/api/history", Some(auth.as_str()), 200),
        ("/metrics", Some(auth.as_str()), 200),
        ("/nope", None, 404),
    ] {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        let a = stats_get(stats, path, &headers).await;
        assert_eq!(a.status, status, "{path}");
        assert_eq!(a.header("content-security-policy"), Some(CSP), "{path}");
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(a.header("x-frame-options"), Some("DENY"));
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
        if path.starts_with("/api") || path == "/metrics" {
            assert_eq!(a.header("cache-control"), Some("no-store"), "{path}");
        }
    }
    // The page learns whether its token is right without a 401.
    let a = stats_get(stats, "/api/auth", &[("Authorization", "Bearer wrong")]).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["authorized"], false);
    let a = stats_get(stats, "/api/auth", &[("Authorization", &auth)]).await;
    assert_eq!(a.json()["authorized"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_browser_naming_the_endpoint_by_host_name_is_refused() {
    let server = server().await;
    let stats = server.stats_addr().unwrap();
    let rebound = [
        ("Host", "tunnel.example:9090"),
        ("Sec-Fetch-Site", "same-origin"),
    ];
    let a = stats_get(stats, "/api/stats", &rebound).await;
    assert_eq!(a.status, 403);
    assert!(a.body.contains("set stats_token"), "{}", a.body);
    let by_ip = [("Sec-Fetch-Site", "same-origin")];
    assert_eq!(stats_get(stats, "/api/stats", &by_ip).await.status, 200);
    let by_localhost = [("Host", "localhost"), ("Origin", "http://localhost")];
    assert_eq!(stats_get(stats, "/", &by_localhost).await.status, 200);
    // Not a browser (no Sec-Fetch-Site, no Origin): a scraper by name still gets its data.
    let scraper = [("Host", "tunnel.example:9090")];
    assert_eq!(stats_get(stats, "/metrics", &scraper).await.status, 200);
}

/// The sum of column `col` (bytes/s) over the points of an `/api/history` answer.
fn moved(history: &serde_json::Value, col: usize) -> u64 {
    history["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[col].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stats_have_totals_and_keys_and_the_history_follows_the_traffic() {
    let server = server().await;
    let stats = server.stats_addr().unwrap();
    let echo = echo_service().await;
    let port = free_port();
    let _c = client(
        client_config(&server)
            .with_id("laptop")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    let data = random_bytes(300_000, 3);
    assert!(roundtrip(published(port), &data).await == data);

    let v = stats_get(stats, "/api/stats", &[]).await.json();
    assert_eq!(v["role"], "server");
    let t = &v["totals"];
    assert_eq!(
        (t["clients"].as_u64(), t["proxies"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(t["bytes_in"], 300_000);
    assert_eq!(t["bytes_out"], 300_000);
    let c = &v["clients"][0];
    assert_eq!(
        (c["bytes_in"].as_u64(), c["bytes_out"].as_u64()),
        (Some(300_000), Some(300_000))
    );
    let p = &c["proxies"][0];
    assert_eq!(p["key"], "laptop/echo");
    assert_eq!(p["owner"], "laptop");
    assert_eq!(p["connections_total"], 1);
    assert!(v["events"].as_array().unwrap().is_empty(), "{v}");

    // The sampler reads the counters every second: the 300 000 bytes show up as rates.
    eventually(
        Duration::from_secs(10),
        "the totals history saw the bytes",
        || async {
            let h = stats_get(stats, "/api/history", &[]).await.json();
            moved(&h, 1) > 0 && moved(&h, 2) > 0
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the proxy's history saw the bytes",
        || async {
            let h = stats_get(stats, "/api/history?series=laptop%2Fecho", &[])
                .await
                .json();
            h["step"] == 5 && moved(&h, 1) > 0
        },
    )
    .await;
    let h = stats_get(stats, "/api/history", &[]).await.json();
    let last = h["points"].as_array().unwrap().last().unwrap()[0]
        .as_u64()
        .unwrap();
    let newer = stats_get(stats, &format!("/api/history?since={last}"), &[])
        .await
        .json();
    assert!(newer["points"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p[0].as_u64().unwrap() > last));
}

fn events(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_and_refused_registrations_are_recent_events() {
    let server = server_with(|c| {
        c.with_allow_ports(["20000-20010"].iter().map(|s| s.parse().unwrap()).collect())
    })
    .await;
    let stats = server.stats_addr().unwrap();
    let mut bad = tunnel_client::start(
        client_config(&server)
            .with_id("guesser")
            .with_auth_key("not the key"),
    )
    .await
    .unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(10), bad.ready())
        .await
        .unwrap()
        .is_err());

    let echo = echo_service().await;
    let mut c = tunnel_client::start(
        client_config(&server)
            .with_id("greedy")
            .with_proxy(ProxyConfig::tcp("far", &echo.to_string(), Some(30_001))),
    )
    .await
    .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(reply.results[0].error.is_some());

    let v = stats_get(stats, "/api/stats", &[]).await.json();
    let ev = events(&v);
    assert_eq!(ev.len(), 2, "{ev:?}");
    // Newest first.
    assert_eq!(ev[0]["kind"], "register_refused");
    assert_eq!(ev[0]["client"], "greedy");
    assert_eq!(ev[0]["source"], "127.0.0.1");
    let reason = ev[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("far") && reason.contains("30001"),
        "{reason}"
    );
    assert_eq!(ev[1]["kind"], "auth_failure");
    assert_eq!(ev[1]["source"], "127.0.0.1");
    assert!(ev[1]["client"].is_null());
    assert_eq!(ev[1]["count"], 1);
    assert!(ev[1]["t"].as_u64().unwrap() > 1_700_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reports_its_session_reconnects_and_last_error() {
    let server = server().await;
    let relay = Relay::start(server.local_addr()).await;
    let echo = echo_service().await;
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cfg = client_config(&server)
        .with_stats_bind(stats)
        .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), None));
    cfg.server_addr = relay.addr.to_string();
    let _c = client(cfg).await;

    let v = stats_get(stats, "/api/stats", &[]).await.json();
    assert_eq!(v["role"], "client");
    assert_eq!(v["connected"], true);
    assert!(v["connected_since"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["reconnects"], 0);
    assert!(v["last_error"].is_null());
    let p = &v["proxies"][0];
    assert_eq!(p["key"], "proxy/echo");
    assert_eq!(p["type"], "tcp");
    assert_eq!(p["local_addr"], echo.to_string());
    assert!(p["publish_port"].is_null());

    relay.cut();
    eventually(Duration::from_secs(15), "the client came back", || async {
        let v = stats_get(stats, "/api/stats", &[]).await.json();
        v["connected"] == true && v["reconnects"] == 1
    })
    .await;
    let v = stats_get(stats, "/api/stats", &[]).await.json();
    assert!(
        v["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_basic_auth_on_the_virtual_host_is_a_recent_event() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server_with(|c| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())).await;
    let svc = http1_service().await;
    let _c = client(client_config(&server).with_id("locked").with_proxy(
        ProxyConfig::http("priv", &svc.addr.to_string(), None).with_http(|h| {
            h.domains = vec!["priv.example.com".into()];
            h.http_user = Some("alice".into());
            h.http_password = Some("s3cret".into());
        }),
    ))
    .await;
    // alice:wrong, twice: one entry counting both.
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(server.vhost_addr().unwrap())
            .await
            .unwrap();
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: priv.example.com\r\nAuthorization: Basic YWxpY2U6d3Jvbmc=\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let v = stats_get(server.stats_addr().unwrap(), "/api/stats", &[])
        .await
        .json();
    let ev = events(&v);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["kind"], "vhost_auth_failure");
    assert_eq!(ev[0]["source"], "127.0.0.1");
    assert_eq!(ev[0]["count"], 2);
    assert!(
        ev[0]["reason"]
            .as_str()
            .unwrap()
            .contains("priv.example.com"),
        "{ev:?}"
    );
}
