//! TLS for the server-to-server peer link: TLS 1.3 with ALPN `tls-tunnel-peer/1` only, on
//! both ends, so neither a client nor a peer can finish TLS at the other's port.
//!
//! The certificate does not authenticate a peer: the mutual cluster-key proof of
//! `tunnel_proto::peer`, bound to this connection's exported keying material, does. A dialer
//! therefore accepts any certificate (the handshake signature is still checked) unless it is
//! given a [`ClientTrust`] as well, and it sends nothing but its nonce before the acceptor has
//! proved the key.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::read_ahead::ReadAhead;
use crate::tls::{binding, client_provider_tls13, server_config};
use crate::tls_error::handshake_error;
use crate::trust::{any_certificate, Verification};
use crate::{tune_tcp, BoxedStream, ClientTrust, ServerIdentity, TransportError};

/// ALPN protocol id of the peer link (the same as `tunnel_proto::peer::ALPN_PEER`).
pub const ALPN_PEER: &[u8] = tunnel_proto::peer::ALPN_PEER;

/// Both TLS roles of one server on the peer link.
pub struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

/// A peer connection after TLS: the stream, the remote address and the channel binding.
pub type PeerStream = (BoxedStream, SocketAddr, [u8; 32]);

impl PeerTls {
    /// Serve with `identity`; dial trusting `trust`, or (`None`) any certificate, as the
    /// cluster-key proof authenticates the peer.
    pub fn new(
        identity: &ServerIdentity,
        trust: Option<&ClientTrust>,
    ) -> Result<Self, TransportError> {
        let server = server_config(identity, &[ALPN_PEER])?;
        let builder = ClientConfig::builder_with_provider(Arc::new(client_provider_tls13()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Config(e.to_string()))?;
        let verification = match trust {
            Some(t) => t.verification()?,
            None => Verification::Custom(any_certificate()),
        };
        let mut client = match verification {
            Verification::Roots(roots) => builder.with_root_certificates(roots),
            Verification::Custom(v) => builder.dangerous().with_custom_certificate_verifier(v),
        }
        .with_no_client_auth();
        client.alpn_protocols = vec![ALPN_PEER.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// TLS on an accepted connection of `peer_bind`.
    pub async fn accept(
        &self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Result<PeerStream, TransportError> {
        tune_tcp(&tcp);
        let tls = self
            .acceptor
            .accept(ReadAhead::new(tcp))
            .await
            .map_err(|e| handshake_error(e, None))?;
        let (_, conn) = tls.get_ref();
        check_alpn(conn.alpn_protocol())?;
        let binding = binding(conn)?;
        Ok((Box::new(tls), peer, binding))
    }

    /// Dial a peer's `peer_advertise` address (`host:port`) and run TLS.
    pub async fn connect(&self, addr: &str) -> Result<PeerStream, TransportError> {
        let host = addr
            .rsplit_once(':')
            .map_or(addr, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            TransportError::Config(format!(
                "peer address {addr:?}: {host:?} is neither a DNS name nor an IP address"
            ))
        })?;
        let tcp = crate::socket::dial(addr).await?;
        let peer = tcp.peer_addr()?;
        let tls = self
            .connector
            .connect(name, ReadAhead::new(tcp))
            .await
            .map_err(|e| handshake_error(e, None))?;
        let (_, conn) = tls.get_ref();
        check_alpn(conn.alpn_protocol())?;
        let binding = binding(conn)?;
        Ok((Box::new(tls), peer, binding))
    }
}

fn check_alpn(negotiated: Option<&[u8]>) -> Result<(), TransportError> {
    if negotiated == Some(ALPN_PEER) {
        return Ok(());
    }
    Err(TransportError::Handshake(
        "the other end did not agree on ALPN \"tls-tunnel-peer/1\": it is not a tls-tunnel \
         peer port (check peer_advertise and peer_bind)"
            .to_owned(),
    ))
}
