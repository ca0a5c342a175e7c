//! HTTP/2 over TLS (ALPN `h2`): the tunnel rides one long-lived request stream, `POST <path>`,
//! whose DATA frames carry the yamux bytes both ways. For networks and CDNs that pass HTTPS and
//! HTTP/2 but nothing else.
//!
//! Flow control is HTTP/2's own: the receiver releases window only as the bytes are read out
//! of [`H2Stream`], and the sender only sends what it was granted, so a slow reader holds the
//! writer back and neither side buffers more than the windows below.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::{poll_fn, BoxFuture};
use futures::{FutureExt, TryFutureExt};
use h2::{Reason, RecvStream, SendStream};
use http::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::client_cert::ClientCert;
use crate::tls::{TlsClient, Versions};
use crate::{ClientTrust, Established, Transport, TransportError, TransportKind, ALPN_H2};

const KIB: u32 = 1024;
const MIB: u32 = 1024 * KIB;

/// Receive window of the tunnel stream. The tunnel is the only stream, and yamux inside has
/// its own per-stream windows, so this only has to cover the bandwidth-delay product of the
/// path; 4 MiB is ~330 Mbit/s at 100 ms, and loopback throughput stopped growing above it.
const STREAM_WINDOW: u32 = 4 * MIB;
/// Connection window: the stream's plus room for the odd 404 answered on the side.
const CONNECTION_WINDOW: u32 = 2 * STREAM_WINDOW;
/// DATA frame payload we accept: a whole yamux frame (64 KiB by default, 256 KiB at most,
/// plus its header) fits one, and bigger frames mean fewer headers and wake-ups per MiB.
const MAX_FRAME: u32 = 256 * KIB + KIB;
/// Bytes h2 may hold queued for sending on the stream before `poll_write` waits.
const SEND_BUFFER: usize = (MIB) as usize;
/// Request headers are tiny; a peer announcing more is not a tunnel client.
const MAX_HEADER_LIST: u32 = 16 * KIB;
/// After the tunnel ends (or a stray request got its 404), how long the connection may take
/// to flush and close before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Client side of the HTTP/2 transport.
pub struct H2Transport {
    tls: TlsClient,
    path: String,
}

impl std::fmt::Debug for H2Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Transport")
            .field("server_name", &self.tls.server_name)
            .field("path", &self.path)
            .finish()
    }
}

impl H2Transport {
    /// Client role: TLS as for [`crate::TlsTransport::client`] but with ALPN `h2`, then
    /// `POST path` on the server. TLS 1.2 (ECDHE, AEAD) is accepted too: the TLS peer may be
    /// a proxy in front of the server.
    pub fn client(
        server_name: &str,
        trust: &ClientTrust,
        path: &str,
    ) -> Result<Self, TransportError> {
        Self::client_with_cert(server_name, trust, path, None)
    }

    /// [`H2Transport::client`] presenting `cert` when the server asks for one.
    pub fn client_with_cert(
        server_name: &str,
        trust: &ClientTrust,
        path: &str,
        cert: Option<&ClientCert>,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            tls: TlsClient::new(server_name, trust, ALPN_H2, Versions::Tls12Too, cert, true)?,
            path: path.to_owned(),
        })
    }

    async fn connect_impl(&self, addr: &str) -> Result<Established, TransportError> {
        let (tls, peer, binding) = self.tls.connect(addr).await?;
        let again = crate::tls::resumed(tls.get_ref().1);
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(TransportError::Handshake(
                "the server did not select ALPN \"h2\": it does not speak HTTP/2 here (or is \
                 an older tls-tunnel server); use transport = \"tls\" or \"wss\""
                    .to_owned(),
            ));
        }
        let (send_request, conn) = builder_client().handshake(tls).await.map_err(h2_setup)?;
        // The connection future does the socket I/O for the stream; it ends by itself once
        // the stream and `send_request` are gone, or the socket fails.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP/2 connection ended: {e}");
            }
        });
        let mut send_request = send_request.ready().await.map_err(h2_setup)?;
        let name = self.tls.server_name.to_str();
        let authority = if name.contains(':') {
            format!("[{name}]") // an IPv6 literal
        } else {
            name.into_owned()
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("https://{authority}{}", self.path))
            .body(())
            .map_err(|e| TransportError::Config(format!("invalid ws_path {:?}: {e}", self.path)))?;
        let (response, send) = send_request
            .send_request(request, false)
            .map_err(h2_setup)?;
        let response = response.await.map_err(h2_setup)?;
        if response.status() != StatusCode::OK {
            return Err(TransportError::HttpRefused(format!(
                "the server answered {} to the HTTP/2 tunnel request for {}: check ws_path \
                 on both sides (and any proxy's routes)",
                response.status(),
                self.path
            )));
        }
        let stream = H2Stream::new(send, response.into_body(), None);
        Ok(
            Established::new(Box::new(stream), peer, TransportKind::H2, Some(binding))
                .with_resumed(again),
        )
    }
}

