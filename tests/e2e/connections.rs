//! End to end: a client spreading its streams over several TLS connections (`connections`),
//! through a real server on loopback. The server's stats endpoint tells where each stream
//! went; relays in front of the server fail single connections. Log lines are captured (see
//! `common::capture_logs`), so every test calls it first and uses its own client ids.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig, Status, VisitorConfig};
use tunnel_server::{ServerConfig, ServerHandle};
use tunnel_testkit::*;

const WAIT: Duration = Duration::from_secs(10);

/// What the server's stats endpoint says of client `id`, or `Null` if it is not connected.
async fn client_stats(server: &ServerHandle, id: &str) -> serde_json::Value {
    let all = stats_json(server.stats_addr().unwrap()).await;
    all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_default()
}

async fn streams_per_connection(server: &ServerHandle, id: &str) -> Vec<u64> {
    let c = client_stats(server, id).await;
    c["streams_per_connection"]
        .as_array()
        .map(|a| a.iter().map(|n| n.as_u64().unwrap()).collect())
        .unwrap_or_default()
}

async fn wait_for_connections(server: &ServerHandle, id: &str, n: usize) {
    eventually(WAIT, &format!("{id} on {n} connections"), || async {
        streams_per_connection(server, id).await.len() == n
    })
    .await;
}

/// A user connection held open: proven to echo once, so the stream behind it is counted.
async fn open_echoing(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    echo_once(&mut s, b"ping").await;
    s
}

async fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(back, msg);
}

/// Echo `len` random bytes over each of `n` concurrent connections to `addr`.
async fn concurrent_echoes(addr: SocketAddr, n: u64, len: usize) {
    let mut tasks = Vec::new();
    for seed in 0..n {
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(len, seed);
            let back = roundtrip(addr, &data).await;
            assert!(back == data, "connection {seed}: echoed bytes differ");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A server (set up by `server_cfg`), an echo service published on `port`, and client `id` on
/// `connections` connections, through a [`Relay`] when `via_relay`, all connected.
struct Setup {
    server: ServerHandle,
    relay: Option<Relay>,
    port: u16,
    client: ClientHandle,
}

async fn setup(
    id: &str,
    connections: usize,
    via_relay: bool,
    server_cfg: impl FnOnce(ServerConfig) -> ServerConfig,
) -> Setup {
    capture_logs();
    let server = server_with(server_cfg).await;
    let relay = match via_relay {
        true => Some(Relay::start(server.local_addr()).await),
        false => None,
    };
    let echo = echo_service().await;
    let port = free_port();
    let mut cfg = client_config(&server)
        .with_id(id)
        .with_connections(connections)
        .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(port)));
    if let Some(r) = &relay {
        cfg.server_addr = r.addr.to_string().into();
    }
    let client = client(cfg).await;
    Setup {
        server,
        relay,
        port,
        client,
    }
}

