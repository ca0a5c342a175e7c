//! Admission to the pre-authentication phase (TLS and the challenge-response), before the
//! server knows who is connecting. Its slots (`max_pending_handshakes`) are shared by every
//! stranger, so:
//!
//! * one source address (an IPv6 /64) holds at most `pending_handshakes_per_source` of them;
//! * from `pending_handshakes_drop_from` pending on, new connections are dropped at random
//!   (sshd's `MaxStartups start:rate:full`), so a flood from many addresses meets a growing
//!   refusal rate instead of a wall, and a legitimate login keeps a chance to get in;
//! * and the caller gives a connection `first_byte_timeout` to say anything at all.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tunnel_transport::{Repeats, WarnLimit};

use crate::config::ServerConfig;
use crate::metrics::PreAuthRefusals;
use crate::source_limit::{SourceLimit, SourcePermit};

/// At most one WARN about refused connections this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Why a connection was closed before TLS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Turned {
    PerSource { limit: usize },
    Full { limit: usize },
    EarlyDrop { pending: usize, percent: f64 },
}

impl std::fmt::Display for Turned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Turned::PerSource { limit } => write!(
                f,
                "this address already has {limit} connections in handshake \
                 (pending_handshakes_per_source)"
            ),
            Turned::Full { limit } => write!(
                f,
                "all {limit} handshake slots are taken (max_pending_handshakes)"
            ),
            Turned::EarlyDrop { pending, percent } => write!(
                f,
                "{pending} connections in handshake: dropping new ones at random ({percent:.0} %, \
                 pending_handshakes_drop_from)"
            ),
        }
    }
}

/// One connection in the pre-authentication phase; frees its slots on drop.
#[derive(Debug)]
pub(crate) struct PreAuthSlot {
    _slot: OwnedSemaphorePermit,
    _source: Option<SourcePermit>,
}

pub(crate) struct PreAuth {
    slots: Arc<Semaphore>,
    full: usize,
    per_source: SourceLimit,
    drop_from: usize,
    drop_percent: f64,
    warn: WarnLimit,
}

impl PreAuth {
    pub(crate) fn new(cfg: &ServerConfig) -> Self {
        PreAuth {
            slots: Arc::new(Semaphore::new(cfg.max_pending_handshakes)),
            full: cfg.max_pending_handshakes,
            per_source: SourceLimit::new(cfg.pending_handshakes_per_source, 0),
            drop_from: cfg.pending_handshakes_drop_from,
            drop_percent: f64::from(cfg.pending_handshakes_drop_percent.min(100)),
            warn: WarnLimit::new(WARN_EVERY),
        }
    }

    /// Connections in the pre-authentication phase now.
    pub(crate) fn pending(&self) -> usize {
        self.full - self.slots.available_permits()
    }

