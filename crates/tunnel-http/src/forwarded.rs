//! The forwarding headers a hop writes: who the user is, and which host and scheme they
//! asked for.
//!
//! The first hop a user reaches is the first that knows them, so what a user sends in
//! `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Real-IP` or `Forwarded` is a claim, not a
//! fact: [`Claims::Replace`] replaces those. `X-Forwarded-For` is a list each hop appends to,
//! so the peer's address is appended and what came before is kept for the service to weigh.
//! Only a front proxy the caller trusts (a TLS terminator, a CDN: see [`TrustedProxies`] and
//! [`Origin`]) is believed about the host, the scheme and the user's address:
//! [`Claims::Keep`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::Error;

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// An address block such as `10.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadCidr(s.to_owned());
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
    /// Whether `ip` is in the block; an IPv4-mapped IPv6 address counts as its IPv4 address,
    /// as a dual-stack listener reports IPv4 peers that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
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

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.len)
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = (usize::from(bits / 8), bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The front proxies whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parse a configured list; the error names the first bad entry.
    pub fn parse(list: &[String]) -> Result<Self, Error> {
        list.iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// Who sent a request: the TCP peer, and the user it speaks for (the same, unless the peer
/// is a trusted proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub peer: IpAddr,
    pub user: IpAddr,
    pub via_trusted: bool,
}

impl Origin {
    /// The user behind `peer`: with a trusted peer, the rightmost `X-Forwarded-For` entry that
    /// is not itself a trusted proxy (entries left of it are the user's own claims).
    pub fn of(headers: &HeaderMap, peer: IpAddr, trusted: &TrustedProxies) -> Origin {
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

    /// What this hop knows, for [`write()`]: the host is the one the request was routed by.
    pub fn hop<'a>(&self, host: Option<&'a HeaderValue>, scheme: Scheme) -> Hop<'a> {
        Hop {
            peer: Some(self.peer),
            user: Some(self.user),
            host,
            scheme,
        }
    }

    /// A trusted proxy's claims are kept; anyone else's are replaced.
    pub fn claims(&self) -> Claims {
        if self.via_trusted {
            Claims::Keep
        } else {
            Claims::Replace
        }
    }
}

/// The scheme the user spoke to this hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// What a hop knows about the request it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop<'a> {
    /// The address the request came from: appended to `X-Forwarded-For` and named in
    /// `Forwarded` (none: neither is written, as there is nothing true to say).
    pub peer: Option<IpAddr>,
    /// The user the peer speaks for: `X-Real-IP` (none: removed).
    pub user: Option<IpAddr>,
    /// The host the user asked for: `X-Forwarded-Host` (none: removed).
    pub host: Option<&'a HeaderValue>,
    pub scheme: Scheme,
}

impl<'a> Hop<'a> {
    /// The hop that received the request from the user itself, so the peer is the user.
    pub fn first(user: Option<IpAddr>, host: Option<&'a HeaderValue>, scheme: Scheme) -> Self {
        Hop {
            peer: user,
            user,
            host,
            scheme,
        }
    }
}

/// Whether the forwarding headers that came in are believed: the caller's trust decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claims {
    /// They are the user's claims: the host, the scheme, the user and the `Forwarded`
    /// elements are replaced by what this hop saw.
    Replace,
    /// A trusted proxy wrote them: a host and scheme it named are kept, and this hop's
    /// `Forwarded` element follows its elements.
    Keep,
}

/// Write the forwarding headers for `hop`. `X-Forwarded-For` is appended to either way
/// (several incoming lines are joined, as the list they are).
pub fn write(headers: &mut HeaderMap, hop: &Hop<'_>, claims: Claims) {
    let keep = claims == Claims::Keep;
    if let Some(peer) = hop.peer {
        let mut list = xff_entries(headers);
        list.push(peer.to_string());
        if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
            headers.insert(XFF, v);
        }
    }
    if !(keep && headers.contains_key(&XFH)) {
        match hop.host {
            Some(h) => headers.insert(XFH, h.clone()),
            None => headers.remove(&XFH),
        };
    }
    if !(keep && headers.contains_key(&XFP)) {
        headers.insert(XFP, HeaderValue::from_static(hop.scheme.as_str()));
    }
    match hop.user.map(|ip| HeaderValue::from_str(&ip.to_string())) {
        Some(Ok(v)) => {
            headers.insert(X_REAL_IP, v);
        }
        _ => {
            headers.remove(&X_REAL_IP);
        }
    }
    // RFC 7239: one element per hop.
    let ours = forwarded_element(hop);
    let mut elements: Vec<&str> = if keep {
        headers
            .get_all(header::FORWARDED)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    elements.push(&ours);
    if let Ok(v) = HeaderValue::from_str(&elements.join(", ")) {
        headers.insert(header::FORWARDED, v);
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

/// `for=...;host="...";proto=...`, leaving out what the hop does not know. A quote or
/// backslash in the host would end or escape the quoted string, so they are dropped.
fn forwarded_element(hop: &Hop<'_>) -> String {
    let mut element = match hop.peer {
        Some(IpAddr::V4(v4)) => format!("for={v4};"),
        Some(IpAddr::V6(v6)) => format!("for=\"[{v6}]\";"),
        None => String::new(),
    };
    if let Some(h) = hop.host.and_then(|h| h.to_str().ok()) {
        let h: String = h.chars().filter(|c| *c != '"' && *c != '\\').collect();
        element.push_str(&format!("host=\"{h}\";"));
    }
    element.push_str("proto=");
    element.push_str(hop.scheme.as_str());
    element
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tests::map;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(headers: &mut HeaderMap, host: &str, origin: Origin) {
        let host = HeaderValue::from_str(host).unwrap();
        write(
            headers,
            &origin.hop(Some(&host), Scheme::Http),
            origin.claims(),
        );
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
    fn xff_is_appended_and_lines_joined() {
        let mut h = map(&[
            ("host", "a.example"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let host = h.get("host").cloned();
        let hop = Hop::first(Some(ip("9.9.9.9")), host.as_ref(), Scheme::Http);
        write(&mut h, &hop, Claims::Replace);
        assert_eq!(h["x-forwarded-for"], "2.2.2.2, 3.3.3.3, 9.9.9.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
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
        let host = h.get("host").cloned();
        let hop = Hop::first(Some(ip("9.9.9.9")), host.as_ref(), Scheme::Http);
        write(&mut h, &hop, Claims::Replace);
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
    fn what_a_hop_does_not_know_is_not_claimed() {
        let mut h = map(&SPOOFED);
        write(
            &mut h,
            &Hop::first(None, None, Scheme::Http),
            Claims::Replace,
        );
        assert_eq!(h["x-forwarded-for"], "6.6.6.6", "nothing to append");
        assert!(!h.contains_key("x-forwarded-host") && !h.contains_key("x-real-ip"));
        assert_eq!(h["forwarded"], "proto=http");
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
            assert_eq!(
                bad.parse::<Cidr>(),
                Err(Error::BadCidr(bad.to_owned())),
                "{bad}"
            );
        }
    }
}
