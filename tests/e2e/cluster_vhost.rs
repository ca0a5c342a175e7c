//! End to end: the HTTP virtual host across the servers of a cluster (issue #16). A request
//! reaching server A's `vhost_http_bind` for a domain whose client is on B takes one hop over
//! the peer link and is served by B's own virtual host: B routes it, checks basic auth,
//! writes X-Forwarded-For with the user's real address, and relays upgrades.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tunnel_client::{ClientConfig, HttpOptions, ProxyConfig};
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

const WAIT: Duration = Duration::from_secs(10);
/// Where the test's users come from: neither a server's address nor the peer link's.
const USER_IP: &str = "127.0.0.9";

/// Server `id` on 127.0.0.`ip` of the cluster under `prefix`, with subdomains of `tunnel.test`.
async fn member(etcd: &Etcd, prefix: &str, id: &str, ip: u8) -> ServerHandle {
    etcd_member(etcd, prefix, id, ip, |c| {
        c.with_subdomain_host("tunnel.test")
    })
    .await
}

/// An `http` proxy whose requests carry `x-which: <name>`, which the service echoes back.
fn routed(name: &str, svc: &Service, f: impl FnOnce(&mut HttpOptions)) -> ProxyConfig {
    ProxyConfig::http(name, &svc.addr.to_string(), None).with_http(|h| {
        h.request_headers.insert("x-which".into(), name.into());
        f(h);
    })
}

fn domains(names: &[&str]) -> impl FnOnce(&mut HttpOptions) {
    let names: Vec<String> = names.iter().map(|d| d.to_string()).collect();
    move |h| h.domains = names
}

/// `curl -i` from [`USER_IP`] to `server`'s virtual host with `Host: host`.
async fn get(server: &ServerHandle, host: &str, path: &str, extra: &[&str]) -> String {
    let url = format!("http://{}{path}", server.vhost_addr().unwrap());
    let host = format!("Host: {host}");
    let mut args = vec!["-i", "--interface", USER_IP, "-H", &host];
    args.extend_from_slice(extra);
    args.push(&url);
    curl_ok(&args).await
}

fn which(answer: &str) -> Option<&str> {
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-which: "))
        .map(str::trim)
}

