//! UDP datagrams on a byte stream: each one a 2-byte big-endian length, then its bytes.
//!
//! A UDP flow rides one yamux stream; the stream is a byte pipe, so datagram boundaries
//! are framed explicitly. A datagram is never merged with another nor split: the decoder
//! yields exactly the payloads that were encoded, in order, whatever chunks the stream
//! delivers. Zero-length datagrams are valid UDP and pass as such.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ProtoError;

/// Largest UDP payload over IPv4 (65,535 − 8 UDP − 20 IP header bytes): the most a datagram
/// can carry, so the most a frame may announce.
pub const MAX_DATAGRAM: usize = 65_507;

/// Bytes of the length prefix before each datagram.
pub const DATAGRAM_PREFIX: usize = 2;

/// Append `payload` as one frame to `dst`.
///
/// # Errors
///
/// [`ProtoError::DatagramTooLarge`] for a payload over [`MAX_DATAGRAM`].
pub fn encode_datagram(payload: &[u8], dst: &mut impl BufMut) -> Result<(), ProtoError> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|l| usize::from(*l) <= MAX_DATAGRAM)
        .ok_or(ProtoError::DatagramTooLarge {
            len: payload.len(),
            max: MAX_DATAGRAM,
        })?;
    dst.put_u16(len);
    dst.put_slice(payload);
    Ok(())
}

/// Incremental decoder: feed the stream's bytes into a buffer, take out whole datagrams.
#[derive(Debug, Default, Clone, Copy)]
pub struct DatagramDecoder;

impl DatagramDecoder {
    /// A decoder (it keeps no state: the buffer is the state).
    #[must_use]
    pub fn new() -> Self {
        DatagramDecoder
    }

    /// The next whole datagram at the front of `buf`, removed from it; `Ok(None)` until one
    /// is complete (`buf` is left as it is, and may reserve room for the rest).
    ///
    /// # Errors
    ///
    /// [`ProtoError::DatagramTooLarge`] when the prefix announces more than [`MAX_DATAGRAM`]
    /// bytes: the peer is not framing datagrams, and the stream is unusable.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtoError> {
        if buf.len() < DATAGRAM_PREFIX {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
        if len > MAX_DATAGRAM {
            return Err(ProtoError::DatagramTooLarge {
                len,
                max: MAX_DATAGRAM,
            });
        }
        if buf.len() < DATAGRAM_PREFIX + len {
            buf.reserve(DATAGRAM_PREFIX + len - buf.len());
            return Ok(None);
        }
        buf.advance(DATAGRAM_PREFIX);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    fn decode_all(wire: &[u8], chunk: usize) -> Vec<Bytes> {
        let mut d = DatagramDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(dg) = d.decode(&mut buf).unwrap() {
                out.push(dg);
            }
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        out
    }

    #[test]
    fn the_largest_datagram_passes_whole_and_one_more_byte_is_refused() {
        let big = vec![7u8; MAX_DATAGRAM];
        let mut wire = BytesMut::new();
        encode_datagram(&big, &mut wire).unwrap();
        assert_eq!(decode_all(&wire, 1000), [Bytes::from(big)]);
        let err = encode_datagram(&[0; MAX_DATAGRAM + 1], &mut wire).unwrap_err();
        assert!(matches!(err, ProtoError::DatagramTooLarge { len, .. } if len == MAX_DATAGRAM + 1));
    }

    #[test]
    fn empty_datagrams_are_datagrams() {
        let mut wire = BytesMut::new();
        encode_datagram(b"", &mut wire).unwrap();
        encode_datagram(b"x", &mut wire).unwrap();
        encode_datagram(b"", &mut wire).unwrap();
        assert_eq!(decode_all(&wire, 1), [&b""[..], b"x", b""]);
    }

    #[test]
    fn a_prefix_over_the_limit_is_an_error_not_a_wait() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 1, 2][..]);
        let err = DatagramDecoder::new().decode(&mut buf).unwrap_err();
        assert!(err.to_string().contains("65507"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn datagrams_are_never_merged_nor_split(
            dgs in vec(vec(any::<u8>(), 0..3000), 0..20),
            chunk in 1usize..5000,
        ) {
            let mut wire = BytesMut::new();
            for d in &dgs {
                encode_datagram(d, &mut wire).unwrap();
            }
            let got = decode_all(&wire, chunk);
            let want: Vec<Bytes> = dgs.into_iter().map(Bytes::from).collect();
            prop_assert_eq!(got, want);
        }
    }
}
