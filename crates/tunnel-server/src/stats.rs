//! The server's stats endpoint: binds `stats_bind` and serves the metrics of [`crate::metrics`].

use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tunnel_mux::StatsSource;

use crate::{metrics, Shared};

/// Bind the endpoint. A failure is logged, not fatal: the tunnel matters more than its stats.
pub(crate) async fn bind(shared: &Shared) -> Option<TcpListener> {
    let addr = shared.cfg.stats_bind?;
    match TcpListener::bind(addr).await {
        Ok(l) => {
            let local = l.local_addr().unwrap_or(addr);
            if !local.ip().is_loopback() && shared.cfg.stats_token.is_none() {
                warn!(
                    %local,
                    "the stats endpoint listens beyond loopback without stats_token: anyone who reaches it can read client ids, addresses and traffic"
                );
            }
            info!(%local, "stats endpoint listening");
            Some(l)
        }
        Err(e) => {
            error!("stats endpoint disabled: cannot listen on {addr} (stats_bind): {e}");
            None
        }
    }
}

/// The server as a [`StatsSource`].
pub(crate) struct ServerStats(pub Arc<Shared>);

impl StatsSource for ServerStats {
    fn prometheus(&self) -> String {
        let snap = metrics::snapshot(&self.0);
        metrics::prometheus(&self.0, &snap)
    }

    fn json(&self) -> String {
        let snap = metrics::snapshot(&self.0);
        let mut body = serde_json::to_string_pretty(&snap)
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        body.push('\n');
        body
    }

    /// Healthy while the server accepts clients.
    fn healthy(&self) -> bool {
        !self.0.shutdown.is_cancelled()
    }
}
