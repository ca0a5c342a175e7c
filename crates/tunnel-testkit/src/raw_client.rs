//! A client played by hand over real TLS: it logs in and registers like a real one, then
//! lets the test answer the streams the server opens toward it (or not), for what a real
//! client never does.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tunnel_mux::{Incoming, MuxHandle, MuxStream};
use tunnel_proto::{Message, ProxySpec, RegisterRequest, StreamOpen, StreamStatus};
use tunnel_transport::{read_message, write_message};

/// The largest frame this client reads or writes (a registration reply fits).
const MAX_FRAME: usize = 65_536;

/// A hand-driven client session, registered; its control stream answers heartbeats by
/// itself for as long as the session lives.
pub struct RawClient {
    /// The session: open streams, close it.
    pub control: MuxHandle,
    /// The streams the server opens toward this client.
    pub incoming: Incoming,
}

impl std::fmt::Debug for RawClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawClient").finish_non_exhaustive()
    }
}

impl RawClient {
    /// The next stream the server opens and its header (read exactly, nothing past it).
    pub async fn accept(&mut self) -> (MuxStream, StreamOpen) {
        let mut s = self.incoming.accept().await.expect("the session ended");
        match read_message(&mut s, MAX_FRAME).await.unwrap() {
            Some(Message::StreamOpen(open)) => (s, open),
            other => panic!("expected a stream header, got {other:?}"),
        }
    }
}

/// Log in to the tunnel port `server` (any certificate trusted) as client `id` with `key`,
/// and register `proxies`; panics on any refusal.
pub async fn raw_client(
    server: SocketAddr,
    key: &str,
    id: &str,
    proxies: Vec<ProxySpec>,
) -> RawClient {
    let mut tls = crate::stranger_tls(server, &[tunnel_transport::ALPN_TUNNEL]).await;
    let binding = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], tunnel_proto::EKM_LABEL, None)
        .unwrap();
    let hello = crate::hello(id);
    send(&mut tls, Message::Hello(hello.clone())).await;
    let challenge = match read_message(&mut tls, MAX_FRAME).await.unwrap() {
        Some(Message::Challenge(c)) => c,
        other => panic!("expected a challenge, got {other:?}"),
    };
    send(
        &mut tls,
        crate::answer(&challenge, key.as_bytes(), &binding, &hello),
    )
    .await;
    match read_message(&mut tls, MAX_FRAME).await.unwrap() {
        Some(Message::Welcome(_)) => {}
        other => panic!("expected a welcome, got {other:?}"),
    }
    let cfg = tunnel_mux::MuxConfig::default();
    let (control, incoming) = tunnel_mux::start(tls, tunnel_mux::Mode::Client, &cfg);
    let mut ctrl = control.open().await.unwrap();
    send(&mut ctrl, Message::StreamOpen(StreamOpen::Control)).await;
    match read_message(&mut ctrl, MAX_FRAME).await.unwrap() {
        Some(Message::StreamStatus(StreamStatus::Ok)) => {}
        other => panic!("expected Ok for the control stream, got {other:?}"),
    }
    let request = RegisterRequest {
        proxies,
        visitors: Vec::new(),
    };
    send(&mut ctrl, Message::Register(request)).await;
    loop {
        match read_message(&mut ctrl, MAX_FRAME).await.unwrap() {
            Some(Message::RegisterReply(r)) => {
                assert!(r.results.iter().all(|r| r.error.is_none()), "{r:?}");
                break;
            }
            Some(Message::Ping(n)) => send(&mut ctrl, Message::Pong(n)).await,
            Some(_) => {}
            None => panic!("the server closed the control stream"),
        }
    }
    tokio::spawn(async move {
        while let Ok(Some(msg)) = read_message(&mut ctrl, MAX_FRAME).await {
            if let Message::Ping(n) = msg {
                if write_message(&mut ctrl, &Message::Pong(n), MAX_FRAME)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    RawClient { control, incoming }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, msg: Message) {
    write_message(s, &msg, MAX_FRAME).await.unwrap();
}
