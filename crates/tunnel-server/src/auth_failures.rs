//! Accounting of failed logins. A source that keeps guessing is refused for a while, and its
//! failures are logged once per window instead of once per attempt; all sources together may
//! fail only so often per second.
//!
//! Every proof is checked under a reservation ([`AuthFailures::try_attempt`]) taken right
//! before the check: a burst of parallel handshakes from one address sees the failures (and
//! the checks in flight) of the others, so it gets [`MAX_FAILURES`] guesses, not one per
//! connection it managed to open before the block began.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::source_limit::source_of;

/// Failures from one address within [`WINDOW`] before it is refused outright.
pub(crate) const MAX_FAILURES: u32 = 10;
/// How long failures are remembered.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; beyond it the oldest unblocked window is dropped (blocked ones
/// only when every tracked address is blocked), so a flood of sources bounds memory but
/// cannot unblock an address.
const MAX_TRACKED: usize = 4096;

struct Window {
    started: Instant,
    failures: u32,
    /// Proofs from this source being checked right now.
    in_flight: u32,
}

impl Window {
    fn fresh(now: Instant) -> Self {
        Window {
            started: now,
            failures: 0,
            in_flight: 0,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.started) >= WINDOW
    }

    fn blocked(&self, now: Instant) -> bool {
        !self.expired(now) && self.failures >= MAX_FAILURES
    }
}

/// What to do with a failure just recorded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it: the first failure of this address in the window.
    Log,
    /// Stay quiet: already logged in this window.
    Quiet,
    /// Log that the address is now blocked for the rest of the window.
    Blocked,
}

/// Why a proof is not even checked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// This source failed (or is failing right now) [`MAX_FAILURES`] times in the window.
    Blocked,
    /// All sources together are over `max_auth_failures_per_second`. `warn` is set once a
    /// second (the first refusal of a second), not per refusal.
    Rate { warn: bool },
}

/// Failed logins per second server-wide, as a token bucket one second deep.
struct Rate {
    per_second: u32,
    tokens: f64,
    at: Option<Instant>,
    last_warned: Option<Instant>,
}

impl Rate {
    fn refill(&mut self, now: Instant) {
        let cap = f64::from(self.per_second);
        let elapsed = self
            .at
            .map_or(cap, |t| now.duration_since(t).as_secs_f64() * cap);
        self.tokens = (self.tokens + elapsed).min(cap);
        self.at = Some(now);
    }
}

pub(crate) struct AuthFailures {
    by_source: Mutex<HashMap<IpAddr, Window>>,
    /// `None`: no server-wide cap.
    rate: Option<Mutex<Rate>>,
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures::new(0)
    }
}

/// A proof being checked, counted against its source (and the server-wide budget) until
/// [`Attempt::failed`] or [`Attempt::succeeded`]; dropped unresolved, it counts as neither.
pub(crate) struct Attempt<'a> {
    table: &'a AuthFailures,
    source: IpAddr,
}

impl AuthFailures {
    /// At most `per_second` failures per second from all sources together; 0 = no cap.
    pub(crate) fn new(per_second: u32) -> Self {
        AuthFailures {
            by_source: Mutex::default(),
            rate: (per_second > 0).then(|| {
                Mutex::new(Rate {
                    per_second,
                    tokens: 0.0,
                    at: None,
                    last_warned: None,
                })
            }),
        }
    }

    /// Whether `ip` has failed too often lately to be worth a TLS handshake.
    pub(crate) fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_source
            .lock()
            .get(&source_of(ip))
            .is_some_and(|w| w.blocked(now))
    }

    /// Reserve the check of one proof from `ip`, right before checking it. Refused when the
    /// source's failures plus its checks in flight reach [`MAX_FAILURES`], or when the
    /// server-wide failure budget is spent.
    pub(crate) fn try_attempt(&self, ip: IpAddr, now: Instant) -> Result<Attempt<'_>, Refused> {
        let source = source_of(ip);
        let mut map = self.by_source.lock();
        if let Some(w) = map.get_mut(&source) {
            if w.expired(now) && w.in_flight == 0 {
                *w = Window::fresh(now);
            }
            if w.failures + w.in_flight >= MAX_FAILURES {
                return Err(Refused::Blocked);
            }
        }
        if let Some(rate) = &self.rate {
            let mut r = rate.lock();
            r.refill(now);
            if r.tokens < 1.0 {
                let warn = r
                    .last_warned
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
                if warn {
                    r.last_warned = Some(now);
                }
                return Err(Refused::Rate { warn });
            }
            r.tokens -= 1.0;
        }
        if !map.contains_key(&source) && map.len() >= MAX_TRACKED {
            evict_one(&mut map, now);
        }
        map.entry(source)
            .or_insert_with(|| Window::fresh(now))
            .in_flight += 1;
        Ok(Attempt {
            table: self,
            source,
        })
    }

    /// Record one failure from `ip` without a reservation.
    #[cfg(test)]
    pub(crate) fn record(&self, ip: IpAddr, now: Instant) -> Verdict {
        match self.try_attempt(ip, now) {
            Ok(a) => a.failed(now),
            Err(_) => Verdict::Quiet,
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.by_source.lock().len()
    }

    fn release(&self, source: IpAddr, failed: bool, now: Instant) -> Option<Verdict> {
        if !failed {
            if let Some(rate) = &self.rate {
                let mut r = rate.lock();
                r.tokens = (r.tokens + 1.0).min(f64::from(r.per_second));
            }
        }
        let mut map = self.by_source.lock();
        let w = map.get_mut(&source)?;
        w.in_flight = w.in_flight.saturating_sub(1);
        if !failed {
            if w.failures == 0 && w.in_flight == 0 {
                map.remove(&source);
            }
            return None;
        }
        if w.expired(now) {
            let in_flight = w.in_flight;
            *w = Window::fresh(now);
            w.in_flight = in_flight;
        }
        w.failures += 1;
        Some(match w.failures {
            1 => Verdict::Log,
            n if n == MAX_FAILURES => Verdict::Blocked,
            _ => Verdict::Quiet,
        })
    }
}

