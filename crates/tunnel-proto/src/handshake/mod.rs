//! The handshake and session setup as two sans-IO state machines.
//!
//! [`ClientHandshake`] and [`ServerHandshake`] hold every decision of the exchange
//! Hello → Challenge → AuthResponse → Welcome / Rejected → first stream (Control or Join);
//! they own no socket, clock or randomness. The caller feeds what the peer sent
//! ([`Handshake::on_message`], or raw bytes through [`Handshake::receive`]), writes what
//! [`Handshake::poll_transmit`] hands out, and acts on [`Handshake::poll`]: an event, some of
//! which are questions only the caller can answer (may this proof be checked now? who holds
//! this client id? is that session live?), or the typed [`HandshakeError`] that ended it.
//! Timeouts belong to the caller too; the machine only says which [`Phase`] it is in.
//!
//! ```
//! use tunnel_proto::handshake::{
//!     ClientBinding, ClientEvent, ClientHandshake, Handshake, IdState, ServerEvent,
//!     ServerHandshake,
//! };
//! use tunnel_proto::{Hello, Welcome, PROTOCOL_VERSION};
//!
//! let hello = Hello { version: PROTOCOL_VERSION, client_id: "edge".into(), instance: [1; 16] };
//! let exporter = [9u8; 32]; // both ends of one TLS session export the same value
//! let mut client = ClientHandshake::new(hello, b"key", ClientBinding::tls(Some(exporter)));
//! let mut server = ServerHandshake::new(b"key".to_vec(), [5; 32], &exporter);
//!
//! // Pump messages both ways until each side has something to say.
//! fn pump(c: &mut ClientHandshake, s: &mut ServerHandshake) {
//!     loop {
//!         let mut moved = false;
//!         while let Some(m) = c.poll_transmit() { s.on_message(Some(m)); moved = true; }
//!         while let Some(m) = s.poll_transmit() { c.on_message(Some(m)); moved = true; }
//!         if !moved { break; }
//!     }
//! }
//! pump(&mut client, &mut server);
//! assert!(matches!(server.poll(), Some(Ok(ServerEvent::Authorize))));
//! server.authorize(Ok(()));
//! let Some(Ok(ServerEvent::Authenticated(hello))) = server.poll() else { panic!() };
//! assert_eq!(hello.client_id, "edge");
//! server.admit(IdState::Free, Welcome { connection_id: 7, heartbeat_ms: 15_000 });
//! assert!(matches!(server.poll(), Some(Ok(ServerEvent::Welcomed { replaces: false }))));
//! pump(&mut client, &mut server);
//! let Some(Ok(ClientEvent::Welcomed(welcome))) = client.poll() else { panic!() };
//! assert_eq!(welcome.connection_id, 7);
//! ```

mod client;
mod server;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_ids;

use std::collections::VecDeque;
use std::fmt;

use bytes::BytesMut;

pub use client::{ClientBinding, ClientEvent, ClientHandshake};
pub use server::{
    Checked, Credential, IdKeys, IdState, JoinTarget, ServerEvent, ServerHandshake, Throttle,
};

use crate::{Decoder, HandshakeError, Message, ProtoError};

/// The largest frame either side reads or writes before the session's control stream takes
/// over: a Hello, Challenge, proof, Welcome, Rejected (reason at most
/// [`MAX_STR`](crate::MAX_STR) bytes) or a first-stream header. A peer announcing more is not
/// a client or server of ours.
pub const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;

/// What a connection is doing while it is set up; timeouts and errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// The TLS handshake (and the HTTP/2 or WebSocket request on top of it).
    Tls,
    /// Hello, challenge, proof, and the Welcome or Rejected that answers it.
    Authentication,
    /// The first stream of a new session: the control stream and its status.
    ControlStream,
    /// The first stream of an extra connection asking to join a live session.
    Join,
    /// The server waiting for the first stream, before it knows which kind it is.
    FirstStream,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Tls => "TLS handshake",
            Phase::Authentication => "authentication",
            Phase::ControlStream => "opening the control stream",
            Phase::Join => "joining the session",
            Phase::FirstStream => "waiting for the first stream",
        })
    }
}

