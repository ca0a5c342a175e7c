//! Every handshake path, with the two machines talking in memory through real frames.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::BytesMut;

use super::*;
use crate::{encode, Hello, RejectCode, StreamStatus, Welcome, PROTOCOL_VERSION};

const KEY: &[u8] = b"the shared key";
const EKM: [u8; 32] = [0x42; 32];
const INSTANCE: [u8; 16] = [7; 16];

fn hello(version: u16, id: &str) -> Hello {
    Hello {
        version,
        client_id: id.to_owned(),
        instance: INSTANCE,
    }
}

fn client(key: &[u8]) -> ClientHandshake {
    ClientHandshake::new(
        hello(PROTOCOL_VERSION, "edge"),
        key,
        ClientBinding::tls(Some(EKM)),
    )
}

fn server() -> ServerHandshake {
    ServerHandshake::new(KEY.to_vec(), [9; 32], &EKM)
}

fn welcome() -> Welcome {
    Welcome {
        connection_id: 7,
        heartbeat_ms: 15_000,
    }
}

/// Moves every queued message across as framed bytes until neither side has more to send.
fn pump(c: &mut ClientHandshake, s: &mut ServerHandshake) {
    loop {
        let mut moved = false;
        while let Some(m) = c.poll_transmit() {
            deliver(&m, s);
            moved = true;
        }
        while let Some(m) = s.poll_transmit() {
            deliver(&m, c);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

fn deliver(msg: &Message, to: &mut impl Handshake) {
    let mut wire = BytesMut::new();
    encode(msg, HANDSHAKE_MAX_FRAME, &mut wire).unwrap();
    to.receive(&mut wire);
    assert!(wire.is_empty(), "the machine left bytes behind");
}

/// Runs both sides to the server's admission question and answers it.
fn authenticated(c: &mut ClientHandshake, s: &mut ServerHandshake) -> Hello {
    pump(c, s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Authorize)));
    assert_eq!(s.authorize(Ok(())), Some(true));
    match s.poll() {
        Some(Ok(ServerEvent::Authenticated(h))) => h,
        other => panic!("expected Authenticated, got {other:?}"),
    }
}

fn welcomed(holder: IdState) -> (ClientHandshake, ServerHandshake) {
    let (mut c, mut s) = (client(KEY), server());
    authenticated(&mut c, &mut s);
    s.admit(holder, welcome());
    assert!(matches!(s.poll(), Some(Ok(ServerEvent::Welcomed { .. }))));
    pump(&mut c, &mut s);
    assert_eq!(c.poll(), Some(Ok(ClientEvent::Welcomed(welcome()))));
    (c, s)
}

fn client_error(c: &mut ClientHandshake) -> HandshakeError {
    match c.poll() {
        Some(Err(e)) => e,
        other => panic!("expected the client to fail, got {other:?}"),
    }
}

fn rejected_with(c: &mut ClientHandshake, code: RejectCode) -> String {
    match client_error(c) {
        HandshakeError::Rejected { code: got, reason } if got == code => reason,
        other => panic!("expected a {code:?} rejection, got {other:?}"),
    }
}

#[test]
fn the_right_key_is_welcomed_and_the_control_stream_accepted() {
    let (mut c, mut s) = welcomed(IdState::Free);
    assert!(!c.unbound());
    assert_eq!(s.phase(), Phase::FirstStream);
    c.open_control();
    assert_eq!(c.phase(), Phase::ControlStream);
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Control)));
    pump(&mut c, &mut s);
    assert_eq!(c.poll(), Some(Ok(ClientEvent::Accepted)));
}

#[test]
fn a_wrong_key_is_rejected_for_good() {
    let (mut c, mut s) = (client(b"another key"), server());
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Authorize)));
    assert_eq!(s.authorize(Ok(())), Some(false));
    assert_eq!(s.poll(), Some(Err(HandshakeError::WrongKey)));
    pump(&mut c, &mut s);
    let reason = rejected_with(&mut c, RejectCode::Auth);
    assert!(reason.contains("auth_key does not match"), "{reason}");
    assert!(HandshakeError::WrongKey.is_permanent());
}

#[test]
fn a_wrong_version_is_rejected_before_the_challenge() {
    let mut c = ClientHandshake::new(hello(9, "edge"), KEY, ClientBinding::tls(Some(EKM)));
    let mut s = server();
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Err(HandshakeError::Version { theirs: 9 })));
    let reason = rejected_with(&mut c, RejectCode::Version);
    assert!(reason.contains("version 9 is not supported"), "{reason}");
    let e = HandshakeError::Rejected {
        code: RejectCode::Version,
        reason,
    };
    assert!(e.is_permanent());
}

