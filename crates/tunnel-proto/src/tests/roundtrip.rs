#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use super::{body_of, frame_of, hello, samples, ALL_CODES};
use crate::*;

#[test]
fn every_sample_round_trips_through_decode_body() {
    for msg in samples() {
        let frame = frame_of(&msg);
        let len = parse_length(frame[..4].try_into().unwrap(), DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(len, frame.len() - LENGTH_PREFIX, "{msg:?}");
        assert_eq!(frame[LENGTH_PREFIX], msg.kind(), "{msg:?}");
        assert_eq!(decode_body(&frame[LENGTH_PREFIX..]).unwrap(), msg);
    }
}

#[test]
fn encode_appends_to_existing_bytes() {
    let mut dst = BytesMut::from(&b"xyz"[..]);
    encode(&Message::Ping(1), DEFAULT_MAX_FRAME, &mut dst).unwrap();
    assert_eq!(&dst[..3], b"xyz");
    assert_eq!(&dst[3..], &frame_of(&Message::Ping(1))[..]);
}

// Golden bytes pin the layout so an accidental change breaks a test, not interop.
#[test]
fn hello_layout_is_stable() {
    let expected: Vec<u8> = [
        &[0, 0, 0, 32][..], // len = kind + 4 magic + 2 version + 2 + 7 id + 16 instance
        &[0x01],            // kind
        b"TTUN",            // magic
        &[0, 1],            // version
        &[0, 7],            // client_id length
        b"edge-01",         // client_id
        &[7; 16],           // instance
    ]
    .concat();
    assert_eq!(frame_of(&Message::Hello(hello())), expected);
}

#[test]
fn small_layouts_are_stable() {
    let challenge = |bound| {
        Message::Challenge(Challenge {
            version: 1,
            nonce: [9; 32],
            bound,
        })
    };
    let challenge_bytes = |flag: u8| [&[0, 0, 0, 36, 0x02, 0, 1][..], &[9; 32], &[flag]].concat();
    let cases: Vec<(Message, Vec<u8>)> = vec![
        (challenge(true), challenge_bytes(1)),
        (challenge(false), challenge_bytes(0)),
        (
            Message::Ping(0x0102),
            vec![0, 0, 0, 9, 0x20, 0, 0, 0, 0, 0, 0, 1, 2],
        ),
        (
            Message::Pong(1),
            vec![0, 0, 0, 9, 0x21, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        (Message::Abort(3), vec![0, 0, 0, 5, 0x22, 0, 0, 0, 3]),
        (
            Message::Reconnect(2000),
            vec![0, 0, 0, 5, 0x23, 0, 0, 7, 0xd0],
        ),
        (
            Message::StreamOpen(StreamOpen::Control),
            vec![0, 0, 0, 2, 0x30, 0],
        ),
        (
            Message::StreamOpen(StreamOpen::Join { session: 0x0102 }),
            vec![0, 0, 0, 10, 0x30, 3, 0, 0, 0, 0, 0, 0, 1, 2],
        ),
        (
            Message::StreamStatus(StreamStatus::Ok),
            vec![0, 0, 0, 2, 0x31, 0],
        ),
        (
            Message::StreamStatus(StreamStatus::Error("no".into())),
            vec![0, 0, 0, 6, 0x31, 1, 0, 2, b'n', b'o'],
        ),
        (
            Message::Rejected(Rejected::new(RejectCode::Auth, "")),
            vec![0, 0, 0, 4, 0x05, 2, 0, 0],
        ),
        (
            Message::Welcome(Welcome {
                connection_id: 1,
                heartbeat_ms: 2,
            }),
            vec![0, 0, 0, 13, 0x04, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
        ),
    ];
    for (msg, bytes) in cases {
        assert_eq!(frame_of(&msg), bytes, "{msg:?}");
    }
}

#[test]
fn address_layouts_are_stable() {
    let open = |peer| {
        Message::StreamOpen(StreamOpen::Proxy {
            proxy: "p".into(),
            peer,
            dest: None,
        })
    };
    let head = [0x30, 1, 0, 1, b'p'];
    // The trailing 0 is the (unknown) dest.
    assert_eq!(body_of(&open(None)), [&head[..], &[0, 0]].concat());
    assert_eq!(
        body_of(&open(Some(super::v4()))),
        [
            &head[..],
            &[4, 203, 0, 113, 9],
            &51234u16.to_be_bytes(),
            &[0]
        ]
        .concat()
    );
    let v6 = body_of(&open(Some(super::v6())));
    assert_eq!(v6.len(), head.len() + 1 + 16 + 2 + 1);
    assert_eq!(v6[head.len()], 6);
}

#[test]
fn dest_follows_peer_in_the_same_layout() {
    let open = |dest| {
        Message::StreamOpen(StreamOpen::Proxy {
            proxy: "p".into(),
            peer: Some(super::v4()),
            dest,
        })
    };
    let without = body_of(&open(None));
    let with = body_of(&open(Some(super::v6())));
    // Identical up to the dest tag: 0 for unknown, else tag, ip, port.
    assert_eq!(&with[..without.len() - 1], &without[..without.len() - 1]);
    assert_eq!(without[without.len() - 1], 0);
    assert_eq!(with.len(), without.len() - 1 + 1 + 16 + 2);
    assert_eq!(decode_body(&with), Ok(open(Some(super::v6()))));
    assert_eq!(
        decode_body(&with[..with.len() - 1]),
        Err(ProtoError::Truncated {
            what: "StreamOpen.dest"
        })
    );
}

#[test]
fn kinds_and_names_are_distinct() {
    let mut seen = std::collections::HashMap::new();
    for msg in samples() {
        if let Some(name) = seen.insert(msg.kind(), msg.name()) {
            assert_eq!(name, msg.name(), "kind 0x{:02x} shared", msg.kind());
        }
    }
    assert_eq!(seen.len(), 14);
}

#[test]
fn reject_codes_convert_and_classify() {
    for code in ALL_CODES {
        assert_eq!(RejectCode::try_from(code as u8), Ok(code));
        assert!(!code.to_string().is_empty());
    }
    let permanent: Vec<_> = ALL_CODES.into_iter().filter(|c| c.is_permanent()).collect();
    assert_eq!(
        permanent,
        [RejectCode::Version, RejectCode::Auth, RejectCode::BadConfig]
    );
    for bad in [0u8, 7, 0xff] {
        assert_eq!(RejectCode::try_from(bad), Err(ProtoError::UnknownCode(bad)));
    }
}

#[test]
fn strings_at_the_cap_round_trip() {
    let long = "x".repeat(MAX_STR);
    let msgs = [
        Message::Hello(Hello {
            client_id: long.clone(),
            ..hello()
        }),
        Message::Rejected(Rejected::new(RejectCode::Limit, long.clone())),
        Message::StreamOpen(StreamOpen::Visit {
            proxy: long.clone(),
            publish_port: 1,
            secret: long.clone(),
        }),
        Message::StreamStatus(StreamStatus::Error(long)),
    ];
    for msg in msgs {
        assert_eq!(decode_body(&body_of(&msg)).unwrap(), msg);
    }
}

#[test]
fn multibyte_strings_round_trip() {
    let msg = Message::StreamStatus(StreamStatus::Error(
        "Verbindung verweigert – 拒绝 🚫".into(),
    ));
    assert_eq!(decode_body(&body_of(&msg)).unwrap(), msg);
}

#[test]
fn newer_hello_may_carry_extra_fields() {
    // A v2 client appending a field must still be readable, so the server can answer
    // Rejected(Version) instead of a decode error.
    let newer = Hello {
        version: PROTOCOL_VERSION + 1,
        ..hello()
    };
    let mut body = body_of(&Message::Hello(newer.clone()));
    body.extend_from_slice(b"future field");
    assert_eq!(decode_body(&body).unwrap(), Message::Hello(newer));

    let challenge = Challenge {
        version: PROTOCOL_VERSION + 1,
        nonce: [1; 32],
        bound: true,
    };
    let mut body = body_of(&Message::Challenge(challenge.clone()));
    body.push(0);
    assert_eq!(decode_body(&body).unwrap(), Message::Challenge(challenge));
}

#[test]
fn decoder_round_trips_every_sample() {
    let mut dec = Decoder::default();
    assert_eq!(dec.max_frame(), DEFAULT_MAX_FRAME);
    for msg in samples() {
        let mut buf = BytesMut::from(&frame_of(&msg)[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(msg));
        assert!(buf.is_empty());
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
    }
}
