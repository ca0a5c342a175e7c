//! Per-address accounting of failed logins: a source that keeps guessing is turned away before
//! TLS for a while, and its failures are logged once per window instead of once per attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures from one address within [`WINDOW`] before it is refused outright.
pub(crate) const MAX_FAILURES: u32 = 10;
/// How long failures are remembered.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; beyond it the oldest windows are dropped, so a flood of
/// spoofed-looking sources cannot grow memory without bound.
const MAX_TRACKED: usize = 4096;

struct Window {
    started: Instant,
    failures: u32,
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

#[derive(Default)]
pub(crate) struct AuthFailures {
    by_addr: Mutex<HashMap<IpAddr, Window>>,
}

impl AuthFailures {
    /// Whether `ip` has failed too often lately to be worth a TLS handshake.
    pub fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.by_addr
            .lock()
            .get(&ip)
            .is_some_and(|w| now.duration_since(w.started) < WINDOW && w.failures >= MAX_FAILURES)
    }

    /// Record one failure from `ip`.
    pub fn record(&self, ip: IpAddr, now: Instant) -> Verdict {
        let mut map = self.by_addr.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, w| now.duration_since(w.started) < WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let w = map.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(w.started) >= WINDOW {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures += 1;
        match w.failures {
            1 => Verdict::Log,
            n if n == MAX_FAILURES => Verdict::Blocked,
            _ => Verdict::Quiet,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_repeated_failures_and_forgets_after_the_window() {
        let f = AuthFailures::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let other: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let t0 = Instant::now();
        assert_eq!(f.record(ip, t0), Verdict::Log);
        for _ in 2..MAX_FAILURES {
            assert_eq!(f.record(ip, t0), Verdict::Quiet);
            assert!(!f.is_blocked(ip, t0));
        }
        assert_eq!(f.record(ip, t0), Verdict::Blocked);
        assert!(f.is_blocked(ip, t0));
        assert!(!f.is_blocked(other, t0));
        let later = t0 + WINDOW;
        assert!(!f.is_blocked(ip, later));
        assert_eq!(f.record(ip, later), Verdict::Log);
    }
}
