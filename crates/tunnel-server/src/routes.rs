//! The virtual-host routing table: `(host pattern, path prefix)` → a proxy. Pure data, no I/O,
//! so every rule is unit-tested here.
//!
//! Rules: an exact host beats a wildcard; `*.example.com` matches any depth below
//! `example.com` (not `example.com` itself), and the most specific wildcard wins; within a
//! host the longest location wins, matched on whole path segments (`/api` takes `/api` and
//! `/api/x`, never `/apix`). Hosts are compared lowercased, without port or trailing dot.

use std::collections::HashMap;

/// One claim: a host pattern (normalised, `*.` prefix for wildcards) and a location.
pub(crate) type Pair = (String, String);

/// A `(host, location)` already held by another key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict<V> {
    pub host: String,
    pub location: String,
    pub holder: V,
}

/// Routes of every proxy, keyed by `K` (the proxy) so a proxy's routes go with it.
#[derive(Debug)]
pub(crate) struct Routes<K, V> {
    /// Host pattern → (location, owner, value); locations kept longest first.
    hosts: HashMap<String, Vec<(String, K, V)>>,
}

impl<K, V> Default for Routes<K, V> {
    fn default() -> Self {
        Routes {
            hosts: HashMap::new(),
        }
    }
}

impl<K: Eq + Clone, V: Clone> Routes<K, V> {
    /// Make `pairs` the routes of `key`, replacing what it held: all of them or, when another
    /// key holds one of them, none (and that key's value is returned).
    pub fn claim(&mut self, key: &K, pairs: &[Pair], value: V) -> Result<(), Conflict<V>> {
        for (host, location) in pairs {
            let held = self.hosts.get(host).and_then(|locs| {
                locs.iter()
                    .find(|(l, k, _)| l == location && k != key)
                    .map(|(_, _, v)| v.clone())
            });
            if let Some(holder) = held {
                return Err(Conflict {
                    host: host.clone(),
                    location: location.clone(),
                    holder,
                });
            }
        }
        self.release(key);
        for (host, location) in pairs {
            let locs = self.hosts.entry(host.clone()).or_default();
            if locs.iter().any(|(l, _, _)| l == location) {
                continue; // the same pair twice in one proxy's list
            }
            locs.push((location.clone(), key.clone(), value.clone()));
            locs.sort_by_key(|(l, _, _)| std::cmp::Reverse(l.len()));
        }
        Ok(())
    }

    /// Drop every route of `key`.
    pub fn release(&mut self, key: &K) {
        self.hosts.retain(|_, locs| {
            locs.retain(|(_, k, _)| k != key);
            !locs.is_empty()
        });
    }

    /// The value serving `host` (a raw Host header value) at `path`, if any.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&V> {
        let host = normalize_host(host)?;
        let in_host = |pattern: &str| {
            self.hosts.get(pattern).and_then(|locs| {
                locs.iter()
                    .find(|(l, _, _)| location_matches(l, path))
                    .map(|(_, _, v)| v)
            })
        };
        if let Some(v) = in_host(&host) {
            return Some(v);
        }
        if host.starts_with('[') {
            return None; // IPv6 literals have no labels to wildcard
        }
        // Most specific wildcard first: a.b.example.com tries *.b.example.com, *.example.com, *.com.
        let mut rest = host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(v) = in_host(&format!("*.{parent}")) {
                return Some(v);
            }
            rest = parent;
        }
        None
    }

    /// Number of host patterns with at least one route.
    #[cfg(test)]
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }
}

