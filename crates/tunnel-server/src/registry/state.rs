//! The registry's state: plain data whose methods keep its invariants (see
//! [`super::RegistryBackend`]). No lock, no I/O: the in-memory backend puts it behind one lock.
//!
//! Cost: every method touches only what it names. A session's release, hand-over and count go
//! through the index by session, never over every proxy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::backend::{ClaimError, Installed, Refused, Route, SessionInfo};
use super::groups::{self, GroupClaim, GroupHandle, GroupSlot};
use super::ProxyKey;
use crate::routes::{HostQuery, Pair, Routes};

/// An installed session and the keys of the proxies it holds.
struct SessionSlot<S> {
    session: S,
    proxies: HashSet<ProxyKey>,
}

/// A proxy and the session that holds it.
struct ProxySlot<P> {
    session: u64,
    entry: P,
    /// The load-balancing group it is a member of.
    group: Option<String>,
}

/// Sessions, proxies, routes, and the index between them.
pub(crate) struct State<S, P> {
    /// Client id → its installed session's id.
    clients: HashMap<String, u64>,
    /// The index by session: each installed session and its proxies' keys.
    sessions: HashMap<u64, SessionSlot<S>>,
    proxies: HashMap<ProxyKey, ProxySlot<P>>,
    /// Owned by client id, so a hand-over (same id) keeps them; a group's by the group.
    routes: Routes<ProxyKey, String, Arc<Route<P>>>,
    /// Load-balancing groups by name, each with at least one member.
    groups: HashMap<String, GroupSlot>,
    /// The `publish_port` of each group that has one → the group's name.
    group_ports: HashMap<u16, String>,
}

impl<S, P> Default for State<S, P> {
    fn default() -> Self {
        State {
            clients: HashMap::new(),
            sessions: HashMap::new(),
            proxies: HashMap::new(),
            routes: Routes::default(),
            groups: HashMap::new(),
            group_ports: HashMap::new(),
        }
    }
}

impl<S: SessionInfo + Clone, P: Clone> State<S, P> {
    /// See [`super::RegistryBackend::admit`].
    pub(super) fn admit(
        &self,
        client_id: &str,
        instance: [u8; 16],
        max_clients: usize,
    ) -> Result<(), Refused<S>> {
        match self.session(client_id) {
            Some(live) if live.instance() != instance => Err(Refused::IdInUse { holder: live }),
            Some(_) => Ok(()), // the same process reconnecting: it replaces its stale session
            None if self.clients.len() >= max_clients => Err(Refused::Full {
                clients: self.clients.len(),
            }),
            None => Ok(()),
        }
    }

    /// See [`super::RegistryBackend::install_session`].
    pub(super) fn install_session(
        &mut self,
        session: S,
        max_clients: usize,
    ) -> Result<Installed<S>, Refused<S>> {
        self.admit(session.client_id(), session.instance(), max_clients)?;
        let id = session.id();
        if self.sessions.contains_key(&id) {
            return Ok(Installed {
                replaced: None,
                moved: 0,
            }); // installed already: ids are unique
        }
        let old = self.clients.insert(session.client_id().to_owned(), id);
        self.sessions.insert(
            id,
            SessionSlot {
                session,
                proxies: HashSet::new(),
            },
        );
        let Some(old) = old else {
            return Ok(Installed {
                replaced: None,
                moved: 0,
            });
        };
        let moved = self.hand_over(old, id);
        let replaced = self.sessions.remove(&old).map(|s| s.session);
        Ok(Installed { replaced, moved })
    }

    /// Move every proxy of session `from` to session `to` (installed both; routes follow, as
    /// they belong to the client id). O(proxies of `from`). Returns how many moved.
    pub(super) fn hand_over(&mut self, from: u64, to: u64) -> usize {
        if from == to || !self.sessions.contains_key(&to) {
            return 0;
        }
        let Some(keys) = self
            .sessions
            .get_mut(&from)
            .map(|s| std::mem::take(&mut s.proxies))
        else {
            return 0;
        };
        for key in &keys {
            if let Some(p) = self.proxies.get_mut(key) {
                p.session = to;
            }
        }
        let moved = keys.len();
        if let Some(s) = self.sessions.get_mut(&to) {
            s.proxies.extend(keys);
        }
        moved
    }