/// Until `server` answers `host` with the proxy `want` (the registry's watch brings a new
/// domain to the other servers' caches a moment after the login).
async fn until_served(server: &ServerHandle, host: &str, want: &str) {
    eventually(WAIT, &format!("{host} served by {want}"), || async {
        which(&get(server, host, "/", &[]).await) == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_on_b_answers_on_a_with_the_users_real_address() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let a = member(&etcd, "/cvh-fwd/", "a", 1).await;
    let b = member(&etcd, "/cvh-fwd/", "b", 2).await;
    let c = member(&etcd, "/cvh-fwd/", "c", 3).await;
    let svc = http1_service().await;
    let _on_b = client(
        client_config(&b)
            .with_id("on-b")
            .with_proxy(routed("app", &svc, domains(&["app.test"])))
            .with_proxy(routed("wild", &svc, domains(&["*.wild.test"])))
            .with_proxy(routed("sub", &svc, |h| h.subdomain = Some("sub".into()))),
    )
    .await;
    let _on_a = client(client_config(&a).with_id("on-a").with_proxy(routed(
        "home",
        &svc,
        domains(&["home.test"]),
    )))
    .await;
    until_served(&a, "app.test", "app").await;

    // Exact, wildcard (any depth) and subdomain routes of B, through A and through C.
    for server in [&a, &c] {
        for (host, want) in [
            ("app.test", "app"),
            ("x.y.wild.test", "wild"),
            ("sub.tunnel.test", "sub"),
        ] {
            until_served(server, host, want).await;
        }
    }
    // B writes X-Forwarded-For with the user's address, not the peer link's, appended once to
    // what the user sent; the Host is the user's.
    let got = get(
        &a,
        "app.test",
        "/path?q=1",
        &["-H", "X-Forwarded-For: 2.2.2.2"],
    )
    .await;
    assert_eq!(status_code(&got), "200", "{got}");
    assert!(got.contains("GET /path?q=1\n"), "{got}");
    assert!(
        got.contains(&format!("x-forwarded-for: 2.2.2.2, {USER_IP}\n")),
        "{got}"
    );
    assert!(got.contains("host: app.test\n"), "{got}");
    expect_logged(&["linked to peer", "peer=b"]).await;

    // One keep-alive connection to A, a local host and a forwarded one in turn.
    let url = format!("http://{}/", a.vhost_addr().unwrap());
    let mut args = vec!["--interface", USER_IP];
    for host in ["Host: home.test", "Host: app.test", "Host: home.test"] {
        args.extend_from_slice(&["-H", host, &url, "--next", "--interface", USER_IP]);
    }
    args.extend_from_slice(&["-H", "Host: sub.tunnel.test", &url, "-v"]);
    let (ok, out, err) = curl(&args).await;
    let out = String::from_utf8_lossy(&out);
    assert!(ok, "{err}");
    let order: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("x-which: "))
        .collect();
    assert_eq!(order, ["home", "app", "home", "sub"], "{out}");
    assert!(
        err.contains("Re-using existing connection") || err.contains("Reusing existing"),
        "{err}"
    );

    // Unknown anywhere: the same 404 page as a single server's, on every server.
    for server in [&a, &b, &c] {
        let got = get(server, "nobody.test", "/", &[]).await;
        assert_eq!(status_code(&got), "404", "{got}");
        assert!(got.contains("no tunnel for this host"), "{got}");
    }
    // A wildcard does not cover its base name, cluster-wide as on one server.
    let got = get(&a, "wild.test", "/", &[]).await;
    assert_eq!(status_code(&got), "404", "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_enforced_by_the_domains_server() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let a = member(&etcd, "/cvh-auth/", "a", 1).await;
    let b = member(&etcd, "/cvh-auth/", "b", 2).await;
    let svc = http1_service().await;
    let _c = client(
        client_config(&b)
            .with_id("locked")
            .with_proxy(routed("priv", &svc, |h| {
                h.domains = vec!["priv.test".into()];
                h.http_user = Some("alice".into());
                h.http_password = Some("s3cret".into());
            })),
    )
    .await;
    eventually(WAIT, "A forwards priv.test", || async {
        status_code(&get(&a, "priv.test", "/", &[]).await) == "401"
    })
    .await;
    for extra in [&[][..], &["-u", "alice:wrong"], &["-u", "bob:s3cret"]] {
        let got = get(&a, "priv.test", "/", extra).await;
        assert_eq!(status_code(&got), "401", "{extra:?}: {got}");
        assert!(
            got.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"tls-tunnel\""),
            "{got}"
        );
    }
    assert_eq!(svc.seen.requests.load(Ordering::SeqCst), 0);
    // B logged the failure with the user's address (for fail2ban), not the peer link's.
    expect_logged(&[
        "basic auth failed host=priv.test",
        &format!("peer={USER_IP}"),
    ])
    .await;
    let got = get(&a, "priv.test", "/", &["-u", "alice:s3cret"]).await;
    assert_eq!(status_code(&got), "200", "{got}");
    assert_eq!(which(&got), Some("priv"));
    assert!(
        !got.to_lowercase().contains("authorization:"),
        "the credential reached the service: {got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_crosses_the_hop() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let a = member(&etcd, "/cvh-ws/", "ws-a", 1).await;
    let b = member(&etcd, "/cvh-ws/", "ws-b", 2).await;
    let svc = http1_service().await;
    let _c = client(client_config(&b).with_id("upgrader").with_proxy(routed(
        "ws",
        &svc,
        domains(&["ws.test"]),
    )))
    .await;
    until_served(&a, "ws.test", "ws").await;
    let head = upgrade_echo(a.vhost_addr().unwrap(), "ws.test", 11).await;
    assert!(head.contains("upgrade: echo"), "{head}");
    // Several at once, each its own stream over the one peer link.
    let tasks: Vec<_> = (0..4u64)
        .map(|i| {
            let at = a.vhost_addr().unwrap();
            tokio::spawn(async move { upgrade_echo(at, "ws.test", 20 + i).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(logged_count(&["linked to peer", "peer=ws-b"]), 1);
}

/// The client moves from B to C (its path to B dies): A follows it to C.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moving_from_b_to_c_is_followed() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let pki = Pki::new("cluster-vhost-move");
    let on = |id: &'static str, ip: u8| {
        let pki = &pki;
        let etcd = &etcd;
        async move {
            etcd_member(etcd, "/cvh-move/", id, ip, |c| {
                c.with_tls_files(&pki.cert, &pki.key)
            })
            .await
        }
    };
    let a = on("a", 1).await;
    let b = on("b", 2).await;
    let c = on("c", 3).await;
    let (rb, rc) = (
        Relay::start(b.local_addr()).await,
        Relay::start(c.local_addr()).await,
    );
    let svc = http1_service().await;
    let cfg = ClientConfig::new("unused:1")
        .with_server_addrs([rb.addr.to_string(), rc.addr.to_string()])
        .with_auth_key(KEY)
        .with_fingerprint(pki.fingerprint.parse().unwrap())
        .with_id("mover")
        .with_proxy(routed("moving", &svc, domains(&["move.test"])));
    let _mover = client(cfg).await;
    let (old, old_relay, new) = if b.snapshot().clients == 1 {
        (&b, &rb, &c)
    } else {
        (&c, &rc, &b)
    };
    until_served(&a, "move.test", "moving").await;

    old_relay.cut();
    let cut = Instant::now();
    eventually(WAIT, "the client moved", || {
        let n = new.snapshot().clients;
        async move { n == 1 }
    })
    .await;
    until_served(&a, "move.test", "moving").await;
    eprintln!(
        "A serves the moved client {:?} after the cut",
        cut.elapsed()
    );
    // The old server no longer serves it; asked through A it is not consulted.
    eventually(WAIT, "the old server let go", || {
        let n = old.snapshot().clients;
        async move { n == 0 }
    })
    .await;
    for _ in 0..5 {
        let got = get(&a, "move.test", "/", &[]).await;
        assert_eq!(which(&got), Some("moving"), "{got}");
    }
}

/// With a static registry: A's cache names B, which no longer has the domain (it answers
/// "not here"); one fresh read names C, which serves it. A fresh read naming A itself serves
/// locally; one still wrong after the retry gets a 502 that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_cache_costs_one_fresh_lookup_and_one_retry() {
    let vhost =
        |c: tunnel_server::ServerConfig| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap());
    let a = cluster_server_with("cvs-a", CLUSTER_KEY, vhost).await;
    let b = cluster_server_with("cvs-b", CLUSTER_KEY, vhost).await;
    let c = cluster_server_with("cvs-c", CLUSTER_KEY, vhost).await;
    let svc = http1_service().await;
    let _on_c = client(
        client_config(&c.server)
            .with_id("cvs-owner")
            .with_proxy(routed("stale", &svc, domains(&["*.stale.test"]))),
    )
    .await;
    a.locator.set_domain_stale(
        "*.stale.test",
        b.owns_domain("*.stale.test", 1, false),
        c.owns_domain("*.stale.test", 2, false),
    );
    b.locator
        .set_domain("*.stale.test", c.owns_domain("*.stale.test", 2, false));
    c.locator
        .set_domain("*.stale.test", c.owns_domain("*.stale.test", 2, true));
    let got = get(&a.server, "x.stale.test", "/", &[]).await;
    assert_eq!(which(&got), Some("stale"), "{got}");
    assert!(
        got.contains(&format!("x-forwarded-for: {USER_IP}\n")),
        "{got}"
    );
    assert_eq!(a.locator.fresh_lookups(), 1);
    // B answered "not here" and never forwarded the request on.
    assert_eq!(logged_count(&["linked to peer", "peer=cvs-c"]), 1);
    assert_eq!(logged_count(&["peer linked", "peer=cvs-b"]), 0);

    // Still wrong after the fresh read: a 502 that says why, after one retry only.
    a.locator.set_domain_stale(
        "*.stale.test",
        b.owns_domain("*.stale.test", 1, false),
        b.owns_domain("*.stale.test", 3, false),
    );
    let got = get(&a.server, "x.stale.test", "/", &[]).await;
    assert_eq!(status_code(&got), "502", "{got}");
    assert!(got.contains("moving between servers; try again"), "{got}");
    assert_eq!(a.locator.fresh_lookups(), 2);

    // The fresh read names A itself (the client moved here): routed locally, and with no
    // local route for it, the plain 404; B is not asked twice.
    a.locator.set_domain_stale(
        "*.gone.test",
        b.owns_domain("*.gone.test", 1, false),
        a.owns_domain("*.gone.test", 2, true),
    );
    let got = get(&a.server, "x.gone.test", "/", &[]).await;
    assert_eq!(status_code(&got), "404", "{got}");
    assert!(got.contains("no tunnel for this host"), "{got}");
    assert_eq!(a.locator.fresh_lookups(), 3);

    // A route of A's own wins before the registry is asked at all, whatever it says.
    let _on_a = client(
        client_config(&a.server)
            .with_id("cvs-home")
            .with_proxy(routed("home", &svc, domains(&["home.stale.test"]))),
    )
    .await;
    a.locator.set_domain(
        "home.stale.test",
        b.owns_domain("home.stale.test", 1, false),
    );
    let got = get(&a.server, "home.stale.test", "/", &[]).await;
    assert_eq!(which(&got), Some("home"), "{got}");
    assert_eq!(a.locator.fresh_lookups(), 3);
}

/// One hop at most: B, named by A's registry but placing the domain on C, answers "not here"
/// and never passes the request on; after one fresh read (naming B again) A gives up with a
/// 502, and the service never sees the request. A request B accepted but cannot route is
/// B's 404, even when B's registry names a server that could.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_is_never_forwarded_again() {
    let vhost =
        |c: tunnel_server::ServerConfig| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap());
    let a = cluster_server_with("cvn-a", CLUSTER_KEY, vhost).await;
    let b = cluster_server_with("cvn-b", CLUSTER_KEY, vhost).await;
    let c = cluster_server_with("cvn-c", CLUSTER_KEY, vhost).await;
    let svc = http1_service().await;
    let _on_c = client(
        client_config(&c.server)
            .with_id("cvn-owner")
            .with_proxy(routed("far", &svc, domains(&["far.test"]))),
    )
    .await;
    // A and B both think B's neighbour has it: B must not pass it on to C.
    a.locator
        .set_domain("far.test", b.owns_domain("far.test", 1, false));
    b.locator
        .set_domain("far.test", c.owns_domain("far.test", 1, false));
    let got = get(&a.server, "far.test", "/", &[]).await;
    assert_eq!(status_code(&got), "502", "{got}");
    assert!(got.contains("moving between servers; try again"), "{got}");
    assert_eq!(a.locator.fresh_lookups(), 1);
    assert_eq!(
        logged_count(&["peer linked", "peer=cvn-b"]),
        0,
        "B dialled C"
    );
    assert_eq!(svc.seen.requests.load(Ordering::SeqCst), 0);

    // B accepts a request for its wildcard, has no location for the path, and its registry
    // places the exact name on C: still served from B's own routes (a 404), never sent on.
    let _on_b = client(
        client_config(&b.server)
            .with_id("cvn-wild")
            .with_proxy(routed("wild", &svc, |h| {
                h.domains = vec!["*.far.test".into()];
                h.locations = vec!["/api".into()];
            })),
    )
    .await;
    let _on_c2 = client(
        client_config(&c.server)
            .with_id("cvn-exact")
            .with_proxy(routed("exact", &svc, domains(&["x.far.test"]))),
    )
    .await;
    a.locator
        .set_domain("*.far.test", b.owns_domain("*.far.test", 1, false));
    b.locator
        .set_domain("*.far.test", b.owns_domain("*.far.test", 1, true));
    b.locator
        .set_domain("x.far.test", c.owns_domain("x.far.test", 1, false));
    c.locator
        .set_domain("x.far.test", c.owns_domain("x.far.test", 1, true));
    let got = get(&a.server, "x.far.test", "/api/v1", &[]).await;
    assert_eq!(which(&got), Some("wild"), "{got}");
    let got = get(&a.server, "x.far.test", "/other", &[]).await;
    assert_eq!(status_code(&got), "404", "{got}");
    assert_eq!(
        logged_count(&["peer linked", "peer=cvn-b"]),
        0,
        "B dialled C"
    );
    assert_eq!(svc.seen.requests.load(Ordering::SeqCst), 1);
}

