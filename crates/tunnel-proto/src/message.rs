//! Every message of the protocol and the binary layout of its body.
//!
//! A body is everything after the kind byte. Registration bodies are JSON (they are the
//! part of the protocol most likely to grow and are exchanged once per session, so the
//! flexibility is worth the bytes); everything on a hot or security-sensitive path is a
//! fixed binary layout.

use bytes::BufMut;

use crate::peer::messages::{
    put_peer_challenge, put_peer_hello, read_peer_challenge, read_peer_hello,
};
use crate::peer::{Forward, Forwarded, PeerChallenge, PeerHello, PeerProof};
use crate::register::{RegisterReply, RegisterRequest};
use crate::wire::{put_str, Reader};
use crate::{ProtoError, PROTOCOL_VERSION};

mod status_reader;
mod stream;

pub use status_reader::{StatusRead, StatusReader};
pub use stream::{StreamOpen, StreamStatus};

/// Hard cap, in bytes, on every length-prefixed string, enforced on encode and on decode.
pub const MAX_STR: usize = 1024;

/// First four body bytes of a [`Hello`]: lets the server tell a confused client (say, a
/// browser pointed at the tunnel port) from a protocol bug.
pub const HELLO_MAGIC: [u8; 4] = *b"TTUN";

/// Kind bytes; grouped by phase (0x0_ handshake, 0x1_ registration, 0x2_ control, 0x3_ streams,
/// 0x4_ the server-to-server peer link).
mod kind {
    pub(super) const HELLO: u8 = 0x01;
    pub(super) const CHALLENGE: u8 = 0x02;
    pub(super) const AUTH_RESPONSE: u8 = 0x03;
    pub(super) const WELCOME: u8 = 0x04;
    pub(super) const REJECTED: u8 = 0x05;
    pub(super) const REGISTER: u8 = 0x10;
    pub(super) const REGISTER_REPLY: u8 = 0x11;
    pub(super) const PING: u8 = 0x20;
    pub(super) const PONG: u8 = 0x21;
    pub(super) const ABORT: u8 = 0x22;
    pub(super) const RECONNECT: u8 = 0x23;
    pub(super) const MOVED: u8 = 0x24;
    pub(super) const STREAM_OPEN: u8 = 0x30;
    pub(super) const STREAM_STATUS: u8 = 0x31;
    pub(super) const PEER_HELLO: u8 = 0x40;
    pub(super) const PEER_CHALLENGE: u8 = 0x41;
    pub(super) const PEER_PROOF: u8 = 0x42;
    pub(super) const PEER_ACCEPTED: u8 = 0x43;
    pub(super) const FORWARD: u8 = 0x44;
    pub(super) const FORWARDED: u8 = 0x45;
}

/// One protocol message; a frame carries exactly one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `[0x01]` client → server, first frame on a new transport connection.
    Hello(Hello),
    /// `[0x02]` server → client.
    Challenge(Challenge),
    /// `[0x03]` client → server.
    AuthResponse(AuthResponse),
    /// `[0x04]` server → client: authenticated; yamux starts right after this frame on both sides.
    Welcome(Welcome),
    /// `[0x05]` either side, handshake or registration failure; the sender closes after it.
    Rejected(Rejected),
    /// `[0x10]` client → server on the control stream (JSON body).
    Register(RegisterRequest),
    /// `[0x11]` server → client on the control stream (JSON body).
    RegisterReply(RegisterReply),
    /// `[0x20]` either way on the control stream (heartbeat).
    Ping(u64),
    /// `[0x21]` answer to a [`Message::Ping`] with the same value.
    Pong(u64),
    /// `[0x22]` on the control stream: yamux stream id whose data path failed; the peer resets its side.
    Abort(u32),
    /// `[0x23]` server → client on the control stream: this server is draining; open a new
    /// session (on another server) at a random moment within this many milliseconds, and keep
    /// this one serving until the server closes it. Make-before-break: the new session takes
    /// the registrations over while open streams finish here.
    Reconnect(u32),
    /// `[0x24]` client → server on the control stream of a session it was asked to leave:
    /// its new session serves now; route nothing more here, and close this one once its
    /// open streams are done.
    Moved,
    /// `[0x30]` first frame on every yamux stream, written by the opener.
    StreamOpen(StreamOpen),
    /// `[0x31]` the acceptor's one-frame reply; raw bytes follow only after [`StreamStatus::Ok`].
    /// The opener of a byte-stream proxy's stream may send its raw bytes before this arrives
    /// (see [`StreamOpen::Proxy`]).
    StreamStatus(StreamStatus),
    /// `[0x40]` peer dialer → acceptor, first frame on a peer connection.
    PeerHello(PeerHello),
    /// `[0x41]` peer acceptor → dialer: its nonce and proof.
    PeerChallenge(PeerChallenge),
    /// `[0x42]` peer dialer → acceptor: the dialer's proof.
    PeerProof(PeerProof),
    /// `[0x43]` peer acceptor → dialer: both proofs hold; yamux starts right after this frame.
    PeerAccepted,
    /// `[0x44]` first frame of every stream on a peer link, written by the dialer.
    Forward(Forward),
    /// `[0x45]` the acceptor's answer to a [`Message::Forward`].
    Forwarded(Forwarded),
}

