//! A small HTTP/1.1 endpoint for statistics, shared by the server and the client engines:
//! `/metrics` (Prometheus text), `/api/stats` (JSON), `/healthz`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn, Instrument};
use tunnel_transport::{Acceptor, WarnLimit};

/// What an engine reports.
pub trait StatsSource: Send + Sync + 'static {
    /// The Prometheus text exposition (format 0.0.4), ending in a newline.
    fn prometheus(&self) -> String;
    /// The JSON document for `/api/stats`.
    fn json(&self) -> String;
    /// Whether `/healthz` answers 200 (else 503).
    fn healthy(&self) -> bool;
}

/// Longest a peer may take to send a request head, or to start the next one on a kept-alive
/// connection: a scraper sends its request at once, a slow-header peer is cut.
pub const STATS_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one connection may live, however busy: bounds a peer that never reads its answer.
pub const STATS_CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Stats connections served at once; more are closed at accept. Scrapers need one or two.
pub const STATS_MAX_CONNECTIONS: usize = 32;
/// Request head buffer (hyper's minimum is 8 KiB); request bodies are never read.
const STATS_MAX_HEAD: usize = 16 * 1024;
/// At most one "connections refused" WARN this often.
const STATS_WARN_EVERY: Duration = Duration::from_secs(10);

/// Serve `source` on `listener` until `stop`. With a `token`, `/metrics` and `/api/stats`
/// need `Authorization: Bearer <token>`; `/healthz` never does (probes have no secrets).
///
/// The endpoint is bounded: [`STATS_MAX_CONNECTIONS`] at once, a request head within
/// [`STATS_HEADER_TIMEOUT`] and 16 KiB, a connection for at most
/// [`STATS_CONNECTION_LIFETIME`], and accepts back off when the process is out of descriptors.
pub async fn serve_stats(
    listener: TcpListener,
    source: Arc<dyn StatsSource>,
    token: Option<String>,
    stop: CancellationToken,
) {
    let token: Option<Arc<str>> = token.map(Into::into);
    let slots = Arc::new(Semaphore::new(STATS_MAX_CONNECTIONS));
    let refused = WarnLimit::new(STATS_WARN_EVERY);
    let mut listener = Acceptor::new(listener);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(more) = refused.check() {
                warn!(
                    %peer,
                    "stats connection refused: all {STATS_MAX_CONNECTIONS} connections are in use{more}"
                );
            }
            continue;
        };
        let (source, token) = (source.clone(), token.clone());
        let conn = async move {
            let svc = service_fn(move |req| {
                let r = route(&*source, token.as_deref(), &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let serve = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(STATS_HEADER_TIMEOUT)
                .max_buf_size(STATS_MAX_HEAD)
                .serve_connection(TokioIo::new(tcp), svc);
            match tokio::time::timeout(STATS_CONNECTION_LIFETIME, serve).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, "stats connection: {e}"),
                Err(_) => debug!(%peer, "stats connection closed: open too long"),
            }
            drop(slot);
        };
        tokio::spawn(conn.in_current_span());
    }
}

fn route(
    source: &dyn StatsSource,
    token: Option<&str>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/healthz" if source.healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n"),
        "/metrics" | "/api/stats" if !authorized(token, req) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid Authorization: Bearer <stats_token> header is required\n",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        "/metrics" => with_type(
            source.prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/api/stats" => with_type(source.json(), "application/json"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /api/stats or /healthz\n",
        ),
    }
}

fn authorized(token: Option<&str>, req: &Request<Incoming>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = with_type(body.to_string(), "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Escape a Prometheus label value.
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
