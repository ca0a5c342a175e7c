//! End to end: SIGHUP makes a running `tunnel-server` read its config file again. Narrower
//! rules take back what they no longer allow (telling that client why) and touch nothing
//! else; a broken file keeps the running rules.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_testkit::*;

const BETA: &str = "beta's own key 0123456789ab";

/// Replace `from` by `to` in the config file of the server started as `tag`.
fn edit(pki: &Pki, tag: &str, from: &str, to: &str) {
    let path = pki.dir.join(format!("server-{tag}.toml"));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

/// SIGHUP to `server`, then wait until it has logged `what` once more than before.
async fn hup_and_see(server: &Proc, what: &str) {
    let before = server.log().matches(what).count();
    server.signal("HUP");
    eventually(Duration::from_secs(5), what, || async {
        server.log().matches(what).count() > before
    })
    .await;
}

/// A connection from `from` to the echo behind `to`, one round trip done.
async fn echoing_from(from: std::net::IpAddr, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut s = connect_from(from, to).await.unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    s.read_exact(&mut four).await.unwrap();
    s
}

fn with_id(id: &str, proxy: String) -> String {
    format!("id = \"{id}\"\n{proxy}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_allow_ports_withdraws_that_proxy_at_once_and_widening_lets_it_back() {
    let pki = Pki::new("reload-ports");
    let port = free_port();
    let (pa, pb) = (free_port(), free_port());
    let allow = format!("allow_ports = [\"{pa}\", \"{pb}\"]");
    let server = pki.server("ports", port, &allow).await;
    let addr = format!("127.0.0.1:{port}");
    let fp = pki.fingerprint.clone();
    let echo = echo_service().await;
    let alpha = pki.client(
        "alpha",
        &addr,
        &fp,
        &with_id("alpha", proxy_toml("a", echo, Some(pa))),
    );
    let beta = pki.client(
        "beta",
        &addr,
        &fp,
        &with_id("beta", proxy_toml("b", echo, Some(pb))),
    );
    published_by(&alpha, pa, Duration::from_secs(10)).await;
    published_by(&beta, pb, Duration::from_secs(10)).await;

    edit(&pki, "ports", &allow, &format!("allow_ports = [\"{pb}\"]"));
    let sent = Instant::now();
    server.signal("HUP");
    eventually(Duration::from_secs(1), "alpha's port closed", || async {
        !is_listening(pa).await
    })
    .await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    assert!(serves(pb).await, "beta's proxy was disturbed");
    let reason = format!("port {pa} is no longer allowed by this server (allow_ports: {pb})");
    log_shows(&alpha, &reason, Duration::from_secs(5)).await;
    log_shows(&server, "allow_ports applied", Duration::from_secs(5)).await;
    log_shows(&server, "proxy a withdrawn", Duration::from_secs(5)).await;
    assert!(
        alpha.log().matches("connected to ").count() <= 1,
        "alpha's session stays"
    );

    // Widened again: the port may be published again (by a client that asks for it).
    edit(&pki, "ports", &format!("allow_ports = [\"{pb}\"]"), &allow);
    hup_and_see(&server, "allow_ports applied").await;
    let gamma = pki.client(
        "gamma",
        &addr,
        &fp,
        &with_id("gamma", proxy_toml("g", echo, Some(pa))),
    );
    published_by(&gamma, pa, Duration::from_secs(10)).await;
    assert!(serves(pb).await);
    no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denying_a_network_refuses_it_and_a_broken_file_keeps_the_running_rules() {
    let pki = Pki::new("reload-deny");
    let port = free_port();
    let server = pki.server("deny", port, "").await;
    let addr = format!("127.0.0.1:{port}");
    let echo = echo_service().await;
    let p = free_port();
    let c = pki.client(
        "c",
        &addr,
        &pki.fingerprint,
        &proxy_toml("e", echo, Some(p)),
    );
    published_by(&c, p, Duration::from_secs(10)).await;
    let to = published(p);
    assert!(served_from(loopback(7), to).await);
    // Open across the reload: one from the network about to be denied, one from elsewhere.
    let mut open7 = echoing_from(loopback(7), to).await;
    let mut open1 = echoing_from(loopback(1), to).await;

    // A live rule and one that needs a restart, at once.
    let file = pki.dir.join("server-deny.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let denied = format!("{text}deny_ips = [\"127.0.0.7\"]\nmax_clients = 50\n");
    std::fs::write(&file, &denied).unwrap();
    hup_and_see(&server, "deny_ips applied").await;
    closed_within(
        &mut open7,
        Duration::from_secs(1),
        "the open connection from 127.0.0.7",
    )
    .await;
    open1.write_all(b"ping").await.unwrap();
    let mut four = [0u8; 4];
    open1.read_exact(&mut four).await.unwrap();
    assert_eq!(
        &four, b"ping",
        "the connection from 127.0.0.1 was disturbed"
    );
    assert!(
        !served_from(loopback(7), to).await,
        "127.0.0.7 is denied now"
    );
    assert!(served_from(loopback(1), to).await, "127.0.0.1 is not");
    log_shows(
        &server,
        "max_clients changed but need a restart",
        Duration::from_secs(5),
    )
    .await;

    // Broken: a bad network and a zero cap. Both are logged, nothing changes.
    let broken = denied.replace("127.0.0.7\"]", "127.0.0.0/99\"]") + "max_streams_per_client = 0\n";
    std::fs::write(&file, broken).unwrap();
    hup_and_see(&server, "the config was not reloaded").await;
    log_shows(&server, "(2 problems)", Duration::from_secs(5)).await;
    log_shows(&server, "\"127.0.0.0/99\"", Duration::from_secs(5)).await;
    log_shows(&server, "max_streams_per_client", Duration::from_secs(5)).await;
    assert!(
        !served_from(loopback(7), to).await,
        "the running deny stays"
    );
    assert!(served_from(loopback(1), to).await);

    // An unknown key, and a TOML syntax error, each named at its line.
    for bad in ["no_such_key = 1\n", "[[[\n"] {
        std::fs::write(&file, format!("{denied}{bad}")).unwrap();
        hup_and_see(&server, "the config was not reloaded").await;
        log_shows(&server, "server-deny.toml:10:", Duration::from_secs(5)).await;
        assert!(!served_from(loopback(7), to).await);
        assert!(served_from(loopback(1), to).await);
    }
    log_shows(&server, "no_such_key", Duration::from_secs(5)).await;
    log_shows(&server, "TOML syntax", Duration::from_secs(5)).await;
    assert!(
        c.log().matches("connected to ").count() <= 1,
        "the client was not disturbed"
    );
    no_panic(&server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_auth_key_ends_the_shared_key_sessions_and_not_the_own_key_ones() {
    let pki = Pki::new("reload-key");
    let clients = pki.write(
        "clients.toml",
        &format!("[[clients]]\nid = \"beta\"\nkey = \"{BETA}\"\n"),
    );
    let port = free_port();
    let extra = format!("clients_file = {:?}", clients.display().to_string());
    let server = pki.server("key", port, &extra).await;
    let addr = format!("127.0.0.1:{port}");
    let fp = pki.fingerprint.clone();
    let echo = echo_service().await;
    let (ps, pb) = (free_port(), free_port());
    let mut shared = pki.client(
        "shared",
        &addr,
        &fp,
        &with_id("plain", proxy_toml("s", echo, Some(ps))),
    );
    let beta = pki.client_as(
        "beta",
        &addr,
        &fp,
        "beta",
        BETA,
        &proxy_toml("b", echo, Some(pb)),
    );
    published_by(&shared, ps, Duration::from_secs(10)).await;
    published_by(&beta, pb, Duration::from_secs(10)).await;

    edit(
        &pki,
        "key",
        &format!("auth_key = \"{KEY}\""),
        "auth_key = \"the new shared key 0123456789\"",
    );
    let sent = Instant::now();
    server.signal("HUP");
    eventually(
        Duration::from_secs(1),
        "the shared-key port closed",
        || async { !is_listening(ps).await },
    )
    .await;
    assert!(sent.elapsed() < Duration::from_secs(1));
    log_shows(
        &shared,
        "the server's shared auth_key changed",
        Duration::from_secs(5),
    )
    .await;
    // Its retries with the old key would be wrong keys from this address: stop it.
    shared.kill9();
    assert!(serves(pb).await, "the own-key client was disturbed");
    log_shows(&server, "auth_key applied", Duration::from_secs(5)).await;
    assert!(
        beta.log().matches("connected to ").count() <= 1,
        "beta kept its session:\n{}",
        beta.log()
    );
    no_panic(&server);
}