/// Opens the handshake.
///
/// Body: magic `TTUN`, version, `client_id`, instance. That prefix is frozen across
/// versions; a future version may only append fields. Decoding therefore tolerates trailing
/// bytes when `version != PROTOCOL_VERSION` (the engine, not this crate, rejects the
/// version, so it can answer with [`RejectCode::Version`]). The same holds for [`Challenge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Which configured client this is; selects the key on the server.
    pub client_id: String,
    /// Random per process run, so the server can tell a reconnect of the same process from
    /// a second process using the same id.
    pub instance: [u8; 16],
}

/// The server's random nonce the client must MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Protocol version the server speaks.
    pub version: u16,
    /// Fresh random bytes, never reused.
    pub nonce: [u8; 32],
    /// Whether the proof must be bound to the TLS session (exported keying material). The
    /// server says so when the connection ends in its own TLS; when TLS ends at a proxy in
    /// front of it (plain WebSocket on `ws_bind`), neither side can know a common exporter
    /// value, so both use an empty binding. One byte on the wire: 0 or 1.
    pub bound: bool,
}

/// The client's proof of key possession; see [`crate::auth::compute_mac`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResponse {
    /// HMAC-SHA256 over the challenge transcript.
    pub mac: [u8; 32],
}

/// Handshake succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Server-assigned id of this connection, for correlating logs on both sides. The first
    /// connection's id is also the session's: an extra connection joins by naming it
    /// ([`crate::StreamOpen::Join`]).
    pub connection_id: u64,
    /// How often the client should ping on the control stream.
    pub heartbeat_ms: u32,
}

/// Refusal; the sender closes the connection right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Machine-readable category; decides whether the client retries.
    pub code: RejectCode,
    /// Human-readable explanation, shown to the user as-is.
    pub reason: String,
}

impl Rejected {
    /// Convenience constructor.
    pub fn new(code: RejectCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// Why a peer was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum RejectCode {
    /// Protocol versions are incompatible.
    Version = 1,
    /// Unknown client id or wrong key.
    Auth = 2,
    /// Another live session already uses this client id.
    IdInUse = 3,
    /// A server limit (sessions, proxies, ports) was reached.
    Limit = 4,
    /// The request was well-formed but the configuration is invalid.
    BadConfig = 5,
    /// The server failed for reasons of its own.
    Internal = 6,
}

impl RejectCode {
    /// True when retrying the same request cannot succeed (`Version`, `Auth`, `BadConfig`), so a
    /// client should stop and tell the user instead of reconnecting in a loop.
    #[must_use]
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::Version | Self::Auth | Self::BadConfig)
    }
}

impl TryFrom<u8> for RejectCode {
    type Error = ProtoError;

    fn try_from(b: u8) -> Result<Self, ProtoError> {
        Ok(match b {
            1 => Self::Version,
            2 => Self::Auth,
            3 => Self::IdInUse,
            4 => Self::Limit,
            5 => Self::BadConfig,
            6 => Self::Internal,
            other => return Err(ProtoError::UnknownCode(other)),
        })
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Version => "protocol version mismatch",
            Self::Auth => "authentication failed",
            Self::IdInUse => "client id already in use",
            Self::Limit => "server limit reached",
            Self::BadConfig => "invalid configuration",
            Self::Internal => "internal server error",
        })
    }
}

