//! End to end: the server's HTTP virtual host (`vhost_http_bind`) routing curl's requests by
//! Host and path to `http` proxies of several clients, with basic auth and error pages.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use tunnel_client::{ClientConfig, ClientHandle, HttpOptions, ProxyConfig};
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

async fn vhost_server() -> ServerHandle {
    server_with(|c| {
        c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())
            .with_subdomain_host("tunnel.test")
    })
    .await
}

/// An `http` proxy without a publish_port whose requests carry `x-which: <name>`, which the
/// test service echoes back, so each answer says which proxy served it.
fn routed(name: &str, svc: &Service, f: impl FnOnce(&mut HttpOptions)) -> ProxyConfig {
    ProxyConfig::http(name, &svc.addr.to_string(), None).with_http(|h| {
        h.request_headers.insert("x-which".into(), name.into());
        f(h);
    })
}

async fn client_as(server: &ServerHandle, id: &str, proxies: Vec<ProxyConfig>) -> ClientHandle {
    let mut cfg = client_config(server).with_id(id);
    for p in proxies {
        cfg = cfg.with_proxy(p);
    }
    client(cfg).await
}

/// `curl -i` to the virtual host with `Host: host`; the whole answer, head included.
async fn get(server: &ServerHandle, host: &str, path: &str, extra: &[&str]) -> String {
    let url = format!("http://{}{path}", server.vhost_addr().unwrap());
    let host = format!("Host: {host}");
    let mut args = vec!["-i", "-H", &host];
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_wildcard_subdomain_and_location_across_two_clients() {
    let server = vhost_server().await;
    let svc = http1_service().await;
    let _alpha = client_as(
        &server,
        "alpha",
        vec![
            routed("app", &svc, |h| h.domains = vec!["app.example.com".into()]),
            routed("dev", &svc, |h| {
                h.domains = vec!["*.dev.example.com".into()]
            }),
            routed("site", &svc, |h| h.domains = vec!["loc.example.com".into()]),
            // A host belongs to one client, whose proxies may split its locations.
            routed("api", &svc, |h| {
                h.domains = vec!["loc.example.com".into()];
                h.locations = vec!["/api".into()];
            }),
        ],
    )
    .await;
    let _beta = client_as(
        &server,
        "beta",
        vec![
            routed("other", &svc, |h| {
                h.domains = vec!["OTHER.example.com".into()]
            }),
            routed("sub", &svc, |h| h.subdomain = Some("sub".into())),
        ],
    )
    .await;
    let cases = [
        ("app.example.com", "/", "app"),
        ("App.Example.com:80", "/x", "app"),
        ("other.example.com", "/", "other"),
        ("x.dev.example.com", "/", "dev"),
        ("a.b.dev.example.com", "/deep", "dev"),
        ("sub.tunnel.test", "/", "sub"),
        ("loc.example.com", "/", "site"),
        ("loc.example.com", "/api", "api"),
        ("loc.example.com", "/api/v1?q=1", "api"),
        ("loc.example.com", "/apix", "site"),
    ];
    for (host, path, want) in cases {
        let got = get(&server, host, path, &[]).await;
        assert_eq!(status_code(&got), "200", "{host}{path}: {got}");
        assert_eq!(which(&got), Some(want), "{host}{path}: {got}");
    }
    // The user's IP is appended once, by the client, to what came in.
    let got = get(
        &server,
        "app.example.com",
        "/",
        &["-H", "X-Forwarded-For: 2.2.2.2"],
    )
    .await;
    assert!(
        got.contains("x-forwarded-for: 2.2.2.2, 127.0.0.1\n"),
        "{got}"
    );
    assert!(got.contains("host: app.example.com\n"), "{got}");

    // One keep-alive connection, two hosts: each request is routed on its own.
    let url = format!("http://{}/", server.vhost_addr().unwrap());
    let both = curl_ok(&[
        "-H",
        "Host: app.example.com",
        &url,
        "--next",
        "-sS",
        "-H",
        "Host: other.example.com",
        &url,
    ])
    .await;
    assert!(
        both.contains("x-which: app") && both.contains("x-which: other"),
        "{both}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_a_plain_404_and_a_taken_domain_is_refused_by_name() {
    let server = vhost_server().await;
    let svc = http1_service().await;
    let mut alpha = client_as(
        &server,
        "alpha",
        vec![routed("app", &svc, |h| {
            h.domains = vec!["app.example.com".into()]
        })],
    )
    .await;
    let got = get(&server, "nobody.example.com", "/", &[]).await;
    assert_eq!(status_code(&got), "404", "{got}");
    assert!(got.contains("no tunnel for this host"), "{got}");
    assert!(
        !got.contains("127.0.0.1") && !got.contains("alpha"),
        "{got}"
    );

    let dup = client_config(&server)
        .with_id("gamma")
        .with_proxy(routed("mine", &svc, |h| {
            h.domains = vec!["app.example.com".into()]
        }));
    let mut gamma = tunnel_client::start(dup).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), gamma.ready())
        .await
        .unwrap()
        .unwrap();
    let err = reply.results[0].error.clone().expect("duplicate accepted");
    // What is taken, not who holds it: no other client's id or address.
    assert!(err.message.contains("app.example.com"), "{err}");
    assert!(
        !err.message.contains("alpha") && !err.message.contains("127.0.0.1"),
        "{err}"
    );
    // The first claim still serves.
    assert_eq!(
        which(&get(&server, "app.example.com", "/", &[]).await),
        Some("app")
    );
    // Its client leaves: the route goes with it, and the host is unknown again.
    alpha.shutdown();
    alpha.join().await.unwrap();
    eventually(Duration::from_secs(10), "the route is released", || async {
        status_code(&get(&server, "app.example.com", "/", &[]).await) == "404"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_vhost_refuses_domains_and_says_what_to_set() {
    let server = server().await;
    let svc = http1_service().await;
    let cfg = client_config(&server).with_proxy(routed("app", &svc, |h| {
        h.domains = vec!["app.example.com".into()]
    }));
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    let err = reply.results[0]
        .error
        .clone()
        .expect("accepted without vhost");
    assert_eq!(err.field, "domains");
    assert!(err.message.contains("vhost_http_bind"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_is_enforced_by_the_server() {
    let server = vhost_server().await;
    let svc = http1_service().await;
    let _c = client_as(
        &server,
        "locked",
        vec![routed("priv", &svc, |h| {
            h.domains = vec!["priv.example.com".into()];
            h.http_user = Some("alice".into());
            h.http_password = Some("s3cret".into());
        })],
    )
    .await;
    for extra in [&[][..], &["-u", "alice:wrong"], &["-u", "bob:s3cret"]] {
        let got = get(&server, "priv.example.com", "/", extra).await;
        assert_eq!(status_code(&got), "401", "{extra:?}: {got}");
        assert!(
            got.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"tls-tunnel\""),
            "{got}"
        );
    }
    assert_eq!(
        svc.seen.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the service"
    );
    let got = get(&server, "priv.example.com", "/", &["-u", "alice:s3cret"]).await;
    assert_eq!(status_code(&got), "200", "{got}");
    assert_eq!(which(&got), Some("priv"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_service_gives_504_and_a_client_gone_mid_request_502() {
    let server = server_with(|c| {
        c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())
            .with_heartbeat(Duration::from_secs(1), Duration::from_secs(3))
    })
    .await;
    let svc = http1_service().await;
    let _slow = client_as(
        &server,
        "slowpoke",
        vec![routed("slow", &svc, |h| {
            h.domains = vec!["slow.example.com".into()];
            h.response_timeout = 1;
        })],
    )
    .await;
    let got = get(&server, "slow.example.com", "/slow", &[]).await;
    assert_eq!(status_code(&got), "504", "{got}");

    // A client whose connection dies while its service is still working on a request.
    let relay = Relay::start(server.local_addr()).await;
    let cfg = ClientConfig::new(relay.addr.to_string())
        .with_auth_key(KEY)
        .with_fingerprint(server.fingerprint())
        .with_id("goner")
        .with_proxy(routed("gone", &svc, |h| {
            h.domains = vec!["gone.example.com".into()]
        }));
    let _goner = client(cfg).await;
    let before = svc.seen.requests.load(Ordering::SeqCst);
    let pending = tokio::spawn({
        let url = format!("http://{}/slow", server.vhost_addr().unwrap());
        async move { curl_ok(&["-i", "-H", "Host: gone.example.com", &url]).await }
    });
    eventually(
        Duration::from_secs(10),
        "the request reaches the service",
        || async { svc.seen.requests.load(Ordering::SeqCst) > before },
    )
    .await;
    relay.cut();
    let got = tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_code(&got), "502", "{got}");
    assert!(!got.contains("127.0.0.1"), "{got}");
    // The client reconnects (same instance): its routes follow it and serve again.
    eventually(
        Duration::from_secs(15),
        "the route serves after the reconnect",
        || async { which(&get(&server, "gone.example.com", "/", &[]).await) == Some("gone") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_through_the_virtual_host_passes_raw_bytes() {
    let server = vhost_server().await;
    let svc = http1_service().await;
    let _c = client_as(
        &server,
        "upgrader",
        vec![routed("ws", &svc, |h| {
            h.domains = vec!["ws.example.com".into()]
        })],
    )
    .await;
    upgrade_echo(server.vhost_addr().unwrap(), "ws.example.com", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_host_traffic_shows_in_the_proxy_stats() {
    let server = vhost_server().await;
    let svc = http1_service().await;
    let _c = client_as(
        &server,
        "metered",
        vec![routed("m-app", &svc, |h| {
            h.domains = vec!["m.example.com".into()]
        })],
    )
    .await;
    let answer = get(&server, "m.example.com", "/count-me", &[]).await;
    assert_eq!(status_code(&answer), "200", "{answer}");
    let stats = server.stats_addr().unwrap();
    let json = curl_ok(&[&format!("http://{stats}/api/stats")]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p = &v["clients"][0]["proxies"][0];
    assert_eq!(p["name"], "m-app");
    assert_eq!(p["connections_public"], 1);
    assert!(p["bytes_in"].as_u64().unwrap() > 20, "{p}");
    assert!(p["bytes_out"].as_u64().unwrap() > 20, "{p}");
}

/// A request the vhost cannot route by one Host is refused with what is wrong, not a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_or_no_host_headers_is_told_what_is_wrong() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = vhost_server().await;
    let ask = |head: &'static str| {
        let addr = server.vhost_addr().unwrap();
        async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            let mut answer = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
                .await
                .expect("the vhost did not answer")
                .unwrap();
            answer
        }
    };
    let two =
        ask("GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n").await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    assert!(two.contains("two Host headers"), "{two}");
    let none = ask("GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        none.starts_with("HTTP/1.0 400") || none.starts_with("HTTP/1.1 400"),
        "{none}"
    );
    assert!(none.contains("no Host header"), "{none}");
}

/// A proxy served only by domains is named by them in the server's log (not "(private)"),
/// and `/api/stats` lists its normalised domains and locations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domains_only_proxy_is_named_by_its_domains_in_logs_and_stats() {
    capture_logs();
    let server = vhost_server().await;
    let svc = http1_service().await;
    let _c = client_as(
        &server,
        "by-domains",
        vec![routed("dom-named", &svc, |h| {
            h.domains = vec!["App.Example.com".into(), "*.dev.example.com".into()];
            h.locations = vec!["/api/".into()];
        })],
    )
    .await;
    expect_logged(&[
        "proxy registered",
        "dom-named (app.example.com, *.dev.example.com)",
    ])
    .await;
    assert!(
        !logged(&["dom-named (private)"]),
        "named private in the log"
    );
    let stats = server.stats_addr().unwrap();
    let json = curl_ok(&[&format!("http://{stats}/api/stats")]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p = &v["clients"][0]["proxies"][0];
    assert_eq!(p["name"], "dom-named", "{p}");
    assert_eq!(
        p["domains"],
        serde_json::json!(["app.example.com", "*.dev.example.com"]),
        "{p}"
    );
    assert_eq!(p["locations"], serde_json::json!(["/api"]), "{p}");
    assert_eq!(p["publish_port"], serde_json::Value::Null, "{p}");
}
