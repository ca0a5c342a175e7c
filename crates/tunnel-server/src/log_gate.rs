//! Rate limits for warnings a peer can cause at will: one line per key per period, saying
//! how many were left out since, so that a flood of refusals cannot flood the log.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Most keys remembered; past it the oldest half is forgotten (they may warn again sooner).
const MAX_KEYS: usize = 4096;

/// One warning per key per `period`.
#[derive(Debug)]
pub(crate) struct LogGate<K> {
    period: Duration,
    seen: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K: Hash + Eq + Clone> LogGate<K> {
    pub fn new(period: Duration) -> Self {
        LogGate {
            period,
            seen: Mutex::default(),
        }
    }

    /// `Some(n)` when a warning for `key` is due now, `n` being how many were suppressed
    /// since the last one; `None` to stay quiet.
    pub fn due(&self, key: &K, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock();
        if let Some((last, quiet)) = seen.get_mut(key) {
            if now.saturating_duration_since(*last) < self.period {
                *quiet += 1;
                return None;
            }
            let n = *quiet;
            *last = now;
            *quiet = 0;
            return Some(n);
        }
        if seen.len() >= MAX_KEYS {
            let mut ages: Vec<Instant> = seen.values().map(|(t, _)| *t).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            seen.retain(|_, (t, _)| *t > cut);
        }
        seen.insert(key.clone(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_period_with_the_count_left_out() {
        let g = LogGate::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(g.due(&1, t), Some(0));
        assert_eq!(g.due(&1, t + Duration::from_secs(1)), None);
        assert_eq!(g.due(&1, t + Duration::from_secs(2)), None);
        assert_eq!(g.due(&2, t + Duration::from_secs(2)), Some(0));
        assert_eq!(g.due(&1, t + Duration::from_secs(61)), Some(2));
    }

    #[test]
    fn the_table_stays_bounded() {
        let g = LogGate::new(Duration::from_secs(60));
        let t = Instant::now();
        for i in 0..3 * MAX_KEYS {
            g.due(&i, t + Duration::from_millis(i as u64));
        }
        assert!(g.seen.lock().len() <= MAX_KEYS);
    }
}
