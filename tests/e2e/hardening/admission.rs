//! Admission before authentication (issue #13 items 5, 7 and 10): pre-authentication slots
//! per source, accept loops at the open-file limit, the stats endpoint's bounds, and the
//! wrong-key limits.

use tunnel_testkit::*;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_proto::{Message, RejectCode};
use tunnel_server::ServerHandle;
use tunnel_transport::{read_message, write_message};

/// GET `path` from `addr`; the status line and body, or `None` if the connection failed.
async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

// ---------------------------------------------------------------------------------------------
// Item 5: pre-authentication slots.

/// Opens `per_second` idle connections a second from `from` to `to`, each held until the
/// server closes it or `hold` have been opened since; counts them.
struct IdleFlood {
    opened: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl IdleFlood {
    fn start(from: IpAddr, to: SocketAddr, per_second: u32, hold: usize) -> IdleFlood {
        let opened = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, halt) = (opened.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut held = std::collections::VecDeque::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            while !halt.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Ok(s) = connect_from(from, to).await {
                    held.push_back(s);
                    n.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() > hold {
                    held.pop_front();
                }
            }
        });
        IdleFlood { opened, stop, task }
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }
}

impl Drop for IdleFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

/// One login attempt with the right key from 127.0.0.1, no retry: whether the server
/// welcomed it within 3 s.
async fn login_once(addr: SocketAddr, ca: &str, id: &str) -> bool {
    let attempt = async {
        let (mut tls, binding) = raw_tls(addr, loopback(1), ca).await.ok()?;
        let h = hello(id);
        write_message(&mut tls, &Message::Hello(h.clone()), 4096)
            .await
            .ok()?;
        let Some(Message::Challenge(c)) = read_message(&mut tls, 4096).await.ok()? else {
            return None;
        };
        write_message(&mut tls, &answer(&c, KEY.as_bytes(), &binding, &h), 4096)
            .await
            .ok()?;
        match read_message(&mut tls, 4096).await.ok()? {
            Some(Message::Welcome(_)) => Some(()),
            _ => None,
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), attempt).await,
        Ok(Some(()))
    )
}

/// One address refreshes ~200 idle connections a second (more than the 512 slots over a
/// 10 s handshake timeout) while 21 logins, one attempt each, come from another address:
/// every one must succeed, and a client engine still connects. Defaults throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_from_one_address_does_not_lock_out_logins() {
    capture_logs();
    let pki = Pki::new("flood");
    let server = server_with(|c| c.with_tls_files(&pki.cert, &pki.key)).await;
    let (_b, port) = bystander(&server, "adm-flood-bystander").await;
    let flood = IdleFlood::start(loopback(2), server.local_addr(), 200, 3000);
    // Let it fill what it can: past 512 on a server without a per-source share.
    eventually(Duration::from_secs(10), "the flood ramped up", || async {
        flood.opened() >= 700
    })
    .await;
    let mut ok = 0;
    for i in 0..21 {
        if login_once(
            server.local_addr(),
            &pki.cert_pem,
            &format!("adm-login-{i}"),
        )
        .await
        {
            ok += 1;
        }
    }
    eprintln!(
        "logins that succeeded under the idle flood: {ok} of 21 ({} flood connections)",
        flood.opened()
    );
    assert!(serves(port).await, "the bystander stopped serving");
    assert_eq!(ok, 21, "legitimate logins were locked out");
    let (_late, late_port) = bystander(&server, "adm-flood-late").await;
    assert!(serves(late_port).await);
    let metrics = http_get(server.stats_addr().unwrap(), "/metrics")
        .await
        .unwrap();
    assert!(
        metric(
            &metrics,
            "tunnel_preauth_refused_total{reason=\"per_source\"}"
        ) > 0
    );
    expect_logged(&["pending_handshakes_per_source", "127.0.0.2"]).await;
}

