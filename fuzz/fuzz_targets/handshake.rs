//! The server's handshake decoder on arbitrary bytes: what a peer sends before it has proved
//! the key (Hello, then AuthResponse), framed with the handshake's 4 KiB limit and delivered
//! in arbitrary pieces. It must never panic, never buffer more than one frame, and every
//! message it accepts must survive the checks the server applies next.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tunnel_proto::{decode_body, encode_to_vec, Decoder, Message, LENGTH_PREFIX};

/// The server's `HANDSHAKE_MAX_FRAME`.
const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so one input also covers split deliveries.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut decoder = Decoder::new(HANDSHAKE_MAX_FRAME);
    let mut buf = BytesMut::new();
    'feed: for piece in bytes.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(msg)) => check(&msg),
                Ok(None) => {
                    assert!(buf.len() < HANDSHAKE_MAX_FRAME + LENGTH_PREFIX);
                    break;
                }
                Err(_) => break 'feed,
            }
        }
    }
    // The same bytes as one frame body, as `read_message` hands them to `decode_body`.
    if let Ok(msg) = decode_body(bytes) {
        check(&msg);
    }
});

/// What the server does with a decoded handshake message must not panic either.
fn check(msg: &Message) {
    if let Message::Hello(hello) = msg {
        let _ = tunnel_proto::validate_name(&hello.client_id);
        let _ = tunnel_proto::compute_mac(b"key", &[0; 32], &[], hello);
    }
    // Whatever decodes can be encoded again (or is refused cleanly).
    let _ = encode_to_vec(msg, usize::MAX);
}
