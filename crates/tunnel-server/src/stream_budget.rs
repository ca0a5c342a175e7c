//! How a client's streams are shared out: `max_streams_per_client` in all, a fair share per
//! proxy so that one busy (or attacked) port or domain cannot starve the client's others, and
//! a small number of streams that may be waiting for their header at once.
//!
//! The fair-share rule: half of `max_streams_per_client` is free for all, first come first
//! served; the other half is reserved in equal parts for the client's proxies. A proxy can
//! always open `max_streams_per_client / (2 × its client's proxies)` streams however busy the
//! others are; beyond that it may take any slot that is not some other proxy's unused
//! reserve. A client with one proxy is not limited at all beyond `max_streams_per_client`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use crate::registry::ProxyKey;
use crate::ServerError;

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    /// Streams per proxy, for proxies holding at least one.
    by_proxy: HashMap<ProxyKey, usize>,
}

/// One session's stream counts.
#[derive(Debug)]
pub(crate) struct StreamBudget {
    max: usize,
    counts: Mutex<Counts>,
    /// Streams accepted from the client whose header has not fully arrived.
    headers: AtomicUsize,
}

impl StreamBudget {
    pub(crate) fn new(max: usize) -> Self {
        StreamBudget {
            max,
            counts: Mutex::default(),
            headers: AtomicUsize::new(0),
        }
    }

    pub(crate) fn open(&self) -> usize {
        self.counts.lock().open
    }

    /// Count one more stream, for `proxy` when it serves one. `proxies` tells how many
    /// proxies the client has; it is asked only when the budget is more than half used.
    /// Refused with [`ServerError::StreamsFull`] or [`ServerError::FairShare`].
    pub(crate) fn take(
        &self,
        proxy: Option<&ProxyKey>,
        proxies: impl FnOnce() -> usize,
    ) -> Result<(), ServerError> {
        let congested = |open: usize| 2 * (open + 1) > self.max;
        // The registry is not consulted under our lock.
        let n_proxies = match proxy {
            Some(_) if congested(self.open()) => proxies(),
            _ => 0,
        };
        let mut c = self.counts.lock();
        if c.open >= self.max {
            return Err(ServerError::StreamsFull { open: c.open });
        }
        if let Some(key) = proxy {
            let held = c.by_proxy.get(key).copied().unwrap_or(0);
            if congested(c.open) {
                let others = c
                    .by_proxy
                    .iter()
                    .filter(|(k, _)| *k != key)
                    .map(|(_, n)| *n);
                // At least the proxies holding streams, this one included.
                let p = n_proxies.max(c.by_proxy.len() + usize::from(held == 0));
                if let Err(reserve) = fair_share(self.max, c.open, held, p, others) {
                    return Err(ServerError::FairShare {
                        proxy: key.to_string(),
                        held,
                        reserve,
                    });
                }
            }
            match c.by_proxy.get_mut(key) {
                Some(n) => *n += 1,
                None => {
                    c.by_proxy.insert(key.clone(), 1);
                }
            }
        }
        c.open += 1;
        Ok(())
    }

