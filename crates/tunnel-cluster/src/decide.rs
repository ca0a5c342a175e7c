//! The registration decision, pure so that property tests can cover it (design note,
//! section 3, "Register", and rules 1 and 3 of "Split-brain and registry-loss rules").
//!
//! Given who registers, what they claim and what the store holds for each key, [`decide`]
//! says per claim:
//! * **take**: the key is absent;
//! * **take over**: the key is held by the same `(client_id, instance)`: the same process
//!   reconnecting through any server replaces its registration at once, with no wait for the
//!   old server's lease;
//! * **refuse**: `client/<id>` held by another instance is [`Refusal::IdInUse`] (the whole
//!   login); a proxy, port or domain held by another client is [`Refusal::NameTaken`],
//!   [`Refusal::PortInUse`] or [`Refusal::DomainTaken`] for that proxy: the first holder
//!   keeps it.
//!
//! A domain belongs to a client, not to one proxy (as in the server's routing table, where a
//! client's proxies may split the locations of a host), so several proxies of one login may
//! list it; it is written once.
//!
//! A key held by the same client id but another instance, while this registration holds the
//! id, is a leftover of a dead instance (the id key says that instance no longer owns the
//! id), so it is taken over as well.
//!
//! The claims granted become [`Batch`]es: each key compared on the `mod_revision` read (0 for
//! absent, so two servers both seeing "absent" cannot both win) and put. A proxy's keys stay
//! in one batch (all or nothing, as on one server); the client key is in the first batch;
//! later batches also compare the client key on the first batch's revision, so that a
//! takeover by another server in between stops them.

use std::collections::{HashMap, HashSet};

use crate::keys::{KeyKind, Keys};
use crate::records::{encode, ClientRecord, DomainRecord, Owner, PortRecord, ProxyRecord};
use crate::store::{Compare, LeaseId, Op};
use crate::ClusterError;

/// Who registers: a client session on a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimant {
    /// The client's chosen id.
    pub client_id: String,
    /// The client process.
    pub instance: [u8; 16],
    /// The server the session is on.
    pub server_id: String,
}

impl Claimant {
    fn owner(&self) -> Owner {
        Owner {
            client_id: self.client_id.clone(),
            instance: self.instance,
        }
    }
}

/// One proxy a client asks for, with every key it needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyClaim {
    /// The proxy name.
    pub name: String,
    /// The publish port, 0 for a private proxy (then no `port/` key).
    pub publish_port: u16,
    /// Its virtual hosts, normalised by the server (each a `domain/` key).
    pub domains: Vec<String>,
    /// The publish port is UDP: the other servers forward datagrams, not connections.
    pub udp: bool,
}

/// What the store holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The client (id and instance) holding it.
    pub owner: Owner,
    /// The server that wrote it.
    pub server_id: String,
    /// Its `mod_revision`: the transaction's guard.
    pub mod_revision: i64,
}

/// What the store holds, by key. A key not in the map is absent.
pub type Seen = HashMap<String, Held>;

/// Why a claim is refused. Nothing in it names the other client: the text goes back to a
/// client, who has no business learning other clients' ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another instance holds the client id; `server_id` (for the operator's log) is where.
    IdInUse {
        /// The server holding the other instance.
        server_id: String,
    },
    /// Another client holds the proxy name at this port.
    NameTaken,
    /// Another client (or another proxy of this one) publishes on the port.
    PortInUse(u16),
    /// Another client (or another proxy of this one) serves the domain.
    DomainTaken(String),
    /// The proxy needs more keys than one transaction may carry.
    TooLarge {
        /// Keys the proxy needs.
        keys: usize,
        /// Keys one batch can hold.
        limit: usize,
    },
    /// A name of the proxy cannot be a key ([`MAX_SEGMENT`](crate::keys::MAX_SEGMENT)).
    NameTooLong,
}

/// The verdict on one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every key was absent.
    Take,
    /// Some key was held by this client (same instance, or a dead one: see the module doc).
    TakeOver,
    /// Refused.
    Refused(Refusal),
}

impl Verdict {
    /// Whether the claim is granted (taken or taken over).
    pub fn granted(&self) -> bool {
        !matches!(self, Verdict::Refused(_))
    }
}

