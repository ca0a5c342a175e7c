//! The registry's group invariants: who may join, who may take a group's port or hosts, and
//! that a group lives exactly as long as its members.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use tunnel_proto::ProxyKind;

use super::backend::{ClaimError, SessionInfo};
use super::groups::{GroupClaim, GroupHandle};
use super::state::State;
use super::ProxyKey;
use crate::routes::HostQuery;

#[derive(Debug, Clone, PartialEq)]
struct Fake(u64, &'static str);

impl SessionInfo for Fake {
    fn id(&self) -> u64 {
        self.0
    }
    fn client_id(&self) -> &str {
        self.1
    }
    fn instance(&self) -> [u8; 16] {
        [self.0 as u8; 16]
    }
}

type Table = State<Fake, &'static str>;

fn key(name: &str, port: u16) -> ProxyKey {
    ProxyKey {
        name: name.into(),
        port,
    }
}

fn tcp(port: u16, secret: &str) -> GroupClaim {
    GroupClaim {
        name: "web".into(),
        key: secret.into(),
        kind: ProxyKind::Tcp,
        port,
        routes: Vec::new(),
        auth: None,
    }
}

fn http(host: &str) -> GroupClaim {
    GroupClaim {
        kind: ProxyKind::Http,
        port: 0,
        routes: vec![(host.to_owned(), "/".to_owned())],
        ..tcp(0, "s3cret")
    }
}

/// Sessions 1 (alice), 2 (bob) and 3 (carol).
fn three() -> Table {
    let mut t = Table::default();
    for (id, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        t.install_session(Fake(id, name), 10).unwrap();
    }
    t
}

/// Claim as the registration does: look the group up, then join with its handle (a new one
/// when the claim founds the group).
fn join(
    t: &mut Table,
    session: u64,
    k: ProxyKey,
    entry: &'static str,
    c: &GroupClaim,
) -> Result<(), ClaimError> {
    let handle = t
        .group_check(c)?
        .unwrap_or_else(|| GroupHandle::new(&c.name));
    t.claim_member(session, k, entry, c, &handle)
}

#[test]
fn members_of_several_clients_share_a_port_and_rotate() {
    let mut t = three();
    assert!(
        t.group_check(&tcp(7000, "s3cret")).unwrap().is_none(),
        "founds"
    );
    join(&mut t, 1, key("a", 7000), "a", &tcp(7000, "s3cret")).unwrap();
    join(&mut t, 2, key("b", 7000), "b", &tcp(7000, "s3cret")).unwrap();
    t.check();
    assert!(t.group_on_port(7000));
    let firsts: HashSet<_> = (0..4).map(|_| t.group_members("web")[0]).collect();
    assert_eq!(
        firsts,
        ["a", "b"].into(),
        "round robin starts at each member in turn"
    );
    assert_eq!(t.group_members("web").len(), 2);
    let (claim, members) = t.groups().pop().unwrap();
    assert_eq!((claim.port, members.len()), (7000, 2));
}

#[test]
fn a_wrong_key_or_other_settings_are_refused_by_field() {
    let mut t = three();
    join(&mut t, 1, key("a", 7000), "a", &tcp(7000, "s3cret")).unwrap();
    let field = |r: Result<(), ClaimError>| match r {
        Err(ClaimError::Group(g)) => g.field,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        field(join(&mut t, 2, key("b", 7000), "b", &tcp(7000, "guess"))),
        "group_key"
    );
    assert_eq!(
        field(join(&mut t, 2, key("b", 7001), "b", &tcp(7001, "s3cret"))),
        "publish_port"
    );
    let udp = GroupClaim {
        kind: ProxyKind::Udp,
        ..tcp(7000, "s3cret")
    };
    assert_eq!(field(join(&mut t, 2, key("b", 7000), "b", &udp)), "type");
    // The key is checked first: a stranger learns nothing of the group's settings.
    let stranger = GroupClaim {
        kind: ProxyKind::Udp,
        ..tcp(7001, "guess")
    };
    assert_eq!(
        field(join(&mut t, 2, key("b", 7001), "b", &stranger)),
        "group_key"
    );
    t.check();
    assert_eq!(t.group_members("web"), vec!["a"]);
}

#[test]
fn outsiders_never_take_a_groups_port_nor_another_group() {
    let mut t = three();
    join(&mut t, 1, key("a", 7000), "a", &tcp(7000, "s3cret")).unwrap();
    let err = t.claim(2, key("b", 7000), "b", &[], None).unwrap_err();
    assert!(
        matches!(&err, ClaimError::Group(g) if g.field == "publish_port"),
        "{err:?}"
    );
    let other = GroupClaim {
        name: "other".into(),
        ..tcp(7000, "s3cret")
    };
    assert!(matches!(t.group_check(&other), Err(ClaimError::Group(_))));
    // Same name and port as a member, another client: the proxy key is taken.
    assert_eq!(
        join(&mut t, 2, key("a", 7000), "a2", &tcp(7000, "s3cret")),
        Err(ClaimError::Taken)
    );
    t.check();
}

#[test]
fn the_group_lives_while_any_member_does() {
    let mut t = three();
    join(&mut t, 1, key("a", 7000), "a", &tcp(7000, "s3cret")).unwrap();
    let founded = t.group_handle("web").unwrap();
    join(&mut t, 2, key("b", 7000), "b", &tcp(7000, "s3cret")).unwrap();
    // The founder leaves: the group, its handle (the listener) and its port stay.
    assert_eq!(t.release_session(1).len(), 1);
    t.check();
    assert!(Arc::ptr_eq(&t.group_handle("web").unwrap(), &founded));
    assert_eq!(t.group_members("web"), vec!["b"]);
    assert!(t.group_on_port(7000));
    // The last one leaves: all of it goes, and the port is anyone's again.
    let keep = HashSet::new();
    assert_eq!(t.release_except(2, &keep).len(), 1);
    t.check();
    assert!(t.group_handle("web").is_none());
    assert!(!t.group_on_port(7000));
    assert!(t.group_members("web").is_empty());
    t.claim(3, key("c", 7000), "c", &[], None).unwrap();
    // A group founded again gets a handle of its own.
    join(&mut t, 2, key("b", 7001), "b", &tcp(7001, "new")).unwrap();
    assert!(!Arc::ptr_eq(&t.group_handle("web").unwrap(), &founded));
    t.check();
}

#[test]
fn an_http_group_shares_its_hosts_and_keeps_them_from_others() {
    let mut t = three();
    join(&mut t, 1, key("a", 0), "a", &http("app.test")).unwrap();
    join(&mut t, 2, key("b", 0), "b", &http("app.test")).unwrap();
    t.check();
    let q = HostQuery::new("app.test").unwrap();
    assert!(t.route(&q, "/").is_some(), "the group's route");
    // Carol's own proxy may not take the group's host.
    let pairs = vec![("app.test".to_owned(), "/".to_owned())];
    let err = t.claim(3, key("c", 0), "c", &pairs, None).unwrap_err();
    assert!(matches!(err, ClaimError::RouteTaken(_)), "{err:?}");
    // Other hosts than the group's: refused, naming domains.
    match join(&mut t, 3, key("c", 0), "c", &http("other.test")) {
        Err(ClaimError::Group(g)) => assert_eq!(g.field, "domains"),
        other => panic!("{other:?}"),
    }
    t.release_session(1);
    assert!(t.route(&q, "/").is_some(), "the route stays with a member");
    t.release_session(2);
    t.check();
    assert!(t.route(&q, "/").is_none(), "and goes with the last");
    t.claim(3, key("c", 0), "c", &pairs, None).unwrap();
    t.check();
}

#[test]
fn a_hand_over_keeps_membership() {
    let mut t = three();
    join(&mut t, 1, key("a", 7000), "a", &tcp(7000, "s3cret")).unwrap();
    t.install_session(Fake(9, "dave"), 10).unwrap();
    assert_eq!(t.hand_over(1, 9), 1);
    t.check();
    assert_eq!(t.owner(&key("a", 7000)).unwrap().0, 9);
    assert_eq!(t.group_members("web"), vec!["a"]);
}
