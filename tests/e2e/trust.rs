//! A client that does not trust the server refuses to connect and says why.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tunnel_client::ClientConfig;
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

/// A server with a PEM certificate for "localhost"; returns it and the CA file path.
async fn pem_server(tag: &str) -> (ServerHandle, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("tls-tunnel-trust-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) =
        tunnel_transport::generate_self_signed_pem(&["localhost".to_string()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let server = server_with(|c| c.with_tls_files(&cert_path, &key_path)).await;
    (server, cert_path)
}

async fn refusal(cfg: ClientConfig) -> String {
    let mut c = tunnel_client::start(cfg).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), c.ready())
        .await
        .expect("the client neither connected nor gave up")
        .unwrap_err();
    err.to_string()
}

fn base(server: &ServerHandle) -> ClientConfig {
    ClientConfig::new(format!("localhost:{}", server.local_addr().port())).with_auth_key(KEY)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_is_trusted() {
    let (server, ca) = pem_server("ok").await;
    let _c = client(base(&server).with_ca_cert(&ca)).await;
    assert_eq!(server.snapshot().clients, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_name_is_refused() {
    capture_logs();
    let (server, ca) = pem_server("name").await;
    let why = refusal(
        base(&server)
            .with_ca_cert(&ca)
            .with_server_name("wrong.example"),
    )
    .await;
    // In words, with the fix: the names the certificate is for and the one asked for.
    let said = "it is for localhost, not wrong.example: set server_name = \"localhost\"";
    assert!(why.contains(said), "{why}");
    assert!(!why.contains("DnsName"), "{why}");
    expect_logged(&["ERROR", said]).await;
    assert!(!logged_anywhere("DnsName(\""));
    assert_eq!(server.snapshot().clients, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ca_is_refused() {
    let (server, _ca) = pem_server("ca").await;
    let why = refusal(base(&server)).await; // system roots do not know our CA
    assert!(
        why.contains("ca_cert") && why.contains("server_fingerprint"),
        "{why}"
    );
    assert_eq!(server.snapshot().clients, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_mismatch_is_refused_naming_both() {
    let (server, _ca) = pem_server("fp").await;
    let other = tunnel_transport::ServerIdentity::self_signed(&["localhost".to_string()]).unwrap();
    let why = refusal(base(&server).with_fingerprint(other.fingerprint())).await;
    assert!(why.contains(&other.fingerprint().to_string()), "{why}");
    assert!(why.contains(&server.fingerprint().to_string()), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_fingerprint_ignores_the_name() {
    let (server, _ca) = pem_server("pin").await;
    let cfg = ClientConfig::new(server.local_addr().to_string())
        .with_auth_key(KEY)
        .with_fingerprint(server.fingerprint());
    let _c = client(cfg).await;
}
