//! The opener's side of a stream whose payload it sent early: one [`StreamStatus`] frame to
//! take off the front of the acceptor's bytes, then raw bytes.
//!
//! The opener of a byte-stream proxy's stream does not wait for the status before it sends
//! (see [`StreamOpen::Proxy`](crate::StreamOpen::Proxy)), so it reads the status while the
//! payload already flows, out of whatever chunks its transport hands it. This reader takes
//! exactly the status frame from those chunks, however they are split, and tells the caller
//! how many bytes it took: the rest of a chunk is payload and is the caller's to pass on.

use crate::{decode_body, parse_length, Message, ProtoError, StreamStatus, LENGTH_PREFIX};

/// What [`StatusReader::feed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRead {
    /// The frame is not whole yet: feed more bytes.
    NeedMore,
    /// The acceptor's answer; every byte after it is payload.
    Status(StreamStatus),
}

/// Reads the one [`StreamStatus`] frame at the head of a stream, fed in chunks of any size.
///
/// It holds at most `max_frame + 4` bytes, the partial frame, and never takes a byte past
/// the frame. After it answered [`StatusRead::Status`] or an error, it is done: the caller
/// stops feeding it.
#[derive(Debug)]
pub struct StatusReader {
    max_frame: usize,
    /// The frame's bytes so far: the length prefix, then kind and body.
    buf: Vec<u8>,
}

impl StatusReader {
    /// A reader that refuses a status frame whose length (kind + body) is over `max_frame`,
    /// as soon as its length prefix is in.
    #[must_use]
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            buf: Vec::new(),
        }
    }

    /// Take what belongs to the status frame from the front of `input`; returns what was
    /// found and how many bytes of `input` were taken (all of them when it needs more).
    ///
    /// # Errors
    ///
    /// The frame is empty or over the limit ([`ProtoError::FrameTooLarge`], from the prefix
    /// alone), does not decode, or is another message than a status
    /// ([`ProtoError::UnexpectedMessage`]).
    pub fn feed(&mut self, input: &[u8]) -> Result<(StatusRead, usize), ProtoError> {
        // Nearly always the whole frame comes in one piece: read it where it lies.
        if self.buf.is_empty() {
            if let Some(prefix) = input.get(..LENGTH_PREFIX) {
                let mut raw = [0u8; LENGTH_PREFIX];
                raw.copy_from_slice(prefix);
                let end = LENGTH_PREFIX + parse_length(raw, self.max_frame)?;
                if let Some(frame) = input.get(LENGTH_PREFIX..end) {
                    return Ok((StatusRead::Status(status_of(frame)?), end));
                }
            }
        }
        let mut used = 0;
        loop {
            let want = self.wanted()?;
            let take = want.min(input.len() - used);
            self.buf.extend_from_slice(&input[used..used + take]);
            used += take;
            if take < want {
                return Ok((StatusRead::NeedMore, used));
            }
            if self.buf.len() > LENGTH_PREFIX {
                let status = status_of(&self.buf[LENGTH_PREFIX..])?;
                return Ok((StatusRead::Status(status), used));
            }
        }
    }

    /// Whether part of the frame was read: the stream ending now ends it inside the frame,
    /// not before its first byte.
    #[must_use]
    pub fn started(&self) -> bool {
        !self.buf.is_empty()
    }

    /// How many more bytes complete the prefix, or else the frame.
    fn wanted(&self) -> Result<usize, ProtoError> {
        let Some(prefix) = self.buf.get(..LENGTH_PREFIX) else {
            return Ok(LENGTH_PREFIX - self.buf.len());
        };
        let mut raw = [0u8; LENGTH_PREFIX];
        raw.copy_from_slice(prefix);
        let len = parse_length(raw, self.max_frame)?;
        Ok(LENGTH_PREFIX + len - self.buf.len())
    }
}

