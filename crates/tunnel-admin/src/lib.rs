//! The admin HTTP endpoint of both tls-tunnel engines: `/metrics` (Prometheus text),
//! `/api/stats` (JSON), `/api/history` (throughput of the last 15 minutes), `/healthz`, and
//! a dashboard at `/` built into the binary.
//!
//! * [`AdminConfig`]: `stats_bind` and `stats_token`, checked the same way on both sides
//!   ([`AdminConfig::problems`]: an empty token is refused).
//! * [`StatsListener::bind`] then [`StatsListener::serve`]: one accept loop with back-off
//!   (`tunnel_transport::Acceptor`), connections bounded in number, head size and lifetime,
//!   tracked so that stopping the endpoint closes them.
//! * [`StatsSource`]: what an engine reports; [`Exposition`]: the one Prometheus writer
//!   (on `prometheus-client`); [`Traffic`]: the cumulative counters the history samples;
//!   [`EventLog`]: recent refusals for the dashboard, bounded.
//!
//! ```
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//! use tunnel_admin::{AdminConfig, Exposition, StatsListener, StatsSource};
//!
//! struct Engine;
//!
//! impl StatsSource for Engine {
//!     fn prometheus(&self) -> String {
//!         let mut page = Exposition::new();
//!         page.gauge("tunnel_clients", "Clients connected now.", 0);
//!         page.render()
//!     }
//!     fn json(&self) -> String {
//!         "{\"clients\":[]}\n".into()
//!     }
//!     fn healthy(&self) -> bool {
//!         true
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = AdminConfig::new(Some("127.0.0.1:0".parse()?), Some("s3cret".into()));
//! assert!(cfg.problems().is_empty());
//! let listener = StatsListener::bind(&cfg).await?.ok_or("stats_bind is set")?;
//! println!("stats on {}", listener.local_addr());
//! let stop = CancellationToken::new();
//! let serving = tokio::spawn(listener.serve(Arc::new(Engine), stop.clone()));
//! stop.cancel();
//! serving.await?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs, unreachable_pub)]

mod access;
mod assets;
mod config;
mod endpoint;
mod error;
mod events;
mod exposition;
mod history;
mod routes;

pub use config::AdminConfig;
pub use endpoint::{
    StatsListener, STATS_CONNECTION_LIFETIME, STATS_HEADER_TIMEOUT, STATS_MAX_CONNECTIONS,
};
pub use error::AdminError;
pub use events::{Event, EventLog, EVENTS_KEPT, EVENTS_SHOWN};
pub use exposition::{Exposition, Family};
pub use history::{Counts, Traffic, MAX_SERIES, SERIES_POINTS, SERIES_STEP, TOTAL_POINTS};

/// What an engine reports on the endpoint.
pub trait StatsSource: Send + Sync + 'static {
    /// The Prometheus text exposition (format 0.0.4), ending in a newline.
    fn prometheus(&self) -> String;
    /// The JSON document for `/api/stats`.
    fn json(&self) -> String;
    /// Whether `/healthz` answers 200 (else 503).
    fn healthy(&self) -> bool;
    /// Cumulative byte counters per series (proxy, visitor), read every second for
    /// `/api/history`. Without it the history stays empty.
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}
