//! The registry's operations as a narrow trait, so that a store shared by several servers can
//! back it (the cluster issue adds an etcd backend with leases and revisions).
//!
//! Everything goes in and out by value: session ids, keys, route pairs, and clones of the
//! stored session and proxy values. No guard or borrow escapes a call, so a remote store
//! can answer each one from its own copy.

use std::collections::HashSet;
use std::sync::Arc;

use super::groups::{GroupClaim, GroupHandle, GroupRefusal};
use super::ProxyKey;
use crate::routes::{Conflict, Pair};

/// What the registry needs to know of a session to keep its invariants.
pub(crate) trait SessionInfo {
    /// Unique for the server's life: a replaced session keeps its own.
    fn id(&self) -> u64;
    /// The client's chosen id: one session per client id at a time.
    fn client_id(&self) -> &str;
    /// The client process: the same instance may replace its own stale session.
    fn instance(&self) -> [u8; 16];
}

/// What a virtual-host route leads to: the proxy and the `Authorization` value its basic
/// auth expects, if it has one. The proxy's owner is looked up apart, as it may change by
/// hand-over.
pub(crate) struct Route<P> {
    /// The proxy.
    pub entry: P,
    /// The exact `Authorization` header value a request must carry, if any.
    pub auth: Option<String>,
}

/// Why a session may not be installed.
#[derive(Debug)]
pub(crate) enum Refused<S> {
    /// Another instance (another process) holds the client id; `holder` is for the operator.
    IdInUse { holder: S },
    /// The server holds `max_clients` sessions.
    Full { clients: usize },
}

/// A session installed: the stale session of the same instance it replaced, if any, and how
/// many proxies moved from it.
#[derive(Debug)]
pub(crate) struct Installed<S> {
    pub replaced: Option<S>,
    pub moved: usize,
}

/// Why a claim failed. Neither variant says who holds what is taken: an error text goes to
/// another key holder, who has no business learning other clients' ids.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// Another session holds the key.
    Taken,
    /// One of the `(host, location)` routes collides with what is held.
    RouteTaken(Conflict<ProxyKey>),
    /// The claiming session is no longer installed (it ended or was replaced).
    NoSession,
    /// A load-balancing group refuses the proxy (wrong key, other settings), or the port
    /// is a group's and the proxy is not its member.
    Group(GroupRefusal),
}

/// Sessions by client id, proxies by key, their virtual-host routes, and which session holds
/// which proxies. Implementations keep these invariants after every call:
/// - every proxy's owner is an installed session, and at most one session per client id;
/// - the per-session index and the proxies agree;
/// - a route exists iff its proxy does (a group's routes: iff the group does);
/// - nothing of a session survives its release;
/// - a group exists iff it has members, every member carries its port, and a group's port
///   or routes are never held by a proxy outside it.
pub(crate) trait RegistryBackend<S, P>: Send + Sync {
    /// Whether `client_id` (of `instance`) could be installed now: not while another instance
    /// holds it, nor a new id when `max_clients` sessions are installed. Changes nothing.
    fn admit(
        &self,
        client_id: &str,
        instance: [u8; 16],
        max_clients: usize,
    ) -> Result<(), Refused<S>>;

    /// Install `session` under its client id, by the rule of [`RegistryBackend::admit`]. A
    /// session of the same instance is replaced: its proxies (and routes) move to the new
    /// one in the same step, so public ports keep serving with no gap.
    fn install_session(&self, session: S, max_clients: usize) -> Result<Installed<S>, Refused<S>>;

    /// Remove the session and everything it holds; nothing if it is no longer installed
    /// (replaced: its successor holds its proxies). Returns the proxies released.
    fn release_session(&self, session: u64) -> Vec<(ProxyKey, P)>;

    /// Record `entry` under `key` for `session` with its virtual-host `routes` (all or
    /// nothing), unless the key or a route is held by someone else.
    fn claim(
        &self,
        session: u64,
        key: ProxyKey,
        entry: P,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError>;

    /// Replace the routes of `key`, which `session` holds (a refreshed spec after a
    /// hand-over); on a conflict its old routes stay.
    fn set_routes(
        &self,
        session: u64,
        key: &ProxyKey,
        routes: &[Pair],
        auth: Option<String>,
    ) -> Result<(), ClaimError>;

    /// Whether `claim` may join its group: the group's handle, or `None` when it would found
    /// the group. Changes nothing.
    fn group_check(&self, claim: &GroupClaim) -> Result<Option<Arc<GroupHandle>>, ClaimError>;

    /// Record `entry` under `key` for `session` as a member of `claim`'s group (founding it,
    /// with its routes, when there is none), unless the key is held or the group refuses.
    fn claim_member(
        &self,
        session: u64,
        key: ProxyKey,
        entry: P,
        claim: &GroupClaim,
        handle: &Arc<GroupHandle>,
    ) -> Result<(), ClaimError>;

    /// Whether a group publishes on `port`.
    fn group_on_port(&self, port: u16) -> bool;

    /// The members of group `name`, the next in round-robin order first.
    fn group_members(&self, name: &str) -> Vec<P>;

    /// The live handle of group `name`.
    fn group_handle(&self, name: &str) -> Option<Arc<GroupHandle>>;

    /// Every group with its members.
    fn groups(&self) -> Vec<(GroupClaim, Vec<P>)>;

    /// Remove what `session` holds outside `keep` (one proxy: keep all but it).
    fn release_except(&self, session: u64, keep: &HashSet<ProxyKey>) -> Vec<(ProxyKey, P)>;

    /// How many proxies `session` holds.
    fn proxies_of(&self, session: u64) -> usize;

    /// The installed session of `client_id`.
    fn session(&self, client_id: &str) -> Option<S>;

    /// The proxy under `key` and the session serving it.
    fn get(&self, key: &ProxyKey) -> Option<(P, S)>;

    /// The session serving `key` right now.
    fn owner(&self, key: &ProxyKey) -> Option<S>;

    /// The route serving `host` (a raw Host value) at `path`.
    fn route(&self, host: &str, path: &str) -> Option<Arc<Route<P>>>;

    /// The `https` proxy's route serving `name`, a ClientHello's server name.
    fn route_sni(&self, name: &str) -> Option<Arc<Route<P>>>;

    /// Installed sessions and registered proxies.
    fn counts(&self) -> (usize, usize);

    /// Every session with its proxies.
    fn sessions(&self) -> Vec<(S, Vec<P>)>;
}
