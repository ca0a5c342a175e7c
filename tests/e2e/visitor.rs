//! End to end: visitors reaching other clients' proxies through a real server, over real TLS
//! on loopback. Log lines are captured (see `common::capture_logs`), and the tests of this
//! file run in parallel in one process, so every test uses its own client ids and names.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::{ClientConfig, ProxyConfig, Status, VisitorConfig};
use tunnel_testkit::*;

const SECRET: &str = "visitor-secret-5f2c9e";
/// A refused application connection must be closed well within this.
const PROMPT: Duration = Duration::from_secs(3);

fn addr(bind: &str) -> SocketAddr {
    bind.parse().unwrap()
}

/// A visitor of `proxy` (port 0 = private) on a fresh loopback port, with `secret` if any.
fn visitor(name: &str, proxy: &str, port: u16, secret: Option<&str>) -> VisitorConfig {
    let v = VisitorConfig::new(name, proxy, port, &visitor_bind());
    match secret {
        Some(s) => v.with_secret(s),
        None => v,
    }
}

/// The bind address of visitor `name` in `cfg`.
fn bind_of(cfg: &ClientConfig, name: &str) -> String {
    cfg.visitors
        .iter()
        .find(|v| v.name == name)
        .unwrap()
        .bind
        .clone()
}

