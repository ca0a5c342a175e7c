//! The HTTP virtual host on `vhost_http_bind`: every request is routed by its Host and path
//! to a proxy, its basic auth checked, then sent over a fresh stream to the owning client,
//! whose HTTP proxy handler serves it (and appends the user's IP to X-Forwarded-For).
//!
//! Forwarding per request, not per connection: a keep-alive connection may carry requests for
//! several hosts, and each must be routed and authorised on its own.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn, Instrument};

use crate::forward::open_to_owner;
use crate::registry::ProxyEntry;
use crate::Shared;

type Body = BoxBody<Bytes, hyper::Error>;

/// The server's own backstop on an answer; the client's `response_timeout` (default 60 s)
/// normally answers 504 first.
const RESPONSE_BACKSTOP: Duration = Duration::from_secs(120);
/// How long a user may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept users until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let task = serve_conn(shared.clone(), tcp, peer);
                    shared.streams.spawn(task.in_current_span());
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn serve_conn(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    tunnel_transport::tune_tcp(&tcp);
    let dest = tcp.local_addr().ok();
    let (shutdown, hard_stop) = (shared.shutdown.clone(), shared.hard_stop.clone());
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&shared, peer, dest, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = hard_stop.cancelled() => return,
        () = shutdown.cancelled() => {
            // Finish the request in progress, then close: an idle keep-alive connection must
            // not hold a graceful shutdown up for its whole grace period.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                r = conn.as_mut() => r,
                () = hard_stop.cancelled() => return,
            }
        }
    };
    if let Err(e) = result {
        debug!(%peer, "vhost connection ended: {e}");
    }
}

async fn handle(
    shared: &Shared,
    peer: SocketAddr,
    dest: Option<SocketAddr>,
    req: Request<Incoming>,
) -> Response<Body> {
    // One Host for routing, read once; the authority of an absolute-form target wins over
    // the Host header (RFC 9112 §3.2.2).
    let Some(host) = request_host(&req) else {
        return page(StatusCode::BAD_REQUEST, "bad request: no Host");
    };
    let Some(target) = shared.registry.route(&host, req.uri().path()) else {
        return page(StatusCode::NOT_FOUND, "no tunnel for this host");
    };
    if let Some(expected) = &target.auth {
        if !authorized(&req, expected) {
            let mut resp = page(StatusCode::UNAUTHORIZED, "authorization required");
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"tls-tunnel\""),
            );
            return resp;
        }
    }
    forward(shared, &target.entry, peer, dest, host, req).await
}

/// The Host of a request: the absolute-form authority, else the one Host header.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_owned());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next()?;
    if hosts.next().is_some() {
        return None; // two Host headers: ambiguous, refuse (RFC 9112 §3.2)
    }
    host.to_str().ok().map(str::to_owned)
}

/// Whether the one `Authorization` header is `Basic <expected>`; compared in constant time.
fn authorized(req: &Request<Incoming>, expected: &str) -> bool {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((scheme, token)) = v.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("basic")
        && bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes()))
}

/// Send `req` to `entry`'s owner over a new stream, and stream the answer back.
async fn forward(
    shared: &Shared,
    entry: &Arc<ProxyEntry>,
    peer: SocketAddr,
    dest: Option<SocketAddr>,
    host: String,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let bad_gateway = || page(StatusCode::BAD_GATEWAY, "the service is unreachable");
    entry
        .counters
        .public_connections
        .fetch_add(1, Ordering::Relaxed);
    let owner = entry.owner();
    let slot = match owner.begin_stream() {
        Ok(slot) => slot,
        Err(reason) => {
            warn!(%peer, proxy = %entry.key, "request refused: {reason}");
            return page(StatusCode::SERVICE_UNAVAILABLE, "too busy; try again");
        }
    };
    let (stream, guard) = match open_to_owner(entry, slot.lane(), Some(peer), dest).await {
        Ok(s) => s,
        Err(reason) => {
            debug!(%peer, proxy = %entry.key, "request failed: {reason}");
            return bad_gateway();
        }
    };
    let metered = Metered {
        stream,
        entry: entry.clone(),
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(TokioIo::new(metered)).await {
            Ok(pair) => pair,
            Err(e) => {
                debug!(%peer, "request failed: {e}");
                return bad_gateway();
            }
        };
    // The connection runs until the response body is done (or an upgrade ends), holding the
    // stream's slot; the client aborting the stream or a hard stop ends it at once.
    let abort = guard.token().clone();
    let hard_stop = shared.hard_stop.clone();
    let active = entry.clone();
    active
        .counters
        .active_streams
        .fetch_add(1, Ordering::Relaxed);
    shared.streams.spawn(
        async move {
            tokio::select! {
                r = conn.with_upgrades() => if let Err(e) = r { debug!("stream ended: {e}") },
                () = abort.cancelled() => {}
                () = hard_stop.cancelled() => {}
            }
            active
                .counters
                .active_streams
                .fetch_sub(1, Ordering::Relaxed);
            drop((slot, guard));
        }
        .in_current_span(),
    );
    origin_form(&mut req, &host);
    let user_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = match tokio::time::timeout(RESPONSE_BACKSTOP, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(%peer, proxy = %entry.key, "request failed: {e}");
            return bad_gateway();
        }
        Err(_) => {
            return page(
                StatusCode::GATEWAY_TIMEOUT,
                "the service did not answer in time",
            )
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let service_upgrade = hyper::upgrade::on(&mut resp);
        let task = async move {
            if let (Ok(u), Ok(s)) = (user_upgrade.await, service_upgrade.await) {
                let (mut u, mut s) = (TokioIo::new(u), TokioIo::new(s));
                let _ = tokio::io::copy_bidirectional(&mut u, &mut s).await;
            }
        };
        shared.streams.spawn(task.in_current_span());
    }
    resp.map(BodyExt::boxed)
}

/// Send the target in origin form with the Host it was routed by: the client's handler and
/// the local service see an ordinary request.
fn origin_form(req: &mut Request<Incoming>, host: &str) {
    if req.uri().authority().is_none() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        req.headers_mut().insert(header::HOST, v);
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if let Ok(uri) = path.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// A small HTML page naming the status and nothing internal.
fn page(status: StatusCode, text: &'static str) -> Response<Body> {
    let html = format!(
        "<!doctype html><title>{code}</title><h1>{code}</h1><p>{text}</p>\n",
        code = status.as_u16()
    );
    let mut resp = Response::new(Full::new(Bytes::from(html)).map_err(|n| match n {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp
}

/// The `Basic` token for `user:password`, as a browser sends it.
pub(crate) fn basic_credential(user: &str, password: &str) -> String {
    base64(format!("{user}:{password}").as_bytes())
}

/// Standard base64 with padding (RFC 4648 §4): all basic auth needs, no dependency.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A stream to the owner that adds what it carries to the proxy's byte counters (requests
/// "in", responses "out"; HTTP heads included, as they travel the tunnel too).
struct Metered {
    stream: tunnel_mux::MuxStream,
    entry: Arc<ProxyEntry>,
}

impl tokio::io::AsyncRead for Metered {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.stream).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.entry
                .counters
                .bytes
                .b_to_a
                .fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl tokio::io::AsyncWrite for Metered {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.stream).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.entry
                .counters
                .bytes
                .a_to_b
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc, "{plain:?}");
        }
        assert_eq!(
            basic_credential("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }
}
