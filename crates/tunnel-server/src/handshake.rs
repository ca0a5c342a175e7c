//! The server's side of authentication: the shared machine and driver, plus what only the
//! server knows (the wrong-key table, who holds a client id).

use std::net::IpAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tracing::info;
use tunnel_proto::handshake::HANDSHAKE_MAX_FRAME;
use tunnel_proto::handshake::{Checked, IdState, ServerEvent, ServerHandshake, Throttle};
use tunnel_proto::{Hello, Message, RejectCode, Rejected};
use tunnel_transport::{drive, write_message, BoxedStream, PeerCert, TransportError};

use crate::auth_failures::{AuthFailures, Refused, Verdict};
use crate::credentials::certificate::{self, CertRefusal, Login};
use crate::credentials::{Kind, Store};
use crate::{registry, Shared};

/// The server's reasons a handshake did not complete: the shared machine's, or the wrong-key
/// table's, which decides how loudly it is logged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The stream failed, or the machine turned the peer away (version, id, frame, ...).
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// What the failure table made of a wrong key.
    #[error("wrong auth key")]
    BadKey(Verdict),
    /// The shared key answered for an id that has its own key in the clients file.
    #[error(
        "refused: the shared auth_key cannot log in as client id {0:?}, which has its own key \
         in the clients_file"
    )]
    SharedKeyForOwnId(String),
    /// The client's certificate (or its lack) does not let it log in as the id it named.
    #[error("{refusal}")]
    Certificate {
        /// The id the Hello named.
        id: String,
        /// Why.
        refusal: CertRefusal,
    },
    /// This address has failed too often lately (its proof was not checked).
    #[error("{}", Throttle::Source)]
    Blocked,
    /// Too many wrong keys server-wide just now (the proof was not checked); `warn` once a
    /// second.
    #[error("{}", Throttle::Server)]
    Rate { warn: bool },
}

/// Run the challenge-response on a fresh transport stream with `machine` (which holds the
/// nonce and the TLS exporter value that ties the proof to this very connection). The proof
/// must be made with a key of the id the Hello named (`credentials`: its own keys, or the
/// shared key for an unlisted id). It is checked only if `failures` lets `source` try once
/// more right then, and a wrong one is recorded there.
///
/// `cert` is the client certificate TLS verified against `client_ca`: it must name the
/// Hello's id, and then stands in for a key the client does not have (a key it has must
/// still be right). `require_cert`: a client without one is refused.
pub(crate) async fn authenticate(
    stream: &mut BoxedStream,
    machine: &mut ServerHandshake,
    credentials: &Store,
    failures: &AuthFailures,
    source: IpAddr,
    cert: Option<&PeerCert>,
    require_cert: bool,
) -> Result<(Hello, Login), HandshakeError> {
    // The only event before the proof is the question whether it may be checked.
    let _authorize = drive(stream, machine).await?;
    let id = machine
        .hello()
        .map(|h| h.client_id.clone())
        .unwrap_or_default();
    // Before any key is checked, and not counted as a failure: the certificate was verified
    // (a holder of one of our certificates, not a guesser), or there is none to guess with.
    if let Err(refusal) =
        certificate::admit(cert, &id, require_cert, credentials.certificate_only(&id))
    {
        return Err(refuse(stream, id, refusal).await);
    }
    let keys = credentials.keys_for(&id);
    let listed = !keys.own.is_empty();
    let keys = if cert.is_some() {
        certificate::keys_with_cert(keys)
    } else {
        keys
    };
    // Reserved and resolved with no await between: parallel handshakes from one source see
    // each other's checks, and the reservation cannot outlive the check.
    let refused = match failures.try_attempt(source, Instant::now()) {
        Ok(attempt) => match machine.authorize_id(Ok(()), &keys) {
            Checked::Right(_) => {
                attempt.succeeded();
                None
            }
            // A key holder, not a guesser: refused by name, not counted.
            Checked::SharedForListedId => {
                attempt.succeeded();
                let id = machine
                    .hello()
                    .map(|h| h.client_id.clone())
                    .unwrap_or_default();
                Some(HandshakeError::SharedKeyForOwnId(id))
            }
            _ => Some(HandshakeError::BadKey(attempt.failed(Instant::now()))),
        },
        Err(refused) => {
            let (throttle, err) = match refused {
                Refused::Blocked => (Throttle::Source, HandshakeError::Blocked),
                Refused::Rate { warn } => (Throttle::Server, HandshakeError::Rate { warn }),
            };
            machine.authorize_id(Err(throttle), &keys);
            Some(err)
        }
    };
    // Writes the Rejected when there is one.
    let outcome = drive(stream, machine).await;
    match (outcome, refused) {
        (Ok(ServerEvent::Authenticated(hello)), None) => {
            let judged = machine
                .credential()
                .map_or(Ok(Kind::SharedKey), |c| {
                    certificate::judge(cert.is_some(), listed, &id, &keys, c)
                })
                .and_then(|kind| match kind {
                    Kind::Certificate if !credentials.certificate_alone_allowed(&id) => {
                        Err(certificate::CertRefusal::NotListed(id.clone()))
                    }
                    kind => Ok(kind),
                });
            match judged {
                Ok(kind) => Ok((
                    hello,
                    Login {
                        kind,
                        cert: cert.cloned(),
                        key: own_key(listed, &keys, machine.credential()),
                        shared_key: shared_key_used(listed, &keys, machine.credential()),
                    },
                )),
                Err(refusal) => Err(refuse(stream, id, refusal).await),
            }
        }
        (_, Some(err)) => Err(err),
        (Err(e), None) => Err(e.into()),
        (Ok(_), None) => Err(HandshakeError::Transport(TransportError::Setup(
            tunnel_proto::HandshakeError::Unexpected {
                expected: "a proof",
                got: "another event",
            },
        ))),
    }
}