/// One side of the handshake, as a driver sees it.
///
/// The driver loop is: write every [`poll_transmit`](Self::poll_transmit) message; if
/// [`poll`](Self::poll) has an outcome, act on it (answering a question feeds the machine
/// again); otherwise read one frame of at most [`max_frame`](Self::max_frame) bytes and feed
/// it to [`on_message`](Self::on_message) (or a decode failure to
/// [`on_decode_error`](Self::on_decode_error)).
pub trait Handshake {
    /// What the machine reports: progress, or a question for the caller.
    type Event;

    /// The phase the machine is in, for timeouts and errors.
    fn phase(&self) -> Phase;

    /// The largest frame the machine accepts now.
    fn max_frame(&self) -> usize {
        HANDSHAKE_MAX_FRAME
    }

    /// A message from the peer, or `None` when it closed the stream cleanly.
    fn on_message(&mut self, msg: Option<Message>);

    /// The peer's bytes could not be decoded (or announced a frame over
    /// [`max_frame`](Self::max_frame)): the machine fails with a typed error.
    fn on_decode_error(&mut self, err: ProtoError);

    /// Feed raw bytes: every whole frame at the front of `buf` is decoded (with the phase's
    /// limit) and handed to [`on_message`](Self::on_message); a partial one stays in `buf`.
    /// Stops at the first outcome, so bytes meant for the next layer stay in `buf`.
    fn receive(&mut self, buf: &mut BytesMut) {
        while !self.has_outcome() {
            match Decoder::new(self.max_frame()).decode(buf) {
                Ok(Some(msg)) => self.on_message(Some(msg)),
                Ok(None) => return,
                Err(e) => return self.on_decode_error(e),
            }
        }
    }

    /// The next message to send to the peer.
    fn poll_transmit(&mut self) -> Option<Message>;

    /// Whether [`poll`](Self::poll) has something now.
    fn has_outcome(&self) -> bool;

    /// The next event, or the error that ended the handshake; `None` while the machine waits
    /// for the peer.
    fn poll(&mut self) -> Option<Result<Self::Event, HandshakeError>>;
}

/// What a machine has to say: messages to send, then at most one outcome.
#[derive(Debug)]
struct Outbox<E> {
    send: VecDeque<Message>,
    outcome: Option<Result<E, HandshakeError>>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Self {
            send: VecDeque::new(),
            outcome: None,
        }
    }
}

impl<E> Outbox<E> {
    fn send(&mut self, msg: Message) {
        self.send.push_back(msg);
    }

    fn event(&mut self, ev: E) {
        self.outcome = Some(Ok(ev));
    }

    fn fail(&mut self, err: HandshakeError) {
        self.outcome = Some(Err(err));
    }
}

/// The error for a decode failure in `phase`: an oversize frame is named as such.
pub(crate) fn decode_failed(phase: Phase, err: ProtoError) -> HandshakeError {
    match err {
        ProtoError::FrameTooLarge { len, max } => HandshakeError::FrameTooLarge { phase, len, max },
        other => HandshakeError::Malformed {
            phase,
            source: other,
        },
    }
}

/// The error for `got` where `expected` belonged; `None` is the peer closing.
pub(crate) fn unexpected(expected: &'static str, got: Option<&Message>) -> HandshakeError {
    match got {
        Some(Message::Rejected(r)) => HandshakeError::Rejected {
            code: r.code,
            reason: r.reason.clone(),
        },
        Some(m) => HandshakeError::Unexpected {
            expected,
            got: m.name(),
        },
        None => HandshakeError::Closed {
            waiting_for: expected,
        },
    }
}
