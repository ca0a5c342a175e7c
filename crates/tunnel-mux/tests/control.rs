//! The control stream: heartbeats, abort delivery, message hand-over, and silent-peer detection.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{duplex_sessions, within, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tunnel_mux::{spawn_control, AbortTable, Heartbeat, MuxConfig, MuxStream};
use tunnel_proto::{Message, DEFAULT_MAX_FRAME};

const FAST: Heartbeat = Heartbeat {
    interval: Duration::from_millis(50),
    timeout: Duration::from_millis(600),
};

/// A control stream pair: the opener writes first so the peer sees the stream.
async fn control_pair(p: &mut common::Pair) -> (MuxStream, MuxStream) {
    let mut out = p.client.open().await.unwrap();
    out.write_all(b"C").await.unwrap();
    let mut inb = within(DEADLINE, "accept", p.server_in.accept())
        .await
        .unwrap();
    let mut c = [0u8; 1];
    inb.read_exact(&mut c).await.unwrap();
    (out, inb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_quiet_session_alive_and_messages_flow() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (a, b) = control_pair(&mut p).await;
    let a_aborts = AbortTable::default();
    let b_aborts = AbortTable::default();
    let a = spawn_control(a, a_aborts.clone(), FAST, DEFAULT_MAX_FRAME);
    let mut b = spawn_control(b, b_aborts.clone(), FAST, DEFAULT_MAX_FRAME);

    // Quiet for several timeouts: pings alone keep both ends up.
    let quiet = Instant::now() + FAST.timeout * 2;
    while Instant::now() < quiet {
        assert!(!a.ended.is_finished() && !b.ended.is_finished());
        tokio::time::sleep(FAST.interval).await;
    }

    // An abort reaches the peer's table; other messages reach its inbox, in order.
    let guard = b_aborts.register(7);
    a.sender.abort(7);
    a.sender.send(Message::Ping(1234)).await.unwrap(); // a Ping is answered, not handed over
    a.sender.send(Message::Abort(99)).await.unwrap(); // unknown id: ignored
    let note = Message::StreamStatus(tunnel_proto::StreamStatus::Ok);
    a.sender.send(note.clone()).await.unwrap();
    let got = within(DEADLINE, "inbox", b.inbox.recv()).await.unwrap();
    assert_eq!(got, note);
    within(DEADLINE, "abort", guard.token().cancelled()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_declared_dead_after_the_timeout() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (a, _silent) = control_pair(&mut p).await; // the peer never answers a ping
    let started = Instant::now();
    let mut a = spawn_control(a, AbortTable::default(), FAST, DEFAULT_MAX_FRAME);
    let why = within(DEADLINE, "heartbeat timeout", &mut a.ended)
        .await
        .unwrap();
    assert!(why.contains("no heartbeat"), "{why}");
    assert!(!a.closed_by_peer(), "a silent peer said no goodbye");
    assert!(started.elapsed() >= FAST.timeout, "declared dead too early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_ends_when_the_session_does() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (a, b) = control_pair(&mut p).await;
    let slow = Heartbeat {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(60),
    };
    let mut a = spawn_control(a, AbortTable::default(), slow, DEFAULT_MAX_FRAME);
    let _b = spawn_control(b, AbortTable::default(), slow, DEFAULT_MAX_FRAME);
    p.server.close();
    let why = within(DEADLINE, "control end", &mut a.ended).await.unwrap();
    // The peer closed its session on purpose: a goodbye, not a failure.
    assert_eq!(why, "the peer closed the session");
    assert!(a.closed_by_peer());
    // The writer task is aborted with the reader's end; its queue closes shortly after.
    within(DEADLINE, "sender closes", async {
        while a.sender.send(Message::Ping(1)).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_frame_ends_the_channel_and_tells_the_sender_why() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (a, b) = control_pair(&mut p).await;
    let mut a = spawn_control(a, AbortTable::default(), FAST, DEFAULT_MAX_FRAME);
    let b = spawn_control(b, AbortTable::default(), FAST, 1024);
    let big = Message::StreamStatus(tunnel_proto::StreamStatus::Error("x".repeat(1024)));
    a.sender.send(big.clone()).await.unwrap();
    a.sender.send(big).await.unwrap();
    let why = within(DEADLINE, "b ends", b.ended).await.unwrap();
    assert!(why.contains("over this side's limit"), "{why}");
    // The limit is a defence against a hostile peer: nobody is advised to raise it.
    assert!(!why.contains("raise"), "{why}");
    // Without the reason the sender would only see a close, and send the same again.
    match within(DEADLINE, "a's inbox", a.inbox.recv()).await {
        Some(Message::Rejected(r)) => {
            assert_eq!(r.code, tunnel_proto::RejectCode::BadConfig);
            assert!(r.reason.contains("max_frame_size"), "{}", r.reason);
            assert!(!r.reason.contains("raise"), "{}", r.reason);
        }
        other => panic!("expected the reason, got {other:?}"),
    }
}
