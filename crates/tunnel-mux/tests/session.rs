//! Sessions over real byte streams: open/accept, data integrity, half-close, limits, teardown.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::{duplex_sessions, pattern, tcp_sessions, within, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_mux::{MuxConfig, MuxError, MuxStream};

const SECOND: Duration = Duration::from_secs(1);

/// Open on `from`, accept on `to`; the first bytes make the stream visible to the peer.
async fn open_pair(
    from: &tunnel_mux::MuxHandle,
    to: &mut tunnel_mux::Incoming,
) -> (MuxStream, MuxStream) {
    let mut out = from.open().await.unwrap();
    out.write_all(b"hi").await.unwrap();
    let mut inb = within(DEADLINE, "accept", to.accept()).await.unwrap();
    let mut hi = [0u8; 2];
    inb.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi");
    (out, inb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_accept_in_both_directions() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (c_out, s_in) = open_pair(&p.client, &mut p.server_in).await;
    let (s_out, c_in) = open_pair(&p.server, &mut p.client_in).await;
    assert_eq!(c_out.id() % 2, 1, "client-opened ids are odd");
    assert_eq!(s_out.id() % 2, 0, "server-opened ids are even");
    assert_eq!((c_out.id(), s_out.id()), (s_in.id(), c_in.id()));
    assert_eq!(p.client.num_streams(), 2);
    assert_eq!(p.server.num_streams(), 2);
    drop((c_out, c_in));
    assert_eq!(p.client.num_streams(), 0);
}

/// Send `len` bytes one way and have the peer echo them back; check both copies byte for byte.
async fn echo_roundtrip(mut out: MuxStream, mut inb: MuxStream, seed: u64, len: usize) {
    let data = pattern(seed, len);
    let echo = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(&mut inb);
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n
    });
    let (mut r, mut w) = tokio::io::split(&mut out);
    let writer = async {
        for chunk in data.chunks(50_000) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut got = Vec::with_capacity(len);
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(writer, reader);
    assert_eq!(echo.await.unwrap(), len as u64);
    assert_eq!(got.len(), len);
    assert!(got == data, "stream {seed}: echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_is_byte_exact() {
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let (out, inb) = open_pair(&p.client, &mut p.server_in).await;
    within(
        DEADLINE * 3,
        "8 MiB echo",
        echo_roundtrip(out, inb, 1, 8 << 20),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_streams_are_byte_exact() {
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let mut pairs = Vec::new();
    for _ in 0..64 {
        pairs.push(open_pair(&p.client, &mut p.server_in).await);
    }
    let tasks: Vec<_> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (out, inb))| tokio::spawn(echo_roundtrip(out, inb, i as u64 + 100, 2 << 20)))
        .collect();
    within(DEADLINE * 6, "64 echoes", async {
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    assert_eq!(p.client.num_streams(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_lets_the_peer_still_reply() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (mut out, mut inb) = open_pair(&p.client, &mut p.server_in).await;
    out.write_all(b"request").await.unwrap();
    out.shutdown().await.unwrap();

    let mut req = Vec::new();
    within(DEADLINE, "read request", inb.read_to_end(&mut req))
        .await
        .unwrap();
    assert_eq!(req, b"request");
    inb.write_all(b"reply after your FIN").await.unwrap();
    inb.shutdown().await.unwrap();

    let mut reply = Vec::new();
    within(DEADLINE, "read reply", out.read_to_end(&mut reply))
        .await
        .unwrap();
    assert_eq!(reply, b"reply after your FIN");
    // Writing after our own FIN is refused.
    assert!(out.write_all(b"x").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_resets_it_and_the_peer_reads_an_error() {
    let mut p = duplex_sessions(&MuxConfig::default(), &MuxConfig::default());
    let (mut out, inb) = open_pair(&p.client, &mut p.server_in).await;
    let mut inb = inb;
    inb.write_all(b"partial").await.unwrap();
    inb.flush().await.unwrap();
    drop(inb); // no shutdown: RST after the queued data

    let mut got = [0u8; 7];
    out.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"partial");
    let err = within(DEADLINE, "read after RST", out.read(&mut [0u8; 8]))
        .await
        .expect_err("a reset must not read as a clean EOF");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert!(p.client.num_streams() == 1 && !p.client.is_closed());
}

/// Start a read on each side that can only end when the session goes away.
async fn blocked_readers(
    p: &mut common::Pair,
) -> (
    tokio::task::JoinHandle<std::io::Result<usize>>,
    tokio::task::JoinHandle<std::io::Result<usize>>,
    (MuxStream, MuxStream),
) {
    let (mut out, mut inb) = open_pair(&p.client, &mut p.server_in).await;
    // Keep the peer's end: dropping it would reset the stream before the test starts.
    let (mut out2, peer2) = open_pair(&p.client, &mut p.server_in).await;
    let c = tokio::spawn(async move { out.read(&mut [0u8; 16]).await });
    let s = tokio::spawn(async move { inb.read(&mut [0u8; 16]).await });
    // A writer too: it must fail once the session is gone, not hang or succeed silently.
    out2.write_all(b"x").await.unwrap();
    (c, s, (out2, peer2))
}

fn assert_eof_or_error(r: std::io::Result<usize>, side: &str) {
    match r {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("{side}: read {n} bytes from a dead session"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_blocked_readers_on_both_sides() {
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let (c, s, (mut writer, _peer)) = blocked_readers(&mut p).await;
    assert!(!c.is_finished() && !s.is_finished());

    p.client.close();
    assert_eof_or_error(within(SECOND, "client reader", c).await.unwrap(), "client");
    assert_eof_or_error(within(SECOND, "server reader", s).await.unwrap(), "server");
    within(SECOND, "client driver end", p.client.closed()).await;
    within(SECOND, "server driver end", p.server.closed()).await;
    assert!(p.server.is_closed());
    assert!(writer.write_all(b"more").await.is_err());
    assert!(matches!(p.client.open().await, Err(MuxError::Closed)));
    assert!(within(SECOND, "accept", p.server_in.accept())
        .await
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_all_handles_ends_the_session_and_wakes_readers() {
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let (c, s, _writer) = blocked_readers(&mut p).await;
    let server = p.server.clone();
    drop(p); // every MuxHandle and Incoming of both sessions
    assert_eof_or_error(within(SECOND, "client reader", c).await.unwrap(), "client");
    assert_eof_or_error(within(SECOND, "server reader", s).await.unwrap(), "server");
    within(SECOND, "server driver end", server.closed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_connection_wakes_readers_and_fails_writers() {
    // The server's transport is cut without any yamux goodbye.
    let (a, b) = common::tcp_pair().await;
    let (client, _client_in) =
        tunnel_mux::start(a, tunnel_mux::Mode::Client, &MuxConfig::default());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cut = tokio::spawn(async move {
        // A relay we can kill: forwards b <-> a server session via a duplex.
        let (relay_end, session_end) = tokio::io::duplex(1 << 16);
        let (server, mut server_in) =
            tunnel_mux::start(session_end, tunnel_mux::Mode::Server, &MuxConfig::default());
        let mut b = b;
        let mut relay_end = relay_end;
        let relay = tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut b, &mut relay_end).await;
        });
        let mut inb = server_in.accept().await.unwrap();
        let mut hi = [0u8; 2];
        inb.read_exact(&mut hi).await.unwrap();
        let _ = rx.await;
        relay.abort(); // drops the TCP socket: the client sees EOF, the server side EOF too
        let r = within(SECOND, "server reader", inb.read(&mut [0u8; 8])).await;
        assert_eof_or_error(r, "server");
        within(SECOND, "server end", server.closed()).await;
    });
    let mut out = client.open().await.unwrap();
    out.write_all(b"hi").await.unwrap();
    let reader = tokio::spawn(async move {
        let r = out.read(&mut [0u8; 8]).await;
        (r, out)
    });
    tx.send(()).unwrap();
    let (r, mut out) = within(SECOND, "client reader", reader).await.unwrap();
    assert!(r.is_err(), "peer loss must read as an error, got {r:?}");
    assert!(out.write_all(b"late").await.is_err());
    within(SECOND, "client end", client.closed()).await;
    within(DEADLINE, "server task", cut).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_streams_is_enforced_without_killing_the_session() {
    let cfg = MuxConfig::default().with_max_streams(3);
    let mut p = duplex_sessions(&cfg, &MuxConfig::default());
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(open_pair(&p.client, &mut p.server_in).await);
    }
    match p.client.open().await {
        Err(MuxError::TooManyStreams { limit: 3 }) => {}
        other => panic!("expected TooManyStreams, got {other:?}"),
    }
    // The session still carries data, and a slot frees up when a stream is dropped.
    let (mut out, mut inb) = held.pop().unwrap();
    out.write_all(b"still alive").await.unwrap();
    let mut buf = [0u8; 11];
    inb.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still alive");
    drop((out, inb));
    let _again = open_pair(&p.client, &mut p.server_in).await;
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_streams_over_the_limit_are_reset() {
    let server_cfg = MuxConfig::default().with_max_streams(2);
    let mut p = duplex_sessions(&MuxConfig::default(), &server_cfg);
    let _a = open_pair(&p.client, &mut p.server_in).await;
    let _b = open_pair(&p.client, &mut p.server_in).await;
    let mut third = p.client.open().await.unwrap();
    third.write_all(b"hi").await.unwrap();
    let err = within(DEADLINE, "refused stream", third.read(&mut [0u8; 4]))
        .await
        .expect_err("refused stream must read as reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    // Both sessions survive and still open streams once a slot is free.
    drop(_a);
    let _c = within(DEADLINE, "open after refusal", async {
        // The server frees the slot when it processes the drop; poll until it does.
        loop {
            let mut s = p.client.open().await.unwrap();
            s.write_all(b"hi").await.unwrap();
            if let Ok(Some(mut inb)) =
                tokio::time::timeout(Duration::from_millis(100), p.server_in.accept()).await
            {
                let mut hi = [0u8; 2];
                inb.read_exact(&mut hi).await.unwrap();
                return (s, inb);
            }
        }
    })
    .await;
    assert!(!p.client.is_closed() && !p.server.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backlog_overflow_resets_extra_streams() {
    let server_cfg = MuxConfig::default().with_accept_backlog(2);
    let p = duplex_sessions(&MuxConfig::default(), &server_cfg);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = p.client.open().await.unwrap();
        s.write_all(b"hi").await.unwrap();
        streams.push(s);
    }
    // Nobody accepts: the third one does not fit the backlog and is reset.
    let mut third = streams.pop().unwrap();
    let err = within(DEADLINE, "overflowing stream", third.read(&mut [0u8; 4]))
        .await
        .expect_err("overflowing stream must read as reset");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    assert_eq!(p.server.num_streams(), 2);
}

/// `AsyncBufRead` lends out whole frames; reading through it and through `AsyncRead` into a
/// buffer that already holds bytes (as `tokio::io::copy` does) must both be byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_reads_lend_frames_byte_exact() {
    use tokio::io::AsyncBufReadExt;
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let (mut out, mut inb) = open_pair(&p.client, &mut p.server_in).await;
    let data = pattern(7, 3 << 20);
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(70_001) {
            out.write_all(chunk).await.unwrap();
        }
        out.shutdown().await.unwrap();
        out
    });
    let mut got = Vec::with_capacity(data.len());
    within(DEADLINE, "buffered read", async {
        loop {
            let chunk = inb.fill_buf().await.unwrap();
            if chunk.is_empty() {
                break;
            }
            // Take part of each frame only, so frames are also lent out partly consumed.
            let n = chunk.len().min(40_000);
            got.extend_from_slice(&chunk[..n]);
            inb.consume(n);
        }
    })
    .await;
    assert!(got == data, "bytes differ");
    drop(writer.await.unwrap());
}
