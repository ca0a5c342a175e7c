//! The HTTPS virtual host's ClientHello reader on arbitrary bytes, delivered in arbitrary
//! pieces: what any stranger sends to `vhost_https_bind` before anything is routed. It must
//! never panic, and the answer must not depend on how the bytes were cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunnel_proto::sni::{ClientHelloReader, Hello};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size, so one input also covers split deliveries.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let whole = ClientHelloReader::new().feed(bytes);
    let mut reader = ClientHelloReader::new();
    let mut last = Hello::NeedMore;
    for piece in bytes.chunks(chunk) {
        last = reader.feed(piece);
        if last != Hello::NeedMore {
            break;
        }
    }
    assert_eq!(last, whole);
    if let Hello::Sni(name) = &last {
        assert!(!name.is_empty() && name.len() <= 253);
        assert!(name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
    }
});
