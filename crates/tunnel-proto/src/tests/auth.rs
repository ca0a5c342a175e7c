#![allow(clippy::unwrap_used)]

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hello;
use crate::*;

const KEY: &[u8] = b"correct horse battery staple";
const NONCE: [u8; 32] = [3; 32];
const BINDING: [u8; EKM_LEN] = [9; EKM_LEN];

fn mac() -> [u8; 32] {
    compute_mac(KEY, &NONCE, &BINDING, &hello())
}

#[test]
fn accepts_the_right_mac() {
    assert!(verify_mac(KEY, &NONCE, &BINDING, &hello(), &mac()));
}

#[test]
fn rejects_wrong_key() {
    assert!(!verify_mac(
        b"correct horse battery stapler",
        &NONCE,
        &BINDING,
        &hello(),
        &mac()
    ));
    assert!(!verify_mac(b"", &NONCE, &BINDING, &hello(), &mac()));
}

#[test]
fn rejects_other_nonce() {
    let mut nonce = NONCE;
    nonce[31] ^= 1;
    assert!(!verify_mac(KEY, &nonce, &BINDING, &hello(), &mac()));
}

#[test]
fn rejects_other_binding() {
    let mut binding = BINDING;
    binding[0] ^= 0x80;
    assert!(!verify_mac(KEY, &NONCE, &binding, &hello(), &mac()));
    assert!(!verify_mac(KEY, &NONCE, &[], &hello(), &mac()));
    assert!(!verify_mac(KEY, &NONCE, &BINDING[..31], &hello(), &mac()));
}

#[test]
fn rejects_other_hello() {
    let others = [
        Hello {
            client_id: "edge-02".into(),
            ..hello()
        },
        Hello {
            version: PROTOCOL_VERSION + 1,
            ..hello()
        },
        Hello {
            instance: [8; 16],
            ..hello()
        },
    ];
    for other in others {
        assert!(
            !verify_mac(KEY, &NONCE, &BINDING, &other, &mac()),
            "{other:?}"
        );
    }
}

#[test]
fn rejects_every_flipped_bit() {
    let good = mac();
    for bit in 0..256 {
        let mut bad = good;
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !verify_mac(KEY, &NONCE, &BINDING, &hello(), &bad),
            "bit {bit}"
        );
    }
}

/// Rebuilds the transcript by hand from the documented layout, so an implementation
/// change that still "agrees with itself" cannot silently break interop.
#[test]
fn matches_the_documented_transcript() {
    let mut input = Vec::new();
    input.extend_from_slice(b"tls-tunnel auth v1");
    input.extend_from_slice(&NONCE);
    input.extend_from_slice(&32u16.to_be_bytes());
    input.extend_from_slice(&BINDING);
    input.extend_from_slice(b"TTUN\x00\x01\x00\x07edge-01");
    input.extend_from_slice(&[7; 16]);
    let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(KEY).unwrap();
    reference.update(&input);
    let expected: [u8; 32] = reference.finalize().into_bytes().into();
    assert_eq!(mac(), expected);
}

#[test]
fn field_boundaries_cannot_be_shifted() {
    // Moving a byte from the binding into the Hello must change the MAC; the length
    // prefix on the binding is what guarantees it.
    let short_binding = &BINDING[..31];
    let a = compute_mac(KEY, &NONCE, &BINDING, &hello());
    let b = compute_mac(KEY, &NONCE, short_binding, &hello());
    assert_ne!(a, b);
}

#[test]
fn unencodable_hello_still_gets_a_distinct_mac() {
    let long = Hello {
        client_id: "x".repeat(MAX_STR + 1),
        ..hello()
    };
    let longer = Hello {
        client_id: "x".repeat(MAX_STR + 2),
        ..hello()
    };
    let m = compute_mac(KEY, &NONCE, &BINDING, &long);
    assert!(verify_mac(KEY, &NONCE, &BINDING, &long, &m));
    assert!(!verify_mac(KEY, &NONCE, &BINDING, &longer, &m));
    assert_ne!(m, mac());
}

#[test]
fn long_keys_work() {
    let key = [0x42u8; 200];
    let m = compute_mac(&key, &NONCE, &BINDING, &hello());
    assert!(verify_mac(&key, &NONCE, &BINDING, &hello(), &m));
    assert!(!verify_mac(&key[..199], &NONCE, &BINDING, &hello(), &m));
}

#[test]
fn ekm_constants() {
    assert_eq!(EKM_LABEL, b"EXPORTER-tls-tunnel-auth-v1");
    assert_eq!(EKM_LEN, 32);
}
