//! Header rewriting between the user and the local service: when [`tunnel_http`]'s rules
//! apply (hop-by-hop headers, X-Forwarded-*), `host_rewrite`, and the configured
//! request/response headers.
//!
//! Forwarding headers are facts only when the first hop that saw the user wrote them. A
//! request from the server's virtual host has them written already (the vhost replaced the
//! user's claims and appended the user to `X-Forwarded-For`), so they are kept; a request
//! from the proxy's public port reaches this client first, so the user's `X-Forwarded-Host`,
//! `X-Forwarded-Proto`, `X-Real-IP` and `Forwarded` are replaced and the user appended to
//! `X-Forwarded-For`. [`Entry::of`] tells the two apart.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tunnel_http::forwarded::{self, Claims, Hop, Scheme};
use tunnel_http::hop_by_hop::{is_upgrade, strip_hop_by_hop};

use crate::HttpOptions;

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
        let host = headers.get(header::HOST).cloned();
        let hop = Hop::first(user, host.as_ref(), Scheme::Http);
        forwarded::write(headers, &hop, Claims::Replace);
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

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let pair = |(k, v): &(&'static str, &'static str)| {
            (HeaderName::from_static(k), HeaderValue::from_static(v))
        };
        pairs.iter().map(pair).collect()
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
            ("x-forwarded-host", "evil.example"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        let user = Some([9, 9, 9, 9].into());
        request(&mut h, &HttpOptions::default(), user, Entry::Direct);
        // What is written is tunnel_http's to test; here, that it is written and from what.
        assert_eq!(h["x-real-ip"], "9.9.9.9");
        assert_eq!(h["x-forwarded-host"], "app.example");
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
}
