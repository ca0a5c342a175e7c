//! `type = "http2"`: one HTTP/2 connection (prior-knowledge h2c, or TLS with ALPN h2 when
//! `local_tls` is set) to the local service carries every request of every user
//! concurrently; it is re-made when it dies.

use http::header::HOST;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tracing::debug;

use crate::http_proxy::Body;
use crate::ClientError;

/// The proxy's connection to its local HTTP/2 service, made on first use.
pub(crate) struct H2Local {
    addr: String,
    tls: Option<std::sync::Arc<tunnel_transport::LocalTls>>,
    conn: tokio::sync::Mutex<Option<http2::SendRequest<Incoming>>>,
}

impl H2Local {
    pub(crate) fn new(
        addr: String,
        tls: Option<std::sync::Arc<tunnel_transport::LocalTls>>,
    ) -> Self {
        H2Local {
            addr,
            tls,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Send one request; trailers and streaming bodies pass through as HTTP/2 frames.
    pub(crate) async fn send(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, ClientError> {
        let mut sender = self.sender().await?;
        // HTTP/2 names the authority in :authority (from the URI), not in Host.
        let authority = req
            .headers_mut()
            .remove(HOST)
            .and_then(|h| h.to_str().ok().map(str::to_owned))
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_else(|| self.addr.clone());
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(ClientError::RequestTarget)?;
        *req.version_mut() = http::Version::HTTP_2;
        // Connection-specific headers are illegal in HTTP/2 (RFC 9113 §8.2.2).
        tunnel_http::hop_by_hop::strip_hop_by_hop(req.headers_mut(), false);
        req.headers_mut().remove(http::header::CONNECTION);
        let resp = sender
            .send_request(req)
            .await
            .map_err(ClientError::LocalFailed)?;
        Ok(resp.map(BodyExt::boxed))
    }

    /// The live connection, or a new one. Holding the lock while dialling makes concurrent
    /// first requests share one connection instead of racing to open several.
    async fn sender(&self) -> Result<http2::SendRequest<Incoming>, ClientError> {
        let mut slot = self.conn.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let tcp = crate::proxy::dial(&self.addr).await.map_err(|source| {
            ClientError::LocalUnreachable {
                addr: Some(self.addr.clone()),
                source,
            }
        })?;
        let sender = match &self.tls {
            None => handshake(tcp, &self.addr).await?,
            Some(tls) => {
                let stream = tls
                    .wrap(tcp)
                    .await
                    .map_err(|source| ClientError::LocalTls {
                        addr: self.addr.clone(),
                        source,
                    })?;
                // The wrong ALPN means the service does not speak HTTP/2 over this TLS.
                if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                    return Err(ClientError::LocalNotHttp2 {
                        addr: self.addr.clone(),
                    });
                }
                handshake(stream, &self.addr).await?
            }
        };
        *slot = Some(sender.clone());
        Ok(sender)
    }
}

/// HTTP/2 handshake on `io`; the connection is driven by its own task until it ends.
async fn handshake<T>(io: T, addr: &str) -> Result<http2::SendRequest<Incoming>, ClientError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ClientError::LocalHttp2Handshake {
            addr: addr.to_owned(),
            source,
        })?;
    let addr = addr.to_owned();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(local_addr = %addr, "HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}
