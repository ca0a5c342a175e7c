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

    /// An entry of `allow_ips` or `deny_ips` is neither a CIDR nor an address.
    #[error(
        "{entry:?} is not a network: write a CIDR (\"10.0.0.0/8\", \"2001:db8::/32\", \
         with no bits set past the prefix) or one address (\"192.0.2.7\", \"::1\")"
    )]
    BadIpRule {
        /// `allow_ips` or `deny_ips`.
        field: &'static str,
        /// The entry as written (its first 64 characters).
        entry: String,
    },

    /// An `allow_ips` or `deny_ips` list is too long.
    #[error(
        "{len} entries, over the limit of {max}: merge them into wider CIDRs, or \
         filter in a firewall"
    )]
    TooManyIpRules {
        /// `allow_ips` or `deny_ips`.
        field: &'static str,
        /// Entries given.
        len: usize,
        /// The limit.
        max: usize,
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

    /// A UDP datagram over [`MAX_DATAGRAM`](crate::MAX_DATAGRAM) bytes (on encode or decode).
    #[error(
        "datagram of {len} bytes is over the UDP limit of {max} bytes; on decode, the peer \
         is not framing datagrams"
    )]
    DatagramTooLarge {
        /// The datagram's length, or the length its prefix announced.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A frame carried another message than the one due at this point of the stream (a
    /// [`StreamStatus`](crate::StreamStatus) after a stream's open, say).
    #[error(
        "expected {expected}, got {got}; the peer is misbehaving or runs an incompatible \
         tls-tunnel version"
    )]
    UnexpectedMessage {
        /// The message due.
        expected: &'static str,
        /// The name of the message received.
        got: &'static str,
    },

    /// A JSON body (registration) failed to parse or serialize.
    #[error("invalid registration JSON: {0}")]
    BadJson(String),

    /// A `bandwidth_limit` that is not a rate.
    #[error(
        "{text:?} is not a rate: write bytes per second as e.g. \"10MiB\", \"500KiB\", \
         \"2MB\" (KiB/MiB/GiB are powers of 1024, kB/MB/GB of 1000)"
    )]
    NotARate {
        /// The rate as written.
        text: String,
    },

    /// A `bandwidth_limit` of zero.
    #[error(
        "{text:?} would stop all traffic: remove bandwidth_limit for no limit, or remove the \
         client to refuse it"
    )]
    ZeroRate {
        /// The rate as written.
        text: String,
    },

    /// A proxy, visitor, group or client name is empty.
    #[error("name must not be empty; use 1 to 64 of A-Z a-z 0-9 _ . -")]
    EmptyName,

    /// A name holds a character outside `[A-Za-z0-9_.-]`.
    #[error(
        "name contains {bad:?}; use only A-Z a-z 0-9 _ . - (1 to {max} characters)",
        max = crate::register::MAX_NAME
    )]
    NameCharacter {
        /// The first character not allowed.
        bad: char,
    },

    /// A name is longer than [`MAX_NAME`](crate::register::MAX_NAME).
    #[error(
        "name is {len} characters long; use at most {max} of A-Z a-z 0-9 _ . -",
        max = crate::register::MAX_NAME
    )]
    NameTooLong {
        /// Its length in characters.
        len: usize,
    },

    /// A port block that starts at port 0.
    #[error("a port block starts at port 1 or above")]
    BlockFromZero,

    /// A port block whose first port is above its last.
    #[error("{first}-{last} is an empty block: write the lower port first")]
    EmptyBlock {
        /// The block's first port as written.
        first: u16,
        /// The block's last port as written.
        last: u16,
    },

    /// A port block of more than [`MAX_PORT_BLOCK`](crate::MAX_PORT_BLOCK) ports.
    #[error(
        "{first}-{last} is {len} ports; a block holds at most {max}: split it into several \
         proxies",
        max = crate::MAX_PORT_BLOCK
    )]
    BlockTooLong {
        /// The block's first port.
        first: u16,
        /// The block's last port.
        last: u16,
        /// Ports in the block.
        len: u32,
    },

    // What a user sent an HTTPS virtual host instead of a ClientHello this build reads
    // (`crate::sni`): the words are for a debug log, the connection is closed.
    /// The first record is not a TLS handshake record.
    #[error("not a TLS handshake record")]
    NotHandshakeRecord,

    /// A record of another type came before the ClientHello was complete.
    #[error("a record other than handshake inside the ClientHello")]
    ForeignRecord,

    /// A record header names a major version other than 3.
    #[error("not a TLS record version")]
    NotTlsVersion,

    /// A TLS record announces more than 16 KiB.
    #[error("a TLS record longer than 16 KiB")]
    TlsRecordTooLong,

    /// The first handshake message is another one than a ClientHello.
    #[error("the first handshake message is not a ClientHello")]
    NotClientHello,

    /// The ClientHello is over [`MAX_CLIENT_HELLO`](crate::sni::MAX_CLIENT_HELLO).
    #[error("the ClientHello is larger than 16 KiB")]
    ClientHelloTooLarge,

    /// A ClientHello field runs past the message's end.
    #[error("a truncated ClientHello")]
    TruncatedClientHello,

    /// The `server_name` holds something else than a DNS name.
    #[error("the server name is not a DNS name")]
    BadServerName,

    /// A `server_name` extension without a `host_name` entry.
    #[error("a server_name extension without a host name")]
    NoHostName,
}

