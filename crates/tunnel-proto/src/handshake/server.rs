//! The server's side: check the Hello, challenge, verify the proof, admit, then the first
//! stream (Control or Join).

use std::fmt;

use crate::handshake::{decode_failed, unexpected, Handshake, Outbox, Phase};
use crate::{
    auth, AuthResponse, Challenge, HandshakeError, Hello, Message, ProtoError, Rejected,
    StreamOpen, StreamStatus, Welcome, PROTOCOL_VERSION,
};

/// Why a proof is turned away unchecked. A `Limit`, not `Auth`: a client with the right key
/// caught in someone else's flood should retry, not give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Throttle {
    /// This address failed too often lately.
    Source,
    /// Too many wrong keys server-wide just now.
    Server,
}

impl Throttle {
    pub(crate) fn wire_reason(self) -> &'static str {
        match self {
            Throttle::Source => {
                "refused: too many wrong auth keys from this address lately; try again later"
            }
            Throttle::Server => {
                "refused: too many failed logins on this server just now; try again in a moment"
            }
        }
    }
}

impl fmt::Display for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Throttle::Source => "refused: too many wrong auth keys from this address lately",
            Throttle::Server => {
                "refused: too many wrong auth keys server-wide (max_auth_failures_per_second)"
            }
        })
    }
}

/// Who holds the client id now, as the server's registry sees it (the answer to
/// [`ServerEvent::Authenticated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdState {
    /// Nobody, and there is room for one more client.
    Free,
    /// Nobody, but the server already holds `clients` clients (`max_clients`).
    Full {
        /// Clients connected now.
        clients: usize,
    },
    /// A live session of the process with this instance token.
    Held {
        /// The holder's instance token.
        instance: [u8; 16],
    },
}

/// The session a join names, as the server's registry sees it (the answer to
/// [`ServerEvent::JoinRequested`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTarget {
    /// The session's id.
    pub session: u64,
    /// The client id it belongs to.
    pub client_id: String,
    /// The instance token of the process that opened it.
    pub instance: [u8; 16],
    /// False once it ended, was replaced, or is shutting down.
    pub live: bool,
    /// Connections it has now.
    pub lanes: usize,
    /// Connections it may have (`max_connections_per_client`).
    pub max_lanes: usize,
}

/// The keys that may answer for one client id (the answer to "who may this be?" once the
/// Hello named the id; see [`ServerHandshake::authorize_id`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdKeys {
    /// The id's own keys: two while it moves from one to the next. Empty for an id the
    /// server does not list.
    pub own: Vec<Vec<u8>>,
    /// The server's shared key, if it has one. It logs in an unlisted id; for a listed id it
    /// is recognised only to refuse it by name, so a shared-key holder cannot pass as a
    /// client that has its own key.
    pub shared: Option<Vec<u8>>,
}

impl fmt::Debug for IdKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdKeys")
            .field("own", &self.own.len())
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// Which key answered the challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credential {
    /// The server's shared key (the id is not listed).
    Shared,
    /// One of the id's own keys: `index` in [`IdKeys::own`].
    Own {
        /// Which of the id's keys.
        index: usize,
    },
}

/// What [`ServerHandshake::authorize_id`] made of the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Checked {
    /// Not checked: the machine was not waiting for it, or a throttle turned it away.
    Unchecked,
    /// Right, with this key.
    Right(Credential),
    /// No key of the id (nor the shared key) made it: a wrong key, or another id's key.
    Wrong,
    /// The shared key, for an id that has keys of its own: refused, but not a guess.
    SharedForListedId,
}

/// What the server's machine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The proof arrived. Question: may it be checked now? Answer with
    /// [`ServerHandshake::authorize`].
    Authorize,
    /// The proof is right. Question: who holds this client id? Answer with
    /// [`ServerHandshake::admit`].
    Authenticated(Hello),
    /// The Welcome is queued: write it, start the multiplexer, and feed the first stream's
    /// header. `replaces`: a stale session of the same process holds the id and is replaced.
    Welcomed {
        /// Whether the session replaces one of the same instance.
        replaces: bool,
    },
    /// The first stream is the control stream of a new session; its `Ok` is queued.
    Control,
    /// The first stream asks to join session `0`. Question: what is it? Answer with
    /// [`ServerHandshake::join`].
    JoinRequested(u64),
    /// The join is accepted; its `Ok` is queued.
    Joined(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hello,
    Proof,
    Authorizing,
    Admitting,
    FirstStream,
    Joining(u64),
    Done,
}

