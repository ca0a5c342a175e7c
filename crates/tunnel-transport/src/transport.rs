//! The transport abstraction the engines use: one trait, one result type.

use std::fmt;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::TransportError;

/// ALPN protocol id of raw TLS carrying the tunnel protocol (then yamux).
pub const ALPN_TUNNEL: &[u8] = b"tls-tunnel/1";

/// What every transport yields: a bidirectional byte stream.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// A type-erased [`ByteStream`].
pub type BoxedStream = Box<dyn ByteStream>;

/// An established, authenticated-at-the-TLS-level connection.
#[non_exhaustive]
pub struct Established {
    /// The byte stream (plaintext side of the TLS session).
    pub stream: BoxedStream,
    /// The remote socket address.
    pub peer: SocketAddr,
    /// Which transport carried it.
    pub transport: TransportKind,
    /// RFC 5705 exported keying material of our own TLS session (label
    /// `tunnel_proto::EKM_LABEL`, no context, 32 bytes). Both ends compute the same value, a
    /// man in the middle cannot: the tunnel authentication binds to it. `None` only for
    /// transports without our own TLS.
    pub binding: Option<[u8; 32]>,
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("peer", &self.peer)
            .field("transport", &self.transport)
            .field("binding", &self.binding.is_some())
            .finish_non_exhaustive()
    }
}

/// The kinds of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportKind {
    /// Raw TLS 1.3 over TCP.
    Tls,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Tls => "tls",
        })
    }
}

/// One trait for every transport; a value is built for one role (client or server).
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;

    /// Client role: dial `addr` ("host:port"), set TCP_NODELAY and keepalive, run the
    /// handshake. No timeout is applied here; wrap the call in one.
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Established, TransportError>>;

    /// Server role: run the handshake on an accepted TCP connection. No timeout is applied
    /// here; the caller wraps it in one so a silent client cannot hold a slot.
    fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Established, TransportError>>;
}
