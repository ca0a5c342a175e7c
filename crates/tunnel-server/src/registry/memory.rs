//! The default backend: the [`State`] of one server behind one lock.
//!
//! Readers (the data path's lookups) share the lock; nothing awaits under it, and no call
//! does work proportional to what a peer sends beyond a claim's routes, which the caller caps.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::RwLock;

use super::backend::{ClaimError, Installed, Refused, RegistryBackend, Route, SessionInfo};
use super::groups::{GroupClaim, GroupHandle};
use super::state::State;
use super::ProxyKey;
use crate::routes::{HostQuery, Pair};

/// Registry state held in this process.
pub(crate) struct MemoryRegistry<S, P> {
    state: RwLock<State<S, P>>,
}

impl<S, P> Default for MemoryRegistry<S, P> {
    fn default() -> Self {
        MemoryRegistry {
            state: RwLock::new(State::default()),
        }
    }
}

impl<S, P> RegistryBackend<S, P> for MemoryRegistry<S, P>
where
    S: SessionInfo + Clone + Send + Sync,
    P: Clone + Send + Sync,
{
    fn admit(
        &self,
        client_id: &str,
        instance: [u8; 16],
        max_clients: usize,
    ) -> Result<(), Refused<S>> {
        self.state.read().admit(client_id, instance, max_clients)
    }

    fn install_session(&self, session: S, max_clients: usize) -> Result<Installed<S>, Refused<S>> {
        self.state.write().install_session(session, max_clients)
    }

    fn release_session(&self, session: u64) -> Vec<(ProxyKey, P)> {
        self.state.write().release_session(session)
    }

    fn claim(
        &self,
        session: u64,
        key: ProxyKey,
        entry: P,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        self.state.write().claim(session, key, entry, routes, auth)
    }

    fn set_routes(
        &self,
        session: u64,
        key: &ProxyKey,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError> {
        self.state.write().set_routes(session, key, routes, auth)
    }

    fn group_check(&self, claim: &GroupClaim) -> Result<Option<Arc<GroupHandle>>, ClaimError> {
        self.state.read().group_check(claim)
    }

    fn claim_member(
        &self,
        session: u64,
        key: ProxyKey,
        entry: P,
        claim: &GroupClaim,
        handle: &Arc<GroupHandle>,
    ) -> Result<(), ClaimError> {
        (self.state.write()).claim_member(session, key, entry, claim, handle)
    }

    fn group_on_port(&self, port: u16) -> bool {
        self.state.read().group_on_port(port)
    }

    fn group_members(&self, name: &str) -> Vec<P> {
        self.state.read().group_members(name)
    }

    fn group_handle(&self, name: &str) -> Option<Arc<GroupHandle>> {
        self.state.read().group_handle(name)
    }

    fn groups(&self) -> Vec<(GroupClaim, Vec<P>)> {
        self.state.read().groups()
    }

    fn release_except(&self, session: u64, keep: &HashSet<ProxyKey>) -> Vec<(ProxyKey, P)> {
        self.state.write().release_except(session, keep)
    }

    fn proxies_of(&self, session: u64) -> usize {
        self.state.read().proxies_of(session)
    }

    fn session(&self, client_id: &str) -> Option<S> {
        self.state.read().session(client_id)
    }

    fn get(&self, key: &ProxyKey) -> Option<(P, S)> {
        self.state.read().get(key)
    }

    fn owner(&self, key: &ProxyKey) -> Option<S> {
        self.state.read().owner(key)
    }

    fn route(&self, host: &str, path: &str) -> Option<Arc<Route<P>>> {
        // Prepared before the lock: the Host value is the request's, of any length.
        let query = HostQuery::new(host)?;
        self.state.read().route(&query, path)
    }

    fn route_sni(&self, name: &str) -> Option<Arc<Route<P>>> {
        let query = HostQuery::sni(name)?;
        self.state.read().route(&query, "/")
    }

    fn counts(&self) -> (usize, usize) {
        self.state.read().counts()
    }

    fn sessions(&self) -> Vec<(S, Vec<P>)> {
        self.state.read().sessions()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Clone)]
    struct Fake(u64, &'static str);

    impl SessionInfo for Fake {
        fn id(&self) -> u64 {
            self.0
        }
        fn client_id(&self) -> &str {
            self.1
        }
        fn instance(&self) -> [u8; 16] {
            [0; 16]
        }
    }

    #[test]
    fn the_trait_object_serves_readers_from_other_threads() {
        let r: Arc<dyn RegistryBackend<Fake, u32>> = Arc::new(MemoryRegistry::default());
        r.install_session(Fake(1, "a"), 10).unwrap();
        let key = ProxyKey {
            name: "web".into(),
            port: 0,
        };
        let pairs = vec![("web.test".to_owned(), "/".to_owned())];
        r.claim(1, key.clone(), 7, &pairs, None).unwrap();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                let key = key.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        // Before the release or after it, never a torn state.
                        let routed = r.route("WEB.test", "/x").map(|t| t.entry);
                        assert!(matches!(routed, None | Some(7)));
                        assert!(matches!(r.get(&key), None | Some((7, Fake(1, "a")))));
                    }
                })
            })
            .collect();
        assert_eq!(r.proxies_of(1), 1);
        assert_eq!(r.release_session(1), vec![(key.clone(), 7)]);
        for t in readers {
            t.join().unwrap();
        }
        assert!(r.route("web.test", "/").is_none());
        assert_eq!(r.counts(), (0, 0));
        assert!(r.route("not a host", "/").is_none());
    }
}
