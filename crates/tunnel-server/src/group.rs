//! Load-balancing groups on the server: what a proxy's `group` and `group_key` claim at
//! registration, and the pick of a member for each new user connection.
//!
//! The registry keeps the groups (see `registry::groups`); here is what touches the network:
//! a user connection (a published port, a UDP flow, a virtual-host request) reaching a group
//! goes to its members in round-robin order, and a member whose client refuses the stream or
//! cannot dial its local service is skipped for the next one, each member tried once at most.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::{debug, info, Instrument};
use tunnel_mux::{AbortGuard, MuxStream};
use tunnel_proto::{FieldError, ProxyKind, ProxySpec};

use crate::access::ProxyLimits;
use crate::credentials::audit;
use crate::forward::{self, begin_public};
use crate::registry::{proxy_label, ClaimError, GroupClaim, GroupHandle, ProxyEntry, ProxyKey};
use crate::routes::Pair;
use crate::session::{SessionRecord, StreamSlot};
use crate::{ServerError, Shared};

mod first_flight;

pub(crate) use first_flight::open_with_first_flight;

/// The longest `group_key` kept: the first member's is held for the group's life.
const MAX_GROUP_KEY: usize = 256;

/// The group claim of `spec` (`None` when it names no group), with its virtual-host
/// `routes` and their basic-auth value as checked for the proxy. Refused naming the field:
/// a group without key, a key without group, a group with neither port nor domains, or any
/// group on a server in `cluster` mode.
pub(crate) fn claim_of(
    cluster: bool,
    spec: &ProxySpec,
    routes: &[Pair],
    auth: Option<&String>,
) -> Result<Option<GroupClaim>, FieldError> {
    let Some(name) = &spec.group else {
        if spec.group_key.is_some() {
            return Err(field_error(
                "group_key",
                "set without group: add group = \"<name>\", or remove group_key",
            ));
        }
        return Ok(None);
    };
    tunnel_proto::validate_name(name)
        .map_err(|m| field_error("group", m.to_string().replace("name", "group")))?;
    let key = match spec.group_key.as_deref() {
        Some(k) if k.len() > MAX_GROUP_KEY => {
            return Err(field_error(
                "group_key",
                format!(
                    "{} bytes long; use at most {MAX_GROUP_KEY} (a long random string is plenty)",
                    k.len()
                ),
            ))
        }
        Some(k) if !k.is_empty() => k.to_owned(),
        _ => {
            return Err(field_error(
                "group_key",
                format!("group {name:?} needs a group_key: the secret every member shares"),
            ))
        }
    };
    if cluster {
        // A group's members would be spread over servers that each bind the port.
        return Err(field_error(
            "group",
            "load-balancing groups are not available in cluster mode yet; remove group, or \
             serve the group from one server",
        ));
    }
    let port = spec.publish_port.unwrap_or(0);
    if port == 0 && routes.is_empty() {
        return Err(field_error(
            "group",
            "a group shares a publish_port (tcp, udp) or domains (http, https): set one of them",
        ));
    }
    if port == 0
        && !matches!(
            spec.kind,
            ProxyKind::Http | ProxyKind::Http2 | ProxyKind::Https
        )
    {
        return Err(field_error(
            "publish_port",
            "a tcp or udp group needs a publish_port",
        ));
    }
    let mut routes = routes.to_vec();
    routes.sort();
    Ok(Some(GroupClaim {
        name: name.clone(),
        key,
        kind: spec.kind,
        port,
        routes,
        auth: auth.cloned(),
    }))
}

/// A stream opened to the member that took a user connection.
pub(crate) struct Opened<S = MuxStream> {
    /// The member: its counters, limits and idle timeout apply to the connection.
    pub entry: Arc<ProxyEntry>,
    /// The stream slot taken on the member's client.
    pub slot: StreamSlot,
    /// The stream to the member's client, its local service dialled.
    pub stream: S,
    /// Ends the connection when the client aborts the stream.
    pub guard: AbortGuard,
}

