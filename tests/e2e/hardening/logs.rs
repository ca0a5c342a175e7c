//! What a peer can make the other side log or learn: forged log lines, floods of warnings,
//! other clients' addresses, and who may hold a client id (issue #13, items 9, 14 and 15).

use tunnel_testkit::*;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tunnel_client::{ClientHandle, ProxyConfig, Status, VisitorConfig};
use tunnel_proto::{Message, StreamOpen, StreamStatus};
use tunnel_server::ServerHandle;
use tunnel_transport::{read_message, write_message};

const SECRET: &str = "logs-visitor-secret-7d1e";
const MAX: usize = tunnel_proto::DEFAULT_MAX_FRAME;

/// A hand-written client with the shared key that registers `proxy` (open to visitors with
/// [`SECRET`]) and answers every connection to it with `reason` as its error. It lives as
/// long as the returned task.
async fn hostile_owner(
    server: &ServerHandle,
    id: &str,
    proxy: &str,
    reason: &'static str,
) -> tokio::task::JoinHandle<()> {
    use tunnel_proto::{auth, AuthResponse, Hello};
    use tunnel_transport::{ClientTrust, TlsTransport, Transport};
    let trust = ClientTrust::Fingerprint(server.fingerprint());
    let tls = TlsTransport::client("localhost", &trust).unwrap();
    let est = tls.connect(&server.local_addr().to_string()).await.unwrap();
    let mut s = est.stream;
    let hello = Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: id.into(),
        instance: [9; 16],
    };
    write_message(&mut s, &Message::Hello(hello.clone()), MAX)
        .await
        .unwrap();
    let Some(Message::Challenge(c)) = read_message(&mut s, MAX).await.unwrap() else {
        panic!("no challenge");
    };
    let mac = auth::compute_mac(KEY.as_bytes(), &c.nonce, &est.binding.unwrap(), &hello);
    write_message(&mut s, &Message::AuthResponse(AuthResponse { mac }), MAX)
        .await
        .unwrap();
    let Some(Message::Welcome(_)) = read_message(&mut s, MAX).await.unwrap() else {
        panic!("not welcomed");
    };
    let mux = tunnel_mux::MuxConfig::default();
    let (control, mut incoming) = tunnel_mux::start(s, tunnel_mux::Mode::Client, &mux);
    let mut ctrl = control.open().await.unwrap();
    let open = Message::StreamOpen(StreamOpen::Control);
    write_message(&mut ctrl, &open, MAX).await.unwrap();
    let status = read_message(&mut ctrl, MAX).await.unwrap();
    assert!(matches!(
        status,
        Some(Message::StreamStatus(StreamStatus::Ok))
    ));
    let heartbeat = tunnel_mux::Heartbeat {
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(60),
    };
    let mut channel =
        tunnel_mux::spawn_control(ctrl, tunnel_mux::AbortTable::default(), heartbeat, MAX);
    let req = serde_json::from_value(serde_json::json!({
        "proxies": [{ "name": proxy, "type": "tcp", "secret": SECRET }],
    }))
    .unwrap();
    channel.sender.send(Message::Register(req)).await.unwrap();
    match channel.inbox.recv().await {
        Some(Message::RegisterReply(r)) => {
            assert!(r.results.iter().all(|r| r.error.is_none()), "{r:?}");
        }
        other => panic!("no registration verdict: {other:?}"),
    }
    tokio::spawn(async move {
        let _alive = (control, channel);
        while let Some(mut s) = incoming.accept().await {
            tokio::spawn(async move {
                let _ = read_message(&mut s, MAX).await;
                let no = Message::StreamStatus(StreamStatus::Error(reason.into()));
                let _ = write_message(&mut s, &no, MAX).await;
                let _ = s.shutdown().await;
            });
        }
    })
}

/// A client that publishes an echo service, to show the server keeps serving others.
async fn bystander(server: &ServerHandle, id: &str) -> (ClientHandle, u16) {
    let echo = echo_service().await.to_string();
    let port = free_port();
    let cfg = client_config(server)
        .with_id(id)
        .with_proxy(ProxyConfig::tcp(&format!("{id}-web"), &echo, Some(port)));
    (client(cfg).await, port)
}

/// A client visiting `proxy` with [`SECRET`]; returns it and its local address.
async fn visiting(
    server: &ServerHandle,
    id: &str,
    name: &str,
    proxy: &str,
) -> (ClientHandle, String) {
    let bind = visitor_bind();
    let v = VisitorConfig::new(name, proxy, 0, &bind).with_secret(SECRET);
    let c = client(client_config(server).with_id(id).with_visitor(v)).await;
    (c, bind)
}

