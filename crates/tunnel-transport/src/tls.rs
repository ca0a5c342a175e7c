//! Raw TLS 1.3 (rustls with aws-lc-rs) over TCP.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, ClientConfig, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::read_ahead::ReadAhead;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::trust::{FingerprintMismatch, Verification};
use crate::{
    tune_tcp, ClientTrust, Established, ServerIdentity, Transport, TransportError, TransportKind,
    ALPN_TUNNEL,
};

const _: () = assert!(
    tunnel_proto::EKM_LEN == 32,
    "Established::binding is 32 bytes"
);

/// The crypto provider, always passed explicitly: `ServerConfig::builder()` would panic if
/// another crate in the build enabled ring as well.
///
/// AES-128-GCM goes first (rustls lists AES-256-GCM first, and a rustls server follows the
/// client's order, so two of ours would settle on AES-256). Both are TLS 1.3 AEADs that no
/// attack comes near; AES-128 runs 10 rounds per block to AES-256's 14, and encryption is the
/// largest single cost of the tunnel's data path: callgrind counts 7.9 % fewer instructions
/// per MiB through the whole path (benches/RESULTS.md). Browsers make the same choice. The
/// other suites stay on offer for peers that want them.
pub(crate) fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    let fast = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256;
    p.cipher_suites.retain(|s| s.suite() != fast.suite());
    p.cipher_suites.insert(0, fast);
    p
}

/// Fill `buf` with cryptographically secure random bytes from the aws-lc-rs provider (for
/// nonces and instance ids; keeps the engines free of another randomness crate).
pub fn fill_random(buf: &mut [u8]) -> Result<(), TransportError> {
    provider().secure_random.fill(buf).map_err(|_| {
        TransportError::Io(io::Error::other(
            "the system random number generator failed; check the OS entropy source",
        ))
    })
}

/// TLS transport for one role.
pub struct TlsTransport {
    role: Role,
}

enum Role {
    Server(TlsAcceptor),
    Client(TlsClient),
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.role {
            Role::Server(_) => f.write_str("TlsTransport(server)"),
            Role::Client(c) => write!(f, "TlsTransport(client, server_name={:?})", c.server_name),
        }
    }
}

/// A rustls server config: TLS 1.3 only, no client certificates, these ALPN ids.
pub(crate) fn server_config(
    identity: &ServerIdentity,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TransportError> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.key.clone())));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // One long-lived connection per client: resumption tickets would only cost bytes.
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// The client half of TLS shared by every transport that runs over it (tls, h2, wss): trust,
/// server name, one ALPN id, and the exported keying material of the session.
pub(crate) struct TlsClient {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl TlsClient {
    /// `server_name` is sent as SNI (unless it is an IP literal) and checked against the
    /// certificate when trusting by CA.
    pub(crate) fn new(
        server_name: &str,
        trust: &ClientTrust,
        alpn: &[u8],
    ) -> Result<Self, TransportError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            TransportError::Config(format!(
                "server_name {server_name:?} is neither a DNS name nor an IP address"
            ))
        })?;
        let builder = ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let mut cfg = match trust.verification()? {
            Verification::Roots(roots) => builder.with_root_certificates(roots),
            Verification::Custom(v) => builder.dangerous().with_custom_certificate_verifier(v),
        }
        .with_no_client_auth();
        if matches!(trust, ClientTrust::InsecureSkipVerify) {
            tracing::warn!(
                "TLS certificate verification is DISABLED (insecure_skip_verify): anyone on the \
                 network path can impersonate the server and read the tunnel. Use ca_cert or \
                 server_fingerprint instead."
            );
        }
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(cfg)),
            server_name: name,
        })
    }

    /// Dial `addr`, tune the socket, run the handshake. Returns the stream, the peer address
    /// and the channel binding; the caller checks the negotiated ALPN.
    pub(crate) async fn connect(
        &self,
        addr: &str,
    ) -> Result<(TlsStream<ReadAhead<TcpStream>>, SocketAddr, [u8; 32]), TransportError> {
        let tcp = crate::socket::dial(addr).await?;
        let peer = tcp.peer_addr()?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), ReadAhead::new(tcp))
            .await
            .map_err(|e| handshake_error(e, Some(&self.server_name)))?;
        let binding = binding(tls.get_ref().1)?;
        Ok((tls, peer, binding))
    }
}

impl TlsTransport {
    /// Server role: TLS 1.3 only, ALPN `tls-tunnel/1` only, no client certificates. (The
    /// engine's port serves every transport: see [`crate::ServerTransport`].)
    pub fn server(identity: &ServerIdentity) -> Result<Self, TransportError> {
        let cfg = server_config(identity, &[ALPN_TUNNEL])?;
        Ok(Self {
            role: Role::Server(TlsAcceptor::from(Arc::new(cfg))),
        })
    }

    /// Client role. `server_name` is sent as SNI (unless it is an IP literal) and checked
    /// against the certificate when trusting by CA.
    pub fn client(server_name: &str, trust: &ClientTrust) -> Result<Self, TransportError> {
        Ok(Self {
            role: Role::Client(TlsClient::new(server_name, trust, ALPN_TUNNEL)?),
        })
    }

