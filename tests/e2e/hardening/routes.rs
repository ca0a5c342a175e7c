//! Virtual-host registrations (issue #13 items 1, 2 and the registration half of 15): one huge
//! `Register` must not freeze the server, one client must not take over another's host names
//! or paths, and a refusal names what is taken, never who holds it.
use tunnel_testkit::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig, Status};
use tunnel_proto::{FieldError, RegisterReply};

// ---------------------------------------------------------------------------------------------
// Item 1: one registration of every domain x every location.

/// The server binary under test; `ROUTES_SERVER_BIN` swaps in another build (used to measure
/// the unfixed server for the report).
fn server_bin() -> String {
    std::env::var("ROUTES_SERVER_BIN").unwrap_or_else(|_| bins::server().to_string())
}

/// Start the server binary (see [`server_bin`]) on `port` with a virtual host and a fast
/// heartbeat, so a frozen server drops its clients within the test.
async fn vhost_server_proc(pki: &Pki, tag: &str, port: u16, extra: &str) -> Proc {
    let cfg = pki.write(
        &format!("server-{tag}.toml"),
        &format!(
            "bind = \"127.0.0.1:{port}\"\nauth_key = \"{KEY}\"\ntls_cert = {:?}\n\
             tls_key = {:?}\npublish_addr = \"127.0.0.1\"\nstats_bind = \"\"\n\
             vhost_http_bind = \"127.0.0.1:{}\"\nheartbeat_interval = 1\n\
             heartbeat_timeout = 3\n{extra}\n",
            pki.cert.display().to_string(),
            pki.key.display().to_string(),
            free_port(),
        ),
    );
    let mut p = Proc::spawn(
        &server_bin(),
        &cfg,
        pki.dir.join(format!("server-{tag}.log")),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_listening(port).await {
        assert!(p.is_running(), "the server exited:\n{}", p.log());
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

fn client_of(pki: &Pki, port: u16, id: &str) -> ClientConfig {
    ClientConfig::new(format!("127.0.0.1:{port}"))
        .with_auth_key(KEY)
        .with_fingerprint(pki.fingerprint.parse().unwrap())
        .with_id(id)
        .with_heartbeat_timeout(Duration::from_secs(3))
}

/// `n` short distinct names from `f` (base 36, so they stay short and many fit in a frame).
fn names(n: usize, f: impl Fn(&str) -> String) -> Vec<String> {
    (0..n)
        .map(|mut i| {
            let mut s = Vec::new();
            loop {
                s.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[i % 36]);
                i /= 36;
                if i == 0 {
                    break;
                }
            }
            f(std::str::from_utf8(&s).unwrap())
        })
        .collect()
}

/// The attack size: `ROUTES_ATTACK="D,L"`, or the 2,900 domains x 3,970 locations.
fn attack_size() -> (usize, usize) {
    std::env::var("ROUTES_ATTACK")
        .ok()
        .and_then(|v| {
            let (d, l) = v.split_once(',')?;
            Some((d.trim().parse().ok()?, l.trim().parse().ok()?))
        })
        .unwrap_or((2900, 3970))
}

fn flood_proxy(service: SocketAddr, domains: usize, locations: usize) -> ProxyConfig {
    ProxyConfig::http("flood", &service.to_string(), None).with_http(|h| {
        h.domains = names(domains, |n| format!("{n}.x"));
        h.locations = names(locations, |n| format!("/{n}"));
    })
}

/// Watch a bystander while `attack` runs: its published `port` must serve and its session
/// stay registered the whole time. Returns the attack's outcome and how many checks failed.
async fn while_bystander_serves<T>(
    bystander: &ClientHandle,
    port: u16,
    attack: impl std::future::Future<Output = T>,
) -> (T, usize, usize) {
    let failures = AtomicUsize::new(0);
    let checks = AtomicUsize::new(0);
    let watch = async {
        loop {
            let ok = serves_within(port, Duration::from_secs(2)).await
                && matches!(bystander.status(), Status::Ready(_));
            checks.fetch_add(1, Ordering::SeqCst);
            if !ok {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let out = tokio::select! {
        out = attack => out,
        () = watch => unreachable!(),
    };
    // A little longer: a server busy in the background would show now.
    for _ in 0..5 {
        let ok = serves_within(port, Duration::from_secs(2)).await
            && matches!(bystander.status(), Status::Ready(_));
        checks.fetch_add(1, Ordering::SeqCst);
        if !ok {
            failures.fetch_add(1, Ordering::SeqCst);
        }
    }
    (
        out,
        failures.load(Ordering::SeqCst),
        checks.load(Ordering::SeqCst),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_of_thousands_of_domains_and_locations_is_refused_by_its_caps_at_once() {
    let pki = Pki::new("routes-caps");
    let port = free_port();
    let mut server = vhost_server_proc(&pki, "caps", port, "").await;
    let echo = echo_service().await;
    let svc = http_service("flood").await;
    let by_port = free_port();
    let bystander = client(
        client_of(&pki, port, "bystander").with_proxy(ProxyConfig::tcp(
            "echo",
            &echo.to_string(),
            Some(by_port),
        )),
    )
    .await;
    assert!(serves(by_port).await);

    let (domains, locations) = attack_size();
    let cfg = client_of(&pki, port, "hostile").with_proxy(flood_proxy(svc, domains, locations));
    // It fits one default-size frame: the frame limit alone does not stop it.
    let size = tunnel_proto::encode_to_vec(
        &tunnel_proto::Message::Register(flood_request(domains, locations)),
        tunnel_proto::DEFAULT_MAX_FRAME,
    )
    .expect("the attack fits one default frame")
    .len();

    let (cpu_before, rss_before) = (server.cpu_seconds(), server.rss_kib());
    let started = Instant::now();
    let wait = std::env::var("ROUTES_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let attack = async {
        let mut hostile = tunnel_client::start(cfg).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(wait), hostile.ready()).await;
        (hostile, reply)
    };
    let ((hostile, reply), failures, checks) =
        while_bystander_serves(&bystander, by_port, attack).await;
    let took = started.elapsed();
    let cpu = server.cpu_seconds() - cpu_before;
    let (rss, peak) = (server.rss_kib(), server.peak_rss_kib());
    println!(
        "{domains} domains x {locations} locations ({size} B frame): answered in {} ms; server \
         CPU {cpu:.2} s; RSS {rss_before} -> {rss} KiB (peak {peak} KiB); bystander failed \
         {failures} of {checks} checks",
        took.as_millis()
    );

    let reply = reply.expect("no answer to the registration").unwrap();
    let err = reply.results[0]
        .error
        .clone()
        .expect("the flood was accepted");
    assert_eq!(err.field, "domains", "{err}");
    assert!(err.message.contains("max_domains_per_proxy"), "{err}");
    assert!(!err.message.contains("max_frame_size"), "{err}");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert!(cpu < 1.0, "the server spent {cpu:.2} s of CPU");
    assert!(peak < rss_before + 64 * 1024, "peak RSS {peak} KiB");
    assert_eq!(
        failures, 0,
        "the bystander failed {failures} of {checks} checks"
    );
    assert!(serves(by_port).await);
    server_log_says(&server, &["proxy rejected", "max_domains_per_proxy"]);
    drop(hostile);
    no_panic(&server);
    assert!(server.is_running());
}

/// The request the client engine sends for [`flood_proxy`], as the server decodes it.
fn flood_request(domains: usize, locations: usize) -> tunnel_proto::RegisterRequest {
    serde_json::from_value(serde_json::json!({
        "proxies": [{
            "name": "flood",
            "type": "http",
            "http": {
                "domains": names(domains, |n| format!("{n}.x")),
                "locations": names(locations, |n| format!("/{n}")),
            },
        }],
    }))
    .unwrap()
}

fn server_log_says(server: &Proc, parts: &[&str]) {
    let log = server.log();
    assert!(
        log.lines().any(|l| parts.iter().all(|p| l.contains(p))),
        "no server log line has {parts:?}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_and_routes_per_client_are_capped_with_errors_naming_the_cap() {
    let pki = Pki::new("routes-budget");
    let port = free_port();
    let server = vhost_server_proc(
        &pki,
        "budget",
        port,
        "max_domains_per_proxy = 4\nmax_locations_per_proxy = 3\nmax_routes_per_client = 10",
    )
    .await;
    let svc = http_service("ok").await;
    let proxy = |name: &str, d: usize, l: usize| {
        ProxyConfig::http(name, &svc.to_string(), None).with_http(|h| {
            h.domains = names(d, |n| format!("{n}.{name}.test"));
            h.locations = names(l, |n| format!("/{n}"));
        })
    };
    let cfg = client_of(&pki, port, "greedy")
        .with_proxy(proxy("five", 5, 1)) // over max_domains_per_proxy
        .with_proxy(proxy("four", 1, 4)) // over max_locations_per_proxy
        .with_proxy(proxy("nine", 3, 3)) // 9 routes: fits
        .with_proxy(proxy("two", 2, 1)); // 9 + 2 > max_routes_per_client
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    let error = |name: &str| verdict(&reply, name);
    let five = error("five").expect("5 domains accepted");
    assert!(five.message.contains("max_domains_per_proxy"), "{five}");
    let four = error("four").expect("4 locations accepted");
    assert!(four.message.contains("max_locations_per_proxy"), "{four}");
    assert!(error("nine").is_none());
    let two = error("two").expect("11 routes accepted");
    assert!(two.message.contains("max_routes_per_client"), "{two}");
    no_panic(&server);
}

fn verdict(reply: &RegisterReply, name: &str) -> Option<FieldError> {
    reply
        .results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no verdict for {name}"))
        .error
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_over_the_frame_limit_is_told_to_send_less_not_to_raise_the_limit() {
    let pki = Pki::new("routes-frame");
    let port = free_port();
    let server = vhost_server_proc(&pki, "frame", port, "max_frame_size = 4096").await;
    let echo = echo_service().await;
    let by_port = free_port();
    let bystander = client(
        client_of(&pki, port, "bystander").with_proxy(ProxyConfig::tcp(
            "echo",
            &echo.to_string(),
            Some(by_port),
        )),
    )
    .await;
    let svc = http_service("x").await;
    let cfg = client_of(&pki, port, "oversize").with_proxy(flood_proxy(svc, 600, 600));
    let attack = async {
        let c = tunnel_client::start(cfg).await.unwrap();
        let why = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match c.status() {
                    Status::Retrying(why) | Status::Stopped(why) => return why,
                    Status::Ready(r) => panic!("registered: {r:?}"),
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
        .expect("no verdict on the oversize register");
        c.shutdown();
        why
    };
    let (why, failures, checks) = while_bystander_serves(&bystander, by_port, attack).await;
    assert!(why.contains("too large"), "{why}");
    assert!(!why.contains("raise"), "{why}");
    assert_eq!(
        failures, 0,
        "the bystander failed {failures} of {checks} checks"
    );
    server_log_says(&server, &["over this side's limit", "max_frame_size"]);
    let log = server.log();
    assert!(
        !log.contains("raise"),
        "the server advises raising a limit:\n{log}"
    );
    no_panic(&server);
}

// ---------------------------------------------------------------------------------------------
// Item 2: hosts, paths and wildcards belong to one client; item 15: refusals say what, not who.

/// An HTTP/1.1 service that counts the requests it answers and keeps their heads.
struct Counting {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    heads: Arc<std::sync::Mutex<Vec<String>>>,
}

async fn counting_service(body: &'static str) -> Counting {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (n, seen) = (requests.clone(), heads.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (n, seen) = (n.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                n.fetch_add(1, Ordering::SeqCst);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Counting {
        addr,
        requests,
        heads,
    }
}

/// One request to the virtual host; the whole answer.
async fn get(vhost: SocketAddr, host: &str, path: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(vhost).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .expect("no answer from the virtual host")
        .unwrap();
    answer
}

fn routed(
    name: &str,
    svc: &Counting,
    f: impl FnOnce(&mut tunnel_client::HttpOptions),
) -> ProxyConfig {
    ProxyConfig::http(name, &svc.addr.to_string(), None).with_http(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_client_cannot_take_a_path_wildcard_or_subdomain_over_a_served_host() {
    let server = server_with(|c| {
        c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())
            .with_subdomain_host("tunnel.test")
    })
    .await;
    let vhost = server.vhost_addr().unwrap();
    let (a_svc, b_svc) = (counting_service("A").await, counting_service("B").await);
    let credentials = "Authorization: Basic YWxpY2U6czNjcmV0\r\n"; // alice:s3cret
    let _alpha = client(
        client_config(&server)
            .with_id("alpha-7f3a")
            .with_proxy(routed("app", &a_svc, |h| {
                h.domains = vec!["app.example.com".into()];
                h.http_user = Some("alice".into());
                h.http_password = Some("s3cret".into());
            }))
            .with_proxy(routed("sub", &a_svc, |h| h.subdomain = Some("a".into()))),
    )
    .await;
    let got = get(vhost, "app.example.com", "/api/users", credentials).await;
    assert_eq!(status_code(&got), "200", "{got}");
    assert_eq!(a_svc.requests.load(Ordering::SeqCst), 1);

    let attempts = [
        ("path", "app.example.com", "/api"),
        ("admin", "app.example.com", "/admin/x"),
        ("wild", "*.example.com", "/"),
        ("widest", "*.com", "/"),
        ("under-sub", "x.tunnel.test", "/"),
        ("sub-wild", "*.tunnel.test", "/"),
        ("sub-base", "tunnel.test", "/"),
        ("over-sub", "*.test", "/"),
    ];
    let mut cfg = client_config(&server).with_id("beta-91c2");
    for (name, domain, location) in attempts {
        cfg = cfg.with_proxy(routed(name, &b_svc, |h| {
            h.domains = vec![domain.into()];
            h.locations = vec![location.into()];
        }));
    }
    // Same proxy name as alpha's: the name is taken too, and said so without alpha's id.
    cfg = cfg
        .with_proxy(routed("app", &b_svc, |h| {
            h.domains = vec!["beta.example.org".into()]
        }))
        .with_proxy(routed("own", &b_svc, |h| {
            h.domains = vec!["beta.example.org".into()]
        }));
    let mut beta = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), beta.ready())
        .await
        .unwrap()
        .unwrap();
    for (name, domain, _) in attempts {
        let err = verdict(&reply, name).unwrap_or_else(|| panic!("{name} ({domain}) accepted"));
        assert!(
            !err.message.contains("alpha"),
            "{name}: names the holder: {err}"
        );
        assert!(
            !err.message.contains("127.0.0.1"),
            "{name}: an address: {err}"
        );
        assert!(
            err.message.contains(domain.trim_start_matches("*.")),
            "{name}: {err}"
        );
    }
    assert!(
        verdict(&reply, "path")
            .unwrap()
            .message
            .contains("host app.example.com is served by another client"),
        "{:?}",
        verdict(&reply, "path")
    );
    let name_taken = verdict(&reply, "app").expect("alpha's proxy name accepted");
    assert!(
        name_taken
            .message
            .contains("already registered by another client"),
        "{name_taken}"
    );
    assert!(!name_taken.message.contains("alpha"), "{name_taken}");
    assert!(
        verdict(&reply, "own").is_none(),
        "beta's own domain refused"
    );

    // Alpha's users and their passwords still go to alpha, never to beta.
    for path in ["/api", "/api/users", "/admin/x", "/"] {
        let got = get(vhost, "app.example.com", path, credentials).await;
        assert_eq!(status_code(&got), "200", "{path}: {got}");
        assert!(got.ends_with("A"), "{path}: {got}");
    }
    for (host, want) in [("other.example.com", "404"), ("x.tunnel.test", "404")] {
        let got = get(vhost, host, "/", credentials).await;
        assert_eq!(status_code(&got), want, "{host}: {got}");
    }
    let got = get(vhost, "a.tunnel.test", "/", "").await;
    assert!(got.ends_with('A'), "alpha's subdomain: {got}");
    assert_eq!(a_svc.requests.load(Ordering::SeqCst), 6);
    assert_eq!(
        b_svc.requests.load(Ordering::SeqCst),
        0,
        "beta received: {:?}",
        b_svc.heads.lock().unwrap()
    );
    // Beta's own domain works: the refusals cost it nothing else.
    let got = get(vhost, "beta.example.org", "/", "").await;
    assert!(got.ends_with("B"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_keeps_its_hosts_through_the_hand_over() {
    // Default heartbeat (30 s): the stale session is still there when the client comes back,
    // so its proxies and routes are handed over, owned by the same client id.
    let server = server_with(|c| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())).await;
    let vhost = server.vhost_addr().unwrap();
    let relay = Relay::start(server.local_addr()).await;
    let (a_svc, b_svc) = (counting_service("A").await, counting_service("B").await);
    let alpha = client(
        ClientConfig::new(relay.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(server.fingerprint())
            .with_id("alpha-handover")
            .with_heartbeat_timeout(Duration::from_secs(2))
            .with_proxy(routed("app", &a_svc, |h| {
                h.domains = vec!["app.handover.test".into(), "*.a.handover.test".into()];
            }))
            .with_proxy(routed("api", &a_svc, |h| {
                h.domains = vec!["app.handover.test".into()];
                h.locations = vec!["/api".into()];
            })),
    )
    .await;
    relay.freeze();
    eventually(Duration::from_secs(2), "path frozen", || async {
        relay.frozen() == 1
    })
    .await;
    // Meanwhile another client may not take alpha's names.
    let beta_cfg = client_config(&server)
        .with_id("beta-handover")
        .with_proxy(routed("grab", &b_svc, |h| {
            h.domains = vec!["app.handover.test".into()];
            h.locations = vec!["/grab".into()];
        }))
        .with_proxy(routed("under", &b_svc, |h| {
            h.domains = vec!["x.a.handover.test".into()];
        }));
    let mut beta = tunnel_client::start(beta_cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), beta.ready())
        .await
        .unwrap()
        .unwrap();
    assert!(verdict(&reply, "grab").is_some() && verdict(&reply, "under").is_some());
    let all_ok =
        |s: Status| matches!(s, Status::Ready(r) if r.results.iter().all(|i| i.error.is_none()));
    eventually(
        Duration::from_secs(12),
        "alpha is back, its registration refreshed in full",
        || async { relay.accepted() >= 2 && all_ok(alpha.status()) },
    )
    .await;
    for (host, path) in [
        ("app.handover.test", "/"),
        ("app.handover.test", "/api/x"),
        ("q.a.handover.test", "/"),
    ] {
        let got = get(vhost, host, path, "").await;
        assert!(got.ends_with('A'), "{host}{path}: {got}");
    }
    assert_eq!(b_svc.requests.load(Ordering::SeqCst), 0);
}
