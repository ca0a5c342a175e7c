//! What the client says about its own certificate (`client_cert`) at start: that it will
//! soon expire, or that it names another id than the one this client logs in as.

use std::time::{Duration, SystemTime};

use tracing::warn;
use tunnel_transport::PeerCert;

use crate::ClientConfig;

/// A certificate expiring this soon is worth a WARN at every start.
pub(crate) const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);

/// WARN when `cert` (this client's, from `client_cert`) expires within [`EXPIRY_WARNING`]
/// or already has, and when its name is not the id this client logs in as (the server
/// refuses that).
pub(crate) fn check_at_start(cfg: &ClientConfig, cert: &PeerCert) {
    let path = cfg
        .client_cert
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match cert.not_after.duration_since(SystemTime::now()) {
        Err(_) => warn!(
            "client_cert {path}: the certificate has EXPIRED (subject {}); the server will \
             refuse it: renew it",
            cert.subject
        ),
        Ok(left) if left < EXPIRY_WARNING => warn!(
            "client_cert {path}: the certificate expires in {} days (subject {}): renew it \
             before then",
            left.as_secs() / 86_400,
            cert.subject
        ),
        Ok(_) => {}
    }
    let id = cfg.effective_id();
    if cert.name != id {
        warn!(
            "client_cert {path}: the certificate is for client id {:?} but this client logs \
             in as {id:?}; the server will refuse it: set id = {:?}",
            cert.name, cert.name
        );
    }
}
