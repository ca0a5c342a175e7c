//! The server side of authentication: hello, challenge, proof.

use std::net::IpAddr;
use std::time::Instant;

use tunnel_proto::{auth, AuthResponse, Challenge, Hello, Message, RejectCode, Rejected};
use tunnel_transport::{read_message, write_message, BoxedStream, TransportError};

use crate::auth_failures::{AuthFailures, Refused, Verdict};

/// Handshake frames are small; a peer that announces a bigger one is not a client of ours.
pub(crate) const HANDSHAKE_MAX_FRAME: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error("closed the connection during the handshake")]
    Closed,
    #[error("protocol error: expected {expected}, got {got}")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("speaks protocol version {0}, this server speaks {v}", v = tunnel_proto::PROTOCOL_VERSION)]
    Version(u16),
    /// What the failure table made of it.
    #[error("wrong auth key")]
    BadKey(Verdict),
    /// This address has failed too often lately (its proof was not checked).
    #[error("refused: too many wrong auth keys from this address lately")]
    Blocked,
    /// Too many wrong keys server-wide just now (the proof was not checked); `warn` once a
    /// second.
    #[error("refused: too many wrong auth keys server-wide (max_auth_failures_per_second)")]
    Rate { warn: bool },
    #[error("invalid client id: {0}")]
    BadId(String),
}

/// Run the challenge-response on a fresh transport stream. `binding` is the TLS exported
/// keying material, which ties the proof to this very connection. The proof is checked only
/// if `failures` lets `source` try once more right then, and a wrong one is recorded there.
pub(crate) async fn authenticate(
    stream: &mut BoxedStream,
    binding: &[u8],
    key: &[u8],
    nonce: [u8; 32],
    failures: &AuthFailures,
    source: IpAddr,
) -> Result<Hello, HandshakeError> {
    let hello = match read_message(stream, HANDSHAKE_MAX_FRAME).await? {
        Some(Message::Hello(h)) => h,
        Some(other) => return Err(unexpected("Hello", &other)),
        None => return Err(HandshakeError::Closed),
    };
    if hello.version != tunnel_proto::PROTOCOL_VERSION {
        let reason = format!(
            "protocol version {} is not supported; this server speaks version {}: run the same tls-tunnel release on both sides",
            hello.version,
            tunnel_proto::PROTOCOL_VERSION
        );
        reject(stream, RejectCode::Version, reason).await;
        return Err(HandshakeError::Version(hello.version));
    }
    if let Err(msg) = tunnel_proto::validate_name(&hello.client_id) {
        let reason = format!("client id {:?} is invalid: {msg}", hello.client_id);
        reject(stream, RejectCode::BadConfig, reason.clone()).await;
        return Err(HandshakeError::BadId(reason));
    }
    let challenge = Message::Challenge(Challenge {
        version: tunnel_proto::PROTOCOL_VERSION,
        nonce,
        // Without our own TLS (plain WebSocket behind a TLS-terminating proxy) there is no
        // keying material to bind to; the client must then leave it out too.
        bound: !binding.is_empty(),
    });
    write_message(stream, &challenge, HANDSHAKE_MAX_FRAME).await?;
    let mac = match read_message(stream, HANDSHAKE_MAX_FRAME).await? {
        Some(Message::AuthResponse(AuthResponse { mac })) => mac,
        Some(other) => return Err(unexpected("AuthResponse", &other)),
        None => return Err(HandshakeError::Closed),
    };
    // Reserved and resolved with no await between: parallel handshakes from one source see
    // each other's checks, and the reservation cannot outlive the check.
    let attempt = match failures.try_attempt(source, Instant::now()) {
        Ok(a) => a,
        Err(refused) => return Err(refuse(stream, refused).await),
    };
    if !auth::verify_mac(key, &nonce, binding, &hello, &mac) {
        let verdict = attempt.failed(Instant::now());
        reject(
            stream,
            RejectCode::Auth,
            "authentication failed: the client's auth_key does not match the server's".into(),
        )
        .await;
        return Err(HandshakeError::BadKey(verdict));
    }
    attempt.succeeded();
    Ok(hello)
}

/// Turn a login away without checking its proof. `Limit`, not `Auth`: a client with the right
/// key caught in someone else's flood should retry, not give up.
async fn refuse(stream: &mut BoxedStream, refused: Refused) -> HandshakeError {
    let (reason, err) = match refused {
        Refused::Blocked => (
            "refused: too many wrong auth keys from this address lately; try again later",
            HandshakeError::Blocked,
        ),
        Refused::Rate { warn } => (
            "refused: too many failed logins on this server just now; try again in a moment",
            HandshakeError::Rate { warn },
        ),
    };
    reject(stream, RejectCode::Limit, reason.into()).await;
    err
}

/// Tell the peer why it is turned away. Best effort: it may already be gone.
pub(crate) async fn reject(stream: &mut BoxedStream, code: RejectCode, reason: String) {
    let msg = Message::Rejected(Rejected { code, reason });
    let _ = write_message(stream, &msg, HANDSHAKE_MAX_FRAME).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(stream).await;
}

fn unexpected(expected: &'static str, got: &Message) -> HandshakeError {
    HandshakeError::Unexpected {
        expected,
        got: got.name(),
    }
}