/// Why no member took a user connection.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Every member's `allow_ips` / `deny_ips` refuse the user.
    Denied,
    /// Every member is at its stream limits, or the group has none left.
    Busy,
    /// No member could dial its local service: the last reason.
    Unreachable(ServerError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Denied => f.write_str("every member's allow_ips / deny_ips refuse the user"),
            Failure::Busy => f.write_str("no member is registered or has a stream to spare"),
            Failure::Unreachable(last) => {
                write!(f, "no member reached its service; the last: {last}")
            }
        }
    }
}

/// Open a stream for one user connection from `peer` (who reached `dest`) to the members of
/// `group`, the next in round-robin order first; one that denies the user, is at its limits
/// or fails to dial is skipped for the next, each member once.
pub(crate) async fn open(
    shared: &Shared,
    group: &GroupHandle,
    peer: SocketAddr,
    dest: Option<SocketAddr>,
) -> Result<Opened, Failure> {
    let mut members = Candidates::new(shared, group, peer);
    while let Some((entry, slot)) = members.next() {
        match forward::open_to_owner(&entry, slot.lane(), Some(peer), dest).await {
            Ok((stream, guard)) => {
                return Ok(Opened {
                    entry,
                    slot,
                    stream,
                    guard,
                })
            }
            Err(reason) => members.failed(&entry, reason),
        }
    }
    Err(members.into_failure())
}

/// The members of a group in the order one user connection tries them, each once.
struct Candidates<'a> {
    shared: &'a Shared,
    group: &'a GroupHandle,
    peer: SocketAddr,
    members: std::vec::IntoIter<Arc<ProxyEntry>>,
    count: usize,
    denied: usize,
    failure: Failure,
}

impl<'a> Candidates<'a> {
    fn new(shared: &'a Shared, group: &'a GroupHandle, peer: SocketAddr) -> Self {
        let members = shared.registry.group_members(&group.name);
        Candidates {
            shared,
            group,
            peer,
            count: members.len(),
            members: members.into_iter(),
            denied: 0,
            failure: Failure::Busy,
        }
    }

    /// The next member that admits the user, with a stream slot taken on its client.
    fn next(&mut self) -> Option<(Arc<ProxyEntry>, StreamSlot)> {
        for entry in self.members.by_ref() {
            if !crate::access::proxy_permits(self.shared, &entry, self.peer.ip()) {
                self.denied += 1;
                continue;
            }
            if let Some(slot) = begin_public(self.shared, &entry, self.peer) {
                return Some((entry, slot));
            }
        }
        None
    }

    /// `entry` did not take the connection: the next one is tried.
    fn failed(&mut self, entry: &ProxyEntry, reason: ServerError) {
        let (peer, group) = (self.peer, &self.group.name);
        debug!(%peer, proxy = %entry.label(), %group, "member failed, trying the next: {reason}");
        self.failure = Failure::Unreachable(reason);
    }

