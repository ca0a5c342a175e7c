//! A CA that issues client certificates (mutual TLS), made with rcgen, its files written
//! into a test's scratch directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A client-certificate CA: `ca` is its certificate (PEM), what a server's `client_ca`
/// names.
pub struct ClientCa {
    /// The CA certificate's PEM file.
    pub ca: PathBuf,
    dir: PathBuf,
    tag: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa").field("ca", &self.ca).finish()
    }
}

/// A client certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ClientCertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// How the certificate names its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertName {
    /// A DNS subject alternative name (and the same common name).
    San,
    /// A common name only, no subject alternative names.
    CommonNameOnly,
}

impl ClientCa {
    /// A new CA whose files go in `dir`, named for `tag`.
    pub fn new(dir: &Path, tag: &str) -> ClientCa {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("test client CA {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = dir.join(format!("client-ca-{tag}.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        ClientCa {
            ca,
            dir: dir.to_owned(),
            tag: tag.to_owned(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for client id `name`, valid for a year.
    pub fn issue(&self, name: &str) -> ClientCertFiles {
        self.issue_with(name, CertName::San, Duration::from_secs(365 * 86_400))
    }

    /// A certificate for `name`, named as `how` says, expiring `valid_for` from now.
    pub fn issue_with(&self, name: &str, how: CertName, valid_for: Duration) -> ClientCertFiles {
        let sans = match how {
            CertName::San => vec![name.to_owned()],
            CertName::CommonNameOnly => Vec::new(),
        };
        let base = format!("client-{}-{name}-{how:?}", self.tag);
        let usage = ExtendedKeyUsagePurpose::ClientAuth;
        self.sign(name, sans, usage, valid_for, &base)
    }

    /// A server certificate for the DNS name `name` (subject alternative name and common
    /// name), valid for a year: the CA doubles as a private web PKI (a local HTTPS service
    /// that `curl --cacert` or rustls trusts through [`ClientCa::ca`]).
    pub fn issue_server(&self, name: &str) -> ClientCertFiles {
        let base = format!("server-{}-{name}", self.tag);
        let usage = ExtendedKeyUsagePurpose::ServerAuth;
        let year = Duration::from_secs(365 * 86_400);
        self.sign(name, vec![name.to_owned()], usage, year, &base)
    }

    fn sign(
        &self,
        name: &str,
        sans: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        valid_for: Duration,
        base: &str,
    ) -> ClientCertFiles {
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = (SystemTime::now() + valid_for).into();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_path = self.dir.join(format!("{base}.pem"));
        let key_path = self.dir.join(format!("{base}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        ClientCertFiles {
            cert: cert_path,
            key: key_path,
        }
    }
}
