//! A peer that stops reading must not make a session hold an unbounded amount of its streams'
//! data: what the streams have handed yamux and the connection has not written stays within
//! `send_queue`, give or take one frame per stream, and nothing is lost once the peer reads again.
#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{pattern, tcp_pair, within, DEADLINE};
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tunnel_mux::{start, Mode, MuxConfig, DEFAULT_SPLIT_SEND_SIZE};

/// A byte stream whose reads can be paused, as a peer that stops reading its socket.
struct Pausable<T> {
    inner: T,
    paused: Arc<AtomicBool>,
    waker: Arc<AtomicWaker>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Pausable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.waker.register(cx.waker());
        if self.paused.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Pausable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const STREAMS: usize = 16;
const PER_STREAM: usize = 8 << 20;
const LIMIT: usize = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_leaves_a_bounded_send_queue_and_loses_nothing() {
    let (a, b) = tcp_pair().await;
    // Small kernel buffers, so the stuck peer backs the session up after a few hundred KiB
    // rather than the megabytes loopback TCP would otherwise absorb.
    socket2::SockRef::from(&a)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    socket2::SockRef::from(&b)
        .set_recv_buffer_size(64 * 1024)
        .unwrap();
    let (paused, waker) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicWaker::new()),
    );
    let b = Pausable {
        inner: b,
        paused: paused.clone(),
        waker: waker.clone(),
    };
    let cfg = MuxConfig::default().with_send_queue(LIMIT);
    let (client, _client_in) = start(a, Mode::Client, &cfg);
    let (_server, mut server_in) = start(b, Mode::Server, &cfg);

    let mut outs = Vec::new();
    let mut ins = Vec::new();
    for _ in 0..STREAMS {
        let mut out = client.open().await.unwrap();
        out.write_all(b"x").await.unwrap();
        let mut inb = within(DEADLINE, "accept", server_in.accept())
            .await
            .unwrap();
        let mut x = [0u8; 1];
        inb.read_exact(&mut x).await.unwrap();
        outs.push(out);
        ins.push(inb);
    }
    paused.store(true, Ordering::Release);

    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = outs
        .into_iter()
        .enumerate()
        .map(|(i, mut out)| {
            let written = written.clone();
            tokio::spawn(async move {
                let data = pattern(i as u64, PER_STREAM);
                for chunk in data.chunks(64 * 1024) {
                    out.write_all(chunk).await.unwrap();
                    written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                out.shutdown().await.unwrap();
            })
        })
        .collect();

    // Wait until the writers are stuck: the kernel buffers are full and the queue is at its
    // bound. Polled against a deadline; "stuck" is no progress across a quarter second.
    let bound = LIMIT + STREAMS * DEFAULT_SPLIT_SEND_SIZE;
    let mut max_seen = 0;
    within(DEADLINE * 3, "writers to stall", async {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            max_seen = max_seen.max(client.send_queued());
            let now = written.load(Ordering::Relaxed);
            if now == last {
                break;
            }
            last = now;
        }
    })
    .await;
    let stalled_at = written.load(Ordering::Relaxed);
    assert!(
        stalled_at < (STREAMS * PER_STREAM) as u64,
        "the writers never stalled: the peer was not backing up"
    );
    assert!(
        max_seen <= bound,
        "{max_seen} bytes queued with {STREAMS} streams stuck, over the bound of {bound}"
    );
    assert!(
        client.send_queued() > 0,
        "nothing queued while stuck: the test did not reach the bound"
    );

    // The peer reads again: every byte of every stream arrives, in order.
    paused.store(false, Ordering::Release);
    waker.wake();
    let readers: Vec<_> = ins
        .into_iter()
        .enumerate()
        .map(|(i, mut inb)| {
            tokio::spawn(async move {
                let mut got = Vec::with_capacity(PER_STREAM);
                inb.read_to_end(&mut got).await.unwrap();
                assert!(got == pattern(i as u64, PER_STREAM), "stream {i} differs");
            })
        })
        .collect();
    within(DEADLINE * 6, "all streams delivered", async {
        for t in writers.into_iter().chain(readers) {
            t.await.unwrap();
        }
    })
    .await;
    assert_eq!(
        client.send_queued(),
        0,
        "bytes still counted after all were sent"
    );
}
