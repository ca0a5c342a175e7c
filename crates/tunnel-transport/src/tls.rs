//! Raw TLS 1.3 (rustls with aws-lc-rs) over TCP, and the TLS client half every transport
//! shares.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::sign::SingleCertAndKey;
use rustls::{CipherSuite, ClientConfig, ServerConfig, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::read_ahead::ReadAhead;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::client_cert::{ClientAuth, ClientCert, PeerCert};
use crate::tls_error::handshake_error;
use crate::trust::Verification;
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

/// The TLS 1.2 suites a client accepts from a TLS-terminating proxy: ECDHE key exchange
/// (forward secrecy) with an AEAD cipher. They are all the TLS 1.2 suites rustls has today;
/// naming them keeps it so if rustls ever adds others.
const TLS12_SUITES: [CipherSuite; 6] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Which TLS versions a client accepts: it depends on who may answer its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Versions {
    /// TLS 1.3 only: the peer is the tls-tunnel server itself (transport `tls`) or a local
    /// service. `advice` tells the user what to do when the peer offers less.
    Tls13Only {
        /// Shown after "the peer does not speak TLS 1.3".
        advice: &'static str,
    },
    /// TLS 1.3, or TLS 1.2 with [`TLS12_SUITES`]: the peer may be a TLS-terminating proxy in
    /// front of the server (`h2`, `wss`), and many still stop at TLS 1.2. The server's own
    /// port speaks TLS 1.3 only, so a direct connection is always TLS 1.3.
    Tls12Too,
}

impl Versions {
    /// For transport `tls`, whose peer must be the tls-tunnel server.
    pub(crate) const TUNNEL: Versions = Versions::Tls13Only {
        advice: "transport = \"tls\" speaks TLS 1.3 only, as the tls-tunnel server does, so \
                 something else answered (a TLS-terminating proxy?). Through such a proxy use \
                 transport = \"wss\", which accepts TLS 1.2 from proxies; otherwise check \
                 server_addr",
    };

    fn protocols(self) -> &'static [&'static SupportedProtocolVersion] {
        static TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static TLS13_12: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        match self {
            Versions::Tls13Only { .. } => &TLS13,
            Versions::Tls12Too => &TLS13_12,
        }
    }
}

/// [`provider`] for a client accepting `versions`: TLS 1.2 suites outside [`TLS12_SUITES`]
/// are dropped.
fn client_provider(versions: Versions) -> CryptoProvider {
    let mut p = provider();
    p.cipher_suites.retain(|s| {
        s.tls13().is_some() || (versions == Versions::Tls12Too && TLS12_SUITES.contains(&s.suite()))
    });
    p
}

/// [`provider`] for a TLS 1.3-only client (the peer link).
pub(crate) fn client_provider_tls13() -> CryptoProvider {
    client_provider(Versions::TUNNEL)
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

/// Tickets the server sends after each handshake: a TLS 1.3 ticket is used once, and a
/// client with `connections = N` dials its extra connections at the same moment.
const TICKETS_PER_HANDSHAKE: usize = 4;
/// Tickets (by server name) a client keeps for its next connections.
const CLIENT_SESSION_CACHE: usize = 32;

/// A rustls server config: TLS 1.3 only, no client certificates, these ALPN ids.
pub(crate) fn server_config(
    identity: &ServerIdentity,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TransportError> {
    server_config_with(identity, alpn, None)
}

/// [`server_config`], asking for client certificates as `client_auth` says.
pub(crate) fn server_config_with(
    identity: &ServerIdentity,
    alpn: &[&[u8]],
    client_auth: Option<&ClientAuth>,
) -> Result<ServerConfig, TransportError> {
    let builder = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Config(e.to_string()))?;
    let builder = match client_auth {
        Some(auth) => builder.with_client_cert_verifier(auth.verifier()?),
        None => builder.with_no_client_auth(),
    };
    let mut cfg =
        builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(identity.key.clone())));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Tickets let a client that comes back (a reconnect, each extra connection of
    // `connections`, a login storm after a network blip) skip the certificate signature, the
    // costliest part of a handshake. Stateless: the server keeps nothing per ticket, and the
    // key lives in this process only (a restart invalidates every ticket). The tunnel's
    // channel binding stays sound: the exported keying material of a resumed TLS 1.3
    // connection is derived from that connection's own handshake, never reused.
    cfg.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()
        .map_err(|e| TransportError::Config(format!("TLS session tickets: {e}")))?;
    cfg.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
    Ok(cfg)
}

/// The client half of TLS shared by every transport that runs over it (tls, h2, wss): trust,
/// server name, one ALPN id, accepted versions, and the exported keying material.
pub(crate) struct TlsClient {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) versions: Versions,
}

