//! Per-client credentials as an operator runs them: a clients file beside the server's
//! config, clients proving their own ids, scopes, SIGHUP revocation and rotation.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tunnel_testkit::*;

const ALPHA_OLD: &str = "alpha's old key 0123456789";
const ALPHA_NEW: &str = "alpha's new key 0123456789";
const BETA: &str = "beta's own key 0123456789ab";

/// A server of `clients` (the clients file's text) beside the shared key, on a free port.
async fn server(pki: &Pki, tag: &str, clients: &str, extra: &str) -> (Proc, String) {
    let file = pki.write(&format!("clients-{tag}.toml"), clients);
    let port = free_port();
    let extra = format!("clients_file = {:?}\n{extra}", file.display().to_string());
    let proc = pki.server(tag, port, &extra).await;
    (proc, format!("127.0.0.1:{port}"))
}

fn alpha_and_beta(alpha_extra: &str) -> String {
    format!(
        "[[clients]]\nid = \"alpha\"\nkeys = [\"{ALPHA_OLD}\", \"{ALPHA_NEW}\"]\n{alpha_extra}\n\n\
         [[clients]]\nid = \"beta\"\nkey = \"{BETA}\"\n"
    )
}

/// Whether `port` starts listening within `within` and then serves an echo round trip.
async fn comes_up(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !is_listening(port).await {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serves(port).await
}

async fn log_shows(p: &Proc, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !p.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "{what:?} not logged within {within:?}:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_proven_by_its_own_key_and_the_shared_key_cannot_pose_as_it() {
    let pki = Pki::new("creds-ids");
    let (_server, addr) = server(&pki, "ids", &alpha_and_beta(""), "").await;
    let echo = echo_service().await;
    let fp = pki.fingerprint.clone();

    // beta's right key, but claiming alpha's id: a wrong key, and the client gives up.
    let mut posing = pki.client_as("posing", &addr, &fp, "alpha", BETA, "");
    posing.exit_within(Duration::from_secs(10)).await;
    assert!(posing.log().contains("auth"), "{}", posing.log());

    // The shared key for a listed id: refused by name.
    let mut shared = pki.client_as("shared", &addr, &fp, "beta", KEY, "");
    shared.exit_within(Duration::from_secs(10)).await;
    assert!(
        shared.log().contains("has its own key on this server"),
        "{}",
        shared.log()
    );

    // Its own key: serves. And the shared key still logs in an unlisted id.
    let port = free_port();
    let _alpha = pki.client_as(
        "alpha",
        &addr,
        &fp,
        "alpha",
        ALPHA_NEW,
        &proxy_toml("a", echo, Some(port)),
    );
    assert!(comes_up(port, Duration::from_secs(10)).await);
    let other = free_port();
    let _gamma = pki.client_as(
        "gamma",
        &addr,
        &fp,
        "gamma",
        KEY,
        &proxy_toml("g", echo, Some(other)),
    );
    assert!(comes_up(other, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_lets_either_key_log_in() {
    let pki = Pki::new("creds-rotation");
    let (_server, addr) = server(&pki, "rot", &alpha_and_beta(""), "").await;
    let echo = echo_service().await;
    for (tag, key) in [("old", ALPHA_OLD), ("new", ALPHA_NEW)] {
        let port = free_port();
        let mut c = pki.client_as(
            tag,
            &addr,
            &pki.fingerprint,
            "alpha",
            key,
            &proxy_toml("a", echo, Some(port)),
        );
        assert!(
            comes_up(port, Duration::from_secs(10)).await,
            "{tag}:\n{}",
            c.log()
        );
        c.sigterm().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_refuses_a_port_a_name_a_domain_and_a_visit() {
    let pki = Pki::new("creds-scope");
    let (inside, outside) = (free_port(), free_port());
    let scope = format!(
        "allow_ports = [\"{inside}\"]\nallow_names = [\"app-*\"]\n\
         allow_domains = [\"*.alpha.test\"]\nallow_visit = [\"shared-*\"]"
    );
    let vhost = free_port();
    let (_server, addr) = server(
        &pki,
        "scope",
        &alpha_and_beta(&scope),
        &format!("vhost_http_bind = \"127.0.0.1:{vhost}\""),
    )
    .await;
    let echo = echo_service().await;
    let fp = pki.fingerprint.clone();
    // beta owns a proxy anyone may visit, registered before alpha's visitor tries it (the
    // client logs one refusal per minute: "proxy not found" would hide the scope's).
    let beta = pki.client_as(
        "beta",
        &addr,
        &fp,
        "beta",
        BETA,
        &format!("{}allow_visitors = [\"*\"]\n", proxy_toml("db", echo, None)),
    );
    log_shows(&beta, "registered", Duration::from_secs(10)).await;
    let visitor_at = visitor_bind();
    let body = format!(
        "{}{}{}\n[[proxies]]\nname = \"app-site\"\ntype = \"http\"\nlocal_addr = \"{echo}\"\n\
         domains = [\"www.beta.test\"]\n\n[[visitors]]\nname = \"to-db\"\nproxy = \"db\"\n\
         bind = \"{visitor_at}\"\n",
        proxy_toml("app-in", echo, Some(inside)),
        proxy_toml("app-out", echo, Some(outside)),
        proxy_toml("web", echo, None),
    );
    let alpha = pki.client_as("alpha", &addr, &fp, "alpha", ALPHA_OLD, &body);
    assert!(
        comes_up(inside, Duration::from_secs(10)).await,
        "{}",
        alpha.log()
    );
    for refusal in ["allow_ports", "allow_names", "allow_domains"] {
        log_shows(&alpha, refusal, Duration::from_secs(5)).await;
    }
    assert!(
        !is_listening(outside).await,
        "a port outside the scope was opened"
    );
    // The visit: the connection is refused, and the client says why.
    eventually(Duration::from_secs(10), "the visitor listens", || async {
        tokio::net::TcpStream::connect(&visitor_at).await.is_ok()
    })
    .await;
    expect_prompt_close(&visitor_at, Duration::from_secs(5)).await;
    log_shows(&alpha, "allow_visit", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_revokes_a_removed_client_within_a_second_and_keeps_the_others() {
    let pki = Pki::new("creds-revoke");
    let (server, addr) = server(&pki, "rev", &alpha_and_beta(""), "log_format = \"json\"").await;
    let echo = echo_service().await;
    let fp = pki.fingerprint.clone();
    let (pa, pb) = (free_port(), free_port());
    let alpha = pki.client_as(
        "alpha",
        &addr,
        &fp,
        "alpha",
        ALPHA_NEW,
        &proxy_toml("a", echo, Some(pa)),
    );
    let _beta = pki.client_as(
        "beta",
        &addr,
        &fp,
        "beta",
        BETA,
        &proxy_toml("b", echo, Some(pb)),
    );
    assert!(comes_up(pa, Duration::from_secs(10)).await);
    assert!(comes_up(pb, Duration::from_secs(10)).await);

    // A broken file first: nothing changes, every problem is logged at its line.
    let clients = pki.dir.join("clients-rev.toml");
    std::fs::write(
        &clients,
        "[[clients]]\nid = \"beta\"\nkey = \"\"\nallow_names = [\"\"]\n",
    )
    .unwrap();
    server.signal("HUP");
    log_shows(
        &server,
        "clients-rev.toml:3:1: clients[0].key",
        Duration::from_secs(5),
    )
    .await;
    log_shows(
        &server,
        "clients-rev.toml:4:1: clients[0].allow_names",
        Duration::from_secs(5),
    )
    .await;
    assert!(serves(pa).await && serves(pb).await);

    // alpha removed: its port closes within a second, beta's keeps serving.
    std::fs::write(
        &clients,
        format!("[[clients]]\nid = \"beta\"\nkey = \"{BETA}\"\n"),
    )
    .unwrap();
    let sent = Instant::now();
    server.signal("HUP");
    eventually(Duration::from_secs(1), "alpha's port closed", || async {
        !is_listening(pa).await
    })
    .await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert!(serves(pb).await, "beta's port was disturbed");
    log_shows(
        &alpha,
        "removed from the server's clients_file",
        Duration::from_secs(5),
    )
    .await;

    // One JSON object per line; the revocation among them with the client and its address.
    let log = server.log();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["target"] == "tunnel_server::audit")
        .collect();
    assert!(
        audit
            .iter()
            .any(|v| v["fields"]["event"] == "login" && v["fields"]["client"] == "beta"),
        "{log}"
    );
    assert!(
        audit.iter().any(|v| v["fields"]["event"] == "revocation"
            && v["fields"]["client"] == "alpha"
            && v["fields"]["addr"] == "127.0.0.1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrowed_scope_withdraws_only_what_it_no_longer_allows() {
    let pki = Pki::new("creds-narrow");
    let (server, addr) = server(&pki, "nar", &alpha_and_beta(""), "").await;
    let echo = echo_service().await;
    let (p1, p2) = (free_port(), free_port());
    let body = format!(
        "{}{}",
        proxy_toml("app-1", echo, Some(p1)),
        proxy_toml("app-2", echo, Some(p2))
    );
    let alpha = pki.client_as("alpha", &addr, &pki.fingerprint, "alpha", ALPHA_OLD, &body);
    assert!(comes_up(p1, Duration::from_secs(10)).await);
    assert!(comes_up(p2, Duration::from_secs(10)).await);
    let clients = pki.dir.join("clients-nar.toml");
    std::fs::write(&clients, alpha_and_beta(&format!("allow_ports = [{p1}]"))).unwrap();
    server.signal("HUP");
    eventually(Duration::from_secs(2), "app-2 withdrawn", || async {
        !is_listening(p2).await
    })
    .await;
    assert!(serves(p1).await, "app-1 is still in scope");
    log_shows(&alpha, "allow_ports", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_each_clients_credential_and_scope() {
    let pki = Pki::new("creds-stats");
    let stats = free_port();
    let (_server, addr) = server(
        &pki,
        "stats",
        &alpha_and_beta("allow_names = [\"app-*\"]\nbandwidth_limit = \"10MiB\""),
        &format!("stats_bind = \"127.0.0.1:{stats}\""),
    )
    .await;
    let echo = echo_service().await;
    let (pa, pg) = (free_port(), free_port());
    let _a = pki.client_as(
        "alpha",
        &addr,
        &pki.fingerprint,
        "alpha",
        ALPHA_OLD,
        &proxy_toml("app-a", echo, Some(pa)),
    );
    let _g = pki.client_as(
        "gamma",
        &addr,
        &pki.fingerprint,
        "gamma",
        KEY,
        &proxy_toml("g", echo, Some(pg)),
    );
    assert!(comes_up(pa, Duration::from_secs(10)).await);
    assert!(comes_up(pg, Duration::from_secs(10)).await);
    let body = curl_ok(&[&format!("http://127.0.0.1:{stats}/api/stats")]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let client = |id: &str| {
        v["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(client("alpha")["credential"], "own_key");
    assert_eq!(client("alpha")["scope"]["allow_names"][0], "app-*");
    assert_eq!(client("alpha")["scope"]["bandwidth_limit"], "10MiB");
    assert_eq!(client("gamma")["credential"], "shared_key");
    assert!(client("gamma").get("scope").is_none());
}

#[test]
fn check_reports_every_problem_of_the_clients_file_at_its_line() {
    let pki = Pki::new("creds-check");
    pki.write(
        "clients.toml",
        "[[clients]]\nid = \"a\"\nkey = \"same key 0123456789\"\n\n\
         [[clients]]\nid = \"a\"\nkey = \"same key 0123456789\"\nmax_streams = 0\n",
    );
    let cfg = pki.write(
        "server.toml",
        &format!(
            "clients_file = {:?}\n",
            pki.dir.join("clients.toml").display().to_string()
        ),
    );
    let out = bins::check(bins::server(), &cfg);
    assert!(!out.success(), "{}", out.stderr);
    for line in [
        "clients.toml:6:1: clients[1].id: duplicate id",
        "clients.toml:7:1: clients[1].key: also the key of clients[0]",
        "clients.toml:8:1: clients[1].max_streams: must be at least 1",
    ] {
        assert!(
            out.stderr.contains(line),
            "{line:?} not in:\n{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_proxies_and_max_streams_hold_one_client_below_the_servers_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new("creds-max");
    let clients = format!(
        "[[clients]]\nid = \"alpha\"\nkey = \"{ALPHA_NEW}\"\nmax_proxies = 1\n\n\
         [[clients]]\nid = \"beta\"\nkey = \"{BETA}\"\nmax_streams = 2\n"
    );
    let (_server, addr) = server(&pki, "max", &clients, "").await;
    let echo = echo_service().await;
    let fp = pki.fingerprint.clone();
    let (p1, p2, pb) = (free_port(), free_port(), free_port());
    let body = format!(
        "{}{}",
        proxy_toml("one", echo, Some(p1)),
        proxy_toml("two", echo, Some(p2))
    );
    let alpha = pki.client_as("alpha", &addr, &fp, "alpha", ALPHA_NEW, &body);
    let _beta = pki.client_as(
        "beta",
        &addr,
        &fp,
        "beta",
        BETA,
        &proxy_toml("b", echo, Some(pb)),
    );
    log_shows(&alpha, "max_proxies", Duration::from_secs(10)).await;
    assert!(!is_listening(p1).await && !is_listening(p2).await);

    // Two streams held open (each proven by an echo), then a third is turned away. The
    // server counts a closed stream off a moment after it closed (the probe's above): until
    // then the second one may be refused, so try again until both are up.
    assert!(comes_up(pb, Duration::from_secs(10)).await);
    async fn echoed_at(port: u16) -> Option<tokio::net::TcpStream> {
        let mut s = tokio::net::TcpStream::connect(published(port)).await.ok()?;
        s.write_all(b"ping").await.ok()?;
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.ok()?;
        Some(s)
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let held = loop {
        let mut held = Vec::new();
        for _ in 0..2 {
            if let Some(s) = echoed_at(pb).await {
                held.push(s);
            }
        }
        if held.len() == 2 {
            break held;
        }
        assert!(Instant::now() < deadline, "two streams never stood at once");
        drop(held);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    expect_prompt_close(&published(pb).to_string(), Duration::from_secs(5)).await;
    drop(held);
    eventually(Duration::from_secs(5), "the port serves again", || async {
        serves(pb).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_of_a_clients_file_alone_has_no_shared_key() {
    let pki = Pki::new("creds-alone");
    let file = pki.write("clients.toml", &alpha_and_beta(""));
    let port = free_port();
    let extra = format!("clients_file = {:?}", file.display().to_string());
    let cfg = pki.write("check.toml", &extra);
    let checked = bins::check(bins::server(), &cfg);
    assert!(checked.success(), "{}", checked.stderr);
    let _server = pki.server_with_key("alone", port, "", &extra).await;
    let addr = format!("127.0.0.1:{port}");
    let echo = echo_service().await;
    // No key is made up: what used to be the shared key is just a wrong key now.
    let mut stranger = pki.client_as("stranger", &addr, &pki.fingerprint, "gamma", KEY, "");
    stranger.exit_within(Duration::from_secs(10)).await;
    assert!(stranger.log().contains("auth"), "{}", stranger.log());
    let pa = free_port();
    let _alpha = pki.client_as(
        "alpha",
        &addr,
        &pki.fingerprint,
        "alpha",
        ALPHA_OLD,
        &proxy_toml("a", echo, Some(pa)),
    );
    assert!(comes_up(pa, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_an_id_ends_its_shared_key_session_and_touches_nobody_else() {
    let pki = Pki::new("creds-listed");
    let (server, addr) = server(&pki, "lst", &alpha_and_beta(""), "").await;
    let echo = echo_service().await;
    let (pg, pa) = (free_port(), free_port());
    let gamma = pki.client_as(
        "gamma",
        &addr,
        &pki.fingerprint,
        "gamma",
        KEY,
        &proxy_toml("g", echo, Some(pg)),
    );
    let _alpha = pki.client_as(
        "alpha",
        &addr,
        &pki.fingerprint,
        "alpha",
        ALPHA_OLD,
        &proxy_toml("a", echo, Some(pa)),
    );
    assert!(comes_up(pg, Duration::from_secs(10)).await);
    assert!(comes_up(pa, Duration::from_secs(10)).await);
    let listed = format!(
        "{}\n[[clients]]\nid = \"gamma\"\nkey = \"gamma's own key 0123456789\"\n",
        alpha_and_beta("")
    );
    std::fs::write(pki.dir.join("clients-lst.toml"), listed).unwrap();
    server.signal("HUP");
    eventually(Duration::from_secs(1), "gamma's port closed", || async {
        !is_listening(pg).await
    })
    .await;
    log_shows(&gamma, "now has its own key", Duration::from_secs(5)).await;
    assert!(serves(pa).await, "alpha was disturbed");
}

/// The end of a rotation: the old key leaves the entry (SIGHUP). A client still on the old
/// key is cut at once and cannot log in with it again; one on the new key is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_old_key_of_a_rotation_cuts_only_the_sessions_that_used_it() {
    let pki = Pki::new("creds-rotation-end");
    let both = "[[clients]]\nid = \"alpha\"\nkeys = [\"OLD\", \"NEW\"]\n\n\
                [[clients]]\nid = \"beta\"\nkeys = [\"BOLD\", \"BNEW\"]\n"
        .replace("BOLD", &format!("{BETA} old"))
        .replace("BNEW", BETA)
        .replace("OLD", ALPHA_OLD)
        .replace("NEW", ALPHA_NEW);
    let (server, addr) = server(&pki, "rotend", &both, "").await;
    let file = pki.dir.join("clients-rotend.toml");
    let echo = echo_service().await;
    let (pa, pb) = (free_port(), free_port());
    let on_old = pki.client_as(
        "alpha",
        &addr,
        &pki.fingerprint,
        "alpha",
        ALPHA_OLD,
        &proxy_toml("a", echo, Some(pa)),
    );
    let _on_new = pki.client_as(
        "beta",
        &addr,
        &pki.fingerprint,
        "beta",
        BETA,
        &proxy_toml("b", echo, Some(pb)),
    );
    assert!(comes_up(pa, Duration::from_secs(10)).await);
    assert!(comes_up(pb, Duration::from_secs(10)).await);

    let after = format!(
        "[[clients]]\nid = \"alpha\"\nkey = \"{ALPHA_NEW}\"\n\n[[clients]]\nid = \"beta\"\nkey = \"{BETA}\"\n"
    );
    std::fs::write(&file, after).unwrap();
    server.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the old key's session is cut",
        || async { !is_listening(pa).await },
    )
    .await;
    // Its next login, with the removed key, is refused as a wrong key: it gives up.
    let mut on_old = on_old;
    let status = on_old.exit_within(Duration::from_secs(15)).await;
    assert!(!status.success(), "{}\n{}", on_old.log(), server.log());
    assert!(!is_listening(pa).await, "the removed key logged in again");
    assert!(serves(pb).await, "a session on a kept key was touched");
}
