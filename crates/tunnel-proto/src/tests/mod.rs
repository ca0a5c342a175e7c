//! Unit tests. Shared fixtures live here; each file covers one concern.
#![allow(clippy::unwrap_used)]

mod auth;
mod decoder;
mod errors;
mod props;
mod register;
mod roundtrip;
mod truncation;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::*;

pub(crate) fn hello() -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        client_id: "edge-01".to_owned(),
        instance: [7; 16],
    }
}

pub(crate) fn v4() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 51234))
}

pub(crate) fn v6() -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        443,
        0,
        0,
    ))
}

pub(crate) fn register_request() -> RegisterRequest {
    RegisterRequest {
        proxies: vec![
            ProxySpec {
                name: "web".to_owned(),
                kind: ProxyKind::Http,
                http: Some(HttpRoute {
                    domains: vec!["app.example.com".to_owned(), "*.dev.example.com".to_owned()],
                    subdomain: Some("app".to_owned()),
                    locations: vec!["/api".to_owned()],
                    http_user: Some("u".to_owned()),
                    http_password: Some("pw-hidden".to_owned()),
                }),
                publish_port: Some(8080),
                publish_ports: None,
                secret: None,
                allow_visitors: vec![],
                idle_timeout: Some(300),
                allow_ips: Vec::new(),
                deny_ips: Vec::new(),
                bandwidth_limit: None,
                group: None,
                group_key: None,
            },
            ProxySpec {
                secret: Some("hunter2".to_owned()),
                allow_visitors: vec!["laptop".to_owned()],
                group: Some("dbs".to_owned()),
                group_key: Some("grp-hidden".to_owned()),
                ..ProxySpec::new("db", ProxyKind::Tcp)
            },
        ],
        visitors: vec![VisitorSpec {
            name: "to-db".to_owned(),
            proxy: "db".to_owned(),
            publish_port: 15432,
        }],
    }
}

pub(crate) fn register_reply() -> RegisterReply {
    RegisterReply {
        results: vec![
            ItemResult {
                kind: ItemKind::Proxy,
                name: "web".to_owned(),
                error: None,
                port: None,
            },
            ItemResult {
                kind: ItemKind::Visitor,
                name: "to-db".to_owned(),
                error: Some(FieldError {
                    field: "proxy".to_owned(),
                    message: "no such proxy".to_owned(),
                }),
                port: None,
            },
        ],
    }
}

pub(crate) const ALL_CODES: [RejectCode; 6] = [
    RejectCode::Version,
    RejectCode::Auth,
    RejectCode::IdInUse,
    RejectCode::Limit,
    RejectCode::BadConfig,
    RejectCode::Internal,
];

/// At least one message per variant, per StreamOpen/StreamStatus variant, per RejectCode
/// and per address form.
pub(crate) fn samples() -> Vec<Message> {
    let mut v = vec![
        Message::Hello(hello()),
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            client_id: String::new(),
            instance: [0; 16],
        }),
        Message::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            nonce: [0xa5; 32],
            bound: true,
        }),
        Message::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            nonce: [0x5a; 32],
            bound: false,
        }),
        Message::AuthResponse(AuthResponse { mac: [0x5a; 32] }),
        Message::Welcome(Welcome {
            connection_id: u64::MAX,
            heartbeat_ms: 15_000,
        }),
        Message::Register(register_request()),
        Message::Register(RegisterRequest::default()),
        Message::RegisterReply(register_reply()),
        Message::RegisterReply(RegisterReply::default()),
        Message::Ping(0),
        Message::Pong(0x0102_0304_0506_0708),
        Message::Abort(u32::MAX),
        Message::Reconnect(0),
        Message::Moved,
        Message::StreamOpen(StreamOpen::Control),
        Message::StreamOpen(StreamOpen::Join { session: u64::MAX }),
        Message::StreamOpen(StreamOpen::Visit {
            proxy: "db".to_owned(),
            publish_port: 15432,
            secret: "s3cr3t".to_owned(),
        }),
        Message::StreamStatus(StreamStatus::Ok),
        Message::StreamStatus(StreamStatus::Error("connection refused".to_owned())),
    ];
    for peer in [None, Some(v4()), Some(v6())] {
        for dest in [None, Some(v4()), Some(v6())] {
            v.push(Message::StreamOpen(StreamOpen::Proxy {
                proxy: "web".to_owned(),
                peer,
                dest,
            }));
        }
    }
    for code in ALL_CODES {
        v.push(Message::Rejected(Rejected::new(
            code,
            format!("because {code}"),
        )));
    }
    v
}

pub(crate) fn frame_of(msg: &Message) -> Vec<u8> {
    encode_to_vec(msg, DEFAULT_MAX_FRAME).unwrap()
}

/// Kind byte + body of `msg`, i.e. what `decode_body` takes.
pub(crate) fn body_of(msg: &Message) -> Vec<u8> {
    frame_of(msg).split_off(LENGTH_PREFIX)
}
