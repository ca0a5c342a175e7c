//! Load-balancing groups: proxies of any clients that share one `publish_port` (or the same
//! virtual-host routes) because they name the same `group` and know its `group_key`.
//!
//! The registry's [`State`](super::state::State) holds one [`GroupSlot`] per group: what the
//! first member set (the key, the type, the port or routes) and the members' keys. The
//! public listener belongs to the group's [`GroupHandle`], not to a member, so it stays
//! open while any member is registered and stops when the last one leaves.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tunnel_proto::ProxyKind;

use super::ProxyKey;
use crate::routes::Pair;

/// A live group as the data path sees it: its name, the stop of its public listener, and the
/// round-robin cursor.
#[derive(Debug)]
pub(crate) struct GroupHandle {
    /// The `group` its members name.
    pub name: String,
    /// Stops the group's public listener; cancelled when its last member leaves.
    pub stop: CancellationToken,
    /// Cancelled once the group's public port is closed.
    pub port_closed: CancellationToken,
    cursor: AtomicUsize,
}

impl GroupHandle {
    pub(crate) fn new(name: &str) -> Arc<Self> {
        Arc::new(GroupHandle {
            name: name.to_owned(),
            stop: CancellationToken::new(),
            port_closed: CancellationToken::new(),
            cursor: AtomicUsize::new(0),
        })
    }

    /// Where the next connection starts among `members` members: each call the next one.
    pub(crate) fn next_start(&self, members: usize) -> usize {
        match members {
            0 => 0,
            n => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
        }
    }
}

/// What a proxy asks of its group: the first member's claim sets the group; every later
/// one must match it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct GroupClaim {
    /// The group's name.
    pub name: String,
    /// The secret that lets a proxy join.
    pub key: String,
    /// Every member carries the same protocol.
    pub kind: ProxyKind,
    /// The shared `publish_port`, or 0 for a group of virtual-host routes.
    pub port: u16,
    /// The shared `(host, location)` routes, sorted; empty for a port group.
    pub routes: Vec<Pair>,
    /// The basic-auth value of the routes.
    pub auth: Option<String>,
}

// Manual so that logging a claim never leaks the key.
impl std::fmt::Debug for GroupClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupClaim")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("port", &self.port)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl GroupClaim {
    /// The key the group's routes are held under: no proxy name contains ':', so it never
    /// meets a proxy's own key.
    pub(crate) fn route_key(name: &str) -> ProxyKey {
        ProxyKey {
            name: format!("group:{name}"),
            port: 0,
        }
    }

    /// The owner of the group's routes: no client id contains ':', so a client's own proxy
    /// never shares a host with a group.
    pub(crate) fn route_owner(name: &str) -> String {
        format!("group:{name}")
    }
}

/// Why a proxy may not join a group, in the words the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupRefusal {
    /// The config field at fault.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl GroupRefusal {
    fn new(field: &'static str, message: String) -> Self {
        GroupRefusal { field, message }
    }
}

/// One group in the registry.
pub(super) struct GroupSlot {
    pub claim: GroupClaim,
    pub handle: Arc<GroupHandle>,
    /// In joining order; never empty (the group goes with its last member).
    pub members: Vec<ProxyKey>,
}

impl GroupSlot {
    /// Whether `claim` may join this group: the key first (compared in constant time, and
    /// before anything that would tell a stranger about the group), then each shared setting.
    pub(super) fn admits(&self, claim: &GroupClaim) -> Result<(), GroupRefusal> {
        let group = &self.claim;
        if !bool::from(group.key.as_bytes().ct_eq(claim.key.as_bytes())) {
            return Err(GroupRefusal::new(
                "group_key",
                format!(
                    "wrong group_key for group {:?}: use the group_key its first member set",
                    group.name
                ),
            ));
        }
        if group.kind != claim.kind {
            return Err(GroupRefusal::new(
                "type",
                format!(
                    "group {:?} carries {}, not {}; every member has the same type",
                    group.name, group.kind, claim.kind
                ),
            ));
        }
        if group.port != claim.port {
            let port = |p: u16| match p {
                0 => "no publish_port".to_owned(),
                p => format!("publish_port {p}"),
            };
            return Err(GroupRefusal::new(
                "publish_port",
                format!(
                    "group {:?} is published on {}, this proxy asks for {}; every member \
                     has the same publish_port",
                    group.name,
                    port(group.port),
                    port(claim.port)
                ),
            ));
        }
        if group.routes != claim.routes {
            return Err(GroupRefusal::new(
                "domains",
                format!(
                    "group {:?} serves other domains or locations; every member lists the same \
                     domains, subdomain and locations",
                    group.name
                ),
            ));
        }
        if group.auth != claim.auth {
            return Err(GroupRefusal::new(
                "http_user",
                format!(
                    "group {:?} has other basic-auth settings; every member sets the same \
                     http_user and http_password",
                    group.name
                ),
            ));
        }
        Ok(())
    }
}

/// The refusal of a proxy outside a group on a group's port.
pub(crate) fn port_of_group(port: u16) -> GroupRefusal {
    GroupRefusal::new(
        "publish_port",
        format!(
            "port {port} is published by a load-balancing group; set its group and group_key \
             to join it, or pick another port"
        ),
    )
}
