//! The client's side: Hello, the proof (bound to the TLS session when the server asks), the
//! Welcome, then the first stream (Control or Join).

use crate::handshake::{decode_failed, unexpected, Handshake, Outbox, Phase};
use crate::{
    auth, AuthResponse, Challenge, HandshakeError, Hello, Message, ProtoError, StreamOpen,
    StreamStatus, Welcome, PROTOCOL_VERSION,
};

/// What the client's transport can bind the proof to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientBinding {
    /// The TLS exporter value of our own TLS session, if the transport has one.
    pub exporter: Option<[u8; 32]>,
    /// `Some(name)` for transports (`tls`, `h2`) that only ever reach the server's own TLS:
    /// a server that does not ask for binding over them has been diverted through something
    /// that terminates TLS, so the client refuses.
    pub always_bound: Option<String>,
}

impl ClientBinding {
    /// A transport that can also reach a TLS terminator in front of the server (WebSocket).
    #[must_use]
    pub fn tls(exporter: Option<[u8; 32]>) -> Self {
        Self {
            exporter,
            always_bound: None,
        }
    }
}

/// What the client's machine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server welcomed us: start the multiplexer, open the first stream, and call
    /// [`ClientHandshake::open_control`] or [`ClientHandshake::join`].
    Welcomed(Welcome),
    /// The server accepted the first stream.
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Challenge,
    Welcome,
    Welcomed,
    Status(Phase),
    Done,
}

/// The client's side of one connection's setup.
#[derive(Debug)]
pub struct ClientHandshake {
    state: State,
    hello: Hello,
    key: Vec<u8>,
    binding: ClientBinding,
    unbound: bool,
    out: Outbox<ClientEvent>,
}

impl ClientHandshake {
    /// A machine whose Hello is queued.
    #[must_use]
    pub fn new(hello: Hello, key: &[u8], binding: ClientBinding) -> Self {
        let mut out = Outbox::default();
        out.send(Message::Hello(hello.clone()));
        Self {
            state: State::Challenge,
            hello,
            key: key.to_vec(),
            binding,
            unbound: false,
            out,
        }
    }

    /// Whether the server asked for no channel binding (TLS ends at a proxy in front of it).
    #[must_use]
    pub fn unbound(&self) -> bool {
        self.unbound
    }

    /// After [`ClientEvent::Welcomed`]: queue the header of the control stream of a new
    /// session.
    pub fn open_control(&mut self) {
        self.first_stream(StreamOpen::Control, Phase::ControlStream);
    }

    /// After [`ClientEvent::Welcomed`]: queue the header asking to join live session
    /// `session` as an extra connection.
    pub fn join(&mut self, session: u64) {
        self.first_stream(StreamOpen::Join { session }, Phase::Join);
    }

    fn first_stream(&mut self, open: StreamOpen, phase: Phase) {
        if self.state == State::Welcomed {
            self.out.send(Message::StreamOpen(open));
            self.state = State::Status(phase);
        }
    }

    fn on_challenge(&mut self, c: Challenge) {
        if c.version != PROTOCOL_VERSION {
            return self.fail(HandshakeError::Version { theirs: c.version });
        }
        let binding = match (c.bound, self.binding.exporter, &self.binding.always_bound) {
            (true, Some(b), _) => b.to_vec(),
            (true, None, _) => return self.fail(HandshakeError::BindingUnavailable),
            (false, _, Some(transport)) => {
                let transport = transport.clone();
                return self.fail(HandshakeError::BindingStripped { transport });
            }
            (false, _, None) => {
                self.unbound = true;
                Vec::new()
            }
        };
        let mac = auth::compute_mac(&self.key, &c.nonce, &binding, &self.hello);
        self.out.send(Message::AuthResponse(AuthResponse { mac }));
        self.state = State::Welcome;
    }

    fn fail(&mut self, err: HandshakeError) {
        self.state = State::Done;
        self.out.fail(err);
    }
}

impl Handshake for ClientHandshake {
    type Event = ClientEvent;

    fn phase(&self) -> Phase {
        match self.state {
            State::Challenge | State::Welcome | State::Welcomed | State::Done => {
                Phase::Authentication
            }
            State::Status(phase) => phase,
        }
    }

    fn on_message(&mut self, msg: Option<Message>) {
        if self.out.outcome.is_some() {
            return;
        }
        match (self.state, msg) {
            (State::Challenge, Some(Message::Challenge(c))) => self.on_challenge(c),
            (State::Challenge, other) => self.fail(unexpected("a challenge", other.as_ref())),
            (State::Welcome, Some(Message::Welcome(w))) => {
                self.state = State::Welcomed;
                self.out.event(ClientEvent::Welcomed(w));
            }
            (State::Welcome, other) => self.fail(unexpected("a welcome", other.as_ref())),
            (State::Status(_), Some(Message::StreamStatus(StreamStatus::Ok))) => {
                self.state = State::Done;
                self.out.event(ClientEvent::Accepted);
            }
            (State::Status(_), Some(Message::StreamStatus(StreamStatus::Error(reason)))) => {
                self.fail(HandshakeError::StreamRefused { reason });
            }
            (State::Status(Phase::Join), other) => {
                // A server that predates extra connections closes instead of answering.
                let what = other
                    .as_ref()
                    .map_or("it closed the connection", Message::name);
                self.fail(HandshakeError::StreamRefused {
                    reason: format!(
                        "the server did not accept an extra connection ({what}); going on with one"
                    ),
                });
            }
            (State::Status(_), other) => {
                self.fail(unexpected("the control stream's status", other.as_ref()));
            }
            (_, other) => self.fail(unexpected("nothing", other.as_ref())),
        }
    }

    fn on_decode_error(&mut self, err: ProtoError) {
        let phase = self.phase();
        self.fail(decode_failed(phase, err));
    }

    fn poll_transmit(&mut self) -> Option<Message> {
        self.out.send.pop_front()
    }

    fn has_outcome(&self) -> bool {
        self.out.outcome.is_some()
    }

    fn poll(&mut self) -> Option<Result<ClientEvent, HandshakeError>> {
        self.out.outcome.take()
    }
}
