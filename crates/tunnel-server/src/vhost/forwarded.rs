//! The forwarding headers the virtual host writes: who the user is, and which host and
//! scheme they asked for.
//!
//! The vhost is the first hop a user reaches, so what a user sends in `X-Forwarded-Host`,
//! `X-Forwarded-Proto`, `X-Real-IP` or `Forwarded` is a claim, not a fact: those are
//! replaced. `X-Forwarded-For` is a list each hop appends to, so the user's address is
//! appended and what came before is kept for the service to weigh. Only a front proxy listed
//! in `trusted_proxies` (a TLS terminator, a CDN) is believed about the host, the scheme and
//! the user's address. The owning client sees the stream came from the vhost and leaves these
//! headers as they are.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Headers a `Connection` listing must not remove on the way to the service: the request's
/// target, its framing (hyper's), and what the vhost just wrote about the user.
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

/// An address block such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    net: IpAddr,
    len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or CIDR block (e.g. \"10.0.0.0/8\")");
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { net, len })
    }
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The front proxies whose forwarding headers are believed (`trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parse the configured list; the error names the bad entry.
    pub(crate) fn parse(list: &[String]) -> Result<Self, String> {
        list.iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// Who sent a request: the TCP peer, and the user it speaks for (the same, unless the peer
/// is a trusted proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    pub peer: IpAddr,
    pub user: IpAddr,
    pub via_trusted: bool,
}

impl Origin {
    /// The user behind `peer`: with a trusted peer, the rightmost `X-Forwarded-For` entry that
    /// is not itself a trusted proxy (entries left of it are the user's own claims).
    pub(super) fn of(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> Origin {
        if !trusted.contains(peer) {
            return Origin {
                peer,
                user: peer,
                via_trusted: false,
            };
        }
        // A proxy that sends only X-Real-IP (a common nginx setup) names the user there.
        let mut user = headers
            .get(&X_REAL_IP)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(peer);
        for entry in xff_entries(headers).iter().rev() {
            let Ok(ip) = entry.parse::<IpAddr>() else {
                break;
            };
            user = ip;
            if !trusted.contains(ip) {
                break;
            }
        }
        Origin {
            peer,
            user,
            via_trusted: true,
        }
    }
}

/// Set the forwarding headers for a request routed by `host` from `origin`.
pub(crate) fn set(headers: &mut HeaderMap, host: &str, origin: Origin) {
    let trusted = origin.via_trusted;
    let mut list = xff_entries(headers);
    list.push(origin.peer.to_string());
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        headers.insert(XFF, v);
    }
    if !(trusted && headers.contains_key(&XFH)) {
        if let Ok(v) = HeaderValue::from_str(host) {
            headers.insert(XFH, v);
        }
    }
    if !(trusted && headers.contains_key(&XFP)) {
        headers.insert(XFP, HeaderValue::from_static("http"));
    }
    if let Ok(v) = HeaderValue::from_str(&origin.user.to_string()) {
        headers.insert(X_REAL_IP, v);
    }
    // RFC 7239: one element per hop; a trusted proxy's elements are kept and ours appended.
    let ours = forwarded_element(origin.peer, host);
    let mut elements: Vec<&str> = if trusted {
        headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    elements.push(&ours);
    let value = elements.join(", ");
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::FORWARDED, v);
    }
}

/// Drop from the `Connection` header any token naming a [`PROTECTED`] header, so no later
/// hop removes them on the user's say-so.
pub(crate) fn sanitize_connection(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if listed.is_empty() {
        return;
    }
    let kept: Vec<&str> = listed
        .iter()
        .map(String::as_str)
        .filter(|t| !PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(t)))
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

fn xff_entries(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(&XFF)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn forwarded_element(peer: IpAddr, host: &str) -> String {
    let host: String = host.chars().filter(|c| *c != '"' && *c != '\\').collect();
    match peer {
        IpAddr::V4(v4) => format!("for={v4};host=\"{host}\";proto=http"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\";host=\"{host}\";proto=http"),
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SPOOFED: [(&str, &str); 5] = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6;proto=https"),
    ];

    #[test]
    fn a_users_claims_are_replaced_and_xff_appended() {
        let mut h = map(&SPOOFED);
        let none = TrustedProxies::default();
        let origin = Origin::of(&h, ip("203.0.113.9"), &none);
        assert_eq!(origin.user, ip("203.0.113.9"));
        set(&mut h, "app.example.com", origin);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 203.0.113.9");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(
            h["forwarded"],
            "for=203.0.113.9;host=\"app.example.com\";proto=http"
        );
    }

    #[test]
    fn a_trusted_front_proxy_is_believed() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.1".into()]).unwrap();
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.1.1"),
            ("x-forwarded-host", "app.example.com"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=198.51.100.7;proto=https"),
        ]);
        let origin = Origin::of(&h, ip("192.0.2.1"), &trusted);
        assert_eq!(origin.user, ip("198.51.100.7"), "rightmost untrusted entry");
        set(&mut h, "app.example.com", origin);
        assert_eq!(
            h["x-forwarded-for"],
            "6.6.6.6, 198.51.100.7, 10.1.1.1, 192.0.2.1"
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-real-ip"], "198.51.100.7");
        assert_eq!(
            h["forwarded"],
            "for=198.51.100.7;proto=https, for=192.0.2.1;host=\"app.example.com\";proto=http"
        );
    }

    #[test]
    fn a_trusted_proxy_may_name_the_user_in_x_real_ip_alone() {
        let trusted = TrustedProxies::parse(&["127.0.0.1".into()]).unwrap();
        let h = map(&[("x-real-ip", "198.51.100.7")]);
        assert_eq!(
            Origin::of(&h, ip("127.0.0.1"), &trusted).user,
            ip("198.51.100.7")
        );
        let untrusted = Origin::of(&h, ip("127.0.0.2"), &trusted);
        assert_eq!(untrusted.user, ip("127.0.0.2"));
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.0.1")) && !c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.0.0.1")));
        let c: Cidr = "2001:db8::/33".parse().unwrap();
        assert!(c.contains(ip("2001:db8:7fff::1")) && !c.contains(ip("2001:db8:8000::1")));
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("1.2.3.4")));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
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
