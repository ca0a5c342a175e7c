//! Real HTTP services (hyper): HTTP/1.1, h2c and HTTP/2 over TLS, which count their
//! connections and echo what they received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The services' response body.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Counters a test service keeps.
#[derive(Default, Debug)]
pub struct Seen {
    /// TCP connections accepted.
    pub connections: AtomicUsize,
    /// Requests served.
    pub requests: AtomicUsize,
    /// Requests in progress now.
    pub in_flight: AtomicUsize,
    /// The most requests in progress at once.
    pub max_in_flight: AtomicUsize,
}

/// A running service.
#[derive(Debug)]
pub struct Service {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it has seen so far.
    pub seen: Arc<Seen>,
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|n| match n {}).boxed()
}

/// Routes: `/echo` streams the request body back; `/bytes/N` answers N bytes (at most
/// 64 MiB); `/sink` reads the request body and answers its length; `/slow` answers after 3 s;
/// `/slow-ok` after 300 ms; `/ws` upgrades and echoes raw bytes; `/grpc` answers with a
/// body and `grpc-status` trailers; anything else describes the request, one
/// `name: value` line per header, after a `METHOD path` line.
async fn handle(seen: Arc<Seen>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    seen.requests.fetch_add(1, Ordering::SeqCst);
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let resp = match req.uri().path() {
        "/echo" => Response::new(req.into_body().boxed()),
        "/sink" => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                n += frame.data_ref().map_or(0, |d| d.len());
            }
            Response::new(full(n.to_string()))
        }
        path if path.starts_with("/bytes/") => {
            let n: usize = path["/bytes/".len()..].parse().unwrap_or(0);
            Response::new(full(vec![b'x'; n.min(64 << 20)]))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Response::new(full("slow"))
        }
        "/slow-ok" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::new(full("ok"))
        }
        "/ws" => {
            let up = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(u) = up.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(u));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(""))
                .unwrap()
        }
        "/grpc" => {
            let got = req.into_body().collect().await.map(|c| c.to_bytes());
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "all-good".parse().unwrap());
            let mut reply = b"reply-to:".to_vec();
            reply.extend_from_slice(&got.unwrap_or_default());
            let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = vec![
                Ok(Frame::data(Bytes::from(reply))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(futures::stream::iter(frames)).boxed())
                .unwrap()
        }
        _ => {
            let mut text = format!("{} {}\n", req.method(), req.uri());
            for (k, v) in req.headers() {
                text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
            }
            Response::new(full(text))
        }
    };
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(resp)
}

/// The status code of a raw HTTP/1.1 answer (`"404"`), or `""` if there is none.
pub fn status_code(answer: &str) -> &str {
    answer.split_whitespace().nth(1).unwrap_or("")
}

/// An HTTP/1.1 keep-alive service (with upgrades).
pub async fn http1_service() -> Service {
    serve(false).await
}

/// An h2c (prior knowledge) service.
pub async fn h2c_service() -> Service {
    serve(true).await
}

async fn serve(h2: bool) -> Service {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(s.clone(), req));
                let io = TokioIo::new(tcp);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .with_upgrades()
                        .await;
                }
            });
        }
    });
    Service { addr, seen }
}

/// An HTTP/2 service over TLS (ALPN h2) with a certificate for 127.0.0.1; returns it and the
/// certificate's PEM (to use as the proxy's `local_ca_cert`).
pub async fn h2_tls_service() -> (Service, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert_pem, key_pem) =
        tunnel_transport::generate_self_signed_pem(&["127.0.0.1".to_string()]).unwrap();
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            s.connections.fetch_add(1, Ordering::SeqCst);
            let (s, acceptor) = (s.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| handle(s.clone(), req));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (Service { addr, seen }, cert_pem)
}

/// Ask `addr` for `GET /ws` with `Host: host` and `Upgrade: echo`; after the answer's head,
/// send 100,000 bytes (pattern `seed`) and check they come back exactly. Returns the head,
/// lowercased, for the caller's checks of the status and headers.
pub async fn upgrade_echo(addr: SocketAddr, host: &str, seed: u64) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let payload = crate::random_bytes(100_000, seed);
    let (mut r, mut w) = s.into_split();
    let p = payload.clone();
    let writer = tokio::spawn(async move { w.write_all(&p).await.unwrap() });
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert!(back == payload, "upgraded bytes differ");
    head
}

/// One keep-alive HTTP/1.1 connection to `addr` (hyper's client), for many small requests in
/// a row: latency figures without a process or a TCP handshake per request.
pub async fn http1_keepalive(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}
