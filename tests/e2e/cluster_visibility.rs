//! End to end: what an operator sees of a cluster (issue #16, "Visibility"): the peer link's
//! traffic per peer server, which server holds which client, in `/api/stats`, `/metrics` and
//! the dashboard; a lost peer link in the logs. Two in-process servers over a real etcd.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tunnel_client::{ProxyConfig, VisitorConfig};
use tunnel_server::peer::Located;
use tunnel_testkit::*;

use super::cluster::member;

const WAIT: Duration = Duration::from_secs(10);

/// `cluster.peers[]` entry for `server_id` in `stats`.
fn peer<'a>(stats: &'a Value, server_id: &str) -> &'a Value {
    stats["cluster"]["peers"]
        .as_array()
        .unwrap_or_else(|| panic!("no cluster.peers in {stats}"))
        .iter()
        .find(|p| p["server_id"] == server_id)
        .unwrap_or_else(|| panic!("no peer {server_id} in {stats}"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The value of the `/metrics` sample `series` (name and labels exactly as exposed).
fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `stats` of the server at `addr` satisfies `ok`; returns them.
async fn stats_until(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        last = stats_json(addr).await;
        if ok(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {last}");
}

/// A holds `guest` with a visitor of B's private proxy `db`; B holds `owner` with `db` and
/// `web` on `port`, which A forwards (`publish_mode = "all"`). Returns the visitor's bind.
async fn two_servers_and_a_hop(
    a: &tunnel_server::ServerHandle,
    b: &tunnel_server::ServerHandle,
    port: u16,
) -> (
    tunnel_client::ClientHandle,
    tunnel_client::ClientHandle,
    SocketAddr,
) {
    let echo = echo_service().await.to_string();
    let owner = client(
        client_config(b)
            .with_id("owner")
            .with_proxy(ProxyConfig::tcp("db", &echo, None).with_secret("s3cret"))
            .with_proxy(ProxyConfig::tcp("web", &echo, Some(port))),
    )
    .await;
    let bind = visitor_bind();
    let guest = client(
        client_config(a)
            .with_id("guest")
            .with_visitor(VisitorConfig::new("db-v", "db", 0, &bind).with_secret("s3cret")),
    )
    .await;
    let at: SocketAddr = bind.parse().unwrap();
    // A's cache follows etcd's watch: the first hop may come a moment after.
    eventually(WAIT, "the visitor on A reaches B's proxy", || async {
        serves_at(at, Duration::from_secs(2)).await
    })
    .await;
    eventually(WAIT, "A forwards B's published port", || async {
        serves_at(SocketAddr::new(loopback(1), port), Duration::from_secs(2)).await
    })
    .await;
    (owner, guest, at)
}

/// A visitor on A reaching a proxy on B and a user on A's copy of B's port: A counts both
/// streams and their bytes out to B, B counts them in from A, both place each client on its
/// server, `/metrics` has the series, and a refusal by B counts as one on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_streams_count_on_both_servers_and_each_client_is_placed_on_its_server() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let a = member(&etcd, "/vis/", "vis-a", 1, None).await;
    let b = member(&etcd, "/vis/", "vis-b", 2, None).await;
    let port = free_port();
    let (_owner, _guest, visit) = two_servers_and_a_hop(&a, &b, port).await;
    let (via_visitor, via_port) = (random_bytes(100_000, 1), random_bytes(200_000, 2));
    assert!(roundtrip(visit, &via_visitor).await == via_visitor);
    let published = SocketAddr::new(loopback(1), port);
    assert!(roundtrip(published, &via_port).await == via_port);
    let sent = (via_visitor.len() + via_port.len()) as u64;

    let on_a = stats_until(a.stats_addr().unwrap(), "A's bytes out to B", |s| {
        s["cluster"]["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["server_id"] == "vis-b" && p["bytes_in"].as_u64() >= Some(sent))
        })
    })
    .await;
    let to_b = peer(&on_a, "vis-b");
    assert_eq!(to_b["state"], "up", "{to_b}");
    assert!(n(&to_b["streams_out"]) >= 2, "{to_b}");
    assert!(n(&to_b["bytes_out"]) >= sent, "{to_b}");
    assert_eq!(
        n(&to_b["streams_in"]),
        0,
        "B forwarded nothing to A: {to_b}"
    );
    assert_eq!(n(&to_b["failures"]["dial_failed"]), 0, "{to_b}");

    let on_b = stats_until(b.stats_addr().unwrap(), "B's bytes in from A", |s| {
        s["cluster"]["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["server_id"] == "vis-a" && p["bytes_out"].as_u64() >= Some(sent))
        })
    })
    .await;
    let from_a = peer(&on_b, "vis-a");
    assert_eq!(from_a["state"], "up", "A's link to B counts on B: {from_a}");
    assert!(n(&from_a["streams_in"]) >= 2, "{from_a}");
    assert!(n(&from_a["bytes_in"]) >= sent, "{from_a}");
    assert_eq!(n(&from_a["streams_out"]), 0, "{from_a}");

    for stats in [&on_a, &on_b] {
        let c = &stats["cluster"];
        let placed: Vec<(String, String)> = c["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let s = |k: &str| p[k].as_str().unwrap().to_owned();
                (s("id"), s("server_id"))
            })
            .collect();
        let pair = |c: &str, s: &str| (c.to_owned(), s.to_owned());
        assert_eq!(
            placed,
            [pair("guest", "vis-a"), pair("owner", "vis-b")],
            "{c}"
        );
        assert_eq!(c["clients_truncated"], 0, "{c}");
        let held: Vec<(&str, u64)> = c["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["id"].as_str().unwrap(), n(&s["clients"])))
            .collect();
        assert_eq!(held, [("vis-a", 1), ("vis-b", 1)], "{c}");
    }

    let metrics = stats_get(a.stats_addr().unwrap(), "/metrics", &[])
        .await
        .body;
    let got = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert!(got("tunnel_peer_streams_total{peer=\"vis-b\",direction=\"out\"}") >= 2);
    assert!(got("tunnel_peer_bytes_total{peer=\"vis-b\",direction=\"out\"}") >= sent);
    assert!(got("tunnel_peer_bytes_total{peer=\"vis-b\",direction=\"in\"}") >= sent);
    assert_eq!(got("tunnel_peer_link_up{peer=\"vis-b\"}"), 1);
    assert_eq!(
        got("tunnel_peer_failures_total{peer=\"vis-b\",reason=\"refused\"}"),
        0
    );
    let metrics_b = stats_get(b.stats_addr().unwrap(), "/metrics", &[])
        .await
        .body;
    let in_b = sample(
        &metrics_b,
        "tunnel_peer_streams_total{peer=\"vis-a\",direction=\"in\"}",
    );
    assert!(in_b >= Some(2), "{metrics_b}");

    // A wrong secret: B refuses, A counts the refusal against B.
    let wrong = visitor_bind();
    let _intruder = client(
        client_config(&a)
            .with_id("intruder")
            .with_visitor(VisitorConfig::new("db-w", "db", 0, &wrong).with_secret("nope")),
    )
    .await;
    assert!(!serves_at(wrong.parse().unwrap(), Duration::from_secs(2)).await);
    let on_a = stats_until(a.stats_addr().unwrap(), "A counts B's refusal", |s| {
        s["cluster"]["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["server_id"] == "vis-b" && p["failures"]["refused"].as_u64() >= Some(1))
        })
    })
    .await;
    let to_b = peer(&on_a, "vis-b");
    assert_eq!(n(&to_b["failures"]["no_answer"]), 0, "{to_b}");
}