#[test]
fn an_invalid_client_id_is_a_bad_config() {
    let mut c = ClientHandshake::new(
        hello(PROTOCOL_VERSION, "no spaces"),
        KEY,
        ClientBinding::tls(Some(EKM)),
    );
    let mut s = server();
    pump(&mut c, &mut s);
    assert!(matches!(
        s.poll(),
        Some(Err(HandshakeError::BadClientId { .. }))
    ));
    let reason = rejected_with(&mut c, RejectCode::BadConfig);
    assert!(reason.contains("\"no spaces\" is invalid"), "{reason}");
}

#[test]
fn an_answer_replayed_on_another_exporter_fails() {
    // The client proves the key on its TLS session; a relay that terminates TLS itself has
    // another exporter value on its side and cannot reuse the proof.
    let mut c = client(KEY);
    let mut s = ServerHandshake::new(KEY.to_vec(), [9; 32], &[0x24; 32]);
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Authorize)));
    s.authorize(Ok(()));
    assert_eq!(s.poll(), Some(Err(HandshakeError::WrongKey)));

    // A proof captured on one connection does not open another (fresh nonce), even with the
    // same exporter value.
    let mut first = client(KEY);
    let _hello = first.poll_transmit();
    first.on_message(Some(Message::Challenge(crate::Challenge {
        version: PROTOCOL_VERSION,
        nonce: [9; 32],
        bound: true,
    })));
    let Some(proof) = first.poll_transmit() else {
        panic!("no proof")
    };
    let mut replay = ServerHandshake::new(KEY.to_vec(), [10; 32], &EKM);
    replay.on_message(Some(Message::Hello(hello(PROTOCOL_VERSION, "edge"))));
    assert!(matches!(
        replay.poll_transmit(),
        Some(Message::Challenge(_))
    ));
    replay.on_message(Some(proof));
    assert_eq!(replay.poll(), Some(Ok(ServerEvent::Authorize)));
    replay.authorize(Ok(()));
    assert_eq!(replay.poll(), Some(Err(HandshakeError::WrongKey)));
}

#[test]
fn an_unbound_server_gets_an_unbound_proof_but_tls_never_goes_unbound() {
    let mut s = ServerHandshake::new(KEY.to_vec(), [9; 32], &[]);
    let mut c = ClientHandshake::new(
        hello(PROTOCOL_VERSION, "edge"),
        KEY,
        ClientBinding::tls(None),
    );
    authenticated(&mut c, &mut s);
    assert!(c.unbound());

    let mut s = ServerHandshake::new(KEY.to_vec(), [9; 32], &[]);
    let binding = ClientBinding {
        exporter: Some(EKM),
        always_bound: Some("tls".into()),
    };
    let mut c = ClientHandshake::new(hello(PROTOCOL_VERSION, "edge"), KEY, binding);
    pump(&mut c, &mut s);
    let e = client_error(&mut c);
    assert!(matches!(e, HandshakeError::BindingStripped { .. }), "{e}");

    let mut c = ClientHandshake::new(
        hello(PROTOCOL_VERSION, "edge"),
        KEY,
        ClientBinding::tls(None),
    );
    let mut s = server();
    pump(&mut c, &mut s);
    assert_eq!(client_error(&mut c), HandshakeError::BindingUnavailable);
}

#[test]
fn a_throttled_proof_is_a_limit_not_a_wrong_key() {
    let (mut c, mut s) = (client(KEY), server());
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Authorize)));
    assert_eq!(s.authorize(Err(Throttle::Source)), None);
    assert_eq!(
        s.poll(),
        Some(Err(HandshakeError::Throttled(Throttle::Source)))
    );
    pump(&mut c, &mut s);
    let reason = rejected_with(&mut c, RejectCode::Limit);
    assert!(reason.contains("try again later"), "{reason}");
}

#[test]
fn a_second_instance_of_a_live_id_is_told_the_id_is_in_use() {
    let (mut c, mut s) = (client(KEY), server());
    authenticated(&mut c, &mut s);
    s.admit(IdState::Held { instance: [8; 16] }, welcome());
    assert!(matches!(
        s.poll(),
        Some(Err(HandshakeError::IdInUse { .. }))
    ));
    pump(&mut c, &mut s);
    let reason = rejected_with(&mut c, RejectCode::IdInUse);
    assert!(
        reason.contains("in use by another running client"),
        "{reason}"
    );
    // The client alone decides whether that is final (see HandshakeError::is_permanent).
    let e = HandshakeError::Rejected {
        code: RejectCode::IdInUse,
        reason,
    };
    assert!(!e.is_permanent());
}

