//! End to end: `allow_ips` / `deny_ips` (per proxy and server-wide, on published ports and the
//! virtual host) and `bandwidth_limit`, measured with iperf3 through the tunnel.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::ProxyConfig;
use tunnel_testkit::*;

const MIB: f64 = 1048576.0;

/// The value of the sample `series` (name and labels as printed) on the stats endpoint.
async fn metric(stats: SocketAddr, series: &str) -> Option<f64> {
    let page = stats_get(stats, "/metrics", &[]).await.body;
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn a_denied_source_is_reset_on_a_published_port_while_others_are_served() {
    let server = server().await;
    let echo = echo_service().await;
    let port = free_port();
    let proxy = ProxyConfig::tcp("echo", &echo.to_string(), Some(port))
        .with_deny_ips(&["127.0.0.2", "2001:db8::/32"]);
    let _client = client(client_config(&server).with_proxy(proxy)).await;
    let to = published(port);

    assert!(
        served_from(loopback(1), to).await,
        "127.0.0.1 is not denied"
    );
    assert!(!served_from(loopback(2), to).await, "127.0.0.2 is denied");
    assert!(!served_from(loopback(2), to).await, "and stays denied");
    assert!(
        served_from(loopback(3), to).await,
        "127.0.0.3 is not denied"
    );

    let stats = server.stats_addr().unwrap();
    let denied = metric(stats, "tunnel_denied_connections_total{proxy=\"echo\"}").await;
    assert_eq!(denied, Some(2.0));
    let proxy = &stats_json(stats).await["clients"][0]["proxies"][0];
    assert_eq!(proxy["denied_connections"], 2);
    // Two refusals from one source, one line: a denied host can retry at will.
    expect_logged(&["user connection denied", "127.0.0.2", "proxy echo"]).await;
    assert_eq!(logged_count(&["user connection denied", "127.0.0.2"]), 1);
}

#[tokio::test]
async fn an_allow_list_lets_only_its_networks_in() {
    let server = server().await;
    let echo = echo_service().await;
    let port = free_port();
    let proxy = ProxyConfig::tcp("office", &echo.to_string(), Some(port))
        .with_allow_ips(&["127.0.0.4/31", "::1"])
        .with_deny_ips(&["127.0.0.5"]);
    let _client = client(client_config(&server).with_proxy(proxy)).await;
    let to = published(port);

    assert!(served_from(loopback(4), to).await, "127.0.0.4 is allowed");
    assert!(!served_from(loopback(5), to).await, "deny wins over allow");
    assert!(
        !served_from(loopback(1), to).await,
        "127.0.0.1 is not allowed"
    );
}

#[tokio::test]
async fn a_server_wide_deny_closes_the_vhost_and_every_published_port() {
    let server = server_with(|c| {
        c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())
            .with_deny_ips(&["127.0.0.6"])
    })
    .await;
    let echo = echo_service().await;
    let port = free_port();
    let proxy = ProxyConfig::tcp("echo", &echo.to_string(), Some(port));
    let _client = client(client_config(&server).with_proxy(proxy)).await;

    assert!(served_from(loopback(1), published(port)).await);
    assert!(!served_from(loopback(6), published(port)).await);

    // The virtual host answers anyone else (a 404 for an unknown host) and not 127.0.0.6.
    let vhost = server.vhost_addr().unwrap();
    let ask = |from: IpAddr| async move {
        let mut s = connect_from(from, vhost).await.unwrap();
        let _ = s
            .write_all(b"GET / HTTP/1.1\r\nHost: nobody.test\r\nConnection: close\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer));
        let _ = read.await.expect("the vhost neither answered nor closed");
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(ask(loopback(1)).await.starts_with("HTTP/1.1 404"));
    assert_eq!(ask(loopback(6)).await, "", "a denied source gets no answer");

    let stats = server.stats_addr().unwrap();
    let denied = metric(stats, "tunnel_server_denied_connections_total").await;
    assert_eq!(denied, Some(2.0));
    expect_logged(&["user connection denied", "127.0.0.6", "the server's"]).await;
}

#[tokio::test]
async fn bad_networks_are_refused_before_connecting_naming_the_field() {
    let server = server().await;
    let echo = echo_service().await;
    let mut proxy = ProxyConfig::tcp("echo", &echo.to_string(), Some(free_port()));
    proxy.deny_ips = vec!["10.0.0.0/33".into()];
    proxy.allow_ips = vec!["10.1.2.3/8".into()];
    let cfg = client_config(&server).with_proxy(proxy);
    let problems = cfg.problems();
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["proxies[0].allow_ips"],
        "the first bad list is named"
    );
    assert!(
        problems[0].message.contains("\"10.1.2.3/8\""),
        "{problems:?}"
    );
    assert!(tunnel_client::start(cfg).await.is_err());
}

#[tokio::test]
async fn the_server_cap_lowers_a_proxy_limit_and_stats_show_it() {
    let cap: tunnel_proto::Bandwidth = "2MiB".parse().unwrap();
    let server = server_with(|c| c.with_bandwidth_limit(cap)).await;
    let echo = echo_service().await;
    let asks_more = ProxyConfig::tcp("more", &echo.to_string(), Some(free_port()))
        .with_bandwidth_limit("10MiB");
    let asks_less = ProxyConfig::tcp("less", &echo.to_string(), Some(free_port()))
        .with_bandwidth_limit("512KiB");
    let asks_none = ProxyConfig::tcp("none", &echo.to_string(), Some(free_port()));
    let cfg = client_config(&server)
        .with_proxy(asks_more)
        .with_proxy(asks_less)
        .with_proxy(asks_none);
    let _client = client(cfg).await;
    let stats = stats_json(server.stats_addr().unwrap()).await;
    let limit_of = |name: &str| {
        let proxies = stats["clients"][0]["proxies"].as_array().unwrap();
        let p = proxies.iter().find(|p| p["name"] == name).unwrap();
        p["bandwidth_limit"].as_str().unwrap().to_owned()
    };
    assert_eq!(limit_of("more"), "2MiB");
    assert_eq!(limit_of("less"), "512KiB");
    assert_eq!(limit_of("none"), "2MiB");
}

/// A client with a limited proxy (`slow`, `limit`) and an unlimited one (`fast`), each in
/// front of its own iperf3 server. Returns the server, client and both published addresses.
async fn two_iperf_proxies(
    limit: &str,
) -> (
    tunnel_server::ServerHandle,
    tunnel_client::ClientHandle,
    [(Iperf3, SocketAddr); 2],
) {
    let server = server().await;
    let (slow, fast) = (Iperf3::start().await, Iperf3::start().await);
    let (slow_port, fast_port) = (free_port(), free_port());
    let cfg = client_config(&server)
        .with_proxy(
            ProxyConfig::tcp("slow", &slow.addr.to_string(), Some(slow_port))
                .with_bandwidth_limit(limit),
        )
        .with_proxy(ProxyConfig::tcp(
            "fast",
            &fast.addr.to_string(),
            Some(fast_port),
        ));
    let client = client(cfg).await;
    (
        server,
        client,
        [(slow, published(slow_port)), (fast, published(fast_port))],
    )
}

fn within_ten_percent(rate: f64, limit: f64) -> bool {
    (rate - limit).abs() <= limit * 0.10
}

#[tokio::test]
async fn iperf3_through_a_limited_proxy_runs_at_the_limit_each_way_and_others_do_not_slow() {
    if !need("iperf3") {
        return;
    }
    for limit_mib in [10.0, 50.0] {
        let (_server, _client, [(_s, slow), (_f, fast)]) =
            two_iperf_proxies(&format!("{limit_mib}MiB")).await;
        let limit = limit_mib * MIB;
        let fast_alone = iperf3_rate(fast, 3, false).await;
        // Both at once: the limited one at its limit, the other as fast as alone.
        let (up, fast_busy) =
            tokio::join!(iperf3_rate(slow, 5, false), iperf3_rate(fast, 5, false));
        let down = iperf3_rate(slow, 5, true).await;
        eprintln!(
            "limit {limit_mib} MiB/s: up {:.2} MiB/s, down {:.2} MiB/s; unlimited proxy alone \
             {:.1} MiB/s, beside the limited one {:.1} MiB/s",
            up / MIB,
            down / MIB,
            fast_alone / MIB,
            fast_busy / MIB,
        );
        assert!(within_ten_percent(up, limit), "up {} MiB/s", up / MIB);
        assert!(within_ten_percent(down, limit), "down {} MiB/s", down / MIB);
        // Unlimited means not held to the other's limit: on a shared 2-core machine its
        // absolute rate varies, so only that much is asserted.
        assert!(
            fast_busy > 1.5 * limit,
            "the unlimited proxy ran at {} MiB/s beside the limited one",
            fast_busy / MIB
        );
    }
}

/// One byte there and back on a fresh connection to `to`.
async fn echo_rtt(to: SocketAddr) -> Duration {
    let mut s = TcpStream::connect(to).await.unwrap();
    let start = Instant::now();
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    start.elapsed()
}

#[tokio::test]
async fn a_limited_proxy_answers_a_small_request_at_once_when_idle() {
    let server = server().await;
    let echo = echo_service().await;
    let port = free_port();
    let proxy =
        ProxyConfig::tcp("echo", &echo.to_string(), Some(port)).with_bandwidth_limit("1MiB");
    let _client = client(client_config(&server).with_proxy(proxy)).await;
    let to = published(port);

    // 3 MiB each way through a 1 MiB/s limit: some 3 seconds, however fast the machine.
    let start = Instant::now();
    let data = random_bytes(3 << 20, 3);
    let back = roundtrip(to, &data).await;
    let took = start.elapsed();
    assert!(back == data, "echoed bytes differ");
    assert!(
        (2.4..4.5).contains(&took.as_secs_f64()),
        "3 MiB at 1 MiB/s took {took:?}"
    );
    // Idle again: a one-byte request is not queued behind anything.
    let mut rtts = Vec::new();
    for _ in 0..5 {
        rtts.push(echo_rtt(to).await);
    }
    rtts.sort();
    assert!(rtts[2] < Duration::from_millis(50), "echo RTTs {rtts:?}");
}

#[tokio::test]
async fn a_client_scope_limit_is_shared_by_all_its_proxies() {
    let pki = Pki::new("limits-scope");
    let key = "alpha's own key 0123456789";
    let clients =
        format!("[[clients]]\nid = \"alpha\"\nkey = \"{key}\"\nbandwidth_limit = \"1MiB\"\n");
    let file = pki.write("clients.toml", &clients);
    let server = server_with(|c| c.with_clients_file(file)).await;
    let echo = echo_service().await;
    let (a, b) = (free_port(), free_port());
    let cfg = client_config(&server)
        .with_id("alpha")
        .with_auth_key(key)
        .with_proxy(ProxyConfig::tcp("a", &echo.to_string(), Some(a)))
        .with_proxy(ProxyConfig::tcp("b", &echo.to_string(), Some(b)));
    let _client = client(cfg).await;

    // 1.5 MiB each way through each proxy: 3 MiB per direction against one 1 MiB/s limit.
    let data = random_bytes(3 << 19, 5);
    let took = both_echo(a, b, &data).await;
    assert!(
        (2.4..4.5).contains(&took.as_secs_f64()),
        "3 MiB at a shared 1 MiB/s took {took:?}"
    );
    let stats = stats_json(server.stats_addr().unwrap()).await;
    let p = &stats["clients"][0]["proxies"][0];
    assert_eq!(p["client_bandwidth_limit"], "1MiB");
    assert!(p.get("bandwidth_limit").is_none(), "{p}");

    // A reloaded clients file changes the limit of the connected client at once.
    let raised = clients.replace("\"1MiB\"", "\"4MiB\"");
    std::fs::write(pki.dir.join("clients.toml"), raised).unwrap();
    server.reload_clients().unwrap();
    let took = both_echo(a, b, &data).await;
    assert!(
        (0.5..1.3).contains(&took.as_secs_f64()),
        "3 MiB at a shared 4 MiB/s took {took:?}"
    );
    let stats = stats_json(server.stats_addr().unwrap()).await;
    assert_eq!(
        stats["clients"][0]["proxies"][0]["client_bandwidth_limit"],
        "4MiB"
    );
}

/// `data` echoed through published ports `a` and `b` at once, exactly; how long it took.
async fn both_echo(a: u16, b: u16, data: &[u8]) -> Duration {
    let start = Instant::now();
    let (back_a, back_b) =
        tokio::join!(roundtrip(published(a), data), roundtrip(published(b), data));
    assert!(back_a == data && back_b == data, "echoed bytes differ");
    start.elapsed()
}

/// `curl` to the virtual host with `Host: host`: `args` before the URL; how long it took and
/// what it printed.
async fn timed_vhost(
    vhost: SocketAddr,
    host: &str,
    path: &str,
    args: &[&str],
) -> (Duration, String) {
    let host = format!("Host: {host}");
    let url = format!("http://{vhost}{path}");
    let mut all = vec!["--max-time", "60", "-H", &host, "-H", "Expect:"];
    all.extend_from_slice(args);
    all.push(&url);
    let start = Instant::now();
    let out = curl_ok(&all).await;
    (start.elapsed(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_http_bodies_are_held_to_the_proxy_limit_each_way_and_others_are_not() {
    if !need("curl") {
        return;
    }
    let server = server_with(|c| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())).await;
    let svc = http1_service().await;
    let routed = |name: &str| {
        ProxyConfig::http(name, &svc.addr.to_string(), None)
            .with_http(|h| h.domains = vec![format!("{name}.test")])
    };
    let _client = client(
        client_config(&server)
            .with_proxy(routed("limited").with_bandwidth_limit("1MiB"))
            .with_proxy(routed("free")),
    )
    .await;
    let vhost = server.vhost_addr().unwrap();
    const SIZE: usize = 3 << 20;
    let size = SIZE.to_string();
    let down = format!("/bytes/{SIZE}");
    let to_null = ["-o", "/dev/null", "-w", "%{size_download}"];

    // 3 MiB at 1 MiB/s: about 2.9 s (the first 100 ms of burst are free).
    let (took, got) = timed_vhost(vhost, "limited.test", &down, &to_null).await;
    assert_eq!(got, size);
    let rate = SIZE as f64 / MIB / took.as_secs_f64();
    eprintln!("vhost download at 1 MiB/s: {took:?}, {rate:.2} MiB/s");
    assert!(
        (0.8..1.2).contains(&rate),
        "download: {rate:.2} MiB/s in {took:?}"
    );

    let dir = std::env::temp_dir().join(format!("tt-vhost-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("up");
    std::fs::write(&file, random_bytes(SIZE, 3)).unwrap();
    let body = format!("@{}", file.display());
    let (took, got) = timed_vhost(vhost, "limited.test", "/sink", &["--data-binary", &body]).await;
    assert_eq!(got, size);
    let rate = SIZE as f64 / MIB / took.as_secs_f64();
    eprintln!("vhost upload at 1 MiB/s: {took:?}, {rate:.2} MiB/s");
    assert!(
        (0.8..1.2).contains(&rate),
        "upload: {rate:.2} MiB/s in {took:?}"
    );

    // The same both ways through a proxy without a limit: well under a second.
    let (took, got) = timed_vhost(vhost, "free.test", &down, &to_null).await;
    assert_eq!(got, size);
    assert!(
        took < Duration::from_secs(1),
        "unlimited download took {took:?}"
    );
    let (took, got) = timed_vhost(vhost, "free.test", "/sink", &["--data-binary", &body]).await;
    assert_eq!(got, size);
    assert!(
        took < Duration::from_secs(1),
        "unlimited upload took {took:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_server_cap_slows_open_connections_and_a_lower_proxy_cap_withdraws_the_last() {
    let eight = "8MiB".parse().unwrap();
    let server = server_with(|c| c.with_bandwidth_limit(eight)).await;
    let echo = echo_service().await;
    let (a, b) = (free_port(), free_port());
    let _client = client(
        client_config(&server)
            .with_proxy(ProxyConfig::tcp("a", &echo.to_string(), Some(a)))
            .with_proxy(ProxyConfig::tcp("b", &echo.to_string(), Some(b))),
    )
    .await;
    // Open before the reload, and kept open across it.
    let mut open = TcpStream::connect(published(a)).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    open.read_exact(&mut four).await.unwrap();

    let report = server
        .reload(
            server_config()
                .with_bandwidth_limit("1MiB".parse().unwrap())
                .with_max_proxies_per_client(1),
        )
        .unwrap();
    assert_eq!(
        report.changed,
        ["bandwidth_limit", "max_proxies_per_client"]
    );
    assert!(report.needs_restart.is_empty(), "{report:?}");
    assert_eq!(report.withdrawn.len(), 1, "{report:?}");
    assert!(report.withdrawn[0].ends_with("/b"), "{report:?}");
    eventually(Duration::from_secs(1), "proxy b withdrawn", || async {
        !is_listening(b).await
    })
    .await;

    // 2 MiB each way at 1 MiB/s over the connection opened at 8 MiB/s: about 2 s.
    let data = random_bytes(2 << 20, 9);
    let (mut r, mut w) = open.into_split();
    let start = Instant::now();
    let payload = data.clone();
    let writer = tokio::spawn(async move { w.write_all(&payload).await.unwrap() });
    let mut back = vec![0u8; data.len()];
    r.read_exact(&mut back).await.unwrap();
    writer.await.unwrap();
    let took = start.elapsed();
    assert!(back == data, "echoed bytes differ");
    assert!(
        (1.5..2.8).contains(&took.as_secs_f64()),
        "2 MiB at a reloaded 1 MiB/s took {took:?}"
    );
    let stats = stats_json(server.stats_addr().unwrap()).await;
    assert_eq!(stats["clients"][0]["proxies"][0]["bandwidth_limit"], "1MiB");
    expect_logged(&["proxy withdrawn", "max_proxies_per_client"]).await;
}

/// One whole HTTP/1.1 answer with a Content-Length from `s`; its status line.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-answer");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text.lines().next().unwrap().to_owned();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_denying_a_network_ends_its_open_vhost_connections_and_no_others() {
    let vhost_bind = "127.0.0.1:0".parse().unwrap();
    let server = server_with(|c| c.with_vhost_http_bind(vhost_bind)).await;
    let vhost = server.vhost_addr().unwrap();
    const ASK: &[u8] = b"GET / HTTP/1.1\r\nHost: nobody.test\r\n\r\n";
    // A keep-alive connection with one request answered (404: no such host).
    let keep_alive = |from: IpAddr| async move {
        let mut s = connect_from(from, vhost).await.unwrap();
        s.write_all(ASK).await.unwrap();
        assert!(read_answer(&mut s).await.starts_with("HTTP/1.1 404"));
        s
    };
    let mut denied = keep_alive(loopback(8)).await;
    let mut other = keep_alive(loopback(1)).await;

    let report = server
        .reload(
            server_config()
                .with_vhost_http_bind(vhost_bind)
                .with_deny_ips(&["127.0.0.8"]),
        )
        .unwrap();
    assert_eq!(report.changed, ["deny_ips"]);
    closed_within(
        &mut denied,
        Duration::from_secs(1),
        "the denied vhost connection",
    )
    .await;
    other.write_all(ASK).await.unwrap();
    let answer = read_answer(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}