/// Not a check: p50 of ~1,000 small requests on one keep-alive connection, to the domain's
/// own server and through another one (run with `--ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test"]
async fn measure_vhost_forwarded_vs_local() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let a = member(&etcd, "/cvh-measure/", "a", 1).await;
    let b = member(&etcd, "/cvh-measure/", "b", 2).await;
    let svc = http1_service().await;
    let _c = client(client_config(&b).with_id("measured").with_proxy(routed(
        "m",
        &svc,
        domains(&["m.test"]),
    )))
    .await;
    until_served(&a, "m.test", "m").await;
    let mut report = Vec::new();
    for (label, server) in [
        ("local", &b),
        ("forwarded", &a),
        ("local", &b),
        ("forwarded", &a),
    ] {
        let mut conn = http1_keepalive(server.vhost_addr().unwrap()).await;
        let mut times = Vec::new();
        for i in 0..1_100 {
            let req = http::Request::get("/x")
                .header("host", "m.test")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            conn.ready().await.unwrap();
            let t = Instant::now();
            let resp = conn.send_request(req).await.unwrap();
            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
            let took = t.elapsed();
            assert!(body.is_ok());
            if i >= 100 {
                times.push(took); // the first 100 warm up
            }
        }
        times.sort();
        report.push(format!(
            "{label}: p50 {:?} p90 {:?} p99 {:?} over {} requests",
            times[times.len() / 2],
            times[times.len() * 9 / 10],
            times[times.len() * 99 / 100],
            times.len()
        ));
    }
    println!("{}", report.join("\n"));
}

/// The domain's server cannot be reached, and the registry still names it (or cannot be
/// read): the user gets a 502, not the 404 of a host nobody serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_domain_server_is_a_502_not_a_404() {
    let vhost =
        |c: tunnel_server::ServerConfig| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap());
    let a = cluster_server_with("cvu-a", CLUSTER_KEY, vhost).await;
    let (_closed, port) = refusing_port();
    let dead = tunnel_server::peer::Located {
        name: "dead.test".into(),
        publish_port: 0,
        server_id: "cvu-dead".into(),
        peer_addr: format!("127.0.0.1:{port}"),
        epoch: 1,
        local: false,
        udp: false,
    };
    a.locator.set_domain("dead.test", dead);
    let got = get(&a.server, "dead.test", "/", &[]).await;
    assert_eq!(status_code(&got), "502", "{got}");
    assert!(got.contains("the service is unreachable"), "{got}");
    assert_eq!(a.locator.fresh_lookups(), 1, "one fresh read, one retry");
    // Gone from the registry meanwhile: nobody serves it.
    a.locator.remove_domain("dead.test");
    let got = get(&a.server, "dead.test", "/", &[]).await;
    assert_eq!(status_code(&got), "404", "{got}");
}
