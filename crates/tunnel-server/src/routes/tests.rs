#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn https_routes_are_a_namespace_of_their_own() {
    let mut t = Table::default();
    let https = |h: &str| (sni_host(h), "/".to_owned());
    t.claim(
        &"web".into(),
        &"a".into(),
        &pairs(&["a.example"], &["/"]),
        "web".into(),
    )
    .unwrap();
    // Another owner takes the same name, and a wildcard over it, over https.
    let tls = [https("a.example"), https("*.b.example")];
    t.claim(&"tls".into(), &"b".into(), &tls, "tls".into())
        .unwrap();
    let sni = |name: &str| t.lookup_query(&HostQuery::sni(name)?, "/").cloned();
    assert_eq!(t.lookup("a.example", "/x").unwrap(), "web");
    assert_eq!(sni("A.example.").as_deref(), Some("tls"));
    assert_eq!(sni("x.y.b.example").as_deref(), Some("tls"));
    assert_eq!(sni("b.example"), None);
    // No Host header reaches the https tree, nor can a domain name it.
    assert_eq!(t.lookup("a.example.-sni", "/"), None);
    assert_eq!(t.lookup("x.b.example.-SNI:443", "/"), None);
    assert!(domain_candidates("a.example.-sni").is_empty());
    assert!(normalize_domain("a.example.-sni").is_err());
    assert!(normalize_domain("*.-sni").is_err());
    assert_eq!(display_host(&sni_host("*.b.example")), "*.b.example");
    assert_eq!(display_host("a.example"), "a.example");
    assert!(is_sni_host(&sni_host("a.example")) && !is_sni_host("a.example"));
}

fn pairs(hosts: &[&str], locs: &[&str]) -> Vec<Pair> {
    hosts
        .iter()
        .flat_map(|h| locs.iter().map(move |l| (h.to_string(), l.to_string())))
        .collect()
}

type Table = Routes<String, String, String>;

/// Claims by `(key, owner, hosts, locations)`; the value is the key.
fn owned(claims: &[(&str, &str, &[&str], &[&str])]) -> Table {
    let mut t = Routes::default();
    for (key, owner, hosts, locs) in claims {
        t.claim(
            &key.to_string(),
            &owner.to_string(),
            &pairs(hosts, locs),
            key.to_string(),
        )
        .unwrap();
    }
    t
}

/// Claims of one owner.
fn table(claims: &[(&str, &[&str], &[&str])]) -> Table {
    let with_owner: Vec<_> = claims.iter().map(|(k, h, l)| (*k, "one", *h, *l)).collect();
    owned(&with_owner)
}

fn claim(
    t: &mut Table,
    key: &str,
    owner: &str,
    hosts: &[&str],
    locs: &[&str],
) -> Result<(), Conflict<String>> {
    t.claim(&key.into(), &owner.into(), &pairs(hosts, locs), key.into())
}

fn at<'a>(t: &'a Table, host: &str, path: &str) -> Option<&'a str> {
    t.lookup(host, path).map(String::as_str)
}

#[test]
fn exact_beats_wildcard_and_wildcards_go_any_depth() {
    let t = table(&[
        ("wild", &["*.example.com"], &["/"]),
        ("exact", &["app.example.com"], &["/"]),
        ("deeper", &["*.dev.example.com"], &["/"]),
    ]);
    assert_eq!(at(&t, "app.example.com", "/"), Some("exact"));
    assert_eq!(at(&t, "other.example.com", "/x"), Some("wild"));
    assert_eq!(at(&t, "a.b.example.com", "/"), Some("wild"));
    assert_eq!(at(&t, "x.dev.example.com", "/"), Some("deeper"));
    assert_eq!(at(&t, "a.b.dev.example.com", "/"), Some("deeper"));
    assert_eq!(at(&t, "example.com", "/"), None, "a wildcard needs a label");
    assert_eq!(at(&t, "notexample.com", "/"), None);
    assert_eq!(at(&t, "app.example.org", "/"), None);
}

