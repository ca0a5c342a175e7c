//! The client's one error type.

use std::path::PathBuf;

use tunnel_proto::{HandshakeError, RejectCode};
use tunnel_transport::TransportError;

pub use tunnel_transport::ConfigProblem;

/// Why the client could not start, or stopped; and (logged, never returned) why one request
/// to a local HTTP service or one health check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The config text is not valid TOML for a client config; every problem found is listed,
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
    /// Connecting or the TLS handshake failed, or a phase of the setup timed out (retried
    /// unless it cannot heal).
    #[error("cannot reach the server: {0}")]
    Transport(tunnel_transport::TransportError),
    /// The connection's setup failed: the server broke the protocol, refused the first
    /// stream, or the channel binding cannot be agreed on.
    #[error("{0}")]
    Handshake(HandshakeError),
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
    /// The threads that carry the extra `connections` could not be started.
    #[error(
        "cannot start {threads} threads for the client's connections: {source}; lower connections"
    )]
    SessionThreads {
        /// How many were asked for.
        threads: usize,
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
    /// An HTTP proxy could not connect to its local service (the user gets a 502).
    #[error("cannot reach the local service{}: {source}", addr.as_ref().map(|a| format!(" {a}")).unwrap_or_default())]
    LocalUnreachable {
        /// The service's address, when the message should name it.
        addr: Option<String>,
        /// The OS error.
        source: std::io::Error,
    },
    /// TLS to an `http2` proxy's local service (`local_tls`) failed.
    #[error("TLS to the local service {addr} failed: {source}")]
    LocalTls {
        /// The service's address.
        addr: String,
        /// What went wrong in the handshake.
        source: TransportError,
    },
    /// An `http2` proxy's local service answered TLS but not with ALPN `h2`: it does not
    /// speak HTTP/2 there (use `type = "http"`, or point `local_addr` at its HTTP/2 port).
    #[error("the local service {addr} did not agree to HTTP/2 (ALPN h2) over TLS")]
    LocalNotHttp2 {
        /// The service's address.
        addr: String,
    },
    /// The HTTP/2 connection preface with an `http2` proxy's local service failed.
    #[error("HTTP/2 handshake with {addr} failed: {source}")]
    LocalHttp2Handshake {
        /// The service's address.
        addr: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// The local service broke off or botched the answer to a request.
    #[error("the local service failed: {0}")]
    LocalFailed(#[source] hyper::Error),
    /// A user's request target cannot be written as an HTTP/2 URI.
    #[error("bad request target: {0}")]
    RequestTarget(#[source] http::Error),
    /// A health check could not connect to the local service.
    #[error("cannot connect to {addr}: {source}")]
    HealthConnect {
        /// The checked address (`local_addr`).
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A health check could not send its request.
    #[error("sending the request: {0}")]
    HealthSend(#[source] std::io::Error),
    /// A health check could not read the answer.
    #[error("reading the answer: {0}")]
    HealthRead(#[source] std::io::Error),
    /// A health check's GET was answered with a status outside 200-399.
    #[error("GET {path} answered {status}")]
    HealthStatus {
        /// The checked path.
        path: String,
        /// The status code.
        status: u16,
    },
    /// A health check got no answer within its `timeout`.
    #[error("no answer within {}s (timeout)", after.as_secs())]
    HealthTimeout {
        /// The check's timeout.
        after: std::time::Duration,
    },
    /// A health check's answer has no line end where HTTP's status line would end.
    #[error("the answer's first line is too long for HTTP")]
    HealthLineTooLong,
    /// The checked service closed the connection before answering.
    #[error("the service closed without answering")]
    HealthClosed,
    /// The checked service answered something other than HTTP/1.x.
    #[error("the answer is not HTTP/1.x")]
    HealthNotHttp,
    /// `publish_port` is neither a port, `"auto"` nor a range.
    #[error(
        "{value:?} is not {}, with ports up to 65535",
        crate::publish::EXPECTED
    )]
    PublishPortSyntax {
        /// The value as written.
        value: String,
    },
    /// `publish_port` is a range whose first port is above its last.
    #[error("{value:?} is an empty range: write the lower port first")]
    PublishPortEmptyRange {
        /// The value as written.
        value: String,
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
            ClientError::Handshake(e) => e.is_permanent(),
            ClientError::ConfigSyntax { .. }
            | ClientError::ConfigRead { .. }
            | ClientError::Config(_)
            | ClientError::VisitorBind { .. }
            | ClientError::StatsBind { .. }
            | ClientError::SessionThreads { .. } => true,
            ClientError::PublishPortSyntax { .. } | ClientError::PublishPortEmptyRange { .. } => {
                true
            }
            // A local service or a check may recover; the client itself keeps running.
            ClientError::Protocol(_)
            | ClientError::LocalUnreachable { .. }
            | ClientError::LocalTls { .. }
            | ClientError::LocalNotHttp2 { .. }
            | ClientError::LocalHttp2Handshake { .. }
            | ClientError::LocalFailed(_)
            | ClientError::RequestTarget(_)
            | ClientError::HealthConnect { .. }
            | ClientError::HealthSend(_)
            | ClientError::HealthRead(_)
            | ClientError::HealthStatus { .. }
            | ClientError::HealthTimeout { .. }
            | ClientError::HealthLineTooLong
            | ClientError::HealthClosed
            | ClientError::HealthNotHttp => false,
        }
    }

    /// The problems of a config that could not be parsed or is not usable, for a caller that
    /// shows them one per line (`--check`).
    pub fn config_problems(&self) -> Option<&[ConfigProblem]> {
        match self {
            ClientError::ConfigSyntax { problems, .. } | ClientError::Config(problems) => {
                Some(problems)
            }
            _ => None,
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

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A server's rejection stays a [`ClientError::Rejected`] (so a permanent one stops the client
/// and a taken id is recognised), a timeout is reported as a failure to reach the server, and
/// the rest of the setup's errors keep their type.
impl From<TransportError> for ClientError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Setup(HandshakeError::Rejected { code, reason }) => {
                ClientError::Rejected { code, reason }
            }
            TransportError::Setup(e @ HandshakeError::TimedOut { .. }) => {
                ClientError::Transport(TransportError::Setup(e))
            }
            TransportError::Setup(e) => ClientError::Handshake(e),
            e => ClientError::Transport(e),
        }
    }
}

impl From<HandshakeError> for ClientError {
    fn from(e: HandshakeError) -> Self {
        TransportError::Setup(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tunnel_proto::handshake::Phase;

    fn from_setup(e: HandshakeError) -> ClientError {
        TransportError::Setup(e).into()
    }

    #[test]
    fn a_rejection_keeps_its_permanence_through_the_driver() {
        let wrong_key = from_setup(HandshakeError::Rejected {
            code: RejectCode::Auth,
            reason: "authentication failed".into(),
        });
        assert!(matches!(wrong_key, ClientError::Rejected { .. }));
        assert!(wrong_key.is_permanent());
        let taken = from_setup(HandshakeError::Rejected {
            code: RejectCode::IdInUse,
            reason: "in use".into(),
        });
        assert!(!taken.is_permanent() && taken.is_id_in_use());
        let timeout = from_setup(HandshakeError::TimedOut {
            phase: Phase::Authentication,
            after: Duration::from_secs(15),
        });
        assert!(!timeout.is_permanent());
        assert_eq!(
            timeout.to_string(),
            "cannot reach the server: authentication timed out after 15 s"
        );
        let stripped = from_setup(HandshakeError::BindingStripped {
            transport: "tls".into(),
        });
        assert!(matches!(stripped, ClientError::Handshake(_)));
        assert!(!stripped.is_permanent());
    }
}
