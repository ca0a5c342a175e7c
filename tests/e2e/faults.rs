//! Fault injection: killed and frozen peers, hostile connections, every limit, back-pressure
//! and graceful shutdown. Real sockets on loopback, OS-chosen ports, generated certificates;
//! the release binaries run as processes wherever the behaviour is about processes (kill -9,
//! signals, exit codes, memory), the engines in-process where that is enough.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::{ClientConfig, ProxyConfig, Status};
use tunnel_proto::{Message, RejectCode};
use tunnel_testkit::*;
use tunnel_transport::{read_message, write_message};

const MIB: usize = 1024 * 1024;

/// A local service that sends `data` to whoever connects, then closes; counts bytes sent.
async fn source_service(data: Arc<Vec<u8>>, sent: Arc<AtomicU64>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (data, sent) = (data.clone(), sent.clone());
            tokio::spawn(async move {
                for chunk in data.chunks(64 * 1024) {
                    if s.write_all(chunk).await.is_err() {
                        return;
                    }
                    sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A local service that accepts and never reads (the connections stay open).
async fn sink_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// Wait until `counter` stops moving (a writer blocked on back-pressure).
async fn wait_until_blocked(counter: &AtomicU64, what: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = counter.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = counter.load(Ordering::SeqCst);
        if now == last && now > 0 {
            return now;
        }
        assert!(Instant::now() < deadline, "{what} never blocked");
        last = now;
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes: kill -9 of either binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_transfer_and_restarted_the_client_is_back_within_seconds() {
    capture_logs();
    let pki = Pki::new("kill-server");
    let port = free_port();
    let mut server = pki.server("a", port, "").await;
    let echo = echo_service().await;
    let publish = free_port();
    let vbind = visitor_bind();
    let body = format!(
        "id = \"k9-owner\"\n{}{}secret = \"s3cret\"\n\n[[visitors]]\nname = \"v\"\nproxy = \"db\"\n\
         bind = \"{vbind}\"\nsecret = \"s3cret\"\n",
        proxy_toml("web", echo, Some(publish)),
        proxy_toml("db", echo, None),
    );
    let mut client = pki.client("k9", &format!("127.0.0.1:{port}"), &pki.fingerprint, &body);
    eventually(Duration::from_secs(10), "published port serves", || {
        serves(publish)
    })
    .await;
    let visitor_port: u16 = vbind.rsplit_once(':').unwrap().1.parse().unwrap();
    assert!(serves(visitor_port).await, "the visitor does not work");
    let fds_before = client.fds();

    // A bulk transfer is in flight when the server dies.
    let moved = Arc::new(AtomicU64::new(0));
    let transfer = {
        let moved = moved.clone();
        tokio::spawn(async move {
            let s = TcpStream::connect(published(publish)).await.unwrap();
            let (mut r, mut w) = s.into_split();
            tokio::spawn(async move {
                let chunk = random_bytes(256 * 1024, 9);
                for _ in 0..4096 {
                    if w.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => moved.fetch_add(n as u64, Ordering::SeqCst),
                };
            }
        })
    };
    eventually(Duration::from_secs(10), "8 MiB echoed", || async {
        moved.load(Ordering::SeqCst) > 8 * MIB as u64
    })
    .await;
    server.kill9();
    tokio::time::timeout(Duration::from_secs(5), transfer)
        .await
        .expect("the user connection outlived the server by seconds")
        .unwrap();
    assert!(moved.load(Ordering::SeqCst) < 1024 * MIB as u64);
    assert!(client.is_running(), "the client died with the server");

    let restarted = Instant::now();
    let server = pki.server("b", port, "").await;
    eventually(
        Duration::from_secs(10),
        "published port serves after the restart",
        || serves(publish),
    )
    .await;
    let recovery = restarted.elapsed();
    eventually(
        Duration::from_secs(5),
        "the visitor serves after the restart",
        || serves(visitor_port),
    )
    .await;
    println!(
        "server kill -9 + restart: published port and visitor serve again {} ms after the restart",
        recovery.as_millis()
    );
    assert!(
        recovery < Duration::from_secs(6),
        "recovery took {recovery:?}"
    );

    // No leak in the client: same descriptors as before (give lingering sockets a moment).
    eventually(
        Duration::from_secs(5),
        "client descriptors back to where they were",
        || async { client.fds() <= fds_before + 2 },
    )
    .await;
    println!("client fds: {fds_before} before, {} after", client.fds());
    assert!(client.log().contains("reconnecting"), "{}", client.log());
    client.signal("TERM");
    let status = client.exit_within(Duration::from_secs(5)).await;
    assert!(status.success(), "client exit {status:?}");
    no_panic(&client);
    no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_frees_its_port_and_registry_at_once() {
    capture_logs();
    let pki = Pki::new("kill-client");
    let server = server().await;
    let echo = echo_service().await;
    let publish = free_port();
    let mut proc = pki.client(
        "k9c",
        &server.local_addr().to_string(),
        &server.fingerprint().to_string(),
        &format!("id = \"k9c\"\n{}", proxy_toml("web", echo, Some(publish))),
    );
    eventually(Duration::from_secs(10), "published port serves", || {
        serves(publish)
    })
    .await;
    assert_eq!(server.snapshot().clients, 1);
    let mut t = Transfer::open(publish).await;
    t.step(MIB).await;
    let killed = Instant::now();
    proc.kill9();
    // The user in the middle of a transfer is cut at once, not left hanging.
    let cut = closed_within(&mut t.stream, Duration::from_secs(2), "the user connection").await;
    println!(
        "client kill -9: open user connection closed after {} ms",
        cut.as_millis()
    );
    eventually(
        Duration::from_secs(2),
        "port closed and registry empty",
        || async {
            let s = server.snapshot();
            s.clients == 0 && s.proxies == 0 && !is_listening(publish).await
        },
    )
    .await;
    println!(
        "client kill -9: port and registry freed after {} ms",
        killed.elapsed().as_millis()
    );
    // Freed for real: another process with the same id gets the same port at once.
    let _again = client(
        client_config(&server)
            .with_id("k9c")
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(publish))),
    )
    .await;
    assert!(serves(publish).await);
}

/// kill -9 on a path that dies silently: no FIN reaches the server, only its heartbeat can
/// tell. The server must free the port within its heartbeat timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_behind_a_silent_path_is_freed_within_the_heartbeat_timeout() {
    capture_logs();
    let pki = Pki::new("kill-silent");
    let server =
        server_with(|c| c.with_heartbeat(Duration::from_secs(1), Duration::from_secs(3))).await;
    let relay = Relay::start(server.local_addr()).await;
    let echo = echo_service().await;
    let publish = free_port();
    let mut client = pki.client(
        "silent",
        &relay.addr.to_string(),
        &server.fingerprint().to_string(),
        &format!(
            "id = \"silent\"\n{}",
            proxy_toml("web", echo, Some(publish))
        ),
    );
    eventually(Duration::from_secs(10), "published port serves", || {
        serves(publish)
    })
    .await;
    relay.freeze();
    eventually(Duration::from_secs(2), "path frozen", || async {
        relay.frozen() == 1
    })
    .await;
    let killed = Instant::now();
    client.kill9();
    eventually(
        Duration::from_secs(7),
        "port closed and registry empty",
        || async {
            let s = server.snapshot();
            s.clients == 0 && s.proxies == 0 && !is_listening(publish).await
        },
    )
    .await;
    let took = killed.elapsed();
    println!(
        "client kill -9 behind a silent path: freed after {} ms (heartbeat timeout 3 s)",
        took.as_millis()
    );
    assert!(
        took >= Duration::from_millis(1500),
        "freed before any timeout could fire: {took:?}"
    );
    expect_logged(&["client=silent", "no heartbeat from the peer"]).await;
}

// ---------------------------------------------------------------------------------------------
// Silent paths and heartbeats (engines, through a relay that can freeze).

/// Half-open: the client's path dies silently. The client notices with its own heartbeat,
/// reconnects, and its new session replaces the stale one on the server at once, long
/// before the server's own (30 s) timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_path_the_client_reconnects_and_replaces_its_stale_session_at_once() {
    capture_logs();
    let server = server().await; // heartbeat defaults: every 10 s, dead after 30 s
    let relay = Relay::start(server.local_addr()).await;
    let echo = echo_service().await;
    let publish = free_port();
    let c = client(
        ClientConfig::new(relay.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(server.fingerprint())
            .with_id("half-open")
            .with_heartbeat_timeout(Duration::from_secs(2))
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(publish))),
    )
    .await;
    assert!(serves(publish).await);
    relay.freeze();
    eventually(Duration::from_secs(2), "path frozen", || async {
        relay.frozen() == 1
    })
    .await;
    let frozen = Instant::now();
    eventually(
        Duration::from_secs(12),
        "the port serves through a new session",
        || async {
            relay.accepted() >= 2
                && is_ready(&c)
                && serves_within(publish, Duration::from_secs(2)).await
        },
    )
    .await;
    let took = frozen.elapsed();
    println!(
        "half-open path: published port serves again {} ms after the freeze (client heartbeat_timeout 2 s, server 30 s)",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    expect_logged(&["replaces a stale session of the same client", "half-open"]).await;
    // The client says why it reconnected.
    expect_logged(&[
        "id=half-open",
        "lost the server: no heartbeat from the peer",
    ])
    .await;
    let s = server.snapshot();
    assert_eq!((s.clients, s.proxies), (1, 1));
}

/// Liveness on the server: a client whose path froze is declared dead within the server's
/// heartbeat timeout and its port freed; the client, once its own timeout fires, is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_freed_within_the_server_heartbeat_and_comes_back() {
    capture_logs();
    let server =
        server_with(|c| c.with_heartbeat(Duration::from_secs(1), Duration::from_secs(3))).await;
    let relay = Relay::start(server.local_addr()).await;
    let echo = echo_service().await;
    let publish = free_port();
    let c = client(
        ClientConfig::new(relay.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(server.fingerprint())
            .with_id("liveness")
            .with_heartbeat_timeout(Duration::from_secs(8))
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(publish))),
    )
    .await;
    assert!(serves(publish).await);
    relay.freeze();
    eventually(Duration::from_secs(2), "path frozen", || async {
        relay.frozen() == 1
    })
    .await;
    let frozen = Instant::now();
    eventually(
        Duration::from_secs(6),
        "the server freed the silent client",
        || async {
            let s = server.snapshot();
            s.clients == 0 && s.proxies == 0 && !is_listening(publish).await
        },
    )
    .await;
    let freed = frozen.elapsed();
    assert!(
        relay.accepted() == 1,
        "the client reconnected before the server freed it"
    );
    eventually(Duration::from_secs(12), "the client is back", || async {
        relay.accepted() >= 2 && is_ready(&c) && serves(publish).await
    })
    .await;
    println!(
        "silent client: freed by the server after {} ms (timeout 3 s), back after {} ms (client timeout 8 s)",
        freed.as_millis(),
        frozen.elapsed().as_millis()
    );
}

/// An idle but healthy session is never killed, whichever side has the short timeout, even
/// when the client's timeout is shorter than the server's ping interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_healthy_sessions_survive_several_heartbeat_timeouts() {
    capture_logs();
    let echo = echo_service().await;
    // (a) the server pings every 10 s (default); the client gives up after 2 s of silence.
    let server_a = server().await;
    // (b) the server pings every 1 s and gives up after 3 s; the client is on defaults.
    let server_b =
        server_with(|c| c.with_heartbeat(Duration::from_secs(1), Duration::from_secs(3))).await;
    let relay_a = Relay::start(server_a.local_addr()).await;
    let relay_b = Relay::start(server_b.local_addr()).await;
    let (port_a, port_b) = (free_port(), free_port());
    let cfg = |relay: &Relay, server: &tunnel_server::ServerHandle, id: &str, port| {
        ClientConfig::new(relay.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(server.fingerprint())
            .with_id(id)
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(port)))
    };
    let a = client(
        cfg(&relay_a, &server_a, "idle-a", port_a).with_heartbeat_timeout(Duration::from_secs(2)),
    )
    .await;
    let b = client(cfg(&relay_b, &server_b, "idle-b", port_b)).await;
    // Idle for more than three of the short timeouts.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert!(is_ready(&a) && is_ready(&b), "a session dropped while idle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(relay_a.accepted(), 1, "client a reconnected while idle");
    assert_eq!(relay_b.accepted(), 1, "client b reconnected while idle");
    assert!(serves(port_a).await && serves(port_b).await);
}

