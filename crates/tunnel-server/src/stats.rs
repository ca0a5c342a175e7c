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
        let mut body =
            serde_json::to_string(&snap).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        body.push('\n');
        body
    }

    fn traffic(&self) -> Traffic {
        metrics::traffic(&self.0)
    }

    /// Healthy while the server accepts clients, and (cluster mode) is not draining.
    fn healthy(&self) -> bool {
        !self.0.shutdown.is_cancelled() && !self.0.cluster.as_ref().is_some_and(|n| n.draining())
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
