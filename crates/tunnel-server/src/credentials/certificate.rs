//! Mutual TLS: a client certificate verified against `client_ca` proves the client id it
//! names. With a certificate a client may log in without a key; one that also has a key
//! (its own, or the shared one) must pass both.

use std::time::SystemTime;

use serde::Serialize;
use tracing::warn;
use tunnel_proto::handshake::{Credential, IdKeys};
use tunnel_transport::{ClientAuth, PeerCert, ServerIdentity, ServerTransport, TransportError};

use super::Kind;
use crate::ServerConfig;

/// The server's one TLS port, asking for client certificates when `client_ca` is set. A
/// `client_ca` that cannot be read is refused at start with `require_client_cert` (see
/// the config checks); without it the server warns and serves key logins only.
pub(crate) fn transport(
    cfg: &ServerConfig,
    identity: &ServerIdentity,
) -> Result<ServerTransport, TransportError> {
    let Some(ca) = &cfg.client_ca else {
        return ServerTransport::new(identity, &cfg.ws_path);
    };
    let auth = ClientAuth {
        ca: ca.clone(),
        require_at_tls: false,
    };
    match ServerTransport::with_client_auth(identity, &cfg.ws_path, Some(&auth)) {
        Ok(t) => Ok(t),
        Err(e @ TransportError::Pem { .. }) => {
            warn!(
                "client_ca: {e}; client certificates are NOT accepted until it is fixed \
                 (clients log in with keys only)"
            );
            ServerTransport::new(identity, &cfg.ws_path)
        }
        Err(e) => Err(e),
    }
}

/// How a client logged in: its credential kind and the certificate it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) kind: Kind,
    pub(crate) cert: Option<PeerCert>,
    /// The id's own key that proved it (none: the shared key, or a certificate alone), so a
    /// reload that removes that key from a rotating entry can end the session.
    pub(crate) key: Option<Vec<u8>>,
    /// The shared key that proved it, if that is how it logged in, so a reload that changes
    /// the shared key while this login completes still ends it.
    pub(crate) shared_key: Option<Vec<u8>>,
}

/// The certificate part of `/api/stats` for a client that presented one.
#[derive(Debug, Serialize)]
pub(crate) struct CertView {
    subject: String,
    /// Unix seconds.
    not_after: u64,
    /// Whole days left (negative: expired).
    expires_in_days: i64,
}

impl CertView {
    pub(crate) fn of(cert: &PeerCert) -> Self {
        let now = SystemTime::now();
        let days = match cert.not_after.duration_since(now) {
            Ok(left) => i64::try_from(left.as_secs() / 86_400).unwrap_or(i64::MAX),
            Err(past) => -i64::try_from(past.duration().as_secs() / 86_400).unwrap_or(i64::MAX),
        };
        CertView {
            subject: cert.subject.clone(),
            not_after: cert.not_after_unix(),
            expires_in_days: days,
        }
    }
}

/// Why a certificate does not let a Hello in, before any key is checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertRefusal {
    /// The certificate names another client id.
    #[error(
        "refused: this client's certificate is for client id {cert:?}, but it logs in as \
         {hello:?}; set id = {cert:?} in the client's config (a certificate's name is the \
         client id it proves)"
    )]
    OtherId {
        /// The certificate's name.
        cert: String,
        /// The id the Hello named.
        hello: String,
    },
    /// The id is listed without a key: only its certificate logs it in.
    #[error(
        "refused: client id {0:?} logs in by certificate only (it has no key in the \
         server's clients_file): set client_cert and client_key in the client's config"
    )]
    CertificateOnly(String),
    /// A certificate and no key, for an id that has keys of its own.
    #[error(
        "refused: client id {0:?} has its own key in the server's clients_file, so its \
         certificate alone is not enough: set auth_key in the client's config to that key"
    )]
    KeyRequired(String),
    /// A certificate alone, for an id the clients file does not list: with a clients file,
    /// the file says who may log in (a certificate proves a name, the file grants access),
    /// so removing an entry revokes a certificate client as it does a key client.
    #[error(
        "refused: client id {0:?} is not in the server's clients_file, and a certificate alone \
         logs in only the ids listed there: ask the operator to list it"
    )]
    NotListed(String),
    /// `require_client_cert` and no certificate.
    #[error(
        "refused: this server requires a client certificate: set client_cert and client_key \
         in the client's config to a certificate issued by the server's client_ca (over \
         transport tls, h2 or wss)"
    )]
    Missing,
}

