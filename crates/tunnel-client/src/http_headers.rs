//! Header rewriting between the user and the local service: hop-by-hop headers,
//! X-Forwarded-*, `host_rewrite`, and the configured request/response headers.
//!
//! Forwarding headers are facts only when the first hop that saw the user wrote them. A
//! request from the server's virtual host has them written already (the vhost replaced the
//! user's claims and appended the user to `X-Forwarded-For`), so they are kept; a request
//! from the proxy's public port reaches this client first, so the user's `X-Forwarded-Host`,
//! `X-Forwarded-Proto`, `X-Real-IP` and `Forwarded` are replaced and the user appended to
//! `X-Forwarded-For`. [`Entry::of`] tells the two apart.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::HttpOptions;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); a proxy must
/// not forward them. `te` and `trailer` are handled by hyper per hop.
const HOP_BY_HOP: [&str; 7] = [
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
const PROTECTED: [&str; 8] = [
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "forwarded",
];

/// Where a user's request entered the tunnel, which decides who writes the forwarding
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// The server's virtual host, which wrote them: keep them.
    Vhost,
    /// The proxy's public port, or a visitor: this client is the first hop that knows the
    /// user, so it writes them.
    Direct,
}

impl Entry {
    /// From the stream's header: the server names the address the user reached as `dest`,
    /// which is the proxy's own `publish_port` for its public port, none for a visitor, and
    /// the virtual host's address otherwise. Anything unclear counts as `Direct`, where the
    /// user's claims are overwritten: the safe side.
    pub(crate) fn of(publish_port: Option<u16>, dest: Option<SocketAddr>) -> Entry {
        match dest {
            Some(d) if Some(d.port()) != publish_port => Entry::Vhost,
            _ => Entry::Direct,
        }
    }
}

/// Whether the request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Remove hop-by-hop headers, and any header the `Connection` header names. For an
/// upgrade, `Connection: upgrade` and `Upgrade` are what the next hop must see, so they stay.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !PROTECTED.contains(&n.as_str()))
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

/// Rewrite a request's headers for the local service.
pub(crate) fn request(
    headers: &mut HeaderMap,
    opts: &HttpOptions,
    user: Option<IpAddr>,
    entry: Entry,
) {
    let upgrade = is_upgrade(headers);
    strip_hop_by_hop(headers, upgrade);
    if opts.forwarded_headers && entry == Entry::Direct {
        forwarded(headers, user);
    }
    if let Some(host) = &opts.host_rewrite {
        // Validated with the config.
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(header::HOST, v);
        }
    }
    set_all(headers, &opts.request_headers);
}

/// Rewrite a response's headers for the user.
pub(crate) fn response(headers: &mut HeaderMap, opts: &HttpOptions, switching: bool) {
    strip_hop_by_hop(headers, switching);
    set_all(headers, &opts.response_headers);
}

/// As the first hop: `X-Forwarded-For: <what came in>, <user>` (several incoming lines are
/// joined, as the list they are); `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Real-IP` and
/// `Forwarded` say what this hop saw, whatever the user claimed.
fn forwarded(headers: &mut HeaderMap, user: Option<IpAddr>) {
    const XFF: &str = "x-forwarded-for";
    const X_REAL_IP: &str = "x-real-ip";
    if let Some(ip) = user {
        let mut list: Vec<String> = headers
            .get_all(XFF)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        list.push(ip.to_string());
        if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
            headers.insert(XFF, v);
        }
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            headers.insert(X_REAL_IP, v);
        }
    } else {
        headers.remove(X_REAL_IP);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let host = headers.get(header::HOST).cloned();
    match &host {
        Some(h) => headers.insert("x-forwarded-host", h.clone()),
        None => headers.remove("x-forwarded-host"),
    };
    let mut element = match user {
        Some(IpAddr::V4(v4)) => format!("for={v4};"),
        Some(IpAddr::V6(v6)) => format!("for=\"[{v6}]\";"),
        None => String::new(),
    };
    if let Some(h) = host.as_ref().and_then(|h| h.to_str().ok()) {
        let h: String = h.chars().filter(|c| *c != '"' && *c != '\\').collect();
        element.push_str(&format!("host=\"{h}\";"));
    }
    element.push_str("proto=http");
    if let Ok(v) = HeaderValue::from_str(&element) {
        headers.insert(header::FORWARDED, v);
    }
}

fn set_all(headers: &mut HeaderMap, set: &std::collections::BTreeMap<String, String>) {
    for (k, v) in set {
        // Validated with the config; an invalid pair cannot get here.
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn xff_is_appended_and_lines_joined() {
        let mut h = map(&[
            ("host", "a.example"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        request(
            &mut h,
            &HttpOptions::default(),
            Some([9, 9, 9, 9].into()),
            Entry::Direct,
        );
        assert_eq!(h["x-forwarded-for"], "2.2.2.2, 3.3.3.3, 9.9.9.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
    }

    #[test]
    fn forwarded_headers_can_be_turned_off() {
        let mut h = map(&[("host", "a")]);
        let opts = HttpOptions {
            forwarded_headers: false,
            ..HttpOptions::default()
        };
        request(&mut h, &opts, Some([9, 9, 9, 9].into()), Entry::Direct);
        assert!(!h.contains_key("x-forwarded-for"));
    }

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
    fn host_rewrite_and_set_headers() {
        let mut h = map(&[("host", "public.example"), ("x-a", "old")]);
        let mut opts = HttpOptions {
            host_rewrite: Some("internal:8080".into()),
            ..HttpOptions::default()
        };
        opts.request_headers.insert("x-a".into(), "new".into());
        request(&mut h, &opts, None, Entry::Direct);
        assert_eq!(h["host"], "internal:8080");
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-a"], "new");
    }

    #[test]
    fn the_first_hop_replaces_a_users_claims() {
        let mut h = map(&[
            ("host", "app.example"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let user = Some([9, 9, 9, 9].into());
        request(&mut h, &HttpOptions::default(), user, Entry::Direct);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 9.9.9.9");
        assert_eq!(h["x-forwarded-host"], "app.example");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "9.9.9.9");
        assert_eq!(
            h["forwarded"],
            "for=9.9.9.9;host=\"app.example\";proto=http"
        );
    }

    #[test]
    fn what_the_vhost_wrote_is_kept() {
        let vhost_wrote = [
            ("host", "app.example"),
            ("x-forwarded-for", "6.6.6.6, 9.9.9.9"),
            ("x-forwarded-host", "app.example"),
            ("x-forwarded-proto", "https"),
            ("x-real-ip", "9.9.9.9"),
        ];
        let mut h = map(&vhost_wrote);
        let user = Some([9, 9, 9, 9].into());
        request(&mut h, &HttpOptions::default(), user, Entry::Vhost);
        for (k, v) in vhost_wrote {
            assert_eq!(h[k], v, "{k}");
        }
    }

    #[test]
    fn entry_is_told_by_the_address_the_user_reached() {
        let at = |p: u16| Some(SocketAddr::from(([127, 0, 0, 1], p)));
        assert_eq!(Entry::of(Some(8080), at(8080)), Entry::Direct);
        assert_eq!(Entry::of(Some(8080), at(80)), Entry::Vhost);
        assert_eq!(Entry::of(None, at(80)), Entry::Vhost);
        assert_eq!(Entry::of(None, None), Entry::Direct, "a visitor");
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
}
