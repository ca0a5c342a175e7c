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

mod names;

pub(crate) use names::{
    display_host, domain_candidates, is_sni_host, normalize_domain, normalize_host,
    normalize_location, sni_host,
};

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

#[cfg(test)]
mod tests;
