//! Headers that belong to one connection, not to the message, and which of them a user may
//! not have removed.
//!
//! A proxy must not forward hop-by-hop headers (RFC 9110 §7.6.1), and a `Connection` header
//! may name more of them. That naming is the user's to write, so it is also a way for a user
//! to strip headers a hop added about them: [`PROTECTED`] names the ones no listing removes.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, not the message; `te` and `trailer` are handled by
/// hyper per hop.
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a `Connection` listing may not remove: the target, the framing (hyper's), and the
/// forwarding headers (a user listing `x-forwarded-for` would hide themselves from the
/// service).
pub const PROTECTED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
];

/// Whether a `Connection` listing may not remove `name` (any case).
pub fn is_protected(name: &str) -> bool {
    PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Remove hop-by-hop headers, and any header the `Connection` header names. For an
/// upgrade, `Connection: upgrade` and `Upgrade` are what the next hop must see, so they stay.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !is_protected(n.as_str()))
        .collect();
    for name in named {
        if !(keep_upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    // `TE: trailers` is the one TE value HTTP/2 allows, and gRPC servers require it.
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        if keep_upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Drop from the `Connection` header any token naming a [`PROTECTED`] header, for a hop that
/// passes the header on: no later hop then removes them on the user's say-so.
pub fn sanitize_connection(headers: &mut HeaderMap) {
    let listed: Vec<String> = connection_tokens(headers).map(str::to_owned).collect();
    if listed.is_empty() {
        return;
    }
    let kept: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|t| !is_protected(t))
        .collect();
    if kept.len() == listed.len() {
        return;
    }
    headers.remove(header::CONNECTION);
    if let Ok(v) = HeaderValue::from_str(&kept.join(", ")) {
        if !kept.is_empty() {
            headers.insert(header::CONNECTION, v);
        }
    }
}

/// The comma-separated tokens of every `Connection` line, trimmed; lines that are not text
/// name nothing.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::map;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_headers_survive_an_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = map(&[("te", "trailers"), ("trailer", "grpc-status")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
        assert!(!h.contains_key("trailer"));
    }

    #[test]
    fn connection_cannot_strip_host_framing_or_forwarding_headers() {
        let mut h = map(&[
            (
                "connection",
                "host, x-forwarded-for, x-real-ip, forwarded, content-length, x-hop",
            ),
            ("host", "app.example"),
            ("x-forwarded-for", "9.9.9.9"),
            ("x-real-ip", "9.9.9.9"),
            ("forwarded", "for=9.9.9.9"),
            ("content-length", "0"),
            ("x-hop", "1"),
        ]);
        strip_hop_by_hop(&mut h, false);
        for k in [
            "host",
            "x-forwarded-for",
            "x-real-ip",
            "forwarded",
            "content-length",
        ] {
            assert!(h.contains_key(k), "{k} survives");
        }
        assert!(!h.contains_key("x-hop") && !h.contains_key("connection"));
    }

    #[test]
    fn connection_may_not_list_protected_headers() {
        let mut h = map(&[("connection", "Host, x-forwarded-for, keep-alive, x-hop")]);
        sanitize_connection(&mut h);
        assert_eq!(h["connection"], "keep-alive, x-hop");
        let mut h = map(&[("connection", "host")]);
        sanitize_connection(&mut h);
        assert!(!h.contains_key("connection"));
    }
}
