//! The throughput history behind `/api/history`: a sampler reads the engine's cumulative
//! byte counters every second and keeps rates for the last 15 minutes, in bounded rings.
//!
//! Rates come from per-key deltas, so a proxy that goes away takes its bytes with it without
//! making the total fall below zero, and one that appears counts from 0 (its counters are new).

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

/// Points kept for the totals: one a second for 15 minutes.
pub const TOTAL_POINTS: usize = 900;
/// Seconds per point of one series (a proxy, a visitor).
pub const SERIES_STEP: u64 = 5;
/// Points kept per series: 15 minutes at [`SERIES_STEP`].
pub const SERIES_POINTS: usize = 180;
/// Series tracked at once; the least recently seen one makes room for a new one.
pub const MAX_SERIES: usize = 1024;
/// How long a vanished series keeps its points: as long as they would be shown.
const SERIES_KEEP: u64 = SERIES_STEP * SERIES_POINTS as u64;

/// Cumulative counters of one series as the engine keeps them, read by the sampler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes toward the service since the series appeared.
    pub bytes_in: u64,
    /// Bytes back from the service since the series appeared.
    pub bytes_out: u64,
    /// Streams open now (a gauge, not cumulative).
    pub streams: u64,
}

/// One reading of an engine's counters: every live series by its key (the key the JSON of
/// `/api/stats` shows as `key`).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Series and their cumulative counters; keys are unique.
    pub series: Vec<(String, Counts)>,
}

/// One point: unix time (seconds), bytes/s in, bytes/s out, streams open. Serialised as an
/// array to keep a 900-point answer small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Point(pub u64, pub u64, pub u64, pub u64);

#[derive(Debug, Default)]
struct Series {
    points: VecDeque<Point>,
    acc_in: u64,
    acc_out: u64,
    streams: u64,
    /// Last sample that listed the series.
    seen: u64,
}

/// The rings and the previous reading.
#[derive(Debug, Default)]
pub(crate) struct History {
    prev: HashMap<String, Counts>,
    last: Option<u64>,
    bucket_start: u64,
    totals: VecDeque<Point>,
    series: HashMap<String, Series>,
}

impl History {
    /// Take the reading `traffic` made at unix second `t`. The first reading is the baseline;
    /// a reading not later than the previous one (a clock stepped back) is skipped, its bytes
    /// then count in the next one.
    pub(crate) fn record(&mut self, t: u64, traffic: &Traffic) {
        let Some(last) = self.last else {
            self.prev = traffic.series.iter().cloned().collect();
            self.last = Some(t);
            self.bucket_start = t;
            return;
        };
        if t <= last {
            return;
        }
        let dt = t - last;
        let (mut sum_in, mut sum_out, mut streams) = (0u64, 0u64, 0u64);
        let mut next = HashMap::with_capacity(traffic.series.len());
        for (key, c) in &traffic.series {
            let p = self.prev.get(key).copied().unwrap_or_default();
            let d_in = c.bytes_in.saturating_sub(p.bytes_in);
            let d_out = c.bytes_out.saturating_sub(p.bytes_out);
            sum_in = sum_in.saturating_add(d_in);
            sum_out = sum_out.saturating_add(d_out);
            streams = streams.saturating_add(c.streams);
            if let Some(s) = self.series_entry(key, t) {
                s.acc_in = s.acc_in.saturating_add(d_in);
                s.acc_out = s.acc_out.saturating_add(d_out);
                s.streams = c.streams;
                s.seen = t;
            }
            next.insert(key.clone(), *c);
        }
        self.prev = next;
        self.last = Some(t);
        push(
            &mut self.totals,
            Point(t, sum_in / dt, sum_out / dt, streams),
            TOTAL_POINTS,
        );
        let span = t - self.bucket_start;
        if span >= SERIES_STEP {
            let start = self.bucket_start;
            self.series.retain(|_, s| {
                if s.seen > start {
                    let p = Point(t, s.acc_in / span, s.acc_out / span, s.streams);
                    push(&mut s.points, p, SERIES_POINTS);
                }
                s.acc_in = 0;
                s.acc_out = 0;
                s.seen + SERIES_KEEP > t
            });
            self.bucket_start = t;
        }
    }

