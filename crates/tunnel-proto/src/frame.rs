//! Framing: a 4-byte big-endian length, then the kind byte and the body.
//!
//! ```text
//! +----------------+---------+------------------+
//! | len: u32 (BE)  | kind u8 | body (len-1 B)   |
//! +----------------+---------+------------------+
//! ```
//!
//! `len` counts kind + body, so it is at least 1. The length is validated from the 4 prefix
//! bytes alone, so a hostile peer cannot make us buffer (or allocate) more than `max_frame`.

use bytes::{Buf, BufMut, BytesMut};

use crate::{Message, ProtoError};

/// Version carried in [`Hello`](crate::Hello) and [`Challenge`](crate::Challenge).
pub const PROTOCOL_VERSION: u16 = 1;

/// Default hard limit on `len` (kind + body). Control messages are tiny; the limit only
/// has to fit the largest registration JSON.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Validates a 4-byte big-endian length prefix; returns the number of bytes that follow
/// (kind + body).
///
/// For callers that read frames straight off an async stream: read 4 bytes, call this,
/// then read exactly the returned number of bytes and hand them to [`decode_body`].
///
/// # Errors
///
/// [`ProtoError::EmptyFrame`] for a zero length, [`ProtoError::FrameTooLarge`] above
/// `max_frame`.
pub fn parse_length(prefix: [u8; 4], max_frame: usize) -> Result<usize, ProtoError> {
    // Saturating keeps the comparison below meaningful on targets where usize < u32.
    let len = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if len == 0 {
        return Err(ProtoError::EmptyFrame);
    }
    if len > max_frame {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    Ok(len)
}

/// Decodes kind byte + body: exactly the `len` bytes that follow the prefix.
///
/// The size limit is the caller's job here (see [`parse_length`]); this only parses.
///
/// # Errors
///
/// Any decode variant of [`ProtoError`]: the bytes are not a well-formed message.
pub fn decode_body(frame: &[u8]) -> Result<Message, ProtoError> {
    let (&kind, body) = frame.split_first().ok_or(ProtoError::EmptyFrame)?;
    Message::decode_body(kind, body)
}

/// Appends the full frame (prefix + kind + body) to `dst`.
///
/// # Errors
///
/// Fails with [`ProtoError::FrameTooLarge`] if kind + body exceed `max_frame`, or with
/// [`ProtoError::StringTooLong`] / [`ProtoError::BadJson`] if a field cannot be encoded.
/// On error `dst` is left exactly as it was, so a caller batching frames never sends half
/// of one.
pub fn encode(msg: &Message, max_frame: usize, dst: &mut BytesMut) -> Result<(), ProtoError> {
    let start = dst.len();
    // Encode in place and patch the prefix afterwards: body sizes (strings, JSON) are not
    // known up front, and a second pass to measure would double the work.
    dst.put_u32(0);
    let result = msg.encode_body(dst).and_then(|()| {
        let len = dst.len() - start - LENGTH_PREFIX;
        let too_large = ProtoError::FrameTooLarge {
            len,
            max: max_frame,
        };
        if len > max_frame {
            return Err(too_large);
        }
        let prefix = u32::try_from(len).map_err(|_| too_large.clone())?;
        let slot = dst.get_mut(start..start + LENGTH_PREFIX).ok_or(too_large)?;
        slot.copy_from_slice(&prefix.to_be_bytes());
        Ok(())
    });
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

/// Convenience: encodes into a fresh `Vec`.
///
/// # Errors
///
/// As for [`encode`].
pub fn encode_to_vec(msg: &Message, max_frame: usize) -> Result<Vec<u8>, ProtoError> {
    let mut buf = BytesMut::new();
    encode(msg, max_frame, &mut buf)?;
    Ok(buf.to_vec())
}

/// Incremental decoder for a stream of frames.
///
/// Feed it whatever chunks the transport delivers; it takes whole frames off the front of
/// the buffer and leaves partial ones in place. It never panics on any input and never
/// lets a single frame require more than `max_frame + 4` buffered bytes: when it answers
/// `Ok(None)`, the buffer holds less than one complete frame.
///
/// Errors are sticky: once `decode` has failed, every later call returns the same error,
/// because after a framing error there is no way to find the next frame boundary.
#[derive(Debug)]
pub struct Decoder {
    max_frame: usize,
    failed: Option<ProtoError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder that rejects frames whose `len` (kind + body) exceeds `max_frame`.
    #[must_use]
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            failed: None,
        }
    }

    /// The configured limit.
    #[must_use]
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Tries to take one whole frame from the front of `buf`, consuming exactly its bytes.
    ///
    /// `Ok(None)` means more bytes are needed; nothing was consumed.
    ///
    /// # Errors
    ///
    /// Any decode variant of [`ProtoError`]. After an `Err` the stream is unusable and the
    /// caller should close it.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.decode_frame(buf);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    fn decode_frame(&self, buf: &mut BytesMut) -> Result<Option<Message>, ProtoError> {
        let Some(prefix) = buf.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let mut raw = [0u8; LENGTH_PREFIX];
        raw.copy_from_slice(prefix);
        let len = parse_length(raw, self.max_frame)?;
        let total = len.saturating_add(LENGTH_PREFIX);
        if buf.len() < total {
            // The length is already validated, so reserving the rest of the frame is bounded
            // by max_frame and lets a read_buf() caller fill it in one go.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        buf.advance(LENGTH_PREFIX);
        // Consume the frame before parsing so a bad body still leaves the buffer at the
        // next boundary (useful for diagnostics even though the stream is then dead).
        let frame = buf.split_to(len);
        decode_body(&frame).map(Some)
    }
}