/// B stops: A's link to it ends, which A warns about once (not per stream), and shows down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_peer_link_is_warned_once_and_shows_down() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let a = member(&etcd, "/visdown/", "down-a", 1, None).await;
    let b = member(&etcd, "/visdown/", "down-b", 2, None).await;
    let port = free_port();
    let (_owner, _guest, visit) = two_servers_and_a_hop(&a, &b, port).await;
    for seed in 0..3 {
        let data = random_bytes(10_000, seed);
        assert!(roundtrip(visit, &data).await == data);
    }
    expect_logged(&["linked to peer", "peer=down-b"]).await;
    assert_eq!(logged_count(&["peer link down", "peer=down-b"]), 0);

    b.join().await;
    expect_logged(&["peer link down", "peer=down-b", "WARN"]).await;
    let on_a = stats_until(a.stats_addr().unwrap(), "A shows B's link down", |s| {
        s["cluster"]["peers"].as_array().is_some_and(|ps| {
            ps.iter()
                .any(|p| p["server_id"] == "down-b" && p["state"] == "down")
        })
    })
    .await;
    // B left the registry; its counts stay.
    assert!(n(&peer(&on_a, "down-b")["streams_out"]) >= 3, "{on_a}");
    // The visitor now fails on A (no owner): still one warning for the link.
    assert!(!serves_at(visit, Duration::from_secs(1)).await);
    assert_eq!(logged_count(&["peer link down", "peer=down-b"]), 1);
}

