//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// What can go wrong while setting up or using a transport. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TCP connection could not be made (refused, unreachable, DNS failure).
    #[error(
        "could not connect to {addr}: {source} (check the address and that the server is running)"
    )]
    Connect {
        /// The address as given.
        addr: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The server's address did not answer the TCP connect in time.
    #[error(
        "TCP connect to {addr} timed out after {after:?} (check the address, and that no firewall drops the packets)"
    )]
    ConnectTimeout {
        /// The address as given.
        addr: String,
        /// How long it waited.
        after: std::time::Duration,
    },

    /// The server's certificate was rejected by our trust settings.
    #[error("the server's certificate is not trusted: {reason}")]
    Untrusted {
        /// Why, and which setting to change.
        reason: String,
    },

    /// Server side: the client's certificate did not pass the `client_ca` check (another CA,
    /// expired, not for client authentication, ...).
    #[error("the client's certificate is refused: {reason}")]
    ClientCertificate {
        /// Why, in words.
        reason: String,
    },

    /// The TLS handshake failed for another reason (peer is not TLS, version or ALPN mismatch,
    /// peer aborted, ...).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),

    /// An I/O error on an established connection.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),

    /// A certificate or key file could not be used.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Invalid TLS settings (server name, fingerprint syntax, empty trust store, ...).
    #[error("invalid TLS configuration: {0}")]
    Config(String),

    /// `ws_path` is not an absolute path (shown after the field name in a config problem).
    #[error("{path:?} must start with \"/\" (e.g. \"{}\")", crate::DEFAULT_WS_PATH)]
    WsPathRelative {
        /// The path as configured.
        path: String,
    },

    /// `ws_path` is too long for a request line every proxy on the way accepts.
    #[error("longer than {max} characters")]
    WsPathTooLong {
        /// The limit.
        max: usize,
    },

    /// `ws_path` holds a character that proxies may re-encode, so both ends would disagree.
    #[error(
        "{path:?} contains {bad:?}: use letters, digits and URL path punctuation such as \
         - . _ ~ / (no spaces, query or fragment)"
    )]
    WsPathCharacter {
        /// The path as configured.
        path: String,
        /// The first character not allowed.
        bad: char,
    },

    /// `connect` was called on a server-role transport, or `accept` on a client-role one.
    #[error(
        "transport used in the wrong role: build it with a client constructor to connect and \
         a server constructor to accept"
    )]
    WrongRole,

    /// The server turned away a connection that is not a tunnel client: no or an unknown
    /// ALPN id, an HTTP request for another path, a request that is not a WebSocket upgrade.
    /// HTTP requests got a 404 (or 400) first.
    #[error("not a tunnel client: {0}")]
    NotTunnel(String),

    /// The server (or a proxy in front of it) answered the HTTP/2 or WebSocket request with
    /// something other than the tunnel.
    #[error("{0}")]
    HttpRefused(String),

    /// The handshake or session setup failed (see [`tunnel_proto::HandshakeError`]).
    #[error("{0}")]
    Setup(#[from] tunnel_proto::HandshakeError),

    /// A tunnel protocol frame was malformed or too large.
    #[error("tunnel protocol error: {0}")]
    Proto(#[from] tunnel_proto::ProtoError),
}

impl TransportError {
    /// Whether retrying the same thing cannot help: an untrusted certificate or bad
    /// configuration stays that way until a human changes something. Connection, I/O,
    /// handshake and timeout failures are transient (the server may be restarting).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            TransportError::Untrusted { .. }
                | TransportError::Pem { .. }
                | TransportError::Config(_)
                | TransportError::WrongRole
                | TransportError::WsPathRelative { .. }
                | TransportError::WsPathTooLong { .. }
                | TransportError::WsPathCharacter { .. }
        ) || matches!(self, TransportError::Setup(e) if e.is_permanent())
    }
}
