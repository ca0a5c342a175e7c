//! Bandwidth limits: a token bucket per direction, shared by every connection it limits.
//!
//! The pipe charges a bucket after each write, and when the bucket is in debt it reads no
//! more from that side until the debt is paid. So a limited connection holds no more than its
//! one read buffer: what it may not send yet stays with the sender (TCP and yamux windows
//! push back), nothing queues here, and a small request on an idle limited proxy passes at
//! once.
//!
//! Lock-free: one compare-and-swap per read on an atomic "theoretical arrival time" (the
//! GCRA form of a token bucket), so connections sharing a bucket never wait on each other
//! except for bandwidth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How much an idle bucket lets through at once, as time at its rate: enough that a burst of
/// small requests is not delayed, short enough that the rate over a second stays close to the
/// limit.
pub const BURST: Duration = Duration::from_millis(100);

/// A token bucket for one direction.
#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second; changed in place when the limit changes.
    rate: AtomicU64,
    /// When the bytes charged so far are paid for, in nanoseconds after `origin`.
    paid_until: AtomicU64,
    origin: Instant,
}

impl TokenBucket {
    /// A full bucket of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Self {
        TokenBucket {
            rate: AtomicU64::new(bytes_per_second.max(1)),
            paid_until: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// Bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Change the rate; what was charged already keeps its old price.
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second.max(1), Ordering::Relaxed);
    }

    /// Charge `n` bytes that just moved; returns how long the caller should wait before it
    /// moves more (zero while within the burst).
    pub fn charge(&self, n: usize) -> Duration {
        let cost = nanos(n as u128 * 1_000_000_000 / u128::from(self.rate()));
        let burst = nanos(BURST.as_nanos());
        // Shifted by the burst so that a new bucket starts full.
        let now = nanos((self.origin.elapsed() + BURST).as_nanos());
        let mut seen = self.paid_until.load(Ordering::Relaxed);
        loop {
            // An idle bucket holds `burst` at most: credit does not pile up while quiet.
            let new = seen.max(now.saturating_sub(burst)).saturating_add(cost);
            match self.paid_until.compare_exchange_weak(
                seen,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Duration::from_nanos(new.saturating_sub(now)),
                Err(actual) => seen = actual,
            }
        }
    }
}

fn nanos(n: u128) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// A bandwidth limit: one [`TokenBucket`] per direction of the connections it covers, each
/// at the same rate. Put one in [`PipeConfig::with_rate_limits`](crate::PipeConfig::with_rate_limits)
/// of every connection it should limit together.
#[derive(Debug)]
pub struct RateLimit {
    a_to_b: TokenBucket,
    b_to_a: TokenBucket,
}

impl RateLimit {
    /// `bytes_per_second` each way.
    pub fn new(bytes_per_second: u64) -> Self {
        RateLimit {
            a_to_b: TokenBucket::new(bytes_per_second),
            b_to_a: TokenBucket::new(bytes_per_second),
        }
    }

    /// Bytes per second, each way.
    pub fn rate(&self) -> u64 {
        self.a_to_b.rate()
    }

    /// Change the rate of both directions.
    pub fn set_rate(&self, bytes_per_second: u64) {
        self.a_to_b.set_rate(bytes_per_second);
        self.b_to_a.set_rate(bytes_per_second);
    }

    /// The bucket of the pipe's `a` → `b` direction.
    pub fn a_to_b(&self) -> &TokenBucket {
        &self.a_to_b
    }

    /// The bucket of the pipe's `b` → `a` direction.
    pub fn b_to_a(&self) -> &TokenBucket {
        &self.b_to_a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_lets_a_burst_through_then_charges_at_the_rate() {
        let b = TokenBucket::new(MIB);
        // 100 ms at 1 MiB/s is ~102 KiB: a 64 KiB read is free.
        assert_eq!(b.charge(64 * 1024), Duration::ZERO);
        // The next MiB is owed: about a second, less the burst left.
        let wait = b.charge(MIB as usize);
        let expect = Duration::from_millis(1000 + 62 - 100);
        assert!(wait.abs_diff(expect) < Duration::from_millis(2), "{wait:?}");
        tokio::time::advance(wait).await;
        // Paid: the next small charge costs only itself.
        let w = b.charge(1024);
        assert!(w <= Duration::from_millis(1), "{w:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn credit_does_not_pile_up_while_idle() {
        let b = TokenBucket::new(MIB);
        tokio::time::advance(Duration::from_secs(60)).await;
        // A minute of silence buys the burst, not a minute of traffic.
        let wait = b.charge(2 * MIB as usize);
        let expect = Duration::from_millis(2000 - 100);
        assert!(wait.abs_diff(expect) < Duration::from_millis(2), "{wait:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_long_run_rate_is_the_limit() {
        let b = TokenBucket::new(10 * MIB);
        let start = Instant::now();
        let mut moved = 0u64;
        // A sender that always has 64 KiB ready and waits as told.
        while start.elapsed() < Duration::from_secs(10) {
            moved += 64 * 1024;
            let wait = b.charge(64 * 1024);
            tokio::time::advance(wait.max(Duration::from_micros(1))).await;
        }
        let rate = moved as f64 / start.elapsed().as_secs_f64();
        let limit = (10 * MIB) as f64;
        assert!((rate - limit).abs() / limit < 0.02, "{rate} vs {limit}");
    }

    #[tokio::test(start_paused = true)]
    async fn connections_sharing_a_bucket_share_its_rate() {
        let b = TokenBucket::new(MIB);
        b.charge(MIB as usize / 10);
        // Two senders of 512 KiB each owe a second together, whoever goes last.
        b.charge(512 * 1024);
        let last = b.charge(512 * 1024);
        assert!(
            last.abs_diff(Duration::from_secs(1)) < Duration::from_millis(2),
            "{last:?}"
        );
        b.set_rate(2 * MIB);
        assert_eq!(b.rate(), 2 * MIB);
    }
}
