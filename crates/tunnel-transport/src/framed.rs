//! One tunnel-proto frame at a time, with this crate's error type: the framing itself is
//! [`tunnel_proto::read_message`] / [`tunnel_proto::write_message`] (shared with the
//! multiplexer); these keep `tunnel_transport::{read_message, write_message}` returning
//! [`TransportError`] for the engines.

use tokio::io::{AsyncRead, AsyncWrite};
use tunnel_proto::{FramedError, Message};

use crate::TransportError;

/// Read exactly one frame (see [`tunnel_proto::read_message`]): never past the frame, a
/// clean EOF before the first byte is `Ok(None)`, an oversize length is refused from the
/// prefix.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame: usize,
) -> Result<Option<Message>, TransportError> {
    Ok(tunnel_proto::read_message(r, max_frame).await?)
}

/// Write one frame with a single `write_all`, then flush.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
    max_frame: usize,
) -> Result<(), TransportError> {
    Ok(tunnel_proto::write_message(w, msg, max_frame).await?)
}

impl From<FramedError> for TransportError {
    fn from(e: FramedError) -> Self {
        match e {
            FramedError::Io(e) => refused_alert(TransportError::Io(e)),
            FramedError::Proto(e) => TransportError::Proto(e),
            // FramedError is non-exhaustive: anything new is an I/O failure for the caller.
            other => TransportError::Io(std::io::Error::other(other)),
        }
    }
}

/// A TLS 1.3 server that refuses our certificate says so after our handshake finished: the
/// alert arrives on the first read (of a frame, an HTTP/2 response, a WebSocket upgrade),
/// and is worth more words than "received fatal alert".
pub(crate) fn refused_alert(e: TransportError) -> TransportError {
    let TransportError::Io(io) = &e else {
        return e;
    };
    let reason = match io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(alert)) => {
            crate::client_cert::refused_certificate(*alert)
        }
        _ => None,
    };
    reason.map_or(e, TransportError::Handshake)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tunnel_proto::DEFAULT_MAX_FRAME;

    #[tokio::test]
    async fn errors_keep_their_transport_variants() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(1_000_000u32).to_be_bytes()).await.unwrap();
        let err = read_message(&mut b, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, TransportError::Proto(_)), "{err}");

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, 0x20]).await.unwrap();
        drop(a);
        let err = read_message(&mut b, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, TransportError::Io(_)), "{err}");
    }
}
