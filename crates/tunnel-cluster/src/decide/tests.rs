#![allow(clippy::unwrap_used)]
use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn keys() -> Keys {
    Keys::new("/t/")
}

fn who(id: &str, instance: u8) -> Claimant {
    Claimant {
        client_id: id.into(),
        instance: [instance; 16],
        server_id: format!("s{instance}"),
    }
}

fn proxy(name: &str, port: u16, domains: &[&str]) -> ProxyClaim {
    ProxyClaim {
        name: name.into(),
        publish_port: port,
        domains: domains.iter().map(|d| d.to_string()).collect(),
        udp: false,
    }
}

fn held(id: &str, instance: u8, rev: i64) -> Held {
    Held {
        owner: Owner {
            client_id: id.into(),
            instance: [instance; 16],
        },
        server_id: format!("s{instance}"),
        mod_revision: rev,
    }
}

/// The keys a proxy claim needs.
fn proxy_keys(p: &ProxyClaim) -> Vec<String> {
    let k = keys();
    let mut out = vec![k
        .key(&KeyKind::Proxy {
            name: p.name.clone(),
            port: p.publish_port,
        })
        .unwrap()];
    if p.publish_port != 0 {
        out.push(k.key(&KeyKind::Port(p.publish_port)).unwrap());
    }
    out.extend(
        p.domains
            .iter()
            .map(|d| k.key(&KeyKind::Domain(d.clone())).unwrap()),
    );
    out
}

#[test]
fn absent_keys_are_taken_with_zero_guards() {
    let plan = decide(
        &keys(),
        &who("a", 1),
        &[proxy("web", 80, &["a.com"])],
        &Seen::new(),
        128,
    )
    .unwrap();
    assert_eq!(plan.client, Verdict::Take);
    assert_eq!(plan.proxies, vec![Verdict::Take]);
    assert_eq!(plan.batches.len(), 1);
    let (compares, ops) = plan.batches[0].txn(7, &plan.client_key, None);
    assert_eq!(compares.len(), 4);
    assert!(compares
        .iter()
        .all(|Compare::ModRevision { mod_revision, .. }| *mod_revision == 0));
    assert!(ops.iter().all(|op| matches!(op, Op::Put { lease: 7, .. })));
}

#[test]
fn the_same_instance_takes_over_and_another_is_refused() {
    let p = [proxy("web", 80, &[])];
    let mut seen = Seen::new();
    seen.insert("/t/client/a".into(), held("a", 1, 5));
    seen.insert("/t/proxy/web/80".into(), held("a", 1, 5));
    seen.insert("/t/port/80".into(), held("a", 1, 5));
    let plan = decide(&keys(), &who("a", 1), &p, &seen, 128).unwrap();
    assert_eq!(plan.client, Verdict::TakeOver);
    assert_eq!(plan.proxies, vec![Verdict::TakeOver]);
    let (compares, _) = plan.batches[0].txn(1, &plan.client_key, None);
    assert!(compares
        .iter()
        .all(|Compare::ModRevision { mod_revision, .. }| *mod_revision == 5));

    let plan = decide(&keys(), &who("a", 2), &p, &seen, 128).unwrap();
    assert_eq!(
        plan.client,
        Verdict::Refused(Refusal::IdInUse {
            server_id: "s1".into()
        })
    );
    assert!(plan.batches.is_empty());
}

