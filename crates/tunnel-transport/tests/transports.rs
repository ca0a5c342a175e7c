//! Every transport over real loopback sockets: the same byte-stream checks for tls, h2, wss
//! (all on the one TLS port) and plain ws, plus what the server does with strangers.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tunnel_proto::{Message, DEFAULT_MAX_FRAME};
use tunnel_transport::{
    client_transport, read_message, write_message, ClientTrust, Established, ServerIdentity,
    ServerTransport, Transport, TransportError, TransportKind, WsTransport, DEFAULT_WS_PATH,
};

const DEADLINE: Duration = Duration::from_secs(10);

fn identity() -> &'static ServerIdentity {
    static ID: OnceLock<ServerIdentity> = OnceLock::new();
    ID.get_or_init(|| ServerIdentity::self_signed(&["localhost".to_owned()]).unwrap())
}

fn trust() -> ClientTrust {
    ClientTrust::Fingerprint(identity().fingerprint())
}

/// The server side for `kind`: the one TLS port, or the plain ws listener.
fn server_for(kind: TransportKind, path: &str) -> Box<dyn Transport> {
    match kind {
        TransportKind::Ws => Box::new(WsTransport::plain_server(path)),
        _ => Box::new(ServerTransport::new(identity(), path).unwrap()),
    }
}