    /// Give back a stream taken with [`StreamBudget::take`].
    pub(crate) fn give_back(&self, proxy: Option<&ProxyKey>) {
        let mut c = self.counts.lock();
        c.open = c.open.saturating_sub(1);
        if let Some(key) = proxy {
            if let Some(n) = c.by_proxy.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    c.by_proxy.remove(key);
                }
            }
        }
    }

    /// Count one more stream waiting for its header, unless `max` already are.
    pub(crate) fn begin_header(&self, max: usize) -> Result<(), usize> {
        let n = self.headers.fetch_add(1, Ordering::AcqRel);
        if n >= max {
            self.headers.fetch_sub(1, Ordering::AcqRel);
            return Err(n);
        }
        Ok(())
    }

    pub(crate) fn end_header(&self) {
        self.headers.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a proxy holding `held` streams may open one more, its client holding `open` of
/// `max` and having `proxies` proxies, the others (those holding streams) holding `others`.
/// On refusal, returns the reserve every proxy is sure of.
fn fair_share(
    max: usize,
    open: usize,
    held: usize,
    proxies: usize,
    others: impl Iterator<Item = usize>,
) -> Result<(), usize> {
    let proxies = proxies.max(1);
    let reserve = max / (2 * proxies);
    if held < reserve {
        return Ok(());
    }
    // Slots still owed to the other proxies: their reserve minus what they use of it (those
    // not holding any stream are owed all of it).
    let (mut busy, mut used) = (0, 0);
    for n in others {
        busy += 1;
        used += n.min(reserve);
    }
    let idle = (proxies - 1).saturating_sub(busy);
    let owed = (busy * reserve).saturating_sub(used) + idle * reserve;
    if open + 1 + owed <= max {
        Ok(())
    } else {
        Err(reserve)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(name: &str) -> ProxyKey {
        ProxyKey {
            name: name.into(),
            port: 1,
        }
    }

    /// Open streams for `proxy` until refused; returns how many it got.
    fn fill(b: &StreamBudget, proxy: &str, proxies: usize) -> usize {
        let k = key(proxy);
        let mut n = 0;
        while b.take(Some(&k), || proxies).is_ok() {
            n += 1;
        }
        n
    }

    #[test]
    fn a_lone_proxy_may_use_the_whole_budget() {
        let b = StreamBudget::new(100);
        assert_eq!(fill(&b, "a", 1), 100);
        let e = b.take(Some(&key("a")), || 1).unwrap_err();
        assert!(matches!(e, ServerError::StreamsFull { open: 100 }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "too many streams: this client already has 100 open (max_streams_per_client)"
        );
    }

    #[test]
    fn one_proxy_cannot_take_the_others_reserve() {
        // Two proxies: each is sure of 100 / 4 = 25; one alone gets 75.
        let b = StreamBudget::new(100);
        assert_eq!(fill(&b, "a", 2), 75);
        let e = b.take(Some(&key("a")), || 2).unwrap_err();
        assert!(
            matches!(e, ServerError::FairShare { reserve: 25, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "too many streams for proxy a:1: it holds 75 and the client's free streams are kept \
             for its other proxies (fair share: each proxy is sure of 25, \
             max_streams_per_client / 2 / proxies)"
        );
        assert_eq!(fill(&b, "b", 2), 25);
        assert_eq!(b.open(), 100);
        // Freeing one of a's streams lets a (or b) take it again.
        b.give_back(Some(&key("a")));
        assert!(b.take(Some(&key("b")), || 2).is_ok());
    }

    #[test]
    fn attacking_several_ports_still_leaves_each_other_its_reserve() {
        // Four proxies, reserve 100 / 8 = 12 each; a, b and c attacked in turn.
        let b = StreamBudget::new(100);
        let got: Vec<_> = ["a", "b", "c"].iter().map(|p| fill(&b, p, 4)).collect();
        assert_eq!(got.iter().sum::<usize>(), 88);
        assert_eq!(fill(&b, "d", 4), 12);
    }

    #[test]
    fn unkeyed_streams_count_in_the_total_only() {
        let b = StreamBudget::new(10);
        for _ in 0..10 {
            b.take(None, || unreachable!()).unwrap();
        }
        assert!(b.take(None, || 1).is_err());
        b.give_back(None);
        assert_eq!(b.open(), 9);
    }

    #[test]
    fn fair_share_rule() {
        // Under its reserve a proxy always may.
        assert_eq!(fair_share(100, 99, 0, 2, [99].into_iter()), Ok(()));
        // Over it, only if what is left is not owed to others.
        assert_eq!(fair_share(100, 74, 74, 2, std::iter::empty()), Ok(()));
        assert_eq!(fair_share(100, 75, 75, 2, std::iter::empty()), Err(25));
        assert_eq!(fair_share(100, 80, 75, 2, [5].into_iter()), Err(25));
        assert_eq!(fair_share(100, 99, 74, 2, [25].into_iter()), Ok(()));
        // More proxies than the budget's half: no reserve, first come first served.
        assert_eq!(fair_share(10, 9, 9, 100, std::iter::empty()), Ok(()));
    }

    #[test]
    fn header_slots_are_bounded_and_given_back() {
        let b = StreamBudget::new(10);
        assert!(b.begin_header(2).is_ok());
        assert!(b.begin_header(2).is_ok());
        assert_eq!(b.begin_header(2), Err(2));
        b.end_header();
        assert!(b.begin_header(2).is_ok());
    }
}
