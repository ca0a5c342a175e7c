//! The stats endpoint: `/metrics` (Prometheus), `/api/stats` (JSON), `/healthz`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::{debug, error, info, warn, Instrument};

use crate::{metrics, Shared};

/// Bind the endpoint. A failure is logged, not fatal: the tunnel matters more than its stats.
pub(crate) async fn bind(shared: &Shared) -> Option<TcpListener> {
    let addr = shared.cfg.stats_bind?;
    match TcpListener::bind(addr).await {
        Ok(l) => {
            let local = l.local_addr().unwrap_or(addr);
            if !local.ip().is_loopback() && shared.cfg.stats_token.is_none() {
                warn!(
                    %local,
                    "the stats endpoint listens beyond loopback without stats_token: anyone who reaches it can read client ids, addresses and traffic"
                );
            }
            info!(%local, "stats endpoint listening");
            Some(l)
        }
        Err(e) => {
            error!("stats endpoint disabled: cannot listen on {addr} (stats_bind): {e}");
            None
        }
    }
}

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (tcp, peer) = tokio::select! {
            () = shared.hard_stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!("stats accept failed: {e}");
                    continue;
                }
            },
        };
        let shared = shared.clone();
        let conn = async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&shared, &req, peer)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await
            {
                debug!(%peer, "stats connection: {e}");
            }
        };
        tokio::spawn(conn.in_current_span());
    }
}

fn route(shared: &Shared, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        // Probed by load balancers and orchestrators: never behind the token.
        "/healthz" => {
            if shared.shutdown.is_cancelled() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                text(StatusCode::OK, "ok\n")
            }
        }
        "/metrics" | "/api/stats" if !authorized(shared, req) => {
            debug!(%peer, "stats request without a valid token");
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid Authorization: Bearer <stats_token> header is required\n",
            );
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            r
        }
        "/metrics" => {
            let snap = metrics::snapshot(shared);
            let body = metrics::prometheus(shared, &snap);
            with_type(body, "text/plain; version=0.0.4; charset=utf-8")
        }
        "/api/stats" => {
            let snap = metrics::snapshot(shared);
            match serde_json::to_string_pretty(&snap) {
                Ok(mut body) => {
                    body.push('\n');
                    with_type(body, "application/json")
                }
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /api/stats or /healthz\n",
        ),
    }
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(token) = &shared.cfg.stats_token else {
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
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}
