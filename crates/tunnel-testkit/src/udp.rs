//! UDP fixtures: an echo service, one that tells its own port, free UDP ports, a request/answer with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// A UDP echo service on 127.0.0.1: every datagram goes back whole to its sender.
pub async fn udp_echo_service() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(&buf[..n], from).await;
        }
    });
    addr
}

/// A UDP service on 127.0.0.1:`port` answering every datagram with its own port number, as
/// text: which local port a datagram reached, told by the service itself.
pub async fn udp_own_port_service(port: u16) {
    let sock = UdpSocket::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((_, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(port.to_string().as_bytes(), from).await;
        }
    });
}

/// A UDP service on 127.0.0.1 answering every datagram with `tag`: the answer says which
/// service of several behind one port a flow reached.
pub async fn udp_tag_service(tag: &'static str) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((_, from)) = sock.recv_from(&mut buf).await {
            let _ = sock.send_to(tag.as_bytes(), from).await;
        }
    });
    addr
}

/// A port free for both TCP and UDP on 127.0.0.1 a moment ago (a udp proxy's publish_port).
pub fn free_udp_port() -> u16 {
    loop {
        let port = crate::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A socket on 127.0.0.1 with a port of its own: one source address.
pub async fn udp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Send `payload` to `to` and wait up to `within` for one datagram back; `None` on timeout.
pub async fn udp_ask(
    sock: &UdpSocket,
    to: SocketAddr,
    payload: &[u8],
    within: Duration,
) -> Option<Vec<u8>> {
    sock.send_to(payload, to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(within, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf.truncate(n);
    Some(buf)
}
