//! Connection budgets per source address, with a global cap: one address (or one IPv6 /64,
//! which a single host can fill with addresses) cannot take every slot of a shared resource
//! (a public port, the virtual host, the pre-authentication phase).
//!
//! A permit is held for as long as the connection lives and gives its slot back on drop, so
//! the counts cannot drift from the connections that exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// This source already holds its share.
    PerSource { limit: usize },
    /// Every slot is taken.
    Total { limit: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerSource { limit } => {
                write!(f, "this address already has {limit} connections open")
            }
            Refusal::Total { limit } => write!(f, "all {limit} connection slots are taken"),
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    by_source: HashMap<IpAddr, usize>,
    total: usize,
}

/// Budgets for one shared resource. Cheap to clone; clones share the counts.
#[derive(Debug, Clone)]
pub(crate) struct SourceLimit {
    per_source: usize,
    total: usize,
    counts: Arc<Mutex<Counts>>,
}

/// One admitted connection; frees its slot on drop.
#[derive(Debug)]
pub(crate) struct SourcePermit {
    source: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl SourceLimit {
    /// At most `per_source` connections per source and `total` in all; 0 means no limit.
    pub(crate) fn new(per_source: usize, total: usize) -> Self {
        SourceLimit {
            per_source: if per_source == 0 {
                usize::MAX
            } else {
                per_source
            },
            total: if total == 0 { usize::MAX } else { total },
            counts: Arc::default(),
        }
    }

    /// Admit one more connection from `ip`, or say why not.
    pub(crate) fn try_acquire(&self, ip: IpAddr) -> Result<SourcePermit, Refusal> {
        let source = source_of(ip);
        let mut c = self.counts.lock();
        if c.total >= self.total {
            return Err(Refusal::Total { limit: self.total });
        }
        let n = c.by_source.entry(source).or_insert(0);
        if *n >= self.per_source {
            return Err(Refusal::PerSource {
                limit: self.per_source,
            });
        }
        *n += 1;
        c.total += 1;
        Ok(SourcePermit {
            source,
            counts: self.counts.clone(),
        })
    }

    /// Connections `ip`'s source holds now.
    pub(crate) fn held_by(&self, ip: IpAddr) -> usize {
        let source = source_of(ip);
        self.counts
            .lock()
            .by_source
            .get(&source)
            .copied()
            .unwrap_or(0)
    }

    /// Connections held now, from all sources.
    pub(crate) fn total(&self) -> usize {
        self.counts.lock().total
    }

    /// The per-source budget (`usize::MAX` when unlimited).
    pub(crate) fn per_source(&self) -> usize {
        self.per_source
    }
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                c.by_source.remove(&self.source);
            }
        }
    }
}

/// The unit one party controls: an IPv4 address, or the /64 an IPv6 host is given (an
/// IPv4-mapped IPv6 address counts as its IPv4 address).
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_source_and_total_budgets_and_release_on_drop() {
        let l = SourceLimit::new(2, 3);
        let a1 = l.try_acquire(ip("192.0.2.1")).unwrap();
        let _a2 = l.try_acquire(ip("192.0.2.1")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.1")).unwrap_err(),
            Refusal::PerSource { limit: 2 }
        );
        let _b1 = l.try_acquire(ip("192.0.2.2")).unwrap();
        assert_eq!(
            l.try_acquire(ip("192.0.2.3")).unwrap_err(),
            Refusal::Total { limit: 3 }
        );
        drop(a1);
        assert_eq!(l.held_by(ip("192.0.2.1")), 1);
        let _c = l.try_acquire(ip("192.0.2.3")).unwrap();
        assert_eq!(l.total(), 3);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_v4_is_its_v4() {
        let l = SourceLimit::new(1, 0);
        let _a = l.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(l.try_acquire(ip("2001:db8:1:2:ffff::9")).is_err());
        assert!(l.try_acquire(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = l.try_acquire(ip("192.0.2.7")).unwrap();
        assert!(l.try_acquire(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn zero_means_unlimited() {
        let l = SourceLimit::new(0, 0);
        let permits: Vec<_> = (0..1000)
            .map(|_| l.try_acquire(ip("192.0.2.1")).unwrap())
            .collect();
        assert_eq!(l.total(), 1000);
        drop(permits);
        assert_eq!(l.total(), 0);
        assert_eq!(l.held_by(ip("192.0.2.1")), 0);
    }
}
