//! The one error type of this crate.

use std::net::SocketAddr;

/// Why the admin endpoint could not start.
///
/// Not `non_exhaustive`: an engine maps each variant to its own error, and a new one should
/// make it decide how.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// `stats_bind` could not be listened on.
    #[error(
        "cannot listen on {addr} (stats_bind): {source}; pick a free address, or set \
         stats_bind = \"\" to run without the stats endpoint"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
