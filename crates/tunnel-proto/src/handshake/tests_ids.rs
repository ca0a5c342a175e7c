//! Proven client ids: the key that answers must be a key of the id the Hello named, with the
//! two machines talking in memory through real frames.
#![allow(clippy::unwrap_used, clippy::panic)]

use bytes::BytesMut;

use super::*;
use crate::{encode, Hello, RejectCode, PROTOCOL_VERSION};

const EKM: [u8; 32] = [0x24; 32];
const SHARED: &[u8] = b"the shared key of the server";

fn client(id: &str, key: &[u8]) -> ClientHandshake {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        client_id: id.to_owned(),
        instance: [3; 16],
    };
    ClientHandshake::new(hello, key, ClientBinding::tls(Some(EKM)))
}

fn deliver(msg: &Message, to: &mut impl Handshake) {
    let mut wire = BytesMut::new();
    encode(msg, HANDSHAKE_MAX_FRAME, &mut wire).unwrap();
    to.receive(&mut wire);
}

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

/// The server's keys by id, as a clients file would give them: `alpha` rotating from
/// `alpha-old` to `alpha-new`, `beta` with one key.
fn keys_of(id: &str, shared: bool) -> IdKeys {
    let own: Vec<Vec<u8>> = match id {
        "alpha" => vec![b"alpha-old".to_vec(), b"alpha-new".to_vec()],
        "beta" => vec![b"beta-key".to_vec()],
        _ => Vec::new(),
    };
    IdKeys {
        own,
        shared: shared.then(|| SHARED.to_vec()),
    }
}

/// One login of `id` with `key`; the machine learns the id from the Hello and is given
/// that id's keys.
fn login(id: &str, key: &[u8], shared: bool) -> (Checked, ClientHandshake, ServerHandshake) {
    let mut c = client(id, key);
    let mut s = ServerHandshake::new(Vec::new(), [1; 32], &EKM);
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Authorize)));
    let named = s.hello().unwrap().client_id.clone();
    let checked = s.authorize_id(Ok(()), &keys_of(&named, shared));
    pump(&mut c, &mut s);
    (checked, c, s)
}

#[test]
fn either_key_of_a_rotating_id_answers() {
    for (key, index) in [(&b"alpha-old"[..], 0), (&b"alpha-new"[..], 1)] {
        let (checked, _, mut s) = login("alpha", key, true);
        assert_eq!(checked, Checked::Right(Credential::Own { index }));
        assert_eq!(s.credential(), Some(Credential::Own { index }));
        assert!(
            matches!(s.poll(), Some(Ok(ServerEvent::Authenticated(h))) if h.client_id == "alpha")
        );
    }
}

#[test]
fn another_ids_key_is_a_wrong_key() {
    // beta's own, right key, but claiming to be alpha.
    let (checked, mut c, mut s) = login("alpha", b"beta-key", true);
    assert_eq!(checked, Checked::Wrong);
    assert!(matches!(s.poll(), Some(Err(HandshakeError::WrongKey))));
    assert!(s.credential().is_none());
    match c.poll() {
        Some(Err(HandshakeError::Rejected { code, .. })) => assert_eq!(code, RejectCode::Auth),
        other => panic!("expected an auth rejection, got {other:?}"),
    }
}

#[test]
fn the_shared_key_logs_in_unlisted_ids_only() {
    let (checked, _, _) = login("gamma", SHARED, true);
    assert_eq!(checked, Checked::Right(Credential::Shared));

    let (checked, mut c, mut s) = login("beta", SHARED, true);
    assert_eq!(checked, Checked::SharedForListedId);
    assert!(
        matches!(s.poll(), Some(Err(HandshakeError::SharedKeyForOwnId { id })) if id == "beta")
    );
    match c.poll() {
        Some(Err(HandshakeError::Rejected { code, reason })) => {
            assert_eq!(code, RejectCode::Auth);
            assert!(
                reason.contains("\"beta\"") && reason.contains("clients_file"),
                "{reason}"
            );
        }
        other => panic!("expected a rejection naming the id, got {other:?}"),
    }
}

#[test]
fn without_a_shared_key_an_unlisted_id_cannot_log_in() {
    let (checked, _, _) = login("gamma", SHARED, false);
    assert_eq!(checked, Checked::Wrong);
    let (checked, _, _) = login("beta", b"beta-key", false);
    assert_eq!(checked, Checked::Right(Credential::Own { index: 0 }));
}

#[test]
fn a_throttled_proof_is_not_checked() {
    let mut c = client("alpha", b"alpha-new");
    let mut s = ServerHandshake::new(Vec::new(), [1; 32], &EKM);
    pump(&mut c, &mut s);
    assert_eq!(s.poll(), Some(Ok(ServerEvent::Authorize)));
    let checked = s.authorize_id(Err(Throttle::Source), &keys_of("alpha", true));
    assert_eq!(checked, Checked::Unchecked);
    assert!(matches!(s.poll(), Some(Err(HandshakeError::Throttled(_)))));
}
