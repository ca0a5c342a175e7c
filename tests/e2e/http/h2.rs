//! `type = "http2"`: one h2c connection to the service carries every user's requests.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_service_gets_every_request_over_one_connection_concurrently() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let svc = h2c_service().await;
    let port = free_port();
    let _c = http_proxy(
        &server,
        ProxyConfig::http2("h2", &svc.addr.to_string(), Some(port)),
    )
    .await;
    let url = format!("http://127.0.0.1:{port}/slow-ok");
    let users: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut args = vec!["--parallel", "--parallel-immediate", "--parallel-max", "10"];
                // Users may speak HTTP/2 or HTTP/1.1 to the proxy.
                args.push(if i == 0 {
                    "--http1.1"
                } else {
                    "--http2-prior-knowledge"
                });
                args.extend(std::iter::repeat_n(url.as_str(), 10));
                let out = curl_ok(&args).await;
                assert_eq!(out.matches("ok").count(), 10, "{out}");
            })
        })
        .collect();
    for u in users {
        u.await.unwrap();
    }
    assert_eq!(svc.seen.requests.load(Ordering::SeqCst), 30);
    assert_eq!(svc.seen.connections.load(Ordering::SeqCst), 1);
    let max = svc.seen.max_in_flight.load(Ordering::SeqCst);
    assert!(
        max > 1,
        "requests were not concurrent (max in flight {max})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_call_keeps_its_trailers() {
    let server = server().await;
    let svc = h2c_service().await;
    let port = free_port();
    let _c = http_proxy(
        &server,
        ProxyConfig::http2("grpc", &svc.addr.to_string(), Some(port)),
    )
    .await;
    let tcp = TcpStream::connect(published(port)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://127.0.0.1:{port}/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers were lost");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"reply-to:ping"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "all-good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_tls_speaks_h2_over_tls_and_checks_the_certificate() {
    if !need("curl") {
        return;
    }
    let server = server().await;
    let (svc, cert) = h2_tls_service().await;
    let dir = std::env::temp_dir().join(format!(
        "tt-localtls-{}-{}",
        std::process::id(),
        svc.addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert).unwrap();

    // Trusted by its CA: requests go through, over one TLS connection.
    let port = free_port();
    let mut cfg = ProxyConfig::http2("tls-h2", &svc.addr.to_string(), Some(port));
    cfg.http.local_tls = true;
    cfg.http.local_ca_cert = Some(ca.clone());
    let _c = http_proxy(&server, cfg).await;
    let url = format!("http://127.0.0.1:{port}/hello");
    for _ in 0..3 {
        let out = curl_ok(&["--http1.1", &url]).await;
        assert!(out.starts_with("GET "), "{out}");
    }
    assert_eq!(svc.seen.connections.load(Ordering::SeqCst), 1);

    // Not trusted (system roots do not know the self-signed certificate): 502, not a hang.
    let port2 = free_port();
    let mut bad = ProxyConfig::http2("tls-h2-untrusted", &svc.addr.to_string(), Some(port2));
    bad.http.local_tls = true;
    let _c2 = http_proxy(&server, bad).await;
    let (_, out, _) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://127.0.0.1:{port2}/"),
    ])
    .await;
    let code = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(
        code.trim(),
        "502",
        "an untrusted local certificate must give 502"
    );
    let _ = std::fs::remove_dir_all(dir);
}
