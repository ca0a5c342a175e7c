//! The peer link's messages and their binary bodies.

use std::fmt;
use std::net::SocketAddr;

use bytes::BufMut;

use crate::wire::{put_addr, put_str, Reader};
use crate::ProtoError;

/// First four body bytes of a [`PeerHello`], so a server tells a misdirected client or a
/// stray scanner from a peer of another version.
pub const PEER_HELLO_MAGIC: [u8; 4] = *b"TTPR";

/// Dialer → acceptor, first frame on a peer connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// Peer protocol version ([`crate::PROTOCOL_VERSION`]).
    pub version: u16,
    /// The dialer's server id, for the acceptor's logs; covered by both proofs.
    pub server_id: String,
    /// The dialer's fresh random nonce.
    pub nonce: [u8; 32],
}

/// Acceptor → dialer: its own nonce and its proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChallenge {
    /// The acceptor's server id; covered by both proofs.
    pub server_id: String,
    /// The acceptor's fresh random nonce.
    pub nonce: [u8; 32],
    /// The acceptor's proof ([`super::auth::Role::Acceptor`]).
    pub mac: [u8; 32],
}

/// Dialer → acceptor: the dialer's proof ([`super::auth::Role::Dialer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerProof {
    /// HMAC-SHA256 over the transcript.
    pub mac: [u8; 32],
}

/// What kind of connection a [`Forward`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ForwardKind {
    /// A user connection to a published port.
    Public = 1,
    /// A visitor's stream from a client of the dialing server.
    Visitor = 2,
    /// A user's HTTP request to the dialing server's virtual host for a domain the acceptor
    /// serves: `name` is the registered domain that matched (`app.example.com`,
    /// `*.example.com`), and after `Ok` the stream carries that one HTTP/1.1 exchange (and
    /// its upgraded connection, if any). The acceptor routes, authorises and rewrites it as
    /// its own virtual host would, and never forwards it again.
    Vhost = 3,
}

/// First frame of every stream a dialer opens on a peer link: serve this connection of the
/// proxy you own.
#[derive(Clone, PartialEq, Eq)]
pub struct Forward {
    /// Public port, visitor or virtual host.
    pub kind: ForwardKind,
    /// The proxy's name; for [`ForwardKind::Vhost`], the registered domain that matched.
    pub name: String,
    /// The registry key's port (0 for a private proxy, and for a virtual host).
    pub publish_port: u16,
    /// The registration epoch the dialer's registry names for this proxy (or domain).
    pub epoch: u64,
    /// The real user's (or visitor's) address, for the PROXY protocol and logs.
    pub src_addr: Option<SocketAddr>,
    /// The address the user reached, for the PROXY protocol.
    pub dest_addr: Option<SocketAddr>,
    /// The visiting client's id (empty for a public connection); the owner's server checks
    /// `allow_visitors` against it.
    pub visitor_client_id: String,
    /// The visitor's secret (empty for a public connection); never printed by `Debug`.
    pub secret: String,
}

// Manual so that logging a Message never leaks a visitor secret.
impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("publish_port", &self.publish_port)
            .field("epoch", &self.epoch)
            .field("src_addr", &self.src_addr)
            .field("dest_addr", &self.dest_addr)
            .field("visitor_client_id", &self.visitor_client_id)
            .field("secret", &"***")
            .finish()
    }
}

/// The acceptor's answer to a [`Forward`]; raw bytes follow only after `Ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// Connected to the owner; relay.
    Ok,
    /// This server does not own the proxy at that epoch (any more); `epoch` is what it knows
    /// (0 for nothing). The dialer looks the owner up afresh and retries once.
    NotHere {
        /// The acceptor's epoch for the proxy, or 0.
        epoch: u64,
    },
    /// No such proxy.
    NotFound,
    /// The owner refused: access control, limits, or the owner's client failed to connect.
    Denied(String),
}

