//! A TLS-terminating proxy that stops at TLS 1.2 (nginx 1.22's own default, still common on
//! CDNs and corporate proxies): a `wss` client gets through it; a `tls` client, whose peer
//! must be the tls-tunnel server (TLS 1.3 only), refuses and says what to do instead.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tunnel_client::{ClientConfig, ProxyConfig, Status};
use tunnel_testkit::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_client_gets_through_a_tls12_only_proxy_and_a_tls_client_says_why_not() {
    if !Nginx::available() {
        return;
    }
    capture_logs();
    let server = server_for(TransportKind::Ws).await;
    let ws_bind = server.ws_addr().unwrap();
    let pki = Pki::new("tls12");
    let nginx_port = free_port();
    let nginx = Nginx::tls_front(&pki, nginx_port, "TLSv1.2", ws_bind).await;
    let base = |id: &str, kind: TransportKind| {
        ClientConfig::new(format!("localhost:{nginx_port}"))
            .with_auth_key(KEY)
            .with_transport(kind)
            .with_ca_cert(pki.cert.clone())
            .with_id(id)
    };

    let echo = echo_service().await;
    let port = free_port();
    let _wss = tokio::time::timeout(
        Duration::from_secs(20),
        client(
            base("wss-via-tls12", TransportKind::Wss).with_proxy(ProxyConfig::tcp(
                "echo",
                &echo.to_string(),
                Some(port),
            )),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("wss client did not connect:\n{}", nginx.error_log()));
    let data = random_bytes(1 << 20, 12);
    assert!(roundtrip(published(port), &data).await == data);

    let tls = tunnel_client::start(base("tls-via-tls12", TransportKind::Tls))
        .await
        .unwrap();
    let mut why = String::new();
    eventually(Duration::from_secs(10), "the tls client's refusal", || {
        why = match tls.status() {
            Status::Retrying(why) => why,
            _ => String::new(),
        };
        let done = !why.is_empty();
        async move { done }
    })
    .await;
    assert!(
        why.contains("does not speak TLS 1.3 (it offers TLS 1.2 or older)")
            && why.contains("transport = \"wss\""),
        "{why}"
    );
    assert!(!why.contains("ProtocolVersion"), "{why}");
    // The same words reach the user's log.
    expect_logged(&["WARN", "tls-via-tls12", "TLS 1.2", "transport = \"wss\""]).await;
    assert_eq!(server.snapshot().clients, 1);
}
