//! Steady traffic through a published port for as long as a test needs it: echo round trips
//! whose size swells and ebbs, so a throughput chart has something to draw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::pattern::random_bytes;

/// The longest a [`Traffic`] runs, should a test forget to drop it.
const AT_MOST: Duration = Duration::from_secs(300);

/// Echo round trips through `addr` (an echo service behind a proxy) every 100 ms, from
/// 64 KiB to 512 KiB each way along a 20 s wave; stops on drop, or after 5 minutes.
#[derive(Debug)]
pub struct Traffic {
    task: JoinHandle<()>,
    moved: Arc<AtomicU64>,
}

impl Traffic {
    /// Start sending through `addr`.
    pub fn start(addr: SocketAddr) -> Traffic {
        let moved = Arc::new(AtomicU64::new(0));
        let counter = moved.clone();
        let task = tokio::spawn(async move {
            let data = random_bytes(512 << 10, 7);
            let started = Instant::now();
            while started.elapsed() < AT_MOST {
                let t = started.elapsed().as_secs_f64();
                let swell = 0.5 + 0.5 * (t * std::f64::consts::TAU / 20.0).sin();
                let n = (64 << 10) + ((448 << 10) as f64 * swell) as usize;
                if echo(addr, &data[..n]).await {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                // Pacing, not waiting for readiness: the wave needs a rate, not a flood.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Traffic { task, moved }
    }

    /// Bytes sent (and echoed back intact) so far, one way.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One round trip of `data`; whether it all came back unchanged within 10 s.
async fn echo(addr: SocketAddr, data: &[u8]) -> bool {
    let attempt = async {
        let s = TcpStream::connect(addr).await.ok()?;
        let (mut r, mut w) = s.into_split();
        let write = async {
            w.write_all(data).await.ok()?;
            w.shutdown().await.ok()
        };
        let mut back = Vec::with_capacity(data.len());
        let (wrote, read) = tokio::join!(write, r.read_to_end(&mut back));
        wrote?;
        read.ok()?;
        Some(back == data)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), attempt).await,
        Ok(Some(true))
    )
}
