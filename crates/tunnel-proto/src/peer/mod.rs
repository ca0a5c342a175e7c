//! The server-to-server peer link: a mutual challenge-response keyed by the cluster key, then
//! one [`Forward`] per stream.
//!
//! A server (the *dialer*) that holds a user or visitor connection for a proxy owned by
//! another server (the *acceptor*) opens one TLS connection to the acceptor's `peer_bind`
//! (ALPN [`ALPN_PEER`]) and runs [`PeerDialer`] against [`PeerAcceptor`]:
//!
//! ```text
//! dialer   → PeerHello     { server_id, nonce_d }
//! acceptor → PeerChallenge { server_id, nonce_a, mac_acceptor }
//! dialer   → PeerProof     { mac_dialer }
//! acceptor → PeerAccepted                     (or Rejected; then yamux starts)
//! ```
//!
//! Each side proves the key over both fresh nonces and the TLS exporter value of this very
//! connection (see [`auth`]), so neither proof replays on another connection and a
//! man-in-the-middle terminating TLS cannot relay them. The dialer checks the acceptor's
//! proof before it sends anything else, so no Forward (which carries visitor secrets) ever
//! reaches a server without the key. After the handshake every yamux stream the dialer opens
//! starts with a [`Forward`] and is answered by one [`Forwarded`]; raw bytes follow only
//! after [`Forwarded::Ok`]. A peer can open nothing else, and a Forward never forwards again.

pub mod auth;
mod machine;
pub(crate) mod messages;
#[cfg(test)]
mod tests;

pub use machine::{AcceptorEvent, DialerEvent, PeerAcceptor, PeerDialer};
pub use messages::{
    Forward, ForwardKind, Forwarded, PeerChallenge, PeerHello, PeerProof, PEER_HELLO_MAGIC,
};

/// ALPN protocol id of the peer port; the client port never offers it, nor the peer port
/// anything else, so a client and a peer cannot even finish TLS at each other's port.
pub const ALPN_PEER: &[u8] = b"tls-tunnel-peer/1";

/// Largest frame on a peer stream before the raw bytes: a Forward names a proxy, a visitor
/// id and a secret, each at most [`MAX_STR`](crate::MAX_STR) bytes.
pub const PEER_STREAM_MAX_FRAME: usize = 4 * 1024;
