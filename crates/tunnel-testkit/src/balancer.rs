//! A load balancer in front of several servers: round-robin L4 TCP, no health checks, as an
//! operator would put in front of a cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A round-robin TCP relay on 127.0.0.1:(an OS-picked port) over `backends`: each new
/// connection goes to the next backend; a backend that refuses the connect is skipped for that
/// connection (the next one is tried), and the connection is closed if all refuse. Bytes are
/// spliced both ways with half-close. Dropping it stops it, open connections included.
#[derive(Debug)]
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    counts: Arc<Vec<AtomicUsize>>,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Balance over `backends` (at least one).
    pub async fn start(backends: Vec<SocketAddr>) -> Balancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let counts: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let backends = Arc::new(backends);
        let seen = counts.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it (on drop) aborts every connection too.
            let mut conns = JoinSet::new();
            let mut next = 0usize;
            loop {
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((down, _)) = accepted else { continue };
                        let first = next;
                        next = (next + 1) % backends.len();
                        conns.spawn(splice(down, backends.clone(), first, seen.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Balancer { addr, counts, task }
    }

    /// Connections relayed so far to backend `i` (its index in the list given).
    pub fn relayed_to(&self, i: usize) -> usize {
        self.counts[i].load(Ordering::Relaxed)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connect to the first backend from `first` on that accepts, then copy both ways.
async fn splice(
    mut down: TcpStream,
    backends: Arc<Vec<SocketAddr>>,
    first: usize,
    counts: Arc<Vec<AtomicUsize>>,
) {
    for k in 0..backends.len() {
        let i = (first + k) % backends.len();
        if let Ok(mut up) = TcpStream::connect(backends[i]).await {
            counts[i].fetch_add(1, Ordering::Relaxed);
            let _ = up.set_nodelay(true);
            let _ = down.set_nodelay(true);
            // copy_bidirectional shuts down each write side when the other side's reads end.
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::net::refusing_port;

    /// A backend that writes `tag`, then echoes until EOF, then closes.
    async fn tagged(tag: u8) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    s.write_all(&[tag]).await.unwrap();
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        addr
    }

    /// Which backend answered, and the echo of `data` after a half-close.
    async fn ask(addr: SocketAddr, data: &[u8]) -> (u8, Vec<u8>) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        (back[0], back[1..].to_vec())
    }

    #[tokio::test]
    async fn round_robin_skips_a_refusing_backend_and_keeps_half_close() {
        let (_closed, port) = refusing_port();
        let down: SocketAddr = ([127, 0, 0, 1], port).into();
        let (a, c) = (tagged(1).await, tagged(3).await);
        let lb = Balancer::start(vec![a, down, c]).await;
        let mut tags = Vec::new();
        for i in 0..6u8 {
            let data = vec![i; 1000 + usize::from(i)];
            let (tag, echoed) = ask(lb.addr, &data).await;
            assert_eq!(echoed, data, "the echo after our half-close");
            tags.push(tag);
        }
        // Turns: a, (down: skipped to c), c, a, (down: c), c.
        assert_eq!(tags, [1, 3, 3, 1, 3, 3]);
        assert_eq!(
            (lb.relayed_to(0), lb.relayed_to(1), lb.relayed_to(2)),
            (2, 0, 4)
        );

        let addr = lb.addr;
        drop(lb);
        tokio::task::yield_now().await;
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "still accepting after drop");
    }
}
