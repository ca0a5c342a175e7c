//! Automatic and ranged publish ports (`publish_port = "auto"`, `"6000-6010"`) through a
//! real server and client on loopback.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig, PublishPort, Status};
use tunnel_server::PortRanges;
use tunnel_testkit::*;

fn ports(first: u16, last: u16) -> PortRanges {
    [format!("{first}-{last}")]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

fn auto(name: &str, local: SocketAddr) -> ProxyConfig {
    ProxyConfig::tcp(name, &local.to_string(), None).with_publish_port(PublishPort::Auto)
}

fn block(name: &str, local: &str, first: u16, last: u16) -> ProxyConfig {
    ProxyConfig::tcp(name, local, None).with_publish_port(PublishPort::Range { first, last })
}

/// The port the server gave proxy `name` in the client's current registration.
fn given_port(c: &ClientHandle, name: &str) -> u16 {
    let Status::Ready(reply) = c.status() else {
        panic!("the client is not registered");
    };
    let item = reply.results.iter().find(|r| r.name == name).unwrap();
    item.port
        .unwrap_or_else(|| panic!("no port given for {name}: {item:?}"))
}

/// What a connection to `port` reads before the service closes it.
async fn answer_of(port: u16) -> String {
    let mut s = TcpStream::connect(published(port)).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .expect("no answer within 10 s")
        .unwrap();
    text
}

async fn stop(mut c: ClientHandle) {
    c.shutdown();
    tokio::time::timeout(Duration::from_secs(10), c.join())
        .await
        .unwrap()
        .unwrap();
}

async fn stopped_listening(port: u16) {
    eventually(Duration::from_secs(5), "the port closes", || async move {
        !is_listening(port).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_picks_an_allowed_port_logs_and_shows_it_and_keeps_it_across_a_restart() {
    let first = free_port_block(2);
    let server = server_with(|c| c.with_allow_ports(ports(first, first + 1))).await;
    let echo = echo_service().await;
    let stats = published(free_port());
    let cfg = |id: &str| {
        client_config(&server)
            .with_id(id)
            .with_proxy(auto("web", echo))
    };
    let a = client(cfg("auto-a").with_stats_bind(stats)).await;
    let port = given_port(&a, "web");
    assert!(
        (first..=first + 1).contains(&port),
        "{port} outside allow_ports"
    );
    let data = random_bytes(100_000, 18);
    assert!(roundtrip(published(port), &data).await == data);

    let line = format!("proxy web published on port {port} (auto)");
    expect_logged(&["tunnel_server", &line]).await;
    expect_logged(&["tunnel_client", &line]).await;
    let client_stats = stats_json(stats).await;
    let web = &client_stats["proxies"][0];
    assert_eq!(web["publish_port"], port, "{client_stats}");
    assert_eq!(web["publish_ports"], "auto", "{client_stats}");
    let server_stats = stats_json(server.stats_addr().unwrap()).await;
    let owner = &server_stats["clients"][0];
    assert_eq!(owner["id"], "auto-a");
    assert_eq!(owner["proxies"][0]["publish_port"], port, "{server_stats}");
    assert_eq!(
        owner["proxies"][0]["publish_ports"], "auto",
        "{server_stats}"
    );

    // While it is away, another client's automatic proxy of the same name does not take its
    // port: the server remembers whose it was.
    stop(a).await;
    stopped_listening(port).await;
    let b = client(cfg("auto-b")).await;
    let other = given_port(&b, "web");
    assert_ne!(other, port);
    let a = client(cfg("auto-a")).await;
    assert_eq!(
        given_port(&a, "web"),
        port,
        "not the same port after a restart"
    );
    assert!(roundtrip(published(port), &data).await == data);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_stays_within_the_clients_own_scope() {
    let pki = Pki::new("ports-scope");
    let first = free_port_block(3);
    let key = "scoped client's key 0123456789";
    let clients = pki.write(
        "clients.toml",
        &format!(
            "[[clients]]\nid = \"scoped\"\nkey = \"{key}\"\nallow_ports = [\"{first}-{}\"]\n",
            first + 2
        ),
    );
    // The server allows every unprivileged port; the client's scope only three.
    let server = server_with(|mut c| {
        c.clients_file = Some(clients);
        c
    })
    .await;
    let echo = echo_service().await;
    let cfg = client_config(&server)
        .with_id("scoped")
        .with_auth_key(key)
        .with_proxy(auto("web", echo));
    let c = client(cfg).await;
    let port = given_port(&c, "web");
    assert!(
        (first..=first + 2).contains(&port),
        "{port} outside the scope"
    );
    let data = random_bytes(1000, 3);
    assert!(roundtrip(published(port), &data).await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_automatic_port_of_an_unchanged_proxy() {
    let first = free_port_block(20);
    let server = server_with(|c| c.with_allow_ports(ports(first, first + 19))).await;
    let echo = echo_service().await;
    let cfg = client_config(&server)
        .with_id("auto-reload")
        .with_proxy(auto("web", echo));
    let c = client(cfg.clone()).await;
    let port = given_port(&c, "web");
    let added = cfg.with_proxy(auto("api", echo));
    c.reload(added).await.unwrap();
    eventually(Duration::from_secs(5), "the reload registered", || {
        let ready = matches!(c.status(), Status::Ready(r) if r.results.len() == 2);
        async move { ready }
    })
    .await;
    assert_eq!(given_port(&c, "web"), port);
    let api = given_port(&c, "api");
    assert_ne!(api, port);
    for p in [port, api] {
        let data = random_bytes(10_000, u64::from(p));
        assert!(roundtrip(published(p), &data).await == data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_of_a_block_reaches_its_own_local_port() {
    let server = server().await;
    let local = free_port_block(5);
    for p in local..local + 5 {
        own_port_service(p).await;
    }
    let public = free_port_block(5);
    let local_addr = format!("127.0.0.1:{local}-{}", local + 4);
    let c =
        client(client_config(&server).with_proxy(block("range", &local_addr, public, public + 4)))
            .await;
    assert_eq!(given_port(&c, "range"), public);
    // Last to first, so that an off-by-one or a fixed local port cannot pass.
    for i in (0..5).rev() {
        assert_eq!(answer_of(public + i).await, (local + i).to_string());
    }
    let line = format!("proxy range published on ports {public}-{}", public + 4);
    expect_logged(&["tunnel_server", &line]).await;
    expect_logged(&["tunnel_client", &line]).await;
    // Each port its own entry in the server's stats, under a key of its own.
    let stats = stats_json(server.stats_addr().unwrap()).await;
    let listed = stats["clients"][0]["proxies"].as_array().unwrap().clone();
    let mut keys: Vec<String> = listed
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 5, "{stats}");
    let block = format!("{public}-{}", public + 4);
    assert!(
        listed.iter().all(|p| p["publish_ports"] == block.as_str()),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_local_port_serves_a_whole_block() {
    let server = server().await;
    let echo = echo_service().await;
    let public = free_port_block(3);
    let _c = client(client_config(&server).with_proxy(block(
        "many",
        &echo.to_string(),
        public,
        public + 2,
    )))
    .await;
    for p in public..public + 3 {
        let data = random_bytes(20_000, u64::from(p));
        assert!(roundtrip(published(p), &data).await == data, "port {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_with_one_port_taken_is_refused_whole_with_the_reason() {
    let server = server().await;
    let echo = echo_service().await;
    let public = free_port_block(5);
    let taken = public + 2;
    let _holder = std::net::TcpListener::bind(("127.0.0.1", taken)).unwrap();
    let cfg =
        client_config(&server).with_proxy(block("blocked", &echo.to_string(), public, public + 4));
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    let e = reply.results[0]
        .error
        .as_ref()
        .expect("the block was granted");
    assert_eq!(e.field, "publish_port");
    assert!(
        e.message.contains(&format!("port {taken} of the block"))
            && e.message.contains("the whole block is refused"),
        "{e}"
    );
    for p in (public..public + 5).filter(|p| *p != taken) {
        assert!(
            !is_listening(p).await,
            "port {p} of a refused block listens"
        );
    }
    assert_eq!(server.snapshot().proxies, 0);
}

/// Blocks count port by port against `max_ports_per_client`: one key holder cannot take
/// every allowed port with a few large blocks, while another client still gets its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_count_port_by_port_against_max_ports_per_client() {
    let server = server_with(|c| c.with_max_ports_per_client(8)).await;
    let echo = echo_service().await.to_string();
    let (a, b) = (free_port_block(6), free_port_block(4));
    let cfg = client_config(&server)
        .with_id("hog")
        .with_proxy(block("six", &echo, a, a + 5))
        .with_proxy(block("four", &echo, b, b + 3));
    let mut hog = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), hog.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(reply.results[0].error.is_none(), "{:?}", reply.results[0]);
    let e = reply.results[1]
        .error
        .as_ref()
        .expect("the second block passed the cap");
    assert_eq!(e.field, "publish_port");
    assert!(e.message.contains("max_ports_per_client (8)"), "{e}");
    assert!(!is_listening(b).await, "a refused block listens");
    assert_eq!(
        roundtrip(published(a + 5), b"within the cap").await,
        b"within the cap"
    );
    // Another client is counted on its own.
    let other = free_port();
    let _c = client(
        client_config(&server)
            .with_id("neighbour")
            .with_proxy(ProxyConfig::tcp("one", &echo, Some(other))),
    )
    .await;
    assert!(is_listening(other).await);
    hog.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_gets_an_automatic_port_too() {
    let first = free_port_block(10);
    let server = server_with(|c| c.with_allow_ports(ports(first, first + 9))).await;
    let echo = udp_echo_service().await;
    let proxy =
        ProxyConfig::udp("dns", &echo.to_string(), None).with_publish_port(PublishPort::Auto);
    let c = client(client_config(&server).with_proxy(proxy)).await;
    let port = given_port(&c, "dns");
    assert!((first..first + 10).contains(&port));
    let sock = udp_socket().await;
    let back = udp_ask(&sock, published(port), b"ping", Duration::from_secs(5)).await;
    assert_eq!(back.as_deref(), Some(&b"ping"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_of_a_udp_block_reaches_its_own_local_port() {
    let server = server().await;
    let local = free_port_block(3);
    for p in local..local + 3 {
        udp_own_port_service(p).await;
    }
    let public = free_port_block(3);
    let proxy = ProxyConfig::udp("game", &format!("127.0.0.1:{local}-{}", local + 2), None)
        .with_publish_port(PublishPort::Range {
            first: public,
            last: public + 2,
        });
    let _c = client(client_config(&server).with_proxy(proxy)).await;
    let sock = udp_socket().await;
    for i in (0..3).rev() {
        let back = udp_ask(
            &sock,
            published(public + i),
            b"which",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            back,
            Some((local + i).to_string().into_bytes()),
            "port {}",
            public + i
        );
    }
}

#[test]
fn check_names_the_block_cap_and_unequal_ranges_in_one_run() {
    let pki = Pki::new("ports-check");
    let cfg = pki.write(
        "client.toml",
        "server_addr = \"x:1\"\nauth_key = \"k\"\n\
         [[proxies]]\nname = \"huge\"\nlocal_addr = \"127.0.0.1:7000\"\npublish_port = \"6000-7000\"\n\
         [[proxies]]\nname = \"uneven\"\nlocal_addr = \"127.0.0.1:7000-7002\"\npublish_port = \"6000-6004\"\n",
    );
    let out = bins::check(bins::client(), &cfg);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    assert!(
        err.contains("proxies[0].publish_port") && err.contains("at most 1000"),
        "{err}"
    );
    assert!(
        err.contains("proxies[1].local_addr")
            && err.contains("publish_port has 5")
            && err.contains("equal length"),
        "{err}"
    );
}

/// An in-process config with an automatic port and a block: `problems` is what `check` and
/// `start` both run.
#[test]
fn the_library_refuses_what_check_refuses() {
    let cfg = ClientConfig::new("x:1")
        .with_auth_key("k")
        .with_proxy(block("huge", "127.0.0.1:1", 6000, 7000));
    let p = cfg.problems();
    assert!(
        p.iter().any(|p| p.message.contains("at most 1000")),
        "{p:?}"
    );
}

/// The port a process logged for proxy `name` ("proxy web published on port 20417 (auto)").
fn logged_port(log: &str, name: &str) -> u16 {
    let at = format!("proxy {name} published on port ");
    let rest = &log[log.find(&at).unwrap() + at.len()..];
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binaries_log_the_automatic_port_and_a_sighup_keeps_it() {
    let pki = Pki::new("ports-hup");
    let first = free_port_block(10);
    let port = free_port();
    let allow = format!("allow_ports = [\"{first}-{}\"]", first + 9);
    let server = pki.server("hup", port, &allow).await;
    let echo = echo_service().await;
    let proxy = |name: &str| {
        format!(
            "\n[[proxies]]\nname = \"{name}\"\nlocal_addr = \"{echo}\"\npublish_port = \"auto\"\n"
        )
    };
    let addr = format!("127.0.0.1:{port}");
    let head = format!("id = \"hup\"\n{}", proxy("web"));
    let client = pki.client("hup", &addr, &pki.fingerprint, &head);
    let within = Duration::from_secs(10);
    log_shows(&client, "proxy web published on port ", within).await;
    let web = logged_port(&client.log(), "web");
    assert!((first..first + 10).contains(&web));
    log_shows(
        &server,
        &format!("proxy web published on port {web} (auto)"),
        within,
    )
    .await;
    let data = random_bytes(50_000, 5);
    assert!(roundtrip(published(web), &data).await == data);

    // The same file plus a second automatic proxy, the way an operator edits it.
    pki.write(
        "client-hup.toml",
        &format!(
            "server_addr = \"{addr}\"\nauth_key = \"{KEY}\"\nserver_fingerprint = \"{}\"\n\
             {head}{}\n",
            pki.fingerprint,
            proxy("api")
        ),
    );
    client.signal("HUP");
    log_shows(&client, "proxy api published on port ", within).await;
    let api = logged_port(&client.log(), "api");
    assert_ne!(api, web);
    let log = client.log();
    assert_eq!(
        log.matches("proxy web published on port").count(),
        1,
        "{log}"
    );
    for p in [web, api] {
        assert!(roundtrip(published(p), &data).await == data, "port {p}");
    }
    no_panic(&client);
}
