//! The transport abstraction the engines use: one trait, one result type.

use std::fmt;
use std::net::SocketAddr;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::TransportError;

/// ALPN protocol id of raw TLS carrying the tunnel protocol (then yamux).
pub const ALPN_TUNNEL: &[u8] = b"tls-tunnel/1";
/// ALPN protocol id of HTTP/2: the tunnel rides one request stream.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id of HTTP/1.1: the tunnel rides a WebSocket.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Default URL path of the HTTP/2 request and the WebSocket upgrade.
pub const DEFAULT_WS_PATH: &str = "/tunnel";

/// The longest `ws_path` accepted, in bytes: it travels in every WebSocket request line.
const MAX_WS_PATH: usize = 256;

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
    /// transports without our own TLS (plain `ws`, where TLS, if any, ends at a proxy).
    pub binding: Option<[u8; 32]>,
    /// The client certificate the server verified against its `client_ca` (server side
    /// only; `None` when the client sent none, or TLS ends at a proxy in front).
    pub peer_cert: Option<crate::PeerCert>,
    /// The TLS handshake resumed an earlier session with a ticket (no certificate was
    /// signed or checked again); false without our own TLS.
    pub resumed: bool,
}

impl Established {
    /// Bundle an established stream.
    pub fn new(
        stream: BoxedStream,
        peer: SocketAddr,
        transport: TransportKind,
        binding: Option<[u8; 32]>,
    ) -> Self {
        Self {
            stream,
            peer,
            transport,
            binding,
            peer_cert: None,
            resumed: false,
        }
    }

    /// Say whether the TLS handshake resumed an earlier session.
    #[must_use]
    pub fn with_resumed(mut self, resumed: bool) -> Self {
        self.resumed = resumed;
        self
    }

    /// Attach the verified client certificate's details.
    #[must_use]
    pub fn with_peer_cert(mut self, cert: Option<crate::PeerCert>) -> Self {
        self.peer_cert = cert;
        self
    }
}

impl fmt::Debug for Established {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Established")
            .field("peer", &self.peer)
            .field("transport", &self.transport)
            .field("binding", &self.binding.is_some())
            .field("peer_cert", &self.peer_cert)
            .finish_non_exhaustive()
    }
}

/// Check a `ws_path`: an absolute URL path of plain characters, as both ends and any proxy
/// in between must spell it the same. The error says what is wrong.
pub fn check_ws_path(path: &str) -> Result<(), TransportError> {
    if !path.starts_with('/') {
        return Err(TransportError::WsPathRelative {
            path: path.to_owned(),
        });
    }
    if path.len() > MAX_WS_PATH {
        return Err(TransportError::WsPathTooLong { max: MAX_WS_PATH });
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@%".contains(c);
    if let Some(bad) = path.chars().find(|&c| !ok(c)) {
        return Err(TransportError::WsPathCharacter {
            path: path.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// The kinds of transport. Displays and parses as the client config spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TransportKind {
    /// Raw TLS 1.3 over TCP (ALPN `tls-tunnel/1`).
    #[default]
    Tls,
    /// One HTTP/2 request stream over TLS (ALPN `h2`).
    H2,
    /// WebSocket over TLS (ALPN `http/1.1`).
    Wss,
    /// WebSocket over plain TCP, for a TLS terminator in front of the server.
    Ws,
}

impl TransportKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Tls,
        TransportKind::H2,
        TransportKind::Wss,
        TransportKind::Ws,
    ];

    /// The config spelling: `tls`, `h2`, `wss`, `ws`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tls => "tls",
            TransportKind::H2 => "h2",
            TransportKind::Wss => "wss",
            TransportKind::Ws => "ws",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TransportKind {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                TransportError::Config(format!(
                    "unknown transport {s:?}: use \"tls\" (default), \"h2\", \"wss\" or \"ws\""
                ))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts end up after `ws_path: ` in config errors, which users and docs quote.
    #[test]
    fn ws_path_errors_say_what_is_wrong_and_are_permanent() {
        assert!(check_ws_path("/tunnel").is_ok());
        assert!(check_ws_path("/a-b_c.d~e/f%20").is_ok());
        let cases = [
            (
                "tunnel".to_owned(),
                "\"tunnel\" must start with \"/\" (e.g. \"/tunnel\")".to_owned(),
            ),
            (
                format!("/{}", "a".repeat(256)),
                "longer than 256 characters".to_owned(),
            ),
            (
                "/a b".to_owned(),
                "\"/a b\" contains ' ': use letters, digits and URL path punctuation such as \
                 - . _ ~ / (no spaces, query or fragment)"
                    .to_owned(),
            ),
        ];
        for (path, text) in cases {
            let Err(e) = check_ws_path(&path) else {
                panic!("{path:?} accepted");
            };
            assert_eq!(e.to_string(), text);
            assert!(e.is_permanent(), "{e}");
        }
    }
}
