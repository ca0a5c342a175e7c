//! Audit events: logins, rejections, registrations, revocations and scope changes, one
//! structured line each (target `tunnel_server::audit`) with the event, client id, address
//! and reason; with `log_format = "json"` each is one JSON object.

use std::net::IpAddr;

use tracing::{debug, info, warn};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Login,
    Rejection,
    Registration,
    Revocation,
    ScopeChange,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Login => "login",
            Event::Rejection => "rejection",
            Event::Registration => "registration",
            Event::Revocation => "revocation",
            Event::ScopeChange => "scope_change",
        }
    }
}

/// One audit line. `quiet`: a refusal a stranger can repeat at will (a blocked address
/// knocking again), logged at debug so that it cannot flood the log.
pub(crate) fn record(
    event: Event,
    client: Option<&str>,
    addr: Option<IpAddr>,
    reason: &str,
    quiet: bool,
) {
    let event = event.as_str();
    let client = client.unwrap_or("-");
    let addr = addr.map_or_else(|| "-".to_owned(), |a| a.to_string());
    if quiet {
        debug!(target: "tunnel_server::audit", event, client, addr, reason);
    } else if event == "revocation" {
        warn!(target: "tunnel_server::audit", event, client, addr, reason);
    } else {
        info!(target: "tunnel_server::audit", event, client, addr, reason);
    }
}

/// A client's session started.
pub(crate) fn login(shared: &crate::Shared, session: &crate::session::SessionRecord) {
    let kind = shared.credentials.kind_of(&session.client_id);
    let reason = match kind {
        super::Kind::OwnKey => "logged in with its own key",
        super::Kind::SharedKey => "logged in with the shared auth_key",
        super::Kind::Certificate => "logged in with its client certificate",
        super::Kind::CertificateAndKey => "logged in with its client certificate and a key",
    };
    record(
        Event::Login,
        Some(&session.client_id),
        Some(session.peer.ip()),
        reason,
        false,
    );
}

/// A client certificate (or its lack) refused a login: `id` when the client got as far as
/// naming one. `stranger`: a refusal anyone can cause at will (no certificate of ours, or
/// none at all), so its WARN and audit line come at most once per window (with a count of
/// the rest) and the others are logged at debug; a certificate of our CA naming the wrong
/// id is logged every time.
pub(crate) fn refused_certificate(
    shared: &crate::Shared,
    addr: IpAddr,
    id: Option<&str>,
    reason: &dyn std::fmt::Display,
    stranger: bool,
) {
    let reason = format!("client certificate: {reason}");
    let loud = !stranger
        || match shared.limit_warnings.check("client certificate".to_owned()) {
            Some(more) => {
                let client = id.map(tunnel_proto::PeerText);
                warn!(peer = %addr, client = ?client, "client rejected: {reason}{more}");
                true
            }
            None => false,
        };
    if !stranger {
        let client = id.map(tunnel_proto::PeerText);
        warn!(peer = %addr, client = ?client, "client rejected: {reason}");
    }
    shared.metrics.events.record(
        crate::metrics::EventKind::LoginRefused.as_str(),
        &addr.to_string(),
        id,
        &reason,
    );
    record(Event::Rejection, id, Some(addr), &reason, !loud);
}

/// The shared key answered for an id that has its own key.
pub(crate) fn refused_shared_key(shared: &crate::Shared, addr: IpAddr, id: &str) {
    let reason = "the shared auth_key cannot log in as a client id listed in the clients_file";
    warn!(peer = %addr, client = %tunnel_proto::PeerText(id), "client rejected: {reason}");
    shared.metrics.event(
        crate::metrics::EventKind::LoginRefused,
        addr,
        Some(id),
        reason,
    );
}

/// The audit line of a recent event the stats endpoint also shows. A login refused before
/// its proof was looked at (a blocked address knocking again) is quiet, and virtual-host
/// logins are the proxies' users, not clients.
pub(crate) fn metrics_event(
    kind: crate::metrics::EventKind,
    addr: IpAddr,
    client: Option<&str>,
    reason: &str,
) {
    use crate::metrics::EventKind as K;
    match kind {
        K::AuthFailure | K::RegisterRefused => {
            record(Event::Rejection, client, Some(addr), reason, false)
        }
        K::LoginRefused => record(
            Event::Rejection,
            client,
            Some(addr),
            reason,
            client.is_none(),
        ),
        K::VhostAuthFailure | K::VhostLoginRefused => {}
    }
}
