//! Which client ids changed since a revision: the feed that lets a server look up only the
//! clients a registry change touched instead of walking every local session per revision.
//!
//! Bounded: it keeps the last [`CAPACITY`] changes. A reader further behind than that, or
//! behind a re-list (after a compaction or a broken watch: the changes in between are not
//! known one by one), is told [`Changed::Everything`] and walks everything once.

use std::collections::VecDeque;

/// How many client-key changes the feed remembers. A takeover storm of this many clients
/// between two looks of a reader makes it walk everything once, which is what it did for
/// every revision before the feed existed.
pub const CAPACITY: usize = 4096;

/// What changed after a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Too much, or not known key by key: look at everything.
    Everything,
    /// The client ids whose `client/<id>` key was put or deleted, each once, in the order of
    /// their first change.
    Clients(Vec<String>),
}

/// The last changes of client keys, by revision.
#[derive(Debug)]
pub(crate) struct ChangeLog {
    /// `(revision, client id)` in revision order.
    entries: VecDeque<(i64, String)>,
    /// Every change after this revision is in `entries`; a reader at an older one gets
    /// [`Changed::Everything`].
    complete_after: i64,
    capacity: usize,
}

impl ChangeLog {
    pub(crate) fn new(capacity: usize) -> ChangeLog {
        ChangeLog {
            entries: VecDeque::new(),
            complete_after: 0,
            capacity: capacity.max(1),
        }
    }

    /// The view was replaced by a list at `revision`: what changed before it is unknown.
    pub(crate) fn relisted(&mut self, revision: i64) {
        self.entries.clear();
        self.complete_after = revision;
    }

    /// `client_id`'s key changed at `revision`.
    pub(crate) fn record(&mut self, revision: i64, client_id: &str) {
        self.entries.push_back((revision, client_id.to_owned()));
        while self.entries.len() > self.capacity {
            if let Some((rev, _)) = self.entries.pop_front() {
                // Entries of `rev` may remain, but not all of them: only later revisions are
                // complete.
                self.complete_after = self.complete_after.max(rev);
            }
        }
    }

    /// The client ids changed after `revision`.
    pub(crate) fn since(&self, revision: i64) -> Changed {
        if revision < self.complete_after {
            return Changed::Everything;
        }
        // Entries are in revision order: the newer ones are at the back.
        let start = self.entries.partition_point(|(rev, _)| *rev <= revision);
        let mut seen = std::collections::HashSet::new();
        let ids = self
            .entries
            .range(start..)
            .filter(|(_, id)| seen.insert(id.as_str()))
            .map(|(_, id)| id.clone())
            .collect();
        Changed::Clients(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Changed {
        Changed::Clients(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_reader_gets_the_ids_changed_after_its_revision_once_each() {
        let mut log = ChangeLog::new(8);
        log.relisted(10);
        log.record(11, "a");
        log.record(11, "b");
        log.record(12, "a");
        log.record(14, "c");
        assert_eq!(log.since(10), ids(&["a", "b", "c"]));
        assert_eq!(log.since(11), ids(&["a", "c"]));
        assert_eq!(log.since(14), ids(&[]));
        assert_eq!(log.since(9), Changed::Everything, "older than the list");
    }

    #[test]
    fn overflow_and_relist_say_everything_to_readers_behind_them() {
        let mut log = ChangeLog::new(3);
        log.relisted(1);
        for (rev, id) in [(2, "a"), (3, "b"), (3, "c"), (4, "d")] {
            log.record(rev, id);
        }
        // (2, a) fell off: a reader at 1 or 2 missed it.
        assert_eq!(log.since(1), Changed::Everything);
        assert_eq!(log.since(2), ids(&["b", "c", "d"]));
        log.record(5, "e");
        // (3, b) fell off while (3, c) stayed: revision 3 is no longer complete.
        assert_eq!(log.since(2), Changed::Everything);
        assert_eq!(log.since(3), ids(&["d", "e"]));
        log.relisted(9);
        assert_eq!(log.since(5), Changed::Everything);
        assert_eq!(log.since(9), ids(&[]));
    }
}
