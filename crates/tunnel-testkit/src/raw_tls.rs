//! Hand-written TLS peers: one that speaks the tunnel protocol directly, for what a real
//! client never sends, and one that plays a browser or a scanner.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use tunnel_proto::{AuthResponse, Challenge, Hello, Message};

/// A TLS connection to the server from `source` (any 127.x address), trusting `ca_pem`,
/// offering the tunnel's ALPN; returns the stream and its exported keying material.
pub async fn raw_tls(
    server: SocketAddr,
    source: IpAddr,
    ca_pem: &str,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<TcpStream>,
    [u8; tunnel_proto::EKM_LEN],
)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![tunnel_transport::ALPN_TUNNEL.to_vec()];
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    let tcp = sock.connect(server).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    let binding = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], tunnel_proto::EKM_LABEL, None)
        .map_err(std::io::Error::other)?;
    Ok((tls, binding))
}

/// The answer of client `hello` to `challenge` with `key`: the proof, bound to the TLS
/// session (`binding`, from [`raw_tls`]) when the server asks for it.
pub fn answer(challenge: &Challenge, key: &[u8], binding: &[u8], hello: &Hello) -> Message {
    let binding: &[u8] = if challenge.bound { binding } else { &[] };
    let mac = tunnel_proto::compute_mac(key, &challenge.nonce, binding, hello);
    Message::AuthResponse(AuthResponse { mac })
}

/// The first message of client `id` (this version, a fixed instance).
pub fn hello(id: &str) -> Hello {
    Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: id.to_string(),
        instance: [7; 16],
    }
}

/// TLS to `addr` offering `alpn` (nothing if empty), trusting any certificate: we play a
/// browser or a scanner here, not a client.
pub async fn stranger_tls(
    addr: SocketAddr,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    #[derive(Debug)]
    struct AnyCert(rustls::crypto::WebPkiSupportedAlgorithms);
    impl rustls::client::danger::ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.supported_schemes()
        }
    }
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let verifier = Arc::new(AnyCert(provider.signature_verification_algorithms));
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, TcpStream::connect(addr).await.unwrap())
        .await
        .unwrap()
}
