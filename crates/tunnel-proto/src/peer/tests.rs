use bytes::BytesMut;

use super::auth::{self, Role, Transcript};
use super::*;
use crate::handshake::Handshake;
use crate::{
    compute_mac, decode_body, encode, encode_to_vec, Decoder, HandshakeError, Hello, Message,
    ProtoError, DEFAULT_MAX_FRAME, PROTOCOL_VERSION,
};

const KEY: &[u8] = b"cluster key of at least 16 bytes";
const BINDING: [u8; 32] = [7; 32];

fn dialer(key: &[u8], nonce: u8) -> PeerDialer {
    PeerDialer::new(key, "a", [nonce; 32], BINDING)
}

fn acceptor(key: &[u8], nonce: u8) -> PeerAcceptor {
    PeerAcceptor::new(key, "b", [nonce; 32], BINDING)
}

/// Every message crosses the wire as bytes, so the codec is part of what is tested.
fn wire(m: Message) -> Message {
    let mut buf = BytesMut::new();
    encode(&m, DEFAULT_MAX_FRAME, &mut buf).expect("encodes");
    Decoder::new(DEFAULT_MAX_FRAME)
        .decode(&mut buf)
        .expect("decodes")
        .expect("whole frame")
}

/// Pumps both ways, answering the acceptor's Authorize with `Ok`; returns the acceptor's
/// final outcome.
fn pump(d: &mut PeerDialer, a: &mut PeerAcceptor) -> Option<Result<AcceptorEvent, HandshakeError>> {
    let mut last = None;
    loop {
        match a.poll() {
            Some(Ok(AcceptorEvent::Authorize)) => {
                a.authorize(Ok(()));
                continue;
            }
            Some(other) => last = Some(other),
            None => {}
        }
        let mut moved = false;
        while let Some(m) = d.poll_transmit() {
            a.on_message(Some(wire(m)));
            moved = true;
        }
        while let Some(m) = a.poll_transmit() {
            d.on_message(Some(wire(m)));
            moved = true;
        }
        if !moved && !a.has_outcome() {
            return last;
        }
    }
}

#[test]
fn mutual_proof_succeeds_with_the_same_key() {
    let (mut d, mut a) = (dialer(KEY, 1), acceptor(KEY, 2));
    assert_eq!(
        pump(&mut d, &mut a),
        Some(Ok(AcceptorEvent::Authenticated {
            server_id: "a".into()
        }))
    );
    assert_eq!(
        d.poll(),
        Some(Ok(DialerEvent::Accepted {
            server_id: "b".into()
        }))
    );
}

#[test]
fn dialer_refuses_an_acceptor_without_the_key_before_sending_its_proof() {
    let (mut d, mut a) = (dialer(KEY, 1), acceptor(b"another cluster key entirely", 2));
    let hello = d.poll_transmit().expect("hello");
    a.on_message(Some(hello));
    let challenge = a.poll_transmit().expect("challenge");
    d.on_message(Some(challenge));
    assert_eq!(d.poll(), Some(Err(HandshakeError::WrongClusterKey)));
    assert_eq!(
        d.poll_transmit(),
        None,
        "no proof for a server without the key"
    );
}

#[test]
fn acceptor_refuses_a_dialer_without_the_key() {
    let mut a = acceptor(KEY, 2);
    a.on_message(Some(Message::PeerHello(PeerHello {
        version: PROTOCOL_VERSION,
        server_id: "a".into(),
        nonce: [1; 32],
    })));
    let Some(Message::PeerChallenge(c)) = a.poll_transmit() else {
        panic!("challenge")
    };
    // The dialer has the wrong key, so it computes a proof with it.
    let t = Transcript {
        dialer_nonce: &[1; 32],
        acceptor_nonce: &c.nonce,
        binding: &BINDING,
        dialer_id: "a",
        acceptor_id: "b",
    };
    let mac = auth::compute(b"wrong key", Role::Dialer, &t);
    a.on_message(Some(Message::PeerProof(PeerProof { mac })));
    assert_eq!(a.poll(), Some(Ok(AcceptorEvent::Authorize)));
    assert_eq!(a.authorize(Ok(())), Some(false));
    assert!(matches!(a.poll_transmit(), Some(Message::Rejected(_))));
    assert_eq!(a.poll(), Some(Err(HandshakeError::WrongClusterKey)));
}

/// A proof recorded on one connection does not pass on another: the acceptor's nonce is new.
#[test]
fn a_replayed_dialer_proof_is_refused() {
    let (mut d, mut a) = (dialer(KEY, 1), acceptor(KEY, 2));
    let hello = d.poll_transmit().expect("hello");
    a.on_message(Some(hello.clone()));
    d.on_message(a.poll_transmit());
    let proof = d.poll_transmit().expect("proof");

    let mut again = acceptor(KEY, 3);
    again.on_message(Some(hello));
    let _ = again.poll_transmit();
    again.on_message(Some(proof));
    let _ = again.poll();
    again.authorize(Ok(()));
    assert_eq!(again.poll(), Some(Err(HandshakeError::WrongClusterKey)));
}

