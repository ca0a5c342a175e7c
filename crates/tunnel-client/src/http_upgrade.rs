//! Sending one request over a pooled HTTP/1.1 connection, including protocol upgrades
//! (WebSocket and the like), which are passed through as raw bytes once both sides agree.

use std::sync::Arc;

use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::http_pool::LocalPool;
use crate::http_proxy::Body;
use crate::ClientError;
use tunnel_http::hop_by_hop::is_upgrade;

/// Send `req` to the local service over a connection of `pool`; the connection returns to
/// the pool when the response has been read, or carries the upgraded bytes after a 101.
pub(crate) async fn send_h1(
    pool: &Arc<LocalPool>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ClientError> {
    // Taken before the request moves on: it resolves once our 101 reaches the user.
    let user_side = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    // HTTP/1.1 to the service, in origin form (the Host header names the authority).
    if let Some(pq) = req.uri().path_and_query() {
        *req.uri_mut() = Uri::from(pq.clone());
    }
    *req.version_mut() = http::Version::HTTP_11;
    let mut conn = pool
        .checkout()
        .await
        .map_err(|source| ClientError::LocalUnreachable { addr: None, source })?;
    let mut resp = conn
        .sender
        .send_request(req)
        .await
        .map_err(ClientError::LocalFailed)?;
    match user_side {
        Some(user) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let local = hyper::upgrade::on(&mut resp);
            tokio::spawn(splice(user, local, conn.permit));
        }
        _ => pool.checkin(conn),
    }
    Ok(resp.map(BodyExt::boxed))
}

/// Copy bytes both ways between the upgraded user and local connections. The local
/// connection keeps its pool slot until it closes.
async fn splice(user: OnUpgrade, local: OnUpgrade, _slot: OwnedSemaphorePermit) {
    let (user, local) = tokio::join!(user, local);
    match (user, local) {
        (Ok(u), Ok(l)) => {
            let mut u = TokioIo::new(u);
            let mut l = TokioIo::new(l);
            if let Err(e) = tokio::io::copy_bidirectional(&mut u, &mut l).await {
                debug!("upgraded connection ended: {e}");
            }
        }
        (u, l) => debug!(
            user_ok = u.is_ok(),
            local_ok = l.is_ok(),
            "upgrade did not complete"
        ),
    }
}
