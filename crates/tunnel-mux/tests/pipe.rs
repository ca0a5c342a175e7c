//! The forwarder on real sockets: TCP <-> mux stream <-> TCP, as the engines wire it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{pattern, tcp_pair, tcp_sessions, within, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tunnel_mux::{pipe, reset_tcp, MuxConfig, PipeConfig, PipeEnd};

/// user <-> [entry pipe] <-> mux session <-> [exit pipe] <-> service.
struct Tunnel {
    user: TcpStream,
    service: TcpStream,
    entry: JoinHandle<PipeEnd>,
    exit: JoinHandle<PipeEnd>,
    _sessions: common::Pair,
}

/// What an engine does with a pipe's outcome: abort on failure, close cleanly otherwise.
fn finish(end: &PipeEnd, tcp: TcpStream) {
    if matches!(end, PipeEnd::Failed { .. }) {
        reset_tcp(tcp);
    }
}

async fn tunnel(cfg: PipeConfig) -> Tunnel {
    tunnel_with(cfg.clone(), cfg).await
}

/// A tunnel whose entry and exit pipes are configured apart.
async fn tunnel_with(entry_cfg: PipeConfig, cfg: PipeConfig) -> Tunnel {
    let mut sessions = tcp_sessions(&MuxConfig::default()).await;
    let (user, mut entry_tcp) = tcp_pair().await;
    let (mut exit_tcp, service) = tcp_pair().await;

    let mut out = sessions.client.open().await.unwrap();
    let mut inb = {
        // The open header the engines send first; here a single byte.
        out.write_all(b"O").await.unwrap();
        let mut s = within(DEADLINE, "accept", sessions.server_in.accept())
            .await
            .unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        s
    };
    let entry = tokio::spawn(async move {
        let end = pipe(&mut entry_tcp, &mut out, &entry_cfg).await;
        finish(&end, entry_tcp);
        end // `out` dropped here: RST if the pipe failed before a FIN
    });
    let exit = tokio::spawn(async move {
        let end = pipe(&mut inb, &mut exit_tcp, &cfg).await;
        finish(&end, exit_tcp);
        end
    });
    Tunnel {
        user,
        service,
        entry,
        exit,
        _sessions: sessions,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_travels_through_the_tunnel_and_the_reply_still_arrives() {
    let t = tunnel(PipeConfig::default()).await;
    let request = pattern(7, 3 << 20);
    let reply = pattern(8, 1 << 20);

    let mut service = t.service;
    let svc_reply = reply.clone();
    let svc = tokio::spawn(async move {
        let mut got = Vec::new();
        service.read_to_end(&mut got).await.unwrap(); // EOF only arrives if the FIN travelled
        service.write_all(&svc_reply).await.unwrap();
        service.shutdown().await.unwrap();
        got
    });

    let mut user = t.user;
    user.write_all(&request).await.unwrap();
    user.shutdown().await.unwrap();
    let mut got = Vec::new();
    within(DEADLINE, "reply", user.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(got == reply, "reply corrupted or truncated");
    assert!(
        svc.await.unwrap() == request,
        "request corrupted or truncated"
    );

    let entry = within(DEADLINE, "entry pipe", t.entry).await.unwrap();
    let exit = within(DEADLINE, "exit pipe", t.exit).await.unwrap();
    // Both pipes have the user's side as `a`: a_to_b is the request, b_to_a the reply.
    for (name, end) in [("entry", entry), ("exit", exit)] {
        match end {
            PipeEnd::Finished(s) => assert_eq!(
                (s.a_to_b, s.b_to_a),
                (request.len() as u64, reply.len() as u64),
                "{name}"
            ),
            other => panic!("{name}: expected Finished, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_on_one_side_becomes_a_reset_on_the_other() {
    let t = tunnel(PipeConfig::default()).await;
    let mut user = t.user;
    let mut service = t.service;
    user.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    within(DEADLINE, "service read", service.read_exact(&mut buf))
        .await
        .unwrap();
    reset_tcp(service); // the service aborts

    let exit = within(DEADLINE, "exit pipe", t.exit).await.unwrap();
    assert!(matches!(exit, PipeEnd::Failed { .. }), "exit: {exit:?}");
    let entry = within(DEADLINE, "entry pipe", t.entry).await.unwrap();
    match &entry {
        PipeEnd::Failed { error, .. } => {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}")
        }
        other => panic!("entry: expected Failed, got {other:?}"),
    }
    // The user sees an abort, not a clean end of stream.
    let r = within(DEADLINE, "user read", user.read(&mut [0u8; 16])).await;
    assert!(r.is_err(), "user must see a reset, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_after_half_close_is_given_up_on() {
    let idle = Duration::from_millis(200);
    let t = tunnel(PipeConfig::default().with_half_close_idle(idle)).await;
    let mut user = t.user;
    let _service = t.service; // never answers, never closes
    let started = Instant::now();
    user.write_all(b"request").await.unwrap();
    user.shutdown().await.unwrap();

    for (name, handle) in [("entry", t.entry), ("exit", t.exit)] {
        match within(DEADLINE, name, handle).await.unwrap() {
            PipeEnd::IdleAfterHalfClose(s) => assert_eq!(s.a_to_b + s.b_to_a, 7, "{name}"),
            other => panic!("{name}: expected IdleAfterHalfClose, got {other:?}"),
        }
    }
    assert!(started.elapsed() >= idle, "gave up before the idle time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_both_ways_is_closed_after_the_idle_time() {
    // As the engines use it: the server's (entry) pipe times out, the client's does not.
    let idle = Duration::from_millis(400);
    let t = tunnel_with(
        PipeConfig::default().with_idle(Some(idle)),
        PipeConfig::default(),
    )
    .await;
    let mut user = t.user;
    let mut service = t.service;
    let started = Instant::now();
    user.write_all(b"hello").await.unwrap();
    let mut b = [0u8; 5];
    service.read_exact(&mut b).await.unwrap();
    match within(DEADLINE, "entry", t.entry).await.unwrap() {
        PipeEnd::Idle(s) => assert_eq!(s.a_to_b + s.b_to_a, 5),
        other => panic!("entry: expected Idle, got {other:?}"),
    }
    let took = started.elapsed();
    // The exit pipe ends with it (the dropped stream reaches it as a reset).
    let exit = within(DEADLINE, "exit", t.exit).await.unwrap();
    assert!(matches!(exit, PipeEnd::Failed { .. }), "exit: {exit:?}");
    assert!(took >= idle, "closed before the idle time: {took:?}");
    assert!(took < idle * 3, "closed too late: {took:?}");
    // The user sees the end of the connection.
    let mut rest = Vec::new();
    let _ = within(DEADLINE, "user end", user.read_to_end(&mut rest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_transfer_longer_than_the_idle_time_is_not_idle() {
    let idle = Duration::from_millis(300);
    let t = tunnel(PipeConfig::default().with_idle(Some(idle))).await;
    let mut user = t.user;
    let mut service = t.service;
    // A slow download: the user never writes, the service sends a byte every idle/3 for
    // several idle periods.
    let svc = tokio::spawn(async move {
        for i in 0..12u8 {
            tokio::time::sleep(idle / 3).await;
            service.write_all(&[i]).await.unwrap();
        }
        service.shutdown().await.unwrap();
        service
    });
    let mut got = Vec::new();
    within(DEADLINE, "slow download", user.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, (0..12u8).collect::<Vec<_>>());
    let _service = svc.await.unwrap();
    user.shutdown().await.unwrap();
    let entry = within(DEADLINE, "entry pipe", t.entry).await.unwrap();
    assert!(matches!(entry, PipeEnd::Finished(_)), "entry: {entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_after_half_close_keeps_the_pipe_alive() {
    let idle = Duration::from_millis(500);
    let t = tunnel(PipeConfig::default().with_half_close_idle(idle)).await;
    let mut user = t.user;
    let mut service = t.service;
    user.shutdown().await.unwrap();

    // The service answers slowly: each gap is well under `idle`, the total is longer.
    let svc = tokio::spawn(async move {
        let mut eof = Vec::new();
        service.read_to_end(&mut eof).await.unwrap();
        for i in 0..8u8 {
            tokio::time::sleep(idle / 5).await;
            service.write_all(&[i]).await.unwrap();
        }
        service.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    within(DEADLINE, "slow reply", user.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4, 5, 6, 7]);
    svc.await.unwrap();
    let entry = within(DEADLINE, "entry pipe", t.entry).await.unwrap();
    assert!(matches!(entry, PipeEnd::Finished(_)), "entry: {entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipe_counts_bytes_and_finishes_between_plain_sockets() {
    let (mut a_far, mut a) = tcp_pair().await;
    let (mut b, mut b_far) = tcp_pair().await;
    let p = tokio::spawn(async move {
        pipe(
            &mut a,
            &mut b,
            &PipeConfig::default().with_buffer_size(1000),
        )
        .await
    });
    let up = pattern(1, 100_000);
    let down = pattern(2, 54_321);
    let (r1, r2) = tokio::join!(
        async {
            a_far.write_all(&up).await.unwrap();
            a_far.shutdown().await.unwrap();
            let mut v = Vec::new();
            a_far.read_to_end(&mut v).await.unwrap();
            v
        },
        async {
            b_far.write_all(&down).await.unwrap();
            b_far.shutdown().await.unwrap();
            let mut v = Vec::new();
            b_far.read_to_end(&mut v).await.unwrap();
            v
        }
    );
    assert!(r1 == down && r2 == up);
    match within(DEADLINE, "pipe", p).await.unwrap() {
        PipeEnd::Finished(s) => assert_eq!((s.a_to_b, s.b_to_a), (100_000, 54_321)),
        other => panic!("expected Finished, got {other:?}"),
    }
}
