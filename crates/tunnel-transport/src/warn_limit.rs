//! The clock-reading face of [`tunnel_proto::WarnLimit`] and [`tunnel_proto::WarnLimits`].
//!
//! The limiter itself is pure and lives in tunnel-proto (it takes the instant as an
//! argument); these wrappers add `check()`, which reads [`Instant::now`], so the engines keep
//! calling `tunnel_transport::WarnLimit::check()` at their warning sites.

use std::hash::Hash;
use std::time::{Duration, Instant};

use tunnel_proto::Repeats;

/// One kind of repeatable warning: [`tunnel_proto::WarnLimit`] with a clock. Keep one per
/// call site (per session or per engine, so one noisy peer does not silence another's first
/// warning).
#[derive(Debug, Default)]
pub struct WarnLimit(tunnel_proto::WarnLimit);

impl WarnLimit {
    /// A limit of one line per `window`.
    pub const fn new(window: Duration) -> Self {
        WarnLimit(tunnel_proto::WarnLimit::new(window))
    }

    /// Record an occurrence now: `Some` if it should be logged, with the repeats to append.
    pub fn check(&self) -> Option<Repeats> {
        self.0.check_at(Instant::now())
    }

    /// [`WarnLimit::check`] at a given instant (tests drive the clock).
    pub fn check_at(&self, now: Instant) -> Option<Repeats> {
        self.0.check_at(now)
    }
}

/// A [`WarnLimit`] per key: [`tunnel_proto::WarnLimits`] with a clock (see there for the
/// bound on remembered keys).
#[derive(Debug)]
pub struct WarnLimits<K>(tunnel_proto::WarnLimits<K>);

impl<K: Hash + Eq> WarnLimits<K> {
    /// One line per key per `window`, at most [`tunnel_proto::WARN_KEYS`] keys.
    pub fn new(window: Duration) -> Self {
        WarnLimits(tunnel_proto::WarnLimits::new(window))
    }

    /// One line per key per `window`, at most `max_keys` keys (at least 1).
    pub fn with_max_keys(window: Duration, max_keys: usize) -> Self {
        WarnLimits(tunnel_proto::WarnLimits::with_max_keys(window, max_keys))
    }

    /// Record an occurrence for `key` now: `Some` if it should be logged, with the repeats.
    pub fn check(&self, key: K) -> Option<Repeats> {
        self.0.check_at(key, Instant::now())
    }

    /// [`WarnLimits::check`] at a given instant (tests drive the clock).
    pub fn check_at(&self, key: K, now: Instant) -> Option<Repeats> {
        self.0.check_at(key, now)
    }

    /// How many keys are remembered now.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Hash + Eq> Default for WarnLimits<K> {
    fn default() -> Self {
        WarnLimits(tunnel_proto::WarnLimits::default())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn check_reads_the_clock_and_limits_like_the_pure_limiter() {
        let limit = WarnLimit::new(Duration::from_secs(60));
        assert_eq!(limit.check().unwrap().count, 0);
        assert_eq!(limit.check(), None);
        let limits = WarnLimits::new(Duration::from_secs(60));
        assert!(limits.check("a").is_some());
        assert!(limits.check("a").is_none());
        assert!(limits.check("b").is_some());
        assert_eq!(limits.len(), 2);
    }
}
