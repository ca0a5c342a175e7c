//! SHA-256 certificate fingerprints: what a client pins and what the server logs at start.

use std::fmt;
use std::str::FromStr;

use rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;

use crate::TransportError;

/// SHA-256 of a certificate's DER encoding.
///
/// Displays as `sha256:` + 64 lowercase hex digits. Parses that form, bare hex, uppercase hex
/// and colon-separated pairs as `openssl x509 -fingerprint -sha256` prints them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(sha256(der))
    }
}

/// SHA-256 from the aws-lc-rs provider we already use for TLS (no extra hashing crate).
fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(suite) = TLS13_AES_128_GCM_SHA256.tls13() {
        out.copy_from_slice(suite.common.hash_provider.hash(data).as_ref());
    }
    out
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            TransportError::Config(format!(
                "invalid certificate fingerprint {s:?}: expected \"sha256:\" followed by 64 hex \
                 digits (colon-separated pairs as printed by `openssl x509 -fingerprint -sha256` \
                 are accepted too)"
            ))
        };
        let t = s.trim();
        // openssl prints "sha256 Fingerprint=AB:CD:...".
        let t = t.rsplit_once('=').map_or(t, |(_, hex)| hex);
        let t = match t.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
            _ => t,
        };
        let hex: Vec<u8> = t.bytes().filter(|&c| c != b':').collect();
        if hex.len() != 64 || (t.contains(':') && !is_paired(t)) {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = (nibble(pair[0]).ok_or_else(bad)? << 4) | nibble(pair[1]).ok_or_else(bad)?;
        }
        Ok(Self(out))
    }
}

/// Colons, if any, must separate two-digit groups ("AB:CD", not "A:BCD").
fn is_paired(s: &str) -> bool {
    s.split(':').all(|group| group.len() == 2)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            Fingerprint::of_der(b"abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn format_and_parse_round_trip_in_every_accepted_form() {
        let fp = Fingerprint(std::array::from_fn(|i| (i * 37 + 5) as u8));
        let canonical = fp.to_string();
        assert_eq!(canonical.len(), 7 + 64);
        assert_eq!(format!("{fp:?}"), canonical);
        let bare = &canonical[7..];
        let colons: Vec<String> = fp.0.iter().map(|b| format!("{b:02X}")).collect();
        let colons = colons.join(":");
        for form in [
            canonical.clone(),
            canonical.to_uppercase(),
            bare.to_owned(),
            bare.to_uppercase(),
            colons.clone(),
            format!("sha256:{colons}"),
            format!("sha256 Fingerprint={colons}"),
            format!("  {canonical}\n"),
        ] {
            assert_eq!(form.parse::<Fingerprint>().unwrap(), fp, "{form}");
        }
    }

    #[test]
    fn malformed_fingerprints_say_what_is_expected() {
        for bad in [
            "",
            "sha256:",
            "sha256:abcd",
            &"g".repeat(64),
            &"a".repeat(66),
            &format!("A:{}", "B".repeat(63)),
            &format!("md5:{}", "a".repeat(64)),
        ] {
            let err = bad.parse::<Fingerprint>().unwrap_err();
            assert!(err.to_string().contains("64 hex digits"), "{bad}: {err}");
        }
    }
}
