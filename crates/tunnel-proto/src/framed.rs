//! One tunnel-proto frame at a time on any tokio byte stream, for the handshake before yamux
//! starts and for the control stream (feature `tokio`).
//!
//! The rest of this crate is sans-IO; these two helpers are the thin async face both the
//! transports and the multiplexer share, so neither has to depend on the other for them.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{decode_body, encode_to_vec, parse_length, Message, ProtoError, LENGTH_PREFIX};

/// A frame could not be read or written: the stream failed, or the bytes are not a valid
/// frame. [`ProtoError`] stays `Clone + Eq` for the sans-IO code; this is its I/O face.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramedError {
    /// The byte stream failed, or ended inside a frame (`UnexpectedEof`).
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The frame is malformed or over the size limit.
    #[error("tunnel protocol error: {0}")]
    Proto(#[from] ProtoError),
}

/// Read exactly one frame: the 4-byte length prefix, then exactly `len` bytes. Never reads past
/// the frame, so yamux can start on the same stream right after. A clean EOF before the first
/// byte is `Ok(None)`; EOF inside a frame is an error. An oversize length is rejected before
/// anything is allocated.
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame: usize,
) -> Result<Option<Message>, FramedError> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    let mut filled = 0;
    while filled < prefix.len() {
        let n = r.read(&mut prefix[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(truncated());
        }
        filled += n;
    }
    let len = parse_length(prefix, max_frame)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            truncated()
        } else {
            FramedError::Io(e)
        }
    })?;
    Ok(Some(decode_body(&body)?))
}

/// Write one frame with a single `write_all`, then flush.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
    max_frame: usize,
) -> Result<(), FramedError> {
    let frame = encode_to_vec(msg, max_frame)?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

fn truncated() -> FramedError {
    FramedError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection in the middle of a frame",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{StreamOpen, DEFAULT_MAX_FRAME};

    #[tokio::test]
    async fn round_trip_and_never_reads_past_the_frame() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let msg = Message::StreamOpen(StreamOpen::Control);
        write_message(&mut a, &msg, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        a.write_all(b"yamux bytes").await.unwrap();
        drop(a);
        let got = read_message(&mut b, DEFAULT_MAX_FRAME).await.unwrap();
        assert_eq!(got, Some(msg));
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"yamux bytes");
    }

    #[tokio::test]
    async fn clean_eof_is_none_and_truncation_is_an_error() {
        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        assert!(read_message(&mut b, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .is_none());

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 9, 0x20, 1]).await.unwrap();
        drop(a);
        let err = read_message(&mut b, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(&err, FramedError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof));

        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0]).await.unwrap();
        drop(a);
        assert!(read_message(&mut b, DEFAULT_MAX_FRAME).await.is_err());
    }

    #[tokio::test]
    async fn oversize_length_is_rejected_from_the_prefix() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Only the prefix is sent: the error must not wait for a body.
        a.write_all(&(1_000_000u32).to_be_bytes()).await.unwrap();
        let err = read_message(&mut b, DEFAULT_MAX_FRAME).await.unwrap_err();
        assert!(matches!(err, FramedError::Proto(_)), "{err}");
    }
}
