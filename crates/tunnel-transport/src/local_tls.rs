//! TLS from a client to one of its own local services (an `http2` proxy with
//! `local_tls = true`), as opposed to the tunnel's own TLS to the server.

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::{TlsClient, Versions};
use crate::tls_error::handshake_error;
use crate::{ClientTrust, TransportError};

/// Local services are the user's own: TLS 1.3 is theirs to enable.
const LOCAL: Versions = Versions::Tls13Only {
    advice: "local_tls speaks TLS 1.3 only: enable TLS 1.3 on the local service",
};

/// A reusable TLS client configuration for one local service. Built once per proxy: loading
/// a trust store per connection would be wasteful.
pub struct LocalTls(TlsClient);

impl std::fmt::Debug for LocalTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LocalTls")
            .field(&self.0.server_name)
            .finish()
    }
}

impl LocalTls {
    /// TLS 1.3 to `server_name` (a DNS name or an IP literal, checked against the
    /// certificate unless `trust` is [`ClientTrust::InsecureSkipVerify`]), offering `alpn`.
    pub fn new(
        server_name: &str,
        trust: &ClientTrust,
        alpn: &[u8],
    ) -> Result<Self, TransportError> {
        TlsClient::new(server_name, trust, alpn, LOCAL, None, false).map(LocalTls)
    }

    /// Run the handshake on a connected socket.
    pub async fn wrap(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, TransportError> {
        self.0
            .connector
            .connect(self.0.server_name.clone(), tcp)
            .await
            .map_err(|e| handshake_error(e, Some(&self.0)))
    }
}