#[test]
fn exact_host_without_a_matching_location_falls_back_to_the_wildcard() {
    let t = table(&[
        ("wild", &["*.example.com"], &["/"]),
        ("api", &["app.example.com"], &["/api"]),
    ]);
    assert_eq!(at(&t, "app.example.com", "/api/v1"), Some("api"));
    assert_eq!(at(&t, "app.example.com", "/other"), Some("wild"));
}

#[test]
fn hosts_are_case_insensitive_and_ports_and_dots_are_ignored() {
    let t = table(&[("a", &["app.example.com"], &["/"])]);
    for h in [
        "APP.Example.COM",
        "app.example.com:8080",
        "app.example.com.",
        " app.example.com ",
    ] {
        assert_eq!(at(&t, h, "/"), Some("a"), "{h}");
    }
    for h in [
        "",
        ":80",
        "app.example.com:x",
        "app.example.com:123456",
        "a b",
        "a/b",
    ] {
        assert_eq!(at(&t, h, "/"), None, "{h:?}");
    }
}

#[test]
fn ipv6_literals() {
    let t = table(&[("v6", &["[::1]"], &["/"]), ("w", &["*.com"], &["/"])]);
    assert_eq!(at(&t, "[::1]", "/"), Some("v6"));
    assert_eq!(at(&t, "[::1]:8080", "/"), Some("v6"));
    assert_eq!(at(&t, "[0:0::1]", "/"), None, "compared as written");
    assert_eq!(at(&t, "[::1", "/"), None);
    assert_eq!(at(&t, "[nothex]", "/"), None);
    assert_eq!(at(&t, "[::1]x", "/"), None);
    assert_eq!(normalize_host("[::1]:443").as_deref(), Some("[::1]"));
    assert_eq!(normalize_domain("[::1]").unwrap(), "[::1]");
    assert!(normalize_domain("*.[::1]").is_err());
}

#[test]
fn longest_location_on_segment_boundaries() {
    let t = table(&[
        ("root", &["h.test"], &["/"]),
        ("api", &["h.test"], &["/api"]),
        ("v2", &["h.test"], &["/api/v2"]),
    ]);
    assert_eq!(at(&t, "h.test", "/api"), Some("api"));
    assert_eq!(at(&t, "h.test", "/api/x"), Some("api"));
    assert_eq!(at(&t, "h.test", "/apix"), Some("root"));
    assert_eq!(at(&t, "h.test", "/api/v2"), Some("v2"));
    assert_eq!(at(&t, "h.test", "/api/v2/users"), Some("v2"));
    assert_eq!(at(&t, "h.test", "/api/v20"), Some("api"));
    assert_eq!(at(&t, "h.test", "/"), Some("root"));
    let only_api = table(&[("api", &["h.test"], &["/api"])]);
    assert_eq!(at(&only_api, "h.test", "/apix"), None);
    assert_eq!(at(&only_api, "h.test", "/"), None);
}

#[test]
fn duplicates_are_per_host_and_location_and_claims_are_all_or_nothing() {
    let mut t = table(&[("a", &["x.test", "y.test"], &["/api"])]);
    // Same host, other location, another proxy of the same client: fine.
    claim(&mut t, "b", "one", &["x.test"], &["/web"]).unwrap();
    // One pair taken: nothing of c's claim lands, and its own proxy is named.
    let err = claim(&mut t, "c", "one", &["z.test", "y.test"], &["/api"]).unwrap_err();
    assert_eq!(
        err,
        Conflict::Location {
            host: "y.test".into(),
            location: "/api".into(),
            holder: "a".into()
        }
    );
    assert_eq!(at(&t, "z.test", "/api"), None);
    // The holder may re-claim (a refresh), replacing its old routes.
    t.claim(
        &"a".into(),
        &"one".into(),
        &pairs(&["y.test"], &["/api"]),
        "a2".into(),
    )
    .unwrap();
    assert_eq!(at(&t, "x.test", "/api"), None);
    assert_eq!(at(&t, "y.test", "/api"), Some("a2"));
    t.release(&"a".into());
    t.release(&"b".into());
    assert_eq!(t.host_count(), 0);
    assert!(t.held.is_empty());
    // A wildcard does not cover its own base name: different owners may hold both.
    let t = owned(&[
        ("w", "p", &["*.x.test"], &["/"]),
        ("e", "q", &["x.test"], &["/"]),
    ]);
    assert_eq!(at(&t, "x.test", "/"), Some("e"));
    assert_eq!(at(&t, "a.x.test", "/"), Some("w"));
}