#[test]
fn the_same_instance_replaces_its_half_open_session() {
    let (mut c, mut s) = (client(KEY), server());
    authenticated(&mut c, &mut s);
    s.admit(IdState::Held { instance: INSTANCE }, welcome());
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Welcomed { replaces: true })));
    pump(&mut c, &mut s);
    assert_eq!(c.poll(), Some(Ok(ClientEvent::Welcomed(welcome()))));
}

#[test]
fn a_full_server_refuses_a_new_id_with_a_limit() {
    let (mut c, mut s) = (client(KEY), server());
    authenticated(&mut c, &mut s);
    s.admit(IdState::Full { clients: 3 }, welcome());
    assert_eq!(s.poll(), Some(Err(HandshakeError::Full { clients: 3 })));
    pump(&mut c, &mut s);
    let reason = rejected_with(&mut c, RejectCode::Limit);
    assert!(reason.contains("the server is full (3 clients"), "{reason}");
}

fn target(session: u64) -> JoinTarget {
    JoinTarget {
        session,
        client_id: "edge".into(),
        instance: INSTANCE,
        live: true,
        lanes: 1,
        max_lanes: 4,
    }
}

/// A welcomed pair whose client asked to join session 41; the server is asked about it.
fn joining() -> (ClientHandshake, ServerHandshake) {
    let (mut c, mut s) = welcomed(IdState::Free);
    c.join(41);
    assert_eq!(c.phase(), Phase::Join);
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::JoinRequested(41))));
    (c, s)
}

fn join_refused(answer: Option<JoinTarget>) -> (HandshakeError, String) {
    let (mut c, mut s) = joining();
    s.join(answer);
    let Some(Err(e)) = s.poll() else {
        panic!("expected the join to be refused")
    };
    pump(&mut c, &mut s);
    match client_error(&mut c) {
        HandshakeError::StreamRefused { reason } => (e, reason),
        other => panic!("expected a refused stream, got {other:?}"),
    }
}

#[test]
fn a_join_of_a_live_session_of_the_same_client_is_accepted() {
    let (mut c, mut s) = joining();
    s.join(Some(target(41)));
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Joined(41))));
    pump(&mut c, &mut s);
    assert_eq!(c.poll(), Some(Ok(ClientEvent::Accepted)));
}

#[test]
fn a_join_naming_no_session_is_refused() {
    let (e, reason) = join_refused(None);
    assert!(
        matches!(e, HandshakeError::NotLive { target: 41, .. }),
        "{e}"
    );
    assert!(
        reason.contains("session 41 of client \"edge\" is not live"),
        "{reason}"
    );
    // The client id's session is another one (the client reconnected meanwhile).
    let (e, _) = join_refused(Some(target(40)));
    assert!(matches!(e, HandshakeError::NotLive { .. }), "{e}");
}

#[test]
fn a_join_naming_another_clients_session_is_refused() {
    let other = JoinTarget {
        client_id: "someone-else".into(),
        ..target(41)
    };
    let (e, _) = join_refused(Some(other));
    assert!(matches!(e, HandshakeError::NotLive { .. }), "{e}");
    let other_instance = JoinTarget {
        instance: [8; 16],
        ..target(41)
    };
    let (e, _) = join_refused(Some(other_instance));
    assert!(matches!(e, HandshakeError::NotLive { .. }), "{e}");
}

#[test]
fn a_join_naming_a_dead_session_is_refused() {
    let dead = JoinTarget {
        live: false,
        ..target(41)
    };
    let (e, reason) = join_refused(Some(dead));
    assert!(matches!(e, HandshakeError::NotLive { .. }), "{e}");
    assert!(reason.contains("ended or was replaced"), "{reason}");
}

#[test]
fn a_join_past_the_connection_limit_is_refused() {
    let full = JoinTarget {
        lanes: 4,
        ..target(41)
    };
    let (e, reason) = join_refused(Some(full));
    assert_eq!(e, HandshakeError::LanesFull { lanes: 4, max: 4 });
    assert!(
        reason.contains("max_connections_per_client is 4"),
        "{reason}"
    );
}

#[test]
fn a_server_that_closes_instead_of_answering_a_join_refuses_it() {
    let (mut c, _s) = joining();
    c.on_message(None);
    let e = client_error(&mut c);
    assert!(
        e.to_string().contains("did not accept an extra connection"),
        "{e}"
    );
}

