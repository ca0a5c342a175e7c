#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::register_request;
use crate::*;

#[test]
fn json_shape() {
    let value = serde_json::to_value(register_request()).unwrap();
    assert_eq!(
        value,
        json!({
            "proxies": [
                {"name": "web", "type": "http", "publish_port": 8080, "idle_timeout": 300, "http": {
                    "domains": ["app.example.com", "*.dev.example.com"],
                    "subdomain": "app",
                    "locations": ["/api"],
                    "http_user": "u",
                    "http_password": "pw-hidden",
                }},
                {"name": "db", "type": "tcp", "secret": "hunter2", "allow_visitors": ["laptop"],
                 "group": "dbs", "group_key": "grp-hidden"},
            ],
            "visitors": [{"name": "to-db", "proxy": "db", "publish_port": 15432}],
        })
    );
    let reply = serde_json::to_value(super::register_reply()).unwrap();
    assert_eq!(
        reply,
        json!({"results": [
            {"kind": "proxy", "name": "web"},
            {"kind": "visitor", "name": "to-db", "error": {"field": "proxy", "message": "no such proxy"}},
        ]})
    );
}

#[test]
fn defaults_fill_optional_fields() {
    let req: RegisterRequest = serde_json::from_value(json!({
        "proxies": [{"name": "a", "type": "http2"}],
        "visitors": [{"name": "v", "proxy": "a"}],
    }))
    .unwrap();
    assert_eq!(req.proxies[0].kind, ProxyKind::Http2);
    assert_eq!(req.proxies[0].publish_port, None);
    assert_eq!(req.proxies[0].secret, None);
    assert!(req.proxies[0].allow_visitors.is_empty());
    assert_eq!(req.visitors[0].publish_port, 0);
    assert_eq!(
        serde_json::from_str::<RegisterRequest>("{}").unwrap(),
        RegisterRequest::default()
    );
}

#[test]
fn unknown_fields_are_rejected_everywhere() {
    let bad_requests = [
        json!({"proxies": [], "extra": 1}),
        json!({"proxies": [{"name": "a", "type": "tcp", "port": 1}]}),
        json!({"visitors": [{"name": "v", "proxy": "a", "secret": "x"}]}),
        json!({"proxies": [{"name": "a", "type": "sctp"}]}),
    ];
    for bad in bad_requests {
        let body = [&[0x10][..], bad.to_string().as_bytes()].concat();
        assert!(
            matches!(decode_body(&body), Err(ProtoError::BadJson(_))),
            "{bad}"
        );
    }
    let bad_replies = [
        json!({"results": [], "ok": true}),
        json!({"results": [{"kind": "proxy", "name": "a", "why": "x"}]}),
        json!({"results": [{"kind": "proxy", "name": "a", "error": {"field": "f", "message": "m", "x": 1}}]}),
    ];
    for bad in bad_replies {
        let body = [&[0x11][..], bad.to_string().as_bytes()].concat();
        assert!(
            matches!(decode_body(&body), Err(ProtoError::BadJson(_))),
            "{bad}"
        );
    }
}

#[test]
fn debug_hides_secrets() {
    let req = register_request();
    for text in [
        format!("{:?}", req.proxies[1]),
        format!("{req:?}"),
        format!("{:?}", Message::Register(req.clone())),
        format!("{:#?}", Message::Register(req.clone())),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("pw-hidden"), "{text}");
        assert!(!text.contains("grp-hidden"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
    let visit = Message::StreamOpen(StreamOpen::Visit {
        proxy: "db".into(),
        publish_port: 1,
        secret: "s3cr3t".into(),
    });
    let text = format!("{visit:?}");
    assert!(!text.contains("s3cr3t") && text.contains("db"), "{text}");
}

#[test]
fn a_spec_without_group_fields_still_parses_and_sends_none() {
    let old = r#"{"name":"web","type":"tcp","publish_port":7000}"#;
    let spec: ProxySpec = serde_json::from_str(old).unwrap();
    assert!(spec.group.is_none() && spec.group_key.is_none());
    let sent = serde_json::to_string(&spec).unwrap();
    assert!(!sent.contains("group"), "{sent}");
}

#[test]
fn displays() {
    assert_eq!(ProxyKind::Tcp.to_string(), "tcp");
    assert_eq!(ProxyKind::Http.to_string(), "http");
    assert_eq!(ProxyKind::Http2.to_string(), "http2");
    let e = FieldError {
        field: "publish_port".into(),
        message: "already in use".into(),
    };
    assert_eq!(e.to_string(), "publish_port: already in use");
}

#[test]
fn name_validation() {
    for ok in ["a", "web", "my_proxy-1.prod", &"x".repeat(64)] {
        assert_eq!(validate_name(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "has space",
        "slash/",
        "ümlaut",
        "tab\t",
        &"x".repeat(65),
    ] {
        let msg = validate_name(bad).unwrap_err().to_string();
        assert!(msg.contains("A-Z a-z 0-9 _ . -"), "{bad}: {msg}");
    }
    assert_eq!(
        validate_name(&"x".repeat(65)).unwrap_err().to_string(),
        "name is 65 characters long; use at most 64 of A-Z a-z 0-9 _ . -"
    );
    assert_eq!(
        validate_name("a/b").unwrap_err().to_string(),
        "name contains '/'; use only A-Z a-z 0-9 _ . - (1 to 64 characters)"
    );
    assert_eq!(
        validate_name("").unwrap_err().to_string(),
        "name must not be empty; use 1 to 64 of A-Z a-z 0-9 _ . -"
    );
}

#[test]
fn auto_and_block_ports_travel_only_when_asked_for() {
    // A fixed port looks exactly as before: an older server reads it.
    let fixed = serde_json::to_value(&register_request().proxies[0]).unwrap();
    assert!(fixed.get("publish_ports").is_none());
    let reply = serde_json::to_value(super::register_reply()).unwrap();
    assert!(reply["results"][0].get("port").is_none());

    let req: RegisterRequest = serde_json::from_value(json!({"proxies": [
        {"name": "a", "type": "tcp", "publish_ports": "auto"},
        {"name": "b", "type": "udp", "publish_ports": {"block": {"first": 6000, "last": 6004}}},
    ]}))
    .unwrap();
    assert_eq!(req.proxies[0].publish_ports, Some(PortRequest::Auto));
    assert_eq!(
        req.proxies[1].publish_ports,
        Some(PortRequest::Block {
            first: 6000,
            last: 6004
        })
    );
    let reply: RegisterReply = serde_json::from_value(json!({"results": [
        {"kind": "proxy", "name": "a", "port": 6003},
    ]}))
    .unwrap();
    assert_eq!(reply.results[0].port, Some(6003));
}
