//! End to end: two servers of one cluster linked by the peer link, each with a static
//! registry; a visitor connected to server A reaches a proxy whose client is connected to
//! server B. Real TLS on loopback both for the clients and between the servers.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tunnel_client::{ClientConfig, ProxyConfig, VisitorConfig};
use tunnel_testkit::*;

const SECRET: &str = "peer-visitor-secret";

fn config_for(s: &ClusterServer) -> ClientConfig {
    client_config(&s.server)
}

fn through(bind: &str) -> SocketAddr {
    bind.parse().unwrap()
}

/// A and B, with proxy `name` (private, secret) of client `owner` connected to B, and both
/// registries placing it on B at `epoch`.
async fn two_servers_and_an_owner(
    tag: &str,
    name: &str,
    epoch: u64,
    proxy: impl FnOnce(ProxyConfig) -> ProxyConfig,
) -> (ClusterServer, ClusterServer, tunnel_client::ClientHandle) {
    let a = cluster_server(&format!("{tag}-a"), CLUSTER_KEY).await;
    let b = cluster_server(&format!("{tag}-b"), CLUSTER_KEY).await;
    let echo = echo_service().await.to_string();
    let owner = client(
        config_for(&b)
            .with_id(format!("{tag}-owner"))
            .with_proxy(proxy(
                ProxyConfig::tcp(name, &echo, None).with_secret(SECRET),
            )),
    )
    .await;
    a.locator.set(b.owns(name, 0, epoch, false));
    b.locator.set(b.owns(name, 0, epoch, true));
    (a, b, owner)
}

