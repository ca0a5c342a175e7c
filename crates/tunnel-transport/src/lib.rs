//! Transports that carry a tls-tunnel session, behind one [`Transport`] trait: raw TLS 1.3
//! over TCP (rustls with the aws-lc-rs provider, always passed explicitly), one HTTP/2 request
//! stream over TLS ([`H2Transport`]), and WebSocket over TLS or plain TCP ([`WsTransport`]).
//!
//! * Server side: a [`ServerIdentity`] (PEM files or self-signed) → [`ServerTransport::new`]
//!   (every TLS-based transport on one port, told apart by ALPN) or [`TlsTransport::server`]
//!   (raw TLS only) → [`Transport::accept`] on each accepted TCP connection.
//!   [`WsTransport::plain_server`] serves plain-HTTP WebSocket behind a TLS terminator.
//! * Client side: a [`ClientTrust`] (CA file, pinned [`Fingerprint`], system roots, or
//!   insecure) → [`client_transport`] for a [`TransportKind`] → [`Transport::connect`].
//! * Both yield an [`Established`]: the byte stream plus `binding`, the TLS exported keying
//!   material the tunnel authentication is bound to (absent where TLS ends at a proxy).
//! * [`read_message`] / [`write_message`] exchange single tunnel-proto frames before yamux
//!   takes over the stream; [`tune_tcp`] applies the socket options.
//! * [`drive`] pumps a handshake machine of [`tunnel_proto::handshake`] over a stream (both
//!   engines set up connections through it); [`within`] names the phase that timed out.
//! * [`Acceptor`] is the one accept loop (back-off when out of descriptors); [`WarnLimit`] and
//!   [`WarnLimits`] keep a warning a peer can repeat at will to one line per window (per key),
//!   with a count of the rest: every crate above logs repeatable warnings through them.
//!
//! ```
//! use tokio::net::TcpListener;
//! use tunnel_proto::{Message, DEFAULT_MAX_FRAME};
//! use tunnel_transport::{
//!     read_message, write_message, ClientTrust, ServerIdentity, TlsTransport, Transport,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = ServerIdentity::self_signed(&["localhost".to_owned()])?;
//! let server = TlsTransport::server(&identity)?;
//! // The client pins the fingerprint the server logs at start.
//! let client = TlsTransport::client("localhost", &ClientTrust::Fingerprint(identity.fingerprint()))?;
//!
//! let listener = TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?.to_string();
//! let accepting = async {
//!     let (tcp, peer) = listener.accept().await?;
//!     let mut conn = server.accept(tcp, peer).await?;
//!     let msg = read_message(&mut conn.stream, DEFAULT_MAX_FRAME).await?;
//!     Ok::<_, Box<dyn std::error::Error>>((conn.binding, msg))
//! };
//! let connecting = async {
//!     let mut conn = client.connect(&addr).await?;
//!     write_message(&mut conn.stream, &Message::Ping(7), DEFAULT_MAX_FRAME).await?;
//!     Ok::<_, Box<dyn std::error::Error>>(conn.binding)
//! };
//! let (accepted, connected) = tokio::join!(accepting, connecting);
//! let (server_binding, msg) = accepted?;
//! assert_eq!(msg, Some(Message::Ping(7)));
//! assert_eq!(server_binding, connected?); // same TLS session, same exported key
//! # Ok(())
//! # }
//! ```

// Every public item is documented, and `pub` means reachable from outside the crate. Set
// here rather than in `[workspace.lints]`: Cargo applies those to every target of every
// package, the end-to-end tests and their shared fixtures too.
#![warn(missing_docs, unreachable_pub)]

mod accept;
mod auth_key;
mod client_cert;
pub mod config_file;
mod error;
mod fingerprint;
mod framed;
#[doc(hidden)]
pub mod fuzzing;
mod h2;
mod handshake_driver;
mod identity;
mod local_tls;
mod log_format;
mod peer_tls;
mod problem;
mod read_ahead;
mod server;
mod socket;
mod tls;
mod tls_error;
mod transport;
mod trust;
mod upgrade;
mod warn_limit;
mod ws;

pub use accept::Acceptor;
pub use auth_key::resolve_auth_key;
pub use client_cert::{ClientAuth, ClientCert, PeerCert};
pub use error::TransportError;
pub use fingerprint::Fingerprint;
pub use framed::{read_message, write_message};
pub use h2::H2Transport;
pub use handshake_driver::{drive, drive_within, timed_out, within};
pub use identity::{generate_self_signed_pem, ServerIdentity, ServerIdentitySource};
pub use local_tls::LocalTls;
pub use log_format::LogFormat;
pub use peer_tls::{PeerStream, PeerTls, ALPN_PEER};
pub use problem::{ConfigProblem, Position};
pub use server::ServerTransport;
pub use socket::{tune_tcp, TCP_CONNECT_TIMEOUT};
pub use tls::{fill_random, TlsTransport};
pub use transport::{
    check_ws_path, BoxedStream, ByteStream, Established, Transport, TransportKind, ALPN_H2,
    ALPN_HTTP11, ALPN_TUNNEL, DEFAULT_WS_PATH,
};
pub use trust::ClientTrust;
pub use tunnel_proto::{ReadBuffer, SMALL_READ};
pub use tunnel_proto::{Repeats, WARN_KEYS, WARN_WINDOW};
pub use warn_limit::{WarnLimit, WarnLimits};
pub use ws::WsTransport;

/// The client side of `kind`: `server_name` is the TLS name (and the HTTP authority), `path`
/// the URL path of the HTTP/2 request or WebSocket upgrade. `trust` is not used by `ws`,
/// which has no TLS of its own.
pub fn client_transport(
    kind: TransportKind,
    server_name: &str,
    trust: &ClientTrust,
    path: &str,
) -> Result<Box<dyn Transport>, TransportError> {
    client_transport_with_cert(kind, server_name, trust, path, None)
}

/// [`client_transport`] presenting `cert` to a server that asks for client certificates
/// (mutual TLS). Plain `ws` has no TLS of its own and presents nothing.
pub fn client_transport_with_cert(
    kind: TransportKind,
    server_name: &str,
    trust: &ClientTrust,
    path: &str,
    cert: Option<&ClientCert>,
) -> Result<Box<dyn Transport>, TransportError> {
    Ok(match kind {
        TransportKind::Tls => Box::new(TlsTransport::client_with_cert(server_name, trust, cert)?),
        TransportKind::H2 => Box::new(H2Transport::client_with_cert(
            server_name,
            trust,
            path,
            cert,
        )?),
        TransportKind::Wss => Box::new(WsTransport::client_with_cert(
            server_name,
            trust,
            path,
            cert,
        )?),
        TransportKind::Ws => Box::new(WsTransport::plain_client(server_name, path)),
    })
}