/// A connection that says nothing gives its slot back after first_byte_timeout, well before
/// the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_first_byte_timeout() {
    capture_logs();
    let server = server_with(|mut c| {
        c.first_byte_timeout = 1;
        c.handshake_timeout = 10;
        c
    })
    .await;
    let (_b, port) = bystander(&server, "adm-fbt-bystander").await;
    let mut silent = connect_from(loopback(4), server.local_addr())
        .await
        .unwrap();
    // One that started talking keeps its slot past the first-byte deadline.
    let mut talking = connect_from(loopback(4), server.local_addr())
        .await
        .unwrap();
    talking.write_all(&[0x16]).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(4), "a silent connection").await;
    assert!(took < Duration::from_secs(3), "closed after {took:?}");
    let mut buf = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), talking.read(&mut buf))
            .await
            .is_err(),
        "a connection that sent its first byte was cut by first_byte_timeout"
    );
    assert!(serves(port).await);
}

// ---------------------------------------------------------------------------------------------
// Item 7: accept loops at the open-file limit; the stats endpoint's bounds.

/// The server binary with at most `nofile` open files.
async fn server_with_nofile(pki: &Pki, port: u16, stats: u16, nofile: u32) -> Proc {
    let cfg = pki.write(
        "server-nofile.toml",
        &format!(
            "bind = \"127.0.0.1:{port}\"\nauth_key = \"{KEY}\"\ntls_cert = {:?}\ntls_key = {:?}\n\
             publish_addr = \"127.0.0.1\"\nstats_bind = \"127.0.0.1:{stats}\"\n\
             handshake_timeout = 60\n",
            pki.cert.display().to_string(),
            pki.key.display().to_string(),
        ),
    );
    let log = pki.dir.join("server-nofile.log");
    let child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(bins::server())
        .arg("--config")
        .arg(&cfg)
        .env_remove("TUNNEL_AUTH_KEY")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut p = Proc { child, log };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(is_listening(port).await && is_listening(stats).await) {
        assert!(p.is_running(), "the server exited:\n{}", p.log());
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p
}

/// At the open-file limit every accept fails at once; the loops must back off rather than
/// spin, and serve again once descriptors are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_open_file_limit_accept_loops_back_off_and_recover() {
    if !need("prlimit") {
        return;
    }
    let pki = Pki::new("nofile");
    let (port, stats) = (free_port(), free_port());
    let server = server_with_nofile(&pki, port, stats, 64).await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Idle connections from many addresses (each within its per-source share), each sending
    // a first byte so the first-byte deadline leaves them alone: they hold the server's
    // descriptors until the handshake timeout (60 s here).
    let mut held = Vec::new();
    for i in 0..120u32 {
        let from = loopback(10 + (i / 8) as u8);
        let mut s = connect_from(from, addr).await.unwrap();
        let _ = s.write_all(&[0x16]).await;
        held.push(s);
    }
    eventually(
        Duration::from_secs(5),
        "the server reached its limit",
        || async { pki_log_has(&server, "Too many open files") },
    )
    .await;
    // And, once no descriptor is left, connections waiting on the stats port, whose accept
    // fails too.
    for _ in 0..4 {
        held.push(
            connect_from(loopback(9), ([127, 0, 0, 1], stats).into())
                .await
                .unwrap(),
        );
    }
    // Let the accept loops settle into their back-off, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_seconds();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = server.cpu_seconds() - before;
    let share = used / t0.elapsed().as_secs_f64();
    eprintln!(
        "server CPU at the open-file limit: {used:.2} s over {:.1} s ({:.0} % of a core)",
        t0.elapsed().as_secs_f64(),
        share * 100.0
    );
    assert!(
        share < 0.2,
        "accept loops spin at the open-file limit: {:.0} % of a core",
        share * 100.0
    );
    let log = server.log();
    assert!(
        log.matches("accept failed").count() <= 6,
        "accept failures flood the log:\n{log}"
    );
    // Free the descriptors: the server serves again, clients and stats alike.
    drop(held);
    let echo = echo_service().await;
    let publish = free_port();
    let _client = pki.client(
        "nofile",
        &addr.to_string(),
        &pki.fingerprint,
        &proxy_toml("web", echo, Some(publish)),
    );
    eventually(Duration::from_secs(15), "a client serves again", || async {
        serves(publish).await
    })
    .await;
    let health = http_get(([127, 0, 0, 1], stats).into(), "/healthz").await;
    assert!(
        health.is_some_and(|h| h.starts_with("HTTP/1.1 200")),
        "the stats endpoint does not answer"
    );
    no_panic(&server);
}