/// Whether `location` (normalised: no trailing slash but for "/") covers `path`.
fn location_matches(location: &str, path: &str) -> bool {
    location == "/"
        || path
            .strip_prefix(location)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
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
pub(crate) fn normalize_domain(domain: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "{domain:?} is not a domain: use a host name like \"app.example.com\" or a \
             wildcard like \"*.example.com\" (no port, no scheme)"
        )
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
pub(crate) fn normalize_location(location: &str) -> Result<String, String> {
    if !location.starts_with('/') || location.contains(['?', '#', ' ']) {
        return Err(format!(
            "{location:?} is not a path prefix: start it with \"/\" (e.g. \"/api\"), no query"
        ));
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

    fn pairs(hosts: &[&str], locs: &[&str]) -> Vec<Pair> {
        hosts
            .iter()
            .flat_map(|h| locs.iter().map(move |l| (h.to_string(), l.to_string())))
            .collect()
    }

    fn table(claims: &[(&str, &[&str], &[&str])]) -> Routes<String, String> {
        let mut t = Routes::default();
        for (key, hosts, locs) in claims {
            t.claim(&key.to_string(), &pairs(hosts, locs), key.to_string())
                .unwrap();
        }
        t
    }

    fn at<'a>(t: &'a Routes<String, String>, host: &str, path: &str) -> Option<&'a str> {
        t.lookup(host, path).map(String::as_str)
    }

    #[test]
    fn exact_beats_wildcard_and_wildcards_go_any_depth() {
        let t = table(&[
            ("wild", &["*.example.com"], &["/"]),
            ("exact", &["app.example.com"], &["/"]),
            ("deeper", &["*.dev.example.com"], &["/"]),
        ]);
        assert_eq!(at(&t, "app.example.com", "/"), Some("exact"));
        assert_eq!(at(&t, "other.example.com", "/x"), Some("wild"));
        assert_eq!(at(&t, "a.b.example.com", "/"), Some("wild"));
        assert_eq!(at(&t, "x.dev.example.com", "/"), Some("deeper"));
        assert_eq!(at(&t, "a.b.dev.example.com", "/"), Some("deeper"));
        assert_eq!(at(&t, "example.com", "/"), None, "a wildcard needs a label");
        assert_eq!(at(&t, "notexample.com", "/"), None);
        assert_eq!(at(&t, "app.example.org", "/"), None);
    }

    #[test]
    fn exact_host_without_a_matching_location_falls_back_to_the_wildcard() {
        let t = table(&[
            ("wild", &["*.example.com"], &["/"]),
            ("api", &["app.example.com"], &["/api"]),
        ]);
        assert_eq!(at(&t, "app.example.com", "/api/v1"), Some("api"));
        assert_eq!(at(&t, "app.example.com", "/other"), Some("wild"));
    }

    #[test]
    fn hosts_are_case_insensitive_and_ports_and_dots_are_ignored() {
        let t = table(&[("a", &["app.example.com"], &["/"])]);
        for h in [
            "APP.Example.COM",
            "app.example.com:8080",
            "app.example.com.",
            " app.example.com ",
        ] {
            assert_eq!(at(&t, h, "/"), Some("a"), "{h}");
        }
        for h in [
            "",
            ":80",
            "app.example.com:x",
            "app.example.com:123456",
            "a b",
            "a/b",
        ] {
            assert_eq!(at(&t, h, "/"), None, "{h:?}");
        }
    }

    #[test]
    fn ipv6_literals() {
        let t = table(&[("v6", &["[::1]"], &["/"]), ("w", &["*.com"], &["/"])]);
        assert_eq!(at(&t, "[::1]", "/"), Some("v6"));
        assert_eq!(at(&t, "[::1]:8080", "/"), Some("v6"));
        assert_eq!(at(&t, "[0:0::1]", "/"), None, "compared as written");
        assert_eq!(at(&t, "[::1", "/"), None);
        assert_eq!(at(&t, "[nothex]", "/"), None);
        assert_eq!(at(&t, "[::1]x", "/"), None);
        assert_eq!(normalize_host("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(normalize_domain("[::1]").unwrap(), "[::1]");
        assert!(normalize_domain("*.[::1]").is_err());
    }

    #[test]
    fn longest_location_on_segment_boundaries() {
        let t = table(&[
            ("root", &["h.test"], &["/"]),
            ("api", &["h.test"], &["/api"]),
            ("v2", &["h.test"], &["/api/v2"]),
        ]);
        assert_eq!(at(&t, "h.test", "/api"), Some("api"));
        assert_eq!(at(&t, "h.test", "/api/x"), Some("api"));
        assert_eq!(at(&t, "h.test", "/apix"), Some("root"));
        assert_eq!(at(&t, "h.test", "/api/v2"), Some("v2"));
        assert_eq!(at(&t, "h.test", "/api/v2/users"), Some("v2"));
        assert_eq!(at(&t, "h.test", "/api/v20"), Some("api"));
        assert_eq!(at(&t, "h.test", "/"), Some("root"));
        let only_api = table(&[("api", &["h.test"], &["/api"])]);
        assert_eq!(at(&only_api, "h.test", "/apix"), None);
        assert_eq!(at(&only_api, "h.test", "/"), None);
    }

    #[test]
    fn duplicates_are_per_host_and_location_and_claims_are_all_or_nothing() {
        let mut t = table(&[("a", &["x.test", "y.test"], &["/api"])]);
        // Same host, other location: fine.
        t.claim(&"b".into(), &pairs(&["x.test"], &["/web"]), "b".into())
            .unwrap();
        // One pair taken: nothing of c's claim lands.
        let err = t
            .claim(
                &"c".into(),
                &pairs(&["z.test", "y.test"], &["/api"]),
                "c".into(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            Conflict {
                host: "y.test".into(),
                location: "/api".into(),
                holder: "a".into()
            }
        );
        assert_eq!(at(&t, "z.test", "/api"), None);
        // The holder may re-claim (a refresh), replacing its old routes.
        t.claim(&"a".into(), &pairs(&["y.test"], &["/api"]), "a2".into())
            .unwrap();
        assert_eq!(at(&t, "x.test", "/api"), None);
        assert_eq!(at(&t, "y.test", "/api"), Some("a2"));
        t.release(&"a".into());
        t.release(&"b".into());
        assert_eq!(t.host_count(), 0);
        // Same wildcard and exact under different keys do not collide.
        let t = table(&[("w", &["*.x.test"], &["/"]), ("e", &["x.test"], &["/"])]);
        assert_eq!(at(&t, "x.test", "/"), Some("e"));
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