// ---------------------------------------------------------------------------------------------
// Hostile peers and memory.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_closed_and_a_good_client_still_connects() {
    capture_logs();
    let pki = Pki::new("hostile");
    let server = server_with(|mut c| {
        c.handshake_timeout = 2;
        c.with_tls_files(&pki.cert, &pki.key)
    })
    .await;
    let addr = server.local_addr();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // Silent from the first byte.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Completes TLS, says hello, then stalls before proving the key.
    let (mut stalled, _) = raw_tls(addr, lo, &pki.cert_pem).await.unwrap();
    write_message(&mut stalled, &Message::Hello(hello("stall")), 4096)
        .await
        .unwrap();
    match read_message(&mut stalled, 4096).await.unwrap() {
        Some(Message::Challenge(_)) => {}
        other => panic!("expected a challenge, got {other:?}"),
    }
    // Random bytes instead of TLS.
    let mut noise = TcpStream::connect(addr).await.unwrap();
    noise.write_all(&random_bytes(16 * 1024, 77)).await.unwrap();
    // Our framing without TLS, announcing a 2 GiB frame.
    let mut plain_big = TcpStream::connect(addr).await.unwrap();
    plain_big
        .write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    // Inside TLS, a 4 GiB length prefix where the hello belongs.
    let (mut tls_big, _) = raw_tls(addr, lo, &pki.cert_pem).await.unwrap();
    tls_big.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    tls_big.flush().await.unwrap();

    let t = closed_within(&mut noise, Duration::from_secs(2), "random bytes").await;
    println!("random bytes: closed after {} ms", t.as_millis());
    closed_within(
        &mut plain_big,
        Duration::from_secs(2),
        "plain oversize prefix",
    )
    .await;
    let t = closed_within(&mut tls_big, Duration::from_secs(2), "TLS oversize prefix").await;
    println!(
        "oversize length prefix in TLS: closed after {} ms",
        t.as_millis()
    );

    // A well-behaved client connects meanwhile and its traffic flows.
    let echo = echo_service().await;
    let publish = free_port();
    let _c = client(
        client_config(&server)
            .with_id("good")
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(publish))),
    )
    .await;
    assert!(serves(publish).await);

    // The stalls are cut by the 2 s handshake timeout.
    let t = closed_within(&mut idle, Duration::from_secs(6), "silent connection").await;
    println!("silent connection: closed after {} ms more", t.as_millis());
    closed_within(&mut stalled, Duration::from_secs(6), "stalled handshake").await;
    expect_logged(&["handshake timed out after 2s"]).await;
    expect_logged(&["handshake failed", "frame"]).await;
    assert!(serves(publish).await);
}