/// A visitor client on `a` for proxy `name`; returns it and its local bind.
async fn visitor_on(
    a: &ClusterServer,
    id: &str,
    name: &str,
    secret: &str,
) -> (tunnel_client::ClientHandle, String) {
    let bind = visitor_bind();
    let v =
        client(config_for(a).with_id(id).with_visitor(
            VisitorConfig::new(&format!("{id}-v"), name, 0, &bind).with_secret(secret),
        ))
        .await;
    (v, bind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_on_one_server_reaches_a_proxy_on_another_with_exact_bytes_and_half_close() {
    let (a, b, _owner) = two_servers_and_an_owner("pv", "pv-db", 3, |p| p).await;
    let (_v, bind) = visitor_on(&a, "pv-visitor", "pv-db", SECRET).await;
    // A burst of first connections shares one link: one dial, not one each.
    let burst: Vec<_> = (0..8u64)
        .map(|i| {
            let bind = bind.clone();
            tokio::spawn(async move {
                let data = random_bytes(10_000, 100 + i);
                roundtrip(through(&bind), &data).await == data
            })
        })
        .collect();
    for t in burst {
        assert!(
            t.await.unwrap(),
            "a connection of the burst got other bytes back"
        );
    }
    assert_eq!(logged_count(&["linked to peer", "peer=pv-b"]), 1);
    // roundtrip writes everything, half-closes, and reads to EOF: the echo service sees the
    // FIN only if it crossed both servers, and its own close comes back the same way.
    for (len, seed) in [(1, 1), (70_000, 2), (1 << 20, 3)] {
        let data = random_bytes(len, seed);
        let back = roundtrip(through(&bind), &data).await;
        assert!(back == data, "{len} bytes: echoed bytes differ");
    }
    expect_logged(&["linked to peer", "peer=pv-b"]).await;
    expect_logged(&["peer linked", "peer=pv-a"]).await;
    // Counted on the owner's server, where the proxy lives.
    let stats = stats_json(b.server.stats_addr().unwrap()).await.to_string();
    assert!(stats.contains("pv-db"), "{stats}");
    assert_eq!(a.locator.fresh_lookups(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_server_applies_the_visitor_rules_after_the_hop() {
    let (a, _b, _owner) = two_servers_and_an_owner("pd", "pd-db", 1, |p| p).await;
    let (_v, bind) = visitor_on(&a, "pd-visitor", "pd-db", "not-the-secret").await;
    expect_prompt_close(&bind, Duration::from_secs(5)).await;
    expect_logged(&["visitor refused: access denied", "visitor=pd-visitor"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_cluster_key_is_refused_both_ways() {
    let a = cluster_server("pk-a", "another-cluster-key-entirely").await;
    let b = cluster_server("pk-b", CLUSTER_KEY).await;
    let echo = echo_service().await.to_string();
    let _owner = client(
        config_for(&b)
            .with_id("pk-owner")
            .with_proxy(ProxyConfig::tcp("pk-db", &echo, None).with_secret(SECRET)),
    )
    .await;
    a.locator.set(b.owns("pk-db", 0, 1, false));
    b.locator.set(b.owns("pk-db", 0, 1, true));
    let (_v, bind) = visitor_on(&a, "pk-visitor", "pk-db", SECRET).await;
    expect_prompt_close(&bind, Duration::from_secs(5)).await;
    // The dialer notices first (the acceptor proves the key first) and sends no proof.
    expect_logged(&["visitor refused via peer", "cluster_key"]).await;
    // The other way round: B dials A.
    b.locator.set(a.owns("pk-other", 0, 1, false));
    let (_v2, bind2) = visitor_on(&b, "pk-visitor2", "pk-other", SECRET).await;
    expect_prompt_close(&bind2, Duration::from_secs(5)).await;
    assert!(logged_count(&["visitor refused via peer", "cluster_key"]) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_the_peer_port_is_refused() {
    let b = cluster_server("pc-b", CLUSTER_KEY).await;
    let cfg = ClientConfig::new(b.peer_addr())
        .with_auth_key(KEY)
        .with_fingerprint(b.server.fingerprint())
        .with_id("pc-client");
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(3), c.ready()).await;
    assert!(
        !matches!(ready, Ok(Ok(_))),
        "a client registered at the peer port"
    );
    assert!(!is_ready(&c));
    assert_eq!(b.server.snapshot().clients, 0);
    c.shutdown();
}

/// A server that dials another's client port (a wrong `peer_advertise`) fails at TLS: the
/// client port never offers the peer ALPN id, and the visitor hears why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_at_the_client_port_is_refused() {
    let a = cluster_server("pq-a", CLUSTER_KEY).await;
    let b = cluster_server("pq-b", CLUSTER_KEY).await;
    let mut wrong = b.owns("pq-db", 0, 1, false);
    wrong.peer_addr = b.server.local_addr().to_string();
    a.locator.set(wrong);
    let (_v, bind) = visitor_on(&a, "pq-visitor", "pq-db", SECRET).await;
    expect_prompt_close(&bind, Duration::from_secs(5)).await;
    expect_logged(&["visitor refused via peer", "cannot link to the peer server"]).await;
    assert_eq!(b.server.snapshot().clients, 0);
}

/// B, named as owner by A's registry but placing the proxy on C itself, answers NotHere and
/// never forwards the Forward on: one hop at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_is_never_forwarded_again() {
    let a = cluster_server("nf-a", CLUSTER_KEY).await;
    let b = cluster_server("nf-b", CLUSTER_KEY).await;
    let c = cluster_server("nf-c", CLUSTER_KEY).await;
    let echo = echo_service().await.to_string();
    let _owner = client(
        config_for(&c)
            .with_id("nf-owner")
            .with_proxy(ProxyConfig::tcp("nf-db", &echo, None).with_secret(SECRET)),
    )
    .await;
    a.locator.set(b.owns("nf-db", 0, 1, false));
    b.locator.set(c.owns("nf-db", 0, 1, false));
    c.locator.set(c.owns("nf-db", 0, 1, true));
    let (_v, bind) = visitor_on(&a, "nf-visitor", "nf-db", SECRET).await;
    expect_prompt_close(&bind, Duration::from_secs(5)).await;
    expect_logged(&["visitor refused via peer", "owner=nf-b"]).await;
    assert_eq!(
        a.locator.fresh_lookups(),
        1,
        "one fresh lookup after NotHere"
    );
    assert_eq!(
        logged_count(&["linked to peer", "peer=nf-c"]),
        0,
        "B dialled C"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_answers_not_here_and_the_visitor_gets_through_after_one_fresh_lookup() {
    let (a, b, _owner) = two_servers_and_an_owner("pn", "pn-db", 7, |p| p).await;
    // A's cache still names an older registration; the registry itself has the new one.
    a.locator
        .set_stale(b.owns("pn-db", 0, 6, false), b.owns("pn-db", 0, 7, false));
    let (_v, bind) = visitor_on(&a, "pn-visitor", "pn-db", SECRET).await;
    let data = random_bytes(10_000, 5);
    assert!(roundtrip(through(&bind), &data).await == data);
    assert_eq!(a.locator.fresh_lookups(), 1);
    // Still stale, fresh still wrong: one retry only, then the visitor hears why.
    a.locator
        .set_stale(b.owns("pn-db", 0, 5, false), b.owns("pn-db", 0, 4, false));
    expect_prompt_close(&bind, Duration::from_secs(5)).await;
    assert_eq!(a.locator.fresh_lookups(), 2);
}

/// `publish_mode = "all"`: the published port of a proxy on B answers on A too, and the PROXY
/// v2 header B's client sends to its service names the user's real address, not the peer link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_port_answers_on_a_non_owner_with_the_users_address_in_proxy_v2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = cluster_server_on("pp-a", CLUSTER_KEY, loopback(2)).await;
    let b = cluster_server("pp-b", CLUSTER_KEY).await;
    let echo = echo_service().await.to_string();
    let port = free_port();
    let mut proxy = ProxyConfig::tcp("pp-web", &echo, Some(port));
    proxy.proxy_protocol = Some(tunnel_proto::proxy_protocol::Version::V2);
    let plain = free_port();
    let _owner = client(
        config_for(&b)
            .with_id("pp-owner")
            .with_proxy(proxy)
            .with_proxy(ProxyConfig::tcp("pp-plain", &echo, Some(plain))),
    )
    .await;
    for (name, p) in [("pp-web", port), ("pp-plain", plain)] {
        b.locator.set(b.owns(name, p, 1, true));
        a.locator.set(b.owns(name, p, 1, false));
    }
    let on_a = SocketAddr::new(loopback(2), port);
    eventually(Duration::from_secs(5), "A forwards the port", || async {
        tokio::net::TcpStream::connect(on_a).await.is_ok()
    })
    .await;

    let mut s = connect_from(loopback(7), on_a).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.unwrap();
    let sig = tunnel_proto::proxy_protocol::V2_SIGNATURE;
    assert!(back.starts_with(&sig), "{back:?}");
    assert!(back.ends_with(b"hello"), "{back:?}");
    // v2 PROXY over TCP/IPv4: source address, destination address, source port, destination port.
    assert_eq!(
        &back[16..20],
        &[127, 0, 0, 7],
        "source: the user, not the peer link"
    );
    assert_eq!(
        &back[20..24],
        &[127, 0, 0, 2],
        "destination: the address the user reached"
    );
    assert_eq!(u16::from_be_bytes([back[26], back[27]]), port);

    // Exact bytes both ways through the non-owner, with half-close.
    let data = random_bytes(1 << 20, 11);
    let through_a = SocketAddr::new(loopback(2), plain);
    eventually(
        Duration::from_secs(5),
        "A forwards the plain port",
        || async { tokio::net::TcpStream::connect(through_a).await.is_ok() },
    )
    .await;
    assert!(roundtrip(through_a, &data).await == data);

    // The registry drops the port: A stops answering it.
    a.locator.remove("pp-web", port);
    eventually(Duration::from_secs(5), "A closes the port", || async {
        tokio::net::TcpStream::connect(on_a).await.is_err()
    })
    .await;
}

/// Not a check: prints the cost of the hop (run with `--ignored --nocapture`; numbers from a
/// debug build only compare the two paths with each other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn measure_forwarded_vs_local() {
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b, _owner) = two_servers_and_an_owner("pm", "pm-db", 1, |p| p).await;
    let (_va, via_a) = visitor_on(&a, "pm-visitor-a", "pm-db", SECRET).await;
    let (_vb, via_b) = visitor_on(&b, "pm-visitor-b", "pm-db", SECRET).await;
    // Warm the peer link.
    assert!(roundtrip(through(&via_a), b"x").await == b"x");
    for (label, bind) in [("local", &via_b), ("forwarded", &via_a)] {
        let mut s = tokio::net::TcpStream::connect(through(bind)).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut rtts = Vec::new();
        let mut one = [0u8; 1];
        for _ in 0..500 {
            let t = Instant::now();
            s.write_all(b"x").await.unwrap();
            s.read_exact(&mut one).await.unwrap();
            rtts.push(t.elapsed());
        }
        rtts.sort();
        let mut firsts = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            let mut c = tokio::net::TcpStream::connect(through(bind)).await.unwrap();
            c.write_all(b"x").await.unwrap();
            c.read_exact(&mut one).await.unwrap();
            firsts.push(t.elapsed());
        }
        firsts.sort();
        let data = random_bytes(64 << 20, 1);
        let t = Instant::now();
        let back = roundtrip(through(bind), &data).await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(back.len(), data.len());
        println!(
            "{label}: 1-byte echo RTT median {:?} p99 {:?}; connect→first byte median {:?}; \
             64 MiB echoed in {secs:.2}s = {:.0} MiB/s each way",
            rtts[rtts.len() / 2],
            rtts[rtts.len() * 99 / 100],
            firsts[firsts.len() / 2],
            64.0 / secs
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_key_equal_to_the_auth_key_is_refused_at_start() {
    let cfg = tunnel_server::ServerConfig::default()
        .with_bind("127.0.0.1:0".parse().unwrap())
        .with_stats_bind(None)
        .with_auth_key(KEY);
    let peer = tunnel_server::peer::PeerConfig {
        peer_bind: "127.0.0.1:0".parse().unwrap(),
        peer_advertise: None,
        server_id: "pe-a".into(),
        cluster_key: KEY.into(),
        trust: None,
    };
    let locator = std::sync::Arc::new(tunnel_server::peer::StaticLocator::new());
    let err = tunnel_server::start_clustered(cfg, peer, locator)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cluster.cluster_key"), "{err}");
}
