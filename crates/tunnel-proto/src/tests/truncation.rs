#![allow(clippy::unwrap_used)]

use super::{body_of, samples};
use crate::*;

#[test]
fn every_cut_point_of_every_variant_is_an_error() {
    for msg in samples() {
        let body = body_of(&msg);
        for cut in 0..body.len() {
            let err = decode_body(&body[..cut]);
            assert!(err.is_err(), "{msg:?} cut at {cut} decoded as {err:?}");
        }
    }
}

#[test]
fn binary_truncation_names_the_field() {
    let body = body_of(&Message::Hello(super::hello()));
    let expect = |cut: usize, what| {
        assert_eq!(
            decode_body(&body[..cut]),
            Err(ProtoError::Truncated { what }),
            "cut {cut}"
        );
    };
    expect(3, "Hello.magic");
    expect(6, "Hello.version");
    expect(8, "Hello.client_id");
    expect(10, "Hello.client_id");
    expect(body.len() - 1, "Hello.instance");
}

#[test]
fn truncated_address_is_an_error() {
    for peer in [super::v4(), super::v6()] {
        let body = body_of(&Message::StreamOpen(StreamOpen::Proxy {
            proxy: "p".into(),
            peer: Some(peer),
            dest: None,
        }));
        // Cut inside the address: after its tag, inside the ip, inside the port.
        for cut in [6, 8, body.len() - 2] {
            assert_eq!(
                decode_body(&body[..cut]),
                Err(ProtoError::Truncated {
                    what: "StreamOpen.peer"
                }),
                "{peer} cut {cut}"
            );
        }
    }
}