/// A recorded acceptor challenge does not fool a dialer with a fresh nonce.
#[test]
fn a_replayed_acceptor_challenge_is_refused() {
    let (mut d, mut a) = (dialer(KEY, 1), acceptor(KEY, 2));
    a.on_message(d.poll_transmit());
    let challenge = a.poll_transmit().expect("challenge");
    let mut fresh = dialer(KEY, 9);
    let _ = fresh.poll_transmit();
    fresh.on_message(Some(challenge));
    assert_eq!(fresh.poll(), Some(Err(HandshakeError::WrongClusterKey)));
}

/// Relayed through a man-in-the-middle that terminates TLS, each side sees another exporter
/// value, and the proofs fail.
#[test]
fn another_tls_session_fails_the_proof() {
    let mut d = PeerDialer::new(KEY, "a", [1; 32], [1; 32]);
    let mut a = PeerAcceptor::new(KEY, "b", [2; 32], [2; 32]);
    let _ = pump(&mut d, &mut a);
    assert_eq!(d.poll(), Some(Err(HandshakeError::WrongClusterKey)));
}

/// The acceptor's own proof reflected back as the dialer's is refused (role label).
#[test]
fn a_reflected_proof_is_refused() {
    let mut a = acceptor(KEY, 2);
    a.on_message(Some(Message::PeerHello(PeerHello {
        version: PROTOCOL_VERSION,
        server_id: "a".into(),
        nonce: [1; 32],
    })));
    let Some(Message::PeerChallenge(c)) = a.poll_transmit() else {
        panic!("challenge")
    };
    a.on_message(Some(Message::PeerProof(PeerProof { mac: c.mac })));
    let _ = a.poll();
    a.authorize(Ok(()));
    assert_eq!(a.poll(), Some(Err(HandshakeError::WrongClusterKey)));
}

/// Even when the cluster key equals a client auth key, a client's proof over the same nonce
/// and binding is not a peer proof, and a peer proof is not a client proof.
#[test]
fn client_and_peer_proofs_never_pass_for_each_other() {
    let mut a = acceptor(KEY, 2);
    a.on_message(Some(Message::PeerHello(PeerHello {
        version: PROTOCOL_VERSION,
        server_id: "a".into(),
        nonce: [1; 32],
    })));
    let _ = a.poll_transmit();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client_id: "a".into(),
        instance: [1; 16],
    };
    let client_mac = compute_mac(KEY, &[2; 32], &BINDING, &hello);
    a.on_message(Some(Message::PeerProof(PeerProof { mac: client_mac })));
    let _ = a.poll();
    a.authorize(Ok(()));
    assert_eq!(a.poll(), Some(Err(HandshakeError::WrongClusterKey)));

    let t = Transcript {
        dialer_nonce: &[1; 32],
        acceptor_nonce: &[2; 32],
        binding: &BINDING,
        dialer_id: "a",
        acceptor_id: "b",
    };
    let peer_mac = auth::compute(KEY, Role::Dialer, &t);
    assert!(!crate::verify_mac(
        KEY, &[2; 32], &BINDING, &hello, &peer_mac
    ));
    assert!(!crate::verify_mac(
        KEY, &[1; 32], &BINDING, &hello, &peer_mac
    ));
}

#[test]
fn a_client_hello_at_the_peer_port_is_told_where_to_go() {
    let mut a = acceptor(KEY, 2);
    a.on_message(Some(Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        client_id: "c".into(),
        instance: [0; 16],
    })));
    let Some(Message::Rejected(r)) = a.poll_transmit() else {
        panic!("rejected")
    };
    assert!(r.reason.contains("peer port"), "{}", r.reason);
    assert!(matches!(
        a.poll(),
        Some(Err(HandshakeError::Unexpected { .. }))
    ));
}

#[test]
fn a_peer_hello_of_another_version_is_refused() {
    let mut a = acceptor(KEY, 2);
    a.on_message(Some(Message::PeerHello(PeerHello {
        version: PROTOCOL_VERSION + 1,
        server_id: "a".into(),
        nonce: [1; 32],
    })));
    assert!(matches!(a.poll_transmit(), Some(Message::Rejected(_))));
    assert!(matches!(
        a.poll(),
        Some(Err(HandshakeError::Version { .. }))
    ));
}

fn forward() -> Forward {
    Forward {
        kind: ForwardKind::Visitor,
        name: "db".into(),
        publish_port: 0,
        epoch: 42,
        src_addr: Some("10.0.0.1:5000".parse().expect("addr")),
        dest_addr: Some("[::1]:443".parse().expect("addr")),
        visitor_client_id: "laptop".into(),
        secret: "s3cret".into(),
    }
}

/// A virtual-host request forwarded for a wildcard domain: no visitor, no secret.
fn vhost_forward() -> Forward {
    Forward {
        kind: ForwardKind::Vhost,
        name: "*.example.com".into(),
        publish_port: 0,
        epoch: 9,
        src_addr: Some("203.0.113.7:40000".parse().expect("addr")),
        dest_addr: Some("127.0.0.1:8080".parse().expect("addr")),
        visitor_client_id: String::new(),
        secret: String::new(),
    }
}

