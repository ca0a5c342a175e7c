//! The two proofs of the peer handshake.
//!
//! ```text
//! mac = HMAC-SHA256(cluster_key, "tls-tunnel peer v1 " || role || 0x00
//!                   || nonce_dialer || nonce_acceptor || u16 len(binding) || binding
//!                   || u16 len(dialer_id) || dialer_id || u16 len(acceptor_id) || acceptor_id)
//! ```
//!
//! `role` is `dialer` or `acceptor`, so one side's proof can never be reflected back as the
//! other's. The prefix differs from the client proof's `"tls-tunnel auth v1"` in its first
//! bytes, so even with a cluster key equal to an auth key no client proof verifies as a peer
//! proof, nor the other way round.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Domain separation from the client proof of [`crate::auth`].
const DOMAIN: &[u8] = b"tls-tunnel peer v1 ";

/// Which side computes the proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server that opened the connection.
    Dialer,
    /// The server that accepted it on `peer_bind`.
    Acceptor,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Dialer => b"dialer",
            Role::Acceptor => b"acceptor",
        }
    }
}

/// What both proofs cover, as each side sees it.
#[derive(Debug, Clone, Copy)]
pub struct Transcript<'a> {
    /// The dialer's fresh nonce.
    pub dialer_nonce: &'a [u8; 32],
    /// The acceptor's fresh nonce.
    pub acceptor_nonce: &'a [u8; 32],
    /// The TLS exporter value of this connection.
    pub binding: &'a [u8],
    /// The dialer's server id, as sent.
    pub dialer_id: &'a str,
    /// The acceptor's server id, as sent.
    pub acceptor_id: &'a str,
}

/// The proof `role` sends.
#[must_use]
pub fn compute(key: &[u8], role: Role, t: &Transcript<'_>) -> [u8; 32] {
    mac(key, role, t).finalize().into_bytes().into()
}

/// Checks `role`'s proof in constant time.
#[must_use = "ignoring the verification result accepts every peer"]
pub fn verify(key: &[u8], role: Role, t: &Transcript<'_>, proof: &[u8; 32]) -> bool {
    mac(key, role, t).verify_slice(proof).is_ok()
}

fn mac(key: &[u8], role: Role, t: &Transcript<'_>) -> Hmac<Sha256> {
    let mut m = crate::auth::keyed(key);
    m.update(DOMAIN);
    m.update(role.label());
    m.update(&[0]);
    m.update(t.dialer_nonce);
    m.update(t.acceptor_nonce);
    for field in [t.binding, t.dialer_id.as_bytes(), t.acceptor_id.as_bytes()] {
        // Every field is bounded far below 64 KiB (32 bytes, MAX_STR); saturating only
        // matters for absurd inputs, which still cover every byte.
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        m.update(&len.to_be_bytes());
        m.update(field);
    }
    m
}
