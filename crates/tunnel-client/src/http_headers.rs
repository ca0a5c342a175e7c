//! Header rewriting between the user and the local service: hop-by-hop headers,
//! X-Forwarded-*, `host_rewrite`, and the configured request/response headers.

use std::net::IpAddr;

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
pub(crate) fn request(headers: &mut HeaderMap, opts: &HttpOptions, user: Option<IpAddr>) {
    let upgrade = is_upgrade(headers);
    strip_hop_by_hop(headers, upgrade);
    if opts.forwarded_headers {
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

/// `X-Forwarded-For: <what came in>, <user>` (several incoming lines are joined, as the
/// list they are); `X-Forwarded-Proto` and `X-Forwarded-Host` are set unless an earlier
/// proxy set them, since they describe the first hop.
fn forwarded(headers: &mut HeaderMap, user: Option<IpAddr>) {
    const XFF: &str = "x-forwarded-for";
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
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if !headers.contains_key("x-forwarded-host") {
        if let Some(host) = headers.get(header::HOST).cloned() {
            headers.insert("x-forwarded-host", host);
        }
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
        request(&mut h, &HttpOptions::default(), Some([9, 9, 9, 9].into()));
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
        request(&mut h, &opts, Some([9, 9, 9, 9].into()));
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
        request(&mut h, &opts, None);
        assert_eq!(h["host"], "internal:8080");
        assert_eq!(h["x-forwarded-host"], "public.example");
        assert_eq!(h["x-a"], "new");
    }
}