impl Message {
    /// The kind byte this message is framed with.
    #[must_use]
    pub fn kind(&self) -> u8 {
        match self {
            Self::Hello(_) => kind::HELLO,
            Self::Challenge(_) => kind::CHALLENGE,
            Self::AuthResponse(_) => kind::AUTH_RESPONSE,
            Self::Welcome(_) => kind::WELCOME,
            Self::Rejected(_) => kind::REJECTED,
            Self::Register(_) => kind::REGISTER,
            Self::RegisterReply(_) => kind::REGISTER_REPLY,
            Self::Ping(_) => kind::PING,
            Self::Pong(_) => kind::PONG,
            Self::Abort(_) => kind::ABORT,
            Self::Reconnect(_) => kind::RECONNECT,
            Self::Moved => kind::MOVED,
            Self::StreamOpen(_) => kind::STREAM_OPEN,
            Self::StreamStatus(_) => kind::STREAM_STATUS,
            Self::PeerHello(_) => kind::PEER_HELLO,
            Self::PeerChallenge(_) => kind::PEER_CHALLENGE,
            Self::PeerProof(_) => kind::PEER_PROOF,
            Self::PeerAccepted => kind::PEER_ACCEPTED,
            Self::Forward(_) => kind::FORWARD,
            Self::Forwarded(_) => kind::FORWARDED,
        }
    }

    /// Short name for logs and "expected X, got Y" errors in the engines.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "Hello",
            Self::Challenge(_) => "Challenge",
            Self::AuthResponse(_) => "AuthResponse",
            Self::Welcome(_) => "Welcome",
            Self::Rejected(_) => "Rejected",
            Self::Register(_) => "Register",
            Self::RegisterReply(_) => "RegisterReply",
            Self::Ping(_) => "Ping",
            Self::Pong(_) => "Pong",
            Self::Abort(_) => "Abort",
            Self::Reconnect(_) => "Reconnect",
            Self::Moved => "Moved",
            Self::StreamOpen(_) => "StreamOpen",
            Self::StreamStatus(_) => "StreamStatus",
            Self::PeerHello(_) => "PeerHello",
            Self::PeerChallenge(_) => "PeerChallenge",
            Self::PeerProof(_) => "PeerProof",
            Self::PeerAccepted => "PeerAccepted",
            Self::Forward(_) => "Forward",
            Self::Forwarded(_) => "Forwarded",
        }
    }

    /// Writes the kind byte and the body. On error `dst` may hold a partial body; the frame
    /// encoder rolls it back.
    pub(crate) fn encode_body(&self, dst: &mut impl BufMut) -> Result<(), ProtoError> {
        dst.put_u8(self.kind());
        match self {
            Self::Hello(h) => put_hello_body(dst, h)?,
            Self::Challenge(c) => {
                dst.put_u16(c.version);
                dst.put_slice(&c.nonce);
                dst.put_u8(u8::from(c.bound));
            }
            Self::AuthResponse(a) => dst.put_slice(&a.mac),
            Self::Welcome(w) => {
                dst.put_u64(w.connection_id);
                dst.put_u32(w.heartbeat_ms);
            }
            Self::Rejected(r) => {
                dst.put_u8(r.code as u8);
                put_str(dst, &r.reason)?;
            }
            Self::Register(r) => put_json(dst, r)?,
            Self::RegisterReply(r) => put_json(dst, r)?,
            Self::Ping(v) | Self::Pong(v) => dst.put_u64(*v),
            Self::Abort(id) | Self::Reconnect(id) => dst.put_u32(*id),
            Self::StreamOpen(s) => s.encode(dst)?,
            Self::StreamStatus(s) => s.encode(dst)?,
            Self::PeerHello(h) => put_peer_hello(dst, h)?,
            Self::PeerChallenge(c) => put_peer_challenge(dst, c)?,
            Self::PeerProof(p) => dst.put_slice(&p.mac),
            Self::PeerAccepted | Self::Moved => {}
            Self::Forward(f) => f.encode(dst)?,
            Self::Forwarded(f) => f.encode(dst)?,
        }
        Ok(())
    }

    /// Parses one body whose kind byte has already been split off.
    pub(crate) fn decode_body(kind: u8, body: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Reader::new(body);
        let msg = match kind {
            kind::HELLO => {
                let hello = read_hello(&mut r)?;
                // Only a same-version Hello must match our layout exactly; a newer client
                // may append fields, and the engine still needs this Hello to answer with
                // Rejected(Version) instead of a confusing decode error.
                if hello.version != PROTOCOL_VERSION {
                    return Ok(Self::Hello(hello));
                }
                Self::Hello(hello)
            }
            kind::CHALLENGE => {
                let version = r.u16("Challenge.version")?;
                let nonce = r.array("Challenge.nonce")?;
                let flag = r.u8("Challenge.bound")?;
                // Same forward-compatibility rule as Hello: another version's Challenge is
                // only read far enough for the client to report the version mismatch.
                if version != PROTOCOL_VERSION {
                    return Ok(Self::Challenge(Challenge {
                        version,
                        nonce,
                        bound: flag != 0,
                    }));
                }
                let bound = match flag {
                    0 => false,
                    1 => true,
                    tag => {
                        return Err(ProtoError::UnknownTag {
                            what: "Challenge.bound",
                            tag,
                        })
                    }
                };
                Self::Challenge(Challenge {
                    version,
                    nonce,
                    bound,
                })
            }
            kind::AUTH_RESPONSE => Self::AuthResponse(AuthResponse {
                mac: r.array("AuthResponse.mac")?,
            }),
            kind::WELCOME => Self::Welcome(Welcome {
                connection_id: r.u64("Welcome.connection_id")?,
                heartbeat_ms: r.u32("Welcome.heartbeat_ms")?,
            }),
            kind::REJECTED => Self::Rejected(Rejected {
                code: RejectCode::try_from(r.u8("Rejected.code")?)?,
                reason: r.str("Rejected.reason")?,
            }),
            // JSON owns the whole body, including its own trailing-garbage check.
            kind::REGISTER => return Ok(Self::Register(read_json(body)?)),
            kind::REGISTER_REPLY => return Ok(Self::RegisterReply(read_json(body)?)),
            kind::PING => Self::Ping(r.u64("Ping value")?),
            kind::PONG => Self::Pong(r.u64("Pong value")?),
            kind::ABORT => Self::Abort(r.u32("Abort stream id")?),
            kind::RECONNECT => Self::Reconnect(r.u32("Reconnect.within_ms")?),
            kind::MOVED => Self::Moved,
            kind::STREAM_OPEN => Self::StreamOpen(StreamOpen::decode(&mut r)?),
            kind::STREAM_STATUS => Self::StreamStatus(StreamStatus::decode(&mut r)?),
            kind::PEER_HELLO => Self::PeerHello(read_peer_hello(&mut r)?),
            kind::PEER_CHALLENGE => Self::PeerChallenge(read_peer_challenge(&mut r)?),
            kind::PEER_PROOF => Self::PeerProof(PeerProof {
                mac: r.array("PeerProof.mac")?,
            }),
            kind::PEER_ACCEPTED => Self::PeerAccepted,
            kind::FORWARD => Self::Forward(Forward::decode(&mut r)?),
            kind::FORWARDED => Self::Forwarded(Forwarded::decode(&mut r)?),
            other => return Err(ProtoError::UnknownKind(other)),
        };
        r.finish(kind)?;
        Ok(msg)
    }
}