/// Connect a client of `kind` to a fresh server; both ends established.
async fn pair_at(kind: TransportKind, server_path: &str, client_path: &str) -> PairResult {
    let server = server_for(kind, server_path);
    let client = client_transport(kind, "localhost", &trust(), client_path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accept = async {
        let (tcp, peer) = listener.accept().await.unwrap();
        server.accept(tcp, peer).await
    };
    tokio::time::timeout(DEADLINE, async {
        tokio::join!(accept, client.connect(&addr))
    })
    .await
    .expect("handshake hung")
}

type PairResult = (
    Result<Established, TransportError>,
    Result<Established, TransportError>,
);

async fn pair(kind: TransportKind) -> (Established, Established) {
    let (s, c) = pair_at(kind, DEFAULT_WS_PATH, DEFAULT_WS_PATH).await;
    (s.unwrap(), c.unwrap())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_carries_frames_both_ways_with_the_right_kind_and_binding() {
    for kind in TransportKind::ALL {
        let (mut s, mut c) = pair(kind).await;
        assert_eq!((s.transport, c.transport), (kind, kind));
        match kind {
            // Our own TLS on both ends: the same exported keying material.
            TransportKind::Ws => assert_eq!((s.binding, c.binding), (None, None)),
            _ => {
                assert!(s.binding.is_some(), "{kind}");
                assert_eq!(s.binding, c.binding, "{kind}");
            }
        }
        write_message(&mut c.stream, &Message::Ping(7), DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let got = read_message(&mut s.stream, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert_eq!(got, Some(Message::Ping(7)), "{kind}");
        write_message(&mut s.stream, &Message::Pong(7), DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let got = read_message(&mut c.stream, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert_eq!(got, Some(Message::Pong(7)), "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_each_way_at_once_is_byte_exact_and_shutdown_is_eof() {
    for kind in TransportKind::ALL {
        let (s, c) = pair(kind).await;
        let up = pattern(8 << 20, 1);
        let down = pattern(8 << 20, 2);
        let (mut sr, mut sw) = tokio::io::split(s.stream);
        let (mut cr, mut cw) = tokio::io::split(c.stream);
        let (u, d) = (up.clone(), down.clone());
        let work = async move {
            let c_write = async {
                cw.write_all(&u).await.unwrap();
                cw.flush().await.unwrap();
            };
            let s_write = async {
                sw.write_all(&d).await.unwrap();
                sw.flush().await.unwrap();
            };
            let s_read = async {
                let mut got = vec![0u8; u.len()];
                sr.read_exact(&mut got).await.unwrap();
                got
            };
            let c_read = async {
                let mut got = vec![0u8; d.len()];
                cr.read_exact(&mut got).await.unwrap();
                got
            };
            let ((), (), at_server, at_client) = tokio::join!(c_write, s_write, s_read, c_read);
            // The client ends its side: the server reads EOF, not an error.
            cw.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let eof = sr.read_to_end(&mut rest).await;
            (at_server, at_client, eof.map(|_| rest))
        };
        let (at_server, at_client, eof) = tokio::time::timeout(DEADLINE, work)
            .await
            .unwrap_or_else(|_| panic!("{kind}: transfer hung"));
        assert!(at_server == up, "{kind}: upload corrupted");
        assert!(at_client == down, "{kind}: download corrupted");
        assert_eq!(eof.unwrap(), Vec::<u8>::new(), "{kind}: no clean EOF");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_holds_the_writer_back_with_bounded_buffering() {
    const OFFERED: usize = 256 << 20;
    for kind in [TransportKind::H2, TransportKind::Wss, TransportKind::Ws] {
        let (mut s, mut c) = pair(kind).await;
        let written = Arc::new(AtomicUsize::new(0));
        let progress = written.clone();
        let writer = tokio::spawn(async move {
            let chunk = vec![0x5a_u8; 64 << 10];
            while progress.load(Ordering::Relaxed) < OFFERED {
                if c.stream.write_all(&chunk).await.is_err() {
                    break;
                }
                c.stream.flush().await.unwrap();
                progress.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            c
        });
        // Wait (with a deadline) until the writer makes no progress for half a second.
        let deadline = Instant::now() + DEADLINE;
        let mut last = usize::MAX;
        loop {
            let now = written.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind}: the writer never stalled"
            );
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("{kind}: a stalled reader let {last} bytes through");
        // Windows (h2), the socket buffers and TLS hold this; nothing grows without bound.
        assert!(
            last < 32 << 20,
            "{kind}: {last} bytes accepted by a stalled reader"
        );
        // Reading resumes the writer, and every byte arrives.
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        while total < OFFERED {
            let n = tokio::time::timeout(DEADLINE, s.stream.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{kind}: stalled after the reader resumed"))
                .unwrap();
            assert!(n > 0, "{kind}: early EOF at {total}");
            total += n;
        }
        assert_eq!(total, OFFERED);
        writer.await.unwrap();
    }
}

/// A TLS client offering `alpn` (nothing if empty) that trusts the server certificate.
async fn raw_tls(
    addr: std::net::SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_slice(identity().cert_pem().as_bytes())
        .unwrap();
    roots.add(ca).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Start accepting one connection on a fresh server port; returns its address and the
/// accept result (which must come back promptly).
async fn one_accept(
    server: Box<dyn Transport>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Established, TransportError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.accept(tcp, peer))
            .await
            .expect("the server held a stranger's connection open")
    });
    (addr, task)
}

async fn http1_exchange<S>(mut io: S, request: &str) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    io.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, io.read_to_end(&mut answer))
        .await
        .expect("the server did not close after answering");
    String::from_utf8_lossy(&answer).into_owned()
}

fn not_tunnel(r: Result<Established, TransportError>) -> String {
    match r {
        Err(TransportError::NotTunnel(why)) => why,
        other => panic!("expected NotTunnel, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_on_the_tls_port_are_answered_or_closed_promptly() {
    let tls_port = || server_for(TransportKind::Tls, DEFAULT_WS_PATH);

    // Random bytes: not TLS at all.
    let (addr, task) = one_accept(tls_port()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.write_all(&pattern(4096, 9)).await;
    assert!(matches!(
        task.await.unwrap(),
        Err(TransportError::Handshake(_))
    ));

    // TLS without ALPN.
    let (addr, task) = one_accept(tls_port()).await;
    let _tls = raw_tls(addr, &[]).await;
    assert!(not_tunnel(task.await.unwrap()).contains("no ALPN"));

    // HTTP/1.1 over TLS: a plain GET, a wrong upgrade path.
    for (request, logged) in [
        ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET /"),
        (
            "GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            "GET /elsewhere",
        ),
    ] {
        let (addr, task) = one_accept(tls_port()).await;
        let tls = raw_tls(addr, &[b"http/1.1"]).await;
        let answer = http1_exchange(tls, request).await;
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        let why = not_tunnel(task.await.unwrap());
        assert!(why.contains(logged) && why.contains("404"), "{why}");
    }

    // HTTP/2 GET / (what a browser or curl sends): 404, then the connection closes.
    let (addr, task) = one_accept(tls_port()).await;
    let tls = raw_tls(addr, &[b"h2"]).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::get("https://localhost/").body(()).unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = tokio::time::timeout(DEADLINE, resp).await.unwrap().unwrap();
    assert_eq!(resp.status(), http::StatusCode::NOT_FOUND);
    let why = not_tunnel(task.await.unwrap());
    assert!(why.contains("GET /") && why.contains("404"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_is_a_404_the_client_explains() {
    for kind in [TransportKind::H2, TransportKind::Wss, TransportKind::Ws] {
        let (s, c) = pair_at(kind, "/tunnel", "/wrong").await;
        assert!(
            matches!(s, Err(TransportError::NotTunnel(_))),
            "{kind}: {s:?}"
        );
        match c {
            Err(TransportError::HttpRefused(why)) => {
                assert!(
                    why.contains("404") && why.contains("ws_path"),
                    "{kind}: {why}"
                )
            }
            other => panic!("{kind}: expected HttpRefused, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_and_a_close_frame_is_a_clean_eof() {
    let (addr, task) = one_accept(server_for(TransportKind::Ws, "/t")).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/t"), tcp)
        .await
        .unwrap();
    let mut server = task.await.unwrap().unwrap();
    assert_eq!(server.transport, TransportKind::Ws);
    // The server answers pings while it reads.
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let r = server.stream.read_to_end(&mut got).await;
        (r.map(|_| got), server)
    });
    ws.send(WsMessage::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert!(
        matches!(&pong, Some(Ok(WsMessage::Pong(p))) if &p[..] == b"are you there"),
        "{pong:?}"
    );
    ws.send(WsMessage::Binary(b"data".to_vec().into()))
        .await
        .unwrap();
    ws.close(None).await.unwrap();
    let (got, _server) = tokio::time::timeout(DEADLINE, reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap(), b"data", "a close frame must read as EOF");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_is_an_error_not_data() {
    let (addr, task) = one_accept(server_for(TransportKind::Ws, "/t")).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/t"), tcp)
        .await
        .unwrap();
    let mut server = task.await.unwrap().unwrap();
    ws.send(WsMessage::Text("hello".into())).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(DEADLINE, server.stream.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::InvalidData),
        "{r:?}"
    );
}

#[tokio::test]
async fn roles_are_checked() {
    let server = ServerTransport::new(identity(), "/t").unwrap();
    assert!(matches!(
        server.connect("127.0.0.1:1").await,
        Err(TransportError::WrongRole)
    ));
    let client = client_transport(TransportKind::H2, "localhost", &trust(), "/t").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let peer = tcp.local_addr().unwrap();
    assert!(matches!(
        client.accept(tcp, peer).await,
        Err(TransportError::WrongRole)
    ));
    assert_eq!("wss".parse::<TransportKind>().unwrap(), TransportKind::Wss);
    let err = "quic".parse::<TransportKind>().unwrap_err().to_string();
    assert!(err.contains("\"h2\"") && err.contains("quic"), "{err}");
}