    /// The series `key`, made if there is room: the least recently seen one is evicted, but
    /// never one seen in this same reading (more than [`MAX_SERIES`] live series leave the
    /// rest without history, still counted in the totals).
    fn series_entry(&mut self, key: &str, t: u64) -> Option<&mut Series> {
        if !self.series.contains_key(key) {
            if self.series.len() >= MAX_SERIES {
                let oldest = self
                    .series
                    .iter()
                    .filter(|(_, s)| s.seen < t)
                    .min_by_key(|(_, s)| s.seen)
                    .map(|(k, _)| k.clone())?;
                self.series.remove(&oldest);
            }
            self.series.insert(key.to_owned(), Series::default());
        }
        self.series.get_mut(key)
    }

    /// Totals after unix second `since` (all with `None`), oldest first.
    pub(crate) fn totals(&self, since: Option<u64>) -> Vec<Point> {
        after(&self.totals, since)
    }

    /// The points of series `key` after `since`; empty for a key without history (unknown,
    /// or too new to have a point).
    pub(crate) fn series(&self, key: &str, since: Option<u64>) -> Vec<Point> {
        self.series
            .get(key)
            .map(|s| after(&s.points, since))
            .unwrap_or_default()
    }

    /// Series tracked now.
    #[cfg(test)]
    fn series_count(&self) -> usize {
        self.series.len()
    }
}

fn push(ring: &mut VecDeque<Point>, p: Point, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(p);
}

