//! `type = "http"` and `"http2"`: each stream the server opens carries one user connection,
//! which a hyper server parses here; every request then goes to the local service over a
//! shared connection — a pooled HTTP/1.1 keep-alive connection ([`crate::http_pool`]) or
//! the proxy's one HTTP/2 connection ([`crate::h2_proxy`]). Bodies stream both ways.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use tunnel_mux::MuxStream;
use tunnel_proto::ProxyKind;

use crate::config::ProxyConfig;
use crate::h2_proxy::H2Local;
use crate::http_headers;
use crate::http_pool::LocalPool;
use crate::stats::Counters;

mod metered;

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Shared connections to each HTTP proxy's local service, kept across streams and sessions.
#[derive(Default)]
pub(crate) struct Upstreams {
    by_proxy: Mutex<HashMap<String, Arc<Upstream>>>,
}

/// What one proxy's requests travel over.
pub(crate) struct Upstream {
    cfg: ProxyConfig,
    slots: Arc<Semaphore>,
    pool: Arc<LocalPool>,
    h2: H2Local,
}

impl Upstreams {
    /// The upstream of `cfg`, made anew when the proxy's settings changed (a reload).
    fn get(&self, cfg: &ProxyConfig) -> Arc<Upstream> {
        let mut map = self.by_proxy.lock();
        if let Some(u) = map.get(&cfg.name) {
            if same_upstream(&u.cfg, cfg) {
                return u.clone();
            }
        }
        let slots = Arc::new(Semaphore::new(cfg.http.max_local_conns));
        let u = Arc::new(Upstream {
            pool: Arc::new(LocalPool::new(
                cfg.local_addr.clone(),
                slots.clone(),
                cfg.http.idle(),
                None,
            )),
            h2: H2Local::new(cfg.local_addr.clone(), crate::http_config::local_tls(cfg)),
            slots,
            cfg: cfg.clone(),
        });
        map.insert(cfg.name.clone(), u.clone());
        u
    }
}

fn same_upstream(a: &ProxyConfig, b: &ProxyConfig) -> bool {
    a.kind == b.kind
        && a.http.local_tls == b.http.local_tls
        && a.http.local_ca_cert == b.http.local_ca_cert
        && a.http.local_tls_insecure == b.http.local_tls_insecure
        && a.local_addr == b.local_addr
        && a.proxy_protocol == b.proxy_protocol
        && a.http == b.http
}

/// Serve one user connection arriving on `stream` until it closes, the peer aborts it
/// (`abort`), or it idles past `idle_timeout`. `counters` are the proxy's: the stream's
/// bytes are counted in them, and a local service that fails is warned about through its
/// `failures` limit, as tcp proxies do.
pub(crate) async fn serve(
    upstreams: &Upstreams,
    cfg: &ProxyConfig,
    counters: Arc<Counters>,
    stream: MuxStream,
    abort: &CancellationToken,
    peer: Option<SocketAddr>,
    dest: Option<SocketAddr>,
) {
    let up = upstreams.get(cfg);
    // A PROXY header names one user, so that user's requests get connections of their own
    // (still within the proxy's max_local_conns).
    let pool = match cfg.proxy_protocol {
        Some(v) => Arc::new(LocalPool::new(
            cfg.local_addr.clone(),
            up.slots.clone(),
            cfg.http.idle(),
            Some(tunnel_proto::proxy_protocol::encode(v, peer, dest)),
        )),
        None => up.pool.clone(),
    };
    let route = Arc::new(Route {
        up: up.clone(),
        pool,
        user: peer,
        counters: counters.clone(),
        entry: http_headers::Entry::of(cfg.publish_port.and_then(crate::PublishPort::port), dest),
    });
    let service = hyper::service::service_fn(move |req| {
        let route = route.clone();
        async move { Ok::<_, std::convert::Infallible>(route.handle(req).await) }
    });
    let io = TokioIo::new(metered::Metered::new(stream, counters));
    let h = &cfg.http;
    let result = if cfg.kind == ProxyKind::Http2 {
        // Users may speak HTTP/1.1 or HTTP/2 (prior knowledge) to an http2 proxy.
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(h.idle())
            .max_buf_size(h.max_header_size);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(h.max_header_size).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(h.idle()));
        let conn = b.serve_connection_with_upgrades(io, service);
        tokio::select! {
            // hyper's boxed error, logged below as it comes.
            r = conn => r,
            () = abort.cancelled() => Err("aborted".into()),
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(h.idle())
            .max_buf_size(h.max_header_size)
            .serve_connection(io, service)
            .with_upgrades();
        tokio::select! {
            r = conn => r.map_err(Into::into),
            () = abort.cancelled() => Err("aborted".into()),
        }
    };
    if let Err(e) = result {
        debug!(proxy = %cfg.name, ?peer, "user connection ended: {e}");
    }
}

struct Route {
    up: Arc<Upstream>,
    pool: Arc<LocalPool>,
    user: Option<SocketAddr>,
    /// The proxy's counters: `failures` limits the warnings about its local service.
    counters: Arc<Counters>,
    entry: http_headers::Entry,
}

impl Route {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let cfg = &self.up.cfg;
        let user = self.user.map(|a| a.ip());
        http_headers::request(req.headers_mut(), &cfg.http, user, self.entry);
        let timeout = cfg.http.response_timeout();
        let sent = if cfg.kind == ProxyKind::Http2 {
            tokio::time::timeout(timeout, self.up.h2.send(req)).await
        } else {
            tokio::time::timeout(timeout, crate::http_upgrade::send_h1(&self.pool, req)).await
        };
        let mut resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // Every request while the service is down would log a line of its own.
                if let Some(more) = self.counters.failures.check() {
                    let local_addr = &cfg.local_addr;
                    warn!(proxy = %cfg.name, %local_addr, "local service failed, answered 502: {e}{more}");
                } else {
                    debug!(proxy = %cfg.name, "local service failed: {e}");
                }
                return error_page(StatusCode::BAD_GATEWAY);
            }
            Err(_) => return error_page(StatusCode::GATEWAY_TIMEOUT),
        };
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        http_headers::response(resp.headers_mut(), &cfg.http, switching);
        resp
    }
}

/// A short page that names the status only: nothing about the tunnel's internals.
pub(crate) fn error_page(status: StatusCode) -> Response<Body> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
