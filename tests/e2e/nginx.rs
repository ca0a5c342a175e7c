//! The real-world check: nginx in front of the server terminates TLS and forwards the
//! WebSocket upgrade to the server's plain `ws_bind`; a client with `transport = "wss"`
//! dials nginx, and `curl` reaches its proxy. Skipped (with the reason) only where nginx is
//! not installed; `.ci/run` installs it.
#![allow(clippy::unwrap_used)]

use tunnel_client::{ClientConfig, ProxyConfig};
use tunnel_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_client_through_nginx_serves_a_proxy_that_curl_reaches() {
    if !Nginx::available() || !need("curl") {
        return;
    }
    capture_logs();
    let server = server_for(TransportKind::Ws).await;
    let ws_bind = server.ws_addr().unwrap();

    let pki = Pki::new("nginx");
    let nginx_port = free_port();
    // TLS with the scratch certificate; `/tunnel` is proxied, upgrade headers and all, to the
    // server's plain WebSocket listener. (tls-tunnel's own TLS is 1.3 only; nginx before
    // 1.23.4 leaves 1.3 off by default.)
    let nginx = Nginx::tls_front(&pki, nginx_port, "TLSv1.2 TLSv1.3", ws_bind).await;

    let web = http_service("hello through nginx").await;
    let port = free_port();
    let cfg = ClientConfig::new(format!("localhost:{nginx_port}"))
        .with_auth_key(KEY)
        .with_transport(TransportKind::Wss)
        .with_ca_cert(pki.cert.clone())
        .with_id("behind-nginx")
        .with_proxy(ProxyConfig::tcp("web", &web.to_string(), Some(port)));
    let _client = client(cfg).await;
    // The server saw a plain ws client (TLS ended at nginx), with nginx's X-Real-IP, and the
    // client knew to leave channel binding out.
    expect_logged(&["client connected", "behind-nginx", "transport=ws"]).await;
    expect_logged(&["channel binding off", "behind-nginx"]).await;

    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}\nnginx: {}",
        String::from_utf8_lossy(&out.stderr),
        nginx.error_log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through nginx");

    // Bulk data both ways through nginx stays byte-exact.
    let echo = echo_service().await;
    let echo_port = free_port();
    let _echo_client = client(
        ClientConfig::new(format!("localhost:{nginx_port}"))
            .with_auth_key(KEY)
            .with_transport(TransportKind::Wss)
            .with_ca_cert(pki.cert.clone())
            .with_id("echo-behind-nginx")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(echo_port))),
    )
    .await;
    let data = random_bytes(4 << 20, 11);
    assert!(roundtrip(published(echo_port), &data).await == data);
}