/// Tell the client why its certificate did not let it in, and end the stream.
async fn refuse(stream: &mut BoxedStream, id: String, refusal: CertRefusal) -> HandshakeError {
    let msg = Message::Rejected(Rejected::new(RejectCode::Auth, refusal.to_string()));
    // The client may be gone already; the refusal is ours to report either way. Shut down,
    // not just dropped: an HTTP/2 stream dropped at once is reset, and the reset can
    // overtake the refusal.
    if write_message(stream, &msg, HANDSHAKE_MAX_FRAME)
        .await
        .is_ok()
    {
        let _ = stream.shutdown().await;
    }
    HandshakeError::Certificate { id, refusal }
}

/// Who holds `hello`'s client id now, for the machine's admission decision, as the
/// registry's own admission check sees it (the install that follows applies the same rule
/// atomically). Who holds it is for the operator: the client hears only that it is taken, or
/// any key holder could learn where another client connects from.
pub(crate) fn id_state(shared: &Shared, hello: &Hello) -> IdState {
    // Another instance holding the id on another server is refused at once; the same
    // instance takes over from there (its registration rewrites the keys).
    if let Some(rec) = shared
        .cluster
        .as_ref()
        .and_then(|n| Some((n, n.cache().client(&hello.client_id)?)))
        .filter(|(n, rec)| rec.server_id != n.server_id() && rec.instance != hello.instance)
        .map(|(_, rec)| rec)
    {
        info!(
            "the client id is held by another instance on server {}",
            rec.server_id
        );
        return IdState::Held {
            instance: rec.instance,
        };
    }
    let max_clients = shared.cfg.max_clients;
    match shared
        .registry
        .admit(&hello.client_id, hello.instance, max_clients)
    {
        Err(registry::Refused::IdInUse { holder: live }) => {
            info!(
                holder_session = live.id,
                "the client id is held by a session from {}", live.peer
            );
            IdState::Held {
                instance: live.instance,
            }
        }
        Err(registry::Refused::Full { clients }) => IdState::Full { clients },
        // Admitted: either the id is free, or a stale session of this very process holds it
        // and is replaced.
        Ok(()) => match shared.registry.session(&hello.client_id) {
            Some(live) if live.instance == hello.instance => IdState::Held {
                instance: live.instance,
            },
            _ => IdState::Free,
        },
    }
}

/// The listed id's own key that answered, if one did (not the shared key, not the empty key
/// a certificate alone answers with).
fn own_key(
    listed: bool,
    keys: &tunnel_proto::handshake::IdKeys,
    credential: Option<tunnel_proto::handshake::Credential>,
) -> Option<Vec<u8>> {
    match credential {
        Some(tunnel_proto::handshake::Credential::Own { index }) if listed => {
            keys.own.get(index).filter(|k| !k.is_empty()).cloned()
        }
        _ => None,
    }
}

/// The shared key that answered, if it did: as itself, or (for an unlisted id with a
/// certificate, see [`certificate::keys_with_cert`]) among the candidate keys.
fn shared_key_used(
    listed: bool,
    keys: &tunnel_proto::handshake::IdKeys,
    credential: Option<tunnel_proto::handshake::Credential>,
) -> Option<Vec<u8>> {
    match credential {
        Some(tunnel_proto::handshake::Credential::Shared) => keys.shared.clone(),
        Some(tunnel_proto::handshake::Credential::Own { index }) if !listed => {
            keys.own.get(index).filter(|k| !k.is_empty()).cloned()
        }
        _ => None,
    }
}
