//! Mutual TLS as an operator runs it: a server with `client_ca`, clients presenting
//! certificates from it (alone, or beside a key) over tls, h2 and wss, and every way a
//! certificate is refused, with the reason on both sides.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tunnel_testkit::*;

const ALPHA_KEY: &str = "alpha's own key 0123456789";

/// A server of the shared key with `client_ca = ca`, `extra` after it, and a stats port.
async fn server(pki: &Pki, tag: &str, ca: &ClientCa, extra: &str) -> (Proc, String, u16) {
    let (port, stats) = (free_port(), free_port());
    let extra = format!(
        "client_ca = {:?}\nstats_bind = \"127.0.0.1:{stats}\"\n{extra}",
        ca.ca.display().to_string()
    );
    let proc = pki.server(tag, port, &extra).await;
    (proc, format!("127.0.0.1:{port}"), stats)
}

/// A client as `id` (none: the line is left out) over `transport`, with `cert` if given and `key` if given (no key line
/// at all otherwise), publishing an echo service on a fresh port (returned).
#[allow(clippy::too_many_arguments)]
fn client(
    pki: &Pki,
    tag: &str,
    addr: &str,
    transport: &str,
    id: &str,
    cert: Option<&ClientCertFiles>,
    key: Option<&str>,
    echo: std::net::SocketAddr,
) -> (Proc, u16) {
    let port = free_port();
    let cert_lines = cert.map_or_else(String::new, |c| {
        format!(
            "client_cert = {:?}\nclient_key = {:?}\n",
            c.cert.display().to_string(),
            c.key.display().to_string()
        )
    });
    let key_line = key.map_or_else(String::new, |k| format!("auth_key = \"{k}\"\n"));
    let id_line = if id.is_empty() {
        String::new()
    } else {
        format!("id = \"{id}\"\n")
    };
    let cfg = pki.write(
        &format!("client-{tag}.toml"),
        &format!(
            "server_addr = \"{addr}\"\ntransport = \"{transport}\"\n{id_line}\
             server_fingerprint = \"{}\"\n{key_line}{cert_lines}{}\n",
            pki.fingerprint,
            proxy_toml("p", echo, Some(port))
        ),
    );
    let proc = Proc::spawn(
        bins::client(),
        &cfg,
        pki.dir.join(format!("client-{tag}.log")),
    );
    (proc, port)
}

