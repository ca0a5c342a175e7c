//! End to end: a user's first bytes go out with the stream's open, before the owner's status
//! (issue #19): what arrives, what proves they did not wait, and what happens when the owner
//! refuses or never answers.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::ProxyConfig;
use tunnel_proto::{Message, ProxyKind, ProxySpec, StreamOpen, StreamStatus};
use tunnel_testkit::*;
use tunnel_transport::write_message;

/// A tcp proxy `name` (a member of `group`, if any) a hand-driven client registers on
/// `port` of `server`.
async fn raw_owner(
    server: &tunnel_server::ServerHandle,
    id: &str,
    name: &str,
    group: Option<&str>,
    port: u16,
) -> RawClient {
    let spec = ProxySpec {
        publish_port: Some(port),
        group: group.map(str::to_owned),
        group_key: group.map(|_| KEY.to_owned()),
        ..ProxySpec::new(name, ProxyKind::Tcp)
    };
    raw_client(server.local_addr(), KEY, id, vec![spec]).await
}

#[tokio::test]
async fn a_one_mib_first_flight_sent_before_reading_arrives_exactly() {
    let service = collect_then_echo_service().await;
    let (_server, _client, port) = publish_tcp(TransportKind::Tls, "first-flight", service).await;
    let data = random_bytes(1 << 20, 19);
    let mut user = TcpStream::connect(published(port)).await.unwrap();
    // All of it is sent (and half-closed) before a single byte is read.
    user.write_all(&data).await.unwrap();
    user.shutdown().await.unwrap();
    let mut back = Vec::with_capacity(data.len());
    tokio::time::timeout(Duration::from_secs(20), user.read_to_end(&mut back))
        .await
        .expect("no answer within 20 s")
        .unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "the first flight came back altered");
}

/// The owner reads the user's bytes on the stream before it has answered the open at all:
/// with a server that waits for the status first, that read times out.
#[tokio::test]
async fn the_users_first_bytes_reach_the_owner_before_its_status() {
    let server = server().await;
    let port = free_port();
    let owner = raw_owner(&server, "early-owner", "early", None, port).await;
    first_bytes_before_status(&mut [owner], port).await;
}

/// The same through a load-balancing group of two: whichever member is tried first gets the
/// bytes before it answers (each is tried first once, in round-robin order).
#[tokio::test]
async fn a_group_member_gets_the_users_first_bytes_before_its_status() {
    let server = server().await;
    let port = free_port();
    let group = Some("early-group");
    let a = raw_owner(&server, "early-member-a", "member-a", group, port).await;
    let b = raw_owner(&server, "early-member-b", "member-b", group, port).await;
    let mut owners = [a, b];
    let first = first_bytes_before_status(&mut owners, port).await;
    let second = first_bytes_before_status(&mut owners, port).await;
    assert_ne!(
        first, second,
        "round robin: the other member is tried first next"
    );
}

/// A user sends a request on `port` and one of `owners` gets it before it answers; it
/// answers then, and the user gets the reply. Returns the name of the proxy that got it.
async fn first_bytes_before_status(owners: &mut [RawClient], port: u16) -> String {
    let mut user = TcpStream::connect(published(port)).await.unwrap();
    user.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

    let accepts = owners.iter_mut().map(|o| Box::pin(o.accept()));
    let ((mut stream, open), _, _) = futures::future::select_all(accepts).await;
    let StreamOpen::Proxy { proxy, .. } = open else {
        panic!("expected a proxy stream, got {open:?}");
    };
    let mut request = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut request))
        .await
        .expect("the user's bytes did not come before the owner's status")
        .unwrap();
    assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");

    // Answering now: the status, then the reply, in one write as a future client may.
    let mut reply = tunnel_proto::encode_to_vec(
        &Message::StreamStatus(StreamStatus::Ok),
        tunnel_proto::DEFAULT_MAX_FRAME,
    )
    .unwrap();
    reply.extend_from_slice(b"HTTP/1.1 204 No Content\r\n\r\n");
    stream.write_all(&reply).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), user.read_to_end(&mut got))
        .await
        .expect("no reply within 5 s")
        .unwrap();
    assert_eq!(got, b"HTTP/1.1 204 No Content\r\n\r\n");
    proxy
}

/// The local service is down: the client answers the open with an error, and the user who
/// already sent its request is reset at once (not after the 15 s status timeout); the
/// client still warns about its service as before.
#[tokio::test]
async fn a_refused_stream_resets_the_user_at_once() {
    let server = server().await;
    let (_closed, down) = refusing_port();
    let port = free_port();
    let proxy = ProxyConfig::tcp("down-early", &format!("127.0.0.1:{down}"), Some(port));
    let _client = client(client_config(&server).with_proxy(proxy)).await;

    let started = Instant::now();
    let mut user = TcpStream::connect(published(port)).await.unwrap();
    user.write_all(b"hello, anyone?").await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), user.read(&mut buf))
        .await
        .expect("the user's connection stayed open for 5 s");
    let took = started.elapsed();
    let err = read.expect_err("a refused stream must reset the user, not end it cleanly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    eprintln!("user reset {took:?} after connecting to a proxy whose service is down");
    expect_logged(&["down-early", "local service unreachable"]).await;
    // The server is fine and the port serves again once the service is back.
    assert!(is_listening(port).await);
}

