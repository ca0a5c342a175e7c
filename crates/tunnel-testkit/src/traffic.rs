//! Steady traffic through a published port for as long as a test needs it: round trips whose
//! size swells and ebbs, so a throughput chart has something to draw; and a service that
//! answers less than it is sent, so the chart's two directions differ.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::pattern::random_bytes;

/// The longest a [`Traffic`] runs, should a test forget to drop it.
const AT_MOST: Duration = Duration::from_secs(300);

/// Round trips through `addr` (an echo service or a [`quarter_echo_service`] behind a proxy)
/// every 100 ms, sending from 64 KiB to 512 KiB along two waves (20 s and 67 s) and reading
/// the answer to its end; stops on drop, or after 5 minutes.
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
                let wave = |period: f64| (t * std::f64::consts::TAU / period).sin();
                let swell = 0.5 + 0.3 * wave(20.0) + 0.2 * wave(67.0);
                let n = (64 << 10) + ((448 << 10) as f64 * swell) as usize;
                if exchange(addr, &data[..n]).await {
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                // Pacing, not waiting for readiness: the wave needs a rate, not a flood.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Traffic { task, moved }
    }

    /// Bytes sent in round trips that were answered (a prefix of what was sent, to the
    /// peer's close) so far.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One round trip of `data`: send it, half-close, read to the end. Whether the answer came
/// within 10 s, non-empty and a prefix of `data` (all of it from an echo service).
async fn exchange(addr: SocketAddr, data: &[u8]) -> bool {
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
        Some(!back.is_empty() && data.starts_with(&back))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(10), attempt).await,
        Ok(Some(true))
    )
}

/// A service that reads until the peer half-closes, then answers with the first quarter of
/// what it read and closes.
pub async fn quarter_echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let _ = s.write_all(&got[..got.len().div_ceil(4)]).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}
