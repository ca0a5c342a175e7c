#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use super::{body_of, hello};
use crate::*;

fn with_len(s: &str) -> Vec<u8> {
    let mut v = u16::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(s.as_bytes());
    v
}

#[test]
fn empty_and_unknown_kinds() {
    assert_eq!(decode_body(&[]), Err(ProtoError::EmptyFrame));
    for kind in [0x00, 0x06, 0x12, 0x25, 0x32, 0xff] {
        assert_eq!(decode_body(&[kind]), Err(ProtoError::UnknownKind(kind)));
        assert_eq!(
            decode_body(&[kind, 1, 2, 3]),
            Err(ProtoError::UnknownKind(kind))
        );
    }
}

#[test]
fn bad_magic() {
    let mut body = body_of(&Message::Hello(hello()));
    body[1] = b'X';
    assert_eq!(decode_body(&body), Err(ProtoError::BadMagic));
    // Checked before anything else, so a short non-tunnel greeting is still BadMagic.
    assert_eq!(decode_body(b"\x01GET "), Err(ProtoError::BadMagic));
}

#[test]
fn trailing_bytes() {
    for msg in super::samples() {
        if matches!(msg, Message::Register(_) | Message::RegisterReply(_)) {
            continue; // JSON bodies: covered below
        }
        let mut body = body_of(&msg);
        body.extend_from_slice(&[0, 0]);
        assert_eq!(
            decode_body(&body),
            Err(ProtoError::TrailingBytes {
                kind: msg.kind(),
                extra: 2
            }),
            "{msg:?}"
        );
    }
    let mut body = body_of(&Message::Register(RegisterRequest::default()));
    body.extend_from_slice(b" x");
    assert!(matches!(decode_body(&body), Err(ProtoError::BadJson(_))));
}

#[test]
fn challenge_binding_flag_is_zero_or_one() {
    let mut body = vec![0x02, 0, 1];
    body.extend_from_slice(&[0; 32]);
    body.push(2);
    assert_eq!(
        decode_body(&body),
        Err(ProtoError::UnknownTag {
            what: "Challenge.bound",
            tag: 2
        })
    );
}

#[test]
fn unknown_tags() {
    assert_eq!(
        decode_body(&[0x30, 9]),
        Err(ProtoError::UnknownTag {
            what: "StreamOpen",
            tag: 9
        })
    );
    assert_eq!(
        decode_body(&[0x31, 2]),
        Err(ProtoError::UnknownTag {
            what: "StreamStatus",
            tag: 2
        })
    );
    let mut body = vec![0x30, 1];
    body.extend(with_len("web"));
    body.push(5);
    assert_eq!(
        decode_body(&body),
        Err(ProtoError::UnknownTag {
            what: "address",
            tag: 5
        })
    );
}

#[test]
fn unknown_reject_code() {
    let mut body = vec![0x05, 42];
    body.extend(with_len("why"));
    assert_eq!(decode_body(&body), Err(ProtoError::UnknownCode(42)));
}

#[test]
fn bad_utf8() {
    assert_eq!(
        decode_body(&[0x31, 1, 0, 2, 0xc3, 0x28]),
        Err(ProtoError::BadUtf8)
    );
}

#[test]
fn overlong_string_claim_is_rejected_before_reading_it() {
    let claim = u16::try_from(MAX_STR + 1).unwrap().to_be_bytes();
    let body = [&[0x31, 1][..], &claim].concat();
    assert_eq!(
        decode_body(&body),
        Err(ProtoError::StringTooLong {
            len: MAX_STR + 1,
            max: MAX_STR
        })
    );
}

#[test]
fn bad_json() {
    for body in [
        &b"\x10"[..],
        b"\x10{",
        b"\x10[]",
        b"\x11{}",
        b"\x10{\"proxies\":[{}]}",
    ] {
        assert!(
            matches!(decode_body(body), Err(ProtoError::BadJson(_))),
            "{body:?}"
        );
    }
    assert_eq!(
        decode_body(b"\x10{}"),
        Ok(Message::Register(RegisterRequest::default()))
    );
}

