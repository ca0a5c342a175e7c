//! Basic auth on the virtual host: the credential check, and per-source accounting of
//! failures so that guessing is logged, counted and stopped.
//!
//! A source (an IPv4 address or IPv6 /64) that fails [`MAX_FAILURES`] times within
//! [`WINDOW`] is refused without its credentials being checked until the window ends: a
//! guesser gets a handful of tries a minute instead of thousands a second. The table is
//! bounded; when full, the oldest window is forgotten first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{header, HeaderMap};
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use crate::source_limit::source_of;

/// Failed attempts from one source within [`WINDOW`] before it is refused.
pub(crate) const MAX_FAILURES: u32 = 5;
/// How long failures are remembered.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);
/// How long a refused attempt waits before its answer, so a refused guesser's connections
/// are not free to retry at once.
pub(crate) const REFUSAL_DELAY: Duration = Duration::from_secs(1);
/// Sources tracked at once (about 64 bytes each).
const MAX_TRACKED: usize = 16_384;

/// Whether the one `Authorization` header is `Basic <expected>`; compared in constant time.
pub(crate) fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((scheme, token)) = v.to_str().ok().and_then(|v| v.trim().split_once(' ')) else {
        return false;
    };
    scheme.eq_ignore_ascii_case("basic")
        && bool::from(token.trim().as_bytes().ct_eq(expected.as_bytes()))
}

/// The `Basic` token for `user:password`, as a browser sends it.
pub(crate) fn basic_credential(user: &str, password: &str) -> String {
    base64(format!("{user}:{password}").as_bytes())
}

/// Standard base64 with padding (RFC 4648 §4): all basic auth needs, no dependency.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

struct Window {
    started: Instant,
    failures: u32,
}

#[derive(Default)]
struct Table {
    by_source: HashMap<IpAddr, Window>,
    /// Sources in the order their windows started (with that start, so a stale entry of a
    /// source whose window restarted is recognised and skipped).
    order: VecDeque<(IpAddr, Instant)>,
}

/// Failures per source, bounded.
#[derive(Default)]
pub(crate) struct Failures {
    table: Mutex<Table>,
}

/// What a recorded failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Answer 401 as usual.
    Retry,
    /// This failure used up the source's tries: it is refused from now on.
    NowBlocked,
}

impl Failures {
    /// How long `ip`'s source stays refused, if it is.
    pub(super) fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let t = self.table.lock();
        let w = t.by_source.get(&source_of(ip))?;
        let left = WINDOW.checked_sub(now.duration_since(w.started))?;
        (w.failures >= MAX_FAILURES && !left.is_zero()).then_some(left)
    }

    /// Record one failure from `ip`.
    pub(super) fn record(&self, ip: IpAddr, now: Instant) -> Verdict {
        let source = source_of(ip);
        let mut guard = self.table.lock();
        let t = &mut *guard;
        let fresh = t
            .by_source
            .get(&source)
            .is_none_or(|w| now.duration_since(w.started) >= WINDOW);
        if fresh {
            while t.by_source.len() >= MAX_TRACKED && !t.by_source.contains_key(&source) {
                let Some((old, started)) = t.order.pop_front() else {
                    break;
                };
                if t.by_source.get(&old).is_some_and(|w| w.started == started) {
                    t.by_source.remove(&old);
                }
            }
            t.by_source.insert(
                source,
                Window {
                    started: now,
                    failures: 0,
                },
            );
            t.order.push_back((source, now));
            // Stale order entries (restarted windows) are dropped as they reach the front;
            // keep the queue from growing past the table by much.
            while t.order.len() > 2 * MAX_TRACKED {
                t.order.pop_front();
            }
        }
        let Some(w) = t.by_source.get_mut(&source) else {
            return Verdict::Retry;
        };
        w.failures = w.failures.saturating_add(1);
        if w.failures == MAX_FAILURES {
            Verdict::NowBlocked
        } else {
            Verdict::Retry
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.lock().by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc, "{plain:?}");
        }
        assert_eq!(
            basic_credential("Aladdin", "open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
    }

    #[test]
    fn blocks_after_max_failures_for_the_rest_of_the_window() {
        let f = Failures::default();
        let t0 = Instant::now();
        for _ in 1..MAX_FAILURES {
            assert_eq!(f.record(ip(1), t0), Verdict::Retry);
            assert_eq!(f.blocked_for(ip(1), t0), None);
        }
        assert_eq!(f.record(ip(1), t0), Verdict::NowBlocked);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(
            f.blocked_for(ip(1), later),
            Some(WINDOW - Duration::from_secs(20))
        );
        assert_eq!(f.blocked_for(ip(2), later), None);
        assert_eq!(f.blocked_for(ip(1), t0 + WINDOW), None);
        assert_eq!(f.record(ip(1), t0 + WINDOW), Verdict::Retry);
    }

    #[test]
    fn a_full_table_forgets_the_oldest_source_first() {
        let f = Failures::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            f.record(ip(0), t0);
        }
        for n in 1..MAX_TRACKED as u32 + 10 {
            f.record(ip(n), t0 + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(f.tracked(), MAX_TRACKED);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(f.blocked_for(ip(0), now), None, "the oldest went first");
        // A recent source is still tracked.
        let last = ip(MAX_TRACKED as u32 + 9);
        for _ in 1..MAX_FAILURES {
            f.record(last, now);
        }
        assert!(f.blocked_for(last, now).is_some());
    }
}
