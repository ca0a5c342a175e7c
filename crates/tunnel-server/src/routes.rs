//! The virtual-host routing table: `(host pattern, path prefix)` → a proxy. Pure data, no I/O,
//! so every rule is unit-tested here.
//!
//! Matching: an exact host beats a wildcard; `*.example.com` matches any depth below
//! `example.com` (not `example.com` itself), and the most specific wildcard wins; within a
//! host the longest location wins, matched on whole path segments (`/api` takes `/api` and
//! `/api/x`, never `/apix`). Hosts are compared lowercased, without port or trailing dot.
//!
//! Ownership, so that one client can never receive another's users (or their passwords): a
//! host pattern and every location under it belong to one owner (a client; its proxies may
//! split the locations); a wildcard may not cover a name another owner holds, and a name may
//! not fall under another owner's wildcard. The first holder keeps it.
//!
//! Cost: hosts are kept with their labels reversed (`com.example.app`, `com.example.*`) in a
//! sorted map, so everything under `*.example.com` is one contiguous range and a claim costs
//! O(log n) per pair (plus the claimant's own names inside a wildcard it claims); each key
//! remembers its pairs, so a release touches only them.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::ServerError;

/// One claim: a host pattern (normalised, `*.` prefix for wildcards) and a location.
pub(crate) type Pair = (String, String);

/// Why a claim was refused. It names what is taken, never who holds it (but for the
/// claimant's own key, which it may be told about).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict<K> {
    /// Another owner serves this host pattern.
    Host { host: String },
    /// The wildcard would cover `name`, which another owner holds.
    Covers { wildcard: String, name: String },
    /// `name` falls under `wildcard`, which another owner holds.
    Under { name: String, wildcard: String },
    /// The same owner serves this location of the host through another key.
    Location {
        host: String,
        location: String,
        holder: K,
    },
}

/// One host pattern: its owner and its locations.
#[derive(Debug)]
struct Host<K, O, V> {
    owner: O,
    locations: BTreeMap<String, (K, V)>,
    /// Location lengths present (length → count): a lookup tries no prefix longer than the
    /// longest, so a path of many slashes costs no more than the host's locations allow.
    lengths: BTreeMap<usize, usize>,
}

/// Routes of every proxy, keyed by `K` (the proxy) and owned by `O` (its client).
#[derive(Debug)]
pub(crate) struct Routes<K, O, V> {
    /// Reversed host pattern → its owner and locations.
    hosts: BTreeMap<String, Host<K, O, V>>,
    /// Every key's pairs (reversed host, location), so releasing a key needs no scan.
    held: HashMap<K, Vec<Pair>>,
    /// Wildcards present by the labels of their base (`*.example.com`: 2 → count), so a
    /// lookup tries no parent deeper than the deepest wildcard, however many labels a Host
    /// value has.
    wild_depths: BTreeMap<usize, usize>,
}