fn after(ring: &VecDeque<Point>, since: Option<u64>) -> Vec<Point> {
    let since = since.unwrap_or(0);
    // Points are in time order: skip the old ones from the front without a full scan.
    let start = ring.partition_point(|p| p.0 <= since);
    ring.range(start..).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(items: &[(&str, u64, u64, u64)]) -> Traffic {
        Traffic {
            series: items
                .iter()
                .map(|&(k, i, o, s)| {
                    (
                        k.to_owned(),
                        Counts {
                            bytes_in: i,
                            bytes_out: o,
                            streams: s,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn the_first_reading_is_a_baseline_and_rates_are_per_second() {
        let mut h = History::default();
        h.record(100, &reading(&[("a/web", 5000, 7000, 1)]));
        assert!(h.totals(None).is_empty());
        h.record(101, &reading(&[("a/web", 6000, 7500, 2)]));
        h.record(103, &reading(&[("a/web", 8000, 7500, 0)]));
        assert_eq!(
            h.totals(None),
            vec![Point(101, 1000, 500, 2), Point(103, 1000, 0, 0)]
        );
        assert_eq!(h.totals(Some(101)), vec![Point(103, 1000, 0, 0)]);
        assert!(h.totals(Some(103)).is_empty());
    }

    #[test]
    fn a_new_key_counts_from_zero_and_a_vanished_one_does_not_go_negative() {
        let mut h = History::default();
        h.record(0, &reading(&[("a/old", 1_000_000, 0, 0)]));
        // "old" goes away (its client left), "new" appears with 300 bytes already moved.
        h.record(1, &reading(&[("b/new", 300, 30, 1)]));
        assert_eq!(h.totals(None), vec![Point(1, 300, 30, 1)]);
        // A counter that went backwards (a reset) is a zero delta, not a wrap to 2^64.
        h.record(2, &reading(&[("b/new", 100, 30, 1)]));
        assert_eq!(h.totals(Some(1)), vec![Point(2, 0, 0, 1)]);
        // "old" comes back: from 0 again, not from its last value.
        h.record(3, &reading(&[("b/new", 100, 30, 1), ("a/old", 50, 0, 0)]));
        assert_eq!(h.totals(Some(2)), vec![Point(3, 50, 0, 1)]);
    }

    #[test]
    fn a_clock_stepping_back_skips_the_reading() {
        let mut h = History::default();
        h.record(10, &reading(&[("k", 0, 0, 0)]));
        h.record(11, &reading(&[("k", 10, 0, 0)]));
        h.record(9, &reading(&[("k", 20, 0, 0)]));
        h.record(12, &reading(&[("k", 40, 0, 0)]));
        assert_eq!(
            h.totals(None),
            vec![Point(11, 10, 0, 0), Point(12, 30, 0, 0)]
        );
    }

    #[test]
    fn totals_keep_fifteen_minutes_at_one_second() {
        let mut h = History::default();
        for t in 0..=2000u64 {
            h.record(t, &reading(&[("k", t * 10, 0, 0)]));
        }
        let all = h.totals(None);
        assert_eq!(all.len(), TOTAL_POINTS);
        assert_eq!(all[0].0, 2000 - TOTAL_POINTS as u64 + 1);
        assert!(all.iter().all(|p| p.1 == 10));
    }

    #[test]
    fn series_points_every_five_seconds_averaged_over_the_step() {
        let mut h = History::default();
        for t in 0..=10u64 {
            h.record(t, &reading(&[("a/web", t * 100, t * 20, 3)]));
        }
        assert_eq!(
            h.series("a/web", None),
            vec![Point(5, 100, 20, 3), Point(10, 100, 20, 3)]
        );
        assert_eq!(h.series("a/web", Some(5)), vec![Point(10, 100, 20, 3)]);
        assert!(h.series("nope", None).is_empty());
        for t in 11..=2000u64 {
            h.record(t, &reading(&[("a/web", t * 100, t * 20, 3)]));
        }
        assert_eq!(h.series("a/web", None).len(), SERIES_POINTS);
    }

    #[test]
    fn a_vanished_series_stops_getting_points_and_is_dropped_after_its_window() {
        let mut h = History::default();
        for t in 0..=5u64 {
            h.record(t, &reading(&[("gone", t, 0, 0)]));
        }
        assert_eq!(h.series("gone", None).len(), 1);
        for t in 6..=20u64 {
            h.record(t, &reading(&[]));
        }
        assert_eq!(h.series("gone", None).len(), 1);
        for t in 21..=(SERIES_KEEP + 10) {
            h.record(t, &reading(&[]));
        }
        assert!(h.series("gone", None).is_empty());
        assert_eq!(h.series_count(), 0);
    }

    #[test]
    fn the_series_count_is_capped_evicting_the_least_recently_seen() {
        let mut h = History::default();
        h.record(0, &reading(&[]));
        // "c/p0" is seen at second 1 only, the others at second 2.
        h.record(1, &reading(&[("c/p0", 1, 0, 0)]));
        let rest: Vec<(String, Counts)> = (1..MAX_SERIES)
            .map(|i| (format!("c/p{i}"), Counts::default()))
            .collect();
        h.record(2, &Traffic { series: rest });
        assert_eq!(h.series_count(), MAX_SERIES);
        h.record(3, &reading(&[("c/fresh", 1, 0, 0)]));
        assert_eq!(h.series_count(), MAX_SERIES);
        assert!(h.series.contains_key("c/fresh"));
        assert!(!h.series.contains_key("c/p0"));
        assert!(h.series.contains_key("c/p1"));

        // More live series than the cap in one reading: the extra ones get no history, and
        // none of this reading's own series is evicted for them.
        let mut h = History::default();
        let many: Vec<(String, Counts)> = (0..MAX_SERIES + 10)
            .map(|i| (format!("c/q{i}"), Counts::default()))
            .collect();
        h.record(0, &Traffic::default());
        h.record(1, &Traffic { series: many });
        assert_eq!(h.series_count(), MAX_SERIES);
        assert!(h.series.contains_key("c/q0"));
    }
}
