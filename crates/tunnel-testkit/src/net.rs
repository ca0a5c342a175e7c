//! Loopback sockets: free and refusing ports, round trips, and checks that a port serves or
//! closes promptly.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pattern::random_bytes;

/// The loopback address `127.0.0.<last>`: Linux answers on all of 127/8, so tests can play
/// many sources.
pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A TCP connection to `to` from `from` (any loopback address), port picked by the OS.
pub async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    sock.connect(to).await
}

/// Whether a connection from `from` to `to` (an echo behind a published port) is served
/// (the echo comes back) rather than closed at once without a byte (reset even before the
/// connect returned, as happens with a server in another process).
pub async fn served_from(from: IpAddr, to: SocketAddr) -> bool {
    let Ok(mut s) = connect_from(from, to).await else {
        return false;
    };
    // A refused connection is reset before or after this write; either way no echo.
    let _ = s.write_all(b"ping").await;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => {
            assert_eq!(&buf, b"ping");
            true
        }
        Ok(Err(_)) => false,
        Err(_) => panic!("neither served nor closed within 5 s"),
    }
}

/// A port that was free a moment ago, outside the range the OS picks outgoing ports from.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    // Below the kernel's ephemeral range: a port picked there could be taken, before the test
    // binds it, as the local port of one of the thousands of outgoing connections the other
    // tests of this process open. Each call takes the next port of this process's walk
    // (started at an offset drawn from the pid, so parallel test processes rarely meet), and
    // skips a port something already holds.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = ephemeral_low().clamp(12_000, 32_768);
    let (first, span) = (10_000u32, u32::from(low) - 10_000);
    let start = std::process::id().wrapping_mul(7_919) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(first + (start + n) % span).unwrap_or(10_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `n` consecutive ports that were free a moment ago; returns the first. They come from the
/// walk of [`free_port`], so no other caller in this process is given one of them.
pub fn free_port_block(n: u16) -> u16 {
    loop {
        let first = free_port();
        // A port taken inside the run, or the walk wrapping: start over past it.
        if (1..n).all(|i| free_port() == first.wrapping_add(i)) {
            return first;
        }
    }
}

/// The first port of the kernel's ephemeral range (Linux; 32768 where it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub async fn is_listening(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// Send `data` through `addr`, half-close, and return everything read back until EOF.
pub async fn roundtrip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let payload = data.to_vec();
    let writer = tokio::spawn(async move {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    back
}

/// The address of published port `port` (the fixtures publish on loopback).
pub fn published(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A loopback `host:port` for a visitor to bind (the OS picked the port a moment ago).
pub fn visitor_bind() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Connect to `addr` as an application would, send a few bytes, and require the connection
/// to be closed (EOF or reset) within `within` without a single byte coming back.
pub async fn expect_prompt_close(addr: &str, within: Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A refused connection must not reach the service: an echo service would answer this.
    let _ = s.write_all(b"hello?").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(within, s.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{addr}: the connection stayed open for {within:?}"));
    if let Ok(n) = read {
        assert_eq!(n, 0, "{addr}: a refused connection delivered {n} bytes");
    }
    assert!(started.elapsed() < within);
}

/// A loopback port that refuses connections for as long as the returned socket lives: it is
/// bound but never listens, so unlike a port that was merely free a moment ago, no other
/// listener can take it meanwhile.
pub fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// A short echo round trip through 127.0.0.1:`port` that must finish within `within`;
/// false on any failure (refused, closed, wrong bytes, too slow).
pub async fn serves_within(port: u16, within: Duration) -> bool {
    serves_at(published(port), within).await
}

/// [`serves_within`] at any address (a published port on another loopback address, as
/// cluster members use).
pub async fn serves_at(addr: SocketAddr, within: Duration) -> bool {
    let data = random_bytes(64 * 1024, u64::from(addr.port()));
    let attempt = async {
        let s = TcpStream::connect(addr).await.ok()?;
        let (mut r, mut w) = s.into_split();
        let payload = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&payload).await.ok()?;
            w.shutdown().await.ok()
        });
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await.ok()?;
        writer.await.ok()??;
        Some(back == data)
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Some(true)))
}

/// [`serves_within`] five seconds.
pub async fn serves(port: u16) -> bool {
    serves_within(port, Duration::from_secs(5)).await
}

/// Read and discard until the peer closes (EOF or error); panics if that takes longer
/// than `within`. Returns how long it took.
pub async fn closed_within<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(within, drain)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {within:?}"));
    started.elapsed()
}

/// Whether a fresh connection to `port` is refused or closed at once without a byte.
pub async fn refused_or_closed(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(published(port)).await else {
        return true;
    };
    let _ = s.write_all(b"hello?").await;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}
