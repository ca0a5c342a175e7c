//! The server as a [`StatsSource`] for the admin endpoint (tunnel-admin): the metrics of
//! [`crate::metrics`].

use std::sync::Arc;

use tunnel_admin::StatsSource;

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