/// A record to put, before its epoch is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A `client/` value.
    Client(ClientRecord),
    /// A `proxy/` value.
    Proxy(ProxyRecord),
    /// A `port/` value.
    Port(PortRecord),
    /// A `domain/` value.
    Domain(DomainRecord),
}

impl Record {
    fn encode_with(&self, epoch: i64) -> Vec<u8> {
        match self.clone() {
            Record::Client(mut r) => {
                r.epoch = epoch;
                encode(&r)
            }
            Record::Proxy(mut r) => {
                r.epoch = epoch;
                encode(&r)
            }
            Record::Port(mut r) => {
                r.epoch = epoch;
                encode(&r)
            }
            Record::Domain(mut r) => {
                r.epoch = epoch;
                encode(&r)
            }
        }
    }
}

/// One guarded put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The key.
    pub key: String,
    /// Its `mod_revision` as read (0: absent): the compare.
    pub seen: i64,
    /// The value.
    pub record: Record,
}

/// One atomic transaction of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The guarded puts.
    pub puts: Vec<Put>,
    /// The indices (into the claimed proxies) this batch grants.
    pub proxies: Vec<usize>,
}

impl Batch {
    /// The compares and ops of the transaction. `epoch` is `None` for the first batch (its
    /// revision becomes the epoch); later batches pass the epoch, which stamps their records
    /// and guards the client key.
    pub fn txn(
        &self,
        lease: LeaseId,
        client_key: &str,
        epoch: Option<i64>,
    ) -> (Vec<Compare>, Vec<Op>) {
        let mut compares: Vec<Compare> = self
            .puts
            .iter()
            .map(|p| Compare::ModRevision {
                key: p.key.clone(),
                mod_revision: p.seen,
            })
            .collect();
        if let Some(epoch) = epoch {
            compares.push(Compare::ModRevision {
                key: client_key.to_string(),
                mod_revision: epoch,
            });
        }
        let ops = self
            .puts
            .iter()
            .map(|p| Op::Put {
                key: p.key.clone(),
                value: p.record.encode_with(epoch.unwrap_or(0)),
                lease,
            })
            .collect();
        (compares, ops)
    }
}

/// The decision on a whole registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The `client/<id>` key.
    pub client_key: String,
    /// The verdict on the client id; when refused, every proxy carries the same refusal and
    /// there are no batches.
    pub client: Verdict,
    /// The verdict on each claimed proxy, in the order claimed.
    pub proxies: Vec<Verdict>,
    /// The transactions, in order; the first holds the client key.
    pub batches: Vec<Batch>,
}

/// Decides a registration: see the module doc. `max_txn_ops` is the store's
/// [`max_txn_ops`](crate::ClusterStore::max_txn_ops). Fails only when the client id cannot
/// be a key, or the limit is too small to carry anything (below 2).
pub fn decide(
    keys: &Keys,
    who: &Claimant,
    proxies: &[ProxyClaim],
    seen: &Seen,
    max_txn_ops: usize,
) -> Result<Plan, ClusterError> {
    if max_txn_ops < 2 {
        return Err(ClusterError::TooManyOps {
            ops: 2,
            limit: max_txn_ops,
        });
    }
    let me = who.owner();
    let client_key = keys.key(&KeyKind::Client(who.client_id.clone()))?;
    let client = match seen.get(&client_key) {
        None => Verdict::Take,
        Some(h) if h.owner == me => Verdict::TakeOver,
        Some(h) => Verdict::Refused(Refusal::IdInUse {
            server_id: h.server_id.clone(),
        }),
    };
    if !client.granted() {
        return Ok(Plan {
            client_key,
            proxies: vec![client.clone(); proxies.len()],
            client,
            batches: Vec::new(),
        });
    }
    // A key counts as ours when this instance holds it, or a dead instance of our id does
    // (we hold the id in this very transaction).
    let mine = |o: &Owner| o.client_id == who.client_id;

    let first_room = max_txn_ops;
    let later_room = max_txn_ops - 1;
    let mut batches = vec![Batch {
        puts: vec![Put {
            key: client_key.clone(),
            seen: seen.get(&client_key).map_or(0, |h| h.mod_revision),
            record: Record::Client(ClientRecord {
                instance: who.instance,
                server_id: who.server_id.clone(),
                epoch: 0,
            }),
        }],
        proxies: Vec::new(),
    }];
    let mut claimed: HashSet<String> = HashSet::from([client_key.clone()]);
    let mut verdicts = Vec::with_capacity(proxies.len());
    for (i, p) in proxies.iter().enumerate() {
        let (verdict, puts) = match proxy_puts(keys, who, p, seen, &claimed, &mine) {
            Ok(v) => v,
            Err(refusal) => {
                verdicts.push(Verdict::Refused(refusal));
                continue;
            }
        };
        if puts.len() > later_room {
            verdicts.push(Verdict::Refused(Refusal::TooLarge {
                keys: puts.len(),
                limit: later_room,
            }));
            continue;
        }
        let room = if batches.len() == 1 {
            first_room
        } else {
            later_room
        };
        if batches
            .last()
            .is_some_and(|b| b.puts.len() + puts.len() > room)
        {
            batches.push(Batch {
                puts: Vec::new(),
                proxies: Vec::new(),
            });
        }
        claimed.extend(puts.iter().map(|p| p.key.clone()));
        if let Some(b) = batches.last_mut() {
            b.puts.extend(puts);
            b.proxies.push(i);
        }
        verdicts.push(verdict);
    }
    Ok(Plan {
        client_key,
        client,
        proxies: verdicts,
        batches,
    })
}

