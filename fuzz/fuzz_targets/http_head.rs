//! What a stranger's HTTP request reaches before any authentication, on arbitrary bytes:
//!
//! - the WebSocket acceptor (`ws_bind`, and the TLS port under ALPN `http/1.1`): the request
//!   head read in arbitrary pieces and checked, then, after an accepted upgrade, the WebSocket
//!   frames that carry the tunnel;
//! - the virtual host (`vhost_http_bind`): the Host header and the request path, normalised
//!   and keyed as the route table matches them.
//!
//! Nothing may panic, and what the virtual host accepts must already be in its one spelling
//! (normalising it again changes nothing), or a service could see a path the vhost did not
//! route.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The server's default `ws_path`.
const WS_PATH: &str = "/tunnel";

fuzz_target!(|data: &[u8]| {
    // The first byte picks the read size, so one input also covers split deliveries.
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    if let Some(payload) = tunnel_transport::fuzzing::websocket_accept(bytes, chunk, WS_PATH) {
        assert!(payload <= bytes.len());
    }
    vhost(bytes);
});

/// The request head as hyper hands it to the virtual host (httparse, then an `http::Uri`).
fn vhost(bytes: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(bytes), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let Some(Ok(uri)) = req.path.map(http::Uri::try_from) else {
        return;
    };
    // The authority of an absolute-form target wins over the Host header (RFC 9112 §3.2.2).
    let host = match uri.authority() {
        Some(a) => a.as_str().to_owned(),
        None => {
            let mut hosts = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host"));
            match (hosts.next(), hosts.next()) {
                (Some(h), None) => match std::str::from_utf8(h.value) {
                    Ok(v) => v.to_owned(),
                    Err(_) => return,
                },
                _ => return,
            }
        }
    };
    let routed = tunnel_server::fuzzing::vhost_request(&host, uri.path());
    if let Some(h) = &routed.host {
        assert!(!h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()), "{h:?}");
        let again = tunnel_server::fuzzing::vhost_request(h, "/").host;
        assert_eq!(again.as_ref(), Some(h), "host key not stable");
    }
    match (&routed.path, &routed.match_key) {
        (Some(path), Some(key)) => {
            if path != "*" {
                assert!(path.starts_with('/'), "{path:?}");
                assert!(!path.contains("//"), "{path:?}");
                assert!(
                    !path.split('/').any(|s| s == "." || s == ".."),
                    "{path:?} keeps a dot segment"
                );
            }
            let again = tunnel_server::fuzzing::vhost_request(&host, path);
            assert_eq!(again.path.as_ref(), Some(path), "path spelling not stable");
            assert!(key.len() <= path.len(), "{key:?} longer than {path:?}");
        }
        (None, None) => {}
        other => panic!("a match key without a path or the reverse: {other:?}"),
    }
}
