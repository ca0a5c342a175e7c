//! TCP socket options applied to every tunnel connection.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the first keepalive probe (rathole's value).
const KEEPALIVE_TIME: Duration = Duration::from_secs(20);
/// Time between probes once they started.
#[allow(dead_code)] // unused where socket2 cannot set the interval
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(8);

/// How long opening a TCP connection to the server may take. Shorter than the client's whole
/// connection deadline, so a timeout there says which step hung: the TCP connect (an address
/// that drops packets) or the TLS handshake after it (something answering that is not us).
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Open a TCP connection to `addr` within [`TCP_CONNECT_TIMEOUT`], tuned with [`tune_tcp`].
pub(crate) async fn dial(addr: &str) -> Result<TcpStream, crate::TransportError> {
    let connect = TcpStream::connect(addr);
    let tcp = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, connect).await {
        Ok(r) => r.map_err(|source| crate::TransportError::Connect {
            addr: addr.to_owned(),
            source,
        })?,
        Err(_) => {
            return Err(crate::TransportError::ConnectTimeout {
                addr: addr.to_owned(),
                after: TCP_CONNECT_TIMEOUT,
            })
        }
    };
    tune_tcp(&tcp);
    Ok(tcp)
}

/// Set TCP_NODELAY (yamux frames and TLS records are already batched; Nagle would only add
/// latency to small control messages) and TCP keepalive 20 s / 8 s, so a silently vanished
/// peer is noticed even without tunnel heartbeats. Best effort: failures are logged at debug.
pub fn tune_tcp(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {e}");
    }
    let keepalive = TcpKeepalive::new().with_time(KEEPALIVE_TIME);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "windows",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "ios"
    ))]
    let keepalive = keepalive.with_interval(KEEPALIVE_INTERVAL);
    if let Err(e) = SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!("could not enable TCP keepalive: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn sets_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tune_tcp(&stream);
        assert!(stream.nodelay().unwrap());
        let sock = SockRef::from(&stream);
        assert!(sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_TIME);
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        }
    }
}