async fn stop(mut client: ClientHandle) {
    client.shutdown();
    client.join().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_spread_evenly_over_the_connections_and_arrive_exactly() {
    let Setup {
        server,
        port,
        client,
        ..
    } = setup("spread", 3, false, |c| c).await;
    wait_for_connections(&server, "spread", 3).await;

    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(open_echoing(published(port)).await);
    }
    assert_eq!(streams_per_connection(&server, "spread").await, [2, 2, 2]);
    for (i, s) in held.iter_mut().enumerate() {
        echo_once(s, format!("still there {i}").as_bytes()).await;
    }
    drop(held);
    eventually(WAIT, "streams released", || async {
        streams_per_connection(&server, "spread").await == [0, 0, 0]
    })
    .await;

    concurrent_echoes(published(port), 6, 2 << 20).await;
    stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_extra_connection_rejoins_while_the_session_and_its_streams_go_on() {
    let Setup {
        server,
        relay,
        port,
        client,
    } = setup("rejoin", 2, true, |c| c).await;
    let relay = relay.unwrap();
    wait_for_connections(&server, "rejoin", 2).await;
    assert_eq!(relay.accepted(), 2);

    // One stream on each connection; then the extra connection (accepted second) fails.
    let mut first = open_echoing(published(port)).await;
    let mut second = open_echoing(published(port)).await;
    assert_eq!(streams_per_connection(&server, "rejoin").await, [1, 1]);
    relay.kill(1);

    // The stream on the lost connection ends; the one on the first goes on.
    let mut buf = [0u8; 1];
    let end = tokio::time::timeout(WAIT, second.read(&mut buf)).await;
    assert!(
        matches!(end, Ok(Ok(0) | Err(_))),
        "the stream on the lost connection did not end: {end:?}"
    );
    echo_once(&mut first, b"unaffected").await;
    // It rejoins by itself, and the session was never lost.
    eventually(WAIT, "a third connection", || async {
        relay.accepted() == 3
    })
    .await;
    wait_for_connections(&server, "rejoin", 2).await;
    assert!(matches!(client.status(), Status::Ready(_)));
    expect_logged(&["extra connection lost"]).await;
    echo_once(&mut first, b"still unaffected").await;
    concurrent_echoes(published(port), 4, 256 << 10).await;
    drop(first);
    stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_first_connection_restarts_the_session_with_all_its_connections() {
    let Setup {
        server,
        relay,
        port,
        client,
    } = setup("restart", 2, true, |c| c).await;
    let relay = relay.unwrap();
    wait_for_connections(&server, "restart", 2).await;
    let before = client_stats(&server, "restart").await["address"].clone();

    relay.kill(0);
    // A new session (new first connection) with its extra one; the old extra one is gone.
    eventually(WAIT, "a new session", || async {
        let c = client_stats(&server, "restart").await;
        c["address"] != before && c["connections"] == 2
    })
    .await;
    assert_eq!(relay.accepted(), 4);
    // Only the very first handshake was a full one: the extra connection and the whole new
    // session resumed with the server's tickets.
    assert_eq!(resumed_handshakes(&server).await, 3);
    concurrent_echoes(published(port), 4, 256 << 10).await;
    stop(client).await;
}

/// `tunnel_handshakes_resumed_total` of `server`.
async fn resumed_handshakes(server: &ServerHandle) -> u64 {
    let text = stats_get(server.stats_addr().unwrap(), "/metrics", &[])
        .await
        .body;
    text.lines()
        .find_map(|l| l.strip_prefix("tunnel_handshakes_resumed_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no resumed count in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_caps_connections_per_client_and_the_client_goes_on_with_those() {
    let Setup {
        server,
        port,
        client,
        ..
    } = setup("capped", 4, false, |c| c.with_max_connections_per_client(2)).await;
    wait_for_connections(&server, "capped", 2).await;
    expect_logged(&["capped", "max_connections_per_client is 2"]).await;
    // Refused connections are not retried in a loop: two refusals, then quiet.
    eventually(WAIT, "two refusals", || async {
        logged_count(&["extra connection refused", "capped"]) >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        streams_per_connection(&server, "capped").await.len(),
        2,
        "connections changed after the refusals"
    );
    assert!(
        logged_count(&["extra connection refused", "capped"]) <= 4,
        "refused extra connections were retried"
    );
    concurrent_echoes(published(port), 4, 256 << 10).await;
    stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_streams_spread_over_the_visitors_connections() {
    capture_logs();
    let server = server().await;
    let echo = echo_service().await;
    let owner_cfg = client_config(&server)
        .with_id("lanes-owner")
        .with_connections(2)
        .with_proxy(ProxyConfig::tcp("lanes-db", &echo.to_string(), None).with_secret("s3"));
    let owner = client(owner_cfg).await;
    let bind = visitor_bind();
    let visitor_cfg: ClientConfig = client_config(&server)
        .with_id("lanes-visitor")
        .with_connections(2)
        .with_visitor(VisitorConfig::new("v", "lanes-db", 0, &bind).with_secret("s3"));
    let visitor = client(visitor_cfg).await;
    wait_for_connections(&server, "lanes-owner", 2).await;
    wait_for_connections(&server, "lanes-visitor", 2).await;

    let at: SocketAddr = bind.parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open_echoing(at).await);
    }
    assert_eq!(
        streams_per_connection(&server, "lanes-visitor").await,
        [2, 2]
    );
    assert_eq!(streams_per_connection(&server, "lanes-owner").await, [2, 2]);
    drop(held);
    concurrent_echoes(at, 4, 1 << 20).await;
    stop(owner).await;
    stop(visitor).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_on_extra_connections_finish_during_a_graceful_shutdown() {
    let Setup {
        server,
        port,
        mut client,
        ..
    } = setup("drain", 2, false, |c| c).await;
    wait_for_connections(&server, "drain", 2).await;
    let mut a = open_echoing(published(port)).await;
    let mut b = open_echoing(published(port)).await;
    assert_eq!(streams_per_connection(&server, "drain").await, [1, 1]);

    client.shutdown();
    // Open streams on both connections still carry data while the client drains.
    echo_once(&mut a, b"first connection").await;
    echo_once(&mut b, b"extra connection").await;
    drop((a, b));
    tokio::time::timeout(WAIT, client.join())
        .await
        .expect("the client did not stop once its streams ended")
        .unwrap();
    eventually(WAIT, "the client gone", || async {
        client_stats(&server, "drain").await.is_null()
    })
    .await;
}

/// Authenticate a raw connection as `client_id` with `instance`, as the client engine does,
/// and return the server's answer: the welcomed stream and its id, or the rejection.
async fn raw_handshake(
    server: &ServerHandle,
    client_id: &str,
    instance: [u8; 16],
) -> Result<(tunnel_transport::BoxedStream, u64), tunnel_proto::Rejected> {
    use tunnel_proto::{auth, AuthResponse, Hello, Message};
    use tunnel_transport::{read_message, write_message, ClientTrust, TlsTransport, Transport};
    const MAX: usize = tunnel_proto::DEFAULT_MAX_FRAME;
    let trust = ClientTrust::Fingerprint(server.fingerprint());
    let tls = TlsTransport::client("localhost", &trust).unwrap();
    let est = tls.connect(&server.local_addr().to_string()).await.unwrap();
    let mut s = est.stream;
    let hello = Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: client_id.into(),
        instance,
    };
    write_message(&mut s, &Message::Hello(hello.clone()), MAX)
        .await
        .unwrap();
    let Some(Message::Challenge(c)) = read_message(&mut s, MAX).await.unwrap() else {
        panic!("no challenge");
    };
    let binding = est.binding.unwrap();
    let mac = auth::compute_mac(KEY.as_bytes(), &c.nonce, &binding, &hello);
    write_message(&mut s, &Message::AuthResponse(AuthResponse { mac }), MAX)
        .await
        .unwrap();
    match read_message(&mut s, MAX).await.unwrap() {
        Some(Message::Welcome(w)) => Ok((s, w.connection_id)),
        Some(Message::Rejected(r)) => Err(r),
        other => panic!("unexpected answer: {other:?}"),
    }
}

/// Open the first stream of a welcomed connection as a join of `session`; the status text.
async fn raw_join(stream: tunnel_transport::BoxedStream, session: u64) -> Result<(), String> {
    use tunnel_proto::{Message, StreamOpen, StreamStatus};
    use tunnel_transport::{read_message, write_message};
    const MAX: usize = tunnel_proto::DEFAULT_MAX_FRAME;
    let cfg = tunnel_mux::MuxConfig::default();
    let (control, _incoming) = tunnel_mux::start(stream, tunnel_mux::Mode::Client, &cfg);
    let mut first = control.open().await.unwrap();
    let open = Message::StreamOpen(StreamOpen::Join { session });
    write_message(&mut first, &open, MAX).await.unwrap();
    let answer = tokio::time::timeout(WAIT, read_message(&mut first, MAX))
        .await
        .expect("no answer to the join");
    match answer {
        Ok(Some(Message::StreamStatus(StreamStatus::Ok))) => Ok(()),
        Ok(Some(Message::StreamStatus(StreamStatus::Error(e)))) => Err(e),
        other => panic!("unexpected answer to the join: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_that_name_no_live_session_of_the_same_client_are_refused() {
    let Setup {
        server,
        port,
        client,
        ..
    } = setup("owner-of-7", 1, false, |c| c).await;
    let live = client_stats(&server, "owner-of-7").await;
    assert_eq!(live["connections"], 1);

    // A session id that does not exist, from a client with no session at all.
    let (s, _) = raw_handshake(&server, "nobody", [1; 16]).await.unwrap();
    let e = raw_join(s, 424_242).await.unwrap_err();
    assert!(e.contains("not live"), "{e}");

    // Another process (another instance token) using a live client's id never gets as far
    // as a join: the handshake itself is refused.
    let r = raw_handshake(&server, "owner-of-7", [2; 16])
        .await
        .err()
        .expect("a second instance of a live client id was welcomed");
    assert_eq!(r.code, tunnel_proto::RejectCode::IdInUse);

    // Its own welcome id is a session id too, but not a live session of its client.
    let (s, own) = raw_handshake(&server, "nobody", [1; 16]).await.unwrap();
    let e = raw_join(s, own).await.unwrap_err();
    assert!(e.contains("not live"), "{e}");

    // The live client never noticed.
    assert_eq!(client_stats(&server, "owner-of-7").await["connections"], 1);
    concurrent_echoes(published(port), 2, 64 << 10).await;
    stop(client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_shuts_down_is_logged_as_disconnected_not_failed() {
    capture_logs();
    let server = server().await;
    for (id, connections) in [("clean-exit-1", 1), ("clean-exit-3", 3)] {
        let mut c = client(
            client_config(&server)
                .with_id(id)
                .with_connections(connections),
        )
        .await;
        wait_for_connections(&server, id, connections).await;
        let mark = log_mark();
        c.shutdown();
        c.join().await.unwrap();
        let gone = format!("client {id} disconnected");
        expect_logged(&["INFO", &gone]).await;
        // Nothing about this session says it failed, at any level.
        let session = format!("client={id}");
        for word in ["WARN", "ERROR", "failed", "connection error"] {
            assert_eq!(
                logged_count_since(mark, &[session.as_str(), word]),
                0,
                "{id}: a clean exit logged {word:?}"
            );
        }
    }
}