impl<K, O, V> Default for Routes<K, O, V> {
    fn default() -> Self {
        Routes {
            hosts: BTreeMap::new(),
            held: HashMap::new(),
            wild_depths: BTreeMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, O: Eq + Clone, V: Clone> Routes<K, O, V> {
    /// Make `pairs` the routes of `key` (owned by `owner`), replacing what it held: all of
    /// them, or none when one conflicts with what others hold.
    pub(crate) fn claim(
        &mut self,
        key: &K,
        owner: &O,
        pairs: &[Pair],
        value: V,
    ) -> Result<(), Conflict<K>> {
        let reversed: Vec<Pair> = pairs.iter().map(|(h, l)| (reverse(h), l.clone())).collect();
        let mut last_host: Option<&str> = None;
        for ((rev, location), (host, _)) in reversed.iter().zip(pairs) {
            if last_host != Some(rev.as_str()) {
                self.check_host(owner, rev, host)?;
                last_host = Some(rev);
            }
            let other_key = self
                .hosts
                .get(rev)
                .and_then(|h| h.locations.get(location))
                .filter(|(k, _)| k != key);
            if let Some((holder, _)) = other_key {
                return Err(Conflict::Location {
                    host: host.clone(),
                    location: location.clone(),
                    holder: holder.clone(),
                });
            }
        }
        self.release(key);
        let mut kept = Vec::with_capacity(reversed.len());
        for (rev, location) in reversed {
            if !self.hosts.contains_key(&rev) {
                if let Some(d) = wild_depth(&rev) {
                    *self.wild_depths.entry(d).or_default() += 1;
                }
            }
            let host = self.hosts.entry(rev.clone()).or_insert_with(|| Host {
                owner: owner.clone(),
                locations: BTreeMap::new(),
                lengths: BTreeMap::new(),
            });
            if host.locations.contains_key(&location) {
                continue; // the same pair twice in one proxy's list
            }
            *host.lengths.entry(location.len()).or_default() += 1;
            host.locations
                .insert(location.clone(), (key.clone(), value.clone()));
            kept.push((rev, location));
        }
        if !kept.is_empty() {
            self.held.insert(key.clone(), kept);
        }
        Ok(())
    }

    /// The ownership rules for one host pattern (`rev` reversed, `host` as given).
    fn check_host(&self, owner: &O, rev: &str, host: &str) -> Result<(), Conflict<K>> {
        if self.hosts.get(rev).is_some_and(|h| h.owner != *owner) {
            return Err(Conflict::Host {
                host: host.to_owned(),
            });
        }
        if rev.starts_with('[') {
            return Ok(()); // an IPv6 literal: no labels, no wildcards
        }
        let base = rev.strip_suffix(".*");
        if let Some(base) = base {
            // Everything below the wildcard is one range: `com.example.` up to `com.example/`.
            let (from, to) = (format!("{base}."), format!("{base}/"));
            let foreign = self
                .hosts
                .range(from..to)
                .find(|(k, h)| h.owner != *owner && k.as_str() != rev);
            if let Some((name, _)) = foreign {
                return Err(Conflict::Covers {
                    wildcard: host.to_owned(),
                    name: unreverse(name),
                });
            }
        }
        // The wildcards above: app.dev.example.com lies under *.dev.example.com, *.example.com
        // and *.com; *.dev.example.com under the last two.
        let mut rest = base.unwrap_or(rev);
        while let Some((parent, _)) = rest.rsplit_once('.') {
            let wildcard = format!("{parent}.*");
            if self.hosts.get(&wildcard).is_some_and(|h| h.owner != *owner) {
                return Err(Conflict::Under {
                    name: host.to_owned(),
                    wildcard: unreverse(&wildcard),
                });
            }
            rest = parent;
        }
        Ok(())
    }

    /// Drop every route of `key`.
    pub(crate) fn release(&mut self, key: &K) {
        let Some(pairs) = self.held.remove(key) else {
            return;
        };
        for (rev, location) in pairs {
            let Some(host) = self.hosts.get_mut(&rev) else {
                continue;
            };
            if host.locations.get(&location).is_some_and(|(k, _)| k == key) {
                host.locations.remove(&location);
                if let Some(n) = host.lengths.get_mut(&location.len()) {
                    *n -= 1;
                    if *n == 0 {
                        host.lengths.remove(&location.len());
                    }
                }
            }
            if host.locations.is_empty() {
                self.hosts.remove(&rev);
                if let Some(d) = wild_depth(&rev) {
                    if let Some(n) = self.wild_depths.get_mut(&d) {
                        *n -= 1;
                        if *n == 0 {
                            self.wild_depths.remove(&d);
                        }
                    }
                }
            }
        }
    }

    /// The value serving `host` (a raw Host header value) at `path`, if any.
    #[cfg(test)]
    pub(crate) fn lookup(&self, host: &str, path: &str) -> Option<&V> {
        self.lookup_query(&HostQuery::new(host)?, path)
    }

    /// The value serving the host of `query` at `path`, if any. The cost is bounded by the
    /// table (the deepest wildcard, the longest location), not by the request.
    pub(crate) fn lookup_query(&self, query: &HostQuery, path: &str) -> Option<&V> {
        if let Some(v) = self.hosts.get(&query.rev).and_then(|h| h.serving(path)) {
            return Some(v);
        }
        // Most specific wildcard first: a.b.example.com tries *.b.example.com, *.example.com,
        // *.com; parents deeper than any wildcard present cannot match.
        let deepest = self.wild_depths.keys().next_back().copied().unwrap_or(0);
        query
            .wildcards
            .iter()
            .skip(query.wildcards.len().saturating_sub(deepest))
            .find_map(|w| self.hosts.get(w).and_then(|h| h.serving(path)))
    }

    /// The keys holding at least one route.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &K> {
        self.held.keys()
    }

    /// Number of host patterns with at least one route.
    #[cfg(test)]
    pub(crate) fn host_count(&self) -> usize {
        self.hosts.len()
    }
}

/// A Host header value prepared for lookups (normalised, reversed, its wildcard parents),
/// so that the work proportional to the request is done before taking the table's lock.
pub(crate) struct HostQuery {
    rev: String,
    /// `*.b.example.com`, `*.example.com`, `*.com` for `a.b.example.com` (reversed), most
    /// specific first: entry `i` from the end has a base of `i + 1` labels.
    wildcards: Vec<String>,
}

impl HostQuery {
    /// `None` for something that is no host at all.
    pub(crate) fn new(raw: &str) -> Option<Self> {
        Some(Self::of_normalized(&normalize_host(raw)?))
    }

    /// The query of an `https` proxy's route for `name`, a ClientHello's server name (see
    /// [`sni_host`]); `None` for something that is no host at all.
    pub(crate) fn sni(name: &str) -> Option<Self> {
        Some(Self::of_normalized(&sni_host(&normalize_host(name)?)))
    }

    fn of_normalized(host: &str) -> Self {
        let rev = reverse(host);
        let mut wildcards = Vec::new();
        if !rev.starts_with('[') {
            // IPv6 literals have no labels to wildcard.
            let mut rest = rev.as_str();
            while let Some((parent, _)) = rest.rsplit_once('.') {
                wildcards.push(format!("{parent}.*"));
                rest = parent;
            }
        }
        HostQuery { rev, wildcards }
    }
}

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

/// The labels of a wildcard's base (`com.example.*` → 2); `None` for an exact name.
fn wild_depth(rev: &str) -> Option<usize> {
    rev.strip_suffix(".*").map(|base| base.split('.').count())
}

impl<K, O, V> Host<K, O, V> {
    /// The value of the longest location covering `path`, on whole segments.
    fn serving(&self, path: &str) -> Option<&V> {
        let longest = self.lengths.keys().next_back().copied().unwrap_or(0);
        let at = |prefix: &str| self.locations.get(prefix).map(|(_, v)| v);
        // `/api/v2/x` tries `/api/v2/x`, `/api/v2`, `/api`, then `/` (which covers anything).
        if path.len() <= longest {
            if let Some(v) = at(path) {
                return Some(v);
            }
        }
        let bytes = &path.as_bytes()[..path.len().min(longest + 1)];
        (1..bytes.len())
            .rev()
            .filter(|&i| bytes[i] == b'/')
            .find_map(|i| at(&path[..i]))
            .or_else(|| at("/"))
    }
}

/// `app.example.com` → `com.example.app`; `*.example.com` → `com.example.*`.
fn reverse(host: &str) -> String {
    if host.starts_with('[') {
        return host.to_owned();
    }
    host.rsplit('.').collect::<Vec<_>>().join(".")
}

fn unreverse(rev: &str) -> String {
    reverse(rev)
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
    fn https_routes_are_a_namespace_of_their_own() {
        let mut t = Table::default();
        let https = |h: &str| (sni_host(h), "/".to_owned());
        t.claim(
            &"web".into(),
            &"a".into(),
            &pairs(&["a.example"], &["/"]),
            "web".into(),
        )
        .unwrap();
        // Another owner takes the same name, and a wildcard over it, over https.
        let tls = [https("a.example"), https("*.b.example")];
        t.claim(&"tls".into(), &"b".into(), &tls, "tls".into())
            .unwrap();
        let sni = |name: &str| t.lookup_query(&HostQuery::sni(name)?, "/").cloned();
        assert_eq!(t.lookup("a.example", "/x").unwrap(), "web");
        assert_eq!(sni("A.example.").as_deref(), Some("tls"));
        assert_eq!(sni("x.y.b.example").as_deref(), Some("tls"));
        assert_eq!(sni("b.example"), None);
        // No Host header reaches the https tree, nor can a domain name it.
        assert_eq!(t.lookup("a.example.-sni", "/"), None);
        assert_eq!(t.lookup("x.b.example.-SNI:443", "/"), None);
        assert!(domain_candidates("a.example.-sni").is_empty());
        assert!(normalize_domain("a.example.-sni").is_err());
        assert!(normalize_domain("*.-sni").is_err());
        assert_eq!(display_host(&sni_host("*.b.example")), "*.b.example");
        assert_eq!(display_host("a.example"), "a.example");
        assert!(is_sni_host(&sni_host("a.example")) && !is_sni_host("a.example"));
    }

    fn pairs(hosts: &[&str], locs: &[&str]) -> Vec<Pair> {
        hosts
            .iter()
            .flat_map(|h| locs.iter().map(move |l| (h.to_string(), l.to_string())))
            .collect()
    }

    type Table = Routes<String, String, String>;

    /// Claims by `(key, owner, hosts, locations)`; the value is the key.
    fn owned(claims: &[(&str, &str, &[&str], &[&str])]) -> Table {
        let mut t = Routes::default();
        for (key, owner, hosts, locs) in claims {
            t.claim(
                &key.to_string(),
                &owner.to_string(),
                &pairs(hosts, locs),
                key.to_string(),
            )
            .unwrap();
        }
        t
    }

    /// Claims of one owner.
    fn table(claims: &[(&str, &[&str], &[&str])]) -> Table {
        let with_owner: Vec<_> = claims.iter().map(|(k, h, l)| (*k, "one", *h, *l)).collect();
        owned(&with_owner)
    }

    fn claim(
        t: &mut Table,
        key: &str,
        owner: &str,
        hosts: &[&str],
        locs: &[&str],
    ) -> Result<(), Conflict<String>> {
        t.claim(&key.into(), &owner.into(), &pairs(hosts, locs), key.into())
    }

    fn at<'a>(t: &'a Table, host: &str, path: &str) -> Option<&'a str> {
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
        // Same host, other location, another proxy of the same client: fine.
        claim(&mut t, "b", "one", &["x.test"], &["/web"]).unwrap();
        // One pair taken: nothing of c's claim lands, and its own proxy is named.
        let err = claim(&mut t, "c", "one", &["z.test", "y.test"], &["/api"]).unwrap_err();
        assert_eq!(
            err,
            Conflict::Location {
                host: "y.test".into(),
                location: "/api".into(),
                holder: "a".into()
            }
        );
        assert_eq!(at(&t, "z.test", "/api"), None);
        // The holder may re-claim (a refresh), replacing its old routes.
        t.claim(
            &"a".into(),
            &"one".into(),
            &pairs(&["y.test"], &["/api"]),
            "a2".into(),
        )
        .unwrap();
        assert_eq!(at(&t, "x.test", "/api"), None);
        assert_eq!(at(&t, "y.test", "/api"), Some("a2"));
        t.release(&"a".into());
        t.release(&"b".into());
        assert_eq!(t.host_count(), 0);
        assert!(t.held.is_empty());
        // A wildcard does not cover its own base name: different owners may hold both.
        let t = owned(&[
            ("w", "p", &["*.x.test"], &["/"]),
            ("e", "q", &["x.test"], &["/"]),
        ]);
        assert_eq!(at(&t, "x.test", "/"), Some("e"));
        assert_eq!(at(&t, "a.x.test", "/"), Some("w"));
    }