fn pki_log_has(p: &Proc, needle: &str) -> bool {
    p.log().contains(needle)
}

/// A peer that sends its request head a byte at a time is cut by the header timeout; more
/// than the connection cap are closed at once; afterwards the endpoint answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_endpoint_cuts_slow_headers_and_caps_connections() {
    capture_logs();
    let server = server().await;
    let (_b, port) = bystander(&server, "adm-stats-bystander").await;
    let stats = server.stats_addr().unwrap();
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..tunnel_admin::STATS_MAX_CONNECTIONS {
        let mut s = TcpStream::connect(stats).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        slow.push(s);
    }
    // A byte a second keeps every one of them "sending".
    let trickle = {
        let mut writers: Vec<_> = Vec::new();
        let mut readers = Vec::new();
        for s in slow {
            let (r, w) = s.into_split();
            writers.push(w);
            readers.push(r);
        }
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                for w in &mut writers {
                    let _ = w.write_all(b"X").await;
                }
            }
        });
        (task, readers)
    };
    let (task, mut readers) = trickle;
    // Over the cap: closed at once.
    let mut extra = TcpStream::connect(stats).await.unwrap();
    closed_within(
        &mut extra,
        Duration::from_secs(2),
        "a connection over the cap",
    )
    .await;
    assert!(serves(port).await, "the bystander stopped serving");
    for r in &mut readers {
        closed_within(r, Duration::from_secs(9), "a slow-header connection").await;
    }
    task.abort();
    let took = started.elapsed();
    assert!(
        took < tunnel_admin::STATS_HEADER_TIMEOUT + Duration::from_secs(3),
        "slow headers held for {took:?}"
    );
    let page = http_get(stats, "/metrics").await.unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    expect_logged(&["stats connection refused", "connections are in use"]).await;
}

// ---------------------------------------------------------------------------------------------
// Item 10: the wrong-key limits.

/// What became of one wrong-key login.
#[derive(Debug, PartialEq, Eq)]
enum Guess {
    /// The proof was checked and refused: a guess the attacker got.
    Checked,
    /// Refused without checking the proof.
    Refused,
    /// No TLS: turned away at the door.
    NoTls,
}

/// A wrong-key login from `from` that sends its proof once `go` is set (so a burst lands
/// together).
async fn wrong_key_login(
    addr: SocketAddr,
    from: IpAddr,
    ca: String,
    ready: Arc<AtomicUsize>,
    go: Arc<tokio::sync::Notify>,
) -> Guess {
    let Ok((mut tls, binding)) = raw_tls(addr, from, &ca).await else {
        ready.fetch_add(1, Ordering::Relaxed);
        return Guess::NoTls;
    };
    let h = hello("guesser");
    let step = async {
        write_message(&mut tls, &Message::Hello(h.clone()), 4096)
            .await
            .ok()?;
        match read_message(&mut tls, 4096).await.ok()? {
            Some(Message::Challenge(c)) => Some(c),
            _ => None,
        }
    };
    let challenge = step.await;
    let notified = go.notified();
    ready.fetch_add(1, Ordering::Relaxed);
    let Some(c) = challenge else {
        return Guess::NoTls;
    };
    notified.await;
    let wrong = answer(&c, b"a wrong guess", &binding, &h);
    let _ = write_message(&mut tls, &wrong, 4096).await;
    match read_message(&mut tls, 4096).await {
        Ok(Some(Message::Rejected(r))) if r.code == RejectCode::Auth => Guess::Checked,
        Ok(Some(Message::Rejected(r))) => {
            assert_eq!(r.code, RejectCode::Limit, "{}", r.reason);
            Guess::Refused
        }
        other => panic!("unexpected answer to a wrong key: {other:?}"),
    }
}

