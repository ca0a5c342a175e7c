//! Property tests: hostile input never panics or over-buffers; arbitrary values round-trip.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use super::ALL_CODES;
use crate::*;

/// Any string that fits the cap: 256 chars of at most 4 bytes each.
fn short_str() -> impl Strategy<Value = String> {
    "(?s).{0,256}"
}

fn addr() -> impl Strategy<Value = Option<SocketAddr>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, p)| Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), p)))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| {
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                p,
                0,
                0,
            )))
        }),
    ]
}

fn proxy_spec() -> impl Strategy<Value = ProxySpec> {
    (
        short_str(),
        prop_oneof![
            Just(ProxyKind::Tcp),
            Just(ProxyKind::Http),
            Just(ProxyKind::Http2)
        ],
        any::<Option<u16>>(),
        proptest::option::of(short_str()),
        vec(short_str(), 0..3),
        proptest::option::of((vec(short_str(), 0..3), proptest::option::of(short_str()))),
    )
        .prop_map(
            |(name, kind, publish_port, secret, allow_visitors, http)| ProxySpec {
                name,
                kind,
                publish_port,
                publish_ports: None,
                secret,
                allow_visitors,
                http: http.map(|(domains, http_user)| HttpRoute {
                    domains,
                    http_user,
                    ..HttpRoute::default()
                }),
                idle_timeout: None,
                allow_ips: Vec::new(),
                deny_ips: Vec::new(),
                bandwidth_limit: None,
                group: None,
                group_key: None,
            },
        )
}

fn register() -> impl Strategy<Value = RegisterRequest> {
    let visitor =
        (short_str(), short_str(), any::<u16>()).prop_map(|(name, proxy, publish_port)| {
            VisitorSpec {
                name,
                proxy,
                publish_port,
            }
        });
    (vec(proxy_spec(), 0..4), vec(visitor, 0..4))
        .prop_map(|(proxies, visitors)| RegisterRequest { proxies, visitors })
}

fn reply() -> impl Strategy<Value = RegisterReply> {
    let item = (
        prop_oneof![Just(ItemKind::Proxy), Just(ItemKind::Visitor)],
        short_str(),
        proptest::option::of((short_str(), short_str())),
    )
        .prop_map(|(kind, name, error)| ItemResult {
            kind,
            name,
            error: error.map(|(field, message)| FieldError { field, message }),
            port: None,
        });
    vec(item, 0..6).prop_map(|results| RegisterReply { results })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), short_str(), any::<[u8; 16]>()).prop_map(
            |(version, client_id, instance)| {
                Message::Hello(Hello {
                    version,
                    client_id,
                    instance,
                })
            }
        ),
        (any::<u16>(), any::<[u8; 32]>(), any::<bool>()).prop_map(|(version, nonce, bound)| {
            Message::Challenge(Challenge {
                version,
                nonce,
                bound,
            })
        }),
        any::<[u8; 32]>().prop_map(|mac| Message::AuthResponse(AuthResponse { mac })),
        (any::<u64>(), any::<u32>()).prop_map(|(connection_id, heartbeat_ms)| {
            Message::Welcome(Welcome {
                connection_id,
                heartbeat_ms,
            })
        }),
        (proptest::sample::select(&ALL_CODES[..]), short_str())
            .prop_map(|(code, reason)| Message::Rejected(Rejected { code, reason })),
        register().prop_map(Message::Register),
        reply().prop_map(Message::RegisterReply),
        any::<u64>().prop_map(Message::Ping),
        any::<u64>().prop_map(Message::Pong),
        any::<u32>().prop_map(Message::Abort),
        Just(Message::StreamOpen(StreamOpen::Control)),
        any::<u64>().prop_map(|session| Message::StreamOpen(StreamOpen::Join { session })),
        (short_str(), addr(), addr()).prop_map(|(proxy, peer, dest)| {
            Message::StreamOpen(StreamOpen::Proxy { proxy, peer, dest })
        }),
        (short_str(), any::<u16>(), short_str()).prop_map(|(proxy, publish_port, secret)| {
            Message::StreamOpen(StreamOpen::Visit {
                proxy,
                publish_port,
                secret,
            })
        }),
        Just(Message::StreamStatus(StreamStatus::Ok)),
        short_str().prop_map(|s| Message::StreamStatus(StreamStatus::Error(s))),
    ]
}