impl Transport for H2Transport {
    fn kind(&self) -> TransportKind {
        TransportKind::H2
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Established, TransportError>> {
        self.connect_impl(addr)
            .map_err(crate::framed::refused_alert)
            .boxed()
    }

    fn accept(
        &self,
        _tcp: TcpStream,
        _peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Established, TransportError>> {
        async { Err(TransportError::WrongRole) }.boxed()
    }
}

fn builder_client() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        .enable_push(false);
    b
}

/// Server side, after TLS chose `h2`: the first request must be `POST path`; it gets a 200
/// and becomes the tunnel. Anything else gets a 404 and the connection is closed.
pub(crate) async fn accept<T>(io: T, path: &str) -> Result<H2Stream, TransportError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_send_buffer_size(SEND_BUFFER)
        .max_header_list_size(MAX_HEADER_LIST)
        // The tunnel is the one stream; more are refused by h2 itself.
        .max_concurrent_streams(1)
        .handshake::<T, Bytes>(io)
        .await
        .map_err(h2_setup)?;
    let (request, mut respond) = match conn.accept().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(h2_setup(e)),
        None => {
            return Err(TransportError::NotTunnel(
                "an HTTP/2 client closed without a request".to_owned(),
            ))
        }
    };
    if request.method() != Method::POST || request.uri().path() != path {
        let what = format!("HTTP/2 {} {}", request.method(), request.uri().path());
        let _ = respond.send_response(status(StatusCode::NOT_FOUND), true);
        conn.graceful_shutdown();
        // Let the 404 and GOAWAY reach the peer, but do not wait on it for long.
        let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| conn.poll_closed(cx))).await;
        return Err(TransportError::NotTunnel(format!("{what} (answered 404)")));
    }
    let send = respond
        .send_response(status(StatusCode::OK), false)
        .map_err(h2_setup)?;
    let (done_tx, done_rx) = oneshot::channel::<()>();
    tokio::spawn(drive_server(conn, done_rx));
    Ok(H2Stream::new(send, request.into_body(), Some(done_tx)))
}

/// Poll the server connection (socket I/O happens here) until the tunnel stream is dropped or
/// the peer goes away; then close it gracefully, bounded by [`CLOSE_GRACE`].
async fn drive_server<T>(mut conn: h2::server::Connection<T, Bytes>, done: oneshot::Receiver<()>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut done = done;
    loop {
        tokio::select! {
            _ = &mut done => break,
            next = conn.accept() => match next {
                // Another request while the tunnel runs: not ours to serve.
                Some(Ok((_req, mut respond))) => {
                    let _ = respond.send_response(status(StatusCode::NOT_FOUND), true);
                }
                Some(Err(e)) => {
                    tracing::debug!("HTTP/2 connection ended: {e}");
                    return;
                }
                None => return,
            },
        }
    }
    conn.graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, poll_fn(|cx| conn.poll_closed(cx))).await;
}

fn status(code: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = code;
    r
}

fn h2_setup(e: h2::Error) -> TransportError {
    if e.is_io() {
        if let Some(io) = e.into_io() {
            return TransportError::Io(io);
        }
        return TransportError::Io(std::io::ErrorKind::BrokenPipe.into());
    }
    TransportError::Handshake(format!("HTTP/2: {e}"))
}

/// The tunnel's request stream as a byte stream.
pub(crate) struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received but not yet read out; its window is released as it is read.
    pending: Bytes,
    /// END_STREAM sent.
    shut: bool,
    /// Server side: dropping it tells the connection driver the tunnel is over.
    _done: Option<oneshot::Sender<()>>,
}

impl H2Stream {
    fn new(send: SendStream<Bytes>, recv: RecvStream, done: Option<oneshot::Sender<()>>) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            shut: false,
            _done: done,
        }
    }
}

/// A reset with NO_ERROR or CANCEL is the peer hanging up (EOF); others are failures.
fn recv_error(e: h2::Error) -> Option<io::Error> {
    match e.reason() {
        Some(Reason::NO_ERROR) | Some(Reason::CANCEL) => None,
        _ if e.is_io() => e.into_io(),
        _ => Some(io::Error::new(io::ErrorKind::ConnectionReset, e)),
    }
}

fn send_error(e: h2::Error) -> io::Error {
    if e.is_io() {
        if let Some(io) = e.into_io() {
            return io;
        }
        return io::Error::from(io::ErrorKind::BrokenPipe);
    }
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                Some(Err(e)) => {
                    return Poll::Ready(recv_error(e).map_or(Ok(()), Err));
                }
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        // Reopen the window only for what the reader took: this is the back-pressure.
        // An error means the stream is already gone, which the next read reports.
        let _ = this.recv.flow_control().release_capacity(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Gathers the slices into one DATA frame: yamux writes a 12-byte header and then the
    /// body, and a frame of their own for those 12 bytes would double the frames per MiB.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let wanted: usize = bufs.iter().map(|b| b.len()).sum();
        if wanted == 0 {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        if this.shut {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        loop {
            let granted = this.send.capacity();
            if granted > 0 {
                let n = granted.min(wanted);
                let mut data = BytesMut::with_capacity(n);
                for b in bufs {
                    let take = b.len().min(n - data.len());
                    data.put_slice(&b[..take]);
                }
                this.send
                    .send_data(data.freeze(), false)
                    .map_err(send_error)?;
                return Poll::Ready(Ok(n));
            }
            this.send.reserve_capacity(wanted);
            match this.send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(send_error(e))),
                Poll::Ready(None) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Poll::Pending => {
                    // No window yet: also wake up if the peer resets the stream meanwhile.
                    if let Poll::Ready(r) = this.send.poll_reset(cx) {
                        let why = match r {
                            Ok(reason) => format!("the peer reset the HTTP/2 stream: {reason}"),
                            Err(e) => e.to_string(),
                        };
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, why)));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued DATA frames are written by the connection task as soon as it can.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.shut {
            self.shut = true;
            // END_STREAM: the peer reads EOF once everything before it arrived.
            self.send
                .send_data(Bytes::new(), true)
                .map_err(send_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
