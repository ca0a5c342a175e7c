//! The server's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;

pub use tunnel_transport::ConfigProblem;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The config text is not valid TOML for a server config; every problem found is listed,
    /// each with its line and column.
    #[error("config{}: {}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default(), list(problems))]
    ConfigSyntax {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// Every problem, in file order.
        problems: Vec<ConfigProblem>,
    },
    /// The config file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config parsed but is not usable; every problem is listed.
    #[error("invalid config: {}", list(.0))]
    Config(Vec<ConfigProblem>),
    /// The certificate or key could not be loaded or generated.
    #[error("TLS setup failed: {0}")]
    Tls(#[from] tunnel_transport::TransportError),
    /// A listen address is taken or not allowed.
    #[error("cannot listen on {addr}: {source} (is another process using it?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// `stats_bind` is taken or not allowed: fatal, as on the client (set `stats_bind = ""`
    /// to run without the endpoint).
    #[error(
        "cannot listen on {addr} (stats_bind): {source}; pick a free address, or set \
         stats_bind = \"\" to run without the stats endpoint"
    )]
    StatsBind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Cluster mode could not join the registry (etcd unreachable, wrong credentials, ...).
    #[error("cannot join the cluster registry at {endpoints} (cluster.endpoints): {source}")]
    Cluster {
        /// The configured endpoints.
        endpoints: String,
        /// What the store said.
        source: tunnel_cluster::ClusterError,
    },
}

impl ServerError {
    /// The problems of a config that could not be parsed or is not usable, for a caller that
    /// shows them one per line (`--check`).
    pub fn config_problems(&self) -> Option<&[ConfigProblem]> {
        match self {
            ServerError::ConfigSyntax { problems, .. } | ServerError::Config(problems) => {
                Some(problems)
            }
            _ => None,
        }
    }
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
