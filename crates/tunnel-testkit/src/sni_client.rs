//! A TLS client that names its server (SNI) and trusts one CA, as a browser of a private web
//! PKI would: for the HTTPS virtual host's tests. It can write one byte at a time, so that
//! its ClientHello reaches the server in many TCP segments.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// A stream whose writes take one byte each (and are flushed), so every byte written is its
/// own TCP segment as far as Nagle-free TCP allows.
#[derive(Debug)]
pub struct Trickle<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let one = &buf[..buf.len().min(1)];
        Pin::new(&mut self.0).poll_write(cx, one)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// `GET /` over TLS to `addr`, naming `name` in the ClientHello and trusting only the CA
/// certificate in `ca` (PEM): the body (the head stripped), or the error, whose inner error
/// is the [`rustls::Error`] when TLS failed (an alert the server sent, say). `trickle`: every
/// byte the client writes goes alone (see [`Trickle`]).
pub async fn https_get(
    addr: SocketAddr,
    name: &str,
    ca: &Path,
    trickle: bool,
) -> io::Result<String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let request = format!("GET / HTTP/1.0\r\nHost: {name}\r\n\r\n");
    let mut answer = Vec::new();
    if trickle {
        let mut tls = connector.connect(server, Trickle(tcp)).await?;
        tls.write_all(request.as_bytes()).await?;
        tls.read_to_end(&mut answer).await?;
    } else {
        let mut tls = connector.connect(server, tcp).await?;
        tls.write_all(request.as_bytes()).await?;
        tls.read_to_end(&mut answer).await?;
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, body)| body.to_owned()))
}

/// The [`rustls::Error`] inside an error of [`https_get`], if TLS failed.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref())
}

/// A ClientHello as rustls writes it for `name`, its handshake message cut into TLS records
/// of at most `per_record` bytes each: what some clients and middleboxes send, and what a
/// reader of one record only would misread.
pub fn fragmented_client_hello(name: &str, per_record: usize) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), server).unwrap();
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).unwrap();
    }
    // rustls sends the hello in one record: header (type, version, length), then the message.
    let (header, message) = wire.split_at(5);
    assert_eq!(header[0], 22, "a handshake record");
    let mut out = Vec::new();
    for chunk in message.chunks(per_record) {
        out.extend_from_slice(&header[..3]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}