    #[test]
    fn a_host_and_all_its_locations_belong_to_one_owner() {
        let mut t = owned(&[("a", "alice", &["app.example.com"], &["/"])]);
        for loc in ["/", "/api", "/admin/x"] {
            assert_eq!(
                claim(&mut t, "b", "bob", &["app.example.com"], &[loc]),
                Err(Conflict::Host {
                    host: "app.example.com".into()
                }),
                "{loc}"
            );
        }
        // Alice's other proxy may take a location under her host.
        claim(&mut t, "a2", "alice", &["app.example.com"], &["/api"]).unwrap();
        assert_eq!(at(&t, "app.example.com", "/api/x"), Some("a2"));
        assert_eq!(at(&t, "app.example.com", "/admin"), Some("a"));
        // Once every proxy of alice lets go, the host is free for bob.
        t.release(&"a".into());
        assert!(claim(&mut t, "b", "bob", &["app.example.com"], &["/"]).is_err());
        t.release(&"a2".into());
        claim(&mut t, "b", "bob", &["app.example.com"], &["/"]).unwrap();
        assert_eq!(at(&t, "app.example.com", "/api"), Some("b"));
    }

    #[test]
    fn a_wildcard_may_not_cover_another_owners_names() {
        let mut t = owned(&[
            ("app", "alice", &["app.example.com"], &["/"]),
            ("deep", "carol", &["*.dev.corp.test"], &["/"]),
        ]);
        assert_eq!(
            claim(&mut t, "w", "bob", &["*.example.com"], &["/x"]),
            Err(Conflict::Covers {
                wildcard: "*.example.com".into(),
                name: "app.example.com".into()
            })
        );
        assert_eq!(
            claim(&mut t, "w", "bob", &["*.com"], &["/"]),
            Err(Conflict::Covers {
                wildcard: "*.com".into(),
                name: "app.example.com".into()
            })
        );
        assert_eq!(
            claim(&mut t, "w", "bob", &["*.corp.test"], &["/"]),
            Err(Conflict::Covers {
                wildcard: "*.corp.test".into(),
                name: "*.dev.corp.test".into()
            })
        );
        // Nothing of the refused claims landed.
        assert_eq!(at(&t, "other.example.com", "/x"), None);
        // The same owner may hold both: its exact name still wins.
        claim(&mut t, "aw", "alice", &["*.example.com"], &["/"]).unwrap();
        assert_eq!(at(&t, "app.example.com", "/"), Some("app"));
        assert_eq!(at(&t, "zzz.example.com", "/"), Some("aw"));
        // Neighbours sharing a prefix are not covered: *.example.co is not *.example.com.
        claim(
            &mut t,
            "n",
            "bob",
            &["*.example.co", "*.exampl.com"],
            &["/"],
        )
        .unwrap();
    }

