//! The registration protocol over a [`ClusterStore`] (design note, section 3, "Register",
//! "Release" and the split-brain rules 1, 3 and 4).
//!
//! * [`Registrar::register`]: read every key the login needs, [`decide`], and commit the
//!   [`Batch`]es as transactions guarded on the revisions read. A lost race (a compare
//!   failed: another server wrote in between) re-reads and decides again, at most
//!   [`MAX_ATTEMPTS`] times in all. The first batch's revision is the session **epoch**.
//! * [`Registrar::release`]: deletes guarded by each key's own put revision, never blind, so
//!   a slow old server cannot erase the newer registration that took its keys over.
//! * [`LeaseKeeper`]: one lease per server (all its keys hang on it, so a dead server's keys
//!   vanish together at one revision), renewed every TTL/3.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::decide::{decide, Batch, Claimant, Held, ProxyClaim, Refusal, Seen, Verdict};
use crate::keys::{KeyKind, Keys};
use crate::records::{
    self, ClientRecord, DomainRecord, Owner, PortRecord, ProxyRecord, ServerRecord,
};
use crate::store::{ClusterStore, Compare, KeyValue, LeaseId, Op};
use crate::ClusterError;

/// Transactions tried per registration before giving up with `Contended`: the first and
/// three retries. Each retry follows a write by another server to one of the same keys, so
/// more than that means a hot conflict the client should back off from.
pub const MAX_ATTEMPTS: u32 = 4;

/// A registration committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The epoch: the revision of the transaction that wrote the client key.
    pub epoch: i64,
    /// Whether the client id was new or taken over from the same instance.
    pub client: Verdict,
    /// The verdict on each claimed proxy, in the order claimed.
    pub proxies: Vec<Verdict>,
    /// Every key written and the revision it was written at: the guards of
    /// [`Registrar::release`].
    pub held: Vec<(String, i64)>,
}

/// What [`Registrar::register`] came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Committed (some proxies may be refused: see [`Registration::proxies`]).
    Done(Registration),
    /// Another instance holds the client id, on `server_id`; nothing was written.
    IdInUse {
        /// The server holding the other instance.
        server_id: String,
    },
}

/// Runs the registration protocol over one store, for one server.
#[derive(Debug)]
pub struct Registrar<S: ?Sized> {
    store: Arc<S>,
    keys: Keys,
}

impl<S: ClusterStore + ?Sized> Registrar<S> {
    /// A registrar writing under `keys`' prefix.
    pub fn new(store: Arc<S>, keys: Keys) -> Self {
        Registrar { store, keys }
    }

