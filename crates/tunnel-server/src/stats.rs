//! The server as a [`StatsSource`] for the admin endpoint (tunnel-admin): the metrics of
//! [`crate::metrics`].

use std::sync::Arc;

use tunnel_admin::{StatsSource, Traffic};

use crate::{metrics, Shared};

/// The server as a [`StatsSource`].
pub(crate) struct ServerStats(pub Arc<Shared>);

impl StatsSource for ServerStats {
    fn prometheus(&self) -> String {
        let snap = metrics::snapshot(&self.0);
        metrics::prometheus(&self.0, &snap)
    }

    fn json(&self) -> String {
        let snap = metrics::snapshot(&self.0);
        let mut body = serde_json::to_value(&snap)
            .map(|mut v| {
                with_credentials(&self.0, &mut v);
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("groups".into(), crate::group::stats(&self.0));
                }
                v.to_string()
            })
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        body.push('\n');
        body
    }

    fn traffic(&self) -> Traffic {
        metrics::traffic(&self.0)
    }

    /// Healthy while the server accepts clients, and (cluster mode) is not draining nor cut
    /// off from the registry its peers reach.
    fn healthy(&self) -> bool {
        !self.0.shutdown.is_cancelled()
            && !self.0.cluster.as_ref().is_some_and(|n| n.draining())
            && !self.0.isolated.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Each client's `credential` (`shared_key`, `own_key`, `certificate`, `certificate+key`),
/// the `certificate` it presented (subject, expiry), and, for a client of the clients
/// file, its `scope` (the keys set in its entry).
fn with_credentials(shared: &Shared, snap: &mut serde_json::Value) {
    let Some(clients) = snap.get_mut("clients").and_then(|c| c.as_array_mut()) else {
        return;
    };
    for client in clients {
        let Some(id) = client.get("id").and_then(|i| i.as_str()).map(str::to_owned) else {
            continue;
        };
        let Some(obj) = client.as_object_mut() else {
            continue;
        };
        let kind = shared.credentials.kind_of(&id);
        obj.insert("credential".into(), kind.as_str().into());
        if let Some(cert) = shared.credentials.cert_of(&id) {
            let view = crate::credentials::certificate::CertView::of(&cert);
            obj.insert(
                "certificate".into(),
                serde_json::to_value(view).unwrap_or_default(),
            );
        }
        if let Some(scope) = shared.credentials.scope_of(&id) {
            let view = serde_json::to_value(scope.view()).unwrap_or_default();
            obj.insert("scope".into(), view);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::{ServerConfig, ServerError};

    #[tokio::test]
    async fn a_taken_stats_bind_stops_the_start_like_on_the_client() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = ServerConfig::default()
            .with_bind("127.0.0.1:0".parse().unwrap())
            .with_stats_bind(Some(taken.local_addr().unwrap()))
            .with_auth_key("a long random key");
        let err = crate::start(cfg).await.err().unwrap();
        assert!(matches!(err, ServerError::StatsBind { .. }), "{err}");
        assert!(err.to_string().contains("(stats_bind)"), "{err}");
    }

    #[test]
    fn an_empty_stats_token_is_refused() {
        let cfg = ServerConfig::default().with_stats_token("");
        let fields: Vec<_> = cfg.problems().into_iter().map(|p| p.field).collect();
        assert!(fields.contains(&"stats_token".to_owned()), "{fields:?}");
    }
}