async fn stats_client(stats: u16, id: &str) -> serde_json::Value {
    let body = curl_ok(&[&format!("http://127.0.0.1:{stats}/api/stats")]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in the stats: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_alone_logs_in_over_tls_h2_and_wss() {
    let pki = Pki::new("mtls-alone");
    let ca = ClientCa::new(&pki.dir, "alone");
    let (_server, addr, stats) = server(&pki, "alone", &ca, "require_client_cert = true").await;
    let echo = echo_service().await;
    for transport in ["tls", "h2", "wss"] {
        let id = format!("edge-{transport}");
        let cert = ca.issue(&id);
        let (mut c, port) = client(
            &pki,
            transport,
            &addr,
            transport,
            &id,
            Some(&cert),
            None,
            echo,
        );
        published_by(&c, port, Duration::from_secs(10)).await;
        let seen = stats_client(stats, &id).await;
        assert_eq!(seen["credential"], "certificate", "{seen}");
        let subject = seen["certificate"]["subject"].as_str().unwrap();
        assert!(subject.contains(&id), "{seen}");
        assert!(
            seen["certificate"]["expires_in_days"].as_i64().unwrap() >= 364,
            "{seen}"
        );
        c.sigterm().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_common_name_is_the_id_without_a_dns_name_and_no_id_means_the_certificates() {
    let pki = Pki::new("mtls-cn");
    let ca = ClientCa::new(&pki.dir, "cn");
    let (_server, addr, _stats) = server(&pki, "cn", &ca, "").await;
    let echo = echo_service().await;
    let year = Duration::from_secs(365 * 86_400);
    let cert = ca.issue_with("cn-only", CertName::CommonNameOnly, year);
    let (c, port) = client(&pki, "cn", &addr, "tls", "cn-only", Some(&cert), None, echo);
    published_by(&c, port, Duration::from_secs(10)).await;

    // Without `id`, the client takes its certificate's name.
    let named = ca.issue("named-by-cert");
    let (c, port) = client(&pki, "noid", &addr, "wss", "", Some(&named), None, echo);
    published_by(&c, port, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_client_cert_refuses_a_client_without_one_saying_what_to_set() {
    let pki = Pki::new("mtls-missing");
    let ca = ClientCa::new(&pki.dir, "missing");
    let (server, addr, _) = server(&pki, "missing", &ca, "require_client_cert = true").await;
    let echo = echo_service().await;
    // The shared key is right: only the certificate is missing.
    let (mut c, port) = client(
        &pki,
        "nocert",
        &addr,
        "tls",
        "nocert",
        None,
        Some(KEY),
        echo,
    );
    c.exit_within(Duration::from_secs(10)).await;
    assert!(
        c.log()
            .contains("requires a client certificate: set client_cert and client_key"),
        "{}",
        c.log()
    );
    log_shows(
        &server,
        "client certificate: refused",
        Duration::from_secs(5),
    )
    .await;
    assert!(!is_listening(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_tls() {
    let pki = Pki::new("mtls-other-ca");
    let ca = ClientCa::new(&pki.dir, "ours");
    let theirs = ClientCa::new(&pki.dir, "theirs");
    let (server, addr, _) = server(&pki, "other-ca", &ca, "").await;
    let echo = echo_service().await;
    let cert = theirs.issue("alpha");
    // With the right shared key too: a certificate that fails is never ignored.
    let (c, port) = client(
        &pki,
        "other",
        &addr,
        "wss",
        "alpha",
        Some(&cert),
        Some(KEY),
        echo,
    );
    log_shows(
        &c,
        "the server refused this client's TLS certificate",
        Duration::from_secs(10),
    )
    .await;
    log_shows(
        &server,
        "not issued by a CA of client_ca",
        Duration::from_secs(5),
    )
    .await;
    assert!(!is_listening(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_id_is_refused_on_both_sides() {
    let pki = Pki::new("mtls-other-id");
    let ca = ClientCa::new(&pki.dir, "id");
    let (server, addr, _) = server(&pki, "other-id", &ca, "").await;
    let echo = echo_service().await;
    let cert = ca.issue("alpha");
    let (mut c, port) = client(
        &pki,
        "posing",
        &addr,
        "h2",
        "beta",
        Some(&cert),
        Some(KEY),
        echo,
    );
    c.exit_within(Duration::from_secs(10)).await;
    assert!(
        c.log()
            .contains("certificate is for client id \"alpha\", but it logs in as \"beta\""),
        "{}",
        c.log()
    );
    log_shows(&server, "set id = \\\"alpha\\\"", Duration::from_secs(5)).await;
    assert!(!is_listening(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_and_a_key_must_both_be_right() {
    let pki = Pki::new("mtls-both");
    let ca = ClientCa::new(&pki.dir, "both");
    let clients = pki.write(
        "clients.toml",
        &format!(
            "[[clients]]\nid = \"alpha\"\nkey = \"{ALPHA_KEY}\"\nallow_ports = [\"1-65535\"]\n"
        ),
    );
    let extra = format!("clients_file = {:?}", clients.display().to_string());
    let (_server, addr, stats) = server(&pki, "both", &ca, &extra).await;
    let echo = echo_service().await;
    let cert = ca.issue("alpha");

    // The certificate with a wrong key: refused.
    let wrong = "not alpha's key 0123456789";
    let (mut c, port) = client(
        &pki,
        "wrong",
        &addr,
        "tls",
        "alpha",
        Some(&cert),
        Some(wrong),
        echo,
    );
    c.exit_within(Duration::from_secs(10)).await;
    assert!(c.log().contains("auth"), "{}", c.log());
    assert!(!is_listening(port).await);

    // The certificate alone, for an id that has a key of its own: refused too.
    let (mut c, port) = client(
        &pki,
        "alone",
        &addr,
        "tls",
        "alpha",
        Some(&cert),
        None,
        echo,
    );
    c.exit_within(Duration::from_secs(10)).await;
    assert!(
        c.log()
            .contains("its certificate alone is not enough: set auth_key"),
        "{}",
        c.log()
    );
    assert!(!is_listening(port).await);

    // The certificate and the right key: in, as certificate+key.
    let (c, port) = client(
        &pki,
        "right",
        &addr,
        "wss",
        "alpha",
        Some(&cert),
        Some(ALPHA_KEY),
        echo,
    );
    published_by(&c, port, Duration::from_secs(10)).await;
    let seen = stats_client(stats, "alpha").await;
    assert_eq!(seen["credential"], "certificate+key", "{seen}");
    assert!(seen["scope"].is_object(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_entry_takes_its_certificate_only_and_keeps_its_scope() {
    let pki = Pki::new("mtls-keyless");
    let ca = ClientCa::new(&pki.dir, "keyless");
    let allowed = free_port();
    let clients = pki.write(
        "clients.toml",
        &format!("[[clients]]\nid = \"edge\"\nallow_ports = [\"{allowed}\"]\n"),
    );
    let extra = format!("clients_file = {:?}", clients.display().to_string());
    let (_server, addr, _) = server(&pki, "keyless", &ca, &extra).await;
    let echo = echo_service().await;

    // The shared key cannot pose as a certificate-only id.
    let (mut c, _) = client(&pki, "shared", &addr, "tls", "edge", None, Some(KEY), echo);
    c.exit_within(Duration::from_secs(10)).await;
    assert!(
        c.log().contains("logs in by certificate only"),
        "{}",
        c.log()
    );

    // Its certificate logs it in, and its scope applies: the port outside is refused.
    let cert = ca.issue("edge");
    let (c, outside) = client(&pki, "edge", &addr, "tls", "edge", Some(&cert), None, echo);
    log_shows(&c, "allow_ports", Duration::from_secs(10)).await;
    assert!(!is_listening(outside).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_checks_its_certificate_files_and_warns_before_expiry() {
    let pki = Pki::new("mtls-client-check");
    let ca = ClientCa::new(&pki.dir, "check");
    let soon = ca.issue_with("edge", CertName::San, Duration::from_secs(3 * 86_400));
    let other = ca.issue("other");
    // A key that is not the certificate's: --check names client_key.
    let cfg = pki.write(
        "mismatch.toml",
        &format!(
            "server_addr = \"127.0.0.1:1\"\nid = \"edge\"\nserver_fingerprint = \"{}\"\n\
             client_cert = {:?}\nclient_key = {:?}\n",
            pki.fingerprint,
            soon.cert.display().to_string(),
            other.key.display().to_string()
        ),
    );
    let out = std::process::Command::new(bins::client())
        .arg("--check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("client_key") && text.contains("does not belong"),
        "{text}"
    );

    // A certificate that expires in 3 days: a WARN at start.
    let (_server, addr, _) = server(&pki, "check", &ca, "").await;
    let echo = echo_service().await;
    let (c, port) = client(&pki, "soon", &addr, "tls", "edge", Some(&soon), None, echo);
    published_by(&c, port, Duration::from_secs(10)).await;
    assert!(
        c.log().contains("expires in 2 days") || c.log().contains("expires in 3 days"),
        "{}",
        c.log()
    );
}

/// With a clients file, the file grants access and the certificate only proves the name:
/// removing a certificate client's entry (SIGHUP) closes its port at once, and its
/// certificate alone does not log it in again, while another certificate client keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_certificate_clients_entry_revokes_it() {
    let pki = Pki::new("mtls-revoke");
    let ca = ClientCa::new(&pki.dir, "revoke");
    let listed = |ids: &[&str]| -> String {
        ids.iter()
            .map(|id| format!("[[clients]]\nid = \"{id}\"\n"))
            .collect()
    };
    let clients = pki.write("clients.toml", &listed(&["edge", "keep"]));
    let extra = format!("clients_file = {:?}", clients.display().to_string());
    let (server, addr, _) = server(&pki, "revoke", &ca, &extra).await;
    let echo = echo_service().await;
    let (edge_cert, keep_cert) = (ca.issue("edge"), ca.issue("keep"));
    let (edge, edge_port) = client(
        &pki,
        "edge",
        &addr,
        "tls",
        "edge",
        Some(&edge_cert),
        None,
        echo,
    );
    let (keep, keep_port) = client(
        &pki,
        "keep",
        &addr,
        "tls",
        "keep",
        Some(&keep_cert),
        None,
        echo,
    );
    for port in [edge_port, keep_port] {
        eventually(
            Duration::from_secs(10),
            "both certificate clients serve",
            || serves(port),
        )
        .await;
    }

    std::fs::write(&clients, listed(&["keep"])).unwrap();
    server.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the removed client's port closed",
        || async { !is_listening(edge_port).await },
    )
    .await;
    // It reconnects with its certificate, and is refused by name, not let back in.
    log_shows(
        &edge,
        "is not in the server's clients_file",
        Duration::from_secs(15),
    )
    .await;
    assert!(!is_listening(edge_port).await);
    assert!(
        serves(keep_port).await,
        "the other certificate client was touched:\n{}\n{}",
        server.log(),
        keep.log()
    );
}
