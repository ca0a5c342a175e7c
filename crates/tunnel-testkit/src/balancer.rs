//! A load balancer in front of several servers: round-robin L4 TCP, no health checks, as an
//! operator would put in front of a cluster.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A round-robin TCP relay on 127.0.0.1:(an OS-picked port) over `backends`: each new
/// connection goes to the next backend; a backend that refuses the connect is skipped for that
/// connection (the next one is tried), and the connection is closed if all refuse. Bytes are
/// spliced both ways with half-close. Dropping it stops it, open connections included.
///
/// A backend that accepts connections but never answers (a frozen process: the kernel still
/// completes the TCP handshake) is not skipped, as by a real L4 balancer without health checks;
/// [`Balancer::set_down`] plays the health check that takes it out of the rotation.
#[derive(Debug)]
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    backends: Arc<Vec<Backend>>,
    /// Connections no backend took (all down or refusing): closed at once.
    unrouted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    relayed: AtomicUsize,
    down: AtomicBool,
}

impl Balancer {
    /// Balance over `backends` (at least one).
    pub async fn start(backends: Vec<SocketAddr>) -> Balancer {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), backends).await
    }

    /// Balance over `backends` from `addr`: the address of one dropped earlier brings a path
    /// back that was cut by dropping it.
    pub async fn start_on(addr: SocketAddr, backends: Vec<SocketAddr>) -> Balancer {
        assert!(!backends.is_empty(), "a balancer needs a backend");
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let backends: Arc<Vec<Backend>> = Arc::new(
            backends
                .into_iter()
                .map(|addr| Backend {
                    addr,
                    relayed: AtomicUsize::new(0),
                    down: AtomicBool::new(false),
                })
                .collect(),
        );
        let list = backends.clone();
        let unrouted = Arc::new(AtomicUsize::new(0));
        let dropped = unrouted.clone();
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it (on drop) aborts every connection too.
            let mut conns = JoinSet::new();
            let mut next = 0usize;
            loop {
                tokio::select! {
                    accepted = l.accept() => {
                        let Ok((down, _)) = accepted else { continue };
                        let first = next;
                        next = (next + 1) % list.len();
                        let (list, dropped) = (list.clone(), dropped.clone());
                        conns.spawn(async move {
                            if !splice(down, list, first).await {
                                dropped.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Balancer {
            addr,
            backends,
            unrouted,
            task,
        }
    }

    /// Connections relayed so far to backend `i` (its index in the list given).
    pub fn relayed_to(&self, i: usize) -> usize {
        self.backends[i].relayed.load(Ordering::Relaxed)
    }

    /// Connections no backend took: every one was down or refused.
    pub fn unrouted(&self) -> usize {
        self.unrouted.load(Ordering::Relaxed)
    }

    /// Take backend `i` out of the rotation (`true`) or put it back, as a health check would;
    /// connections already relayed to it stay.
    pub fn set_down(&self, i: usize, down: bool) {
        self.backends[i].down.store(down, Ordering::Relaxed);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connect to the first backend from `first` on that is up and accepts, then copy both ways.
/// Returns whether one took the connection.
async fn splice(mut down: TcpStream, backends: Arc<Vec<Backend>>, first: usize) -> bool {
    for k in 0..backends.len() {
        let b = &backends[(first + k) % backends.len()];
        if b.down.load(Ordering::Relaxed) {
            continue;
        }
        if let Ok(mut up) = TcpStream::connect(b.addr).await {
            b.relayed.fetch_add(1, Ordering::Relaxed);
            let _ = up.set_nodelay(true);
            let _ = down.set_nodelay(true);
            // copy_bidirectional shuts down each write side when the other side's reads end.
            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            return true;
        }
    }
    false
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

        // Taken out of the rotation: a's turns go to c.
        lb.set_down(0, true);
        let (tag, _) = ask(lb.addr, b"x").await;
        assert_eq!(tag, 3);
        lb.set_down(0, false);

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