    /// See [`super::RegistryBackend::release_session`]. O(its proxies).
    pub(super) fn release_session(&mut self, session: u64) -> Vec<(ProxyKey, P)> {
        let Some(slot) = self.sessions.remove(&session) else {
            return Vec::new();
        };
        let client = slot.session.client_id();
        if self.clients.get(client) == Some(&session) {
            self.clients.remove(client);
        }
        slot.proxies
            .into_iter()
            .filter_map(|key| self.remove_proxy(key))
            .collect()
    }

    /// See [`super::RegistryBackend::claim`]. The routes' cost is the claim's, capped by the
    /// caller (`max_routes_per_client`).
    pub(super) fn claim(
        &mut self,
        session: u64,
        key: ProxyKey,
        entry: P,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        let Some(slot) = self.sessions.get_mut(&session) else {
            return Err(ClaimError::NoSession);
        };
        if self.proxies.contains_key(&key) {
            return Err(ClaimError::Taken);
        }
        if key.port != 0 && self.group_ports.contains_key(&key.port) {
            return Err(ClaimError::Group(groups::port_of_group(key.port)));
        }
        let route = Arc::new(Route {
            entry: entry.clone(),
            auth,
        });
        let owner = slot.session.client_id().to_owned();
        self.routes
            .claim(&key, &owner, routes, route)
            .map_err(ClaimError::RouteTaken)?;
        slot.proxies.insert(key.clone());
        let group = None;
        self.proxies.insert(
            key,
            ProxySlot {
                session,
                entry,
                group,
            },
        );
        Ok(())
    }

    /// Whether `claim` may join its group now: the group's handle when it exists and admits
    /// the claim, `None` when the claim would found it. Changes nothing.
    pub(super) fn group_check(
        &self,
        claim: &GroupClaim,
    ) -> Result<Option<Arc<GroupHandle>>, ClaimError> {
        if let Some(g) = self.groups.get(&claim.name) {
            g.admits(claim).map_err(ClaimError::Group)?;
            return Ok(Some(g.handle.clone()));
        }
        if claim.port != 0 && self.group_ports.contains_key(&claim.port) {
            return Err(ClaimError::Group(groups::port_of_group(claim.port)));
        }
        Ok(None)
    }