/// Make room for one more source: drop expired windows, else the oldest unblocked one, else
/// the oldest of all. Sources with a check in flight stay.
fn evict_one(map: &mut HashMap<IpAddr, Window>, now: Instant) {
    map.retain(|_, w| !w.expired(now) || w.in_flight > 0);
    if map.len() < MAX_TRACKED {
        return;
    }
    let victim = map
        .iter()
        .filter(|(_, w)| w.in_flight == 0)
        .min_by_key(|(_, w)| (w.blocked(now), w.started))
        .map(|(ip, _)| *ip);
    if let Some(ip) = victim {
        map.remove(&ip);
    }
}

impl Attempt<'_> {
    /// The proof was wrong: count it against the source.
    pub(crate) fn failed(self, now: Instant) -> Verdict {
        let v = self.table.release(self.source, true, now);
        std::mem::forget(self);
        v.unwrap_or(Verdict::Quiet)
    }

    /// The proof was right.
    pub(crate) fn succeeded(self) {
        drop(self);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.table.release(self.source, false, Instant::now());
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
    fn blocks_after_repeated_failures_and_forgets_after_the_window() {
        let f = AuthFailures::default();
        let (a, other) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let t0 = Instant::now();
        assert_eq!(f.record(a, t0), Verdict::Log);
        for _ in 2..MAX_FAILURES {
            assert_eq!(f.record(a, t0), Verdict::Quiet);
            assert!(!f.is_blocked(a, t0));
        }
        assert_eq!(f.record(a, t0), Verdict::Blocked);
        assert!(f.is_blocked(a, t0));
        assert!(!f.is_blocked(other, t0));
        assert_eq!(
            f.try_attempt(a, t0 + WINDOW / 2).err(),
            Some(Refused::Blocked)
        );
        let later = t0 + WINDOW;
        assert!(!f.is_blocked(a, later));
        assert_eq!(f.record(a, later), Verdict::Log);
    }

    #[test]
    fn checks_in_flight_count_against_the_source() {
        let f = AuthFailures::default();
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        // A burst of parallel handshakes all reach their proof before any has failed.
        let held: Vec<_> = (0..MAX_FAILURES)
            .map(|_| f.try_attempt(a, t0).unwrap())
            .collect();
        assert_eq!(f.try_attempt(a, t0).err(), Some(Refused::Blocked));
        for attempt in held {
            attempt.failed(t0);
        }
        assert!(f.is_blocked(a, t0));
        // A right key releases its reservation and leaves nothing behind.
        let b = ip("192.0.2.2");
        f.try_attempt(b, t0).unwrap().succeeded();
        assert_eq!(f.tracked(), 1);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            f.record(ip(&format!("2001:db8:1:2::{:x}", i + 1)), t0);
        }
        assert!(f.is_blocked(ip("2001:db8:1:2:ffff::9"), t0));
        assert!(!f.is_blocked(ip("2001:db8:1:3::1"), t0));
    }

    #[test]
    fn a_full_table_evicts_the_oldest_unblocked_and_keeps_the_blocked() {
        let f = AuthFailures::default();
        let t0 = Instant::now();
        let blocked = ip("198.51.100.1");
        for _ in 0..MAX_FAILURES {
            f.record(blocked, t0);
        }
        // 4,096 other addresses fail once each, a millisecond apart: twice the table's size.
        for i in 0..2 * MAX_TRACKED as u32 {
            let other = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            f.record(other, t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(f.tracked() <= MAX_TRACKED);
        let now = t0 + Duration::from_secs(9);
        assert!(
            f.is_blocked(blocked, now),
            "the flood unblocked the address"
        );
        // The newest of the flood are kept, the oldest went first.
        let newest = IpAddr::from((0x0a00_0000 + 2 * MAX_TRACKED as u32 - 1).to_be_bytes());
        assert!(f.by_source.lock().contains_key(&newest));
        assert!(!f.by_source.lock().contains_key(&ip("10.0.0.0")));
    }

    #[test]
    fn the_server_wide_rate_refuses_once_the_budget_is_spent_and_refills() {
        let f = AuthFailures::new(5);
        let t0 = Instant::now();
        for i in 0..5u8 {
            assert_ne!(f.record(IpAddr::from([10, 0, 0, i]), t0), Verdict::Quiet);
        }
        let next = ip("10.0.1.1");
        assert_eq!(
            f.try_attempt(next, t0).err(),
            Some(Refused::Rate { warn: true })
        );
        assert_eq!(
            f.try_attempt(next, t0).err(),
            Some(Refused::Rate { warn: false })
        );
        // Successes give their token back, so right keys do not spend the budget.
        let later = t0 + Duration::from_millis(200);
        f.try_attempt(next, later).unwrap().succeeded();
        f.try_attempt(next, later).unwrap().succeeded();
        assert!(f.try_attempt(next, later).unwrap().failed(later) == Verdict::Log);
        assert!(f.try_attempt(next, later).is_err());
        assert!(f.try_attempt(next, t0 + Duration::from_secs(1)).is_ok());
    }
}