#[test]
fn the_first_holder_keeps_names_ports_and_domains() {
    let mut seen = Seen::new();
    seen.insert("/t/proxy/web/0".into(), held("b", 1, 3));
    seen.insert("/t/port/81".into(), held("b", 1, 3));
    seen.insert("/t/domain/b.com".into(), held("b", 1, 3));
    let claims = [
        proxy("web", 0, &[]),
        proxy("api", 81, &[]),
        proxy("site", 0, &["a.com", "b.com"]),
        proxy("free", 82, &["c.com"]),
        // Another proxy of the same login wanting the port an earlier one took.
        proxy("dup", 82, &[]),
        // Another location of the same host: the domain is the client's, shared.
        proxy("api", 0, &["c.com"]),
    ];
    let plan = decide(&keys(), &who("a", 1), &claims, &seen, 128).unwrap();
    assert_eq!(
        plan.proxies,
        vec![
            Verdict::Refused(Refusal::NameTaken),
            Verdict::Refused(Refusal::PortInUse(81)),
            Verdict::Refused(Refusal::DomainTaken("b.com".into())),
            Verdict::Take,
            Verdict::Refused(Refusal::PortInUse(82)),
            Verdict::Take,
        ]
    );
    // Refused proxies write nothing, not even their free keys (a.com).
    let written: Vec<&str> = plan.batches[0]
        .puts
        .iter()
        .map(|p| p.key.as_str())
        .collect();
    assert_eq!(
        written,
        [
            "/t/client/a",
            "/t/proxy/free/82",
            "/t/port/82",
            "/t/domain/c.com",
            "/t/proxy/api/0"
        ]
    );
}

#[test]
fn leftovers_of_a_dead_instance_of_the_same_id_are_taken_over() {
    let mut seen = Seen::new();
    // Instance 2 left a proxy behind; nobody holds the id now.
    seen.insert("/t/proxy/web/0".into(), held("a", 2, 3));
    let plan = decide(&keys(), &who("a", 1), &[proxy("web", 0, &[])], &seen, 128).unwrap();
    assert_eq!(plan.proxies, vec![Verdict::TakeOver]);
}

#[test]
fn batches_split_at_the_limit_with_the_client_key_first() {
    let claims: Vec<ProxyClaim> = (0..10)
        .map(|i| proxy(&format!("p{i}"), 1000 + i, &[]))
        .collect();
    // 2 keys per proxy; first batch: client + 2 proxies (5), later: 2 proxies + the guard.
    let plan = decide(&keys(), &who("a", 1), &claims, &Seen::new(), 5).unwrap();
    let sizes: Vec<usize> = plan.batches.iter().map(|b| b.puts.len()).collect();
    assert_eq!(sizes, [5, 4, 4, 4, 4]);
    let (compares, _) = plan.batches[1].txn(1, &plan.client_key, Some(42));
    assert_eq!(compares.len(), 5);
    assert!(compares.contains(&Compare::ModRevision {
        key: "/t/client/a".into(),
        mod_revision: 42
    }));
    let big = proxy("big", 0, &["a.com", "b.com", "c.com", "d.com", "e.com"]);
    let plan = decide(&keys(), &who("a", 1), &[big], &Seen::new(), 5).unwrap();
    assert_eq!(
        plan.proxies,
        vec![Verdict::Refused(Refusal::TooLarge { keys: 6, limit: 4 })]
    );
}

#[test]
fn a_name_too_long_refuses_its_proxy_not_the_login() {
    let long = "d".repeat(300);
    let plan = decide(
        &keys(),
        &who("a", 1),
        &[proxy("web", 0, &[&long]), proxy("ok", 0, &[])],
        &Seen::new(),
        128,
    )
    .unwrap();
    assert_eq!(
        plan.proxies,
        vec![Verdict::Refused(Refusal::NameTooLong), Verdict::Take]
    );
}

// --- Properties: random logins and logouts against a model store. ---

#[derive(Debug, Clone)]
enum Step {
    Login {
        id: u8,
        instance: u8,
        proxies: Vec<ProxyClaim>,
        max: usize,
    },
    Logout {
        id: u8,
    },
}