    /// Admit a new connection. `source` is its address where it is the client's own (`None`
    /// behind the proxy on `ws_bind`: no per-source share there). Refusals are counted in
    /// `counts`.
    pub(crate) fn admit(
        &self,
        source: Option<IpAddr>,
        counts: &PreAuthRefusals,
    ) -> Result<PreAuthSlot, Turned> {
        let result = self.admit_with(source, roll);
        if let Err(t) = &result {
            let counter = match t {
                Turned::PerSource { .. } => &counts.per_source,
                Turned::Full { .. } => &counts.full,
                Turned::EarlyDrop { .. } => &counts.early_drop,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Whether to warn about a refusal now; `Some`: with the refusals left out before it.
    pub(crate) fn should_warn(&self) -> Option<Repeats> {
        self.warn.check()
    }

    /// [`PreAuth::admit`] with the random draw (a percentage in 0..100) given.
    fn admit_with(
        &self,
        source: Option<IpAddr>,
        roll: impl FnOnce() -> f64,
    ) -> Result<PreAuthSlot, Turned> {
        let source = match source {
            Some(ip) => Some(
                self.per_source
                    .try_acquire(ip)
                    .map_err(|_| Turned::PerSource {
                        limit: self.per_source_limit(),
                    })?,
            ),
            None => None,
        };
        let pending = self.pending();
        let percent = self.drop_chance(pending);
        if percent > 0.0 && percent < 100.0 && roll() < percent {
            return Err(Turned::EarlyDrop { pending, percent });
        }
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Turned::Full { limit: self.full })?;
        Ok(PreAuthSlot {
            _slot: slot,
            _source: source,
        })
    }

    fn per_source_limit(&self) -> usize {
        self.per_source.per_source()
    }

    /// The chance (percent) that a new connection is dropped with `pending` already in the
    /// phase: 0 below `drop_from`, `drop_percent` there, rising linearly to 100 at full.
    fn drop_chance(&self, pending: usize) -> f64 {
        if self.drop_from == 0 || self.drop_from >= self.full || pending < self.drop_from {
            return 0.0;
        }
        let span = (self.full - self.drop_from) as f64;
        let over = (pending - self.drop_from) as f64;
        (self.drop_percent + (100.0 - self.drop_percent) * over / span).min(100.0)
    }
}

/// A uniform draw in 0..100 from the system's secure generator (already used for nonces);
/// if it fails, 100: never drop for want of randomness.
fn roll() -> f64 {
    let mut b = [0u8; 4];
    match tunnel_transport::fill_random(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0) * 100.0,
        Err(_) => 100.0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn gate(per_source: usize, from: usize, percent: u8, full: usize) -> PreAuth {
        PreAuth::new(&ServerConfig {
            pending_handshakes_per_source: per_source,
            pending_handshakes_drop_from: from,
            pending_handshakes_drop_percent: percent,
            max_pending_handshakes: full,
            ..ServerConfig::default()
        })
    }

    fn ip(i: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, i]))
    }

    #[test]
    fn drop_chance_is_sshd_max_startups() {
        let g = gate(0, 10, 30, 100);
        assert_eq!(g.drop_chance(0), 0.0);
        assert_eq!(g.drop_chance(9), 0.0);
        assert_eq!(g.drop_chance(10), 30.0);
        assert_eq!(g.drop_chance(55), 65.0);
        assert_eq!(g.drop_chance(100), 100.0);
        assert_eq!(gate(0, 0, 30, 100).drop_chance(99), 0.0);
    }

    #[test]
    fn one_source_gets_its_share_and_others_still_get_in() {
        let g = gate(2, 0, 30, 4);
        let counts = PreAuthRefusals::default();
        let a1 = g.admit(ip(1), &counts).unwrap();
        let _a2 = g.admit(ip(1), &counts).unwrap();
        assert_eq!(
            g.admit(ip(1), &counts).unwrap_err(),
            Turned::PerSource { limit: 2 }
        );
        let _b = g.admit(ip(2), &counts).unwrap();
        let _ws = g.admit(None, &counts).unwrap();
        assert_eq!(
            g.admit(ip(3), &counts).unwrap_err(),
            Turned::Full { limit: 4 }
        );
        drop(a1);
        assert_eq!(g.pending(), 3);
        let _c = g.admit(ip(3), &counts).unwrap();
        assert_eq!(counts.per_source.load(Ordering::Relaxed), 1);
        assert_eq!(counts.full.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn early_drop_follows_the_draw() {
        let g = gate(0, 2, 50, 6);
        let held: Vec<_> = (0..2)
            .map(|_| g.admit_with(None, || 0.0).unwrap())
            .collect();
        // At 2 pending: 50 %. A draw under it drops, one over it admits.
        assert!(matches!(
            g.admit_with(None, || 49.9).unwrap_err(),
            Turned::EarlyDrop { pending: 2, .. }
        ));
        let third = g.admit_with(None, || 50.1).unwrap();
        // At 3 pending: 62.5 %.
        assert!(g.admit_with(None, || 62.4).is_err());
        assert!(g.admit_with(None, || 62.6).is_ok());
        drop((held, third));
        assert_eq!(g.pending(), 0);
        assert!((0..1000).map(|_| roll()).all(|r| (0.0..100.0).contains(&r)));
    }
}
