//! Real TLS handshakes over loopback TCP with generated certificates.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_proto::{Message, DEFAULT_MAX_FRAME};
use tunnel_transport::{
    generate_self_signed_pem, read_message, write_message, ClientTrust, Established, Fingerprint,
    H2Transport, ServerIdentity, ServerIdentitySource, TlsTransport, Transport, TransportError,
    TransportKind, WsTransport,
};

const DEADLINE: Duration = Duration::from_secs(10);

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tunnel-transport-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

/// Run one handshake between the two transports over loopback TCP.
async fn handshake(
    server: &TlsTransport,
    client: &TlsTransport,
) -> (
    Result<Established, TransportError>,
    Result<Established, TransportError>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accept = async {
        let (tcp, peer) = listener.accept().await.unwrap();
        server.accept(tcp, peer).await
    };
    tokio::time::timeout(DEADLINE, async {
        tokio::join!(accept, client.connect(&addr))
    })
    .await
    .expect("handshake hung")
}

/// Both ends are usable: a frame goes each way.
async fn exchange(mut s: Established, mut c: Established) {
    write_message(&mut c.stream, &Message::Ping(1), DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    let got = read_message(&mut s.stream, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(got, Some(Message::Ping(1)));
    write_message(&mut s.stream, &Message::Pong(1), DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    let got = read_message(&mut c.stream, DEFAULT_MAX_FRAME)
        .await
        .unwrap();
    assert_eq!(got, Some(Message::Pong(1)));
}

fn untrusted_reason(r: Result<Established, TransportError>) -> String {
    match r {
        Err(TransportError::Untrusted { reason }) => reason,
        other => panic!("expected Untrusted, got {other:?}"),
    }
}

#[tokio::test]
async fn handshake_with_a_ca_file_and_pem_identity() {
    let dir = Scratch::new();
    let (cert, key) = generate_self_signed_pem(&names(&["localhost", "127.0.0.1"])).unwrap();
    let cert_path = dir.write("cert.pem", &cert);
    let key_path = dir.write("key.pem", &key);
    let identity = ServerIdentity::load(&ServerIdentitySource::Pem {
        cert: cert_path.clone(),
        key: key_path,
    })
    .unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    for name in ["localhost", "127.0.0.1"] {
        let client = TlsTransport::client(name, &ClientTrust::CaFile(cert_path.clone())).unwrap();
        let (s, c) = handshake(&server, &client).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        assert_eq!(c.transport, TransportKind::Tls);
        assert_eq!(c.transport.to_string(), "tls");
        assert_eq!(s.peer.ip(), c.peer.ip());
        exchange(s, c).await;
    }
}

#[tokio::test]
async fn handshake_with_a_pinned_fingerprint_ignores_the_name() {
    let identity = ServerIdentity::self_signed(&names(&["tunnel.example"])).unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    let pin = identity
        .fingerprint()
        .to_string()
        .parse::<Fingerprint>()
        .unwrap();
    let client = TlsTransport::client("not-the-cert-name", &ClientTrust::Fingerprint(pin)).unwrap();
    let (s, c) = handshake(&server, &client).await;
    exchange(s.unwrap(), c.unwrap()).await;
}

#[tokio::test]
async fn wrong_server_name_is_refused_with_a_clear_error() {
    let dir = Scratch::new();
    let identity = ServerIdentity::self_signed(&names(&["localhost"])).unwrap();
    let ca = dir.write("ca.pem", &identity.cert_pem());
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client("example.com", &ClientTrust::CaFile(ca)).unwrap();
    let (s, c) = handshake(&server, &client).await;
    let reason = untrusted_reason(c);
    // In words: the names it is for, the one asked for, and the setting; no Rust Debug.
    assert!(
        reason.contains("it is for localhost, not example.com"),
        "{reason}"
    );
    assert!(
        reason.contains("set server_name = \"localhost\""),
        "{reason}"
    );
    assert!(!reason.contains("DnsName"), "{reason}");
    assert!(
        matches!(s, Err(TransportError::Handshake(_))),
        "server: {s:?}"
    );
}

/// A CA certificate with its own subject name, unrelated to the server's certificate.
fn unrelated_ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Some Other CA");
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let dir = Scratch::new();
    let identity = ServerIdentity::self_signed(&[]).unwrap();
    let ca = dir.write("other-ca.pem", &unrelated_ca_pem());
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client("localhost", &ClientTrust::CaFile(ca)).unwrap();
    let (s, c) = handshake(&server, &client).await;
    let reason = untrusted_reason(c);
    assert!(reason.contains("unknown issuer"), "{reason}");
    assert!(reason.contains("server_fingerprint"), "{reason}");
    let server_err = s.unwrap_err().to_string();
    assert!(server_err.contains("alert"), "{server_err}");
}

#[tokio::test]
async fn another_self_signed_certificate_as_ca_is_refused_with_a_hint() {
    // Same issuer name as the server's certificate (rcgen's default), different key.
    let dir = Scratch::new();
    let identity = ServerIdentity::self_signed(&[]).unwrap();
    let other = ServerIdentity::self_signed(&[]).unwrap();
    let ca = dir.write("other.pem", &other.cert_pem());
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client("localhost", &ClientTrust::CaFile(ca)).unwrap();
    let (_, c) = handshake(&server, &client).await;
    let reason = untrusted_reason(c);
    assert!(
        reason.contains("ca_cert") && reason.contains("server_fingerprint"),
        "{reason}"
    );
}

#[tokio::test]
async fn fingerprint_mismatch_names_both_fingerprints() {
    let identity = ServerIdentity::self_signed(&[]).unwrap();
    let wrong = Fingerprint([0xab; 32]);
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client("localhost", &ClientTrust::Fingerprint(wrong)).unwrap();
    let (_, c) = handshake(&server, &client).await;
    let reason = untrusted_reason(c);
    assert!(reason.contains("fingerprint mismatch"), "{reason}");
    assert!(reason.contains(&wrong.to_string()), "{reason}");
    assert!(
        reason.contains(&identity.fingerprint().to_string()),
        "{reason}"
    );
}

#[tokio::test]
async fn insecure_mode_accepts_any_certificate() {
    let identity = ServerIdentity::self_signed(&names(&["whatever.invalid"])).unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client("localhost", &ClientTrust::InsecureSkipVerify).unwrap();
    let (s, c) = handshake(&server, &client).await;
    exchange(s.unwrap(), c.unwrap()).await;
}

#[tokio::test]
async fn exported_keying_material_matches_per_connection_and_differs_across_connections() {
    let identity = ServerIdentity::self_signed(&[]).unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client(
        "localhost",
        &ClientTrust::Fingerprint(identity.fingerprint()),
    )
    .unwrap();
    let (s1, c1) = handshake(&server, &client).await;
    let (s2, c2) = handshake(&server, &client).await;
    let (s1, c1, s2, c2) = (
        s1.unwrap().binding.unwrap(),
        c1.unwrap().binding.unwrap(),
        s2.unwrap().binding.unwrap(),
        c2.unwrap().binding.unwrap(),
    );
    assert_eq!(s1, c1);
    assert_eq!(s2, c2);
    assert_ne!(s1, s2);
    assert_ne!(s1, [0u8; 32]);
}

fn pem_error(r: Result<ServerIdentity, TransportError>) -> (PathBuf, String) {
    match r {
        Err(TransportError::Pem { path, reason }) => (path, reason),
        other => panic!("expected a Pem error, got {other:?}"),
    }
}

fn load(cert: &Path, key: &Path) -> Result<ServerIdentity, TransportError> {
    ServerIdentity::load(&ServerIdentitySource::Pem {
        cert: cert.to_owned(),
        key: key.to_owned(),
    })
}

#[test]
fn pem_problems_name_the_file_and_the_problem() {
    let dir = Scratch::new();
    let (cert, key) = generate_self_signed_pem(&[]).unwrap();
    let (_, other_key) = generate_self_signed_pem(&[]).unwrap();
    let cert_path = dir.write("cert.pem", &cert);
    let key_path = dir.write("key.pem", &key);
    let wrong_key = dir.write("wrong-key.pem", &other_key);
    let missing = dir.0.join("missing.pem");
    load(&cert_path, &key_path).unwrap();

    let (p, why) = pem_error(load(&missing, &key_path));
    assert_eq!(p, missing);
    assert!(why.contains("cannot read"), "{why}");

    // A certificate file used as the key: no private key in it.
    let (p, why) = pem_error(load(&cert_path, &cert_path));
    assert_eq!(p, cert_path);
    assert!(why.contains("no private key"), "{why}");

    // A key file used as the certificate: no certificate in it.
    let (p, why) = pem_error(load(&key_path, &key_path));
    assert_eq!(p, key_path);
    assert!(why.contains("no certificate"), "{why}");

    let (p, why) = pem_error(load(&cert_path, &wrong_key));
    assert_eq!(p, wrong_key);
    assert!(why.contains("does not belong"), "{why}");
    let shown = TransportError::Pem {
        path: p,
        reason: why,
    }
    .to_string();
    assert!(shown.contains("wrong-key.pem"), "{shown}");

    let err = TlsTransport::client("localhost", &ClientTrust::CaFile(missing.clone())).unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn wrong_role_is_an_error_not_a_panic() {
    let identity = ServerIdentity::self_signed(&[]).unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    let client = TlsTransport::client("localhost", &ClientTrust::InsecureSkipVerify).unwrap();
    assert!(matches!(
        server.connect("127.0.0.1:1").await,
        Err(TransportError::WrongRole)
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let peer = tcp.local_addr().unwrap();
    assert!(matches!(
        client.accept(tcp, peer).await,
        Err(TransportError::WrongRole)
    ));
}

#[tokio::test]
async fn refused_connection_is_not_a_handshake_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = TlsTransport::client("localhost", &ClientTrust::InsecureSkipVerify).unwrap();
    match client.connect(&addr).await {
        Err(TransportError::Connect { addr: a, .. }) => assert_eq!(a, addr),
        other => panic!("expected Connect error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_tls_server_is_a_handshake_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut hello = [0u8; 5];
        tcp.read_exact(&mut hello).await.unwrap();
        tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await
            .unwrap();
    });
    let client = TlsTransport::client("localhost", &ClientTrust::InsecureSkipVerify).unwrap();
    let r = tokio::time::timeout(DEADLINE, client.connect(&addr))
        .await
        .unwrap();
    match r {
        Err(TransportError::Handshake(why)) => assert!(why.contains("TLS"), "{why}"),
        other => panic!("expected Handshake error, got {other:?}"),
    }
    fake.await.unwrap();
}

#[tokio::test]
async fn a_client_without_our_alpn_is_refused_by_the_server() {
    use std::sync::Arc;
    let identity = ServerIdentity::self_signed(&[]).unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // A plain TLS 1.3 client that trusts the cert but offers no ALPN.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    let ca =
        rustls::pki_types::CertificateDer::from_pem_slice(identity.cert_pem().as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let client = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector.connect(name, tcp).await
    };
    let accept = async {
        let (tcp, peer) = listener.accept().await.unwrap();
        server.accept(tcp, peer).await
    };
    let (s, _c) = tokio::time::timeout(DEADLINE, async { tokio::join!(accept, client) })
        .await
        .unwrap();
    match s {
        Err(TransportError::Handshake(why)) => assert!(why.contains("ALPN"), "{why}"),
        other => panic!("expected Handshake error, got {other:?}"),
    }
}

/// A TLS 1.2-only endpoint for `localhost` (a proxy that stops at TLS 1.2), offering ALPN
/// `h2` and `http/1.1`. Accepts one connection; reports the version and suite it agreed on
/// (`None`: the handshake failed), then hangs up.
async fn tls12_endpoint(
    dir: &Scratch,
) -> (
    String,
    PathBuf,
    tokio::task::JoinHandle<Option<(rustls::ProtocolVersion, rustls::CipherSuite)>>,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = generate_self_signed_pem(&names(&["localhost"])).unwrap();
    let ca = dir.write("tls12.pem", &cert);
    let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let agreed = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(tcp).await.ok()?;
        let conn = tls.get_ref().1;
        Some((
            conn.protocol_version()?,
            conn.negotiated_cipher_suite()?.suite(),
        ))
    });
    (addr, ca, agreed)
}

#[tokio::test]
async fn wss_and_h2_accept_a_tls12_proxy_with_ecdhe_and_aead_and_tls_says_what_to_do() {
    let dir = Scratch::new();
    for kind in ["wss", "h2"] {
        let (addr, ca, agreed) = tls12_endpoint(&dir).await;
        let trust = ClientTrust::CaFile(ca);
        let client: Box<dyn Transport> = match kind {
            "wss" => Box::new(WsTransport::client("localhost", &trust, "/tunnel").unwrap()),
            _ => Box::new(H2Transport::client("localhost", &trust, "/tunnel").unwrap()),
        };
        // The endpoint hangs up after TLS: the upgrade or the HTTP/2 request fails then.
        let _ = tokio::time::timeout(DEADLINE, client.connect(&addr)).await;
        let (version, suite) = agreed.await.unwrap().expect("TLS 1.2 handshake");
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2, "{kind}");
        let suite = format!("{suite:?}");
        assert!(
            suite.starts_with("TLS_ECDHE_") && suite.contains("_GCM_"),
            "{kind}: {suite}"
        );
    }
    let (addr, ca, agreed) = tls12_endpoint(&dir).await;
    let client = TlsTransport::client("localhost", &ClientTrust::CaFile(ca)).unwrap();
    let err = tokio::time::timeout(DEADLINE, client.connect(&addr))
        .await
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("does not speak TLS 1.3 (it offers TLS 1.2 or older)")
            && text.contains("transport = \"wss\""),
        "{text}"
    );
    assert!(agreed.await.unwrap().is_none());
}

/// A client that comes back resumes with a ticket on both ends (no certificate signed again),
/// and each connection still has its own channel binding, the same at both ends.
#[tokio::test]
async fn a_returning_client_resumes_and_each_connection_has_its_own_binding() {
    let identity = ServerIdentity::self_signed(&names(&["tunnel.example"])).unwrap();
    let server = TlsTransport::server(&identity).unwrap();
    let pin: Fingerprint = identity.fingerprint().to_string().parse().unwrap();
    let client = TlsTransport::client("tunnel.example", &ClientTrust::Fingerprint(pin)).unwrap();
    let mut bindings = Vec::new();
    for round in 0..4 {
        let (s, c) = handshake(&server, &client).await;
        let (s, c) = (s.unwrap(), c.unwrap());
        assert_eq!(s.binding, c.binding, "round {round}: the ends disagree");
        // The first handshake is full; the client reads the tickets with the server's frame.
        assert_eq!(
            (s.resumed, c.resumed),
            (round > 0, round > 0),
            "round {round}"
        );
        bindings.push(c.binding.unwrap());
        exchange(s, c).await;
    }
    bindings.sort();
    bindings.dedup();
    assert_eq!(bindings.len(), 4, "a binding was used twice");
}