/// Shared with [`crate::auth`], which MACs exactly these bytes so the server authenticates
/// the Hello it actually received.
pub(crate) fn put_hello_body(dst: &mut impl BufMut, h: &Hello) -> Result<(), ProtoError> {
    dst.put_slice(&HELLO_MAGIC);
    dst.put_u16(h.version);
    put_str(dst, &h.client_id)?;
    dst.put_slice(&h.instance);
    Ok(())
}

fn read_hello(r: &mut Reader<'_>) -> Result<Hello, ProtoError> {
    if r.array::<4>("Hello.magic")? != HELLO_MAGIC {
        return Err(ProtoError::BadMagic);
    }
    Ok(Hello {
        version: r.u16("Hello.version")?,
        client_id: r.str("Hello.client_id")?,
        instance: r.array("Hello.instance")?,
    })
}

fn put_json<T: serde::Serialize>(dst: &mut impl BufMut, value: &T) -> Result<(), ProtoError> {
    serde_json::to_writer(dst.writer(), value).map_err(|e| ProtoError::BadJson(e.to_string()))
}

fn read_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProtoError> {
    // serde would also accept a struct written as a positional array; allowing only objects
    // keeps one canonical form, which deny_unknown_fields relies on.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProtoError::BadJson("expected a JSON object".to_owned()));
    }
    serde_json::from_slice(body).map_err(|e| ProtoError::BadJson(e.to_string()))
}
