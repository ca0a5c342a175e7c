#![allow(clippy::unwrap_used)]

use bytes::BytesMut;

use super::{frame_of, samples};
use crate::*;

fn all_frames() -> Vec<u8> {
    samples().iter().flat_map(frame_of).collect()
}

/// Feeds `chunks` in order, draining every complete frame after each one.
fn feed(dec: &mut Decoder, chunks: &[&[u8]]) -> Vec<Message> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(msg) = dec.decode(&mut buf).unwrap() {
            out.push(msg);
        }
    }
    assert!(buf.is_empty());
    out
}

#[test]
fn one_byte_at_a_time() {
    let wire = all_frames();
    let chunks: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(feed(&mut Decoder::default(), &chunks), samples());
}

#[test]
fn many_frames_in_one_buffer() {
    let wire = all_frames();
    assert_eq!(feed(&mut Decoder::default(), &[&wire]), samples());
}

#[test]
fn split_at_every_offset() {
    for msg in samples() {
        let frame = frame_of(&msg);
        for cut in 0..=frame.len() {
            let (a, b) = frame.split_at(cut);
            assert_eq!(
                feed(&mut Decoder::default(), &[a, b]),
                std::slice::from_ref(&msg),
                "cut {cut}"
            );
        }
    }
}

#[test]
fn incomplete_frame_consumes_nothing() {
    let frame = frame_of(&Message::Ping(5));
    let mut dec = Decoder::default();
    for cut in 0..frame.len() {
        let mut buf = BytesMut::from(&frame[..cut]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], &frame[..cut]);
    }
}

#[test]
fn oversize_length_rejected_from_the_prefix_alone() {
    let max = 1024;
    let mut dec = Decoder::new(max);
    let mut buf = BytesMut::from(&1025u32.to_be_bytes()[..]);
    assert_eq!(
        dec.decode(&mut buf),
        Err(ProtoError::FrameTooLarge { len: 1025, max })
    );
    // Nothing was reserved for the body that would never be accepted.
    assert!(buf.capacity() < 64, "capacity {}", buf.capacity());

    let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
    assert!(matches!(
        Decoder::default().decode(&mut huge),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    assert!(huge.capacity() < 64);
}

#[test]
fn exact_max_frame_is_accepted() {
    let frame = frame_of(&Message::Ping(1));
    let mut dec = Decoder::new(frame.len() - LENGTH_PREFIX);
    assert_eq!(
        dec.decode(&mut BytesMut::from(&frame[..])).unwrap(),
        Some(Message::Ping(1))
    );
    let mut smaller = Decoder::new(frame.len() - LENGTH_PREFIX - 1);
    assert!(smaller.decode(&mut BytesMut::from(&frame[..])).is_err());
}

#[test]
fn zero_length_rejected() {
    let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 0x20][..]);
    assert_eq!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::EmptyFrame)
    );
    assert_eq!(
        parse_length([0; 4], DEFAULT_MAX_FRAME),
        Err(ProtoError::EmptyFrame)
    );
}

#[test]
fn parse_length_bounds() {
    assert_eq!(parse_length([0, 0, 0, 1], 1), Ok(1));
    assert_eq!(parse_length([0, 1, 0, 0], DEFAULT_MAX_FRAME), Ok(65_536));
    assert_eq!(
        parse_length([0, 1, 0, 1], DEFAULT_MAX_FRAME),
        Err(ProtoError::FrameTooLarge {
            len: 65_537,
            max: DEFAULT_MAX_FRAME
        })
    );
}

#[test]
fn reservation_is_bounded_by_the_announced_frame() {
    let mut buf = BytesMut::from(&(DEFAULT_MAX_FRAME as u32).to_be_bytes()[..]);
    assert_eq!(Decoder::default().decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() >= DEFAULT_MAX_FRAME + LENGTH_PREFIX);
    assert!(buf.capacity() <= 2 * (DEFAULT_MAX_FRAME + LENGTH_PREFIX));
}

#[test]
fn errors_are_sticky() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 0xee][..]);
    assert_eq!(dec.decode(&mut buf), Err(ProtoError::UnknownKind(0xee)));
    // The bad frame was consumed, yet a valid frame afterwards is still refused.
    assert!(buf.is_empty());
    buf.extend_from_slice(&frame_of(&Message::Ping(1)));
    assert_eq!(dec.decode(&mut buf), Err(ProtoError::UnknownKind(0xee)));
}

#[test]
fn bad_body_inside_a_complete_frame_is_an_error() {
    // len says 3: kind Ping + 2 bytes of an 8-byte value.
    let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 0x20, 0, 0, 0, 0, 0, 0, 0, 0][..]);
    assert_eq!(
        Decoder::default().decode(&mut buf),
        Err(ProtoError::Truncated { what: "Ping value" })
    );
}
