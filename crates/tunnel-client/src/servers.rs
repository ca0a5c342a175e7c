//! Which server to dial. The `server_addr` list is shuffled once at start (so that a fleet of
//! clients with the same list spreads over the servers) and then tried in that order, each
//! attempt starting where the last one left off: a server that just failed, or whose session
//! just ended, is tried last, not first.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tunnel_transport::Transport;

/// One entry of `server_addr`, with the transport that dials it (its own certificate name).
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: String,
    pub(crate) transport: Arc<dyn Transport>,
}

/// The servers in the order they are tried, and where the next attempt goes.
#[derive(Debug)]
pub(crate) struct Servers {
    list: Vec<Arc<Server>>,
    rotation: Mutex<Rotation>,
    /// The server of the live session, while there is one: for the stats endpoint.
    current: RwLock<Option<Arc<Server>>>,
}

impl Servers {
    /// `servers` in the order written, shuffled with `random`.
    pub(crate) fn new(servers: Vec<Server>, random: &[u8]) -> Self {
        let mut slots: Vec<Option<Server>> = servers.into_iter().map(Some).collect();
        let list = shuffled(slots.len(), random)
            .into_iter()
            .filter_map(|i| slots[i].take().map(Arc::new))
            .collect::<Vec<_>>();
        Servers {
            rotation: Mutex::new(Rotation::new(list.len())),
            list,
            current: RwLock::new(None),
        }
    }

    /// Random bytes [`Servers::new`] uses for `n` servers.
    pub(crate) fn random_len(n: usize) -> usize {
        n.saturating_sub(1) * 4
    }

    /// The server to try now.
    pub(crate) fn next(&self) -> Arc<Server> {
        self.list[self.rotation.lock().next()].clone()
    }

    /// The addresses in the order they are tried.
    pub(crate) fn order(&self) -> String {
        let addrs: Vec<&str> = self.list.iter().map(|s| s.addr.as_str()).collect();
        addrs.join(", ")
    }

    /// How many servers there are.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The attempt at [`Servers::next`] failed; see [`Rotation::failed`].
    pub(crate) fn failed(&self) -> bool {
        self.rotation.lock().failed()
    }

    /// A session on `server` is up.
    pub(crate) fn connected(&self, server: &Arc<Server>) {
        self.rotation.lock().connected();
        *self.current.write() = Some(server.clone());
    }

    /// The live session ended (lost, or shut down).
    pub(crate) fn ended(&self) {
        *self.current.write() = None;
    }

    /// The session on [`Servers::next`] was lost; see [`Rotation::lost`].
    pub(crate) fn lost(&self) {
        self.rotation.lock().lost();
    }

    /// The address of the live session's server.
    pub(crate) fn current_addr(&self) -> Option<String> {
        self.current.read().as_ref().map(|s| s.addr.clone())
    }
}

/// The indices `0..n` in a random order (Fisher-Yates), four bytes of `random` per swap; the
/// order written where `random` runs short.
fn shuffled(n: usize, random: &[u8]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut chunks = random.chunks_exact(4);
    for i in (1..n).rev() {
        let Some(c) = chunks.next() else { break };
        let r = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize;
        order.swap(i, r % (i + 1));
    }
    order
}

/// Position in the try order of the next attempt, and how many attempts in a row failed.
#[derive(Debug)]
pub(crate) struct Rotation {
    len: usize,
    next: usize,
    failed: usize,
}

impl Rotation {
    pub(crate) fn new(len: usize) -> Self {
        Rotation {
            len: len.max(1),
            next: 0,
            failed: 0,
        }
    }

    /// The position of the server to try now.
    pub(crate) fn next(&self) -> usize {
        self.next
    }

    /// The attempt failed: move on to the next server. Returns whether a whole round (every
    /// server once) has failed since the last success, which is when the caller backs off; until
    /// then it dials the next one at once.
    pub(crate) fn failed(&mut self) -> bool {
        self.next = (self.next + 1) % self.len;
        self.failed += 1;
        if self.failed >= self.len {
            self.failed = 0;
            true
        } else {
            false
        }
    }

    /// A session got going: a later failure starts a new round.
    pub(crate) fn connected(&mut self) {
        self.failed = 0;
    }

    /// The session ended: its server goes to the end of the next round.
    pub(crate) fn lost(&mut self) {
        self.next = (self.next + 1) % self.len;
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_moves_on_at_once_until_a_whole_round_failed() {
        let mut r = Rotation::new(3);
        let mut tried = vec![r.next()];
        let mut back_off = Vec::new();
        for _ in 0..6 {
            back_off.push(r.failed());
            tried.push(r.next());
        }
        assert_eq!(tried, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(back_off, [false, false, true, false, false, true]);
    }

    #[test]
    fn a_lost_session_sends_the_next_attempt_to_the_next_server() {
        let mut r = Rotation::new(3);
        r.failed(); // 0 is down
        r.connected(); // on 1
        assert_eq!(r.next(), 1);
        r.lost();
        assert_eq!(r.next(), 2);
        // 2 and 0 fail: 1, where the session was lost, comes last, then the backoff.
        assert!(!r.failed());
        assert!(!r.failed());
        assert_eq!(r.next(), 1);
        assert!(r.failed());
        assert_eq!(r.next(), 2);
    }

    #[test]
    fn a_failure_after_a_session_starts_a_fresh_round() {
        let mut r = Rotation::new(2);
        assert!(!r.failed());
        r.connected();
        r.lost();
        // One failure before the session does not count against the round after it.
        assert!(!r.failed());
        assert!(r.failed());
    }

    #[test]
    fn one_server_backs_off_after_every_failure() {
        let mut r = Rotation::new(1);
        assert!(r.failed() && r.failed());
        r.lost();
        assert_eq!(r.next(), 0);
    }

    #[test]
    fn shuffled_is_a_permutation_and_depends_on_the_random_bytes() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0u32..64 {
            let random: Vec<u8> = (0..4u32)
                .flat_map(|i| {
                    seed.wrapping_mul(2_654_435_761)
                        .wrapping_add(i)
                        .to_le_bytes()
                })
                .collect();
            let order = shuffled(5, &random);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            seen.insert(order);
        }
        assert!(seen.len() > 10, "{} orders", seen.len());
        // Every server can come first.
        let firsts: std::collections::HashSet<_> = seen.iter().map(|o| o[0]).collect();
        assert_eq!(firsts.len(), 5);
        assert_eq!(shuffled(3, &[]), [0, 1, 2]);
        assert_eq!(shuffled(0, &[1, 2, 3, 4]), Vec::<usize>::new());
    }
}
