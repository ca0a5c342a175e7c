//! Host names as the routing table sees them: a Host header or a configured domain made
//! canonical (lowercase, no port, no trailing dot; IPv6 literals in brackets), locations made
//! canonical, and the label that keeps `https` routes (by SNI) apart from `http` ones.

use crate::ServerError;

/// The label that keeps `https` routes (by SNI) apart from `http` ones (by Host) in the one
/// table: appended to an https proxy's hosts it puts them in a tree of their own, so a name
/// may be served over http by one client and over https by another. No Host header reaches
/// that tree ([`normalize_host`] refuses the label) and no domain can name it
/// ([`normalize_domain`] refuses a label starting with '-').
const SNI_LABEL: &str = "-sni";

/// `a.example` (normalised, as routed) → its key among `https` routes.
pub(crate) fn sni_host(host: &str) -> String {
    format!("{host}.{SNI_LABEL}")
}

/// Whether `host` is an `https` route's key (see [`sni_host`]).
pub(crate) fn is_sni_host(host: &str) -> bool {
    host.strip_suffix(SNI_LABEL)
        .is_some_and(|h| h.ends_with('.'))
}

/// The host as the user wrote it, for messages: without the label [`sni_host`] adds.
pub(crate) fn display_host(host: &str) -> &str {
    host.strip_suffix(SNI_LABEL)
        .and_then(|h| h.strip_suffix('.'))
        .unwrap_or(host)
}

/// The longest domain a proxy can register (a DNS name; see [`normalize_domain`]).
const MAX_DOMAIN: usize = 253;

/// The registered domains that could serve `raw` (a Host header value), in the order a local
/// lookup prefers them: the name itself, then each wildcard above it, most specific first
/// (`a.b.example.com`: itself, `*.b.example.com`, `*.example.com`, `*.com`). For asking a
/// cluster registry, which keeps domains as registered. Empty for no host, or one longer
/// than any domain (so a request's Host costs at most ~127 short lookups, whatever its size).
pub(crate) fn domain_candidates(raw: &str) -> Vec<String> {
    let Some(host) = normalize_host(raw).filter(|h| h.len() <= MAX_DOMAIN) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !host.starts_with('[') {
        let mut rest = host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            out.push(format!("*.{parent}"));
            rest = parent;
        }
    }
    out.insert(0, host);
    out
}

/// A Host header value as the table keys it: lowercase, no port, no trailing dot.
/// `None` for something that is no host at all.
pub(crate) fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let host = if let Some(v6) = raw.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        if !(after.is_empty() || port_ok(after.strip_prefix(':')?)) {
            return None;
        }
        format!("[{inner}]")
    } else {
        let name = match raw.rsplit_once(':') {
            Some((name, port)) if port_ok(port) => name,
            Some(_) => return None,
            None => raw,
        };
        name.trim_end_matches('.').to_owned()
    };
    let host = host.to_ascii_lowercase();
    if host.ends_with(&format!(".{SNI_LABEL}")) || host == SNI_LABEL {
        return None; // the https routes' own tree: see `sni_host`
    }
    let valid = !host.is_empty()
        && (host.starts_with('[')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_'));
    valid.then_some(host)
}

fn port_ok(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Check a configured domain (`app.example.com`, `*.example.com`) and normalise it.
pub(crate) fn normalize_domain(domain: &str) -> Result<String, ServerError> {
    let bad = || ServerError::NotADomain {
        domain: domain.to_owned(),
    };
    let (wild, name) = match domain.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, domain),
    };
    if name.contains(':') && !name.starts_with('[') {
        return Err(bad());
    }
    let host = normalize_host(name).ok_or_else(bad)?;
    let labels_ok = host.starts_with('[')
        || host
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-'));
    if !labels_ok || host.len() > 253 || (wild && host.starts_with('[')) {
        return Err(bad());
    }
    Ok(if wild { format!("*.{host}") } else { host })
}

/// Check a configured location and normalise it (`/api/` → `/api`).
pub(crate) fn normalize_location(location: &str) -> Result<String, ServerError> {
    if !location.starts_with('/') || location.contains(['?', '#', ' ']) {
        return Err(ServerError::NotALocation {
            location: location.to_owned(),
        });
    }
    let trimmed = location.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn domain_candidates_go_from_the_name_to_the_widest_wildcard() {
        assert_eq!(
            domain_candidates("A.b.Example.com:8080"),
            [
                "a.b.example.com",
                "*.b.example.com",
                "*.example.com",
                "*.com"
            ]
        );
        assert_eq!(domain_candidates("localhost."), ["localhost"]);
        assert_eq!(domain_candidates("[::1]:80"), ["[::1]"]);
        assert!(domain_candidates("a b").is_empty());
        assert!(domain_candidates("").is_empty());
        // Longer than any domain: nothing to ask, however many labels it has.
        assert!(domain_candidates(&"a.".repeat(30_000)).is_empty());
        let longest = format!("{}.com", "a".repeat(MAX_DOMAIN - 4));
        assert_eq!(domain_candidates(&longest).len(), 2);
        // Every candidate is a domain as a proxy registers it.
        for d in domain_candidates("x.dev.example.com") {
            assert_eq!(normalize_domain(&d).unwrap(), d);
        }
    }

    #[test]
    fn domains_and_locations_are_checked_and_normalised() {
        assert_eq!(
            normalize_domain("App.Example.com").unwrap(),
            "app.example.com"
        );
        assert_eq!(
            normalize_domain("*.Dev.example.com").unwrap(),
            "*.dev.example.com"
        );
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "app.example.com:80",
            "http://a",
            "a.*.b",
            "-a.b",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?}");
        }
        assert_eq!(normalize_location("/api/").unwrap(), "/api");
        assert_eq!(normalize_location("/").unwrap(), "/");
        assert_eq!(normalize_location("//").unwrap(), "/");
        for bad in ["api", "", "/a?b", "/a b"] {
            assert!(normalize_location(bad).is_err(), "{bad:?}");
        }
    }
}