impl TlsClient {
    /// `server_name` is sent as SNI (unless it is an IP literal) and checked against the
    /// certificate when trusting by CA. `resume`: keep the server's TLS 1.3 tickets and
    /// resume with them (never TLS 1.2 sessions: a resumed TLS 1.2 session's exporter is not
    /// a sound channel binding without extended master secret).
    pub(crate) fn new(
        server_name: &str,
        trust: &ClientTrust,
        alpn: &[u8],
        versions: Versions,
        cert: Option<&ClientCert>,
        resume: bool,
    ) -> Result<Self, TransportError> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            TransportError::Config(format!(
                "server_name {server_name:?} is neither a DNS name nor an IP address"
            ))
        })?;
        let builder = ClientConfig::builder_with_provider(Arc::new(client_provider(versions)))
            .with_protocol_versions(versions.protocols())
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let builder = match trust.verification()? {
            Verification::Roots(roots) => builder.with_root_certificates(roots),
            Verification::Custom(v) => builder.dangerous().with_custom_certificate_verifier(v),
        };
        let mut cfg = match cert {
            Some(c) => {
                builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(c.key.clone())))
            }
            None => builder.with_no_client_auth(),
        };
        if matches!(trust, ClientTrust::InsecureSkipVerify) {
            tracing::warn!(
                "TLS certificate verification is DISABLED (insecure_skip_verify): anyone on the \
                 network path can impersonate the server and read the tunnel. Use ca_cert or \
                 server_fingerprint instead."
            );
        }
        cfg.alpn_protocols = vec![alpn.to_vec()];
        cfg.resumption = if resume {
            rustls::client::Resumption::in_memory_sessions(CLIENT_SESSION_CACHE)
                .tls12_resumption(rustls::client::Tls12Resumption::Disabled)
        } else {
            rustls::client::Resumption::disabled()
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(cfg)),
            server_name: name,
            versions,
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
            .map_err(|e| handshake_error(e, Some(self)))?;
        let conn = tls.get_ref().1;
        tracing::debug!(%peer, resumed = resumed(conn), "TLS handshake done");
        let binding = binding(conn)?;
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

    /// Client role: TLS 1.3 only (the peer must be the tls-tunnel server). `server_name` is
    /// sent as SNI (unless it is an IP literal) and checked against the certificate when
    /// trusting by CA.
    pub fn client(server_name: &str, trust: &ClientTrust) -> Result<Self, TransportError> {
        Self::client_with_cert(server_name, trust, None)
    }

    /// [`TlsTransport::client`] presenting `cert` when the server asks for one.
    pub fn client_with_cert(
        server_name: &str,
        trust: &ClientTrust,
        cert: Option<&ClientCert>,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            role: Role::Client(TlsClient::new(
                server_name,
                trust,
                ALPN_TUNNEL,
                Versions::TUNNEL,
                cert,
                true,
            )?),
        })
    }

    async fn connect_impl(&self, addr: &str) -> Result<Established, TransportError> {
        let Role::Client(client) = &self.role else {
            return Err(TransportError::WrongRole);
        };
        let (tls, peer, binding) = client.connect(addr).await?;
        check_alpn(tls.get_ref().1.alpn_protocol(), "the server did not select")?;
        let again = resumed(tls.get_ref().1);
        Ok(established(Box::new(tls), peer, binding).with_resumed(again))
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
        let cert = peer_cert(conn);
        let again = resumed(conn);
        Ok(established(Box::new(tls), peer, binding)
            .with_peer_cert(cert)
            .with_resumed(again))
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
        peer_cert: None,
        resumed: false,
    }
}

/// Whether the handshake of `conn` resumed an earlier session with a ticket.
pub(crate) fn resumed<D>(conn: &rustls::ConnectionCommon<D>) -> bool {
    conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

/// What the client's verified certificate says, if it presented one (a server that asks
/// for certificates only completes the handshake with one that its verifier accepted).
pub(crate) fn peer_cert(conn: &rustls::ServerConnection) -> Option<PeerCert> {
    let der = conn.peer_certificates()?.first()?;
    PeerCert::from_der(der)
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

    #[test]
    fn tls12_is_offered_to_proxies_only_and_only_with_ecdhe_and_aead() {
        use super::{client_provider, Versions};
        let tls12 = |v: Versions| -> Vec<String> {
            client_provider(v)
                .cipher_suites
                .iter()
                .filter(|s| s.tls13().is_none())
                .map(|s| format!("{:?}", s.suite()))
                .collect()
        };
        assert!(tls12(Versions::TUNNEL).is_empty());
        let suites = tls12(Versions::Tls12Too);
        assert_eq!(suites.len(), 6, "{suites:?}");
        for s in &suites {
            assert!(s.starts_with("TLS_ECDHE_"), "{s}");
            assert!(
                s.contains("_GCM_") || s.contains("_CHACHA20_POLY1305_"),
                "{s}"
            );
        }
        assert_eq!(Versions::TUNNEL.protocols().len(), 1);
        assert_eq!(Versions::Tls12Too.protocols().len(), 2);
    }
}
