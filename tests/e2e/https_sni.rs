//! End to end: the server's HTTPS virtual host (`vhost_https_bind`) routing TLS by the
//! ClientHello's server name to `https` proxies of several clients, undecrypted: nginx is the
//! local TLS service, with a certificate per site, and curl and rustls see that certificate.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_client::{ClientHandle, ProxyConfig};
use tunnel_proto::proxy_protocol::Version;
use tunnel_server::{ServerConfig, ServerHandle};
use tunnel_testkit::*;

async fn https_server(f: impl FnOnce(ServerConfig) -> ServerConfig) -> ServerHandle {
    server_with(|c| {
        f(c.with_vhost_https_bind("127.0.0.1:0".parse().unwrap())
            .with_vhost_http_bind("127.0.0.1:0".parse().unwrap())
            .with_subdomain_host("tunnel.test"))
    })
    .await
}

async fn client_as(server: &ServerHandle, id: &str, proxies: Vec<ProxyConfig>) -> ClientHandle {
    let mut cfg = client_config(server).with_id(id);
    for p in proxies {
        cfg = cfg.with_proxy(p);
    }
    client(cfg).await
}

/// `curl -v https://name:PORT/` resolved to the virtual host, trusting `ca`: (exit code,
/// body, stderr with the certificate curl saw, seconds taken).
async fn curl_https(server: &ServerHandle, name: &str, ca: &Path) -> (i32, String, String, f64) {
    let port = server.vhost_https_addr().unwrap().port();
    let started = Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-v", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}/"))
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

/// Three TLS sites on one nginx, each with its own certificate from `ca`.
struct Sites {
    ca: ClientCa,
    nginx: Nginx,
    port: u16,
}