#[test]
fn a_host_and_all_its_locations_belong_to_one_owner() {
    let mut t = owned(&[("a", "alice", &["app.example.com"], &["/"])]);
    for loc in ["/", "/api", "/admin/x"] {
        assert_eq!(
            claim(&mut t, "b", "bob", &["app.example.com"], &[loc]),
            Err(Conflict::Host {
                host: "app.example.com".into()
            }),
            "{loc}"
        );
    }
    // Alice's other proxy may take a location under her host.
    claim(&mut t, "a2", "alice", &["app.example.com"], &["/api"]).unwrap();
    assert_eq!(at(&t, "app.example.com", "/api/x"), Some("a2"));
    assert_eq!(at(&t, "app.example.com", "/admin"), Some("a"));
    // Once every proxy of alice lets go, the host is free for bob.
    t.release(&"a".into());
    assert!(claim(&mut t, "b", "bob", &["app.example.com"], &["/"]).is_err());
    t.release(&"a2".into());
    claim(&mut t, "b", "bob", &["app.example.com"], &["/"]).unwrap();
    assert_eq!(at(&t, "app.example.com", "/api"), Some("b"));
}

#[test]
fn a_wildcard_may_not_cover_another_owners_names() {
    let mut t = owned(&[
        ("app", "alice", &["app.example.com"], &["/"]),
        ("deep", "carol", &["*.dev.corp.test"], &["/"]),
    ]);
    assert_eq!(
        claim(&mut t, "w", "bob", &["*.example.com"], &["/x"]),
        Err(Conflict::Covers {
            wildcard: "*.example.com".into(),
            name: "app.example.com".into()
        })
    );
    assert_eq!(
        claim(&mut t, "w", "bob", &["*.com"], &["/"]),
        Err(Conflict::Covers {
            wildcard: "*.com".into(),
            name: "app.example.com".into()
        })
    );
    assert_eq!(
        claim(&mut t, "w", "bob", &["*.corp.test"], &["/"]),
        Err(Conflict::Covers {
            wildcard: "*.corp.test".into(),
            name: "*.dev.corp.test".into()
        })
    );
    // Nothing of the refused claims landed.
    assert_eq!(at(&t, "other.example.com", "/x"), None);
    // The same owner may hold both: its exact name still wins.
    claim(&mut t, "aw", "alice", &["*.example.com"], &["/"]).unwrap();
    assert_eq!(at(&t, "app.example.com", "/"), Some("app"));
    assert_eq!(at(&t, "zzz.example.com", "/"), Some("aw"));
    // Neighbours sharing a prefix are not covered: *.example.co is not *.example.com.
    claim(
        &mut t,
        "n",
        "bob",
        &["*.example.co", "*.exampl.com"],
        &["/"],
    )
    .unwrap();
}

#[test]
fn a_name_may_not_fall_under_another_owners_wildcard() {
    let mut t = owned(&[("w", "alice", &["*.example.com"], &["/"])]);
    for name in ["app.example.com", "a.b.example.com", "*.dev.example.com"] {
        assert_eq!(
            claim(&mut t, "b", "bob", &[name], &["/api"]),
            Err(Conflict::Under {
                name: name.into(),
                wildcard: "*.example.com".into()
            }),
            "{name}"
        );
    }
    // Not under it: the base name itself, and other domains.
    claim(&mut t, "b", "bob", &["example.com", "example.org"], &["/"]).unwrap();
    // The same wildcard is the same host pattern: taken.
    assert_eq!(
        claim(&mut t, "c", "carol", &["*.example.com"], &["/other"]),
        Err(Conflict::Host {
            host: "*.example.com".into()
        })
    );
    // The owner's own narrower names are fine.
    claim(
        &mut t,
        "w2",
        "alice",
        &["x.example.com", "*.dev.example.com"],
        &["/"],
    )
    .unwrap();
    assert_eq!(at(&t, "a.dev.example.com", "/"), Some("w2"));
}

