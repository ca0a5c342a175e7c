//! Live reconfiguration as an operator does it: edit the client's file, send SIGHUP.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tunnel_client::ProxyConfig;
use tunnel_testkit::*;

fn client_file(head: &str, proxies: &[(&str, String, u16)]) -> String {
    let mut s = head.to_string();
    for (name, local, port) in proxies {
        s.push_str(&format!(
            "\n[[proxies]]\nname = \"{name}\"\ntype = \"tcp\"\nlocal_addr = \"{local}\"\npublish_port = {port}\n"
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_proxies_without_disturbing_a_running_transfer() {
    let server = server().await;
    let echo = echo_service().await.to_string();
    let (pa, pb) = (free_port(), free_port());
    let pki = Pki::new("reload");
    let file = pki.dir.join("client.toml");
    let log = pki.dir.join("client.log");
    let head = format!(
        "server_addr = \"{}\"\nauth_key = \"{KEY}\"\nserver_fingerprint = \"{}\"\nid = \"reloader\"\n",
        server.local_addr(),
        server.fingerprint()
    );
    std::fs::write(&file, client_file(&head, &[("a", echo.clone(), pa)])).unwrap();
    let client = Proc::spawn(bins::client(), &file, log.clone());
    eventually(Duration::from_secs(10), "proxy a serves", || async {
        is_listening(pa).await
    })
    .await;

    // A long transfer through "a", paced so that it spans both reloads.
    let transfer = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let data = random_bytes(8 << 20, 77);
        let s = tokio::net::TcpStream::connect(published(pa)).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let expect = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(256 * 1024) {
                w.write_all(chunk).await.unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            w.shutdown().await.unwrap();
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        back == expect
    });

    // Add "b".
    std::fs::write(
        &file,
        client_file(&head, &[("a", echo.clone(), pa), ("b", echo.clone(), pb)]),
    )
    .unwrap();
    client.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "proxy b serves after SIGHUP",
        || async { is_listening(pb).await },
    )
    .await;
    let data = random_bytes(50_000, 1);
    assert!(roundtrip(published(pb), &data).await == data);
    assert!(
        !transfer.is_finished(),
        "the transfer should still be running (make it longer)"
    );

    // A broken file changes nothing.
    std::fs::write(&file, "server_addr = [this is not toml").unwrap();
    client.signal("HUP");
    eventually(Duration::from_secs(5), "the refusal is logged", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reload refused")
    })
    .await;
    assert!(roundtrip(published(pb), &data).await == data);
    assert_eq!(server.snapshot().proxies, 2);

    // Remove "b": its port closes, "a" and its transfer go on.
    std::fs::write(&file, client_file(&head, &[("a", echo.clone(), pa)])).unwrap();
    client.signal("HUP");
    eventually(Duration::from_secs(5), "proxy b's port closed", || async {
        !is_listening(pb).await
    })
    .await;
    assert!(
        transfer.await.unwrap(),
        "the transfer through a was corrupted"
    );
    assert!(roundtrip(published(pa), &data).await == data);
    assert_eq!(server.snapshot().clients, 1);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.matches("connected to").count(),
        1,
        "the client reconnected:\n{logged}"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_connection_changes_and_invalid_configs() {
    let server = server().await;
    let echo = echo_service().await.to_string();
    let port = free_port();
    let cfg = client_config(&server).with_proxy(ProxyConfig::tcp("a", &echo, Some(port)));
    let c = client(cfg.clone()).await;

    let mut moved = cfg.clone();
    moved.server_addr = "127.0.0.1:1".into();
    let err = c.reload(moved).await.unwrap_err().to_string();
    assert!(
        err.contains("server_addr") && err.contains("restart"),
        "{err}"
    );

    let dup = cfg
        .clone()
        .with_proxy(ProxyConfig::tcp("a", &echo, Some(free_port())));
    let err = c.reload(dup).await.unwrap_err().to_string();
    assert!(err.contains("duplicate"), "{err}");

    let same = c.reload(cfg).await.unwrap();
    assert!(same.is_empty());
    let data = random_bytes(10_000, 5);
    assert!(roundtrip(published(port), &data).await == data);
}