#[test]
fn encode_rejects_overlong_strings_and_leaves_dst_untouched() {
    let long = "é".repeat(MAX_STR / 2 + 1); // 1026 bytes, 513 chars
    let msgs = [
        Message::Hello(Hello {
            client_id: long.clone(),
            ..hello()
        }),
        Message::Rejected(Rejected::new(RejectCode::Internal, long.clone())),
        Message::StreamOpen(StreamOpen::Proxy {
            proxy: long.clone(),
            peer: None,
            dest: None,
        }),
        Message::StreamOpen(StreamOpen::Visit {
            proxy: "ok".into(),
            publish_port: 0,
            secret: long.clone(),
        }),
        Message::StreamStatus(StreamStatus::Error(long.clone())),
    ];
    for msg in msgs {
        let mut dst = BytesMut::from(&b"keep"[..]);
        assert_eq!(
            encode(&msg, DEFAULT_MAX_FRAME, &mut dst),
            Err(ProtoError::StringTooLong {
                len: long.len(),
                max: MAX_STR
            }),
            "{msg:?}"
        );
        assert_eq!(&dst[..], b"keep");
    }
    // Longer than u16 can even express: still a clean error.
    let huge = Message::StreamStatus(StreamStatus::Error("x".repeat(70_000)));
    assert!(matches!(
        encode_to_vec(&huge, usize::MAX),
        Err(ProtoError::StringTooLong { len: 70_000, .. })
    ));
}

#[test]
fn encode_enforces_max_frame_exactly() {
    let msg = Message::Ping(0);
    assert_eq!(encode_to_vec(&msg, 9).unwrap().len(), 13);
    let mut dst = BytesMut::from(&b"keep"[..]);
    assert_eq!(
        encode(&msg, 8, &mut dst),
        Err(ProtoError::FrameTooLarge { len: 9, max: 8 })
    );
    assert_eq!(&dst[..], b"keep");

    let big = Message::Register(RegisterRequest {
        proxies: (0..2000)
            .map(|i| ProxySpec {
                publish_port: Some(10_000),
                allow_visitors: vec![],
                ..ProxySpec::new(format!("proxy-{i}"), ProxyKind::Tcp)
            })
            .collect(),
        visitors: vec![],
    });
    assert!(matches!(
        encode_to_vec(&big, DEFAULT_MAX_FRAME),
        Err(ProtoError::FrameTooLarge {
            max: DEFAULT_MAX_FRAME,
            ..
        })
    ));
}

#[test]
fn error_messages_explain_themselves() {
    let cases = [
        (
            ProtoError::FrameTooLarge {
                len: 70_000,
                max: 65_536,
            },
            "70000",
        ),
        (ProtoError::EmptyFrame, "empty"),
        (ProtoError::UnknownKind(0x7f), "0x7f"),
        (
            ProtoError::Truncated {
                what: "Hello.instance",
            },
            "Hello.instance",
        ),
        (
            ProtoError::TrailingBytes {
                kind: 0x20,
                extra: 3,
            },
            "3",
        ),
        (ProtoError::BadMagic, "tunnel port"),
        (ProtoError::BadUtf8, "UTF-8"),
        (
            ProtoError::StringTooLong {
                len: 2000,
                max: 1024,
            },
            "1024",
        ),
        (
            ProtoError::UnknownTag {
                what: "address",
                tag: 9,
            },
            "address",
        ),
        (ProtoError::UnknownCode(9), "9"),
        (ProtoError::BadJson("eof".into()), "eof"),
    ];
    for (err, needle) in cases {
        let text = err.to_string();
        assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    }
}

#[test]
fn a_frame_too_large_names_the_limit_and_puts_the_fix_on_the_sender() {
    let text = ProtoError::FrameTooLarge {
        len: 70_000,
        max: 65_536,
    }
    .to_string();
    assert!(text.contains("70000"), "{text}");
    assert!(text.contains("limit of 65536 bytes"), "{text}");
    assert!(text.contains("the sender must send"), "{text}");
    // Hitting the limit is not a reason to raise it: that is an admin's call, made knowingly.
    assert!(!text.contains("raise"), "{text}");
}
