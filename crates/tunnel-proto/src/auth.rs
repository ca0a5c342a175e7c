//! HMAC-SHA256 challenge-response, so the shared key never travels.
//!
//! The MAC covers the server's fresh nonce (no replay across connections), the TLS
//! exporter value of this very connection (no relaying the exchange through a
//! man-in-the-middle that terminates TLS itself), and the Hello the server received (the
//! client id and instance cannot be swapped after the fact).
//!
//! ```text
//! mac = HMAC-SHA256(key, "tls-tunnel auth v1" || nonce || u16 len(binding) || binding || Hello body)
//! ```

use hmac::digest::Key;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::message::put_hello_body;
use crate::Hello;

/// RFC 5705 exporter label both sides use to derive the channel binding.
pub const EKM_LABEL: &[u8] = b"EXPORTER-tls-tunnel-auth-v1";

/// Number of exported keying-material bytes used as the binding.
pub const EKM_LEN: usize = 32;

/// Domain separation: this key might one day MAC other things.
const DOMAIN: &[u8] = b"tls-tunnel auth v1";

/// Marks a Hello that has no wire form (`client_id` over `MAX_STR`). A real body starts with
/// `TTUN`, so the two input spaces cannot overlap.
const UNENCODABLE_HELLO: u8 = 0xff;

/// Computes the client's proof for `nonce`.
///
/// `binding` is the exported keying material ([`EKM_LABEL`], [`EKM_LEN`] bytes); it is
/// empty only for transports without our own TLS. `hello` is the Hello exactly as sent
/// (client side) or as received (server side).
#[must_use]
pub fn compute_mac(key: &[u8], nonce: &[u8; 32], binding: &[u8], hello: &Hello) -> [u8; 32] {
    transcript(key, nonce, binding, hello)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a proof in constant time. Inputs are as for [`compute_mac`].
#[must_use = "ignoring the verification result accepts every client"]
pub fn verify_mac(
    key: &[u8],
    nonce: &[u8; 32],
    binding: &[u8],
    hello: &Hello,
    mac: &[u8; 32],
) -> bool {
    transcript(key, nonce, binding, hello)
        .verify_slice(mac)
        .is_ok()
}

pub(crate) fn keyed(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| {
        // Unreachable: HMAC takes keys of any length. Should that ever change, stay
        // key-dependent (as RFC 2104 does for long keys) instead of falling back to a fixed
        // key that anyone could MAC with.
        let mut block = Key::<Hmac<Sha256>>::default();
        for (b, d) in block.iter_mut().zip(Sha256::digest(key)) {
            *b = d;
        }
        <Hmac<Sha256> as Mac>::new(&block)
    })
}

fn transcript(key: &[u8], nonce: &[u8; 32], binding: &[u8], hello: &Hello) -> Hmac<Sha256> {
    let mut mac = keyed(key);
    mac.update(DOMAIN);
    mac.update(nonce);
    // An exporter value is 32 bytes; saturating only matters for absurd inputs, which
    // still cover every binding byte.
    let binding_len = u16::try_from(binding.len()).unwrap_or(u16::MAX);
    mac.update(&binding_len.to_be_bytes());
    mac.update(binding);
    let mut body = Vec::with_capacity(64);
    if put_hello_body(&mut body, hello).is_ok() {
        mac.update(&body);
    } else {
        // Such a Hello can never be sent or received, but the function must still give a
        // well-defined, collision-free answer rather than panic or return a fixed value.
        mac.update(&[UNENCODABLE_HELLO]);
        mac.update(&hello.version.to_be_bytes());
        mac.update(&(hello.client_id.len() as u64).to_be_bytes());
        mac.update(hello.client_id.as_bytes());
        mac.update(&hello.instance);
    }
    mac
}