    /// The key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Registers `who` with `proxies`, every key under `lease` (the server's).
    pub async fn register(
        &self,
        who: &Claimant,
        lease: LeaseId,
        proxies: &[ProxyClaim],
    ) -> Result<Registered, ClusterError> {
        let wanted = self.wanted_keys(who, proxies)?;
        for _ in 0..MAX_ATTEMPTS {
            let seen = self.read(&wanted).await?;
            let plan = decide(&self.keys, who, proxies, &seen, self.store.max_txn_ops())?;
            if let Verdict::Refused(Refusal::IdInUse { server_id }) = plan.client {
                return Ok(Registered::IdInUse { server_id });
            }
            if let Some(held) = self.commit(&plan.batches, &plan.client_key, lease).await? {
                return Ok(Registered::Done(Registration {
                    epoch: held.first().map_or(0, |(_, rev)| *rev),
                    client: plan.client,
                    proxies: plan.proxies,
                    held,
                }));
            }
        }
        Err(ClusterError::Contended {
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Announces this server: `server/<id>` under its lease, so it vanishes with the server.
    /// Rewritten (same lease) to mark it draining.
    pub async fn announce(
        &self,
        server_id: &str,
        record: &ServerRecord,
        lease: LeaseId,
    ) -> Result<(), ClusterError> {
        let key = self.keys.key(&KeyKind::Server(server_id.to_string()))?;
        let put = Op::Put {
            key,
            value: records::encode(record),
            lease,
        };
        self.store.txn(Vec::new(), vec![put]).await.map(drop)
    }

    /// Deletes what a registration wrote, each key only if it still carries the revision
    /// this registration wrote (a takeover rewrote it: it is no longer ours). One transaction
    /// when nothing was taken over; else one per key. Returns how many keys were deleted.
    pub async fn release(&self, held: &[(String, i64)]) -> Result<usize, ClusterError> {
        let limit = self.store.max_txn_ops();
        let mut deleted = 0;
        for chunk in held.chunks(limit.max(1)) {
            let (compares, ops) = guarded_deletes(chunk);
            if self.store.txn(compares, ops).await?.succeeded {
                deleted += chunk.len();
                continue;
            }
            for one in chunk {
                let (compares, ops) = guarded_deletes(std::slice::from_ref(one));
                if self.store.txn(compares, ops).await?.succeeded {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// Runs the batches; the keys written with their revisions, or `None` on a lost race.
    async fn commit(
        &self,
        batches: &[Batch],
        client_key: &str,
        lease: LeaseId,
    ) -> Result<Option<Vec<(String, i64)>>, ClusterError> {
        let mut held = Vec::new();
        let mut epoch = None;
        for b in batches {
            let (compares, ops) = b.txn(lease, client_key, epoch);
            let out = self.store.txn(compares, ops).await?;
            if !out.succeeded {
                // Keys of earlier batches stay: they are ours, and the retry takes them over.
                return Ok(None);
            }
            epoch.get_or_insert(out.revision);
            held.extend(b.puts.iter().map(|p| (p.key.clone(), out.revision)));
        }
        Ok(Some(held))
    }

    /// Every key a registration of `proxies` may touch.
    fn wanted_keys(
        &self,
        who: &Claimant,
        proxies: &[ProxyClaim],
    ) -> Result<Vec<String>, ClusterError> {
        let mut keys = vec![self.keys.key(&KeyKind::Client(who.client_id.clone()))?];
        for p in proxies {
            let mut kinds = vec![KeyKind::Proxy {
                name: p.name.clone(),
                port: p.publish_port,
            }];
            if p.publish_port != 0 {
                kinds.push(KeyKind::Port(p.publish_port));
            }
            kinds.extend(p.domains.iter().cloned().map(KeyKind::Domain));
            // A name too long for a key refuses its proxy in `decide`, not the login.
            keys.extend(kinds.iter().filter_map(|k| self.keys.key(k).ok()));
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// What the store holds for `keys`, in one read where the store can (etcd: one
    /// transaction of reads per `max_txn_ops` keys).
    async fn read(&self, keys: &[String]) -> Result<Seen, ClusterError> {
        let got = self.store.get_many(keys).await?;
        Ok(got
            .into_iter()
            .flatten()
            .filter_map(|kv| held(&self.keys, &kv).map(|h| (kv.key.clone(), h)))
            .collect())
    }
}

/// Who holds `kv`. A value that does not decode is held by nobody we could take it over
/// from: it is kept (never overwritten) and reported, as it may be a newer server's format.
fn held(keys: &Keys, kv: &KeyValue) -> Option<Held> {
    let kind = keys.parse(&kv.key)?;
    let decoded = match &kind {
        KeyKind::Client(id) => records::decode::<ClientRecord>(kv).map(|r| {
            (
                Owner {
                    client_id: id.clone(),
                    instance: r.instance,
                },
                r.server_id,
            )
        }),
        KeyKind::Proxy { .. } => records::decode::<ProxyRecord>(kv).map(|r| {
            (
                Owner {
                    client_id: r.client_id,
                    instance: r.instance,
                },
                r.server_id,
            )
        }),
        KeyKind::Port(_) => records::decode::<PortRecord>(kv).map(|r| {
            (
                Owner {
                    client_id: r.client_id,
                    instance: r.instance,
                },
                r.server_id,
            )
        }),
        KeyKind::Domain(_) => records::decode::<DomainRecord>(kv).map(|r| {
            (
                Owner {
                    client_id: r.client_id,
                    instance: r.instance,
                },
                r.server_id,
            )
        }),
        KeyKind::Server(_) => return None,
    };
    let (owner, server_id) = decoded.unwrap_or_else(|e| {
        tracing::warn!("cluster registry: {e}; the key stays taken until its writer removes it");
        (
            Owner {
                // No client id is empty (the handshake refuses it), so nobody owns this.
                client_id: String::new(),
                instance: [0; 16],
            },
            String::new(),
        )
    });
    Some(Held {
        owner,
        server_id,
        mod_revision: kv.mod_revision,
    })
}

fn guarded_deletes(held: &[(String, i64)]) -> (Vec<Compare>, Vec<Op>) {
    held.iter()
        .map(|(key, rev)| {
            (
                Compare::ModRevision {
                    key: key.clone(),
                    mod_revision: *rev,
                },
                Op::Delete { key: key.clone() },
            )
        })
        .unzip()
}

/// The state of a server's lease, as [`LeaseKeeper`] last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// The last renewal succeeded.
    Alive,
    /// No renewal succeeded for longer than the TTL: the lease may have expired unseen.
    /// The server must stop taking registrations and ask its peers (design rule 5).
    Unconfirmed,
    /// The store says the lease is gone: every key on it is deleted. Take a new lease and
    /// re-register.
    Lost,
}

/// Keeps one lease alive in a background task: a renewal every TTL/3, so two can fail before
/// the lease is at risk.
#[derive(Debug)]
pub struct LeaseKeeper {
    lease: LeaseId,
    state: watch::Receiver<LeaseState>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// Grants a lease of `ttl` and starts renewing it.
    pub async fn start<S: ClusterStore + ?Sized>(
        store: Arc<S>,
        ttl: Duration,
    ) -> Result<Self, ClusterError> {
        let lease = store.grant(ttl).await?;
        let (tx, state) = watch::channel(LeaseState::Alive);
        let task = tokio::spawn(async move {
            let period = ttl / 3;
            let mut last_ok = Instant::now();
            loop {
                tokio::time::sleep(period).await;
                match store.keep_alive(lease).await {
                    Ok(_) => {
                        last_ok = Instant::now();
                        tx.send_replace(LeaseState::Alive);
                    }
                    Err(ClusterError::LeaseGone(_)) => {
                        tracing::warn!("cluster lease {lease:#x} is gone: its keys are deleted");
                        tx.send_replace(LeaseState::Lost);
                        return;
                    }
                    Err(e) => {
                        if last_ok.elapsed() > ttl {
                            if *tx.borrow() != LeaseState::Unconfirmed {
                                tracing::warn!(
                                    "cluster lease {lease:#x} unconfirmed for {:?}: {e}",
                                    last_ok.elapsed()
                                );
                            }
                            tx.send_replace(LeaseState::Unconfirmed);
                        }
                    }
                }
            }
        });
        Ok(LeaseKeeper { lease, state, task })
    }

    /// The lease id, to attach keys to.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// The state now; `changed()` on it waits for the next change.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Stops renewing (the lease then expires after its TTL).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Stops renewing and ends the lease now, deleting every key on it at one revision: the
    /// last step of a graceful stop, after the clients have moved.
    pub async fn revoke<S: ClusterStore + ?Sized>(self, store: &S) -> Result<(), ClusterError> {
        self.task.abort();
        match store.revoke(self.lease).await {
            Err(ClusterError::LeaseGone(_)) => Ok(()),
            other => other,
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests;