#[test]
fn releasing_a_key_touches_only_its_own_routes() {
    let mut t = owned(&[
        ("a", "alice", &["a.test", "*.a.test"], &["/", "/x"]),
        ("a2", "alice", &["a.test"], &["/y"]),
        ("b", "bob", &["b.test"], &["/"]),
    ]);
    t.release(&"a".into());
    assert_eq!(at(&t, "a.test", "/y/1"), Some("a2"));
    assert_eq!(at(&t, "a.test", "/"), None);
    assert_eq!(at(&t, "q.a.test", "/"), None);
    assert_eq!(at(&t, "b.test", "/"), Some("b"));
    t.release(&"nobody".into());
    assert_eq!(t.host_count(), 2);
}

#[test]
fn a_host_of_many_labels_meets_the_wildcards_present() {
    let mut t = table(&[("w", &["*.example.com"], &["/"])]);
    let deep = format!("{}example.com", "a.".repeat(10_000));
    assert_eq!(at(&t, &deep, "/"), Some("w"));
    claim(&mut t, "d", "one", &["*.c.b.a.test"], &["/"]).unwrap();
    assert_eq!(at(&t, "x.c.b.a.test", "/"), Some("d"));
    assert_eq!(at(&t, &deep, "/"), Some("w"));
    t.release(&"d".into());
    assert_eq!(t.wild_depths.get(&4), None);
    assert_eq!(at(&t, "x.c.b.a.test", "/"), None);
    t.release(&"w".into());
    assert!(t.wild_depths.is_empty());
    assert_eq!(at(&t, &deep, "/"), None);
}

#[test]
fn a_path_of_many_slashes_is_matched_like_any_other() {
    let t = table(&[
        ("api", &["h.test"], &["/api"]),
        ("deep", &["h.test"], &["/a/b/c"]),
    ]);
    let slashes = "/".repeat(100_000);
    assert_eq!(at(&t, "h.test", &slashes), None);
    assert_eq!(at(&t, "h.test", &format!("/api{slashes}")), Some("api"));
    assert_eq!(at(&t, "h.test", "/a/b/c/d"), Some("deep"));
    assert_eq!(at(&t, "h.test", "/a/b"), None);
    assert_eq!(at(&t, "h.test", "/ap\u{e9}/x"), None, "a multi-byte path");
}

#[test]
fn a_claim_costs_little_per_pair() {
    // Many locations per host made the old table quadratic (a linear duplicate check and
    // a re-sort per pair): 16 hosts x 4096 locations here, and 256 owners of 64 hosts.
    let started = std::time::Instant::now();
    let mut t: Table = Routes::default();
    let names = |n: usize, f: &dyn Fn(usize) -> String| (0..n).map(f).collect::<Vec<_>>();
    let locs = names(4096, &|i| format!("/l{i}"));
    let hosts = names(16, &|i| format!("h{i}.big.test"));
    let (h, l): (Vec<&str>, Vec<&str>) = (
        hosts.iter().map(String::as_str).collect(),
        locs.iter().map(String::as_str).collect(),
    );
    claim(&mut t, "big", "big", &h, &l).unwrap();
    assert_eq!(at(&t, "h9.big.test", "/l4095/x"), Some("big"));
    for owner in 0..256 {
        let hosts = names(64, &|d| format!("d{d}.o{owner}.test"));
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let key = format!("k{owner}");
        claim(&mut t, &key, &key, &hosts, &["/"]).unwrap();
    }
    assert_eq!(at(&t, "d3.o200.test", "/l7/x"), Some("k200"));
    // A wildcard over them all is refused at the first foreign name.
    assert!(matches!(
        claim(&mut t, "w", "w", &["*.test"], &["/"]),
        Err(Conflict::Covers { .. })
    ));
    for owner in 0..256 {
        t.release(&format!("k{owner}"));
    }
    t.release(&"big".into());
    assert_eq!(t.host_count(), 0);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