/// 500 idle TCP connections plus hostile ones on the server port of the real binary: a
/// well-behaved client still connects, traffic flows, and the server's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_idle_connections_keep_server_memory_bounded() {
    capture_logs();
    let pki = Pki::new("idle500");
    let port = free_port();
    let server = pki.server("rss", port, "handshake_timeout = 30\n").await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let fp = server_fingerprint(&pki);
    let echo = echo_service().await;
    let (port_a, port_b) = (free_port(), free_port());
    let client_cfg = |id: &str, publish| {
        ClientConfig::new(addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(fp)
            .with_id(id)
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(publish)))
    };
    let _a = client(client_cfg("rss-a", port_a)).await;
    assert!(serves(port_a).await);
    let before = server.rss_kib();

    let mut idle = Vec::with_capacity(500);
    for _ in 0..500 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut noise = TcpStream::connect(addr).await.unwrap();
    noise.write_all(&random_bytes(64 * 1024, 5)).await.unwrap();
    let mut big = TcpStream::connect(addr).await.unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).await.unwrap();

    // Accepted in order: once this client is in, the server has taken all 500.
    let started = Instant::now();
    let _b = client(client_cfg("rss-b", port_b)).await;
    let connect_time = started.elapsed();
    assert!(serves(port_b).await && serves(port_a).await);
    let after = server.rss_kib();
    closed_within(&mut noise, Duration::from_secs(3), "random bytes").await;
    let growth = after.saturating_sub(before);
    println!(
        "server RSS: {before} KiB before, {after} KiB with 500 idle connections \
         (+{growth} KiB, {} B per connection); a new client connected in {} ms",
        growth * 1024 / 500,
        connect_time.as_millis()
    );
    assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
    drop(idle);
    no_panic(&server);
}

