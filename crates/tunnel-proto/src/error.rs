//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong while encoding or decoding tunnel-proto data.
///
/// Decode errors mean the peer sent something this build does not understand (a bug, a
/// version mismatch, or something that is not a tls-tunnel peer at all); the stream that
/// produced them is unusable and should be closed. Encode errors mean the local caller
/// tried to send a value the protocol cannot carry.
///
/// The type is `Clone + Eq` so engines can store it and tests can compare it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// A frame is longer than the configured maximum. From a peer, that is a hostile or
    /// misconfigured sender, never something to accommodate by default: the message names the
    /// limit and puts the fix on the sender.
    #[error(
        "frame of {len} bytes is over the limit of {max} bytes; the sender must send frames \
         of at most {max} bytes (a larger frame from a peer means it is misbehaving or \
         misconfigured)"
    )]
    FrameTooLarge {
        /// Length announced by (or needed for) the frame, kind byte included.
        len: usize,
        /// The configured limit.
        max: usize,
    },

    /// A length prefix of zero: every frame carries at least its kind byte.
    #[error(
        "received an empty frame (length 0); the peer is not speaking the tls-tunnel protocol"
    )]
    EmptyFrame,

    /// The kind byte names no message this build knows.
    #[error(
        "unknown message kind 0x{0:02x}; the peer may run a newer or incompatible tls-tunnel version"
    )]
    UnknownKind(u8),

    /// A body ended before a field was complete.
    #[error("message truncated while reading {what}; the peer sent a malformed frame")]
    Truncated {
        /// The field that was being read.
        what: &'static str,
    },

    /// A body had bytes left over after its last field.
    #[error(
        "message kind 0x{kind:02x} has {extra} unexpected trailing bytes; \
         the peer may run an incompatible tls-tunnel version"
    )]
    TrailingBytes {
        /// Kind byte of the offending message.
        kind: u8,
        /// Number of bytes left over.
        extra: usize,
    },

    /// The Hello frame did not start with `TTUN`.
    #[error(
        "bad handshake magic; the peer is not a tls-tunnel client \
         (check that the client points at the tunnel port, not a proxy port)"
    )]
    BadMagic,

    /// A string field was not valid UTF-8.
    #[error("a string field is not valid UTF-8; the peer sent a malformed frame")]
    BadUtf8,

    /// A string field is over [`MAX_STR`](crate::MAX_STR) bytes (on encode or decode).
    #[error("string of {len} bytes exceeds the limit of {max} bytes; shorten the name, reason or secret")]
    StringTooLong {
        /// Length of the string in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A tag byte (stream header, status, address family) has no known meaning.
    #[error(
        "unknown {what} tag {tag}; the peer may run a newer or incompatible tls-tunnel version"
    )]
    UnknownTag {
        /// Which tagged value was being read.
        what: &'static str,
        /// The tag byte received.
        tag: u8,
    },

    /// A [`RejectCode`](crate::RejectCode) byte this build does not know.
    #[error(
        "unknown rejection code {0}; the peer may run a newer tls-tunnel version (upgrade this side)"
    )]
    UnknownCode(u8),

    /// A JSON body (registration) failed to parse or serialize.
    #[error("invalid registration JSON: {0}")]
    BadJson(String),
}
