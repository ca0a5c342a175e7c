//! WebSocket: binary messages carry the yamux bytes. `wss` runs over our own TLS (ALPN
//! `http/1.1`) for HTTP/1.1-only proxies and CDNs; `ws` runs over plain TCP, for a TLS
//! terminator (nginx, a CDN) in front of the server's `ws_bind`.
//!
//! Pings are answered by tungstenite while we read; a close frame is a clean end of stream.
//! WebSocket has no half-close, which is fine: yamux signals end-of-stream per stream.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, Sink, Stream, TryFutureExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::client_cert::ClientCert;
use crate::tls::{TlsClient, Versions};
use crate::{
    tune_tcp, upgrade, ClientTrust, Established, Transport, TransportError, TransportKind,
    ALPN_HTTP11,
};

/// Largest message we send. yamux frames are at most 256 KiB plus a header, so every write
/// fits one message, and the receiver's limit below is never near.
const MAX_SEND: usize = 256 * 1024 + 64;
/// Largest message or frame we accept: a peer sending more is not one of ours.
const MAX_RECEIVE: usize = 1024 * 1024;

pub(crate) fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_RECEIVE))
        .max_frame_size(Some(MAX_RECEIVE))
        // yamux flushes after every frame; holding bytes back until then saves syscalls, and
        // the buffer never grows past this plus one message.
        .write_buffer_size(128 * 1024)
        .max_write_buffer_size(128 * 1024 + 2 * MAX_SEND)
}

/// The WebSocket transport, for one role.
pub struct WsTransport {
    role: WsRole,
    path: String,
}

enum WsRole {
    /// `tls: None` is plain `ws`.
    Client {
        tls: Option<TlsClient>,
        server_name: String,
    },
    /// Plain HTTP (the server's `ws_bind`): a proxy in front terminated TLS.
    PlainServer,
}

impl std::fmt::Debug for WsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = match &self.role {
            WsRole::Client { tls: Some(_), .. } => "wss client",
            WsRole::Client { tls: None, .. } => "ws client",
            WsRole::PlainServer => "ws server",
        };
        write!(f, "WsTransport({role}, path={:?})", self.path)
    }
}

impl WsTransport {
    /// `wss` client: TLS as for [`crate::TlsTransport::client`] but with ALPN `http/1.1`,
    /// then a WebSocket upgrade at `path`. TLS 1.2 (ECDHE, AEAD) is accepted too: proxies
    /// that terminate TLS in front of the server are what `wss` is for.
    pub fn client(
        server_name: &str,
        trust: &ClientTrust,
        path: &str,
    ) -> Result<Self, TransportError> {
        Self::client_with_cert(server_name, trust, path, None)
    }