const FWD_OK: u8 = 0;
const FWD_NOT_HERE: u8 = 1;
const FWD_NOT_FOUND: u8 = 2;
const FWD_DENIED: u8 = 3;

pub(crate) fn put_peer_hello(dst: &mut impl BufMut, h: &PeerHello) -> Result<(), ProtoError> {
    dst.put_slice(&PEER_HELLO_MAGIC);
    dst.put_u16(h.version);
    put_str(dst, &h.server_id)?;
    dst.put_slice(&h.nonce);
    Ok(())
}

pub(crate) fn read_peer_hello(r: &mut Reader<'_>) -> Result<PeerHello, ProtoError> {
    if r.array::<4>("PeerHello.magic")? != PEER_HELLO_MAGIC {
        return Err(ProtoError::BadMagic);
    }
    Ok(PeerHello {
        version: r.u16("PeerHello.version")?,
        server_id: r.str("PeerHello.server_id")?,
        nonce: r.array("PeerHello.nonce")?,
    })
}

pub(crate) fn put_peer_challenge(
    dst: &mut impl BufMut,
    c: &PeerChallenge,
) -> Result<(), ProtoError> {
    put_str(dst, &c.server_id)?;
    dst.put_slice(&c.nonce);
    dst.put_slice(&c.mac);
    Ok(())
}

pub(crate) fn read_peer_challenge(r: &mut Reader<'_>) -> Result<PeerChallenge, ProtoError> {
    Ok(PeerChallenge {
        server_id: r.str("PeerChallenge.server_id")?,
        nonce: r.array("PeerChallenge.nonce")?,
        mac: r.array("PeerChallenge.mac")?,
    })
}

impl Forward {
    pub(crate) fn encode(&self, dst: &mut impl BufMut) -> Result<(), ProtoError> {
        dst.put_u8(self.kind as u8);
        put_str(dst, &self.name)?;
        dst.put_u16(self.publish_port);
        dst.put_u64(self.epoch);
        put_addr(dst, self.src_addr.as_ref());
        put_addr(dst, self.dest_addr.as_ref());
        put_str(dst, &self.visitor_client_id)?;
        put_str(dst, &self.secret)?;
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        let kind = match r.u8("Forward.kind")? {
            1 => ForwardKind::Public,
            2 => ForwardKind::Visitor,
            3 => ForwardKind::Vhost,
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "Forward.kind",
                    tag,
                })
            }
        };
        Ok(Self {
            kind,
            name: r.str("Forward.name")?,
            publish_port: r.u16("Forward.publish_port")?,
            epoch: r.u64("Forward.epoch")?,
            src_addr: r.addr("Forward.src_addr")?,
            dest_addr: r.addr("Forward.dest_addr")?,
            visitor_client_id: r.str("Forward.visitor_client_id")?,
            secret: r.str("Forward.secret")?,
        })
    }
}

impl Forwarded {
    pub(crate) fn encode(&self, dst: &mut impl BufMut) -> Result<(), ProtoError> {
        match self {
            Self::Ok => dst.put_u8(FWD_OK),
            Self::NotHere { epoch } => {
                dst.put_u8(FWD_NOT_HERE);
                dst.put_u64(*epoch);
            }
            Self::NotFound => dst.put_u8(FWD_NOT_FOUND),
            Self::Denied(reason) => {
                dst.put_u8(FWD_DENIED);
                put_str(dst, reason)?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, ProtoError> {
        Ok(match r.u8("Forwarded tag")? {
            FWD_OK => Self::Ok,
            FWD_NOT_HERE => Self::NotHere {
                epoch: r.u64("Forwarded.epoch")?,
            },
            FWD_NOT_FOUND => Self::NotFound,
            FWD_DENIED => Self::Denied(r.str("Forwarded.reason")?),
            tag => {
                return Err(ProtoError::UnknownTag {
                    what: "Forwarded",
                    tag,
                })
            }
        })
    }
}
