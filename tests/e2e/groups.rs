//! End to end: load-balancing groups. Proxies of several clients with the same `group` and
//! `group_key` share one published port (or one domain), the server spreads connections over
//! them, skips a member whose service is down, and a health check withdraws a failing member
//! and lets it rejoin.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_client::{ClientHandle, HealthCheck, HealthKind, ProxyConfig, VisitorConfig};
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

const KEY: &str = "group-secret";

/// A tcp member `name` of group `web` on `port`, serving `local`.
fn member(name: &str, local: SocketAddr, port: u16) -> ProxyConfig {
    ProxyConfig::tcp(name, &local.to_string(), Some(port)).with_group("web", KEY)
}

/// Two banner services, answering "alpha" and "beta": which member a connection reached.
async fn alpha_and_beta() -> (BannerService, BannerService) {
    (
        BannerService::start("alpha").await,
        BannerService::start("beta").await,
    )
}

async fn client_with(server: &ServerHandle, id: &str, proxy: ProxyConfig) -> ClientHandle {
    client(client_config(server).with_id(id).with_proxy(proxy)).await
}

/// The banners of `n` connections to published `port`, one after another (`None`: failed).
async fn banners(port: u16, n: usize) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(read_banner(published(port)).await);
    }
    out
}

/// The members (proxy names) of group `web` in the server's stats.
async fn members(server: &ServerHandle) -> Vec<String> {
    let stats = stats_json(server.stats_addr().unwrap()).await;
    let groups = stats["groups"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = groups
        .iter()
        .filter(|g| g["name"] == "web")
        .flat_map(|g| g["members"].as_array().cloned().unwrap_or_default())
        .filter_map(|m| m["proxy"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_behind_one_port_both_get_connections() {
    let server = server().await;
    let (a, b) = alpha_and_beta().await;
    let port = free_port();
    let _a = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let _b = client_with(&server, "host-b", member("web-b", b.addr(), port)).await;
    assert_eq!(members(&server).await, ["web-a", "web-b"]);
    let seen = banners(port, 20).await;
    assert!(
        seen.iter().all(Option::is_some),
        "a connection failed: {seen:?}"
    );
    let kinds: HashSet<_> = seen.iter().flatten().map(String::as_str).collect();
    assert_eq!(kinds, HashSet::from(["alpha", "beta"]), "{seen:?}");
    // Round robin: an even spread, not merely both.
    let alphas = seen.iter().flatten().filter(|b| *b == "alpha").count();
    assert!((8..=12).contains(&alphas), "{alphas} of 20 to alpha");
    let metrics = stats_get(server.stats_addr().unwrap(), "/metrics", &[])
        .await
        .body;
    assert!(
        metrics.contains("tunnel_group_members{group=\"web\"} 2"),
        "{metrics}"
    );
    let stats = stats_json(server.stats_addr().unwrap()).await;
    let group = &stats["groups"][0];
    assert_eq!(group["publish_port"], port);
    assert!(group.get("group_key").is_none() && !stats.to_string().contains(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_check_withdraws_the_member_and_it_rejoins() {
    capture_logs();
    let server = server().await;
    let a = BannerService::start("alpha").await;
    let mut b = BannerService::start("beta").await;
    let port = free_port();
    let check = HealthCheck::new(HealthKind::Tcp, 1, 2);
    let _a = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let b_stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _b = client(
        client_config(&server)
            .with_id("host-b")
            .with_stats_bind(b_stats)
            .with_proxy(member("web-b", b.addr(), port).with_health_check(check)),
    )
    .await;
    let health = || async move { stats_json(b_stats).await["proxies"][0]["health"].clone() };
    eventually(Duration::from_secs(5), "both members serve", || async {
        banners(port, 4).await.iter().flatten().any(|b| b == "beta")
    })
    .await;

    b.stop();
    let stopped = Instant::now();
    // interval × max_failed + 1 s.
    eventually(Duration::from_secs(3), "beta withdrawn", || async {
        members(&server).await == ["web-a"]
    })
    .await;
    assert!(stopped.elapsed() <= Duration::from_secs(3));
    expect_logged(&["WARN", "proxy withdrawn", "2 health checks failed"]).await;
    assert_eq!(health().await, "withdrawn");
    let seen = banners(port, 10).await;
    assert!(
        seen.iter().all(|b| b.as_deref() == Some("alpha")),
        "{seen:?}"
    );

    b.restart().await;
    eventually(Duration::from_secs(3), "beta back in the group", || async {
        members(&server).await == ["web-a", "web-b"]
    })
    .await;
    expect_logged(&["INFO", "proxy rejoins"]).await;
    assert_eq!(health().await, "healthy");
    let seen = banners(port, 10).await;
    assert!(seen.iter().flatten().any(|b| b == "beta"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_keeps_the_port_open_until_the_last_leaves() {
    let server = server().await;
    let (a, b) = alpha_and_beta().await;
    let port = free_port();
    // The founder leaves first: the port is the group's, not its.
    let mut first = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let mut second = client_with(&server, "host-b", member("web-b", b.addr(), port)).await;
    first.shutdown();
    first.join().await.unwrap();
    eventually(Duration::from_secs(5), "web-a gone", || async {
        members(&server).await == ["web-b"]
    })
    .await;
    let seen = banners(port, 6).await;
    assert!(
        seen.iter().all(|b| b.as_deref() == Some("beta")),
        "{seen:?}"
    );
    second.shutdown();
    second.join().await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the port closes with the last member",
        || async { !is_listening(port).await },
    )
    .await;
    // Free for anyone again, inside a group or not.
    let _c = client_with(
        &server,
        "host-c",
        ProxyConfig::tcp("solo", &a.addr().to_string(), Some(port)),
    )
    .await;
    assert_eq!(read_banner(published(port)).await.as_deref(), Some("alpha"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_proxy_into_a_group_and_out_on_its_own_port() {
    let server = server().await;
    let (a, b) = alpha_and_beta().await;
    let port = free_port();
    let plain = ProxyConfig::tcp("web-a", &a.addr().to_string(), Some(port));
    let cfg = client_config(&server).with_id("host-a").with_proxy(plain);
    let first = client(cfg.clone()).await;
    let mut grouped = cfg.clone();
    grouped.proxies[0] = member("web-a", a.addr(), port);
    let summary = first.reload(grouped).await.unwrap();
    assert_eq!(summary.proxies_changed, ["web-a"]);
    // The port it held closes and opens again for the group, with no refusal.
    eventually(Duration::from_secs(5), "web-a founds the group", || async {
        members(&server).await == ["web-a"]
    })
    .await;
    let mut second = client_with(&server, "host-b", member("web-b", b.addr(), port)).await;
    let seen = banners(port, 6).await;
    let kinds: HashSet<_> = seen.iter().flatten().map(String::as_str).collect();
    assert_eq!(kinds, HashSet::from(["alpha", "beta"]), "{seen:?}");

    // And out again, as the last member: the group's port closes and opens for the proxy.
    second.shutdown();
    second.join().await.unwrap();
    eventually(Duration::from_secs(5), "web-b gone", || async {
        members(&server).await == ["web-a"]
    })
    .await;
    first.reload(cfg).await.unwrap();
    eventually(Duration::from_secs(5), "the group is gone", || async {
        members(&server).await.is_empty()
    })
    .await;
    eventually(
        Duration::from_secs(5),
        "web-a serves on its own",
        || async { read_banner(published(port)).await.as_deref() == Some("alpha") },
    )
    .await;
    assert_eq!(server.snapshot().proxies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_reaches_one_member_by_its_name() {
    let server = server().await;
    let (a, b) = alpha_and_beta().await;
    let port = free_port();
    let _a = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let _b = client_with(
        &server,
        "host-b",
        member("web-b", b.addr(), port).with_secret("visit"),
    )
    .await;
    let bind = visitor_bind();
    let visitor = VisitorConfig::new("to-b", "web-b", port, &bind).with_secret("visit");
    let _v = client(
        client_config(&server)
            .with_id("laptop")
            .with_visitor(visitor),
    )
    .await;
    let through: SocketAddr = bind.parse().unwrap();
    for _ in 0..4 {
        assert_eq!(read_banner(through).await.as_deref(), Some("beta"));
    }
}

/// The verdict of `proxy`'s registration: the error's field and message, or `None`.
async fn verdict(server: &ServerHandle, id: &str, proxy: ProxyConfig) -> Option<(String, String)> {
    let cfg = client_config(server).with_id(id).with_proxy(proxy);
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    c.shutdown();
    let error = reply.results[0].error.clone()?;
    Some((error.field, error.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_group_key_is_refused_with_the_reason() {
    let server = server().await;
    let (a, b) = alpha_and_beta().await;
    let port = free_port();
    let _a = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let intruder =
        ProxyConfig::tcp("web-x", &b.addr().to_string(), Some(port)).with_group("web", "guessed");
    let (field, message) = verdict(&server, "host-x", intruder).await.expect("refused");
    assert_eq!(field, "group_key", "{message}");
    assert!(message.contains("wrong group_key"), "{message}");
    assert!(!message.contains(KEY));
    let seen = banners(port, 6).await;
    assert!(
        seen.iter().all(|b| b.as_deref() == Some("alpha")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_outside_the_group_cannot_take_its_port_nor_the_group_its() {
    let server = server().await;
    let (a, b) = alpha_and_beta().await;
    let port = free_port();
    let _a = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let outsider = ProxyConfig::tcp("solo", &b.addr().to_string(), Some(port));
    let (field, message) = verdict(&server, "host-x", outsider).await.expect("refused");
    assert_eq!(field, "publish_port", "{message}");
    assert!(message.contains("load-balancing group"), "{message}");
    // And the other way: a group may not take a port a proxy outside it holds.
    let other = free_port();
    let _solo = client_with(
        &server,
        "host-s",
        ProxyConfig::tcp("solo", &b.addr().to_string(), Some(other)),
    )
    .await;
    let joiner =
        ProxyConfig::tcp("web-y", &a.addr().to_string(), Some(other)).with_group("other", KEY);
    let (field, message) = verdict(&server, "host-y", joiner).await.expect("refused");
    assert_eq!(field, "publish_port", "{message}");
    assert_eq!(read_banner(published(other)).await.as_deref(), Some("beta"));
    assert_eq!(read_banner(published(port)).await.as_deref(), Some("alpha"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_service_is_down_is_skipped_without_a_health_check() {
    let server = server().await;
    let a = BannerService::start("alpha").await;
    let mut dead = BannerService::start("never").await;
    dead.stop();
    let port = free_port();
    let _a = client_with(&server, "host-a", member("web-a", a.addr(), port)).await;
    let _b = client_with(&server, "host-b", member("web-b", dead.addr(), port)).await;
    assert_eq!(
        members(&server).await,
        ["web-a", "web-b"],
        "no check: it stays in"
    );
    let seen = banners(port, 10).await;
    assert!(
        seen.iter().all(|b| b.as_deref() == Some("alpha")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_group_spreads_flows_over_its_members() {
    let server = server().await;
    let (a, b) = (
        udp_tag_service("alpha").await,
        udp_tag_service("beta").await,
    );
    let port = free_udp_port();
    let udp = |name: &str, local: SocketAddr| {
        ProxyConfig::udp(name, &local.to_string(), Some(port)).with_group("dns", KEY)
    };
    // Both at once: whichever founds the group, the other joins it.
    let (_a, _b) = tokio::join!(
        client_with(&server, "host-a", udp("dns-a", a)),
        client_with(&server, "host-b", udp("dns-b", b)),
    );
    // Each source address is a flow, and each new flow goes to the next member.
    let mut seen = Vec::new();
    for _ in 0..6 {
        let sock = udp_socket().await;
        let answer = udp_ask(&sock, published(port), b"q", Duration::from_secs(5)).await;
        seen.push(String::from_utf8(answer.expect("an answer")).unwrap());
    }
    let kinds: HashSet<_> = seen.iter().map(String::as_str).collect();
    assert_eq!(kinds, HashSet::from(["alpha", "beta"]), "{seen:?}");
}

/// `GET /` on the virtual host with `Host: host`; the answer's body.
async fn vhost_get(addr: SocketAddr, host: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    text.split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_group_spreads_requests_for_one_domain() {
    let server = server_with(|c| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())).await;
    let (a, b) = (http_service("alpha").await, http_service("beta").await);
    let site = |name: &str, local: SocketAddr| {
        ProxyConfig::http(name, &local.to_string(), None)
            .with_http(|h| h.domains = vec!["app.test".into()])
            .with_group("web", KEY)
    };
    let _a = client_with(&server, "host-a", site("app-a", a)).await;
    let _b = client_with(&server, "host-b", site("app-b", b)).await;
    let vhost = server.vhost_addr().unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(vhost_get(vhost, "app.test").await);
    }
    let kinds: HashSet<_> = seen.iter().map(String::as_str).collect();
    assert_eq!(kinds, HashSet::from(["alpha", "beta"]), "{seen:?}");
    // A client's own proxy may not take the group's domain.
    let own = ProxyConfig::http("mine", &a.to_string(), None)
        .with_http(|h| h.domains = vec!["app.test".into()]);
    let (field, message) = verdict(&server, "host-c", own).await.expect("refused");
    assert_eq!(field, "domains", "{message}");
}

/// The banner a member's service answers to a TLS connection for `name` on the server's
/// HTTPS virtual host: the server routes by the ClientHello and splices it to a member,
/// whose (plain) banner service answers and closes.
async fn banner_by_sni(server: &ServerHandle, name: &str) -> Option<String> {
    let hello = fragmented_client_hello(name, 4096);
    let at = server.vhost_https_addr().unwrap();
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(at).await.ok()?;
        s.write_all(&hello).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned()).filter(|b| !b.is_empty())
    };
    tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_group_spreads_connections_for_one_name_by_sni() {
    let server = server_with(|c| c.with_vhost_https_bind("127.0.0.1:0".parse().unwrap())).await;
    let (a, b) = alpha_and_beta().await;
    let https = |name: &str, at: SocketAddr| {
        ProxyConfig::https(name, &at.to_string(), &["shop.example"]).with_group("web", KEY)
    };
    let _a = client_with(&server, "tls-a", https("shop-a", a.addr())).await;
    let _b = client_with(&server, "tls-b", https("shop-b", b.addr())).await;
    assert_eq!(members(&server).await, ["shop-a", "shop-b"]);
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(banner_by_sni(&server, "shop.example").await);
    }
    let kinds: HashSet<_> = seen.iter().flatten().map(String::as_str).collect();
    assert_eq!(kinds, HashSet::from(["alpha", "beta"]), "{seen:?}");
    // Another client cannot take the group's name over https without joining the group.
    let https_outsider = ProxyConfig::https("shop-c", &a.addr().to_string(), &["shop.example"]);
    let refused = verdict(&server, "tls-c", https_outsider).await;
    assert!(refused.is_some(), "an outsider took a group's https name");
    let wrong_key = ProxyConfig::https("shop-d", &a.addr().to_string(), &["shop.example"])
        .with_group("web", "not the key");
    let (field, message) = verdict(&server, "tls-d", wrong_key).await.unwrap();
    assert_eq!(field, "group_key", "{message}");
}