/// Feeds `data` in chunks of the given sizes, checking the buffering bound after every
/// step. Returns the decoded messages and whether decoding stopped on an error.
fn drive(max_frame: usize, data: &[u8], sizes: &[usize]) -> (Vec<Message>, bool) {
    let mut dec = Decoder::new(max_frame);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(msg)) => out.push(msg),
                Ok(None) => {
                    // "Need more" is only ever said about less than one maximal frame.
                    assert!(
                        buf.len() < max_frame + LENGTH_PREFIX,
                        "buffered {}",
                        buf.len()
                    );
                    break;
                }
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_body_never_panics(data in vec(any::<u8>(), 0..2048)) {
        let _ = decode_body(&data);
    }

    /// Garbage after a known kind byte reaches deep into each body parser.
    #[test]
    fn decode_body_never_panics_per_kind(
        kind in proptest::sample::select(&[1u8, 2, 3, 4, 5, 0x10, 0x11, 0x20, 0x21, 0x22, 0x23, 0x24, 0x30, 0x31][..]),
        data in vec(any::<u8>(), 0..128),
    ) {
        let body = [&[kind][..], &data].concat();
        let _ = decode_body(&body);
    }

    #[test]
    fn decoder_survives_garbage(
        max_frame in 0usize..512,
        data in vec(any::<u8>(), 0..4096),
        sizes in vec(1usize..64, 1..8),
    ) {
        drive(max_frame, &data, &sizes);
    }

    /// Plausible prefixes make the decoder actually reach the body parsers.
    #[test]
    fn decoder_survives_garbage_frames(
        frames in vec((any::<u8>(), vec(any::<u8>(), 0..64)), 1..8),
        sizes in vec(1usize..32, 1..8),
    ) {
        let mut data = Vec::new();
        for (kind, body) in &frames {
            data.extend_from_slice(&u32::try_from(body.len() + 1).unwrap().to_be_bytes());
            data.push(*kind);
            data.extend_from_slice(body);
        }
        drive(128, &data, &sizes);
    }

    #[test]
    fn mutated_frames_never_panic(
        msg in message(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut frame = encode_to_vec(&msg, DEFAULT_MAX_FRAME).unwrap();
        for (at, byte) in flips {
            let i = at.index(frame.len());
            frame[i] ^= byte;
        }
        frame.truncate(cut.index(frame.len() + 1));
        drive(DEFAULT_MAX_FRAME, &frame, &[frame.len().max(1)]);
        if let Some(body) = frame.get(LENGTH_PREFIX..) {
            let _ = decode_body(body);
        }
    }

    #[test]
    fn messages_round_trip(msg in message(), sizes in vec(1usize..16, 1..4)) {
        let frame = encode_to_vec(&msg, DEFAULT_MAX_FRAME).unwrap();
        prop_assert_eq!(decode_body(&frame[LENGTH_PREFIX..]).unwrap(), msg.clone());
        let (out, failed) = drive(DEFAULT_MAX_FRAME, &frame, &sizes);
        prop_assert!(!failed);
        prop_assert_eq!(out, vec![msg]);
    }

    #[test]
    fn strict_prefixes_never_decode(msg in message()) {
        let frame = encode_to_vec(&msg, DEFAULT_MAX_FRAME).unwrap();
        let body = &frame[LENGTH_PREFIX..];
        for cut in 0..body.len() {
            prop_assert!(decode_body(&body[..cut]).is_err(), "cut {}", cut);
        }
    }

    #[test]
    fn overlong_strings_never_encode(extra in 1usize..2000, msg_kind in 0u8..3) {
        let s = "a".repeat(MAX_STR + extra);
        let msg = match msg_kind {
            0 => Message::Hello(Hello { version: 1, client_id: s, instance: [0; 16] }),
            1 => Message::StreamOpen(StreamOpen::Proxy {
                proxy: s,
                peer: None,
                dest: None,
            }),
            _ => Message::StreamStatus(StreamStatus::Error(s)),
        };
        prop_assert_eq!(
            encode_to_vec(&msg, usize::MAX),
            Err(ProtoError::StringTooLong { len: MAX_STR + extra, max: MAX_STR })
        );
    }

    #[test]
    fn auth_accepts_own_mac_only(
        key in vec(any::<u8>(), 0..100),
        nonce in any::<[u8; 32]>(),
        binding in vec(any::<u8>(), 0..40),
        client_id in short_str(),
        instance in any::<[u8; 16]>(),
        flip in 0usize..256,
    ) {
        let hello = Hello { version: PROTOCOL_VERSION, client_id, instance };
        let mut mac = compute_mac(&key, &nonce, &binding, &hello);
        prop_assert!(verify_mac(&key, &nonce, &binding, &hello, &mac));
        mac[flip / 8] ^= 1 << (flip % 8);
        prop_assert!(!verify_mac(&key, &nonce, &binding, &hello, &mac));
    }
}
