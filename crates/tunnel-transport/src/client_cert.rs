//! Mutual TLS: the certificate a client presents (`client_cert` / `client_key`), the CA a
//! server verifies it against (`client_ca`), and what the server learns from a verified one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::tls::provider;
use crate::{ServerIdentity, TransportError};

/// A client's own certificate and key, presented when the server asks for one.
#[derive(Clone)]
pub struct ClientCert {
    pub(crate) key: Arc<CertifiedKey>,
    info: Option<PeerCert>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ClientCert {
    /// Load the certificate chain (end-entity first) and its private key from PEM files.
    /// Errors name the file: unreadable, no certificate, no key, or a key that does not
    /// belong to the certificate.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TransportError> {
        let identity = ServerIdentity::from_pem_files(cert, key)?;
        let info = identity
            .key
            .end_entity_cert()
            .ok()
            .and_then(|der| PeerCert::from_der(der));
        Ok(ClientCert {
            key: identity.key,
            info,
        })
    }

    /// The certificate's name (what the server takes as the client id), subject and expiry,
    /// if it parses.
    pub fn info(&self) -> Option<&PeerCert> {
        self.info.as_ref()
    }
}

/// What a certificate says about its holder: read from a client certificate the server
/// verified against its `client_ca`, or from a client's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The first DNS name of its subject alternative names, else its subject's common name:
    /// the client id it stands for. Empty when it has neither.
    pub name: String,
    /// The subject's distinguished name, as text (`CN=alpha, O=Team A`).
    pub subject: String,
    /// When it expires.
    pub not_after: SystemTime,
}

/// Longest name or subject kept from a certificate: ids are far shorter, and the subject
/// only goes to logs and stats.
const MAX_TEXT: usize = 256;

impl PeerCert {
    /// Read the names and expiry of a DER certificate; `None` if it does not parse.
    pub fn from_der(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok().flatten();
        let dns = san.and_then(|ext| {
            ext.value.general_names.iter().find_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
        });
        let cn = || {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        };
        let name = dns.or_else(cn).unwrap_or_default();
        let secs = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        let subject = cert.subject().to_string();
        Some(PeerCert {
            name: name.chars().take(MAX_TEXT).collect(),
            subject: subject.chars().take(MAX_TEXT).collect(),
            not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        })
    }

    /// The first certificate of a PEM file, read; `None` if there is none or it does not
    /// parse.
    pub fn from_pem_file(path: &Path) -> Option<PeerCert> {
        let first = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
        PeerCert::from_der(&first)
    }

    /// Seconds since the Unix epoch at which it expires.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The server's side of mutual TLS: which CA issues client certificates, and whether a
/// client must present one.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// PEM file of the CA certificates that issue client certificates (`client_ca`).
    pub ca: PathBuf,
    /// Whether TLS itself refuses a client without a certificate. The server engine leaves
    /// this off and refuses such clients in its handshake instead, where it can tell them
    /// which settings to add.
    pub require_at_tls: bool,
}

impl ClientAuth {
    /// Whether the CA file is usable (the error names the file and the problem).
    pub fn check(&self) -> Result<(), TransportError> {
        self.verifier().map(drop)
    }

    /// The rustls verifier: chains to a CA of `ca`, valid now, for client authentication.
    pub(crate) fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TransportError> {
        let roots = load_roots(&self.ca)?;
        let builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()));
        let builder = if self.require_at_tls {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder.build().map_err(|e| TransportError::Pem {
            path: self.ca.clone(),
            reason: format!("cannot verify client certificates with this CA file: {e}"),
        })
    }
}

