//! The one async pump for the handshake machines of [`tunnel_proto::handshake`]: both engines
//! run their side of the setup through it, so the order of messages, the frame limit and the
//! naming of timeouts cannot drift between them.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tunnel_proto::handshake::{Handshake, Phase, HANDSHAKE_MAX_FRAME};
use tunnel_proto::HandshakeError;

use crate::{read_message, write_message, TransportError};

/// Pump `machine` over `stream` until it has an outcome: write what it queued, read one frame
/// (at most the phase's limit) and feed it, and so on. An event is returned as soon as the
/// machine has one, with everything it queued before it written (a Welcome is on the wire
/// when [`ServerEvent::Welcomed`](tunnel_proto::handshake::ServerEvent::Welcomed) comes back).
/// Answer a question event on the machine and call this again to go on.
///
/// A failure the machine told the peer about (a `Rejected`, a refused stream) is written best
/// effort and the stream shut down; the machine's typed error is returned as
/// [`TransportError::Setup`]. Never reads past the frame that produced the outcome, so a
/// multiplexer can take the stream over right after.
///
/// # Errors
///
/// [`TransportError::Setup`] for what the machine decided, [`TransportError::Io`] when
/// the stream fails.
pub async fn drive<H, S>(stream: &mut S, machine: &mut H) -> Result<H::Event, TransportError>
where
    H: Handshake,
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let mut told_peer = false;
        while let Some(msg) = machine.poll_transmit() {
            match write_message(stream, &msg, HANDSHAKE_MAX_FRAME).await {
                Ok(()) => told_peer = true,
                // Telling a peer why it is turned away is best effort: it may be gone.
                Err(_) if machine.has_outcome() => {
                    while machine.poll_transmit().is_some() {}
                    told_peer = false;
                }
                Err(e) => return Err(e),
            }
        }
        match machine.poll() {
            Some(Ok(event)) => return Ok(event),
            Some(Err(e)) => {
                if told_peer {
                    let _ = stream.shutdown().await;
                }
                return Err(TransportError::Setup(e));
            }
            None => {}
        }
        match read_message(stream, machine.max_frame()).await {
            Ok(msg) => machine.on_message(msg),
            Err(TransportError::Proto(e)) => machine.on_decode_error(e),
            Err(e) => return Err(e),
        }
    }
}

/// [`drive`] within `limit`; running out is [`HandshakeError::TimedOut`] naming the phase the
/// machine was in.
///
/// # Errors
///
/// As for [`drive`], plus the timeout.
pub async fn drive_within<H, S>(
    stream: &mut S,
    machine: &mut H,
    limit: Duration,
) -> Result<H::Event, TransportError>
where
    H: Handshake,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = tokio::time::timeout(limit, drive(stream, machine)).await;
    outcome.unwrap_or_else(|_| Err(timed_out(machine.phase(), limit)))
}

/// Run one step of a connection's setup (dialing, TLS, ...) within `limit`; running out is
/// [`HandshakeError::TimedOut`] naming `phase`.
///
/// # Errors
///
/// The step's own error, or the timeout.
pub async fn within<T>(
    phase: Phase,
    limit: Duration,
    step: impl Future<Output = Result<T, TransportError>>,
) -> Result<T, TransportError> {
    tokio::time::timeout(limit, step)
        .await
        .unwrap_or_else(|_| Err(timed_out(phase, limit)))
}

/// The error for `phase` running out of its `limit`.
#[must_use]
pub fn timed_out(phase: Phase, limit: Duration) -> TransportError {
    TransportError::Setup(HandshakeError::TimedOut {
        phase,
        after: limit,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use tunnel_proto::handshake::{
        ClientBinding, ClientEvent, ClientHandshake, IdState, ServerEvent, ServerHandshake,
    };
    use tunnel_proto::{Hello, RejectCode, Welcome, PROTOCOL_VERSION};

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            client_id: "edge".into(),
            instance: [1; 16],
        }
    }

    #[tokio::test]
    async fn both_machines_over_a_byte_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let client = async {
            let mut m = ClientHandshake::new(hello(), b"k", ClientBinding::tls(Some([3; 32])));
            let ev = drive(&mut a, &mut m).await.unwrap();
            assert!(matches!(ev, ClientEvent::Welcomed(_)));
            m.open_control();
            drive(&mut a, &mut m).await.unwrap()
        };
        let server = async {
            let mut m = ServerHandshake::new(b"k".to_vec(), [4; 32], &[3; 32]);
            assert_eq!(drive(&mut b, &mut m).await.unwrap(), ServerEvent::Authorize);
            m.authorize(Ok(()));
            let ev = drive(&mut b, &mut m).await.unwrap();
            assert!(matches!(ev, ServerEvent::Authenticated(_)));
            let welcome = Welcome {
                connection_id: 1,
                heartbeat_ms: 1000,
            };
            m.admit(IdState::Free, welcome);
            let ev = drive(&mut b, &mut m).await.unwrap();
            assert_eq!(ev, ServerEvent::Welcomed { replaces: false });
            drive(&mut b, &mut m).await.unwrap()
        };
        let (c, s) = tokio::join!(client, server);
        assert_eq!(c, ClientEvent::Accepted);
        assert_eq!(s, ServerEvent::Control);
    }

    #[tokio::test]
    async fn a_rejection_reaches_the_client_as_a_typed_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let client = async {
            let mut m = ClientHandshake::new(hello(), b"wrong", ClientBinding::tls(Some([3; 32])));
            drive(&mut a, &mut m).await.unwrap_err()
        };
        let server = async {
            let mut m = ServerHandshake::new(b"k".to_vec(), [4; 32], &[3; 32]);
            drive(&mut b, &mut m).await.unwrap();
            m.authorize(Ok(()));
            drive(&mut b, &mut m).await.unwrap_err()
        };
        let (c, s) = tokio::join!(client, server);
        assert!(matches!(
            c,
            TransportError::Setup(HandshakeError::Rejected {
                code: RejectCode::Auth,
                ..
            })
        ));
        assert!(matches!(s, TransportError::Setup(HandshakeError::WrongKey)));
    }

    #[tokio::test]
    async fn an_oversize_prefix_and_a_stall_are_named() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut m = ServerHandshake::new(b"k".to_vec(), [4; 32], &[]);
        let e = drive(&mut b, &mut m).await.unwrap_err();
        assert!(matches!(
            e,
            TransportError::Setup(HandshakeError::FrameTooLarge { .. })
        ));

        let (_a, mut b) = tokio::io::duplex(64);
        let mut m = ServerHandshake::new(b"k".to_vec(), [4; 32], &[]);
        let e = drive_within(&mut b, &mut m, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "authentication timed out after 0.02 s");
    }
}