/// `n` wrong-key logins at once, from `sources` in turn; how each ended.
async fn guess_burst(server: &ServerHandle, ca: &str, sources: &[IpAddr], n: usize) -> Vec<Guess> {
    let ready = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(tokio::sync::Notify::new());
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let from = sources[i % sources.len()];
            let task = wrong_key_login(
                server.local_addr(),
                from,
                ca.to_string(),
                ready.clone(),
                go.clone(),
            );
            tokio::spawn(task)
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "every guesser is ready",
        || async { ready.load(Ordering::Relaxed) >= n },
    )
    .await;
    go.notify_waiters();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A burst of parallel wrong-key handshakes from one address, all at their proof before any
/// has failed, gets MAX_FAILURES (10) checked guesses, not one per connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_keys_from_one_address_gets_ten_guesses() {
    capture_logs();
    let pki = Pki::new("burst");
    let server = server_with(|mut c| {
        // No per-source share of the pre-auth slots and no server-wide cap: the burst
        // reaches its proofs, and only the per-address check stands in its way.
        c.pending_handshakes_per_source = 0;
        c.max_auth_failures_per_second = 0;
        c.with_tls_files(&pki.cert, &pki.key)
    })
    .await;
    let (_b, port) = bystander(&server, "adm-burst-bystander").await;
    let guesses = guess_burst(&server, &pki.cert_pem, &[loopback(5)], 40).await;
    let checked = guesses.iter().filter(|g| **g == Guess::Checked).count();
    let refused = guesses.iter().filter(|g| **g == Guess::Refused).count();
    eprintln!(
        "burst of 40 wrong keys from one address: {checked} checked, {refused} refused unchecked"
    );
    assert!(checked <= 10, "{checked} guesses checked from one address");
    assert_eq!(checked + refused, 40, "{guesses:?}");
    assert!(serves(port).await);
    // Blocked now: refused before TLS.
    assert!(raw_tls(server.local_addr(), loopback(5), &pki.cert_pem)
        .await
        .is_err());
}

/// Wrong keys from many addresses at once meet the server-wide cap: the proofs beyond it
/// are not checked, and a right key gets in once the flood stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_from_many_addresses_meet_the_server_wide_cap() {
    capture_logs();
    let pki = Pki::new("rate");
    let server = server_with(|mut c| {
        c.max_auth_failures_per_second = 5;
        c.with_tls_files(&pki.cert, &pki.key)
    })
    .await;
    let (_b, port) = bystander(&server, "adm-rate-bystander").await;
    let sources: Vec<IpAddr> = (20..60).map(loopback).collect();
    let started = Instant::now();
    let guesses = guess_burst(&server, &pki.cert_pem, &sources, 40).await;
    let secs = started.elapsed().as_secs_f64();
    let checked = guesses.iter().filter(|g| **g == Guess::Checked).count();
    eprintln!("40 wrong keys from 40 addresses in {secs:.1} s: {checked} checked");
    assert!(
        (checked as f64) <= 5.0 + 5.0 * secs,
        "{checked} guesses checked in {secs:.1} s with max_auth_failures_per_second = 5"
    );
    expect_logged(&["max_auth_failures_per_second"]).await;
    assert!(serves(port).await);
    // A right key is let in after a moment (the refusal is retryable).
    let mut c = tunnel_client::start(
        client_config(&server)
            .with_id("adm-rate-late")
            .with_reconnect_max_delay(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), c.ready())
        .await
        .expect("a right key was locked out")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_auth_key_is_warned_about_at_start() {
    capture_logs();
    let server = server_with(|c| c.with_auth_key("hunter2")).await;
    expect_logged(&["auth key is only 7 bytes", "at least 16"]).await;
    assert!(!logged_anywhere("hunter2"));
    server.shutdown();
}
