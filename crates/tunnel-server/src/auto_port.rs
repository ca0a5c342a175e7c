//! Automatic publish ports (`publish_port = "auto"`): the order in which ports are tried
//! for a proxy, and the memory that gives a client's proxy the same port after a reconnect.
//!
//! The memory is `(client id, proxy name) -> port`, in this process only and bounded: past
//! [`REMEMBERED`] entries the least recently used tenth is forgotten. Without a memory (a
//! restarted server, a forgotten entry) the walk still starts at a point derived from the
//! client id and proxy name, so the same proxy tends to land on the same port anyway.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use parking_lot::Mutex;

use crate::ports::PortRanges;

/// Most `(client id, proxy name)` pairs remembered.
pub(crate) const REMEMBERED: usize = 10_000;

/// Most ports tried (bound) for one automatic proxy: a server whose allowed ports are nearly
/// all taken refuses after this many rather than trying thousands per registration.
pub(crate) const MAX_TRIES: usize = 64;

/// Ports scanned for candidates per registration, at most (the walk over allowed ports).
const MAX_SCAN: usize = 65_536;

type Owner = (String, String);

/// The memory of automatic ports given out.
pub(crate) struct AutoPorts {
    memory: Mutex<Memory>,
    cap: usize,
}

#[derive(Default)]
struct Memory {
    /// The port an owner got last, and when (a logical clock).
    by_owner: HashMap<Owner, (u16, u64)>,
    /// Who got each remembered port: a port remembered for another proxy is tried last, so
    /// that its owner finds it free when it comes back.
    by_port: HashMap<u16, Owner>,
    clock: u64,
}

impl Default for AutoPorts {
    fn default() -> Self {
        AutoPorts::with_capacity(REMEMBERED)
    }
}

impl AutoPorts {
    fn with_capacity(cap: usize) -> Self {
        AutoPorts {
            memory: Mutex::default(),
            cap: cap.max(1),
        }
    }

    /// The port `client`'s proxy `name` got last, if remembered.
    pub(crate) fn remembered(&self, client: &str, name: &str) -> Option<u16> {
        let owner = (client.to_owned(), name.to_owned());
        self.memory.lock().by_owner.get(&owner).map(|(p, _)| *p)
    }

    /// `client`'s proxy `name` now has `port`.
    pub(crate) fn remember(&self, client: &str, name: &str, port: u16) {
        let owner = (client.to_owned(), name.to_owned());
        let mut m = self.memory.lock();
        m.clock += 1;
        let now = m.clock;
        if let Some((old, _)) = m.by_owner.insert(owner.clone(), (port, now)) {
            if old != port && m.by_port.get(&old) == Some(&owner) {
                m.by_port.remove(&old);
            }
        }
        if let Some(previous) = m.by_port.insert(port, owner.clone()) {
            // The port went to someone else: the previous owner's memory of it is stale.
            if previous != owner && m.by_owner.get(&previous).is_some_and(|(p, _)| *p == port) {
                m.by_owner.remove(&previous);
            }
        }
        if m.by_owner.len() > self.cap {
            let mut ages: Vec<u64> = m.by_owner.values().map(|(_, t)| *t).collect();
            let drop = (self.cap / 10).max(1) + (ages.len() - self.cap - 1);
            ages.select_nth_unstable(drop - 1);
            let cutoff = ages[drop - 1];
            let Memory {
                by_owner, by_port, ..
            } = &mut *m;
            by_owner.retain(|o, (p, t)| {
                let keep = *t > cutoff;
                if !keep && by_port.get(p) == Some(o) {
                    by_port.remove(p);
                }
                keep
            });
        }
    }

