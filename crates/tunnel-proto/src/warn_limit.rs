//! Warnings a peer can repeat at will, one line per window instead of one per event.
//!
//! A burst of refused or reset streams would otherwise write a WARN each (thousands of lines a
//! second, hiding everything else and filling disks). The first occurrence is logged; the
//! repeats within the window are only counted, and the first occurrence after the window is
//! logged with that count: `... (and 2,359 more like it in the last 10 s)`. Like the kernel's
//! `printk_ratelimit`, the count waits for the next occurrence: no timer, no task.
//!
//! [`WarnLimit`] is one window for one kind of warning; [`WarnLimits`] keeps one window per
//! key (a source address, a proxy, a client), so that one noisy subject does not silence the
//! first warning about another, in bounded memory.
//!
//! This is the one rate limiter for log lines in the workspace: the transport's accept loop,
//! the mux and both engines use it. It reads no clock (this crate is sans-IO): callers pass
//! the instant to [`WarnLimit::check_at`]; `tunnel_transport::WarnLimit` adds the `check()`
//! that reads it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The usual window: one line per kind of warning every 10 seconds at most.
pub const WARN_WINDOW: Duration = Duration::from_secs(10);

/// One kind of repeatable warning. Cheap to check; keep one per call site (per session or
/// per engine, so one noisy peer does not silence another's first warning).
#[derive(Debug)]
pub struct WarnLimit {
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last logged occurrence was.
    logged_at: Option<Instant>,
    /// Occurrences since then that were not logged.
    suppressed: u64,
}

impl Default for WarnLimit {
    fn default() -> Self {
        Self::new(WARN_WINDOW)
    }
}

impl WarnLimit {
    /// A limit of one line per `window`.
    pub const fn new(window: Duration) -> Self {
        WarnLimit {
            window,
            state: Mutex::new(State {
                logged_at: None,
                suppressed: 0,
            }),
        }
    }

    /// Record an occurrence at `now`: `Some` if it should be logged, with the repeats to
    /// append.
    pub fn check_at(&self, now: Instant) -> Option<Repeats> {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.check(self.window, now)
    }
}

impl State {
    fn check(&mut self, window: Duration, now: Instant) -> Option<Repeats> {
        match self.logged_at {
            Some(at) if now.saturating_duration_since(at) < window => {
                self.suppressed += 1;
                None
            }
            last => {
                let repeats = Repeats {
                    count: self.suppressed,
                    over: last.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                };
                self.logged_at = Some(now);
                self.suppressed = 0;
                Some(repeats)
            }
        }
    }
}

/// The most keys a [`WarnLimits`] remembers by default.
pub const WARN_KEYS: usize = 4096;

/// A [`WarnLimit`] per key: one line per key per window. At most `max_keys` keys are
/// remembered; when a new one would exceed that, the older half (by last logged line) is
/// forgotten, with the counts they held back, so they may warn again sooner. Keys a peer
/// chooses therefore cost bounded memory, and a flood of new keys still logs at most one
/// line per new key.
#[derive(Debug)]
pub struct WarnLimits<K> {
    window: Duration,
    max_keys: usize,
    seen: Mutex<HashMap<K, State>>,
}

impl<K: Hash + Eq> WarnLimits<K> {
    /// One line per key per `window`, at most [`WARN_KEYS`] keys.
    pub fn new(window: Duration) -> Self {
        Self::with_max_keys(window, WARN_KEYS)
    }

    /// One line per key per `window`, at most `max_keys` keys (at least 1).
    pub fn with_max_keys(window: Duration, max_keys: usize) -> Self {
        WarnLimits {
            window,
            max_keys: max_keys.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Record an occurrence for `key` at `now`: `Some` if it should be logged, with the
    /// repeats.
    pub fn check_at(&self, key: K, now: Instant) -> Option<Repeats> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = seen.get_mut(&key) {
            return state.check(self.window, now);
        }
        if seen.len() >= self.max_keys {
            let mut ages: Vec<Instant> = seen.values().filter_map(|s| s.logged_at).collect();
            let mid = ages.len() / 2;
            let (_, cut, _) = ages.select_nth_unstable(mid);
            let cut = *cut;
            seen.retain(|_, s| s.logged_at.is_some_and(|t| t > cut));
        }
        let mut state = State::default();
        let repeats = state.check(self.window, now);
        seen.insert(key, state);
        repeats
    }

    /// How many keys are remembered now.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq> Default for WarnLimits<K> {
    fn default() -> Self {
        Self::new(WARN_WINDOW)
    }
}

/// The occurrences left out since the last logged one. Displays as nothing when there were
/// none, else as ` (and N more like it in the last S s)`: append it to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeats {
    /// How many were left out.
    pub count: u64,
    /// The time since the last logged occurrence.
    pub over: Duration,
}

