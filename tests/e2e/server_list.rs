//! End to end: a client with several servers (`server_addr` as a list). Servers that are one
//! service to the client share the auth key and a certificate (the [`Pki`]'s, pinned); dead
//! entries are loopback ports that refuse connections.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig};
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

const WAIT: Duration = Duration::from_secs(10);

/// A server presenting `pki`'s certificate, so that every such server is the same service
/// to a client pinning it.
async fn member(pki: &Pki) -> ServerHandle {
    server_with(|c| {
        c.with_tls_files(&pki.cert, &pki.key)
            .with_shutdown_grace(Duration::ZERO)
    })
    .await
}

/// A client config for these servers, pinning `pki`'s certificate.
fn list_config(pki: &Pki, addrs: &[String]) -> ClientConfig {
    ClientConfig::new("unused:1")
        .with_server_addrs(addrs.iter().cloned())
        .with_auth_key(KEY)
        .with_fingerprint(pki.fingerprint.parse().unwrap())
}

/// A loopback address that refuses connections while the returned socket lives.
fn dead_entry() -> (tokio::net::TcpSocket, String) {
    let (socket, port) = refusing_port();
    (socket, format!("127.0.0.1:{port}"))
}

/// The `server` field of the client's `/api/stats`.
async fn stats_server(stats: SocketAddr) -> Option<String> {
    stats_json(stats).await["server"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_entry_and_a_live_server_connect_and_serve() {
    let pki = Pki::new("list-dead-live");
    let live = member(&pki).await;
    let (_dead, dead) = dead_entry();
    let echo = echo_service().await;
    let port = free_port();
    let c = client(
        list_config(&pki, &[dead, live.local_addr().to_string()])
            .with_id("list-dead-live")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    assert!(serves(port).await);
    assert_eq!(live.snapshot().clients, 1);
    drop(c);
}

/// Of two live servers, the client uses one, and its extra connections join its session
/// there: none goes to the other server (which would refuse it as an unknown session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_connections_go_to_the_server_of_their_session() {
    let pki = Pki::new("list-lanes");
    let a = member(&pki).await;
    let b = member(&pki).await;
    let addrs = [a.local_addr().to_string(), b.local_addr().to_string()];
    let echo = echo_service().await;
    let port = free_port();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _c = client(
        list_config(&pki, &addrs)
            .with_id("list-lanes")
            .with_connections(3)
            .with_stats_bind(stats)
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    let on = stats_server(stats).await.unwrap();
    let (used, other) = if on == addrs[0] { (&a, &b) } else { (&b, &a) };
    assert!(addrs.contains(&on), "{on}");
    eventually(
        WAIT,
        "three connections on the session's server",
        || async {
            let all = stats_json(used.stats_addr().unwrap()).await;
            all["clients"][0]["streams_per_connection"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        },
    )
    .await;
    assert_eq!((used.snapshot().clients, other.snapshot().clients), (1, 0));
    assert!(serves(port).await);
}

/// Server A of two dies: the client moves to B, B publishes the proxy's port, and it serves
/// again; the client's stats name B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_server_dies_the_client_moves_to_the_other_and_serves_again() {
    let pki = Pki::new("list-failover");
    let first = member(&pki).await;
    let second = member(&pki).await;
    let addrs = [
        first.local_addr().to_string(),
        second.local_addr().to_string(),
    ];
    let echo = echo_service().await;
    let port = free_port();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _c = client(
        list_config(&pki, &addrs)
            .with_id("list-failover")
            .with_stats_bind(stats)
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    assert!(serves(port).await);
    let on = stats_server(stats).await.unwrap();
    let (dying, survivor, survivor_addr) = if on == addrs[0] {
        (first, second, &addrs[1])
    } else {
        (second, first, &addrs[0])
    };
    assert_eq!(survivor.snapshot().clients, 0);

    let killed = Instant::now();
    dying.abort();
    dying.join().await;
    eventually(
        WAIT,
        "the proxy served through the other server",
        || async {
            survivor.snapshot().proxies == 1 && serves_within(port, Duration::from_secs(2)).await
        },
    )
    .await;
    let took = killed.elapsed();
    println!("failover to the other server took {} ms", took.as_millis());
    assert_eq!(
        stats_server(stats).await.as_deref(),
        Some(survivor_addr.as_str())
    );
    assert!(
        logged(&["connected to", survivor_addr]),
        "the session's server is logged"
    );
    // The first redial waits one backoff step (~100 ms); the dead server is tried last.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// The binaries: two server processes, and a client process whose file lists both. kill -9
/// of the server it is on (the kernel closes its sockets, as in a crash): it serves through
/// the other one, which publishes the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_its_server_process_moves_the_client_process_to_the_other() {
    let pki = Pki::new("list-kill9");
    let ports = [free_port(), free_port()];
    let mut servers = [
        pki.server("a", ports[0], "").await,
        pki.server("b", ports[1], "").await,
    ];
    let echo = echo_service().await;
    let port = free_port();
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = pki.write(
        "client.toml",
        &format!(
            "server_addr = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nauth_key = \"{KEY}\"\n\
             server_fingerprint = \"{}\"\nid = \"list-kill9\"\nstats_bind = \"{stats}\"\n{}",
            ports[0],
            ports[1],
            pki.fingerprint,
            proxy_toml("echo", echo, Some(port)),
        ),
    );
    let c = Proc::spawn(bins::client(), &cfg, pki.dir.join("client.log"));
    eventually(WAIT, "the proxy serves", || {
        serves_within(port, Duration::from_secs(2))
    })
    .await;
    let on = stats_server(stats).await.unwrap();
    let dying = usize::from(on != format!("127.0.0.1:{}", ports[0]));
    let survivor = format!("127.0.0.1:{}", ports[1 - dying]);

    let killed = Instant::now();
    servers[dying].kill9();
    eventually(
        WAIT,
        "the proxy served through the other server",
        || async {
            stats_server(stats).await.as_deref() == Some(survivor.as_str())
                && serves_within(port, Duration::from_secs(2)).await
        },
    )
    .await;
    println!(
        "failover after kill -9 took {} ms",
        killed.elapsed().as_millis()
    );
    let log = c.log();
    assert!(
        log.contains(&format!("connected to {survivor}")) && log.contains("WARN"),
        "{log}"
    );
    no_panic(&c);
}

/// Six dead entries and one live server: the dead ones cost their refused connects, not a
/// backoff each (which would add up to seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_entries_do_not_delay_the_first_connection() {
    let pki = Pki::new("list-fast");
    let live = member(&pki).await;
    let dead: Vec<_> = (0..6).map(|_| dead_entry()).collect();
    let mut addrs: Vec<String> = dead.iter().map(|(_, a)| a.clone()).collect();
    addrs.push(live.local_addr().to_string());
    let started = Instant::now();
    let _c = client(list_config(&pki, &addrs).with_id("list-fast")).await;
    let took = started.elapsed();
    println!(
        "first connection past the dead entries: {} ms",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// Every server down: each is warned about with its address, one right after the other (a
/// backoff between them would take over 1.5 s for six), and only then does the client back off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failed_server_is_warned_about_by_address_at_once() {
    logs();
    let dead: Vec<_> = (0..6).map(|_| dead_entry()).collect();
    let addrs: Vec<String> = dead.iter().map(|(_, a)| a.clone()).collect();
    let pki = Pki::new("list-warn");
    let started = Instant::now();
    let c: ClientHandle = tunnel_client::start(list_config(&pki, &addrs).with_id("list-warn"))
        .await
        .unwrap();
    eventually(WAIT, "a warning for each dead server", || async {
        addrs.iter().all(|a| logged(&["WARN", a, "refused"]))
    })
    .await;
    let took = started.elapsed();
    println!("a round over six dead servers: {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(logged(&["none of the 6 servers could be used"]));
    c.shutdown();
}

/// `--check` names each bad entry of the list by its index, at its line.
#[test]
fn check_names_bad_entries_of_the_list_at_their_lines() {
    let pki = Pki::new("list-check");
    let cfg = pki.write(
        "client.toml",
        "auth_key = \"k\"\nserver_addr = [\n  \"a.example:8443\",\n  \"b.example\",\n  \
         \"a.example:8443\",\n]\n",
    );
    let out = bins::check(bins::client(), &cfg);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    let file = cfg.display();
    assert!(
        err.contains(&format!(
            "{file}:4:3: server_addr[1]: \"b.example\" is not host:port"
        )) && err.contains(&format!(
            "{file}:5:3: server_addr[2]: \"a.example:8443\" is listed twice"
        )),
        "{err}"
    );
    let cfg = pki.write("empty.toml", "auth_key = \"k\"\nserver_addr = []\n");
    let out = bins::check(bins::client(), &cfg);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    assert!(
        err.contains(&format!(
            "{}:2:1: server_addr: is an empty list",
            cfg.display()
        )),
        "{err}"
    );
    let cfg = pki.write(
        "ok.toml",
        "auth_key = \"k\"\nserver_addr = [\"a.example:8443\", \"b.example:8443\"]\n",
    );
    let out = bins::check(bins::client(), &cfg);
    assert!(out.success(), "{}", &out.stderr);
}

/// A server that accepts connections and never answers, as a frozen process does (the
/// kernel completes the handshake for it).
async fn silent_entry() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap().to_string();
    (l, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_in_the_list_holds_the_client_back_only_briefly() {
    let pki = Pki::new("list-silent");
    let live = member(&pki).await;
    let (_silent, silent) = silent_entry().await;
    let echo = echo_service().await;
    let port = free_port();
    let started = std::time::Instant::now();
    // Whichever comes first in the shuffled order, the client serves through the live one
    // well before the single-server connect timeout (15 s) would have let it.
    let c = client(
        list_config(&pki, &[silent, live.local_addr().to_string()])
            .with_id("list-silent")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port))),
    )
    .await;
    assert!(serves(port).await);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "serving took {took:?}");
    assert!(is_ready(&c));
}