    #[test]
    fn a_name_may_not_fall_under_another_owners_wildcard() {
        let mut t = owned(&[("w", "alice", &["*.example.com"], &["/"])]);
        for name in ["app.example.com", "a.b.example.com", "*.dev.example.com"] {
            assert_eq!(
                claim(&mut t, "b", "bob", &[name], &["/api"]),
                Err(Conflict::Under {
                    name: name.into(),
                    wildcard: "*.example.com".into()
                }),
                "{name}"
            );
        }
        // Not under it: the base name itself, and other domains.
        claim(&mut t, "b", "bob", &["example.com", "example.org"], &["/"]).unwrap();
        // The same wildcard is the same host pattern: taken.
        assert_eq!(
            claim(&mut t, "c", "carol", &["*.example.com"], &["/other"]),
            Err(Conflict::Host {
                host: "*.example.com".into()
            })
        );
        // The owner's own narrower names are fine.
        claim(
            &mut t,
            "w2",
            "alice",
            &["x.example.com", "*.dev.example.com"],
            &["/"],
        )
        .unwrap();
        assert_eq!(at(&t, "a.dev.example.com", "/"), Some("w2"));
    }

    #[test]
    fn releasing_a_key_touches_only_its_own_routes() {
        let mut t = owned(&[
            ("a", "alice", &["a.test", "*.a.test"], &["/", "/x"]),
            ("a2", "alice", &["a.test"], &["/y"]),
            ("b", "bob", &["b.test"], &["/"]),
        ]);
        t.release(&"a".into());
        assert_eq!(at(&t, "a.test", "/y/1"), Some("a2"));
        assert_eq!(at(&t, "a.test", "/"), None);
        assert_eq!(at(&t, "q.a.test", "/"), None);
        assert_eq!(at(&t, "b.test", "/"), Some("b"));
        t.release(&"nobody".into());
        assert_eq!(t.host_count(), 2);
    }

