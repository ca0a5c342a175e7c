//! The two sides of the peer handshake as sans-IO machines (driven like
//! [`crate::handshake`]'s, through the same [`Handshake`] trait).

use crate::handshake::{Handshake, Phase, Throttle};
use crate::peer::auth::{self, Role, Transcript};
use crate::peer::{PeerChallenge, PeerHello, PeerProof};
use crate::{HandshakeError, Message, ProtoError, Rejected, PROTOCOL_VERSION};

/// What the dialer's machine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialerEvent {
    /// Both proofs hold: start yamux (as the client side) and open Forward streams.
    Accepted {
        /// The acceptor's server id, as it proved it.
        server_id: String,
    },
}

/// What the acceptor's machine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptorEvent {
    /// The dialer's proof arrived. Question: may it be checked now (the wrong-key limits)?
    /// Answer with [`PeerAcceptor::authorize`].
    Authorize,
    /// The dialer proved the key; `PeerAccepted` is queued: write it and start yamux (as the
    /// server side), then serve Forward streams only.
    Authenticated {
        /// The dialer's server id, as it proved it.
        server_id: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DialerState {
    Challenge,
    Accepted,
    Done,
}

/// The dialing server's side of a peer connection's setup.
#[derive(Debug)]
pub struct PeerDialer {
    state: DialerState,
    key: Vec<u8>,
    server_id: String,
    nonce: [u8; 32],
    binding: [u8; 32],
    peer_id: String,
    queued: std::collections::VecDeque<Message>,
    outcome: Option<Result<DialerEvent, HandshakeError>>,
}

impl PeerDialer {
    /// A machine whose PeerHello is queued. `nonce` is fresh randomness; `binding` the TLS
    /// exporter value of this connection (the peer link always runs over our own TLS).
    #[must_use]
    pub fn new(key: &[u8], server_id: &str, nonce: [u8; 32], binding: [u8; 32]) -> Self {
        let hello = Message::PeerHello(PeerHello {
            version: PROTOCOL_VERSION,
            server_id: server_id.to_owned(),
            nonce,
        });
        Self {
            state: DialerState::Challenge,
            key: key.to_vec(),
            server_id: server_id.to_owned(),
            nonce,
            binding,
            peer_id: String::new(),
            queued: [hello].into(),
            outcome: None,
        }
    }

    fn on_challenge(&mut self, c: PeerChallenge) {
        let t = Transcript {
            dialer_nonce: &self.nonce,
            acceptor_nonce: &c.nonce,
            binding: &self.binding,
            dialer_id: &self.server_id,
            acceptor_id: &c.server_id,
        };
        // Checked before anything else is sent: a server without the key learns nothing.
        if !auth::verify(&self.key, Role::Acceptor, &t, &c.mac) {
            return self.fail(HandshakeError::WrongClusterKey);
        }
        let mac = auth::compute(&self.key, Role::Dialer, &t);
        self.queued.push_back(Message::PeerProof(PeerProof { mac }));
        self.peer_id = c.server_id;
        self.state = DialerState::Accepted;
    }

    fn fail(&mut self, err: HandshakeError) {
        self.state = DialerState::Done;
        self.outcome = Some(Err(err));
    }
}

impl Handshake for PeerDialer {
    type Event = DialerEvent;

    fn phase(&self) -> Phase {
        Phase::Authentication
    }

    fn on_message(&mut self, msg: Option<Message>) {
        if self.outcome.is_some() {
            return;
        }
        match (self.state, msg) {
            (DialerState::Challenge, Some(Message::PeerChallenge(c))) => self.on_challenge(c),
            (DialerState::Accepted, Some(Message::PeerAccepted)) => {
                self.state = DialerState::Done;
                let server_id = std::mem::take(&mut self.peer_id);
                self.outcome = Some(Ok(DialerEvent::Accepted { server_id }));
            }
            (DialerState::Challenge, other) => {
                self.fail(unexpected("the peer's challenge", other.as_ref()));
            }
            (DialerState::Accepted, other) => {
                self.fail(unexpected("the peer's acceptance", other.as_ref()));
            }
            (DialerState::Done, other) => self.fail(unexpected("nothing", other.as_ref())),
        }
    }

    fn on_decode_error(&mut self, err: ProtoError) {
        self.fail(decode_failed(err));
    }

    fn poll_transmit(&mut self) -> Option<Message> {
        self.queued.pop_front()
    }

    fn has_outcome(&self) -> bool {
        self.outcome.is_some()
    }

    fn poll(&mut self) -> Option<Result<DialerEvent, HandshakeError>> {
        self.outcome.take()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AcceptorState {
    Hello,
    Proof,
    Authorizing,
    Done,
}

/// The accepting server's side (on `peer_bind`) of a peer connection's setup.
#[derive(Debug)]
pub struct PeerAcceptor {
    state: AcceptorState,
    key: Vec<u8>,
    server_id: String,
    nonce: [u8; 32],
    binding: [u8; 32],
    hello: Option<PeerHello>,
    mac: [u8; 32],
    queued: std::collections::VecDeque<Message>,
    outcome: Option<Result<AcceptorEvent, HandshakeError>>,
}

impl PeerAcceptor {
    /// A machine waiting for the PeerHello. `nonce` is fresh randomness; `binding` the TLS
    /// exporter value of this connection.
    #[must_use]
    pub fn new(key: &[u8], server_id: &str, nonce: [u8; 32], binding: [u8; 32]) -> Self {
        Self {
            state: AcceptorState::Hello,
            key: key.to_vec(),
            server_id: server_id.to_owned(),
            nonce,
            binding,
            hello: None,
            mac: [0; 32],
            queued: std::collections::VecDeque::new(),
            outcome: None,
        }
    }

    fn on_hello(&mut self, h: PeerHello) {
        if h.version != PROTOCOL_VERSION {
            return self.reject(HandshakeError::Version { theirs: h.version });
        }
        let mac = auth::compute(&self.key, Role::Acceptor, &self.transcript(&h));
        self.queued.push_back(Message::PeerChallenge(PeerChallenge {
            server_id: self.server_id.clone(),
            nonce: self.nonce,
            mac,
        }));
        self.hello = Some(h);
        self.state = AcceptorState::Proof;
    }

    fn on_proof(&mut self, p: PeerProof) {
        self.mac = p.mac;
        self.state = AcceptorState::Authorizing;
        self.outcome = Some(Ok(AcceptorEvent::Authorize));
    }

    /// Answer [`AcceptorEvent::Authorize`]: `Ok` checks the proof now (then
    /// [`AcceptorEvent::Authenticated`] or [`HandshakeError::WrongClusterKey`]); a throttle
    /// turns the dialer away unchecked. Returns whether the proof was right, or `None` when
    /// it was not checked.
    pub fn authorize(&mut self, verdict: Result<(), Throttle>) -> Option<bool> {
        if self.state != AcceptorState::Authorizing {
            return None;
        }
        let hello = self.hello.take()?;
        if let Err(t) = verdict {
            self.reject(HandshakeError::Throttled(t));
            return None;
        }
        let right = auth::verify(&self.key, Role::Dialer, &self.transcript(&hello), &self.mac);
        if right {
            self.queued.push_back(Message::PeerAccepted);
            self.state = AcceptorState::Done;
            self.outcome = Some(Ok(AcceptorEvent::Authenticated {
                server_id: hello.server_id,
            }));
        } else {
            self.reject(HandshakeError::WrongClusterKey);
        }
        Some(right)
    }

    fn transcript<'a>(&'a self, h: &'a PeerHello) -> Transcript<'a> {
        Transcript {
            dialer_nonce: &h.nonce,
            acceptor_nonce: &self.nonce,
            binding: &self.binding,
            dialer_id: &h.server_id,
            acceptor_id: &self.server_id,
        }
    }

    /// Tell the dialer why, when the error is one it should hear.
    fn reject(&mut self, err: HandshakeError) {
        if let Some(code) = err.reject_code() {
            let reason = match err {
                HandshakeError::WrongClusterKey => {
                    "peer authentication failed: cluster_key differs".to_owned()
                }
                _ => err.wire_reason(),
            };
            self.queued
                .push_back(Message::Rejected(Rejected::new(code, reason)));
        }
        self.fail(err);
    }

    fn fail(&mut self, err: HandshakeError) {
        self.state = AcceptorState::Done;
        self.outcome = Some(Err(err));
    }
}

impl Handshake for PeerAcceptor {
    type Event = AcceptorEvent;

    fn phase(&self) -> Phase {
        Phase::Authentication
    }

    fn on_message(&mut self, msg: Option<Message>) {
        if self.outcome.is_some() {
            return;
        }
        match (self.state, msg) {
            (AcceptorState::Hello, Some(Message::PeerHello(h))) => self.on_hello(h),
            (AcceptorState::Hello, Some(Message::Hello(_))) => {
                // A client at the peer port: say where it belongs.
                let err = HandshakeError::Unexpected {
                    expected: "a peer hello (this is the server-to-server peer port; \
                               clients connect to the server's bind address)",
                    got: "a client Hello",
                };
                self.queued.push_back(Message::Rejected(Rejected::new(
                    crate::RejectCode::BadConfig,
                    err.to_string(),
                )));
                self.fail(err);
            }
            (AcceptorState::Proof, Some(Message::PeerProof(p))) => self.on_proof(p),
            (AcceptorState::Hello, other) => self.fail(unexpected("a peer hello", other.as_ref())),
            (AcceptorState::Proof, other) => self.fail(unexpected("a peer proof", other.as_ref())),
            (AcceptorState::Authorizing | AcceptorState::Done, other) => {
                self.fail(unexpected("nothing", other.as_ref()))
            }
        }
    }

    fn on_decode_error(&mut self, err: ProtoError) {
        self.fail(decode_failed(err));
    }

    fn poll_transmit(&mut self) -> Option<Message> {
        self.queued.pop_front()
    }

    fn has_outcome(&self) -> bool {
        self.outcome.is_some()
    }

    fn poll(&mut self) -> Option<Result<AcceptorEvent, HandshakeError>> {
        self.outcome.take()
    }
}

fn decode_failed(err: ProtoError) -> HandshakeError {
    crate::handshake::decode_failed(Phase::Authentication, err)
}

fn unexpected(expected: &'static str, got: Option<&Message>) -> HandshakeError {
    crate::handshake::unexpected(expected, got)
}
