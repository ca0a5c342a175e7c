//! The server's one TLS port serves every transport: the TLS handshake offers
//! `tls-tunnel/1`, `h2` and `http/1.1`, and the ALPN id the client chose says what follows —
//! the tunnel protocol directly, one HTTP/2 request stream, or a WebSocket upgrade. No extra
//! configuration, no second port.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::net::TcpStream;

use crate::read_ahead::ReadAhead;
use tokio_rustls::TlsAcceptor;

use crate::client_cert::ClientAuth;
use crate::tls::{binding, peer_cert, resumed, server_config_with};
use crate::tls_error::handshake_error;
use crate::ws::WsStream;
use crate::{
    h2, tune_tcp, upgrade, Established, ServerIdentity, Transport, TransportError, TransportKind,
    ALPN_H2, ALPN_HTTP11, ALPN_TUNNEL,
};

/// Server role of every TLS-based transport on one port, told apart by ALPN.
pub struct ServerTransport {
    acceptor: TlsAcceptor,
    path: String,
}

impl fmt::Debug for ServerTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerTransport(path={:?})", self.path)
    }
}

impl ServerTransport {
    /// TLS 1.3 with `identity`; HTTP/2 requests and WebSocket upgrades are served at `path`
    /// (anything else there gets a 404).
    pub fn new(identity: &ServerIdentity, path: &str) -> Result<Self, TransportError> {
        Self::with_client_auth(identity, path, None)
    }

    /// [`ServerTransport::new`] that asks every client for a certificate and verifies one
    /// against `client_auth`'s CA, on all three transports alike. The verified certificate's
    /// details come with each [`Established`] (`peer_cert`).
    pub fn with_client_auth(
        identity: &ServerIdentity,
        path: &str,
        client_auth: Option<&ClientAuth>,
    ) -> Result<Self, TransportError> {
        let alpn: &[&[u8]] = &[ALPN_TUNNEL, ALPN_H2, ALPN_HTTP11];
        let cfg = server_config_with(identity, alpn, client_auth)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(cfg)),
            path: path.to_owned(),
        })
    }

    async fn accept_impl(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<Established, TransportError> {
        tune_tcp(&tcp);
        let tls = self
            .acceptor
            .accept(ReadAhead::new(tcp))
            .await
            .map_err(|e| handshake_error(e, None))?;
        let conn = tls.get_ref().1;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let bound = Some(binding(conn)?);
        let cert = peer_cert(conn);
        let again = resumed(conn);
        match alpn.as_deref() {
            Some(ALPN_TUNNEL) => {
                Ok(
                    Established::new(Box::new(tls), peer, TransportKind::Tls, bound)
                        .with_peer_cert(cert)
                        .with_resumed(again),
                )
            }
            Some(ALPN_H2) => {
                let stream = h2::accept(tls, &self.path).await?;
                Ok(
                    Established::new(Box::new(stream), peer, TransportKind::H2, bound)
                        .with_peer_cert(cert)
                        .with_resumed(again),
                )
            }
            Some(ALPN_HTTP11) => {
                // Forwarding headers are not trusted here: this client reached us directly.
                let (ws, _forwarded) = upgrade::accept(tls, &self.path).await?;
                Ok(
                    Established::new(Box::new(WsStream::new(ws)), peer, TransportKind::Wss, bound)
                        .with_peer_cert(cert)
                        .with_resumed(again),
                )
            }
            // rustls already refused clients whose ALPN list has none of ours; what is left
            // offered no ALPN at all.
            _ => Err(TransportError::NotTunnel(
                "a TLS client that offered no ALPN protocol (tls-tunnel clients offer \
                 tls-tunnel/1, h2 or http/1.1)"
                    .to_owned(),
            )),
        }
    }
}

impl Transport for ServerTransport {
    fn kind(&self) -> TransportKind {
        TransportKind::Tls
    }

    fn connect<'a>(&'a self, _addr: &'a str) -> BoxFuture<'a, Result<Established, TransportError>> {
        async { Err(TransportError::WrongRole) }.boxed()
    }

    fn accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> BoxFuture<'_, Result<Established, TransportError>> {
        self.accept_impl(tcp, peer).boxed()
    }
}
