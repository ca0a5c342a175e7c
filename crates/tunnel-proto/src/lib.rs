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
//! - [`register`]: JSON registration types.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers for local services.
//! - [`PeerText`]: a peer's words (reject reasons, stream errors) made safe to log.
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
//!    [`StreamStatus`] from the acceptor, after which raw bytes follow.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use tunnel_proto::{encode, Decoder, Message, Welcome, DEFAULT_MAX_FRAME};
//!
//! let msg = Message::Welcome(Welcome { session_id: 7, heartbeat_ms: 15_000 });
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

pub mod auth;
mod error;
pub mod frame;
pub mod handshake;
pub mod message;
mod peer_text;
pub mod proxy_protocol;
pub mod register;
mod wire;

#[cfg(test)]
mod tests;

pub use auth::{compute_mac, verify_mac, EKM_LABEL, EKM_LEN};
pub use error::{HandshakeError, ProtoError};
pub use frame::{
    decode_body, encode, encode_to_vec, parse_length, Decoder, DEFAULT_MAX_FRAME, LENGTH_PREFIX,
    PROTOCOL_VERSION,
};
pub use message::{
    AuthResponse, Challenge, Hello, Message, RejectCode, Rejected, StreamOpen, StreamStatus,
    Welcome, HELLO_MAGIC, MAX_STR,
};
pub use peer_text::{PeerText, PEER_TEXT_MAX_CHARS};
pub use register::{
    validate_name, FieldError, HttpRoute, ItemKind, ItemResult, ProxyKind, ProxySpec,
    RegisterReply, RegisterRequest, VisitorSpec,
};