/// A connection through a visitor, refused: it closes without a byte.
async fn refused_visit(bind: &str) {
    let mut s = TcpStream::connect(bind).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(matches!(r, Ok(Ok(0) | Err(_))), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// Item 14: a peer's words in our log.

const FORGED: &str =
    "no\n2026-11-30T04:00:00.000000Z ERROR tunnel_server: forged-by-peer \u{1b}[2J\u{202e}gnp.exe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_error_text_cannot_forge_log_lines_on_the_server_or_the_visiting_client() {
    capture_logs();
    let server = server().await;
    let _owner = hostile_owner(&server, "forger", "forged-svc", FORGED).await;
    let (_bystander, port) = bystander(&server, "forge-bystander").await;
    let (_visitor, bind) = visiting(&server, "forge-visitor", "fv", "forged-svc").await;

    refused_visit(&bind).await;
    // The server relays the owner's reason to the visitor and logs it; the visiting client
    // logs it too. Both show it escaped, on the line that says whose words they are.
    expect_logged(&[
        "visitor connection failed: no\\n2026-11-30",
        "forged-by-peer",
    ])
    .await;
    expect_logged(&[
        "visitor{name=fv}",
        "refused: no\\n2026-11-30",
        "forged-by-peer",
    ])
    .await;
    expect_logged(&["forged-by-peer", "\\u{202e}gnp.exe"]).await;
    // No line of its own: every line holding the text also holds the escaped newline before it.
    assert_eq!(
        logged_count(&["forged-by-peer"]),
        logged_count(&["\\n2026-11-30", "forged-by-peer"]),
        "a peer's newline started a log line of its own"
    );
    assert!(
        !logged_anywhere("\u{1b}"),
        "a raw escape sequence reached the log"
    );
    assert!(
        !logged_anywhere("\u{202e}"),
        "a raw bidi override reached the log"
    );
    assert!(serves(port).await, "the bystander stopped being served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_refused_connections_logs_one_warning_per_window_with_a_count() {
    const BURST: usize = 500;
    const REASON: &str = "connection failed: refused by burst-owner";
    capture_logs();
    let server = server().await;
    let _owner = hostile_owner(&server, "burst-owner", "burst-svc", REASON).await;
    let (_bystander, port) = bystander(&server, "burst-bystander").await;
    let (_visitor, bind) = visiting(&server, "burst-visitor", "bv", "burst-svc").await;

    for _ in 0..BURST / 50 {
        let wave: Vec<_> = (0..50)
            .map(|_| {
                let bind = bind.clone();
                tokio::spawn(async move { refused_visit(&bind).await })
            })
            .collect();
        for w in wave {
            w.await.unwrap();
        }
    }
    assert!(serves(port).await, "the bystander stopped being served");
    let refused = ["visitor{name=bv}", "refused by burst-owner"];
    let lines = logged_count(&refused);
    println!("{BURST} refused visitor connections: {lines} WARN line(s) on the visiting client");
    assert!(lines <= 2, "{lines} warnings for {BURST} refusals");

    // After the window, the next refusal is logged with the count of those left out.
    tokio::time::sleep(Duration::from_secs(10)).await; // tunnel_mux::WARN_WINDOW
    refused_visit(&bind).await;
    let summary = format!("(and {} more like it in the last", BURST - lines);
    expect_logged(&["visitor{name=bv}", "refused by burst-owner", &summary]).await;
    assert!(serves(port).await, "the bystander stopped being served");
}

// ---------------------------------------------------------------------------------------------
// Item 9 (and 15's address leak): a client id held by another running client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_copy_with_a_taken_id_exits_1_without_learning_where_the_first_connects_from() {
    let pki = Pki::new("logs-twin");
    let server_port = free_port();
    let server = pki.server("twin", server_port, "").await;
    let addr = format!("127.0.0.1:{server_port}");
    let echo = echo_service().await;
    let (first_port, second_port) = (free_port(), free_port());
    let _first = pki.client(
        "first",
        &addr,
        &pki.fingerprint,
        &format!(
            "id = \"twin\"\n{}",
            proxy_toml("web", echo, Some(first_port))
        ),
    );
    eventually(
        Duration::from_secs(10),
        "the first client serving",
        || async { serves_within(first_port, Duration::from_secs(1)).await },
    )
    .await;

    let mut second = pki.client(
        "second",
        &addr,
        &pki.fingerprint,
        &format!(
            "id = \"twin\"\n{}",
            proxy_toml("other", echo, Some(second_port))
        ),
    );
    let status = second.exit_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{}", second.log());
    let said = second.log();
    assert!(
        said.contains("\"twin\" is in use by another running client"),
        "{said}"
    );
    assert!(said.contains("a second copy of this config?"), "{said}");
    // The server knows (and logs) where the holder connects from; the second client does not.
    let server_log = server.log();
    let holder = server_log
        .lines()
        .find(|l| l.contains("the client id is held by a session from "))
        .and_then(|l| l.split("held by a session from ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the server did not log the holder:\n{server_log}"))
        .to_string();
    assert!(holder.parse::<SocketAddr>().is_ok(), "{holder}");
    assert!(
        !said.contains(&holder),
        "the holder's address {holder} reached the rejected client:\n{said}"
    );
    assert!(!said.contains("connected from"), "{said}");

    assert!(serves(first_port).await, "the first client stopped serving");
    assert!(!is_listening(second_port).await);
    no_panic(&server);
}

/// A TCP relay in front of the server whose path can be closed: [`Gate::close`] ends every
/// relayed connection and refuses new ones until [`Gate::open`].
struct Gate {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
}

impl Gate {
    async fn start(upstream: SocketAddr) -> Gate {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gate = Gate {
            addr: l.local_addr().unwrap(),
            open: Arc::new(AtomicBool::new(true)),
            generation: tokio::sync::watch::channel(0).0,
        };
        let (open, generation) = (gate.open.clone(), gate.generation.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                if !open.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees its connection closed
                }
                let mut closed = generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = closed.changed() => {}
                    }
                });
            }
        });
        gate
    }

    fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_served_keeps_retrying_when_another_took_its_id_and_says_so() {
    capture_logs();
    let server = server().await;
    let (_bystander, bystander_port) = bystander(&server, "away-bystander").await;
    let gate = Gate::start(server.local_addr()).await;
    let echo = echo_service().await.to_string();
    let port = free_port();
    let mut away_cfg = client_config(&server);
    away_cfg.server_addr = gate.addr.to_string().into();
    let away_cfg = away_cfg
        .with_id("away")
        .with_reconnect_max_delay(Duration::from_secs(1))
        .with_proxy(ProxyConfig::tcp("away-web", &echo, Some(port)));
    let away = client(away_cfg).await;
    assert!(serves(port).await);

    // Its path fails; while it is away, another key holder takes its id (and its port).
    gate.close();
    eventually(
        Duration::from_secs(5),
        "the server to drop the session",
        || async { !is_listening(port).await },
    )
    .await;
    let taker = client(
        client_config(&server)
            .with_id("away")
            .with_proxy(ProxyConfig::tcp("away-web", &echo, Some(port))),
    )
    .await;
    gate.open();

    // The first client does not stop: it may be the rightful owner. It says who is in the way.
    expect_logged(&["another client with the auth key took this id while we were away"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // a few more attempts
    assert!(
        matches!(away.status(), Status::Retrying(_)),
        "{:?}",
        away.status()
    );
    assert!(
        logged_count(&["took this id while we were away"]) <= 2,
        "one warning per attempt"
    );
    assert!(serves(bystander_port).await);

    // When the other one leaves, the first gets its id and port back by itself.
    drop_client(taker).await;
    let mut away = away;
    tokio::time::timeout(Duration::from_secs(10), away.ready())
        .await
        .expect("the first client did not get its id back")
        .unwrap();
    assert!(serves(port).await);
}

async fn drop_client(mut c: ClientHandle) {
    c.shutdown();
    let _ = c.join().await;
}

// ---------------------------------------------------------------------------------------------
// Item 15: the key on the command line.

#[test]
fn help_recommends_the_key_file_or_the_environment_over_the_flag() {
    for bin in [bins::server(), bins::client()] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        for needed in ["auth_key_file", "TUNNEL_AUTH_KEY", "`ps`"] {
            assert!(
                help.contains(needed),
                "{bin} --help lacks {needed}:\n{help}"
            );
        }
    }
}

#[test]
fn a_key_on_the_command_line_is_warned_about_and_one_in_the_environment_is_not() {
    let pki = Pki::new("logs-argv");
    let client_cfg = pki.write(
        "client.toml",
        &format!(
            "server_addr = \"127.0.0.1:1\"\nserver_fingerprint = \"{}\"\n",
            pki.fingerprint
        ),
    );
    let server_cfg = pki.write(
        "server.toml",
        &format!(
            "bind = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\nstats_bind = \"\"\n",
            pki.cert.display().to_string(),
            pki.key.display().to_string()
        ),
    );
    let secret = "argv-secret-0123456789";
    for (bin, cfg) in [(bins::client(), &client_cfg), (bins::server(), &server_cfg)] {
        let run = |flag: bool| {
            let mut cmd = Command::new(bin);
            cmd.arg("--config")
                .arg(cfg)
                .arg("--check")
                .env_remove("RUST_LOG");
            if flag {
                cmd.args(["--auth-key", secret])
                    .env_remove("TUNNEL_AUTH_KEY");
            } else {
                cmd.env("TUNNEL_AUTH_KEY", secret);
            }
            let out = cmd.output().unwrap();
            assert!(out.status.success(), "{bin}: {out:?}");
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        let warned = run(true);
        assert!(
            warned.contains("WARN") && warned.contains("visible to every local user"),
            "{bin} --auth-key: {warned}"
        );
        assert!(!warned.contains(secret), "{bin} printed the key: {warned}");
        let quiet = run(false);
        assert!(
            !quiet.contains("visible to every local user"),
            "{bin} with the env: {quiet}"
        );
    }
}