/// The dashboard of a cluster member: the servers table with each one's clients and the
/// peer traffic, and the client → server table, narrowed by the page's one filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_peer_traffic_and_which_server_holds_which_client() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let Some(browser) = Browser::start().await else {
        return;
    };
    let a = member(&etcd, "/visdash/", "dash-a", 1, None).await;
    let b = member(&etcd, "/visdash/", "dash-b", 2, None).await;
    let port = free_port();
    let (_owner, _guest, visit) = two_servers_and_a_hop(&a, &b, port).await;
    let data = random_bytes(50_000, 7);
    assert!(roundtrip(visit, &data).await == data);

    browser
        .goto(&format!("http://{}/", a.stats_addr().unwrap()))
        .await;
    let row = "#servers tbody tr[data-id=\"dash-b\"]";
    browser
        .wait_num(row, "data-streams-out", WAIT, |v| v >= 1)
        .await;
    browser
        .wait_num(row, "data-bytes-out", WAIT, |v| v >= data.len() as u64)
        .await;
    assert_eq!(
        browser.attr(row, "data-clients").await.as_deref(),
        Some("1")
    );
    assert_eq!(browser.attr(row, "data-link").await.as_deref(), Some("up"));
    let owner = browser
        .wait_for("#cluster-clients tbody tr[data-id=\"owner\"]", WAIT)
        .await;
    assert!(owner.text().await.unwrap().contains("dash-b"));
    let guest = "#cluster-clients tbody tr[data-id=\"guest\"]";
    assert!(browser.text(guest).await.unwrap().contains("dash-a"));

    browser.type_into("#filter", "dash-b").await;
    // Filtered rows stay in the table, hidden.
    browser
        .wait_gone(&format!("{guest}:not([hidden])"), WAIT)
        .await;
    assert!(
        browser
            .is_shown("#cluster-clients tbody tr[data-id=\"owner\"]")
            .await
    );
    assert_eq!(browser.console_errors().await, Vec::<String>::new());
    if let Some(dir) = std::env::var_os("DASHBOARD_SCREENSHOTS") {
        let path = std::path::Path::new(&dir).join("cluster-visibility.png");
        browser.screenshot(&path).await;
    }
    browser.close().await;
}

/// The failure reasons as `/metrics` shows them on the forwarding server, with static
/// registries: a stale entry (B answers "not here", A looks again and gets through) and an
/// owner whose server cannot be dialled (warned once, however many connections fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_registration_and_an_unreachable_peer_count_by_reason() {
    let a = cluster_server("why-a", CLUSTER_KEY).await;
    let b = cluster_server("why-b", CLUSTER_KEY).await;
    let echo = echo_service().await.to_string();
    let _owner = client(
        client_config(&b.server)
            .with_id("why-owner")
            .with_proxy(ProxyConfig::tcp("why-db", &echo, None).with_secret("why")),
    )
    .await;
    // A's cache still has the registration B replaced; the registry has the new one.
    a.locator
        .set_stale(b.owns("why-db", 0, 1, false), b.owns("why-db", 0, 2, false));
    b.locator.set(b.owns("why-db", 0, 2, true));
    let (_refusing, dead_port) = refusing_port();
    a.locator.set(Located {
        name: "why-gone".into(),
        publish_port: 0,
        server_id: "why-gone".into(),
        peer_addr: format!("127.0.0.1:{dead_port}"),
        epoch: 1,
        local: false,
        udp: false,
    });
    let (moved, gone) = (visitor_bind(), visitor_bind());
    let _guest = client(
        client_config(&a.server)
            .with_id("why-guest")
            .with_visitor(VisitorConfig::new("to-db", "why-db", 0, &moved).with_secret("why"))
            .with_visitor(VisitorConfig::new("to-gone", "why-gone", 0, &gone).with_secret("why")),
    )
    .await;
    let data = random_bytes(1000, 5);
    assert!(roundtrip(moved.parse().unwrap(), &data).await == data);
    for _ in 0..3 {
        expect_prompt_close(&gone, Duration::from_secs(5)).await;
    }

    let metrics = stats_get(a.server.stats_addr().unwrap(), "/metrics", &[])
        .await
        .body;
    let got = |series: &str| {
        sample(&metrics, series).unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
    };
    assert_eq!(
        got("tunnel_peer_failures_total{peer=\"why-b\",reason=\"not_here\"}"),
        1
    );
    assert_eq!(
        got("tunnel_peer_streams_total{peer=\"why-b\",direction=\"out\"}"),
        1
    );
    assert_eq!(
        got("tunnel_peer_failures_total{peer=\"why-gone\",reason=\"dial_failed\"}"),
        3
    );
    assert_eq!(got("tunnel_peer_link_up{peer=\"why-gone\"}"), 0);
    assert_eq!(got("tunnel_peer_link_up{peer=\"why-b\"}"), 1);
    assert_eq!(logged_count(&["peer link down", "peer=why-gone"]), 1);
}