#[test]
fn a_vhost_forward_keeps_the_layout_of_the_other_kinds() {
    // Only the kind byte differs: a server of the previous version refuses the unknown
    // kind (UnknownTag, answered Denied) instead of reading it as something else.
    let body = |f: Forward| {
        encode_to_vec(&Message::Forward(f), DEFAULT_MAX_FRAME)
            .expect("encodes")
            .split_off(crate::LENGTH_PREFIX)
    };
    let mut public = vhost_forward();
    public.kind = ForwardKind::Public;
    let (v, p) = (body(vhost_forward()), body(public));
    assert_eq!(v.len(), p.len());
    assert_eq!(v[1], ForwardKind::Vhost as u8);
    assert_eq!((&v[..1], &v[2..]), (&p[..1], &p[2..]));
    // Cut anywhere, it is refused as truncated, never read short.
    for cut in 1..v.len() {
        assert!(decode_body(&v[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn forward_and_answers_round_trip() {
    for m in [
        Message::Forward(forward()),
        Message::Forward(vhost_forward()),
        Message::Forwarded(Forwarded::Ok),
        Message::Forwarded(Forwarded::NotHere { epoch: 7 }),
        Message::Forwarded(Forwarded::NotFound),
        Message::Forwarded(Forwarded::Denied("access denied".into())),
        Message::PeerAccepted,
        Message::PeerProof(PeerProof { mac: [3; 32] }),
    ] {
        assert_eq!(wire(m.clone()), m);
    }
}

#[test]
fn forward_debug_hides_the_secret() {
    let shown = format!("{:?}", Message::Forward(forward()));
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[test]
fn forward_is_bounded_and_strict() {
    let mut f = forward();
    f.secret = "x".repeat(crate::MAX_STR + 1);
    assert!(matches!(
        encode_to_vec(&Message::Forward(f), DEFAULT_MAX_FRAME),
        Err(ProtoError::StringTooLong { .. })
    ));
    // The largest Forward fits a peer stream's frame limit.
    let mut f = forward();
    f.name = "n".repeat(crate::MAX_STR);
    f.visitor_client_id = "v".repeat(crate::MAX_STR);
    f.secret = "s".repeat(crate::MAX_STR);
    let bytes = encode_to_vec(&Message::Forward(f), DEFAULT_MAX_FRAME).expect("encodes");
    assert!(bytes.len() <= PEER_STREAM_MAX_FRAME, "{}", bytes.len());
    // An unknown kind tag is refused, not guessed.
    let mut body = encode_to_vec(&Message::Forward(forward()), DEFAULT_MAX_FRAME)
        .expect("encodes")
        .split_off(crate::LENGTH_PREFIX);
    body[1] = 9;
    assert!(matches!(
        decode_body(&body),
        Err(ProtoError::UnknownTag { .. })
    ));
}

#[test]
fn a_throttled_proof_is_not_checked() {
    let (mut d, mut a) = (dialer(KEY, 1), acceptor(KEY, 2));
    a.on_message(d.poll_transmit());
    d.on_message(a.poll_transmit());
    a.on_message(d.poll_transmit());
    assert_eq!(a.poll(), Some(Ok(AcceptorEvent::Authorize)));
    assert_eq!(a.authorize(Err(crate::handshake::Throttle::Source)), None);
    assert!(matches!(a.poll_transmit(), Some(Message::Rejected(_))));
    assert!(matches!(a.poll(), Some(Err(HandshakeError::Throttled(_)))));
}

mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn kind() -> impl Strategy<Value = ForwardKind> {
        prop_oneof![
            Just(ForwardKind::Public),
            Just(ForwardKind::Visitor),
            Just(ForwardKind::Vhost),
        ]
    }

    /// An address as the wire carries it: IP and port (no IPv6 scope or flow label).
    fn addr() -> impl Strategy<Value = Option<std::net::SocketAddr>> {
        proptest::option::of(
            (any::<std::net::IpAddr>(), any::<u16>())
                .prop_map(|(ip, port)| std::net::SocketAddr::new(ip, port)),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every kind, any names and addresses: what is encoded decodes the same.
        #[test]
        fn any_forward_round_trips(
            kind in kind(),
            name in ".{0,64}",
            publish_port: u16,
            epoch: u64,
            src in addr(),
            dest in addr(),
            visitor in ".{0,32}",
        ) {
            let f = Forward {
                kind,
                name,
                publish_port,
                epoch,
                src_addr: src,
                dest_addr: dest,
                visitor_client_id: visitor,
                secret: String::new(),
            };
            prop_assert_eq!(wire(Message::Forward(f.clone())), Message::Forward(f));
        }

        /// Garbage after a Forward's kind byte (each known kind, and unknown ones) is refused
        /// or read, never a panic.
        #[test]
        fn a_forward_body_of_garbage_never_panics(
            kind in 0u8..6,
            data in vec(any::<u8>(), 0..256),
        ) {
            let body = [&[0x44, kind][..], &data].concat();
            let _ = decode_body(&body);
        }
    }
}
