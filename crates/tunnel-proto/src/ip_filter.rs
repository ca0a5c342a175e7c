//! `allow_ips` / `deny_ips`: which user addresses may reach a proxy or the server's ports.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ProtoError;

/// Most entries in one `allow_ips` or `deny_ips` list. Lists travel in a client's
/// registration and are checked on every user connection: a bound keeps both small. Longer
/// lists belong in a firewall.
pub const MAX_IP_RULES: usize = 256;

/// An allow list and a deny list of networks. A deny match wins; an empty allow list lets
/// every address not denied in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpFilter {
    /// Parse both lists: CIDRs (`"10.0.0.0/8"`, `"2001:db8::/32"`) or single addresses
    /// (`"192.0.2.7"`, `"::1"`).
    ///
    /// # Errors
    ///
    /// [`ProtoError::BadIpRule`] naming the list (`allow_ips` or `deny_ips`) and the entry,
    /// or [`ProtoError::TooManyIpRules`].
    pub fn new<S: AsRef<str>>(allow: &[S], deny: &[S]) -> Result<Self, ProtoError> {
        Ok(IpFilter {
            allow: parse_list("allow_ips", allow)?,
            deny: parse_list("deny_ips", deny)?,
        })
    }

    /// Whether a connection from `ip` may pass. An IPv4 address seen through an IPv6 socket
    /// (`::ffff:192.0.2.7`) is matched as the IPv4 address it is.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Whether the filter lets every address in (both lists empty): nothing to check.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl ProtoError {
    /// The list (`allow_ips` or `deny_ips`) an [`IpFilter`] error is about.
    pub fn ip_rule_field(&self) -> Option<&'static str> {
        match self {
            ProtoError::BadIpRule { field, .. } | ProtoError::TooManyIpRules { field, .. } => {
                Some(field)
            }
            _ => None,
        }
    }
}

fn parse_list<S: AsRef<str>>(field: &'static str, list: &[S]) -> Result<Vec<IpNet>, ProtoError> {
    if list.len() > MAX_IP_RULES {
        return Err(ProtoError::TooManyIpRules {
            field,
            len: list.len(),
            max: MAX_IP_RULES,
        });
    }
    list.iter()
        .map(|entry| {
            let text = entry.as_ref().trim();
            let bad = || ProtoError::BadIpRule {
                field,
                entry: text.chars().take(64).collect(),
            };
            match text.parse::<IpNet>() {
                // `10.1.2.3/8` is most likely a typo for a host or for `10.0.0.0/8`: ask.
                Ok(net) if net.trunc() != net => Err(bad()),
                Ok(net) => Ok(net),
                Err(_) => text.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_lets_the_rest_in() {
        let f = IpFilter::new(&["10.0.0.0/8"], &["10.9.0.0/16"]).unwrap();
        assert!(f.permits(ip("10.1.2.3")));
        assert!(!f.permits(ip("10.9.2.3")), "deny wins over allow");
        assert!(!f.permits(ip("192.0.2.1")), "not in the allow list");

        let f = IpFilter::new::<&str>(&[], &["127.0.0.2"]).unwrap();
        assert!(f.permits(ip("127.0.0.1")));
        assert!(!f.permits(ip("127.0.0.2")));
        assert!(IpFilter::new::<&str>(&[], &[]).unwrap().is_open());
    }

    #[test]
    fn ipv6_cidrs_and_addresses() {
        let f = IpFilter::new(&["2001:db8::/32", "::1"], &["2001:db8:bad::/48"]).unwrap();
        assert!(f.permits(ip("2001:db8:1::5")));
        assert!(f.permits(ip("::1")));
        assert!(!f.permits(ip("2001:db8:bad::1")));
        assert!(!f.permits(ip("2001:db9::1")));
        assert!(
            !f.permits(ip("127.0.0.1")),
            "an IPv6 list does not match IPv4"
        );
        let f = IpFilter::new(&["fe80::/10"], &[]).unwrap();
        assert!(f.permits(ip("fe80::1:2:3:4")));
    }

    #[test]
    fn ipv4_seen_through_an_ipv6_socket_matches_its_ipv4_rule() {
        let f = IpFilter::new::<&str>(&[], &["192.0.2.0/24"]).unwrap();
        assert!(!f.permits(ip("::ffff:192.0.2.9")));
        assert!(f.permits(ip("::ffff:198.51.100.1")));
    }

    #[test]
    fn bad_entries_are_named_with_their_list() {
        for (bad, what) in [
            ("10.0.0.0/33", "prefix too long"),
            ("2001:db8::/129", "v6 prefix too long"),
            ("10.1.2.3/8", "host bits set"),
            ("2001:db8::1/32", "v6 host bits set"),
            ("example.com", "a name"),
            ("10.0.0.0/", "no prefix"),
            ("", "empty"),
        ] {
            let e = IpFilter::new(&["::/0"], &[bad]).unwrap_err();
            assert_eq!(e.ip_rule_field(), Some("deny_ips"), "{what}");
            let e = e.to_string();
            assert!(e.contains(&format!("{bad:?}")), "{what}: {e}");
        }
        let many: Vec<String> = (0..=MAX_IP_RULES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        let e = IpFilter::new(&many, &[]).unwrap_err();
        assert_eq!(e.ip_rule_field(), Some("allow_ips"));
        assert!(e.to_string().contains("256"), "{e}");
    }
}