impl fmt::Display for Repeats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        f.write_str(" (and ")?;
        write_grouped(f, self.count)?;
        write!(
            f,
            " more like it in the last {} s)",
            self.over.as_secs().max(1)
        )
    }
}

/// `2359` as `2,359`: counts in logs are read by people.
fn write_grouped(f: &mut fmt::Formatter<'_>, n: u64) -> fmt::Result {
    let digits = n.to_string();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            f.write_str(",")?;
        }
        fmt::Write::write_char(f, d)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_logs_and_repeats_within_the_window_are_counted() {
        let limit = WarnLimit::new(10 * S);
        let t0 = Instant::now();
        let first = limit.check_at(t0).unwrap();
        assert_eq!(first.count, 0);
        assert_eq!(first.to_string(), "");
        for i in 0..2_359u32 {
            assert_eq!(limit.check_at(t0 + S * (i % 9)), None);
        }
        let next = limit.check_at(t0 + 12 * S).unwrap();
        assert_eq!(next.count, 2_359);
        assert_eq!(
            next.to_string(),
            " (and 2,359 more like it in the last 12 s)"
        );
        // The count starts over with the line that reported it.
        assert_eq!(limit.check_at(t0 + 13 * S), None);
        assert_eq!(limit.check_at(t0 + 30 * S).unwrap().count, 1);
    }

    #[test]
    fn occurrences_a_window_apart_are_each_logged_without_a_count() {
        let limit = WarnLimit::new(10 * S);
        let t0 = Instant::now();
        for i in 0..5 {
            let r = limit.check_at(t0 + 10 * S * i).unwrap();
            assert_eq!(r.to_string(), "");
        }
    }

    #[test]
    fn a_clock_that_goes_backwards_is_inside_the_window() {
        let limit = WarnLimit::new(10 * S);
        let t0 = Instant::now() + 100 * S;
        assert!(limit.check_at(t0).is_some());
        assert!(limit.check_at(t0 - 50 * S).is_none());
    }

    #[test]
    fn each_key_has_its_own_window_and_count() {
        let limits = WarnLimits::new(60 * S);
        let t0 = Instant::now();
        assert_eq!(limits.check_at(1, t0).unwrap().count, 0);
        assert_eq!(limits.check_at(1, t0 + S), None);
        assert_eq!(limits.check_at(1, t0 + 2 * S), None);
        // Another key is not silenced by the first one's burst.
        assert_eq!(limits.check_at(2, t0 + 2 * S).unwrap().count, 0);
        let next = limits.check_at(1, t0 + 61 * S).unwrap();
        assert_eq!(next.count, 2);
        assert_eq!(next.to_string(), " (and 2 more like it in the last 61 s)");
        assert_eq!(limits.check_at(2, t0 + 62 * S).unwrap().count, 0);
    }

    #[test]
    fn the_keys_stay_bounded_and_the_oldest_go_first() {
        let max = 64;
        let limits = WarnLimits::with_max_keys(60 * S, max);
        let t0 = Instant::now();
        for i in 0..3 * max {
            let at = t0 + Duration::from_millis(i as u64);
            assert!(limits.check_at(i, at).is_some(), "a new key logs");
            assert!(limits.len() <= max);
        }
        // The newest key is still remembered (quiet), the first one was forgotten (logs).
        let now = t0 + S;
        assert_eq!(limits.check_at(3 * max - 1, now), None);
        assert!(limits.check_at(0, now).is_some());
    }

    #[test]
    fn a_single_key_table_still_works() {
        let limits = WarnLimits::with_max_keys(10 * S, 0);
        let t0 = Instant::now();
        assert!(limits.check_at("a", t0).is_some());
        assert!(limits.check_at("b", t0).is_some());
        assert!(limits.check_at("b", t0 + S).is_none());
        assert_eq!(limits.len(), 1);
    }

    #[test]
    fn counts_are_grouped_in_thousands() {
        let show = |count| {
            Repeats {
                count,
                over: Duration::from_millis(300),
            }
            .to_string()
        };
        assert_eq!(show(1), " (and 1 more like it in the last 1 s)");
        assert_eq!(show(999), " (and 999 more like it in the last 1 s)");
        assert_eq!(show(1_000), " (and 1,000 more like it in the last 1 s)");
        assert_eq!(
            show(1_234_567),
            " (and 1,234,567 more like it in the last 1 s)"
        );
    }
}