    /// [`WsTransport::client`] presenting `cert` when the server asks for one.
    pub fn client_with_cert(
        server_name: &str,
        trust: &ClientTrust,
        path: &str,
        cert: Option<&ClientCert>,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            role: WsRole::Client {
                tls: Some(TlsClient::new(
                    server_name,
                    trust,
                    ALPN_HTTP11,
                    Versions::Tls12Too,
                    cert,
                    true,
                )?),
                server_name: server_name.to_owned(),
            },
            path: path.to_owned(),
        })
    }

    /// `ws` client: the upgrade over plain TCP. The key proof and the tunnel are then only as
    /// private as the network path to whatever terminates TLS.
    pub fn plain_client(server_name: &str, path: &str) -> Self {
        Self {
            role: WsRole::Client {
                tls: None,
                server_name: server_name.to_owned(),
            },
            path: path.to_owned(),
        }
    }

    /// Server for plain-HTTP WebSocket upgrades at `path` (the `ws_bind` listener).
    pub fn plain_server(path: &str) -> Self {
        Self {
            role: WsRole::PlainServer,
            path: path.to_owned(),
        }
    }

    async fn connect_impl(&self, addr: &str) -> Result<Established, TransportError> {
        let WsRole::Client { tls, server_name } = &self.role else {
            return Err(TransportError::WrongRole);
        };
        // The Host header names what the user configured (a CDN routes on it), with the
        // port of the address we dial.
        let port = addr.rsplit_once(':').map_or("", |(_, p)| p);
        let host = if server_name.contains(':') {
            format!("[{server_name}]")
        } else {
            server_name.clone()
        };
        match tls {
            Some(tls) => {
                let (stream, peer, binding) = tls.connect(addr).await?;
                let again = crate::tls::resumed(stream.get_ref().1);
                let alpn = stream.get_ref().1.alpn_protocol();
                if alpn.is_some_and(|p| p != ALPN_HTTP11) {
                    return Err(TransportError::Handshake(
                        "the server selected an ALPN other than \"http/1.1\"".to_owned(),
                    ));
                }
                let url = format!("wss://{host}:{port}{}", self.path);
                let ws = client_handshake(&url, stream, &self.path).await?;
                let stream = Box::new(WsStream::new(ws));
                Ok(
                    Established::new(stream, peer, TransportKind::Wss, Some(binding))
                        .with_resumed(again),
                )
            }
            None => {
                let tcp = crate::socket::dial(addr).await?;
                let peer = tcp.peer_addr()?;
                let url = format!("ws://{host}:{port}{}", self.path);
                let ws = client_handshake(&url, tcp, &self.path).await?;
                Ok(Established::new(
                    Box::new(WsStream::new(ws)),
                    peer,
                    TransportKind::Ws,
                    None,
                ))
            }
        }
    }

    async fn accept_impl(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<Established, TransportError> {
        let WsRole::PlainServer = self.role else {
            return Err(TransportError::WrongRole);
        };
        tune_tcp(&tcp);
        let (ws, forwarded) = upgrade::accept(tcp, &self.path).await?;
        // Behind a proxy every connection comes from the proxy; the address it reports is the
        // client's (used in logs and for the per-address auth-failure limit). `ws_bind`
        // must therefore be reachable by the proxy only, as the README says.
        let peer = forwarded.map_or(peer, |ip| SocketAddr::new(ip, 0));
        let stream = Box::new(WsStream::new(ws));
        Ok(Established::new(stream, peer, TransportKind::Ws, None))
    }
}

impl Transport for WsTransport {
    fn kind(&self) -> TransportKind {
        match &self.role {
            WsRole::Client { tls: Some(_), .. } => TransportKind::Wss,
            _ => TransportKind::Ws,
        }
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Established, TransportError>> {
        self.connect_impl(addr)
            .map_err(crate::framed::refused_alert)
            .boxed()
    }

    fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Established, TransportError>> {
        self.accept_impl(tcp, peer).boxed()
    }
}

async fn client_handshake<S>(
    url: &str,
    stream: S,
    path: &str,
) -> Result<WebSocketStream<S>, TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio_tungstenite::client_async_with_config(url, stream, Some(config())).await {
        Ok((ws, _response)) => Ok(ws),
        Err(WsError::Http(response)) => Err(TransportError::HttpRefused(format!(
            "the server answered {} to the WebSocket upgrade at {path}: check ws_path on \
             both sides, and that a proxy in front forwards {path} with the Upgrade headers \
             to the server's ws_bind",
            response.status()
        ))),
        Err(WsError::Io(e)) => Err(TransportError::Io(e)),
        Err(WsError::Url(e)) => Err(TransportError::Config(format!(
            "cannot build the WebSocket URL {url:?}: {e}"
        ))),
        Err(e) => Err(TransportError::Handshake(format!("WebSocket upgrade: {e}"))),
    }
}

/// A WebSocket as a byte stream.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// Payload received but not yet read out.
    pending: Bytes,
    /// A close frame or the end of the socket was seen: every further read is EOF.
    eof: bool,
}

impl<S> WsStream<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

/// Map a tungstenite error to what a byte stream reports.
fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => io::ErrorKind::BrokenPipe.into(),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // tungstenite queued the pong itself; it goes out with the next read or write.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the peer sent a WebSocket text message; the tunnel uses binary ones",
                    )));
                }
                Some(Ok(Message::Close(_))) | None => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Gathers the slices into one message: yamux writes a 12-byte header and then the body,
    /// and one message for both saves a WebSocket frame header and a mask per yamux frame.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_SEND);
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        let mut msg = BytesMut::with_capacity(total);
        for b in bufs {
            let take = b.len().min(total - msg.len());
            msg.put_slice(&b[..take]);
        }
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(msg.freeze()))
            .map_err(io_error)?;
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    /// Sends a close frame (after everything queued): the peer reads a clean EOF.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

/// Start a WebSocket on a stream whose upgrade was answered already (`rest` is whatever the
/// client sent after its request head).
pub(crate) async fn server_stream<S>(io: S, rest: Vec<u8>) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_partially_read(io, rest, Role::Server, Some(config())).await
}