    /// Record `entry` under `key` for `session` as a member of the group of `claim`, whose
    /// live handle is `handle`: a new group (with its routes, all or nothing) if there is none,
    /// else a member of the one that exists, if it admits the claim. A group founded since
    /// `handle` was looked up is refused as [`ClaimError::Taken`]: its caller registers again.
    pub(super) fn claim_member(
        &mut self,
        session: u64,
        key: ProxyKey,
        entry: P,
        claim: &GroupClaim,
        handle: &Arc<GroupHandle>,
    ) -> Result<(), ClaimError> {
        if !self.sessions.contains_key(&session) {
            return Err(ClaimError::NoSession);
        }
        if self.proxies.contains_key(&key) {
            return Err(ClaimError::Taken);
        }
        match self.groups.get_mut(&claim.name) {
            Some(g) => {
                g.admits(claim).map_err(ClaimError::Group)?;
                if !Arc::ptr_eq(&g.handle, handle) {
                    return Err(ClaimError::Taken);
                }
                g.members.push(key.clone());
            }
            None => {
                if claim.port != 0 && self.group_ports.contains_key(&claim.port) {
                    return Err(ClaimError::Group(groups::port_of_group(claim.port)));
                }
                let route = Arc::new(Route {
                    entry: entry.clone(),
                    auth: claim.auth.clone(),
                });
                let owner = GroupClaim::route_owner(&claim.name);
                let route_key = GroupClaim::route_key(&claim.name);
                self.routes
                    .claim(&route_key, &owner, &claim.routes, route)
                    .map_err(ClaimError::RouteTaken)?;
                if claim.port != 0 {
                    self.group_ports.insert(claim.port, claim.name.clone());
                }
                let slot = GroupSlot {
                    claim: claim.clone(),
                    handle: handle.clone(),
                    members: vec![key.clone()],
                };
                self.groups.insert(claim.name.clone(), slot);
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.proxies.insert(key.clone());
        }
        let group = Some(claim.name.clone());
        self.proxies.insert(
            key,
            ProxySlot {
                session,
                entry,
                group,
            },
        );
        Ok(())
    }

    /// The members of group `name`, starting with the next one in round-robin order (each
    /// call starts one further). O(members).
    pub(super) fn group_members(&self, name: &str) -> Vec<P> {
        let Some(g) = self.groups.get(name) else {
            return Vec::new();
        };
        let start = g.handle.next_start(g.members.len());
        let (tail, head) = g.members.split_at(start);
        head.iter()
            .chain(tail)
            .filter_map(|k| self.proxies.get(k).map(|p| p.entry.clone()))
            .collect()
    }

    /// Whether a group publishes on `port`.
    pub(super) fn group_on_port(&self, port: u16) -> bool {
        self.group_ports.contains_key(&port)
    }

    /// The live handle of group `name`.
    pub(super) fn group_handle(&self, name: &str) -> Option<Arc<GroupHandle>> {
        self.groups.get(name).map(|g| g.handle.clone())
    }

    /// Every group: its claim (without use for the key) and its members. O(members).
    pub(super) fn groups(&self) -> Vec<(GroupClaim, Vec<P>)> {
        self.groups
            .values()
            .map(|g| {
                let members = g
                    .members
                    .iter()
                    .filter_map(|k| self.proxies.get(k).map(|p| p.entry.clone()))
                    .collect();
                (g.claim.clone(), members)
            })
            .collect()
    }

    /// See [`super::RegistryBackend::set_routes`].
    pub(super) fn set_routes(
        &mut self,
        session: u64,
        key: &ProxyKey,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        let Some(slot) = self.sessions.get(&session) else {
            return Err(ClaimError::NoSession);
        };
        let entry = match self.proxies.get(key) {
            Some(p) if p.session == session => p.entry.clone(),
            _ => return Err(ClaimError::Taken),
        };
        let route = Arc::new(Route { entry, auth });
        self.routes
            .claim(key, &slot.session.client_id().to_owned(), routes, route)
            .map_err(ClaimError::RouteTaken)
    }

    /// Remove `key` if `session` holds it.
    pub(super) fn release(&mut self, session: u64, key: &ProxyKey) -> Option<P> {
        if self.proxies.get(key)?.session != session {
            return None;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.proxies.remove(key);
        }
        self.remove_proxy(key.clone()).map(|(_, p)| p)
    }

    /// See [`super::RegistryBackend::release_except`]. O(proxies of `session`).
    pub(super) fn release_except(
        &mut self,
        session: u64,
        keep: &HashSet<ProxyKey>,
    ) -> Vec<(ProxyKey, P)> {
        let Some(slot) = self.sessions.get(&session) else {
            return Vec::new();
        };
        let gone: Vec<ProxyKey> = slot
            .proxies
            .iter()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|k| self.release(session, &k).map(|p| (k, p)))
            .collect()
    }

    /// Drop `key` and its routes; the caller has taken it out of its session's index.
    fn remove_proxy(&mut self, key: ProxyKey) -> Option<(ProxyKey, P)> {
        let slot = self.proxies.remove(&key)?;
        self.routes.release(&key);
        if let Some(name) = &slot.group {
            self.leave_group(name, &key);
        }
        Some((key, slot.entry))
    }

    /// Take `key` out of group `name`; the group, its port and its routes go with its last
    /// member.
    fn leave_group(&mut self, name: &str, key: &ProxyKey) {
        let Some(g) = self.groups.get_mut(name) else {
            return;
        };
        g.members.retain(|k| k != key);
        if !g.members.is_empty() {
            return;
        }
        if let Some(g) = self.groups.remove(name) {
            if g.claim.port != 0 {
                self.group_ports.remove(&g.claim.port);
            }
            self.routes.release(&GroupClaim::route_key(name));
        }
    }

    /// How many proxies `session` holds. O(1).
    pub(super) fn proxies_of(&self, session: u64) -> usize {
        self.sessions.get(&session).map_or(0, |s| s.proxies.len())
    }