/// Why a handshake or session setup did not complete, on either side.
///
/// The machines in [`crate::handshake`] produce these; drivers add [`Self::TimedOut`]. Text is
/// made only at the edges: [`Display`](std::fmt::Display) for logs, [`Self::wire_reason`] for
/// the `Rejected` or stream-status reason the peer reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer closed the stream cleanly while a message was due.
    #[error("the peer closed the connection while we waited for {waiting_for}")]
    Closed {
        /// What was due.
        waiting_for: &'static str,
    },
    /// The peer sent a message that does not belong here.
    #[error("protocol error: expected {expected}, got {got}")]
    Unexpected {
        /// What belonged here.
        expected: &'static str,
        /// The message's name.
        got: &'static str,
    },
    /// The peer speaks another protocol version.
    #[error("speaks protocol version {theirs}, this side speaks {ours}", ours = crate::PROTOCOL_VERSION)]
    Version {
        /// The peer's version.
        theirs: u16,
    },
    /// The client id is not a valid name.
    #[error("invalid client id: client id {id:?} is invalid: {problem}")]
    BadClientId {
        /// The id as sent.
        id: String,
        /// What is wrong with it (a name error of [`ProtoError`]).
        problem: ProtoError,
    },
    /// The proof does not match the key.
    #[error("wrong auth key")]
    WrongKey,
    /// The shared auth key answered for a client id that has its own key on the server
    /// (its `clients_file`): the shared key cannot log in as such an id.
    #[error(
        "client id {id:?} has its own key on this server (clients_file): the shared auth_key \
         cannot log in as it; give this client the key listed for it"
    )]
    SharedKeyForOwnId {
        /// The client id.
        id: String,
    },
    /// A peer server's proof does not match our cluster key (either direction).
    #[error(
        "peer authentication failed: the other server's cluster_key differs from ours; \
         give every server of the cluster the same cluster_key"
    )]
    WrongClusterKey,
    /// The proof was not checked: too many wrong keys lately.
    #[error("{0}")]
    Throttled(crate::handshake::Throttle),
    /// Another running client (another instance) holds the client id.
    #[error("client id {id:?} is in use by another running client; give each client its own id")]
    IdInUse {
        /// The client id.
        id: String,
    },
    /// The server holds as many clients as it may.
    #[error("the server is full ({clients} clients, max_clients); try again later")]
    Full {
        /// Clients connected now.
        clients: usize,
    },
    /// The peer turned us away with a `Rejected` message.
    #[error("rejected ({code}): {}", crate::PeerText(reason))]
    Rejected {
        /// The peer's code.
        code: crate::RejectCode,
        /// The peer's words.
        reason: String,
    },
    /// The server asks for channel binding but this transport has no TLS session of ours.
    #[error(
        "the server requires channel binding, but with transport = \"ws\" this client has \
         no TLS session to bind to: point ws at the server's ws_bind (behind your TLS \
         terminator), or use wss"
    )]
    BindingUnavailable,
    /// The server did not ask for channel binding over a transport that always reaches its
    /// own TLS: something on the path terminates TLS.
    #[error(
        "the server did not ask for channel binding over {transport}, which it always does \
         when it terminates TLS itself: something on the path terminates TLS (a man in the \
         middle?); refusing to authenticate through it"
    )]
    BindingStripped {
        /// The transport's name.
        transport: String,
    },
    /// A join named a session that is not a live session of this client.
    #[error(
        "extra connection refused: session {target} of client {client_id:?} is not live (it \
         ended or was replaced); the client joins its new session once it has one"
    )]
    NotLive {
        /// The session asked for.
        target: u64,
        /// The client asking.
        client_id: String,
    },
    /// The session already has as many connections as it may.
    #[error(
        "extra connection refused: this client already has {lanes} (the server's \
         max_connections_per_client is {max}); it goes on with those"
    )]
    LanesFull {
        /// Connections the session has.
        lanes: usize,
        /// The server's limit.
        max: usize,
    },
    /// The server answered the first stream with an error.
    #[error("{}", crate::PeerText(reason))]
    StreamRefused {
        /// The server's words.
        reason: String,
    },
    /// A frame over the phase's limit.
    #[error(
        "frame of {len} bytes is over the limit of {max} bytes for {phase}; the peer is \
         misbehaving or is not a tls-tunnel peer"
    )]
    FrameTooLarge {
        /// The phase.
        phase: crate::handshake::Phase,
        /// The announced length.
        len: usize,
        /// The phase's limit.
        max: usize,
    },
    /// Bytes that do not decode.
    #[error("malformed frame during {phase}: {source}")]
    Malformed {
        /// The phase.
        phase: crate::handshake::Phase,
        /// The decode error.
        source: ProtoError,
    },
    /// A phase did not finish in time (raised by the driver, which owns the clock).
    #[error("{phase} timed out after {} s", after.as_secs_f64())]
    TimedOut {
        /// The phase.
        phase: crate::handshake::Phase,
        /// The time it was given.
        after: std::time::Duration,
    },
}