/// Echo `len` pseudo-random bytes through `bind` and require them back unchanged.
async fn assert_echoes(bind: &str, len: usize, seed: u64) {
    let data = random_bytes(len, seed);
    let back = roundtrip(addr(bind), &data).await;
    assert_eq!(back.len(), data.len(), "{bind}: wrong length echoed");
    assert!(back == data, "{bind}: echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_control_matrix_refuses_promptly_with_the_reason_and_others_keep_working() {
    capture_logs();
    let server = server().await;
    let echo = echo_service().await.to_string();
    let (_dead_socket, dead_port) = refusing_port();
    let dead = format!("127.0.0.1:{dead_port}");
    let (public_port, public_secret_port) = (free_port(), free_port());
    let _owner = client(
        client_config(&server)
            .with_id("m-owner")
            .with_proxy(ProxyConfig::tcp("m-secret", &echo, None).with_secret(SECRET))
            .with_proxy(
                ProxyConfig::tcp("m-listed", &echo, None).with_allow_visitors(&["m-friend"]),
            )
            .with_proxy(ProxyConfig::tcp("m-anyone", &echo, None).with_allow_visitors(&["*"]))
            .with_proxy(
                ProxyConfig::tcp("m-both", &echo, None)
                    .with_secret(SECRET)
                    .with_allow_visitors(&["m-friend"]),
            )
            // Neither secret nor allow list: reachable from its public port only.
            .with_proxy(ProxyConfig::tcp("m-public", &echo, Some(public_port)))
            .with_proxy(
                ProxyConfig::tcp("m-pubsecret", &echo, Some(public_secret_port))
                    .with_secret(SECRET),
            )
            .with_proxy(ProxyConfig::tcp("m-down", &dead, None).with_secret(SECRET)),
    )
    .await;

    // Tables, one case a row (rustfmt would spread each row over six lines).
    // (visitor, proxy, publish_port, secret)
    #[rustfmt::skip]
    let stranger_allowed = [
        ("s-ok-secret", "m-secret", 0, Some(SECRET)),
        ("s-ok-anyone", "m-anyone", 0, None),
        ("s-ok-pubsecret", "m-pubsecret", public_secret_port, Some(SECRET)),
    ];
    // (visitor, proxy, publish_port, secret, what the visitor logs, what the server logs)
    #[rustfmt::skip]
    let stranger_refused = [
        ("s-wrong-secret", "m-secret", 0, Some("not-the-secret"), "refused: access denied", "wrong or missing secret"),
        ("s-no-secret", "m-secret", 0, None, "refused: access denied", "wrong or missing secret"),
        ("s-not-listed", "m-listed", 0, None, "refused: access denied", "client id not in allow_visitors"),
        ("s-both-not-listed", "m-both", 0, Some(SECRET), "refused: access denied", "client id not in allow_visitors"),
        ("s-public-only", "m-public", public_port, None, "refused: access denied", "neither secret nor allow_visitors"),
        ("s-unknown", "m-nope", 0, None, "refused: proxy not found", "visitor refused: proxy not found"),
        // A private proxy is keyed with port 0: naming it with a port finds nothing. The server
        // logs "proxy not found" once a minute per visiting client (the name is the client's
        // choice), so this second one is counted, not logged: see below.
        ("s-wrong-port", "m-secret", public_port, Some(SECRET), "refused: proxy not found", "visitor refused: proxy not found"),
        ("s-down", "m-down", 0, Some(SECRET), "refused: connection failed", "visitor connection failed"),
    ];
    let mut stranger_cfg = client_config(&server).with_id("m-stranger");
    for (name, proxy, port, secret) in stranger_allowed {
        stranger_cfg = stranger_cfg.with_visitor(visitor(name, proxy, port, secret));
    }
    for (name, proxy, port, secret, ..) in stranger_refused {
        stranger_cfg = stranger_cfg.with_visitor(visitor(name, proxy, port, secret));
    }
    let _stranger = client(stranger_cfg.clone()).await;
    let friend_cfg = client_config(&server)
        .with_id("m-friend")
        .with_visitor(visitor("f-listed", "m-listed", 0, None))
        .with_visitor(visitor("f-both", "m-both", 0, Some(SECRET)))
        .with_visitor(visitor("f-both-no-secret", "m-both", 0, None));
    let _friend = client(friend_cfg.clone()).await;

    let working = [
        (&stranger_cfg, "s-ok-secret"),
        (&stranger_cfg, "s-ok-anyone"),
        (&stranger_cfg, "s-ok-pubsecret"),
        (&friend_cfg, "f-listed"),
        (&friend_cfg, "f-both"),
    ];
    for (i, (cfg, name)) in working.iter().enumerate() {
        assert_echoes(&bind_of(cfg, name), 64 * 1024, i as u64).await;
    }

    for (name, proxy, _, _, client_says, server_says) in stranger_refused {
        expect_prompt_close(&bind_of(&stranger_cfg, name), PROMPT).await;
        expect_logged(&[&format!("visitor{{name={name}}}"), client_says]).await;
        if name == "s-wrong-port" {
            // Rate-limited: within the minute of s-unknown's line, from the same client.
            continue;
        }
        expect_logged(&[proxy, server_says]).await;
    }
    // A client can repeat refusals at will; the server logs one line per subject per minute.
    assert_eq!(
        logged_count(&["client=m-stranger", "visitor refused: proxy not found"]),
        1
    );
    assert_eq!(
        logged_count(&[
            "client=m-stranger",
            "visitor refused: access denied",
            "proxy=m-secret"
        ]),
        1
    );
    expect_prompt_close(&bind_of(&friend_cfg, "f-both-no-secret"), PROMPT).await;
    expect_logged(&["visitor{name=f-both-no-secret}", "refused: access denied"]).await;

    // Nothing else broke: every client is still connected, every allowed path still works,
    // the public port still serves, and no secret ever reached a log line.
    assert_eq!(server.snapshot().clients, 3);
    assert_eq!(server.snapshot().proxies, 7);
    for (i, (cfg, name)) in working.iter().enumerate() {
        assert_echoes(&bind_of(cfg, name), 200_000, 100 + i as u64).await;
    }
    let data = random_bytes(100_000, 9);
    assert!(roundtrip(published(public_port), &data).await == data);
    assert!(!logged_anywhere(SECRET), "a secret was logged");
    assert!(
        !logged_anywhere("not-the-secret"),
        "a presented secret was logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_visit_its_own_proxy() {
    capture_logs();
    let server = server().await;
    let echo = echo_service().await;
    let cfg = client_config(&server)
        .with_id("self")
        .with_proxy(ProxyConfig::tcp("self-echo", &echo.to_string(), None).with_secret(SECRET))
        .with_visitor(visitor("self-visit", "self-echo", 0, Some(SECRET)));
    let _c = client(cfg.clone()).await;
    assert_echoes(&bind_of(&cfg, "self-visit"), 4 << 20, 11).await;
    assert_eq!(server.snapshot().clients, 1);
}

/// Listening TCP sockets on `ip`, from the kernel's table (this network namespace).
fn listeners_on(ip: Ipv4Addr) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (hex_ip, hex_port) = f.get(1)?.split_once(':')?;
            // The address is printed as the raw in-memory u32: little-endian on x86 and ARM.
            let local = Ipv4Addr::from(u32::from_str_radix(hex_ip, 16).ok()?.to_le_bytes());
            let listening = f.get(3) == Some(&"0A");
            (listening && local == ip).then(|| u16::from_str_radix(hex_port, 16).ok())?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_proxy_has_no_public_port_and_visitors_reach_it_with_port_zero_or_none() {
    capture_logs();
    // Published ports go to a loopback address no other test (or concurrent run: the pid
    // picks it) uses, so any listener there is this server's.
    let pid = std::process::id();
    let publish_ip = Ipv4Addr::new(127, 77, (pid / 250 % 256) as u8, (1 + pid % 250) as u8);
    let server = server_with(|c| c.with_publish_addr(IpAddr::V4(publish_ip))).await;
    let echo = echo_service().await;
    let _owner = client(
        client_config(&server)
            .with_id("p-owner")
            .with_proxy(ProxyConfig::tcp("p-db", &echo.to_string(), None).with_secret(SECRET)),
    )
    .await;
    assert_eq!(server.snapshot().proxies, 1);
    assert_eq!(listeners_on(publish_ip), Vec::<u16>::new());

    // As a user writes it: one visitor leaves publish_port out, one says 0.
    let (bind_none, bind_zero) = (visitor_bind(), visitor_bind());
    let toml = format!(
        r#"
        server_addr = "{server_addr}"
        auth_key = "{KEY}"
        server_fingerprint = "{fingerprint}"
        id = "p-visitor"

        [[visitors]]
        name = "p-none"
        proxy = "p-db"
        bind = "{bind_none}"
        secret = "{SECRET}"

        [[visitors]]
        name = "p-zero"
        proxy = "p-db"
        publish_port = 0
        bind = "{bind_zero}"
        secret = "{SECRET}"
        "#,
        server_addr = server.local_addr(),
        fingerprint = server.fingerprint(),
    );
    let _visitor = client(ClientConfig::from_toml(&toml).unwrap()).await;
    assert_echoes(&bind_none, 100_000, 21).await;
    assert_echoes(&bind_zero, 100_000, 22).await;
    assert_eq!(listeners_on(publish_ip), Vec::<u16>::new());

    // The control: a published proxy does show up there, so the check above can fail.
    let port = free_port();
    let _public = client(
        client_config(&server)
            .with_id("p-public")
            .with_proxy(ProxyConfig::tcp("p-web", &echo.to_string(), Some(port))),
    )
    .await;
    assert_eq!(listeners_on(publish_ip), vec![port]);
}

// Every transport carries visitors (owner, visitor and the public proxy all use it).
tunnel_testkit::per_transport!(
    a_hundred_concurrent_visitor_connections_are_byte_exact_beside_public_traffic
);

async fn a_hundred_concurrent_visitor_connections_are_byte_exact_beside_public_traffic(
    kind: TransportKind,
) {
    capture_logs();
    let server = server_for(kind).await;
    let echo = echo_service().await.to_string();
    let public_port = free_port();
    let _owner = client(
        client_config_for(&server, kind)
            .with_id("h-owner")
            .with_proxy(ProxyConfig::tcp("h-echo", &echo, None).with_secret(SECRET)),
    )
    .await;
    let _other = client(
        client_config_for(&server, kind)
            .with_id("h-other")
            .with_proxy(ProxyConfig::tcp("h-web", &echo, Some(public_port))),
    )
    .await;
    let cfg = client_config_for(&server, kind)
        .with_id("h-visitor")
        .with_visitor(visitor("h-visit", "h-echo", 0, Some(SECRET)));
    let _visitor = client(cfg.clone()).await;
    let bind = addr(&bind_of(&cfg, "h-visit"));

    // Another client's public proxy keeps moving data until the visitors are done.
    let done = Arc::new(AtomicBool::new(false));
    let public_rounds = Arc::new(AtomicUsize::new(0));
    let background: Vec<_> = (0..4u64)
        .map(|i| {
            let (done, rounds) = (done.clone(), public_rounds.clone());
            tokio::spawn(async move {
                let data = random_bytes(1 << 20, 1000 + i);
                while !done.load(Ordering::Relaxed) {
                    let back = roundtrip(published(public_port), &data).await;
                    assert!(back == data, "public connection {i} corrupted");
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let visits: Vec<_> = (0..100u64)
        .map(|i| {
            tokio::spawn(async move {
                let data = random_bytes(16 * 1024 + i as usize * 997, i);
                let back = roundtrip(bind, &data).await;
                assert_eq!(
                    back.len(),
                    data.len(),
                    "visitor connection {i}: wrong length"
                );
                assert!(back == data, "visitor connection {i} corrupted");
            })
        })
        .collect();
    for v in visits {
        v.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    for b in background {
        b.await.unwrap();
    }
    assert!(public_rounds.load(Ordering::Relaxed) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_gone_refuses_visitors_and_its_return_restores_them_without_a_visitor_restart() {
    capture_logs();
    let server = server().await;
    let echo = echo_service().await.to_string();
    let owner_cfg = client_config(&server)
        .with_id("g-owner")
        .with_proxy(ProxyConfig::tcp("g-db", &echo, None).with_secret(SECRET));
    let mut owner = client(owner_cfg.clone()).await;
    let visitor_cfg = client_config(&server)
        .with_id("g-visitor")
        .with_visitor(visitor("g-visit", "g-db", 0, Some(SECRET)));
    let _visitor = client(visitor_cfg.clone()).await;
    let bind = bind_of(&visitor_cfg, "g-visit");
    assert_echoes(&bind, 100_000, 31).await;

    // A visitor connection open when the owner leaves must end promptly, not hang.
    let mut open = TcpStream::connect(&bind).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");

    owner.shutdown();
    owner.join().await.unwrap();
    let end = tokio::time::timeout(PROMPT, open.read(&mut buf))
        .await
        .expect("a visitor connection outlived its proxy's owner");
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    eventually(
        Duration::from_secs(1),
        "the owner's entries removed",
        || async { server.snapshot().proxies == 0 && server.snapshot().clients == 1 },
    )
    .await;
    for _ in 0..3 {
        expect_prompt_close(&bind, PROMPT).await;
    }
    expect_logged(&["visitor{name=g-visit}", "refused: proxy not found"]).await;

    // A new process with the same id (a different instance) takes over the proxy; the
    // visitor client, never restarted, reaches it again.
    let _owner_again = client(owner_cfg).await;
    assert_echoes(&bind, 100_000, 32).await;
    assert_eq!(server.snapshot().clients, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_held_by_another_live_instance_is_rejected_and_the_first_client_is_untouched() {
    capture_logs();
    let server = server().await;
    let echo = echo_service().await.to_string();
    let (port, second_port) = (free_port(), free_port());
    let first = client(
        client_config(&server)
            .with_id("twin")
            .with_proxy(ProxyConfig::tcp("t-web", &echo, Some(port)))
            .with_proxy(ProxyConfig::tcp("t-db", &echo, None).with_secret(SECRET)),
    )
    .await;
    let visitor_cfg = client_config(&server)
        .with_id("t-visitor")
        .with_visitor(visitor("t-visit", "t-db", 0, Some(SECRET)));
    let _visitor = client(visitor_cfg.clone()).await;

    let mut second = tunnel_client::start(
        client_config(&server)
            .with_id("twin")
            .with_proxy(ProxyConfig::tcp("t-other", &echo, Some(second_port))),
    )
    .await
    .unwrap();
    // Taken before it ever served: a second copy of a config, so it stops and says why (a
    // client that has served keeps retrying instead; see tests/hardening/logs.rs).
    let stopped = tokio::time::timeout(Duration::from_secs(10), second.join())
        .await
        .expect("the rejected client did not stop by itself");
    let err = stopped
        .expect_err("the rejected client stopped without an error")
        .to_string();
    assert!(
        err.contains("\"twin\"") && err.contains("in use"),
        "the reason should name the id: {err}"
    );
    assert!(matches!(second.status(), Status::Stopped(_)));
    expect_logged(&["client rejected", "\"twin\" is in use"]).await;

    assert!(is_ready(&first), "the first client was disturbed");
    assert_eq!(server.snapshot().clients, 2);
    assert_eq!(server.snapshot().proxies, 2);
    assert!(!is_listening(second_port).await);
    let data = random_bytes(100_000, 41);
    assert!(roundtrip(published(port), &data).await == data);
    assert_echoes(&bind_of(&visitor_cfg, "t-visit"), 100_000, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_of_the_same_instance_replaces_its_stale_session_with_no_gap() {
    capture_logs();
    let server = Arc::new(server().await);
    let echo = echo_service().await.to_string();
    // The owner reaches the server through a relay that can kill the path without the
    // server noticing: the server then holds a session that looks alive, and the owner's
    // next login (same process, same instance) must replace it.
    let relay = Relay::start(server.local_addr()).await;
    let port = free_port();
    let owner = client(
        ClientConfig::new(relay.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(server.fingerprint())
            .with_id("r-owner")
            .with_proxy(ProxyConfig::tcp("r-web", &echo, Some(port)))
            .with_proxy(ProxyConfig::tcp("r-db", &echo, None).with_secret(SECRET)),
    )
    .await;
    let visitor_cfg = client_config(&server)
        .with_id("r-visitor")
        .with_visitor(visitor("r-visit", "r-db", 0, Some(SECRET)));
    let _visitor = client(visitor_cfg.clone()).await;
    let bind = bind_of(&visitor_cfg, "r-visit");
    assert_echoes(&bind, 100_000, 51).await;
    assert_eq!(relay.accepted(), 1);

    // Sample the registry through the switch: handed-over proxies never leave it.
    let watching = Arc::new(AtomicBool::new(true));
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let sampler = {
        let (server, watching, fewest) = (server.clone(), watching.clone(), fewest.clone());
        tokio::spawn(async move {
            while watching.load(Ordering::Relaxed) {
                fewest.fetch_min(server.snapshot().proxies, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    relay.cut();
    // A second relayed connection means the owner saw the cut (it went back to Connecting
    // first), so Ready now is the verdict of the new login.
    eventually(
        Duration::from_secs(10),
        "the owner logged in again",
        || async { relay.accepted() == 2 && is_ready(&owner) },
    )
    .await;
    watching.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert_eq!(
        fewest.load(Ordering::Relaxed),
        2,
        "a proxy left the registry"
    );
    expect_logged(&["replaces a stale session of the same client", "proxies=2"]).await;

    // The stale session is closed at once: the server ends the old connection.
    eventually(
        Duration::from_secs(5),
        "the cut connection held",
        || async { relay.cut_count() > 0 },
    )
    .await;
    let mut old = relay.take_cut().unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = old.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "the server kept the stale session's connection open"
    );

    assert_eq!(server.snapshot().clients, 2);
    assert_eq!(server.snapshot().proxies, 2);
    let data = random_bytes(100_000, 52);
    assert!(roundtrip(published(port), &data).await == data);
    assert_echoes(&bind, 100_000, 53).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_speaks_first_is_heard_and_aborts_travel_both_ways() {
    capture_logs();
    let server = server().await;
    // A service that greets first (as SSH or SMTP do), then waits.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_addr = service.local_addr().unwrap().to_string();
    let _owner = client(
        client_config(&server)
            .with_id("a-owner")
            .with_proxy(ProxyConfig::tcp("a-svc", &service_addr, None).with_secret(SECRET)),
    )
    .await;
    let cfg = client_config(&server)
        .with_id("a-visitor")
        .with_visitor(visitor("a-visit", "a-svc", 0, Some(SECRET)));
    let _visitor = client(cfg.clone()).await;

    let mut app = TcpStream::connect(bind_of(&cfg, "a-visit")).await.unwrap();
    let (mut svc, _) = tokio::time::timeout(PROMPT, service.accept())
        .await
        .expect("the visitor connection never reached the service")
        .unwrap();
    svc.write_all(b"220 hello\r\n").await.unwrap();
    let mut greeting = [0u8; 11];
    tokio::time::timeout(PROMPT, app.read_exact(&mut greeting))
        .await
        .expect("the greeting did not arrive before the app wrote anything")
        .unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");

    // As in proxy mode, the app's abort reaches the service as an abort, not a clean EOF.
    tunnel_mux::reset_tcp(app);
    let mut buf = [0u8; 8];
    let r = tokio::time::timeout(PROMPT, svc.read(&mut buf))
        .await
        .expect("the service connection outlived the app's abort");
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, got {r:?}"
    );

    // And the other way: the service's abort reaches the app as an abort. The greeting comes
    // first so the owner surely has the connection: a reset during its connect would only
    // make it dial again (it retries), and the retry would wait unaccepted.
    let mut app = TcpStream::connect(bind_of(&cfg, "a-visit")).await.unwrap();
    let (mut svc, _) = tokio::time::timeout(PROMPT, service.accept())
        .await
        .expect("the second visitor connection never reached the service")
        .unwrap();
    svc.write_all(b"220 hello\r\n").await.unwrap();
    tokio::time::timeout(PROMPT, app.read_exact(&mut greeting))
        .await
        .expect("no greeting on the second connection")
        .unwrap();
    tunnel_mux::reset_tcp(svc);
    let r = tokio::time::timeout(PROMPT, app.read(&mut buf))
        .await
        .expect("the app connection outlived the service's abort");
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, got {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_on_one_host_without_ids_both_connect_and_visit() {
    // Both default to the hostname as id; the second must not be locked out by the first.
    let server = server().await;
    let echo = echo_service().await.to_string();
    let _owner = client(
        client_config(&server)
            .with_proxy(ProxyConfig::tcp("h-db", &echo, None).with_secret(SECRET)),
    )
    .await;
    let visitor_cfg =
        client_config(&server).with_visitor(visitor("h-visit", "h-db", 0, Some(SECRET)));
    let _visitor = client(visitor_cfg.clone()).await;
    assert_eq!(server.snapshot().clients, 2);
    assert_echoes(&bind_of(&visitor_cfg, "h-visit"), 100_000, 7).await;
}