fn server_fingerprint(pki: &Pki) -> tunnel_transport::Fingerprint {
    tunnel_transport::ServerIdentity::load(&tunnel_transport::ServerIdentitySource::Pem {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    })
    .unwrap()
    .fingerprint()
}

// ---------------------------------------------------------------------------------------------
// Back-pressure is per stream.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_on_one_stream_does_not_slow_another_stream_of_the_same_client() {
    capture_logs();
    let server = server().await;
    let echo = echo_service().await;
    let total = 64 * MIB;
    let data = Arc::new(random_bytes(total, 21));
    let sent = Arc::new(AtomicU64::new(0));
    let src = source_service(data.clone(), sent.clone()).await;
    let sink = sink_service().await;
    let (p_echo, p_src, p_sink) = (free_port(), free_port(), free_port());
    let _c = client(
        client_config(&server)
            .with_id("slow")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(p_echo)))
            .with_proxy(ProxyConfig::tcp("src", &src.to_string(), Some(p_src)))
            .with_proxy(ProxyConfig::tcp("sink", &sink.to_string(), Some(p_sink))),
    )
    .await;
    let payload = random_bytes(16 * MIB, 22);
    let timed = |what: &'static str| {
        let payload = payload.clone();
        async move {
            let t = Instant::now();
            let back = tokio::time::timeout(
                Duration::from_secs(10),
                roundtrip(published(p_echo), &payload),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: the echo stream stalled"));
            assert!(back == payload, "{what}: echoed bytes differ");
            t.elapsed()
        }
    };
    let alone = timed("alone").await;

    // A user that stops reading a service that talks, and a service that stops reading a
    // user who talks: both streams fill their windows and block.
    let mut reader = TcpStream::connect(published(p_src)).await.unwrap();
    let mut first = vec![0u8; 64 * 1024];
    reader.read_exact(&mut first).await.unwrap();
    let pushed = Arc::new(AtomicU64::new(0));
    let writer = {
        let pushed = pushed.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(published(p_sink)).await.unwrap();
            let chunk = vec![0x5au8; 64 * 1024];
            while s.write_all(&chunk).await.is_ok() {
                pushed.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        })
    };
    let src_blocked = wait_until_blocked(&sent, "the talking service").await;
    let sink_blocked = wait_until_blocked(&pushed, "the talking user").await;
    assert!(src_blocked < total as u64, "the source was never held back");

    let stalled = timed("beside two stalled streams").await;
    println!(
        "16 MiB echo: {} ms alone, {} ms beside two stalled streams \
         (held back at {} KiB and {} KiB)",
        alone.as_millis(),
        stalled.as_millis(),
        src_blocked / 1024,
        sink_blocked / 1024
    );
    assert!(
        stalled < alone * 4 + Duration::from_secs(3),
        "the stalled streams slowed the other one: {stalled:?} vs {alone:?}"
    );

    // The stalled stream resumes and is byte-exact.
    let mut rest = Vec::with_capacity(total);
    rest.extend_from_slice(&first);
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut rest))
        .await
        .expect("the stalled stream did not resume")
        .unwrap();
    assert!(rest.len() == total && rest[..] == data[..], "bytes differ");
    writer.abort();
}

