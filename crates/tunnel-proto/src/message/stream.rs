//! Per-stream headers: what a yamux stream is for, and whether the acceptor took it.

use std::fmt;
use std::net::SocketAddr;

use bytes::BufMut;

use crate::wire::{put_addr, put_str, Reader};
use crate::ProtoError;

const OPEN_CONTROL: u8 = 0;
const OPEN_PROXY: u8 = 1;
const OPEN_VISIT: u8 = 2;
const OPEN_JOIN: u8 = 3;

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;

/// First frame on every yamux stream, written by the side that opened it.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamOpen {
    /// The client's first stream; carries Register, Ping/Pong and Abort.
    Control,
    /// The first stream of a client's additional connection, in place of [`StreamOpen::Control`]:
    /// this connection joins the live session `session` (its [`crate::Welcome::connection_id`])
    /// of the same client id and instance, and carries streams of that session. It then serves
    /// as the connection's control stream for Ping/Pong and Abort; registration stays on the
    /// first connection.
    Join {
        /// The session to join.
        session: u64,
    },
    /// Server → proxy owner: serve one user connection of `proxy`.
    ///
    /// For a byte-stream proxy (`tcp`, `https`) the server MAY send the user's raw bytes
    /// right after this frame, without waiting for the [`StreamStatus`]: client-speaks-first
    /// protocols (HTTP, TLS, PostgreSQL) then save one tunnel round trip per connection. The
    /// owner reads exactly this frame (never past it), dials its local service, and answers;
    /// the early bytes wait in the stream meanwhile. After `Ok` it relays them like any
    /// later byte (a PROXY protocol header, written at dial, still comes first); after
    /// `Error` it drops the stream and the bytes with it, and the server resets the user's
    /// connection. The server reads the status out of the reply with a
    /// [`StatusReader`](crate::StatusReader), as bounded as when it waits. Streams whose
    /// opener must answer the user itself on failure (a visitor's, an HTTP request's, a UDP
    /// flow's) still wait for the status before sending.
    Proxy {
        /// Name of the registered proxy.
        proxy: String,
        /// The user's address, for logs and the PROXY protocol; `None` if unknown.
        peer: Option<SocketAddr>,
        /// The address the user connected to (the published port), for the PROXY
        /// protocol; `None` if unknown (e.g. a visitor's connection).
        dest: Option<SocketAddr>,
    },
    /// Visitor client → server: reach another client's proxy.
    Visit {
        /// Name of the proxy to reach.
        proxy: String,
        /// Port the visitor published locally (informational, for the owner's logs).
        publish_port: u16,
        /// Shared secret the proxy owner configured; never printed by `Debug`.
        secret: String,
    },
}

// Manual so that logging a Message never leaks a visitor secret.
impl fmt::Debug for StreamOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Control => f.write_str("Control"),
            Self::Join { session } => f.debug_struct("Join").field("session", session).finish(),
            Self::Proxy { proxy, peer, dest } => f
                .debug_struct("Proxy")
                .field("proxy", proxy)
                .field("peer", peer)
                .field("dest", dest)
                .finish(),
            Self::Visit {
                proxy,
                publish_port,
                ..
            } => f
                .debug_struct("Visit")
                .field("proxy", proxy)
                .field("publish_port", publish_port)
                .field("secret", &"***")
                .finish(),
        }
    }
}

impl StreamOpen {
    pub(crate) fn encode(&self, dst: &mut impl BufMut) -> Result<(), ProtoError> {
        match self {
            Self::Control => dst.put_u8(OPEN_CONTROL),
            Self::Join { session } => {
                dst.put_u8(OPEN_JOIN);
                dst.put_u64(*session);
            }
            Self::Proxy { proxy, peer, dest } => {
                dst.put_u8(OPEN_PROXY);
                put_str(dst, proxy)?;
                put_addr(dst, peer.as_ref());
                put_addr(dst, dest.as_ref());
            }
            Self::Visit {
                proxy,
                publish_port,
                secret,
            } => {
                dst.put_u8(OPEN_VISIT);
                put_str(dst, proxy)?;
                dst.put_u16(*publish_port);
                put_str(dst, secret)?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(match r.u8("StreamOpen tag")? {
            OPEN_CONTROL => Self::Control,
            OPEN_JOIN => Self::Join {
                session: r.u64("StreamOpen.session")?,
            },
            OPEN_PROXY => Self::Proxy {
                proxy: r.str("StreamOpen.proxy")?,
                peer: r.addr("StreamOpen.peer")?,
                dest: r.addr("StreamOpen.dest")?,
            },
            OPEN_VISIT => Self::Visit {
                proxy: r.str("StreamOpen.proxy")?,
                publish_port: r.u16("StreamOpen.publish_port")?,
                secret: r.str("StreamOpen.secret")?,
            },
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "StreamOpen",
                    tag,
                })
            }
        })
    }
}

/// The acceptor's answer to a [`StreamOpen`]. The acceptor's raw payload bytes follow on the
/// stream only after `Ok`; after `Error` the acceptor closes the stream, discarding whatever
/// the opener sent early (see [`StreamOpen::Proxy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamStatus {
    /// The stream is connected end to end; start relaying.
    Ok,
    /// The stream could not be served; the text says why.
    Error(String),
}

impl StreamStatus {
    pub(crate) fn encode(&self, dst: &mut impl BufMut) -> Result<(), ProtoError> {
        match self {
            Self::Ok => dst.put_u8(STATUS_OK),
            Self::Error(reason) => {
                dst.put_u8(STATUS_ERROR);
                put_str(dst, reason)?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(match r.u8("StreamStatus tag")? {
            STATUS_OK => Self::Ok,
            STATUS_ERROR => Self::Error(r.str("StreamStatus.reason")?),
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "StreamStatus",
                    tag,
                })
            }
        })
    }
}