    async fn connect_impl(&self, addr: &str) -> Result<Established, TransportError> {
        let Role::Client(client) = &self.role else {
            return Err(TransportError::WrongRole);
        };
        let (tls, peer, binding) = client.connect(addr).await?;
        check_alpn(tls.get_ref().1.alpn_protocol(), "the server did not select")?;
        Ok(established(Box::new(tls), peer, binding))
    }

    async fn accept_impl(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<Established, TransportError> {
        let Role::Server(acceptor) = &self.role else {
            return Err(TransportError::WrongRole);
        };
        tune_tcp(&tcp);
        let tls = acceptor
            .accept(ReadAhead::new(tcp))
            .await
            .map_err(|e| handshake_error(e, None))?;
        let (_, conn) = tls.get_ref();
        check_alpn(conn.alpn_protocol(), "the client did not offer")?;
        let binding = binding(conn)?;
        Ok(established(Box::new(tls), peer, binding))
    }
}

impl Transport for TlsTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Tls
    }

    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Established, TransportError>> {
        self.connect_impl(addr).boxed()
    }

    fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Established, TransportError>> {
        self.accept_impl(tcp, peer).boxed()
    }
}

pub(crate) fn established(
    stream: crate::BoxedStream,
    peer: SocketAddr,
    binding: [u8; 32],
) -> Established {
    Established {
        stream,
        peer,
        transport: TransportKind::Tls,
        binding: Some(binding),
    }
}

fn check_alpn(negotiated: Option<&[u8]>, who: &str) -> Result<(), TransportError> {
    if negotiated == Some(ALPN_TUNNEL) {
        return Ok(());
    }
    Err(TransportError::Handshake(format!(
        "{who} ALPN \"tls-tunnel/1\": the peer is not a tls-tunnel endpoint (or an \
         incompatible version); check the address and port"
    )))
}

pub(crate) fn binding<D>(conn: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], TransportError> {
    conn.export_keying_material([0u8; 32], tunnel_proto::EKM_LABEL, None)
        .map_err(|e| TransportError::Handshake(format!("cannot export keying material: {e}")))
}

/// Turn what tokio-rustls reports into an error the user can act on. `server_name` is set on
/// the client side.
pub(crate) fn handshake_error(
    e: io::Error,
    server_name: Option<&ServerName<'static>>,
) -> TransportError {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        let reason = match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
                "the peer closed the connection during the handshake ({e}); is this the \
                 tunnel port? the peer's log may say why it refused"
            ),
            _ => format!("{e}"),
        };
        return TransportError::Handshake(reason);
    };
    let untrusted = |reason: String| TransportError::Untrusted { reason };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => untrusted(
                "unknown issuer: set ca_cert or server_fingerprint (the server logs its \
                 fingerprint at start)"
                    .to_owned(),
            ),
            CertificateError::BadSignature => untrusted(
                "the certificate is not signed by the configured CA (another certificate with \
                 the same issuer name?): set ca_cert to the CA that issued it, or \
                 server_fingerprint (the server logs its fingerprint at start)"
                    .to_owned(),
            ),
            CertificateError::NotValidForName => untrusted(format!(
                "certificate is not valid for name {} (set server_name)",
                show_name(server_name)
            )),
            CertificateError::NotValidForNameContext { presented, .. } => untrusted(format!(
                "certificate is not valid for name {} (it is valid for {}; set server_name)",
                show_name(server_name),
                presented.join(", ")
            )),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => untrusted(
                format!("{cert}: renew the server certificate (or check this machine's clock)"),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                untrusted(format!("{cert}: check this machine's clock"))
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<FingerprintMismatch>() {
                Some(mismatch) => untrusted(mismatch.to_string()),
                None => untrusted(other.to_string()),
            },
            other => untrusted(format!("{other}")),
        },
        rustls::Error::AlertReceived(alert) => TransportError::Handshake(format!(
            "the peer aborted the handshake with alert {alert:?}; its log says why (often: it \
             does not trust our certificate or speaks another protocol version)"
        )),
        rustls::Error::NoApplicationProtocol => TransportError::Handshake(
            "no common ALPN protocol: the peer is not a tls-tunnel endpoint or runs an \
             incompatible version"
                .to_owned(),
        ),
        rustls::Error::PeerIncompatible(why) => TransportError::Handshake(format!(
            "the peer is incompatible ({why:?}); tls-tunnel requires TLS 1.3"
        )),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => {
            TransportError::Handshake(format!(
                "the peer does not speak TLS as expected ({tls}); is this the tunnel port?"
            ))
        }
        other => TransportError::Handshake(other.to_string()),
    }
}

fn show_name(name: Option<&ServerName<'static>>) -> String {
    name.map_or_else(|| "?".to_owned(), |n| n.to_str().into_owned())
}

#[cfg(test)]
mod tests {
    use rustls::CipherSuite;

    #[test]
    fn aes_128_gcm_is_offered_first_and_nothing_is_dropped() {
        let ours: Vec<CipherSuite> = super::provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut stock: Vec<CipherSuite> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours.first(), Some(&CipherSuite::TLS13_AES_128_GCM_SHA256));
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        stock.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, stock);
    }
}
