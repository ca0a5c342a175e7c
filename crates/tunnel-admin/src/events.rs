//! Recent events an operator wants to see on the dashboard: refused logins and
//! registrations, with their reasons. A bounded ring; a repeat of one of the newest few
//! events bumps its count (and moves it to the front) instead of taking a slot, so a few
//! sources hammering the server, even taking turns, cost one entry each.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

/// Events kept.
pub const EVENTS_KEPT: usize = 200;
/// Events shown by [`EventLog::recent`].
pub const EVENTS_SHOWN: usize = 100;
/// How many of the newest events a new one is compared with: bounds the work per record.
const MERGE_WINDOW: usize = 16;
/// Longest text kept from a field a peer chooses (a proxy name in a reason, a client id).
const FIELD_MAX: usize = 200;

/// One event, or a run of identical ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix time (seconds) of the last occurrence.
    pub t: u64,
    /// What happened, a fixed word such as `auth_failure` (see the engines' docs).
    pub kind: &'static str,
    /// The peer's address (without the port: every retry has a new port).
    pub source: String,
    /// The client's id when it is known at that point.
    pub client: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// Occurrences merged into this entry (identical events close together).
    pub count: u64,
}

/// The ring. Recording takes a short lock and does O(1) work.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: Mutex<VecDeque<Event>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record an event now. `source`, `client` and `reason` are cut at 200 bytes.
    pub fn record(&self, kind: &'static str, source: &str, client: Option<&str>, reason: &str) {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.record_at(t, kind, source, client, reason);
    }

    /// Record an event at unix second `t`.
    pub fn record_at(
        &self,
        t: u64,
        kind: &'static str,
        source: &str,
        client: Option<&str>,
        reason: &str,
    ) {
        let (source, client, reason) = (cut(source), client.map(cut), cut(reason));
        let mut ring = self.ring.lock();
        let len = ring.len();
        let same = ring.iter().rev().take(MERGE_WINDOW).position(|e| {
            e.kind == kind
                && e.source == source
                && e.client.as_deref() == client
                && e.reason == reason
        });
        // Within the window: removing near the back moves at most MERGE_WINDOW entries.
        if let Some(mut e) = same.and_then(|back| ring.remove(len - 1 - back)) {
            e.count = e.count.saturating_add(1);
            e.t = t;
            ring.push_back(e);
            return;
        }
        if ring.len() == EVENTS_KEPT {
            ring.pop_front();
        }
        ring.push_back(Event {
            t,
            kind,
            source: source.to_owned(),
            client: client.map(str::to_owned),
            reason: reason.to_owned(),
            count: 1,
        });
    }

    /// The newest [`EVENTS_SHOWN`] events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.ring
            .lock()
            .iter()
            .rev()
            .take(EVENTS_SHOWN)
            .cloned()
            .collect()
    }
}

/// `s` cut at a char boundary at most [`FIELD_MAX`] bytes in.
fn cut(s: &str) -> &str {
    if s.len() <= FIELD_MAX {
        return s;
    }
    let mut end = FIELD_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_merge_into_one_entry_with_a_count() {
        let log = EventLog::new();
        for t in 0..1000 {
            log.record_at(t, "auth_failure", "10.0.0.9", None, "wrong auth key");
        }
        log.record_at(
            1000,
            "register_refused",
            "10.0.0.2",
            Some("c1"),
            "port taken",
        );
        log.record_at(1001, "auth_failure", "10.0.0.9", None, "wrong auth key");
        log.record_at(1002, "auth_failure", "10.0.0.9", None, "another reason");
        let r = log.recent();
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!((r[0].reason.as_str(), r[0].count), ("another reason", 1));
        assert_eq!(
            (r[1].kind, r[1].count, r[1].t),
            ("auth_failure", 1001, 1001)
        );
        assert_eq!(r[2].client.as_deref(), Some("c1"));
    }

    #[test]
    fn sources_taking_turns_still_cost_one_entry_each() {
        let log = EventLog::new();
        log.record_at(0, "register_refused", "10.0.0.1", Some("c"), "port taken");
        for t in 1..=1000 {
            let source = format!("10.9.9.{}", t % 3);
            log.record_at(t, "auth_failure", &source, None, "wrong auth key");
        }
        let r = log.recent();
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r.iter().map(|e| e.count).sum::<u64>(), 1001);
        assert_eq!(r[3].kind, "register_refused");
        // The one seen last is first.
        assert_eq!((r[0].source.as_str(), r[0].t), ("10.9.9.1", 1000));
    }

    #[test]
    fn the_ring_is_bounded_and_shows_the_newest_first() {
        let log = EventLog::new();
        for i in 0..(EVENTS_KEPT as u64 + 50) {
            log.record_at(i, "auth_failure", &format!("10.0.0.{i}"), None, "x");
        }
        assert_eq!(log.ring.lock().len(), EVENTS_KEPT);
        let r = log.recent();
        assert_eq!(r.len(), EVENTS_SHOWN);
        assert_eq!(r[0].t, EVENTS_KEPT as u64 + 49);
        assert!(r.windows(2).all(|w| w[0].t > w[1].t));
    }

    #[test]
    fn long_fields_are_cut_at_a_char_boundary() {
        let log = EventLog::new();
        let long = "é".repeat(300);
        log.record_at(0, "register_refused", &long, Some(&long), &long);
        let e = &log.recent()[0];
        assert!(e.reason.len() <= FIELD_MAX && e.reason.len() >= FIELD_MAX - 1);
        assert!(e.source.len() <= FIELD_MAX);
        assert!(e.client.as_ref().is_some_and(|c| c.len() <= FIELD_MAX));
    }
}
