//! The HTTP virtual host on `vhost_http_bind`: every request is routed by its Host and
//! normalised path to a proxy, its basic auth checked, its forwarding headers set, then sent
//! over a fresh stream to the owning client, whose HTTP proxy handler serves it.
//!
//! Forwarding per request, not per connection: a keep-alive connection may carry requests for
//! several hosts, and each must be routed and authorised on its own.
//!
//! One module per concern: [`limits`] (what a connection may cost), [`auth`] (basic auth and
//! guessing), [`upstream`] (the stream to the owner), [`remote`] (in a cluster, a request for
//! a domain another server serves goes there, one hop, and is served as if it had arrived
//! there; [`serve_forwarded`] is that server's end). The HTTP rules the client's proxy
//! applies too (the one spelling of a path, who the user is, the forwarding headers, what a
//! `Connection` listing may remove) are [`tunnel_http`]'s.

mod auth;
mod limits;
mod remote;
mod sni;
mod sni_remote;
mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn, Instrument};
use tunnel_http::forwarded::{self, Origin, Scheme};
use tunnel_http::{hop_by_hop, path};

pub(crate) use auth::basic_credential;
pub(crate) use limits::MIN_HEADER_SIZE;
pub(crate) use sni::run as run_https;
pub(crate) use sni_remote::serve_forwarded as serve_https_forwarded;
pub(crate) use tunnel_http::forwarded::TrustedProxies;

use crate::metrics::EventKind;
use crate::source_limit::{Refusal, SourcePermit};
use crate::{ServerError, Shared};

type Body = BoxBody<Bytes, hyper::Error>;

/// State of the one virtual host listener.
pub(crate) struct Vhost {
    shared: Arc<Shared>,
    limits: limits::Limits,
    trusted: TrustedProxies,
    failures: auth::Failures,
    refused_log: tunnel_transport::WarnLimit,
}

/// Accept users until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener) {
    let trusted = TrustedProxies::parse(&shared.cfg.trusted_proxies).unwrap_or_else(|e| {
        // `ServerConfig::problems` refuses this before start.
        warn!("trusted_proxies: {e}; trusting no proxy");
        TrustedProxies::default()
    });
    let vh = Arc::new(Vhost {
        limits: limits::Limits::new(&shared.cfg),
        shared,
        trusted,
        failures: auth::Failures::default(),
        refused_log: tunnel_transport::WarnLimit::default(),
    });
    // Requests other servers of a cluster forward here share the limits and the record of
    // failed logins; weak, so that the server's state does not keep itself alive.
    let _ = vh.shared.vhost.set(Arc::downgrade(&vh));
    // Backs off on errors such as EMFILE instead of spinning.
    let mut listener = tunnel_transport::Acceptor::new(listener);
    loop {
        tokio::select! {
            () = vh.shared.shutdown.cancelled() => break,
            (tcp, peer) = listener.accept() => admit(&vh, tcp, peer),
        }
    }
}

/// Serve `tcp` if its source and the vhost have a connection to spare; close it otherwise.
fn admit(vh: &Arc<Vhost>, tcp: TcpStream, peer: SocketAddr) {
    if !crate::access::server_permits(&vh.shared, peer) {
        tunnel_mux::reset_tcp(tcp);
        return;
    }
    match vh.limits.conns.try_acquire(peer.ip()) {
        Ok(permit) => {
            let task = serve_conn(vh.clone(), tcp, peer, permit);
            vh.shared.streams.spawn(task.in_current_span());
        }
        Err(refusal) => {
            vh.shared
                .metrics
                .vhost
                .conns_refused
                .fetch_add(1, Ordering::Relaxed);
            if let Some(more) = vh.refused_log.check() {
                let conns = &vh.limits.conns;
                warn!(
                    %peer,
                    "connection refused: {refusal} (vhost_max_conns_per_source / vhost_max_conns; \
                     {} open, {} from this source){more}",
                    conns.total(),
                    conns.held_by(peer.ip()),
                );
            }
            // Dropping `tcp` closes it: a refused connection costs no task and no buffer.
        }
    }
}

async fn serve_conn(vh: Arc<Vhost>, tcp: TcpStream, peer: SocketAddr, permit: SourcePermit) {
    tunnel_transport::tune_tcp(&tcp);
    let shutdown = vh.shared.shutdown.clone();
    // The first byte before anything else: a connection that says nothing costs a socket and
    // a small task for `first_byte`, never a parser or a buffer.
    let mut one = [0u8; 1];
    tokio::select! {
        r = tokio::time::timeout(vh.limits.first_byte, tcp.peek(&mut one)) => match r {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return,
            Err(_) => {
                debug!(%peer, "no request within {}s (vhost_first_byte_timeout); closing", vh.limits.first_byte.as_secs());
                return;
            }
        },
        () = shutdown.cancelled() => return,
    }
    let dest = tcp.local_addr().ok();
    serve_http(vh, tcp, peer, dest, permit, false).await;
}