    /// Why no member took the connection.
    fn into_failure(self) -> Failure {
        if self.denied > 0 && self.denied == self.count {
            return Failure::Denied;
        }
        self.failure
    }
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// Whether another member founded `claim`'s group while this one tried to: its bind comes
/// just before its claim, so the claim is given a moment to land.
async fn founded_meanwhile(shared: &Shared, claim: &GroupClaim) -> bool {
    for _ in 0..50 {
        match shared.registry.group_check(claim) {
            Ok(Some(_)) => return true,
            Err(_) => return false,
            Ok(None) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    false
}

/// The public socket a founding member binds for its group.
enum Public {
    Tcp(tokio::net::TcpListener),
    Udp(tokio::net::UdpSocket),
    /// A group of virtual-host routes, or one that exists already.
    None,
}

impl Public {
    /// Serve the group through `entry`: the listener stops with the group, not the member.
    fn serve(self, shared: &Arc<Shared>, entry: &Arc<ProxyEntry>) {
        match self {
            Public::Tcp(l) => {
                let task = crate::listener::run(shared.clone(), entry.clone(), l);
                shared.tasks.spawn(task.in_current_span());
            }
            Public::Udp(socket) => {
                let task = crate::udp::run(shared.clone(), entry.clone(), socket);
                shared.tasks.spawn(task.in_current_span());
            }
            Public::None => {}
        }
    }
}

async fn bind_public(shared: &Shared, kind: ProxyKind, port: u16) -> Result<Public, FieldError> {
    Ok(match (port, kind) {
        (0, _) => Public::None,
        (port, ProxyKind::Udp) => Public::Udp(crate::udp::bind(shared, port).await?),
        (port, _) => Public::Tcp(crate::register::bind(shared, port).await?),
    })
}

/// Register `spec` (under `key`, with its `limits`) as a member of `claim`'s group: the first
/// member binds the group's port, which then serves every member; a later one joins.
pub(crate) async fn join(
    shared: &Arc<Shared>,
    session: &Arc<SessionRecord>,
    spec: ProxySpec,
    key: ProxyKey,
    claim: &GroupClaim,
    limits: Arc<ProxyLimits>,
) -> Result<ProxyKey, FieldError> {
    let label = proxy_label(&spec);
    let refused = |e| crate::register::claim_error(&label, &None, e);
    // Two members founding the group at once: the one that loses joins the winner's group
    // (its bind fails on the winner's port, or its claim finds the winner's group).
    let mut attempt = 0;
    let (entry, founding) = loop {
        attempt += 1;
        let retry = attempt < 2;
        let live = shared.registry.group_check(claim).map_err(refused)?;
        let founding = live.is_none();
        let public = if founding {
            match bind_public(shared, spec.kind, claim.port).await {
                Ok(p) => p,
                Err(_) if retry && founded_meanwhile(shared, claim).await => continue,
                Err(e) => return Err(e),
            }
        } else {
            Public::None
        };
        let handle = live.unwrap_or_else(|| GroupHandle::new(&claim.name));
        let entry = Arc::new(ProxyEntry::grouped(key.clone(), spec.clone(), handle));
        *entry.limits.write() = limits.clone();
        match shared
            .registry
            .claim_member(session.id, entry.clone(), claim)
        {
            Ok(()) => {
                public.serve(shared, &entry);
                break (entry, founding);
            }
            Err(ClaimError::Taken) if retry && shared.registry.get(&key).is_none() => continue,
            Err(e) => return Err(refused(e)),
        }
    };
    let proxy = entry.label();
    if founding {
        info!(%proxy, group = %claim.name, "proxy registered; it founds its group");
    } else {
        info!(%proxy, group = %claim.name, "proxy registered; it joins its group");
    }
    audit::record(
        audit::Event::Registration,
        Some(&session.client_id),
        Some(session.peer.ip()),
        &format!("proxy {proxy} registered in group {}", claim.name),
        false,
    );
    Ok(key)
}

/// The groups for the stats endpoint: each with its type, port or hosts, and its members
/// (proxy name and client id, in round-robin order). Never the key.
pub(crate) fn stats(shared: &Shared) -> serde_json::Value {
    let mut groups: Vec<_> = shared
        .registry
        .groups()
        .into_iter()
        .map(|(claim, members)| {
            let members: Vec<_> = members
                .iter()
                .map(|m| {
                    let client = shared.registry.owner(&m.key).map(|s| s.client_id.clone());
                    serde_json::json!({ "proxy": m.key.name, "client": client })
                })
                .collect();
            let mut hosts: Vec<&str> = claim.routes.iter().map(|(h, _)| h.as_str()).collect();
            hosts.dedup();
            serde_json::json!({
                "name": claim.name,
                "type": claim.kind.to_string(),
                "publish_port": (claim.port != 0).then_some(claim.port),
                "domains": hosts,
                "members": members,
            })
        })
        .collect();
    groups.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    serde_json::Value::Array(groups)
}

/// `tunnel_group_members{group}`: the members registered now, per group.
pub(crate) fn prometheus(shared: &Shared, page: &mut tunnel_admin::Exposition) {
    let mut sizes: Vec<(String, u64)> = shared
        .registry
        .groups()
        .into_iter()
        .map(|(claim, members)| (claim.name, members.len() as u64))
        .collect();
    if sizes.is_empty() {
        return;
    }
    sizes.sort();
    let f = page.gauge_family(
        "tunnel_group_members",
        "Members registered now, per load-balancing group.",
    );
    for (name, n) in &sizes {
        f.sample(&[("group", name)], *n);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(
        kind: ProxyKind,
        port: Option<u16>,
        group: Option<&str>,
        key: Option<&str>,
    ) -> ProxySpec {
        ProxySpec {
            publish_port: port,
            group: group.map(str::to_owned),
            group_key: key.map(str::to_owned),
            ..ProxySpec::new("web-a", kind)
        }
    }

    fn field(r: Result<Option<GroupClaim>, FieldError>) -> String {
        r.unwrap_err().field
    }

    #[test]
    fn a_claim_needs_its_key_and_a_port_or_domains() {
        let tcp = |port, group, key| spec(ProxyKind::Tcp, port, group, key);
        assert!(claim_of(false, &tcp(Some(7000), None, None), &[], None)
            .unwrap()
            .is_none());
        let claim = claim_of(false, &tcp(Some(7000), Some("web"), Some("k")), &[], None)
            .unwrap()
            .unwrap();
        assert_eq!((claim.name.as_str(), claim.port), ("web", 7000));
        assert_eq!(
            field(claim_of(
                false,
                &tcp(Some(7000), None, Some("k")),
                &[],
                None
            )),
            "group_key"
        );
        assert_eq!(
            field(claim_of(
                false,
                &tcp(Some(7000), Some("web"), None),
                &[],
                None
            )),
            "group_key"
        );
        let long = "k".repeat(257);
        assert_eq!(
            field(claim_of(
                false,
                &tcp(Some(7000), Some("web"), Some(&long)),
                &[],
                None
            )),
            "group_key"
        );
        assert_eq!(
            field(claim_of(
                false,
                &tcp(Some(7000), Some("web"), Some("")),
                &[],
                None
            )),
            "group_key"
        );
        assert_eq!(
            field(claim_of(
                false,
                &tcp(Some(7000), Some("a b"), Some("k")),
                &[],
                None
            )),
            "group"
        );
        assert_eq!(
            field(claim_of(
                false,
                &tcp(None, Some("web"), Some("k")),
                &[],
                None
            )),
            "group"
        );
        let routes = vec![
            ("b.test".to_owned(), "/".to_owned()),
            ("a.test".to_owned(), "/".to_owned()),
        ];
        let http = spec(ProxyKind::Http, None, Some("web"), Some("k"));
        let claim = claim_of(false, &http, &routes, None).unwrap().unwrap();
        assert_eq!(
            claim.routes[0].0, "a.test",
            "sorted: members may list them in any order"
        );
        let udp = spec(ProxyKind::Udp, None, Some("web"), Some("k"));
        assert_eq!(field(claim_of(false, &udp, &routes, None)), "publish_port");
    }

    #[test]
    fn cluster_mode_refuses_groups_by_name() {
        let s = spec(ProxyKind::Tcp, Some(7000), Some("web"), Some("k"));
        let err = claim_of(true, &s, &[], None).unwrap_err();
        assert_eq!(err.field, "group");
        assert!(err.message.contains("cluster mode"), "{}", err.message);
        let plain = spec(ProxyKind::Tcp, Some(7000), None, None);
        assert!(claim_of(true, &plain, &[], None).unwrap().is_none());
    }
}