impl HandshakeError {
    /// Whether trying again the same way cannot succeed: a wrong key, another protocol
    /// version, an invalid id, or a peer's permanent rejection. A client id in use is decided
    /// by the client (it may be its own stale session, or another process that leaves).
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Version { .. }
            | Self::BadClientId { .. }
            | Self::WrongKey
            | Self::SharedKeyForOwnId { .. } => true,
            Self::Rejected { code, .. } => code.is_permanent(),
            _ => false,
        }
    }

    /// The code a server sends in `Rejected` for this error, if it is one it tells the peer.
    #[must_use]
    pub fn reject_code(&self) -> Option<crate::RejectCode> {
        use crate::RejectCode as C;
        Some(match self {
            Self::Version { .. } => C::Version,
            Self::BadClientId { .. } => C::BadConfig,
            Self::WrongKey | Self::WrongClusterKey | Self::SharedKeyForOwnId { .. } => C::Auth,
            Self::Throttled(_) | Self::Full { .. } => C::Limit,
            Self::IdInUse { .. } => C::IdInUse,
            _ => return None,
        })
    }

    /// The words the peer reads in `Rejected` or a stream status.
    #[must_use]
    pub fn wire_reason(&self) -> String {
        match self {
            Self::Version { theirs } => format!(
                "protocol version {theirs} is not supported; this server speaks version {}: run \
                 the same tls-tunnel release on both sides",
                crate::PROTOCOL_VERSION
            ),
            Self::BadClientId { id, problem } => format!("client id {id:?} is invalid: {problem}"),
            Self::WrongKey => {
                "authentication failed: the client's auth_key does not match the server's".into()
            }
            Self::Throttled(t) => t.wire_reason().into(),
            other => other.to_string(),
        }
    }
}
