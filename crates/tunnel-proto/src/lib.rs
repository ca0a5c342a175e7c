//! Sans-IO wire protocol of tls-tunnel.
//!
//! This crate only turns messages into bytes and bytes into messages; it owns no sockets,
//! clocks or randomness (nonces and instance ids are passed in), so the engines can drive
//! it from any runtime and tests can drive it byte by byte.
//!
//! - [`frame`]: length-prefixed framing, the incremental [`Decoder`], [`encode`].
//! - [`message`]: every [`Message`] and its binary body.
//! - [`auth`]: HMAC-SHA256 challenge-response bound to the TLS session.
//! - [`handshake`]: the handshake and session setup as client and server state machines.
//! - [`register`]: JSON registration types; [`publish`]: automatic and ranged ports in them.
//! - [`datagram`]: UDP datagrams framed on a stream (a UDP proxy's flows).
//! - [`peer`]: the server-to-server peer link (mutual proof, Forward).
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers for local services.
//! - [`sni`]: the server name of a TLS ClientHello, read without terminating TLS.
//! - [`PeerText`]: a peer's words (reject reasons, stream errors) made safe to log.
//! - [`WarnLimit`] / [`WarnLimits`]: one log line per window for warnings a peer can repeat
//!   (the caller passes the instant), and [`ReadBuffer`]: a read buffer sized to the traffic.
//! - With the `tokio` feature, `read_message` / `write_message`: one frame at a time on a
//!   tokio byte stream (the only async code here).
//!
//! # Connection lifecycle
//!
//! 1. Client sends [`Hello`], server answers [`Challenge`], client sends [`AuthResponse`]
//!    (see [`auth::compute_mac`]), server answers [`Welcome`] or [`Rejected`].
//! 2. Both sides start yamux. The client opens the control stream ([`StreamOpen::Control`])
//!    and sends [`Message::Register`]; the server answers [`Message::RegisterReply`].
//!    Ping/Pong and Abort then flow on that stream. An extra connection of a live session
//!    opens a join stream ([`StreamOpen::Join`]) instead and registers nothing.
//!
//! Steps 1 and the first stream of step 2 are decided by [`handshake::ClientHandshake`] and
//! [`handshake::ServerHandshake`], with every frame at most [`handshake::HANDSHAKE_MAX_FRAME`].
//! 3. Every other yamux stream starts with a [`StreamOpen`] from the opener and a
//!    [`StreamStatus`] from the acceptor, after which raw bytes follow. For a `tcp` or
//!    `https` proxy the server sends the user's bytes right after the open, without waiting
//!    for the status, and reads the status with a [`StatusReader`] as the reply flows.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use tunnel_proto::{encode, Decoder, Message, Welcome, DEFAULT_MAX_FRAME};
//!
//! let msg = Message::Welcome(Welcome { connection_id: 7, heartbeat_ms: 15_000 });
//! let mut wire = BytesMut::new();
//! encode(&msg, DEFAULT_MAX_FRAME, &mut wire)?;
//!
//! // The transport may deliver the frame in arbitrary pieces.
//! let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
//! let mut buf = BytesMut::new();
//! let mut decoded = None;
//! for chunk in wire.chunks(3) {
//!     buf.extend_from_slice(chunk);
//!     if let Some(m) = decoder.decode(&mut buf)? {
//!         decoded = Some(m);
//!     }
//! }
//! assert_eq!(decoded, Some(msg));
//! assert!(buf.is_empty());
//! # Ok::<(), tunnel_proto::ProtoError>(())
//! ```

// Every public item is documented, and `pub` means reachable from outside the crate. Set
// here rather than in `[workspace.lints]`: Cargo applies those to every target of every
// package, the end-to-end tests and their shared fixtures too.
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
mod bandwidth;
pub mod datagram;
mod error;
pub mod frame;
#[cfg(any(feature = "tokio", test))]
mod framed;
pub mod handshake;
mod ip_filter;
pub mod message;
pub mod peer;
mod peer_text;
pub mod proxy_protocol;
pub mod publish;
mod read_buffer;
pub mod register;
pub mod seconds;
pub mod sni;
mod warn_limit;
mod wire;

#[cfg(test)]
mod tests;

pub use auth::{compute_mac, verify_mac, EKM_LABEL, EKM_LEN};
pub use bandwidth::Bandwidth;
pub use datagram::{encode_datagram, DatagramDecoder, MAX_DATAGRAM};
pub use error::{HandshakeError, ProtoError};
pub use frame::{
    decode_body, encode, encode_to_vec, parse_length, Decoder, DEFAULT_MAX_FRAME, LENGTH_PREFIX,
    PROTOCOL_VERSION,
};
#[cfg(any(feature = "tokio", test))]
pub use framed::{read_message, write_message, FramedError};
pub use ip_filter::{IpFilter, MAX_IP_RULES};
pub use message::{
    AuthResponse, Challenge, Hello, Message, RejectCode, Rejected, StatusRead, StatusReader,
    StreamOpen, StreamStatus, Welcome, HELLO_MAGIC, MAX_STR,
};
pub use peer_text::{PeerText, PEER_TEXT_MAX_CHARS};
pub use publish::{PortRequest, MAX_PORT_BLOCK};
pub use read_buffer::{ReadBuffer, SMALL_READ};
pub use register::{
    validate_name, FieldError, HttpRoute, ItemKind, ItemResult, ProxyKind, ProxySpec,
    RegisterReply, RegisterRequest, VisitorSpec,
};
pub use warn_limit::{Repeats, WarnLimit, WarnLimits, WARN_KEYS, WARN_WINDOW};