/// An owner that takes the stream and never answers: the user's connection is torn down by
/// the server's status timeout (15 s), which stops counting once a status is in.
#[tokio::test]
async fn an_owner_that_never_answers_is_cut_off_by_the_status_timeout() {
    let server = server().await;
    let port = free_port();
    let mut owner = raw_owner(&server, "silent-owner", "silent", None, port).await;
    let started = Instant::now();
    let mut user = TcpStream::connect(published(port)).await.unwrap();
    user.write_all(b"anyone?").await.unwrap();
    let (mut held, _) = owner.accept().await;
    let mut got = [0u8; 7];
    held.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"anyone?");

    let took = closed_within(
        &mut user,
        Duration::from_secs(25),
        "the silent owner's user",
    )
    .await;
    let took = took.max(started.elapsed());
    eprintln!("user cut off {took:?} after its connection, the owner silent");
    assert!(
        took >= Duration::from_secs(14) && took < Duration::from_secs(20),
        "cut off after {took:?}, not at the 15 s status timeout"
    );
    // The session itself is untouched: the owner still serves a stream it answers.
    let mut user = TcpStream::connect(published(port)).await.unwrap();
    user.write_all(b"again").await.unwrap();
    let (mut stream, _) = owner.accept().await;
    let ok = Message::StreamStatus(StreamStatus::Ok);
    write_message(&mut stream, &ok, 4096).await.unwrap();
    let mut again = [0u8; 5];
    stream.read_exact(&mut again).await.unwrap();
    stream.write_all(b"there").await.unwrap();
    let mut reply = [0u8; 5];
    user.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"there");
    drop(held);
}

/// A group whose second member's service is down: each user sends 100 KiB (more than the
/// server keeps to send again) before reading; whichever member is tried first, every
/// connection reaches the live one with its bytes exact, the refusing member's copy replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_replays_the_first_flight_to_the_next_member_when_one_refuses() {
    let server = server().await;
    let live = collect_then_echo_service().await;
    let (_closed, down) = refusing_port();
    let port = free_port();
    let member = |name: &str, local: String| {
        ProxyConfig::tcp(name, &local, Some(port)).with_group("flight", KEY)
    };
    let cfg = |id: &str| client_config(&server).with_id(id);
    let _a = client(cfg("flight-a").with_proxy(member("flight-a", live.to_string()))).await;
    let down = format!("127.0.0.1:{down}");
    let _b = client(cfg("flight-b").with_proxy(member("flight-b", down))).await;
    for i in 0..6 {
        let data = random_bytes(100 << 10, 40 + i);
        let mut user = TcpStream::connect(published(port)).await.unwrap();
        user.write_all(&data).await.unwrap();
        user.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), user.read_to_end(&mut back))
            .await
            .expect("no answer within 10 s")
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(back.len(), data.len(), "connection {i}");
        assert!(back == data, "connection {i}: the bytes came back altered");
    }
    expect_logged(&["flight-b", "local service unreachable"]).await;
}

/// The HTTPS virtual host: the ClientHello it read to route the user goes to the owner with
/// the stream's open, before the owner has answered.
#[tokio::test]
async fn the_client_hello_reaches_an_https_owner_before_its_status() {
    let server = server_with(|c| c.with_vhost_https_bind("127.0.0.1:0".parse().unwrap())).await;
    let spec = ProxySpec {
        http: Some(tunnel_proto::HttpRoute {
            domains: vec!["early.test".into()],
            ..Default::default()
        }),
        ..ProxySpec::new("early-https", ProxyKind::Https)
    };
    let mut owner = raw_client(server.local_addr(), KEY, "early-https-owner", vec![spec]).await;
    let hello = fragmented_client_hello("early.test", 16_384);
    let mut user = TcpStream::connect(server.vhost_https_addr().unwrap())
        .await
        .unwrap();
    user.write_all(&hello).await.unwrap();

    let (mut stream, open) = owner.accept().await;
    assert!(
        matches!(&open, StreamOpen::Proxy { proxy, .. } if proxy == "early-https"),
        "{open:?}"
    );
    let mut got = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
        .await
        .expect("the ClientHello did not come before the owner's status")
        .unwrap();
    assert!(got == hello, "the ClientHello arrived altered");
    let ok = Message::StreamStatus(StreamStatus::Ok);
    write_message(&mut stream, &ok, 4096).await.unwrap();
    stream.write_all(b"server hello").await.unwrap();
    let mut reply = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), user.read_exact(&mut reply))
        .await
        .expect("no reply within 5 s")
        .unwrap();
    assert_eq!(&reply, b"server hello");
}