    #[test]
    fn a_host_of_many_labels_meets_the_wildcards_present() {
        let mut t = table(&[("w", &["*.example.com"], &["/"])]);
        let deep = format!("{}example.com", "a.".repeat(10_000));
        assert_eq!(at(&t, &deep, "/"), Some("w"));
        claim(&mut t, "d", "one", &["*.c.b.a.test"], &["/"]).unwrap();
        assert_eq!(at(&t, "x.c.b.a.test", "/"), Some("d"));
        assert_eq!(at(&t, &deep, "/"), Some("w"));
        t.release(&"d".into());
        assert_eq!(t.wild_depths.get(&4), None);
        assert_eq!(at(&t, "x.c.b.a.test", "/"), None);
        t.release(&"w".into());
        assert!(t.wild_depths.is_empty());
        assert_eq!(at(&t, &deep, "/"), None);
    }

    #[test]
    fn a_path_of_many_slashes_is_matched_like_any_other() {
        let t = table(&[
            ("api", &["h.test"], &["/api"]),
            ("deep", &["h.test"], &["/a/b/c"]),
        ]);
        let slashes = "/".repeat(100_000);
        assert_eq!(at(&t, "h.test", &slashes), None);
        assert_eq!(at(&t, "h.test", &format!("/api{slashes}")), Some("api"));
        assert_eq!(at(&t, "h.test", "/a/b/c/d"), Some("deep"));
        assert_eq!(at(&t, "h.test", "/a/b"), None);
        assert_eq!(at(&t, "h.test", "/ap\u{e9}/x"), None, "a multi-byte path");
    }