/// The status in a frame's kind and body.
fn status_of(frame: &[u8]) -> Result<StreamStatus, ProtoError> {
    match decode_body(frame)? {
        Message::StreamStatus(s) => Ok(s),
        other => Err(ProtoError::UnexpectedMessage {
            expected: "StreamStatus",
            got: other.name(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{encode_to_vec, StreamOpen, DEFAULT_MAX_FRAME};

    const MAX: usize = 4096;

    fn frame(status: StreamStatus) -> Vec<u8> {
        encode_to_vec(&Message::StreamStatus(status), DEFAULT_MAX_FRAME).unwrap()
    }

    /// Feed `wire` in chunks of `size`; the status and the payload bytes left after it.
    fn read_split(wire: &[u8], size: usize) -> (StreamStatus, Vec<u8>) {
        let mut r = StatusReader::new(MAX);
        let mut chunks = wire.chunks(size);
        for chunk in chunks.by_ref() {
            match r.feed(chunk).unwrap() {
                (StatusRead::NeedMore, used) => assert_eq!(used, chunk.len()),
                (StatusRead::Status(s), used) => {
                    let mut rest = chunk[used..].to_vec();
                    rest.extend(chunks.flatten());
                    return (s, rest);
                }
            }
        }
        panic!("no status in {wire:?}");
    }

    #[test]
    fn status_then_payload_in_any_split() {
        for status in [StreamStatus::Ok, StreamStatus::Error("refused: x".into())] {
            let mut wire = frame(status.clone());
            wire.extend_from_slice(b"payload after the status");
            for size in 1..=wire.len() {
                let (got, rest) = read_split(&wire, size);
                assert_eq!(got, status, "split {size}");
                assert_eq!(rest, b"payload after the status", "split {size}");
            }
        }
    }

    #[test]
    fn a_status_alone_is_whole_without_payload() {
        let mut r = StatusReader::new(MAX);
        let wire = frame(StreamStatus::Ok);
        assert_eq!(
            r.feed(&wire).unwrap(),
            (StatusRead::Status(StreamStatus::Ok), wire.len())
        );
    }

    #[test]
    fn an_oversize_frame_is_refused_from_its_prefix() {
        let mut r = StatusReader::new(MAX);
        assert_eq!(r.feed(&[0, 0]).unwrap(), (StatusRead::NeedMore, 2));
        let err = r.feed(&[0x10, 0x01]).unwrap_err();
        assert_eq!(
            err,
            ProtoError::FrameTooLarge {
                len: 4097,
                max: MAX
            }
        );
        // Nothing of the announced body was asked for or kept.
        assert!(r.buf.len() <= LENGTH_PREFIX);
        // The same with the prefix and more in one piece.
        let mut r = StatusReader::new(MAX);
        let err = r.feed(&[0, 0, 0x10, 0x01, 0x31, 0]).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
        assert!(r.buf.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_status() {
        let mut r = StatusReader::new(MAX);
        assert_eq!(r.feed(&[0, 0, 0, 0]).unwrap_err(), ProtoError::EmptyFrame);
        let mut r = StatusReader::new(MAX);
        assert_eq!(
            r.feed(&[0, 0, 0, 1, 0xee]).unwrap_err(),
            ProtoError::UnknownKind(0xee)
        );
        let mut r = StatusReader::new(MAX);
        let bad_tag = [0, 0, 0, 2, 0x31, 9];
        assert!(matches!(
            r.feed(&bad_tag).unwrap_err(),
            ProtoError::UnknownTag { .. }
        ));
        // Another message where the status belongs.
        let open = encode_to_vec(&Message::StreamOpen(StreamOpen::Control), MAX).unwrap();
        let mut r = StatusReader::new(MAX);
        let err = r.feed(&open).unwrap_err();
        assert_eq!(
            err,
            ProtoError::UnexpectedMessage {
                expected: "StreamStatus",
                got: "StreamOpen"
            }
        );
        assert!(err.to_string().contains("StreamOpen"), "{err}");
    }

    #[test]
    fn eof_inside_the_frame_is_told_from_eof_before_it() {
        let mut r = StatusReader::new(MAX);
        assert_eq!(r.feed(&[]).unwrap(), (StatusRead::NeedMore, 0));
        assert!(!r.started(), "nothing read: a clean close");
        let wire = frame(StreamStatus::Error("no".into()));
        for cut in 1..wire.len() {
            let mut r = StatusReader::new(MAX);
            assert_eq!(r.feed(&wire[..cut]).unwrap(), (StatusRead::NeedMore, cut));
            assert!(r.started(), "cut at {cut}: inside the frame");
        }
    }
}