async fn sites(pki: &Pki, names: &[&str], proxy_protocol: bool) -> Sites {
    let ca = ClientCa::new(&pki.dir, "web");
    let certs: Vec<_> = names.iter().map(|n| ca.issue_server(n)).collect();
    let list: Vec<_> = names.iter().copied().zip(certs.iter()).collect();
    let port = free_port();
    let nginx = Nginx::https_sites(&pki.dir, port, &list, proxy_protocol).await;
    Sites { ca, nginx, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_serve_their_own_certificates_by_sni_and_unknown_names_get_the_alert() {
    if !Nginx::available() || !need("curl") {
        return;
    }
    let pki = Pki::new("https-sni");
    let web = sites(&pki, &["a.example", "b.example", "x.wild.example"], false).await;
    let local = format!("127.0.0.1:{}", web.port);
    let server = https_server(|c| c).await;
    let _alpha = client_as(
        &server,
        "alpha",
        vec![ProxyConfig::https("site-a", &local, &["a.example"])],
    )
    .await;
    let _beta = client_as(
        &server,
        "beta",
        vec![ProxyConfig::https(
            "site-b",
            &local,
            &["b.example", "*.wild.example"],
        )],
    )
    .await;
    // The same name over plain http belongs to a third client: a namespace of its own.
    let plain = http_service("plain a.example").await;
    let _gamma = client_as(
        &server,
        "gamma",
        vec![ProxyConfig::http("plain-a", &plain.to_string(), None)
            .with_http(|h| h.domains = vec!["a.example".into()])],
    )
    .await;

    for name in ["a.example", "b.example", "x.wild.example"] {
        let (code, body, err, _) = curl_https(&server, name, &web.ca.ca).await;
        assert_eq!(code, 0, "{name}: {err}\nnginx: {}", web.nginx.error_log());
        assert_eq!(body, format!("site {name} pp=\n"));
        // The certificate is the service's own, issued by the test CA, for this name.
        assert!(err.contains(&format!("subject: CN={name}")), "{err}");
        assert!(err.contains("issuer: CN=test client CA web"), "{err}");
    }
    let url = format!("http://{}/", server.vhost_addr().unwrap());
    let plain_answer = curl_ok(&["-H", "Host: a.example", &url]).await;
    assert_eq!(plain_answer, "plain a.example");

    // A name nobody serves: curl fails fast with the alert (35: TLS handshake failed).
    let (code, _, err, secs) = curl_https(&server, "c.example", &web.ca.ca).await;
    assert_eq!(code, 35, "{err}");
    assert!(err.contains("unrecognized name"), "{err}");
    assert!(secs < 2.0, "took {secs} s");
    // rustls names the alert.
    let addr = server.vhost_https_addr().unwrap();
    let e = https_get(addr, "nobody.example", &web.ca.ca, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            tls_error(&e),
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnrecognisedName
            ))
        ),
        "{e:?}"
    );
    // A wildcard does not cover its own base name.
    let (code, _, err, _) = curl_https(&server, "wild.example", &web.ca.ca).await;
    assert_eq!(code, 35, "{err}");

    // Each proxy counted its connections and bytes, like a tcp proxy.
    let stats = stats_json(server.stats_addr().unwrap()).await;
    let proxy = |client: &str| {
        let c = stats["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == client)
            .unwrap()
            .clone();
        c["proxies"][0].clone()
    };
    let b = proxy("beta");
    assert_eq!(b["type"], "https");
    assert_eq!(
        b["domains"],
        serde_json::json!(["b.example", "*.wild.example"])
    );
    assert_eq!(b["connections_public"], 2, "{b}");
    assert!(b["bytes_in"].as_u64().unwrap() > 200, "{b}");
    assert!(b["bytes_out"].as_u64().unwrap() > 500, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_written_byte_by_byte_still_routes() {
    if !Nginx::available() {
        return;
    }
    let pki = Pki::new("https-trickle");
    let web = sites(&pki, &["a.example"], false).await;
    let server = https_server(|c| c).await;
    let local = format!("127.0.0.1:{}", web.port);
    let _alpha = client_as(
        &server,
        "alpha",
        vec![ProxyConfig::https("site-a", &local, &["a.example"])],
    )
    .await;
    let addr = server.vhost_https_addr().unwrap();
    // rustls checks the certificate for a.example against the CA: the right site answered.
    let body = https_get(addr, "a.example", &web.ca.ca, true)
        .await
        .unwrap();
    assert_eq!(body, "site a.example pp=\n");
}

/// A ClientHello cut into many TLS records (and written in several segments) routes, and
/// reaches the service byte for byte: an echo service sends it back unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_split_across_tls_records_routes_byte_exact() {
    let server = https_server(|c| c).await;
    let echo = echo_service().await;
    let _alpha = client_as(
        &server,
        "alpha",
        vec![ProxyConfig::https(
            "site",
            &echo.to_string(),
            &["a.example"],
        )],
    )
    .await;
    let hello = fragmented_client_hello("a.example", 37);
    assert!(hello.len() > 37 * 5, "several records");
    let mut tcp = TcpStream::connect(server.vhost_https_addr().unwrap())
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    for piece in hello.chunks(100) {
        tcp.write_all(piece).await.unwrap();
    }
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert!(
        back == hello,
        "the service got other bytes than the user sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_slow_client_hello_is_closed_after_the_timeouts() {
    let server = https_server(|mut c| {
        c.vhost_first_byte_timeout = 1;
        c.vhost_header_timeout = 1;
        c
    })
    .await;
    let addr = server.vhost_https_addr().unwrap();
    // Nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(4), "silent").await;
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // The start of a ClientHello, then nothing.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&[22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3])
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(4), "half a hello").await;
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // Not TLS at all: closed at once.
    let mut http = TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut http, Duration::from_secs(4), "plain http").await;
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_tells_the_tls_service_the_users_address() {
    if !Nginx::available() || !need("curl") {
        return;
    }
    let pki = Pki::new("https-pp");
    let web = sites(&pki, &["a.example"], true).await;
    let server = https_server(|c| c).await;
    let local = format!("127.0.0.1:{}", web.port);
    for (i, v) in [Version::V1, Version::V2].into_iter().enumerate() {
        let proxy = ProxyConfig::https("site-a", &local, &["a.example"]).with_proxy_protocol(v);
        let mut c = client_as(&server, &format!("pp-{i}"), vec![proxy]).await;
        let (code, body, err, _) = curl_https(&server, "a.example", &web.ca.ca).await;
        assert_eq!(code, 0, "{v:?}: {err}\nnginx: {}", web.nginx.error_log());
        assert_eq!(body, "site a.example pp=127.0.0.1\n", "{v:?}");
        c.shutdown();
        let _ = c.join().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxies_are_refused_with_the_field_to_fix() {
    // No vhost_https_bind on the server.
    let server = server_with(|c| c.with_vhost_http_bind("127.0.0.1:0".parse().unwrap())).await;
    let cfg = client_config(&server)
        .with_id("no-https")
        .with_proxy(ProxyConfig::https("site", "127.0.0.1:1", &["a.example"]));
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    let e = reply.results[0].error.clone().unwrap();
    assert_eq!(e.field, "domains");
    assert!(e.message.contains("vhost_https_bind"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_held_over_https_by_one_client_is_refused_to_another() {
    let server = https_server(|c| c).await;
    let _alpha = client_as(
        &server,
        "alpha",
        vec![ProxyConfig::https("s", "127.0.0.1:1", &["*.wild.example"])],
    )
    .await;
    let cfg = client_config(&server)
        .with_id("beta")
        .with_proxy(ProxyConfig::https("t", "127.0.0.1:1", &["x.wild.example"]));
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .unwrap()
        .unwrap();
    let e = reply.results[0].error.clone().unwrap();
    assert_eq!(e.field, "domains");
    // Named as the user wrote it, without the internal namespace label.
    assert_eq!(
        e.message,
        "x.wild.example falls under *.wild.example, which another client serves; choose \
         another domain"
    );
}

/// In a cluster (a static registry here): a connection reaching server A for a name whose
/// proxy is on B takes one hop over the peer link; B reads the ClientHello again, routes it
/// to its own proxy, and the service sees the user's address in the PROXY header. A name
/// the registry places nowhere gets the alert on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_served_through_another_server_of_the_cluster_is_forwarded_there() {
    if !Nginx::available() || !need("curl") {
        return;
    }
    let pki = Pki::new("https-cluster");
    let web = sites(&pki, &["x.wild.example"], true).await;
    let https = |c: ServerConfig| c.with_vhost_https_bind("127.0.0.1:0".parse().unwrap());
    let a = cluster_server_with("sni-a", CLUSTER_KEY, https).await;
    let b = cluster_server_with("sni-b", CLUSTER_KEY, https).await;
    let local = format!("127.0.0.1:{}", web.port);
    let _on_b = client(client_config(&b.server).with_id("sni-owner").with_proxy(
        ProxyConfig::https("site", &local, &["*.wild.example"]).with_proxy_protocol(Version::V2),
    ))
    .await;
    // https names sit in the registry under their own form (`<name>.-sni`), apart from http.
    let key = "*.wild.example.-sni";
    a.locator.set_domain(key, b.owns_domain(key, 1, false));
    b.locator.set_domain(key, b.owns_domain(key, 1, true));
    let (code, body, err, _) = curl_https(&a.server, "x.wild.example", &web.ca.ca).await;
    assert_eq!(code, 0, "{err}\nnginx: {}", web.nginx.error_log());
    assert_eq!(body, "site x.wild.example pp=127.0.0.1\n");
    assert!(err.contains("subject: CN=x.wild.example"), "{err}");
    // Not registered anywhere: the alert, from A.
    let (code, _, err, secs) = curl_https(&a.server, "nobody.example", &web.ca.ca).await;
    assert_eq!(code, 35, "{err}");
    assert!(secs < 2.0, "took {secs} s");
    // Registered on B by the registry but not served there: B refuses with the alert.
    let gone = "gone.example.-sni";
    a.locator.set_domain(gone, b.owns_domain(gone, 1, false));
    b.locator.set_domain(gone, b.owns_domain(gone, 1, true));
    let (code, _, err, _) = curl_https(&a.server, "gone.example", &web.ca.ca).await;
    assert_eq!(code, 35, "{err}");
    assert!(err.contains("unrecognized name"), "{err}");
}

/// The proxy's `deny_ips` and the virtual host's per-source limit apply, as on the HTTP
/// virtual host and published ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_ips_and_the_per_source_limit_apply() {
    let server = https_server(|c| c).await;
    let echo = echo_service().await;
    let _alpha = client_as(
        &server,
        "alpha",
        vec![
            ProxyConfig::https("site", &echo.to_string(), &["a.example"])
                .with_deny_ips(&["127.0.0.0/8"]),
        ],
    )
    .await;
    let pki = Pki::new("https-deny");
    let ca = ClientCa::new(&pki.dir, "deny");
    // Denied: reset before a stream is opened, no alert, counted for the proxy.
    let addr = server.vhost_https_addr().unwrap();
    let e = https_get(addr, "a.example", &ca.ca, false)
        .await
        .unwrap_err();
    assert!(tls_error(&e).is_none(), "{e:?}");
    let stats = stats_json(server.stats_addr().unwrap()).await;
    assert_eq!(stats["clients"][0]["proxies"][0]["denied_connections"], 1);

    // One connection per source: while a silent first one is held, others are closed at
    // accept.
    let limited = https_server(|c| c.with_vhost_max_conns(100, 1)).await;
    let addr = limited.vhost_https_addr().unwrap();
    let _first = TcpStream::connect(addr).await.unwrap();
    eventually(
        Duration::from_secs(4),
        "a second connection closed at once",
        || async {
            let mut second = TcpStream::connect(addr).await.unwrap();
            let mut b = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_millis(500), second.read(&mut b)).await;
            matches!(read, Ok(Ok(0) | Err(_)))
        },
    )
    .await;
    let metrics = stats_get(limited.stats_addr().unwrap(), "/metrics", &[]).await;
    let refused = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("tunnel_vhost_https_connections_refused_total "))
        .unwrap_or_else(|| panic!("{}", metrics.body));
    assert_ne!(refused, "0");
}

/// SIGHUP on the client binary moves an `https` proxy to other names like any other change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_the_names_of_an_https_proxy() {
    if !Nginx::available() || !need("curl") {
        return;
    }
    let pki = Pki::new("https-reload");
    let web = sites(&pki, &["a.example", "b.example"], false).await;
    let server = https_server(|c| c).await;
    let file = pki.dir.join("client.toml");
    let config = |domain: &str| {
        format!(
            "server_addr = \"{}\"\nauth_key = \"{KEY}\"\nserver_fingerprint = \"{}\"\n\
             id = \"reloader\"\n\n[[proxies]]\nname = \"site\"\ntype = \"https\"\n\
             local_addr = \"127.0.0.1:{}\"\ndomains = [\"{domain}\"]\n",
            server.local_addr(),
            server.fingerprint(),
            web.port
        )
    };
    std::fs::write(&file, config("a.example")).unwrap();
    let client = Proc::spawn(bins::client(), &file, pki.dir.join("client.log"));
    eventually(Duration::from_secs(10), "a.example served", || async {
        curl_https(&server, "a.example", &web.ca.ca).await.0 == 0
    })
    .await;
    std::fs::write(&file, config("b.example")).unwrap();
    client.signal("HUP");
    eventually(
        Duration::from_secs(10),
        "b.example served after SIGHUP",
        || async { curl_https(&server, "b.example", &web.ca.ca).await.0 == 0 },
    )
    .await;
    let (code, body, err, _) = curl_https(&server, "b.example", &web.ca.ca).await;
    assert_eq!((code, body.as_str()), (0, "site b.example pp=\n"), "{err}");
    let (code, _, err, _) = curl_https(&server, "a.example", &web.ca.ca).await;
    assert_eq!(code, 35, "a.example is no longer served: {err}");
    no_panic(&client);
}

/// With the etcd registry: an https name registered through server B answers on server A,
/// and the same name over http on A belongs to another client without a conflict (the two
/// namespaces stay apart in the registry too).
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_an_https_name_on_b_answers_on_a() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    if !Nginx::available() || !need("curl") {
        return;
    }
    let pki = Pki::new("https-etcd");
    let web = sites(&pki, &["x.wild.example"], true).await;
    let https = |ip: u8| {
        move |c: ServerConfig| c.with_vhost_https_bind(std::net::SocketAddr::new(loopback(ip), 0))
    };
    let a = etcd_member(&etcd, "/sni-etcd/", "a", 1, https(1)).await;
    let b = etcd_member(&etcd, "/sni-etcd/", "b", 2, https(2)).await;
    let local = format!("127.0.0.1:{}", web.port);
    let _on_b = client(client_config(&b).with_id("on-b").with_proxy(
        ProxyConfig::https("site", &local, &["x.wild.example"]).with_proxy_protocol(Version::V2),
    ))
    .await;
    // The very same name, over http, on the other server.
    let plain = http_service("plain x.wild.example").await;
    let _on_a = client(
        client_config(&a).with_id("on-a").with_proxy(
            ProxyConfig::http("plain", &plain.to_string(), None)
                .with_http(|h| h.domains = vec!["x.wild.example".into()]),
        ),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "x.wild.example served on A",
        || async { curl_https(&a, "x.wild.example", &web.ca.ca).await.0 == 0 },
    )
    .await;
    let (code, body, err, _) = curl_https(&a, "x.wild.example", &web.ca.ca).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, "site x.wild.example pp=127.0.0.1\n");
    let url = format!("http://{}/", a.vhost_addr().unwrap());
    let answer = curl_ok(&["-H", "Host: x.wild.example", &url]).await;
    assert_eq!(answer, "plain x.wild.example");
}
