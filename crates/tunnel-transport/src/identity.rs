//! The server's TLS identity: certificate chain and private key, from PEM files or generated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::tls::provider;
use crate::{Fingerprint, TransportError};

/// Where the server identity comes from.
#[derive(Debug, Clone)]
pub enum ServerIdentitySource {
    /// PEM files: the certificate chain (end-entity first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1). Both may be the same file.
    Pem {
        /// Certificate chain file.
        cert: PathBuf,
        /// Private key file.
        key: PathBuf,
    },
    /// A fresh self-signed certificate for these names (DNS names or IP literals), made at
    /// start. Clients must pin its fingerprint (logged by the server) or skip verification.
    SelfSigned {
        /// Subject alternative names; `["localhost"]` if empty.
        names: Vec<String>,
    },
}

/// A loaded and validated certificate chain with its matching private key.
#[derive(Clone)]
pub struct ServerIdentity {
    pub(crate) key: Arc<CertifiedKey>,
    fingerprint: Fingerprint,
}

impl ServerIdentity {
    /// Load and validate an identity. Errors name the file and the problem: missing or
    /// unreadable file, no certificate, no private key, or a key that does not belong to the
    /// certificate.
    pub fn load(src: &ServerIdentitySource) -> Result<Self, TransportError> {
        match src {
            ServerIdentitySource::Pem { cert, key } => Self::from_pem_files(cert, key),
            ServerIdentitySource::SelfSigned { names } => Self::self_signed(names),
        }
    }

    /// Generate a self-signed identity (rcgen, ECDSA P-256) for `names` (`["localhost"]` if
    /// empty).
    pub fn self_signed(names: &[String]) -> Result<Self, TransportError> {
        let (chain, key) = generate(names)?;
        Self::from_parts(chain, key)
            .map_err(|e| TransportError::Config(format!("generated certificate is unusable: {e}")))
    }

    /// SHA-256 of the end-entity certificate: what clients pin with `server_fingerprint`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The end-entity certificate as PEM (usable as a client's CA file for a self-signed
    /// certificate).
    pub fn cert_pem(&self) -> String {
        self.key
            .end_entity_cert()
            .map(|der| to_pem("CERTIFICATE", der))
            .unwrap_or_default()
    }

    pub(crate) fn from_pem_files(
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<Self, TransportError> {
        let pem_err = |path: &Path, reason: String| TransportError::Pem {
            path: path.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert_path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_err(cert_path, describe(e, "certificate")))?;
        if chain.is_empty() {
            return Err(pem_err(
                cert_path,
                "no certificate found (expected a \"-----BEGIN CERTIFICATE-----\" block)"
                    .to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| pem_err(key_path, describe(e, "private key")))?;
        Self::from_parts(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => pem_err(
                key_path,
                format!(
                    "this private key does not belong to the certificate in {}; use the key \
                     the certificate was issued for",
                    cert_path.display()
                ),
            ),
            other => pem_err(
                key_path,
                format!("unusable private key or certificate: {other}"),
            ),
        })
    }

    fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, rustls::Error> {
        let fingerprint = Fingerprint::of_der(chain.first().map_or(&[][..], |c| c.as_ref()));
        // Checks that the key belongs to the end-entity certificate (InconsistentKeys if not).
        let key = CertifiedKey::from_der(chain, key, &provider())?;
        Ok(Self {
            key: Arc::new(key),
            fingerprint,
        })
    }
}

impl fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("fingerprint", &self.fingerprint)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

fn describe(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(io) => format!("cannot read the {what} file: {io}"),
        pem::Error::NoItemsFound => format!(
            "no {what} found in this PEM file (expected a \"-----BEGIN {}-----\" block)",
            if what == "certificate" {
                "CERTIFICATE"
            } else {
                "PRIVATE KEY"
            }
        ),
        other => format!("not a valid PEM {what} file: {other}"),
    }
}

/// Generate a self-signed certificate for `names` (`["localhost"]` if empty): (cert PEM, key
/// PEM). For tests and development setups.
pub fn generate_self_signed_pem(names: &[String]) -> Result<(String, String), TransportError> {
    let (chain, key) = generate(names)?;
    let cert_pem = chain
        .iter()
        .map(|c| to_pem("CERTIFICATE", c))
        .collect::<String>();
    Ok((cert_pem, to_pem("PRIVATE KEY", key.secret_der())))
}

fn generate(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TransportError> {
    let names = if names.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        names.to_vec()
    };
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TransportError::Config(format!("cannot generate a certificate: {e}")))?;
    let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der());
    Ok((vec![ck.cert.der().clone()], key.into()))
}

/// PEM-encode one DER object (RFC 7468: base64 in 64-column lines).
fn to_pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                b64.push(b'=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pem_encoding_round_trips_through_the_pem_parser() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = to_pem("CERTIFICATE", &der);
            let parsed = CertificateDer::from_pem_slice(pem.as_bytes());
            if len == 0 {
                continue; // an empty body is not a meaningful certificate
            }
            assert_eq!(parsed.unwrap().as_ref(), &der[..], "len {len}");
        }
    }

    #[test]
    fn self_signed_identity_reports_the_fingerprint_of_its_pem() {
        let id = ServerIdentity::self_signed(&[]).unwrap();
        let der = CertificateDer::from_pem_slice(id.cert_pem().as_bytes()).unwrap();
        assert_eq!(Fingerprint::of_der(&der), id.fingerprint());
        assert_ne!(
            ServerIdentity::self_signed(&[]).unwrap().fingerprint(),
            id.fingerprint(),
            "each generated identity is new"
        );
    }
}