/// Whether `cert` (if any) lets a client claiming `id` try its proof. `cert_only`: the id
/// is listed without keys of its own.
pub(crate) fn admit(
    cert: Option<&PeerCert>,
    id: &str,
    require: bool,
    cert_only: bool,
) -> Result<(), CertRefusal> {
    match cert {
        Some(c) if c.name != id => Err(CertRefusal::OtherId {
            cert: c.name.clone(),
            hello: id.to_owned(),
        }),
        Some(_) => Ok(()),
        None if require => Err(CertRefusal::Missing),
        None if cert_only => Err(CertRefusal::CertificateOnly(id.to_owned())),
        None => Ok(()),
    }
}

/// The keys that may answer for a certificate holder: its own keys when the id is listed
/// with some (the shared key is then refused by name, as without a certificate), else the
/// shared key; and last the empty key, which a client with a certificate and no key
/// answers with. All are passed as "own" keys so the machine checks every one; see
/// [`judge`] for what the one that matched means.
pub(crate) fn keys_with_cert(keys: IdKeys) -> IdKeys {
    let listed = !keys.own.is_empty();
    let mut own = keys.own;
    let shared = if listed {
        keys.shared
    } else {
        own.extend(keys.shared);
        None
    };
    own.push(Vec::new());
    IdKeys { own, shared }
}

/// How a client whose proof passed logged in, or why its certificate alone is not enough.
/// `keys` are those the proof was checked against ([`keys_with_cert`] for a certificate
/// holder); `listed`: its id has keys of its own in the clients file.
pub(crate) fn judge(
    cert: bool,
    listed: bool,
    id: &str,
    keys: &IdKeys,
    credential: Credential,
) -> Result<Kind, CertRefusal> {
    let empty = matches!(credential, Credential::Own { index }
        if keys.own.get(index).is_some_and(Vec::is_empty));
    match (cert, credential) {
        (false, Credential::Shared) => Ok(Kind::SharedKey),
        (false, _) => Ok(Kind::OwnKey),
        (true, _) if empty && listed => Err(CertRefusal::KeyRequired(id.to_owned())),
        (true, _) if empty => Ok(Kind::Certificate),
        (true, _) => Ok(Kind::CertificateAndKey),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cert(name: &str) -> PeerCert {
        PeerCert {
            name: name.to_owned(),
            subject: format!("CN={name}"),
            not_after: SystemTime::now() + Duration::from_secs(86_400 * 30),
        }
    }

    #[test]
    fn the_certificate_must_name_the_hello_id() {
        assert_eq!(admit(Some(&cert("alpha")), "alpha", true, true), Ok(()));
        assert!(matches!(
            admit(Some(&cert("alpha")), "beta", false, false),
            Err(CertRefusal::OtherId { .. })
        ));
        assert_eq!(admit(None, "alpha", true, false), Err(CertRefusal::Missing));
        assert_eq!(admit(None, "alpha", false, false), Ok(()));
        assert!(matches!(
            admit(None, "alpha", false, true),
            Err(CertRefusal::CertificateOnly(_))
        ));
    }

    #[test]
    fn a_listed_key_stays_required_and_the_empty_key_means_certificate_alone() {
        let own = |index| Credential::Own { index };
        let listed = keys_with_cert(IdKeys {
            own: vec![b"own".to_vec()],
            shared: Some(b"shared".to_vec()),
        });
        assert_eq!(listed.own, vec![b"own".to_vec(), Vec::new()]);
        assert_eq!(listed.shared, Some(b"shared".to_vec()));
        assert_eq!(
            judge(true, true, "a", &listed, own(0)),
            Ok(Kind::CertificateAndKey)
        );
        assert_eq!(
            judge(true, true, "a", &listed, own(1)),
            Err(CertRefusal::KeyRequired("a".into()))
        );
        let unlisted = keys_with_cert(IdKeys {
            own: vec![],
            shared: Some(b"shared".to_vec()),
        });
        assert_eq!(unlisted.own, vec![b"shared".to_vec(), Vec::new()]);
        assert_eq!(unlisted.shared, None);
        assert_eq!(
            judge(true, false, "a", &unlisted, own(0)),
            Ok(Kind::CertificateAndKey)
        );
        assert_eq!(
            judge(true, false, "a", &unlisted, own(1)),
            Ok(Kind::Certificate)
        );
        let plain = IdKeys::default();
        assert_eq!(judge(false, true, "a", &plain, own(0)), Ok(Kind::OwnKey));
        assert_eq!(
            judge(false, false, "a", &plain, Credential::Shared),
            Ok(Kind::SharedKey)
        );
    }
}