/// The server's side of one connection's setup.
#[derive(Debug)]
pub struct ServerHandshake {
    state: State,
    key: Vec<u8>,
    nonce: [u8; 32],
    binding: Vec<u8>,
    hello: Option<Hello>,
    mac: [u8; 32],
    credential: Option<Credential>,
    out: Outbox<ServerEvent>,
}

impl ServerHandshake {
    /// A machine waiting for the Hello. `nonce` is fresh randomness the caller drew;
    /// `binding` the TLS exporter value of this connection, empty when TLS ends at a proxy in
    /// front of the server (the client is then told not to bind either).
    #[must_use]
    pub fn new(key: Vec<u8>, nonce: [u8; 32], binding: &[u8]) -> Self {
        Self {
            state: State::Hello,
            key,
            nonce,
            binding: binding.to_vec(),
            hello: None,
            mac: [0; 32],
            credential: None,
            out: Outbox::default(),
        }
    }

    /// The Hello, once received.
    #[must_use]
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// Which key the client proved, once it is [`ServerEvent::Authenticated`].
    #[must_use]
    pub fn credential(&self) -> Option<Credential> {
        self.credential
    }

    /// Answer [`ServerEvent::Authorize`] with the one key given to [`ServerHandshake::new`]:
    /// `Ok` checks the proof now (then [`ServerEvent::Authenticated`] or
    /// [`HandshakeError::WrongKey`]); a throttle turns the client away with `Limit` without
    /// checking it. Returns whether the proof was right, or `None` when it was not checked,
    /// so the caller can settle its failure count at once.
    pub fn authorize(&mut self, verdict: Result<(), Throttle>) -> Option<bool> {
        let keys = IdKeys {
            own: Vec::new(),
            shared: Some(self.key.clone()),
        };
        match self.authorize_id(verdict, &keys) {
            Checked::Right(_) => Some(true),
            Checked::Wrong | Checked::SharedForListedId => Some(false),
            Checked::Unchecked => None,
        }
    }

    /// Answer [`ServerEvent::Authorize`] with the keys of the id the Hello named (read it
    /// from [`ServerHandshake::hello`]): the proof must be made with one of the id's own
    /// keys, or, for an id without keys of its own, with the shared key. Every candidate is
    /// checked, so the time taken does not tell which one matched. A throttle turns the
    /// client away unchecked, as with [`ServerHandshake::authorize`].
    pub fn authorize_id(&mut self, verdict: Result<(), Throttle>, keys: &IdKeys) -> Checked {
        if self.state != State::Authorizing {
            return Checked::Unchecked;
        }
        let Some(hello) = self.hello.clone() else {
            return Checked::Unchecked;
        };
        if let Err(t) = verdict {
            self.reject(HandshakeError::Throttled(t));
            return Checked::Unchecked;
        }
        let verify =
            |key: &[u8]| auth::verify_mac(key, &self.nonce, &self.binding, &hello, &self.mac);
        let mut own = None;
        for (i, key) in keys.own.iter().enumerate() {
            if verify(key) && own.is_none() {
                own = Some(i);
            }
        }
        let shared = keys.shared.as_deref().is_some_and(verify);
        let checked = match (own, shared) {
            (Some(index), _) => Checked::Right(Credential::Own { index }),
            (None, true) if keys.own.is_empty() => Checked::Right(Credential::Shared),
            (None, true) => Checked::SharedForListedId,
            (None, false) => Checked::Wrong,
        };
        match checked {
            Checked::Right(c) => {
                self.credential = Some(c);
                self.state = State::Admitting;
                self.out.event(ServerEvent::Authenticated(hello));
            }
            Checked::SharedForListedId => self.reject(HandshakeError::SharedKeyForOwnId {
                id: hello.client_id,
            }),
            _ => self.reject(HandshakeError::WrongKey),
        }
        checked
    }

    /// Answer [`ServerEvent::Authenticated`] with who holds the id: a session of another
    /// instance keeps it ([`HandshakeError::IdInUse`]), one of the same instance is a stale
    /// session this one replaces, and a full server refuses a new id.
    pub fn admit(&mut self, holder: IdState, welcome: Welcome) {
        if self.state != State::Admitting {
            return;
        }
        let Some(hello) = &self.hello else { return };
        let replaces = match holder {
            IdState::Held { instance } if instance != hello.instance => {
                let id = hello.client_id.clone();
                return self.reject(HandshakeError::IdInUse { id });
            }
            IdState::Held { .. } => true,
            IdState::Full { clients } => {
                return self.reject(HandshakeError::Full { clients });
            }
            IdState::Free => false,
        };
        self.out.send(Message::Welcome(welcome));
        self.state = State::FirstStream;
        self.out.event(ServerEvent::Welcomed { replaces });
    }