/// Admit a request another server of the cluster forwards for `user`: it counts in this
/// server's connection limits as the user's own connection would.
pub(crate) fn admit_forwarded(vh: &Vhost, user: SocketAddr) -> Result<SourcePermit, ServerError> {
    vh.limits.conns.try_acquire(user.ip()).map_err(|refusal| {
        vh.shared
            .metrics
            .vhost
            .conns_refused
            .fetch_add(1, Ordering::Relaxed);
        match refusal {
            Refusal::PerSource { limit } => ServerError::SourceBusy { limit },
            Refusal::Total { limit } => ServerError::ServerBusy { limit },
        }
    })
}

/// Serve what another server of the cluster forwarded over `io` (see [`remote`]) exactly as
/// a request from `user`, who reached `dest` there; routed to local proxies only, never
/// forwarded again.
pub(crate) async fn serve_forwarded<S>(
    vh: Arc<Vhost>,
    io: S,
    user: SocketAddr,
    dest: Option<SocketAddr>,
    permit: SourcePermit,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    serve_http(vh, io, user, dest, permit, true).await;
}

/// HTTP/1.1 on `io` until it ends, the server stops, or (gracefully) the request in progress
/// is done.
async fn serve_http<S>(
    vh: Arc<Vhost>,
    io: S,
    peer: SocketAddr,
    dest: Option<SocketAddr>,
    permit: SourcePermit,
    forwarded: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (shutdown, hard_stop) = (vh.shared.shutdown.clone(), vh.shared.hard_stop.clone());
    // Shared with any upgraded connection born here, which outlives this task.
    let permit = Arc::new(permit);
    let service_vh = vh.clone();
    let service = hyper::service::service_fn(move |req| {
        let (vh, permit) = (service_vh.clone(), permit.clone());
        async move {
            let peer = Peer {
                addr: peer,
                dest,
                permit,
                forwarded,
            };
            Ok::<_, std::convert::Infallible>(handle(&vh, &peer, req).await)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(vh.limits.header)
        // The buffer bounds an unfinished head, the header size a finished one read at once.
        .max_buf_size(vh.limits.max_header_size)
        .max_header_size(vh.limits.max_header_size)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = hard_stop.cancelled() => return,
        // A reload denied the user's network: its keep-alive connection ends too.
        () = crate::rules::denied(&vh.shared, peer.ip()) => return,
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
        debug!(%peer, forwarded, "vhost connection ended: {e}");
    }
}

/// The user's end of a connection: its address, the address it reached, and its slot.
pub(super) struct Peer {
    addr: SocketAddr,
    dest: Option<SocketAddr>,
    permit: Arc<SourcePermit>,
    /// Forwarded by another server of the cluster: served from local routes only.
    forwarded: bool,
}

async fn handle(vh: &Vhost, peer: &Peer, mut req: Request<Incoming>) -> Response<Body> {
    // One Host for routing, read once; the authority of an absolute-form target wins over
    // the Host header (RFC 9112 §3.2.2).
    let host = match request_host(&req) {
        Ok(host) => host,
        Err(why) => return page_owned(StatusCode::BAD_REQUEST, &why.to_string()),
    };
    if req.method() == http::Method::CONNECT {
        return page(
            StatusCode::METHOD_NOT_ALLOWED,
            "this is a web server, not a forward proxy",
        );
    }
    // An absolute-form target may have no path at all: that is "/".
    let raw_path = match req.uri().path() {
        "" => "/",
        p => p,
    };
    let path = match path::normalize(raw_path) {
        Ok(p) => p,
        Err(e) => return bad_path(e),
    };
    let key = path::match_key(&path);
    let target = match vh.shared.registry.route(&host, &key) {
        Some(target) => target,
        None => match remote::open(vh, peer, &host).await {
            remote::Hop::Open(hop) => return remote::send(vh, peer, hop, req).await,
            remote::Hop::Failed(resp) => return resp,
            // The registry says the domain moved here: route it as any local request.
            remote::Hop::Here => match vh.shared.registry.route(&host, &key) {
                Some(target) => target,
                None => return not_found(),
            },
            remote::Hop::Unknown => return not_found(),
        },
    };
    let origin = Origin::of(req.headers(), peer.addr.ip(), &vh.trusted);
    // The proxy's own allow_ips / deny_ips, on the user behind any trusted front proxy.
    // A group's members are checked one by one as they are tried.
    let grouped = target.entry.group.is_some();
    if !grouped && !crate::access::proxy_permits(&vh.shared, &target.entry, origin.user) {
        return page(StatusCode::FORBIDDEN, "your address may not use this site");
    }
    if let Some(expected) = &target.auth {
        if let Err(resp) = check_auth(vh, &req, expected, &host, origin).await {
            return resp;
        }
        // The credential was for this server; the service has no business with it.
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    set_target(&mut req, &host, &path);
    // The routed host came from a header or an authority, both valid header values.
    let routed = HeaderValue::from_str(&host).ok();
    let hop = origin.hop(routed.as_ref(), Scheme::Http);
    forwarded::write(req.headers_mut(), &hop, origin.claims());
    hop_by_hop::sanitize_connection(req.headers_mut());
    upstream::forward(&vh.shared, &target.entry, peer, req).await
}

/// Basic auth for one request: `Err` holds the answer when it may not pass. Failures are
/// logged one line each (for fail2ban), counted, and a source that keeps failing is refused
/// for a while without its guesses being checked.
async fn check_auth(
    vh: &Vhost,
    req: &Request<Incoming>,
    expected: &str,
    host: &str,
    origin: Origin,
) -> Result<(), Response<Body>> {
    let metrics = &vh.shared.metrics.vhost;
    let user = origin.user;
    if let Some(left) = vh.failures.blocked_for(user, Instant::now()) {
        metrics.auth_refused.fetch_add(1, Ordering::Relaxed);
        vh.shared.metrics.event(
            EventKind::VhostLoginRefused,
            user,
            None,
            &format!("{host}: too many failed basic-auth logins"),
        );
        tokio::time::sleep(auth::REFUSAL_DELAY).await;
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; try again later",
        );
        let h = resp.headers_mut();
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from(left.as_secs().max(1)),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Err(resp);
    }
    if auth::authorized(req.headers(), expected) {
        return Ok(());
    }
    let mut resp = page(StatusCode::UNAUTHORIZED, "authorization required");
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tls-tunnel\""),
    );
    // A browser's first request carries no credential: that is a question, not a guess.
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return Err(resp);
    }
    metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
    vh.shared.metrics.event(
        EventKind::VhostAuthFailure,
        user,
        None,
        &format!("{host}: wrong basic-auth credentials"),
    );
    let via = if origin.via_trusted {
        format!(" via={}", origin.peer)
    } else {
        String::new()
    };
    warn!("basic auth failed host={host} peer={user}{via}");
    if vh.failures.record(user, Instant::now()) == auth::Verdict::NowBlocked {
        warn!(
            "basic auth blocked peer={user}{via}: {} failures within {}s; refusing its logins \
             for the rest of that window",
            auth::MAX_FAILURES,
            auth::WINDOW.as_secs()
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Err(resp)
}

/// The Host of a request: the absolute-form authority, else the one Host header.
fn request_host(req: &Request<Incoming>) -> Result<String, ServerError> {
    if let Some(a) = req.uri().authority() {
        return Ok(a.as_str().to_owned());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let Some(host) = hosts.next() else {
        return Err(ServerError::NoHostHeader);
    };
    if hosts.next().is_some() {
        // Ambiguous: two parties on the way may route by different ones (RFC 9112 §3.2).
        return Err(ServerError::TwoHostHeaders);
    }
    host.to_str()
        .map(str::to_owned)
        .map_err(|_| ServerError::HostNotText)
}

/// Send the target in origin form, with the normalised path it was routed by and the Host
/// it was routed by: the client's handler and the local service see an ordinary request,
/// and no other spelling of the path than the one the vhost matched.
fn set_target(req: &mut Request<Incoming>, host: &str, path: &str) {
    if req.uri().authority().is_some() {
        if let Ok(v) = HeaderValue::from_str(host) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    let target = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    if let Ok(uri) = target.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// The answer for a host no proxy serves, on this server or (in a cluster) any other.
fn not_found() -> Response<Body> {
    page(StatusCode::NOT_FOUND, "no tunnel for this host")
}

fn bad_path(e: tunnel_http::Error) -> Response<Body> {
    page_owned(StatusCode::BAD_REQUEST, &format!("bad request: {e}"))
}

/// A small HTML page naming the status and nothing internal.
fn page(status: StatusCode, text: &'static str) -> Response<Body> {
    page_owned(status, text)
}

/// [`page`] with a text made at run time (it must not echo user input unescaped).
fn page_owned(status: StatusCode, text: &str) -> Response<Body> {
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
