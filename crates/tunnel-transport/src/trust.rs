//! How a client decides to trust the server: CA bundle, pinned fingerprint, system roots, or
//! (for development only) nothing at all.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::client_cert::load_roots;
use crate::tls::provider;
use crate::{Fingerprint, TransportError};

/// What the client trusts.
#[derive(Debug, Clone, Default)]
pub enum ClientTrust {
    /// The operating system's trust store (default when nothing is configured).
    #[default]
    SystemRoots,
    /// CA certificates from a PEM bundle.
    CaFile(PathBuf),
    /// Accept exactly the end-entity certificate with this SHA-256, ignoring name, issuer and
    /// expiry. The handshake signature is still verified, so the server must hold the key.
    Fingerprint(Fingerprint),
    /// Accept any certificate. Development only: anyone on the path can impersonate the server.
    InsecureSkipVerify,
}

/// How the client config verifies the server.
pub(crate) enum Verification {
    Roots(RootCertStore),
    Custom(Arc<dyn ServerCertVerifier>),
}

impl ClientTrust {
    pub(crate) fn verification(&self) -> Result<Verification, TransportError> {
        match self {
            ClientTrust::SystemRoots => system_roots().map(Verification::Roots),
            ClientTrust::CaFile(path) => load_roots(path).map(Verification::Roots),
            ClientTrust::Fingerprint(fp) => Ok(Verification::Custom(Arc::new(
                NonPkiVerifier::new(Some(*fp)),
            ))),
            ClientTrust::InsecureSkipVerify => {
                Ok(Verification::Custom(Arc::new(NonPkiVerifier::new(None))))
            }
        }
    }
}

/// Any certificate whose handshake signature holds: for the peer link, where the cluster-key
/// proof, not the certificate, authenticates.
pub(crate) fn any_certificate() -> Arc<dyn ServerCertVerifier> {
    Arc::new(NonPkiVerifier::new(None))
}

fn system_roots() -> Result<RootCertStore, TransportError> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("skipping part of the system trust store: {e}");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!("ignored {ignored} unparsable system root certificates");
    }
    if added == 0 {
        return Err(TransportError::Config(
            "no usable certificates in the system trust store; set ca_cert or \
             server_fingerprint"
                .to_owned(),
        ));
    }
    Ok(roots)
}

/// The pinned certificate did not match. Carried through rustls as `CertificateError::Other`
/// so the handshake error can name both fingerprints.
#[derive(Debug)]
pub(crate) struct FingerprintMismatch {
    pub expected: Fingerprint,
    pub presented: Fingerprint,
}

impl std::fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fingerprint mismatch: expected {}, server presented {} (if the server's \
             certificate changed on purpose, update server_fingerprint)",
            self.expected, self.presented
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Verifier for pinning (`pin = Some`) and insecure mode (`pin = None`): no PKI checks, but the
/// handshake signature is verified with the provider's algorithms either way.
#[derive(Debug)]
struct NonPkiVerifier {
    pin: Option<Fingerprint>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl NonPkiVerifier {
    fn new(pin: Option<Fingerprint>) -> Self {
        Self {
            pin,
            algorithms: provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for NonPkiVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let presented = Fingerprint::of_der(end_entity);
        if presented == expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(FingerprintMismatch {
                    expected,
                    presented,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