fn claim() -> impl Strategy<Value = ProxyClaim> {
    let domains =
        proptest::collection::vec(prop::sample::select(vec!["x.com", "y.com", "z.com"]), 0..3);
    (
        prop::sample::select(vec!["p", "q", "r"]),
        prop::sample::select(vec![0u16, 80, 81, 82]),
        domains,
    )
        .prop_map(|(n, port, d)| proxy(n, port, &d))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..3, 1u8..3, proptest::collection::vec(claim(), 0..6), 2usize..9)
            .prop_map(|(id, instance, proxies, max)| Step::Login { id, instance, proxies, max }),
        1 => (0u8..3).prop_map(|id| Step::Logout { id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn registrations_keep_the_rules(steps in proptest::collection::vec(step(), 1..25)) {
        let k = keys();
        let mut store: HashMap<String, Held> = HashMap::new();
        let mut rev = 1i64;
        for step in steps {
            let (id, instance, proxies, max) = match step {
                Step::Logout { id } => {
                    let id = format!("c{id}");
                    store.retain(|_, h| h.owner.client_id != id);
                    continue;
                }
                Step::Login { id, instance, proxies, max } => (format!("c{id}"), instance, proxies, max),
            };
            let me = who(&id, instance);
            let plan = decide(&k, &me, &proxies, &store, max).unwrap();
            let client_holder = store.get(&plan.client_key).map(|h| h.owner.clone());

            // IdInUse exactly when another instance holds the id.
            let other_instance = client_holder.as_ref().is_some_and(|o| o.instance != me.instance);
            prop_assert_eq!(!plan.client.granted(), other_instance);
            if other_instance {
                prop_assert!(plan.batches.is_empty());
                continue;
            }
            // The same instance always takes over.
            prop_assert_eq!(plan.client == Verdict::TakeOver, client_holder.is_some());

            // Batches: within the limit (later ones carry the client guard too), the client
            // key first, every granted proxy's keys exactly once, nothing else.
            let mut written: Vec<String> = Vec::new();
            for (i, b) in plan.batches.iter().enumerate() {
                let epoch = (i > 0).then_some(rev + 1);
                let (compares, ops) = b.txn(1, &plan.client_key, epoch);
                prop_assert!(compares.len() <= max && ops.len() <= max, "batch {} of {:?}", i, (compares.len(), ops.len()));
                written.extend(b.puts.iter().map(|p| p.key.clone()));
            }
            prop_assert_eq!(written.first(), Some(&plan.client_key));
            let mut expected = vec![plan.client_key.clone()];
            for (p, v) in proxies.iter().zip(&plan.proxies) {
                if v.granted() {
                    expected.extend(proxy_keys(p));
                }
            }
            let mut sorted = written.clone();
            sorted.sort();
            let before = sorted.len();
            sorted.dedup();
            prop_assert_eq!(before, sorted.len(), "a key written twice");
            expected.sort();
            // Domains shared by several granted proxies are written once.
            expected.dedup();
            prop_assert_eq!(&sorted, &expected);

            // First holder wins: nothing held by another client id is ever written, and
            // every guard is the revision held.
            for b in &plan.batches {
                for p in &b.puts {
                    match store.get(&p.key) {
                        None => prop_assert_eq!(p.seen, 0),
                        Some(h) => {
                            prop_assert_eq!(&h.owner.client_id, &id, "{} taken from its holder", p.key);
                            prop_assert_eq!(p.seen, h.mod_revision);
                        }
                    }
                }
            }
            // A refusal has a reason: a key held by another client, or claimed earlier in
            // this login (or twice by this proxy).
            let mut claimed: Vec<String> = Vec::new();
            for (p, v) in proxies.iter().zip(&plan.proxies) {
                let pk = proxy_keys(p);
                if let Verdict::Refused(r) = v {
                    let blocked = pk.iter().enumerate().any(|(i, key)| {
                        let shared = key.starts_with("/t/domain/");
                        (!shared && (claimed.contains(key) || pk[..i].contains(key)))
                            || store.get(key).is_some_and(|h| h.owner.client_id != id)
                    });
                    prop_assert!(blocked || matches!(r, Refusal::TooLarge { .. }), "{:?} refused without cause: {:?}", p, r);
                } else {
                    claimed.extend(pk);
                }
            }
            // Apply, as the store would.
            for b in &plan.batches {
                rev += 1;
                for p in &b.puts {
                    store.insert(p.key.clone(), Held {
                        owner: Owner { client_id: id.clone(), instance: me.instance },
                        server_id: me.server_id.clone(),
                        mod_revision: rev,
                    });
                }
            }
        }
    }
}
