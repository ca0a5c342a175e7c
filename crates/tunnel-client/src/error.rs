//! The client's one error type.

use std::path::PathBuf;

use tunnel_proto::RejectCode;

pub use tunnel_transport::ConfigProblem;

/// Why the client could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The config file could not be read or parsed.
    #[error("config{}: {message}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    ConfigSyntax {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// The parser's message (it names the key and line).
        message: String,
    },
    /// The config parsed but is not usable; every problem is listed.
    #[error("invalid config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigProblem>),
    /// Connecting or the TLS handshake failed (retried unless it cannot heal).
    #[error("cannot reach the server: {0}")]
    Transport(#[from] tunnel_transport::TransportError),
    /// The server turned the client away.
    #[error("the server refused the client: {}", tunnel_proto::PeerText(reason))]
    Rejected {
        /// The server's reason code.
        code: RejectCode,
        /// The server's words.
        reason: String,
    },
    /// The server broke the protocol or closed the connection mid-handshake.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The stats endpoint's address could not be listened on.
    #[error("cannot listen on {addr} (stats_bind): {source}")]
    StatsBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A visitor's `bind` address could not be listened on.
    #[error("visitor {name}: cannot listen on {bind}: {source}")]
    VisitorBind {
        /// The visitor.
        name: String,
        /// Its bind address.
        bind: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl ClientError {
    /// Whether retrying can help: a wrong key, an unsupported version or a bad config
    /// will fail the same way every time. A client id in use is not permanent by itself: the
    /// client decides by whether it has served yet (see [`ClientError::is_id_in_use`]).
    pub fn is_permanent(&self) -> bool {
        match self {
            ClientError::Rejected { code, .. } => code.is_permanent(),
            ClientError::Transport(e) => e.is_permanent(),
            ClientError::ConfigSyntax { .. }
            | ClientError::Config(_)
            | ClientError::VisitorBind { .. }
            | ClientError::StatsBind { .. } => true,
            ClientError::Protocol(_) => false,
        }
    }

    /// Whether another running client (another process, by its instance token) holds this
    /// client's id on the server. This process's own stale session never causes it: the server
    /// lets the same instance replace it.
    pub fn is_id_in_use(&self) -> bool {
        matches!(
            self,
            ClientError::Rejected {
                code: RejectCode::IdInUse,
                ..
            }
        )
    }
}
