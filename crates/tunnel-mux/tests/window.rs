//! Flow-control windows must grow on a high-latency link: the frp#2987 lesson (a fixed 256 KiB
//! stream window caps a stream at window / RTT).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{within, DEADLINE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tunnel_mux::{start, Mode, MuxConfig, STREAM_WINDOW};

/// Forward bytes from `from` to `to`, each chunk delivered `delay` after it was read. Latency
/// only: the queue is unbounded, so the link itself never limits throughput.
fn delayed<R, W>(mut from: R, mut to: W, delay: Duration)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
}

/// Two byte streams joined by a link with `one_way` latency in each direction.
fn slow_link(one_way: Duration) -> (DuplexStream, DuplexStream) {
    let (a, a_relay) = tokio::io::duplex(1 << 20);
    let (b, b_relay) = tokio::io::duplex(1 << 20);
    let (ar, aw) = tokio::io::split(a_relay);
    let (br, bw) = tokio::io::split(b_relay);
    delayed(ar, bw, one_way);
    delayed(br, aw, one_way);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_outgrows_the_initial_window_on_a_slow_link() {
    let one_way = Duration::from_millis(25);
    let rtt = 2 * one_way;
    let total: usize = 16 << 20;
    // With the window stuck at 256 KiB the transfer needs total / window round trips.
    let fixed_window_time = rtt * (total / STREAM_WINDOW) as u32;

    let (a, b) = slow_link(one_way);
    let cfg = MuxConfig::default();
    let (client, _client_in) = start(a, Mode::Client, &cfg);
    let (_server, mut server_in) = start(b, Mode::Server, &cfg);

    let started = Instant::now();
    let mut out = client.open().await.unwrap();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 << 10];
        for _ in 0..total / chunk.len() {
            out.write_all(&chunk).await.unwrap();
        }
        out.shutdown().await.unwrap();
        out
    });
    let mut inb = within(DEADLINE, "accept", server_in.accept())
        .await
        .unwrap();
    let mut got = Vec::with_capacity(total);
    within(DEADLINE, "transfer", inb.read_to_end(&mut got))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(got.len(), total);
    writer.await.unwrap();
    assert!(
        elapsed < fixed_window_time / 2,
        "{total} bytes took {elapsed:?}; a fixed 256 KiB window needs {fixed_window_time:?}"
    );
}
