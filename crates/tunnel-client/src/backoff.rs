//! Reconnection delays: exponential with jitter, so a fleet of clients that lost the same
//! server does not come back in lock-step.

use std::time::Duration;

pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            attempt: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: uniform in [ceiling/2, ceiling], ceiling = base * 2^attempt, capped.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let mut r = [0u8; 4];
        // Without randomness the delay is just not jittered.
        let _ = tunnel_transport::fill_random(&mut r);
        let frac = f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX);
        ceiling.mul_f64(0.5 + frac / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
        }
        assert!(
            last >= Duration::from_secs(15) && last <= Duration::from_secs(30),
            "{last:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