// ---------------------------------------------------------------------------------------------
// Limits: the offender gets a clear error, everyone else goes on.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_clients() {
    capture_logs();
    let server = server_with(|c| c.with_max_clients(1)).await;
    let (mut a, port_a) = bystander(&server, "mc-a").await;
    let mut b = tunnel_client::start(client_config(&server).with_id("mc-b"))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "b told the server is full", || {
        let status = b.status();
        async move { matches!(&status, Status::Retrying(why) if why.contains("max_clients")) }
    })
    .await;
    assert!(serves(port_a).await);
    // A place frees up: b gets in by itself.
    a.shutdown();
    a.join().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), b.ready())
        .await
        .expect("b never got in")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_proxies_per_client() {
    capture_logs();
    let server = server_with(|c| c.with_max_proxies_per_client(2)).await;
    let (_a, port_a) = bystander(&server, "mp-a").await;
    let echo = echo_service().await.to_string();
    let ports = [free_port(), free_port(), free_port()];
    let mut cfg = client_config(&server).with_id("mp-b");
    for (i, p) in ports.iter().enumerate() {
        cfg = cfg.with_proxy(ProxyConfig::tcp(&format!("p{i}"), &echo, Some(*p)));
    }
    let mut b = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), b.ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.results.len(), 3);
    for r in &reply.results {
        let e = r.error.as_ref().expect("accepted beyond the limit");
        assert!(e.message.contains("max_proxies_per_client"), "{e}");
    }
    for p in ports {
        assert!(!is_listening(p).await);
    }
    assert!(serves(port_a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_streams_per_client() {
    capture_logs();
    let server = server_with(|c| c.with_max_streams_per_client(4)).await;
    let (_a, port_a) = bystander(&server, "ms-a").await;
    let (_b, port_b) = bystander(&server, "ms-b").await;
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(published(port_b)).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        open.push(s);
    }
    // The fifth is closed at once, without reaching the service.
    expect_prompt_close(&published(port_b).to_string(), Duration::from_secs(3)).await;
    expect_logged(&["too many streams", "max_streams_per_client", "ms-b"]).await;
    for s in &mut open {
        s.write_all(b"more").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"more");
    }
    assert!(serves(port_a).await, "another client suffered");
    drop(open.pop());
    eventually(Duration::from_secs(3), "a freed slot is usable", || {
        serves(port_b)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_frame_size_stops_the_offender_with_the_reason() {
    capture_logs();
    let server = server_with(|mut c| {
        c.max_frame_size = 1024;
        c
    })
    .await;
    let (_a, port_a) = bystander(&server, "mf-a").await;
    // A registration far over 1 KiB.
    let echo = echo_service().await.to_string();
    let mut cfg = client_config(&server).with_id("mf-b");
    for i in 0..16 {
        let name = format!("proxy-with-a-rather-long-name-{i:02}-{}", "x".repeat(20));
        cfg = cfg.with_proxy(ProxyConfig::tcp(&name, &echo, None).with_secret(&"s".repeat(60)));
    }
    let mut b = tunnel_client::start(cfg).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), b.ready())
        .await
        .expect("the offender was neither served nor told why")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_frame_size"), "unclear error: {err}");
    tokio::time::timeout(Duration::from_secs(5), b.join())
        .await
        .expect("the offender keeps retrying a request that cannot fit")
        .unwrap_err();
    assert!(serves(port_a).await);
    assert_eq!(server.snapshot().clients, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_max_pending_handshakes_and_handshake_timeout() {
    capture_logs();
    // On its own loopback address: other tests probe 127.0.0.1 ports they were given a
    // moment ago, and such a stray connection would take one of the four slots.
    let server = server_with(|mut c| {
        c.max_pending_handshakes = 4;
        c.handshake_timeout = 3;
        c.with_bind("127.0.0.3:0".parse().unwrap())
    })
    .await;
    let (_a, port_a) = bystander(&server, "mph-a").await;
    let addr = server.local_addr();
    // Silent connections, one at a time (the server may take back-to-back ones in any
    // order), until one is turned away at once: no TLS, not queued.
    let mut held = Vec::new();
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => panic!("the server spoke first"),
            Err(_) => held.push(s),
        }
        assert!(held.len() <= 4, "more than max_pending_handshakes held");
    }
    assert_eq!(held.len(), 4, "turned away below the limit");
    // The connected client does not notice.
    assert!(serves(port_a).await);
    // The holders are cut by the handshake timeout; then a new client gets in.
    for s in &mut held {
        closed_within(s, Duration::from_secs(6), "a pending connection").await;
    }
    let (_b, port_b) = bystander(&server, "mph-b").await;
    assert!(serves(port_b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failures_are_logged_with_the_peer_and_blocked_per_address() {
    capture_logs();
    let pki = Pki::new("authfail");
    let server = server_with(|c| c.with_tls_files(&pki.cert, &pki.key)).await;
    let addr = server.local_addr();
    // The offender comes from 127.0.0.2, so the well-behaved 127.0.0.1 is another source.
    let offender = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for i in 0..10 {
        let (mut tls, binding) = raw_tls(addr, offender, &pki.cert_pem).await.unwrap();
        let h = hello("guesser");
        write_message(&mut tls, &Message::Hello(h.clone()), 4096)
            .await
            .unwrap();
        let c = match read_message(&mut tls, 4096).await.unwrap() {
            Some(Message::Challenge(c)) => c,
            other => panic!("attempt {i}: expected a challenge, got {other:?}"),
        };
        write_message(&mut tls, &answer(&c, b"a wrong guess", &binding, &h), 4096)
            .await
            .unwrap();
        match read_message(&mut tls, 4096).await.unwrap() {
            Some(Message::Rejected(r)) => {
                assert_eq!(r.code, RejectCode::Auth);
                assert!(r.reason.contains("auth_key does not match"), "{}", r.reason);
            }
            other => panic!("attempt {i}: expected a rejection, got {other:?}"),
        }
    }
    // Blocked now: refused before TLS.
    assert!(
        raw_tls(addr, offender, &pki.cert_pem).await.is_err(),
        "the 11th attempt got a TLS handshake"
    );
    expect_logged(&["refusing it for 60s", "127.0.0.2"]).await;
    // Logged once per window, not once per attempt.
    assert_eq!(
        // `peer=127.0.0.2:`, not `127.0.0.2`: other tests guess from 127.0.0.20 and up.
        logged_count(&["client rejected: wrong auth key", "peer=127.0.0.2:"]),
        1,
        "auth failures are not rate-limited in the log"
    );
    // Another source is not affected.
    let (_good, port) = bystander(&server, "af-good").await;
    assert!(serves(port).await);
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown of the binaries.

/// A user connection through a published port, driven step by step by the test.
struct Transfer {
    stream: TcpStream,
    sent: Vec<u8>,
    back: Vec<u8>,
}

impl Transfer {
    async fn open(port: u16) -> Transfer {
        Transfer {
            stream: TcpStream::connect(published(port)).await.unwrap(),
            sent: Vec::new(),
            back: Vec::new(),
        }
    }

    /// Send `len` more bytes and read their echo.
    async fn step(&mut self, len: usize) {
        let chunk = random_bytes(len, self.sent.len() as u64 + 1);
        let (mut r, mut w) = self.stream.split();
        let mut buf = vec![0u8; len];
        let (wr, rd) = tokio::join!(w.write_all(&chunk), r.read_exact(&mut buf));
        wr.unwrap();
        rd.unwrap();
        self.sent.extend_from_slice(&chunk);
        self.back.extend_from_slice(&buf);
    }

    /// Half-close and read the rest; the whole exchange must be byte-exact.
    async fn finish(mut self) {
        self.stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), self.stream.read_to_end(&mut rest))
            .await
            .expect("the transfer did not finish")
            .unwrap();
        self.back.extend_from_slice(&rest);
        assert!(self.back == self.sent, "the transfer was not byte-exact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigterm_lets_the_open_transfer_finish_refuses_new_ones_and_exits_0() {
    capture_logs();
    let pki = Pki::new("term-server");
    let port = free_port();
    let mut server = pki.server("term", port, "shutdown_grace = 10\n").await;
    let echo = echo_service().await;
    let publish = free_port();
    let _c = client(
        ClientConfig::new(format!("127.0.0.1:{port}"))
            .with_auth_key(KEY)
            .with_fingerprint(server_fingerprint(&pki))
            .with_id("term-s")
            .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(publish))),
    )
    .await;
    let mut t = Transfer::open(publish).await;
    t.step(MIB).await;
    let term = Instant::now();
    server.signal("TERM");
    // New user connections and new clients are refused...
    eventually(Duration::from_secs(2), "public port closed", || async {
        !is_listening(publish).await
    })
    .await;
    eventually(Duration::from_secs(2), "client port closed", || async {
        !is_listening(port).await
    })
    .await;
    // ...while the open one goes on and ends byte-exact.
    assert!(
        server.is_running(),
        "the server did not wait for the open stream"
    );
    t.step(2 * MIB).await;
    t.finish().await;
    let finished = Instant::now();
    let status = server.exit_within(Duration::from_secs(9)).await;
    assert!(status.success(), "exit status {status:?}");
    println!(
        "server SIGTERM: exited {} ms after the last stream finished ({} ms after the signal; grace 10 s)",
        finished.elapsed().as_millis(),
        term.elapsed().as_millis()
    );
    assert!(
        finished.elapsed() < Duration::from_secs(3),
        "waited for nothing"
    );
    no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigterm_with_nothing_open_exits_at_once() {
    capture_logs();
    let pki = Pki::new("term-idle");
    let port = free_port();
    let mut server = pki.server("idle", port, "shutdown_grace = 10\n").await;
    let _c = client(
        ClientConfig::new(format!("127.0.0.1:{port}"))
            .with_auth_key(KEY)
            .with_fingerprint(server_fingerprint(&pki))
            .with_id("term-idle"),
    )
    .await;
    // A connection still in its handshake is not an open stream either.
    let _pending = TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let (_stalled, _) = raw_tls(
        format!("127.0.0.1:{port}").parse().unwrap(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &pki.cert_pem,
    )
    .await
    .unwrap();
    let term = Instant::now();
    server.signal("TERM");
    let status = server.exit_within(Duration::from_secs(9)).await;
    assert!(status.success(), "exit status {status:?}");
    println!(
        "server SIGTERM with nothing open: exited after {} ms",
        term.elapsed().as_millis()
    );
    assert!(
        term.elapsed() < Duration::from_secs(2),
        "took {:?}",
        term.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sigterm_lets_the_open_transfer_finish_refuses_new_ones_and_exits_0() {
    capture_logs();
    let pki = Pki::new("term-client");
    let server = server().await;
    let echo = echo_service().await;
    let publish = free_port();
    let mut client = pki.client(
        "term",
        &server.local_addr().to_string(),
        &server.fingerprint().to_string(),
        &format!(
            "id = \"term-c\"\nshutdown_grace = 10\n{}",
            proxy_toml("web", echo, Some(publish))
        ),
    );
    eventually(Duration::from_secs(10), "published port serves", || {
        serves(publish)
    })
    .await;
    let mut t = Transfer::open(publish).await;
    t.step(MIB).await;
    let term = Instant::now();
    client.signal("TERM");
    // New connections are turned away at once (the session lives on for the open one).
    eventually(Duration::from_secs(3), "new connections refused", || {
        refused_or_closed(publish)
    })
    .await;
    assert!(
        client.is_running(),
        "the client did not wait for the open stream"
    );
    t.step(2 * MIB).await;
    t.finish().await;
    let finished = Instant::now();
    let status = client.exit_within(Duration::from_secs(9)).await;
    assert!(status.success(), "exit status {status:?}");
    println!(
        "client SIGTERM: exited {} ms after the last stream finished ({} ms after the signal; grace 10 s)",
        finished.elapsed().as_millis(),
        term.elapsed().as_millis()
    );
    assert!(
        finished.elapsed() < Duration::from_secs(3),
        "waited for nothing"
    );
    eventually(Duration::from_secs(2), "public port closed", || async {
        !is_listening(publish).await
    })
    .await;
    no_panic(&client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sigint_with_nothing_open_exits_at_once() {
    capture_logs();
    let pki = Pki::new("term-cidle");
    let server = server().await;
    let echo = echo_service().await;
    let publish = free_port();
    let mut client = pki.client(
        "cidle",
        &server.local_addr().to_string(),
        &server.fingerprint().to_string(),
        &format!(
            "id = \"term-cidle\"\nshutdown_grace = 10\n{}",
            proxy_toml("web", echo, Some(publish))
        ),
    );
    eventually(Duration::from_secs(10), "published port serves", || {
        serves(publish)
    })
    .await;
    let term = Instant::now();
    client.signal("INT"); // Ctrl-C
    let status = client.exit_within(Duration::from_secs(9)).await;
    assert!(status.success(), "exit status {status:?}");
    println!(
        "client SIGINT with nothing open: exited after {} ms",
        term.elapsed().as_millis()
    );
    assert!(
        term.elapsed() < Duration::from_secs(2),
        "took {:?}",
        term.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Reconnection.

/// A client started while the server is down (its port speaks no TLS) keeps trying with
/// growing delays, capped by reconnect_max_delay, and is serving within about that cap once
/// the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waits_for_a_server_that_is_down_with_capped_backoff() {
    capture_logs();
    let pki = Pki::new("backoff");
    // Until the server is up, its port answers with something that is not TLS: every
    // attempt fails with a TLS error, which must be retried, not taken as final.
    let impostor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = impostor.local_addr().unwrap().port();
    let impostor = tokio::spawn(async move {
        while let Ok((mut s, _)) = impostor.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let echo = echo_service().await;
    let publish = free_port();
    let mut client = pki.client(
        "backoff",
        &format!("127.0.0.1:{port}"),
        &pki.fingerprint,
        &format!(
            "id = \"backoff\"\nreconnect_max_delay = 1\n{}",
            proxy_toml("web", echo, Some(publish))
        ),
    );
    // The server is down for a while: attempts back off up to the 1 s cap.
    let attempts = |log: &str| -> Vec<u64> {
        log.lines()
            .filter_map(|l| l.split("next attempt in ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    };
    eventually(Duration::from_secs(10), "the delay reached the cap", || {
        let delays = attempts(&client.log());
        async move { delays.iter().filter(|d| **d >= 500).count() >= 2 }
    })
    .await;
    assert!(client.is_running(), "the client gave up:\n{}", client.log());
    let delays = attempts(&client.log());
    assert!(delays[0] <= 100, "first delay {delays:?}");
    assert!(
        delays.iter().all(|d| *d <= 1000),
        "over the cap: {delays:?}"
    );
    assert!(
        client.log().contains("TLS handshake failed"),
        "{}",
        client.log()
    );

    impostor.abort();
    let _ = impostor.await;
    let server = pki.server("late", port, "").await;
    let up = Instant::now();
    eventually(Duration::from_secs(5), "published port serves", || {
        serves(publish)
    })
    .await;
    println!(
        "server up after an outage: client serving {} ms later (cap 1 s; delays {delays:?})",
        up.elapsed().as_millis()
    );
    assert!(up.elapsed() < Duration::from_secs(3));
    no_panic(&client);
    no_panic(&server);
}