    #[test]
    fn a_claim_costs_little_per_pair() {
        // Many locations per host made the old table quadratic (a linear duplicate check and
        // a re-sort per pair): 16 hosts x 4096 locations here, and 256 owners of 64 hosts.
        let started = std::time::Instant::now();
        let mut t: Table = Routes::default();
        let names = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
        let locs = names(4096, &|i| format!("/l{i}"));
        let hosts = names(16, &|i| format!("h{i}.big.test"));
        let (h, l): (Vec<&str>, Vec<&str>) = (
            hosts.iter().map(String::as_str).collect(),
            locs.iter().map(String::as_str).collect(),
        );
        claim(&mut t, "big", "big", &h, &l).unwrap();
        assert_eq!(at(&t, "h9.big.test", "/l4095/x"), Some("big"));
        for owner in 0..256 {
            let hosts = names(64, &|d| format!("d{d}.o{owner}.test"));
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let key = format!("k{owner}");
            claim(&mut t, &key, &key, &hosts, &["/"]).unwrap();
        }
        assert_eq!(at(&t, "d3.o200.test", "/l7/x"), Some("k200"));
        // A wildcard over them all is refused at the first foreign name.
        assert!(matches!(
            claim(&mut t, "w", "w", &["*.test"], &["/"]),
            Err(Conflict::Covers { .. })
        ));
        for owner in 0..256 {
            t.release(&format!("k{owner}"));
        }
        t.release(&"big".into());
        assert_eq!(t.host_count(), 0);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

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
