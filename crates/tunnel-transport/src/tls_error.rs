//! What a failed TLS handshake tells the user: in words, with the setting to change.

use std::io;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, PeerIncompatible};

use crate::tls::{TlsClient, Versions};
use crate::trust::FingerprintMismatch;
use crate::TransportError;

fn client_cert_reason(cert: &CertificateError) -> String {
    match cert {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "not issued by a CA of client_ca".to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("{cert} (the client must renew it)")
        }
        other => other.to_string(),
    }
}

/// Turn what tokio-rustls reports into an error the user can act on. `client` is set on the
/// client side: its server name and accepted versions shape the advice.
pub(crate) fn handshake_error(e: io::Error, client: Option<&TlsClient>) -> TransportError {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        let reason = match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => format!(
                "the peer closed the connection during the handshake ({e}); is this the \
                 tunnel port? the peer's log may say why it refused"
            ),
            _ => format!("{e}"),
        };
        return TransportError::Handshake(reason);
    };
    let server_name = client.map(|c| &c.server_name);
    let untrusted = |reason: String| TransportError::Untrusted { reason };
    match tls {
        // Only a server that asks for client certificates (client_ca) verifies one.
        rustls::Error::InvalidCertificate(cert) if client.is_none() => {
            TransportError::ClientCertificate {
                reason: client_cert_reason(cert),
            }
        }
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => untrusted(
                "unknown issuer: set ca_cert or server_fingerprint (the server logs its \
                 fingerprint at start)"
                    .to_owned(),
            ),
            CertificateError::BadSignature => untrusted(
                "the certificate is not signed by the configured CA (another certificate with \
                 the same issuer name?): set ca_cert to the CA that issued it, or \
                 server_fingerprint (the server logs its fingerprint at start)"
                    .to_owned(),
            ),
            CertificateError::NotValidForName => untrusted(format!(
                "it is not valid for {} (set server_name to a name it is for)",
                show_name(server_name)
            )),
            CertificateError::NotValidForNameContext { presented, .. } => {
                untrusted(wrong_name(&show_name(server_name), presented))
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => untrusted(
                format!("{cert}: renew the server certificate (or check this machine's clock)"),
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                untrusted(format!("{cert}: check this machine's clock"))
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<FingerprintMismatch>() {
                Some(mismatch) => untrusted(mismatch.to_string()),
                None => untrusted(other.to_string()),
            },
            other => untrusted(format!("{other}")),
        },
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion) if client.is_some() => {
            TransportError::Handshake(old_peer(client))
        }
        rustls::Error::PeerIncompatible(
            PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
            | PeerIncompatible::ServerDoesNotSupportTls12Or13,
        ) if client.is_some() => TransportError::Handshake(old_peer(client)),
        rustls::Error::AlertReceived(alert) => TransportError::Handshake(format!(
            "the peer aborted the handshake with alert {alert:?}; its log says why (often: it \
             does not trust our certificate or speaks another protocol version)"
        )),
        rustls::Error::NoApplicationProtocol => TransportError::Handshake(
            "no common ALPN protocol: the peer is not a tls-tunnel endpoint or runs an \
             incompatible version"
                .to_owned(),
        ),
        rustls::Error::PeerIncompatible(why) => TransportError::Handshake(format!(
            "the peer is incompatible ({why:?}); tls-tunnel requires TLS 1.3"
        )),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateHandshakeMessage { .. } => {
            TransportError::Handshake(format!(
                "the peer does not speak TLS as expected ({tls}); is this the tunnel port?"
            ))
        }
        other => TransportError::Handshake(other.to_string()),
    }
}

/// The server speaks no TLS version we accept: say which we do, and what to change.
fn old_peer(client: Option<&TlsClient>) -> String {
    match client.map(|c| c.versions) {
        Some(Versions::Tls13Only { advice }) => {
            format!("the peer does not speak TLS 1.3 (it offers TLS 1.2 or older): {advice}")
        }
        _ => "the peer speaks neither TLS 1.3 nor TLS 1.2 (with ECDHE and an AEAD cipher, the \
              only TLS 1.2 suites we accept): enable TLS 1.3 or a modern TLS 1.2 on it"
            .to_owned(),
    }
}

/// The name mismatch in words: the names the certificate is for, and the one we wanted.
/// `presented` comes from webpki as the Debug form of each name (`DnsName("localhost")`,
/// `IpAddress(127.0.0.1)`), which is not for users.
fn wrong_name(wanted: &str, presented: &[String]) -> String {
    let names: Vec<&str> = presented.iter().filter_map(|n| plain_name(n)).collect();
    match names.first() {
        None => format!(
            "it names no host or address, so it cannot be valid for {wanted}: trust it by \
             server_fingerprint instead, or give the server a certificate for {wanted}"
        ),
        Some(first) => format!(
            "it is for {}, not {wanted}: set server_name = \"{first}\" (or another name it is \
             for), or use the address the certificate was made for in server_addr",
            names.join(", ")
        ),
    }
}

/// `DnsName("x")` or `UniformResourceIdentifier("x")` → `x`, `IpAddress(x)` → `x`; names a
/// client cannot ask for (`DirectoryName`, `Unsupported(..)`) → `None`.
fn plain_name(debug: &str) -> Option<&str> {
    let quoted = |s: &'static str| {
        debug
            .strip_prefix(s)
            .and_then(|r| r.strip_prefix("(\""))
            .and_then(|r| r.strip_suffix("\")"))
    };
    quoted("DnsName")
        .or_else(|| quoted("UniformResourceIdentifier"))
        .or_else(|| {
            debug
                .strip_prefix("IpAddress(")
                .and_then(|r| r.strip_suffix(')'))
        })
        .or_else(|| (!debug.contains('(') && !debug.contains(' ')).then_some(debug))
        .filter(|n| *n != "DirectoryName")
}

fn show_name(name: Option<&ServerName<'static>>) -> String {
    name.map_or_else(|| "?".to_owned(), |n| n.to_str().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_names_read_as_plain_names() {
        let presented = [
            "DnsName(\"localhost\")".to_owned(),
            "IpAddress(127.0.0.1)".to_owned(),
            "IpAddress(::1)".to_owned(),
            "DirectoryName".to_owned(),
            "Unsupported(0x88)".to_owned(),
        ];
        let text = wrong_name("example.com", &presented);
        assert_eq!(
            text,
            "it is for localhost, 127.0.0.1, ::1, not example.com: set server_name = \
             \"localhost\" (or another name it is for), or use the address the certificate \
             was made for in server_addr"
        );
        assert!(wrong_name("example.com", &[]).contains("server_fingerprint"));
        // A future webpki that renders plain names stays readable.
        assert_eq!(plain_name("tunnel.example"), Some("tunnel.example"));
    }
}