/// The puts of one proxy, or why it is refused.
fn proxy_puts(
    keys: &Keys,
    who: &Claimant,
    p: &ProxyClaim,
    seen: &Seen,
    claimed: &HashSet<String>,
    mine: &dyn Fn(&Owner) -> bool,
) -> Result<(Verdict, Vec<Put>), Refusal> {
    let key = |kind: KeyKind| keys.key(&kind).map_err(|_| Refusal::NameTooLong);
    // (key, why it may be refused, value, whether this login's proxies may share it)
    let mut wanted = vec![(
        key(KeyKind::Proxy {
            name: p.name.clone(),
            port: p.publish_port,
        })?,
        Refusal::NameTaken,
        Record::Proxy(ProxyRecord {
            client_id: who.client_id.clone(),
            instance: who.instance,
            server_id: who.server_id.clone(),
            publish_port: p.publish_port,
            epoch: 0,
        }),
        false,
    )];
    if p.publish_port != 0 {
        wanted.push((
            key(KeyKind::Port(p.publish_port))?,
            Refusal::PortInUse(p.publish_port),
            Record::Port(PortRecord {
                name: p.name.clone(),
                client_id: who.client_id.clone(),
                instance: who.instance,
                server_id: who.server_id.clone(),
                epoch: 0,
                udp: p.udp,
            }),
            false,
        ));
    }
    for d in &p.domains {
        wanted.push((
            key(KeyKind::Domain(d.clone()))?,
            Refusal::DomainTaken(d.clone()),
            Record::Domain(DomainRecord {
                client_id: who.client_id.clone(),
                instance: who.instance,
                server_id: who.server_id.clone(),
                epoch: 0,
            }),
            true,
        ));
    }
    let mut verdict = Verdict::Take;
    let mut puts = Vec::with_capacity(wanted.len());
    let mut own: HashSet<&str> = HashSet::new();
    for (key, refusal, record, shared) in &wanted {
        // Already claimed by an earlier proxy of this registration, or twice by this one.
        // A domain belongs to the client, not the proxy (its proxies split the locations),
        // so it is written once; a name or port is the earlier proxy's.
        if claimed.contains(key) || !own.insert(key) {
            if *shared {
                continue;
            }
            return Err(refusal.clone());
        }
        let seen_rev = match seen.get(key) {
            None => 0,
            Some(h) if mine(&h.owner) => {
                verdict = Verdict::TakeOver;
                h.mod_revision
            }
            Some(_) => return Err(refusal.clone()),
        };
        puts.push(Put {
            key: key.clone(),
            seen: seen_rev,
            record: record.clone(),
        });
    }
    Ok((verdict, puts))
}

#[cfg(test)]
mod tests;