    /// The installed session of `client_id`.
    pub(super) fn session(&self, client_id: &str) -> Option<S> {
        let id = self.clients.get(client_id)?;
        self.sessions.get(id).map(|s| s.session.clone())
    }

    /// The proxy under `key` and its owner.
    pub(super) fn get(&self, key: &ProxyKey) -> Option<(P, S)> {
        let p = self.proxies.get(key)?;
        let owner = self.sessions.get(&p.session)?;
        Some((p.entry.clone(), owner.session.clone()))
    }

    /// The session serving `key`.
    pub(super) fn owner(&self, key: &ProxyKey) -> Option<S> {
        let p = self.proxies.get(key)?;
        self.sessions.get(&p.session).map(|s| s.session.clone())
    }

    /// The route serving the host of `query` at `path`.
    pub(super) fn route(&self, query: &HostQuery, path: &str) -> Option<Arc<Route<P>>> {
        self.routes.lookup_query(query, path).cloned()
    }

    /// Installed sessions and registered proxies.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.clients.len(), self.proxies.len())
    }

    /// Every session with its proxies. O(sessions + proxies).
    pub(super) fn sessions(&self) -> Vec<(S, Vec<P>)> {
        self.sessions
            .values()
            .map(|s| {
                let proxies = s
                    .proxies
                    .iter()
                    .filter_map(|k| self.proxies.get(k).map(|p| p.entry.clone()))
                    .collect();
                (s.session.clone(), proxies)
            })
            .collect()
    }

    /// Panics unless every invariant holds.
    #[cfg(test)]
    pub(super) fn check(&self) {
        assert_eq!(
            self.clients.len(),
            self.sessions.len(),
            "one session per id"
        );
        for (client, id) in &self.clients {
            let s = self
                .sessions
                .get(id)
                .expect("a client's session is indexed");
            assert_eq!(s.session.client_id(), client);
            assert_eq!(s.session.id(), *id);
            for key in &s.proxies {
                let p = self.proxies.get(key).expect("an indexed key is a proxy");
                assert_eq!(p.session, *id, "{key} indexed under its owner");
            }
        }
        let indexed: usize = self.sessions.values().map(|s| s.proxies.len()).sum();
        assert_eq!(indexed, self.proxies.len(), "every proxy is indexed once");
        for key in self.routes.keys() {
            let group = key.name.strip_prefix("group:");
            assert!(
                self.proxies.contains_key(key)
                    || group.is_some_and(|g| self.groups.contains_key(g)),
                "{key}: a route without proxy or group"
            );
        }
        let mut members = 0;
        for (name, g) in &self.groups {
            assert!(!g.members.is_empty(), "group {name} without members");
            assert_eq!(&g.claim.name, name);
            for key in &g.members {
                let p = self.proxies.get(key).expect("a member is a proxy");
                assert_eq!(p.group.as_deref(), Some(name.as_str()), "{key} in {name}");
                assert_eq!(key.port, g.claim.port, "{key}: the group's port");
            }
            members += g.members.len();
            if g.claim.port != 0 {
                assert_eq!(self.group_ports.get(&g.claim.port), Some(name));
            }
        }
        let grouped = self.proxies.values().filter(|p| p.group.is_some()).count();
        assert_eq!(members, grouped, "every grouped proxy is in its group once");
        assert!(
            self.group_ports
                .values()
                .all(|n| self.groups.contains_key(n)),
            "a group port without group"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Fake {
        id: u64,
        client: &'static str,
        instance: u8,
    }

    impl SessionInfo for Fake {
        fn id(&self) -> u64 {
            self.id
        }
        fn client_id(&self) -> &str {
            self.client
        }
        fn instance(&self) -> [u8; 16] {
            [self.instance; 16]
        }
    }

    type Table = State<Fake, &'static str>;

    fn fake(id: u64, client: &'static str, instance: u8) -> Fake {
        Fake {
            id,
            client,
            instance,
        }
    }

    fn key(name: &str, port: u16) -> ProxyKey {
        ProxyKey {
            name: name.into(),
            port,
        }
    }

    fn route(t: &Table, host: &str, path: &str) -> Option<Arc<Route<&'static str>>> {
        t.route(&HostQuery::new(host)?, path)
    }

    fn pairs(host: &str) -> Vec<Pair> {
        vec![(host.to_owned(), "/".to_owned())]
    }

    /// A table with sessions 1 (alice) and 2 (bob), each holding one proxy.
    fn two() -> Table {
        let mut t = Table::default();
        t.install_session(fake(1, "alice", 1), 10).unwrap();
        t.install_session(fake(2, "bob", 2), 10).unwrap();
        t.claim(1, key("a", 0), "a", &pairs("a.test"), None)
            .unwrap();
        t.claim(2, key("b", 9000), "b", &[], None).unwrap();
        t.check();
        t
    }

    #[test]
    fn admission_per_instance_and_the_client_cap() {
        let t = two();
        assert!(t.admit("carol", [3; 16], 10).is_ok());
        assert!(t.admit("alice", [1; 16], 10).is_ok(), "same instance");
        match t.admit("alice", [9; 16], 10) {
            Err(Refused::IdInUse { holder }) => assert_eq!(holder.id, 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.admit("carol", [3; 16], 2),
            Err(Refused::Full { clients: 2 })
        ));
        assert!(
            t.admit("alice", [1; 16], 2).is_ok(),
            "a replacement adds none"
        );
    }

    #[test]
    fn install_refuses_another_instance_and_replaces_the_same_one() {
        let mut t = two();
        assert!(matches!(
            t.install_session(fake(3, "alice", 7), 10),
            Err(Refused::IdInUse { .. })
        ));
        assert!(matches!(
            t.install_session(fake(3, "carol", 3), 2),
            Err(Refused::Full { .. })
        ));
        t.check();
        let done = t.install_session(fake(3, "alice", 1), 2).unwrap();
        assert_eq!(done.replaced, Some(fake(1, "alice", 1)));
        assert_eq!(done.moved, 1);
        t.check();
        assert_eq!(t.session("alice").unwrap().id, 3);
        assert_eq!(t.owner(&key("a", 0)).unwrap().id, 3);
        assert_eq!(
            route(&t, "a.test", "/x").unwrap().entry,
            "a",
            "routes follow"
        );
        // The replaced session's late clean-up finds nothing left to release.
        assert!(t.release_session(1).is_empty());
        assert_eq!(t.counts(), (2, 2));
        // Installing the same session twice changes nothing.
        assert_eq!(t.install_session(fake(3, "alice", 1), 2).unwrap().moved, 0);
        t.check();
    }

    #[test]
    fn hand_over_moves_only_that_sessions_proxies() {
        let mut t = two();
        t.install_session(fake(5, "carol", 5), 10).unwrap();
        t.claim(1, key("a2", 0), "a2", &[], None).unwrap();
        assert_eq!(t.hand_over(1, 5), 2);
        t.check();
        assert_eq!(t.proxies_of(1), 0);
        assert_eq!(t.proxies_of(5), 2);
        assert_eq!(t.owner(&key("b", 9000)).unwrap().id, 2);
        assert_eq!(
            t.hand_over(1, 99),
            0,
            "not to a session that is not installed"
        );
        assert_eq!(t.hand_over(5, 5), 0);
        t.check();
    }

    #[test]
    fn claim_is_all_or_nothing_with_its_routes() {
        let mut t = two();
        assert_eq!(
            t.claim(2, key("a", 0), "x", &[], None),
            Err(ClaimError::Taken)
        );
        // Bob may not take a host alice serves: neither the proxy nor any route lands.
        let both = vec![
            ("b.test".to_owned(), "/".to_owned()),
            ("a.test".to_owned(), "/api".to_owned()),
        ];
        let err = t.claim(2, key("b2", 0), "b2", &both, None).unwrap_err();
        assert!(matches!(err, ClaimError::RouteTaken(_)), "{err:?}");
        assert!(t.get(&key("b2", 0)).is_none());
        assert!(route(&t, "b.test", "/").is_none());
        assert_eq!(t.proxies_of(2), 1);
        assert_eq!(
            t.claim(42, key("c", 0), "c", &[], None),
            Err(ClaimError::NoSession)
        );
        t.claim(2, key("b2", 0), "b2", &pairs("b.test"), Some("auth".into()))
            .unwrap();
        let r = route(&t, "B.test:80", "/x").unwrap();
        assert_eq!((r.entry, r.auth.as_deref()), ("b2", Some("auth")));
        assert_eq!(t.proxies_of(2), 2);
        t.check();
    }

    #[test]
    fn set_routes_refreshes_the_owners_routes_only() {
        let mut t = two();
        t.set_routes(1, &key("a", 0), &pairs("a2.test"), None)
            .unwrap();
        assert!(route(&t, "a.test", "/").is_none());
        assert_eq!(route(&t, "a2.test", "/").unwrap().entry, "a");
        assert_eq!(
            t.set_routes(2, &key("a", 0), &pairs("x.test"), None),
            Err(ClaimError::Taken)
        );
        t.claim(2, key("b2", 0), "b2", &pairs("b.test"), None)
            .unwrap();
        // On a conflict the old routes stay.
        let err = t.set_routes(1, &key("a", 0), &pairs("b.test"), None);
        assert!(matches!(err, Err(ClaimError::RouteTaken(_))));
        assert_eq!(route(&t, "a2.test", "/").unwrap().entry, "a");
        t.check();
    }

    #[test]
    fn release_takes_only_what_the_session_holds() {
        let mut t = two();
        assert_eq!(t.release(2, &key("a", 0)), None);
        assert_eq!(t.release(1, &key("a", 0)), Some("a"));
        assert!(route(&t, "a.test", "/").is_none());
        assert_eq!(t.proxies_of(1), 0);
        assert_eq!(t.release(1, &key("a", 0)), None);
        t.check();
        // The host is free for another client now.
        t.claim(2, key("b2", 0), "b2", &pairs("a.test"), None)
            .unwrap();
        t.check();
    }

    #[test]
    fn release_except_keeps_the_listed() {
        let mut t = two();
        t.claim(1, key("a2", 0), "a2", &pairs("a2.test"), None)
            .unwrap();
        let keep: HashSet<ProxyKey> = [key("a", 0), key("b", 9000)].into();
        let gone = t.release_except(1, &keep);
        assert_eq!(gone, vec![(key("a2", 0), "a2")]);
        assert!(route(&t, "a2.test", "/").is_none());
        assert_eq!(t.proxies_of(1), 1);
        assert!(t.get(&key("b", 9000)).is_some(), "not alice's to release");
        assert!(t.release_except(77, &keep).is_empty());
        t.check();
    }

    #[test]
    fn nothing_survives_a_sessions_release() {
        let mut t = two();
        t.claim(1, key("a2", 8000), "a2", &pairs("*.w.test"), None)
            .unwrap();
        let mut gone = t.release_session(1);
        gone.sort_by(|x, y| x.0.name.cmp(&y.0.name));
        assert_eq!(gone, vec![(key("a", 0), "a"), (key("a2", 8000), "a2")]);
        t.check();
        assert!(t.session("alice").is_none());
        assert!(route(&t, "x.w.test", "/").is_none());
        assert!(route(&t, "a.test", "/").is_none());
        assert_eq!(t.counts(), (1, 1));
        assert_eq!(t.proxies_of(1), 0);
        assert!(t.release_session(1).is_empty());
        // Alice's id, hosts and keys are free for anyone.
        t.install_session(fake(3, "alice", 8), 2).unwrap();
        t.claim(2, key("a", 0), "a-by-bob", &pairs("a.test"), None)
            .unwrap();
        t.check();
    }

    #[test]
    fn lookups() {
        let t = two();
        let (entry, owner) = t.get(&key("b", 9000)).unwrap();
        assert_eq!((entry, owner.id), ("b", 2));
        assert!(t.get(&key("b", 0)).is_none(), "the port is part of the key");
        assert_eq!(t.owner(&key("a", 0)).unwrap().client, "alice");
        assert_eq!(t.session("bob").unwrap().id, 2);
        assert!(t.session("nobody").is_none());
        assert_eq!(t.counts(), (2, 2));
        let mut all: Vec<_> = t.sessions().into_iter().map(|(s, p)| (s.id, p)).collect();
        all.sort();
        assert_eq!(all, vec![(1, vec!["a"]), (2, vec!["b"])]);
    }
}