/// Read a CA bundle; every problem names the file.
pub(crate) fn load_roots(path: &Path) -> Result<RootCertStore, TransportError> {
    let pem_err = |reason: String| TransportError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls::pki_types::pem::Error::Io(io) => {
                pem_err(format!("cannot read the CA file: {io}"))
            }
            other => pem_err(format!("not a valid PEM CA bundle: {other}")),
        })?;
    if certs.is_empty() {
        return Err(pem_err(
            "no certificate found in the CA file (expected \"-----BEGIN CERTIFICATE-----\" \
             blocks)"
                .to_owned(),
        ));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| pem_err(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The alerts a server's TLS sends when it refuses a client certificate: after a TLS 1.3
/// handshake the client only learns of them on its first read.
pub(crate) fn refused_certificate(alert: rustls::AlertDescription) -> Option<String> {
    use rustls::AlertDescription as A;
    let why = match alert {
        A::UnknownCA => "it is not issued by the server's client_ca",
        A::CertificateExpired => "it has expired",
        A::CertificateRequired => "the server requires one and this client has none",
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            "it is not usable for client authentication"
        }
        A::DecryptError => "its key did not sign the handshake",
        _ => return None,
    };
    Some(format!(
        "the server refused this client's TLS certificate ({alert:?}): {why}; check \
         client_cert / client_key against the server's client_ca"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn der(sans: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_first_dns_name_else_the_common_name_is_the_id() {
        let both = PeerCert::from_der(&der(&["edge-1", "edge-2"], Some("other"))).unwrap();
        assert_eq!(both.name, "edge-1");
        assert!(both.subject.contains("CN=other"), "{}", both.subject);
        let cn = PeerCert::from_der(&der(&[], Some("edge-cn"))).unwrap();
        assert_eq!(cn.name, "edge-cn");
        assert!(cn.not_after > SystemTime::UNIX_EPOCH);
        assert_eq!(PeerCert::from_der(b"not a certificate"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_named() {
        let path = std::env::temp_dir().join(format!("cmtls-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "nothing here\n").unwrap();
        let auth = ClientAuth {
            ca: path.clone(),
            require_at_tls: false,
        };
        let err = auth.check().unwrap_err().to_string();
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("no certificate found in the CA file"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    /// A CA and a client certificate for `name` it issued, as PEM files in a fresh directory.
    fn issued(tag: &str, name: &str) -> (PathBuf, PathBuf, PathBuf) {
        use rcgen::{BasicConstraints, ExtendedKeyUsagePurpose, IsCa, Issuer};
        let dir = std::env::temp_dir().join(format!("cmtls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut leaf = CertificateParams::new(vec![name.to_owned()]).unwrap();
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let paths = (dir.join("ca.pem"), dir.join("c.pem"), dir.join("c.key"));
        std::fs::write(&paths.0, ca_pem).unwrap();
        std::fs::write(&paths.1, cert.pem()).unwrap();
        std::fs::write(&paths.2, key.serialize_pem()).unwrap();
        paths
    }

    #[tokio::test]
    async fn the_server_sees_the_verified_certificate_and_no_certificate_is_none() {
        use crate::{ClientTrust, ServerTransport, TlsTransport, Transport};
        let (ca, cert, key) = issued("seen", "edge-9");
        let identity = ServerIdentity::self_signed(&[]).unwrap();
        let auth = ClientAuth {
            ca,
            require_at_tls: false,
        };
        let server = ServerTransport::with_client_auth(&identity, "/t", Some(&auth)).unwrap();
        let trust = ClientTrust::Fingerprint(identity.fingerprint());
        let mine = ClientCert::load(&cert, &key).unwrap();
        assert_eq!(mine.info().unwrap().name, "edge-9");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        for cert in [Some(&mine), None] {
            let client = TlsTransport::client_with_cert("localhost", &trust, cert).unwrap();
            let accepting = async {
                let (tcp, peer) = listener.accept().await.unwrap();
                server.accept(tcp, peer).await.unwrap()
            };
            let (est, conn) = tokio::join!(accepting, client.connect(&addr));
            conn.unwrap();
            let seen = est.peer_cert.map(|c| c.name);
            assert_eq!(seen.as_deref(), cert.map(|_| "edge-9"));
        }
        let _ = std::fs::remove_dir_all(key.parent().unwrap());
    }

    /// A resumed connection (a reconnect, an extra connection) still names the certificate
    /// the first handshake verified: a certificate client logs in on every connection.
    #[tokio::test]
    async fn a_resumed_connection_still_carries_the_verified_certificate() {
        use crate::{read_message, write_message};
        use crate::{ClientTrust, ServerTransport, TlsTransport, Transport};
        use tunnel_proto::{Message, DEFAULT_MAX_FRAME};
        let (ca, cert, key) = issued("resumed", "edge-7");
        let identity = ServerIdentity::self_signed(&[]).unwrap();
        let auth = ClientAuth {
            ca,
            require_at_tls: true,
        };
        let server = ServerTransport::with_client_auth(&identity, "/t", Some(&auth)).unwrap();
        let trust = ClientTrust::Fingerprint(identity.fingerprint());
        let mine = ClientCert::load(&cert, &key).unwrap();
        let client = TlsTransport::client_with_cert("localhost", &trust, Some(&mine)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        for round in 0..3 {
            let accepting = async {
                let (tcp, peer) = listener.accept().await.unwrap();
                server.accept(tcp, peer).await.unwrap()
            };
            let (mut est, conn) = tokio::join!(accepting, client.connect(&addr));
            let mut conn = conn.unwrap();
            assert_eq!(est.resumed, round > 0, "round {round}");
            let seen = est.peer_cert.as_ref().map(|c| c.name.clone());
            assert_eq!(seen.as_deref(), Some("edge-7"), "round {round}");
            // A frame each way: the client reads the server's tickets with it.
            write_message(&mut est.stream, &Message::Ping(1), DEFAULT_MAX_FRAME)
                .await
                .unwrap();
            let got = read_message(&mut conn.stream, DEFAULT_MAX_FRAME).await;
            assert_eq!(got.unwrap(), Some(Message::Ping(1)));
        }
        let _ = std::fs::remove_dir_all(key.parent().unwrap());
    }

    #[test]
    fn a_key_of_another_certificate_is_named() {
        let (_, cert, _) = issued("mismatch-a", "a");
        let (_, _, other_key) = issued("mismatch-b", "b");
        let err = ClientCert::load(&cert, &other_key).unwrap_err().to_string();
        for p in [&cert, &other_key] {
            let _ = std::fs::remove_dir_all(p.parent().unwrap());
        }
        assert!(err.contains("does not belong to the certificate"), "{err}");
    }
}