    /// Answer [`ServerEvent::JoinRequested`] with the session the client's id leads to
    /// (`None` when it has none): only a live session of this very client and instance, with
    /// room for one more connection, takes it. A refusal is queued as the stream's status.
    pub fn join(&mut self, target: Option<JoinTarget>) {
        let State::Joining(wanted) = self.state else {
            return;
        };
        let Some(hello) = &self.hello else { return };
        let refusal = match target {
            Some(t)
                if t.session == wanted
                    && t.client_id == hello.client_id
                    && t.instance == hello.instance
                    && t.live =>
            {
                if t.lanes >= t.max_lanes {
                    HandshakeError::LanesFull {
                        lanes: t.lanes,
                        max: t.max_lanes,
                    }
                } else {
                    self.out.send(Message::StreamStatus(StreamStatus::Ok));
                    self.state = State::Done;
                    return self.out.event(ServerEvent::Joined(wanted));
                }
            }
            _ => HandshakeError::NotLive {
                target: wanted,
                client_id: hello.client_id.clone(),
            },
        };
        let reason = refusal.wire_reason();
        self.out
            .send(Message::StreamStatus(StreamStatus::Error(reason)));
        self.state = State::Done;
        self.out.fail(refusal);
    }

    /// Queue the `Rejected` for `err` (when the peer is told) and end with it.
    fn reject(&mut self, err: HandshakeError) {
        if let Some(code) = err.reject_code() {
            self.out
                .send(Message::Rejected(Rejected::new(code, err.wire_reason())));
        }
        self.state = State::Done;
        self.out.fail(err);
    }

    fn on_hello(&mut self, hello: Hello) {
        if hello.version != PROTOCOL_VERSION {
            return self.reject(HandshakeError::Version {
                theirs: hello.version,
            });
        }
        if let Err(problem) = crate::validate_name(&hello.client_id) {
            let id = hello.client_id.clone();
            return self.reject(HandshakeError::BadClientId { id, problem });
        }
        self.out.send(Message::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            nonce: self.nonce,
            bound: !self.binding.is_empty(),
        }));
        self.hello = Some(hello);
        self.state = State::Proof;
    }
}

impl Handshake for ServerHandshake {
    type Event = ServerEvent;

    fn phase(&self) -> Phase {
        match self.state {
            State::Hello | State::Proof | State::Authorizing | State::Admitting => {
                Phase::Authentication
            }
            State::FirstStream => Phase::FirstStream,
            State::Joining(_) | State::Done => Phase::Join,
        }
    }

    fn on_message(&mut self, msg: Option<Message>) {
        if self.out.outcome.is_some() {
            return;
        }
        match (self.state, msg) {
            (State::Hello, Some(Message::Hello(h))) => self.on_hello(h),
            (State::Hello, other) => self.out.fail(unexpected("Hello", other.as_ref())),
            (State::Proof, Some(Message::AuthResponse(AuthResponse { mac }))) => {
                self.mac = mac;
                self.state = State::Authorizing;
                self.out.event(ServerEvent::Authorize);
            }
            (State::Proof, other) => self.out.fail(unexpected("AuthResponse", other.as_ref())),
            (State::FirstStream, Some(Message::StreamOpen(StreamOpen::Control))) => {
                self.out.send(Message::StreamStatus(StreamStatus::Ok));
                self.state = State::Done;
                self.out.event(ServerEvent::Control);
            }
            (State::FirstStream, Some(Message::StreamOpen(StreamOpen::Join { session }))) => {
                self.state = State::Joining(session);
                self.out.event(ServerEvent::JoinRequested(session));
            }
            (State::FirstStream, other) => self
                .out
                .fail(unexpected("a control or join stream", other.as_ref())),
            (_, other) => self.out.fail(unexpected("nothing", other.as_ref())),
        }
    }

    fn on_decode_error(&mut self, err: ProtoError) {
        let phase = self.phase();
        self.state = State::Done;
        self.out.fail(decode_failed(phase, err));
    }

    fn poll_transmit(&mut self) -> Option<Message> {
        self.out.send.pop_front()
    }

    fn has_outcome(&self) -> bool {
        self.out.outcome.is_some()
    }

    fn poll(&mut self) -> Option<Result<ServerEvent, HandshakeError>> {
        self.out.outcome.take()
    }
}
