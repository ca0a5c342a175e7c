//! Small local services for proxies to publish: an echo service (and one that answers only
//! after the whole request), one that tells its own port,
//! and a one-answer HTTP service.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An echo service: copies back what it reads, and half-closes after the peer does.
pub async fn echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A service that reads until the peer half-closes and only then sends everything back:
/// a user may send a whole first flight before reading, with no echo to make it wait.
pub async fn collect_then_echo_service() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                if s.read_to_end(&mut all).await.is_ok() && s.write_all(&all).await.is_ok() {
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// A service on 127.0.0.1:`port` that answers every connection with its own port number, as
/// text, and closes: which local port a connection reached, told by the service itself.
pub async fn own_port_service(port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(port.to_string().as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

/// A minimal HTTP/1.1 service answering every request with `body`, closing after one.
pub async fn http_service(body: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A TCP service that writes its banner to each connection and closes it. It can be stopped
/// (its port then refuses) and started again on the same address, as a service that crashes
/// and comes back would.
#[derive(Debug)]
pub struct BannerService {
    addr: SocketAddr,
    banner: &'static str,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BannerService {
    /// Start on a fresh loopback port.
    pub async fn start(banner: &'static str) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        BannerService {
            addr,
            banner,
            task: Some(Self::serve(l, banner)),
        }
    }

    fn serve(l: TcpListener, banner: &'static str) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(banner.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        })
    }

    /// Where it listens (also while stopped: where it will again).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close the port: connections are refused until [`BannerService::restart`].
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listen again on the same address.
    pub async fn restart(&mut self) {
        self.stop();
        // The aborted task drops its listener at its next poll: retry until it has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("rebind {}: {e}", self.addr)
                }
                Err(_) => tokio::task::yield_now().await,
            }
        };
        self.task = Some(Self::serve(l, self.banner));
    }
}

impl Drop for BannerService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Connect to `addr` and read until it closes (within 5 s): the banner a
/// [`BannerService`] behind it wrote, or `None` when the connection failed or brought
/// nothing.
pub async fn read_banner(addr: SocketAddr) -> Option<String> {
    let read = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(String::from_utf8_lossy(&out).into_owned()).filter(|b| !b.is_empty())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}
