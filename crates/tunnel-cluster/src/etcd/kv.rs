//! Reads and transactions: etcd's Range and Txn.

use etcd_client::{CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::classify::{is_compacted, is_lease_not_found, is_too_many_ops};
use super::EtcdStore;
use crate::store::{Compare, KeyValue, Op, TxnOutcome};
use crate::ClusterError;

/// Keys per range request of [`EtcdStore::list`]: registry records are a few hundred bytes,
/// so a page stays far below the message limit while 100k keys take 100 round trips.
const PAGE: i64 = 1000;

/// How often [`EtcdStore::list`] starts over when a compaction overtakes its pages.
const LIST_ATTEMPTS: u32 = 3;

impl EtcdStore {
    /// Every key under `prefix` at one revision, read in pages pinned to the first page's
    /// revision (a consistent snapshot, however large the registry).
    pub(super) async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, i64), ClusterError> {
        let end = prefix_end(prefix.as_bytes());
        let mut attempt = 0;
        'again: loop {
            attempt += 1;
            let (mut out, mut revision) = (Vec::new(), 0);
            let mut from = prefix.as_bytes().to_vec();
            loop {
                let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                if revision != 0 {
                    opts = opts.with_revision(revision);
                }
                let mut kv = self.kv();
                let resp = match self
                    .cx
                    .bounded_raw("get prefix", kv.get(from, Some(opts)))
                    .await?
                {
                    Ok(resp) => resp,
                    // Pages after the first read at its revision; a compaction between them
                    // takes that revision away: start over at the current one.
                    Err(e) if is_compacted(&e) && attempt < LIST_ATTEMPTS => continue 'again,
                    Err(e) => return Err(self.cx.classify("get prefix", e)),
                };
                let mut resp = resp;
                if revision == 0 {
                    revision = resp.header().map_or(0, |h| h.revision());
                }
                let more = resp.more();
                let kvs = resp.take_kvs();
                let Some(last) = kvs.last() else { break };
                // The next page starts just after the last key: that key plus a zero byte.
                from = last.key().to_vec();
                from.push(0);
                out.extend(kvs.iter().filter_map(convert));
                if !more {
                    break;
                }
            }
            return Ok((out, revision));
        }
    }

    /// One key, linearizable.
    pub(super) async fn read(&self, key: &str) -> Result<Option<KeyValue>, ClusterError> {
        let mut kv = self.kv();
        let resp = self.cx.bounded("get", kv.get(key, None)).await?;
        Ok(resp.kvs().first().and_then(convert))
    }

    /// Several keys in one round trip: a transaction of reads (no compare, so it always
    /// runs its reads, at one revision), one per `max_txn_ops` keys.
    pub(super) async fn read_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<KeyValue>>, ClusterError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(self.max_txn_ops.max(1)) {
            let reads: Vec<TxnOp> = chunk.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
            let mut kv = self.kv();
            let resp = self
                .cx
                .bounded("get", kv.txn(Txn::new().and_then(reads)))
                .await?;
            let answers = resp.op_responses();
            if answers.len() != chunk.len() {
                return Err(self.cx.classify(
                    "get",
                    etcd_client::Error::InvalidArgs(format!(
                        "etcd answered {} of {} reads",
                        answers.len(),
                        chunk.len()
                    )),
                ));
            }
            for answer in answers {
                out.push(match answer {
                    TxnOpResponse::Get(got) => got.kvs().first().and_then(convert),
                    _ => None,
                });
            }
        }
        Ok(out)
    }

    /// `ops` if every compare holds, else nothing, in one etcd transaction.
    pub(super) async fn transact(
        &self,
        compares: Vec<Compare>,
        ops: Vec<Op>,
    ) -> Result<TxnOutcome, ClusterError> {
        let n = compares.len().max(ops.len());
        if n > self.max_txn_ops {
            return Err(ClusterError::TooManyOps {
                ops: n,
                limit: self.max_txn_ops,
            });
        }
        // etcd refuses it too, but without naming the key.
        let mut touched = std::collections::HashSet::new();
        for op in &ops {
            let (Op::Put { key, .. } | Op::Delete { key }) = op;
            if !touched.insert(key.as_str()) {
                return Err(ClusterError::DuplicateKey { key: key.clone() });
            }
        }
        // The lease a "lease not found" refers to: a transaction carries its writer's one.
        let lease = ops
            .iter()
            .find_map(|op| match op {
                Op::Put { lease, .. } if *lease != 0 => Some(*lease),
                _ => None,
            })
            .unwrap_or(0);
        let when: Vec<etcd_client::Compare> = compares
            .into_iter()
            .map(|c| match c {
                Compare::ModRevision { key, mod_revision } => {
                    etcd_client::Compare::mod_revision(key, CompareOp::Equal, mod_revision)
                }
            })
            .collect();
        let then: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => TxnOp::put(
                    key,
                    value,
                    (lease != 0).then(|| PutOptions::new().with_lease(lease)),
                ),
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let mut kv = self.kv();
        let txn = Txn::new().when(when).and_then(then);
        match self.cx.bounded_raw("txn", kv.txn(txn)).await? {
            Ok(resp) => Ok(TxnOutcome {
                succeeded: resp.succeeded(),
                revision: resp.header().map_or(0, |h| h.revision()),
            }),
            Err(e) if is_lease_not_found(&e) => Err(ClusterError::LeaseGone(lease)),
            // etcd's --max-txn-ops is lower than configured.
            Err(e) if is_too_many_ops(&e) => Err(ClusterError::TooManyOps {
                ops: n,
                limit: self.max_txn_ops,
            }),
            Err(e) => Err(self.cx.classify("txn", e)),
        }
    }
}

/// etcd's key-value as the store's; `None` (with a warning) for a key that is not UTF-8,
/// which no registry writes: one foreign key must not stop the registry from loading.
pub(super) fn convert(kv: &etcd_client::KeyValue) -> Option<KeyValue> {
    match std::str::from_utf8(kv.key()) {
        Ok(key) => Some(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            lease: kv.lease(),
        }),
        Err(_) => {
            tracing::warn!(
                key = %String::from_utf8_lossy(kv.key()),
                "etcd: ignoring a key under the cluster prefix that is not UTF-8; \
                 something other than tls-tunnel writes there"
            );
            None
        }
    }
}

/// The end of the range of keys starting with `prefix` (etcd's convention): the prefix with
/// its last byte below 0xff raised by one; `\0` (no end) when there is none.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"/tls-tunnel/"), b"/tls-tunnel0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