    /// The ports to try, in order, for `client`'s proxy `name`: its remembered port first,
    /// then a walk over `allowed` (the client's scope when it has one, checked against the
    /// server's `server_allows` too) from a point of the pair's own, ports remembered for
    /// other proxies last. At most [`MAX_TRIES`].
    pub(crate) fn candidates(
        &self,
        client: &str,
        name: &str,
        allowed: &PortRanges,
        server_allows: impl Fn(u16) -> bool,
    ) -> Vec<u16> {
        let ok = |p: u16| allowed.contains(p) && server_allows(p);
        let owner = (client.to_owned(), name.to_owned());
        let m = self.memory.lock();
        let mut out = Vec::with_capacity(MAX_TRIES);
        if let Some((p, _)) = m.by_owner.get(&owner) {
            if ok(*p) {
                out.push(*p);
            }
        }
        let len = allowed.len().min(MAX_SCAN);
        let start = start_of(&owner);
        let walk = (0..len).filter_map(|i| allowed.nth_wrapping(start.wrapping_add(i)));
        let mut taken_by_others = Vec::new();
        for p in walk {
            if out.len() >= MAX_TRIES {
                break;
            }
            if !ok(p) || out.contains(&p) {
                continue;
            }
            match m.by_port.get(&p) {
                Some(o) if *o != owner => {
                    if taken_by_others.len() < MAX_TRIES {
                        taken_by_others.push(p);
                    }
                }
                _ => out.push(p),
            }
        }
        let room = MAX_TRIES.saturating_sub(out.len());
        out.extend(taken_by_others.into_iter().take(room));
        out
    }
}

/// Where the walk of `owner` starts: stable across reconnects and server restarts.
fn start_of(owner: &Owner) -> usize {
    // `DefaultHasher::new` has fixed keys: the same pair gets the same start in every
    // process of one build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    owner.hash(&mut h);
    // Truncation is fine: any start will do, the same one each time.
    h.finish() as usize
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ranges(list: &[&str]) -> PortRanges {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_same_pair_starts_at_the_same_port_and_stays_in_range() {
        let a = AutoPorts::default();
        let allowed = ranges(&["6000-6099"]);
        let first = a.candidates("c1", "web", &allowed, |_| true);
        assert_eq!(first.len(), MAX_TRIES);
        assert!(first.iter().all(|p| (6000..=6099).contains(p)));
        assert_eq!(
            first,
            AutoPorts::default().candidates("c1", "web", &allowed, |_| true)
        );
        let mut unique = first.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), first.len());
    }

    #[test]
    fn a_remembered_port_comes_first_and_others_ports_last() {
        let a = AutoPorts::default();
        let allowed = ranges(&["6000-6003"]);
        a.remember("c1", "web", 6002);
        let mine = a.candidates("c1", "web", &allowed, |_| true);
        assert_eq!(mine[0], 6002);
        assert_eq!(mine.len(), 4);
        let theirs = a.candidates("c2", "web", &allowed, |_| true);
        assert_eq!(theirs.last(), Some(&6002), "{theirs:?}");
        assert_eq!(theirs.len(), 4);
    }

    #[test]
    fn the_server_and_the_scope_both_bound_the_choice() {
        let a = AutoPorts::default();
        a.remember("c1", "web", 7000);
        // Remembered, but no longer allowed: not tried.
        let c = a.candidates("c1", "web", &ranges(&["6000-6001"]), |p| p != 6000);
        assert_eq!(c, [6001]);
        assert!(a
            .candidates("c1", "web", &ranges(&["6000"]), |_| false)
            .is_empty());
    }

    #[test]
    fn a_port_given_to_another_pair_is_forgotten_for_the_first() {
        let a = AutoPorts::default();
        a.remember("c1", "web", 6000);
        a.remember("c2", "api", 6000);
        assert_eq!(a.remembered("c1", "web"), None);
        assert_eq!(a.remembered("c2", "api"), Some(6000));
        a.remember("c2", "api", 6001);
        assert_eq!(a.remembered("c2", "api"), Some(6001));
        assert!(!a.memory.lock().by_port.contains_key(&6000));
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_the_least_recently_used() {
        let a = AutoPorts::with_capacity(100);
        for i in 0..100u16 {
            a.remember("c", &format!("p{i}"), 10_000 + i);
        }
        // Refreshed: p0 is now the most recent.
        a.remember("c", "p0", 10_000);
        a.remember("c", "new", 20_000);
        let m = a.memory.lock();
        assert!(m.by_owner.len() <= 100, "{}", m.by_owner.len());
        assert_eq!(m.by_owner.len(), m.by_port.len());
        drop(m);
        assert_eq!(a.remembered("c", "p0"), Some(10_000));
        assert_eq!(a.remembered("c", "new"), Some(20_000));
        assert_eq!(a.remembered("c", "p1"), None);
    }
}