#[test]
fn oversize_frames_are_typed_errors_of_their_phase() {
    let too_big = u32::try_from(HANDSHAKE_MAX_FRAME + 1)
        .unwrap()
        .to_be_bytes();
    let mut s = server();
    s.receive(&mut BytesMut::from(&too_big[..]));
    assert_eq!(
        s.poll(),
        Some(Err(HandshakeError::FrameTooLarge {
            phase: Phase::Authentication,
            len: HANDSHAKE_MAX_FRAME + 1,
            max: HANDSHAKE_MAX_FRAME,
        }))
    );
    let (mut c, _s) = joining();
    c.receive(&mut BytesMut::from(&u32::MAX.to_be_bytes()[..]));
    assert!(matches!(
        c.poll(),
        Some(Err(HandshakeError::FrameTooLarge {
            phase: Phase::Join,
            ..
        }))
    ));
    // Exactly at the limit is still decoded (and then judged as a message).
    let mut s = server();
    let mut wire = BytesMut::new();
    let reason = "x".repeat(crate::MAX_STR);
    let msg = Message::StreamStatus(StreamStatus::Error(reason));
    encode(&msg, HANDSHAKE_MAX_FRAME, &mut wire).unwrap();
    s.receive(&mut wire);
    assert!(matches!(
        s.poll(),
        Some(Err(HandshakeError::Unexpected {
            expected: "Hello",
            ..
        }))
    ));
}

#[test]
fn a_peer_that_closes_or_sends_garbage_fails_the_handshake() {
    let mut s = server();
    s.on_message(None);
    assert_eq!(
        s.poll(),
        Some(Err(HandshakeError::Closed {
            waiting_for: "Hello"
        }))
    );
    let mut s = server();
    s.receive(&mut BytesMut::from(&[0, 0, 0, 1, 0xee][..]));
    assert!(matches!(
        s.poll(),
        Some(Err(HandshakeError::Malformed { .. }))
    ));
    let mut c = client(KEY);
    let _ = c.poll_transmit();
    c.on_message(Some(Message::Ping(1)));
    assert_eq!(
        c.poll(),
        Some(Err(HandshakeError::Unexpected {
            expected: "a challenge",
            got: "Ping"
        }))
    );
}

#[test]
fn bytes_after_the_welcome_stay_for_the_next_layer() {
    let (mut c, mut s) = (client(KEY), server());
    authenticated(&mut c, &mut s);
    s.admit(IdState::Free, welcome());
    let _ = s.poll();
    let mut wire = BytesMut::new();
    while let Some(m) = s.poll_transmit() {
        encode(&m, HANDSHAKE_MAX_FRAME, &mut wire).unwrap();
    }
    wire.extend_from_slice(b"yamux");
    c.receive(&mut wire);
    assert_eq!(&wire[..], b"yamux");
    assert_eq!(c.poll(), Some(Ok(ClientEvent::Welcomed(welcome()))));
}

mod arbitrary_peers {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Feeds `bytes` in `chunk`-sized pieces, answering every question yes, until the machine
    /// ends; the buffer never holds more than one frame.
    fn feed<H: Handshake>(
        m: &mut H,
        bytes: &[u8],
        chunk: usize,
        answer: impl Fn(&mut H, H::Event),
    ) {
        let mut buf = BytesMut::new();
        for piece in bytes.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                m.receive(&mut buf);
                while m.poll_transmit().is_some() {}
                match m.poll() {
                    Some(Ok(ev)) => answer(m, ev),
                    Some(Err(_)) => return,
                    None => break,
                }
            }
            assert!(buf.len() < HANDSHAKE_MAX_FRAME + crate::LENGTH_PREFIX);
        }
    }

    proptest! {
        #[test]
        fn the_server_machine_survives_any_bytes(
            bytes in vec(any::<u8>(), 0..6000),
            chunk in 1usize..64,
        ) {
            let mut s = server();
            feed(&mut s, &bytes, chunk, |s, ev| match ev {
                ServerEvent::Authorize => {
                    s.authorize(Ok(()));
                }
                ServerEvent::Authenticated(_) => s.admit(IdState::Free, welcome()),
                ServerEvent::JoinRequested(t) => s.join(Some(target(t))),
                _ => {}
            });
        }

        #[test]
        fn the_client_machine_survives_any_bytes(
            bytes in vec(any::<u8>(), 0..6000),
            chunk in 1usize..64,
        ) {
            let mut c = client(KEY);
            feed(&mut c, &bytes, chunk, |c, ev| {
                if let ClientEvent::Welcomed(_) = ev {
                    c.join(1);
                }
            });
        }
    }
}
