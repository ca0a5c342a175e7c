//! The server's one error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tunnel_mux::MuxError;
use tunnel_transport::TransportError;

pub use tunnel_transport::ConfigProblem;

/// Why the server could not start or stopped; why a config value, a registration or a
/// connection it serves was refused; or why a stream it opens failed.
///
/// The texts of the variants below [`ServerError::Cluster`] are what users and operators
/// read in config problems, logs, field errors and stream refusals.
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
    /// The threads that carry client connections could not be started.
    #[error(
        "cannot start {threads} session threads (session_threads): {source}; lower \
         session_threads, or set 0 to use the caller's runtime"
    )]
    SessionThreads {
        /// How many were asked for.
        threads: usize,
        /// The OS error.
        source: std::io::Error,
    },
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

    /// A port range (`allow_ports`, `--allow-ports`, a scope's `allow_ports`) that does not
    /// parse.
    #[error("{text:?} is not a port range: use \"N\" or \"N-M\" with ports 1-65535")]
    NotAPortRange {
        /// The range as written.
        text: String,
    },
    /// A port range whose first port is above its last.
    #[error("{text:?} is an empty range: write the lower port first")]
    EmptyPortRange {
        /// The range as written.
        text: String,
    },
    /// A proxy's domain that is not a host name or a wildcard over one.
    #[error(
        "{domain:?} is not a domain: use a host name like \"app.example.com\" or a wildcard \
         like \"*.example.com\" (no port, no scheme)"
    )]
    NotADomain {
        /// The domain as sent.
        domain: String,
    },
    /// A proxy's location that is not a path prefix.
    #[error("{location:?} is not a path prefix: start it with \"/\" (e.g. \"/api\"), no query")]
    NotALocation {
        /// The location as sent.
        location: String,
    },
    /// A client's scope (in the `clients_file`) leaves out what it asked for.
    #[error(
        "{what} is outside this client's scope ({key}: {allows}, in the server's \
         clients_file); ask the server's operator to widen it, or pick one it allows"
    )]
    OutsideScope {
        /// What was asked for, as the user wrote it (`proxy "db"`).
        what: String,
        /// The scope key that leaves it out.
        key: &'static str,
        /// What that key allows.
        allows: String,
    },
    /// A client registers more proxies and visitors than its `max_proxies`.
    #[error(
        "{count} proxies and visitors, but this client may register {max} (max_proxies in \
         the server's clients_file)"
    )]
    TooManyProxies {
        /// Proxies and visitors asked for.
        count: usize,
        /// The client's `max_proxies`.
        max: usize,
    },
    /// A client holds `max_streams_per_client` streams.
    #[error("too many streams: this client already has {open} open (max_streams_per_client)")]
    StreamsFull {
        /// Streams the client holds.
        open: usize,
    },
    /// A proxy holds more than its fair share of its client's streams, and the free ones
    /// left are kept for the client's other proxies.
    #[error(
        "too many streams for proxy {proxy}: it holds {held} and the client's free streams are \
         kept for its other proxies (fair share: each proxy is sure of {reserve}, \
         max_streams_per_client / 2 / proxies)"
    )]
    FairShare {
        /// The proxy.
        proxy: String,
        /// Streams it holds.
        held: usize,
        /// Streams each proxy of the client is sure of.
        reserve: usize,
    },
    /// A client already has `max_stream_headers_per_client` streams reading their header.
    #[error(
        "stream refused: this client already has {held} streams still sending their header \
         (max_stream_headers_per_client)"
    )]
    HeadersPerClient {
        /// Streams of the client still reading their header.
        held: usize,
    },
    /// Every `max_stream_headers` permit of the server is taken.
    #[error(
        "stream refused: the server holds too many streams still sending their header \
         (max_stream_headers); try again"
    )]
    HeadersServerWide,
    /// Another client took the id between the handshake and the session's install.
    #[error("client id {id:?} was taken by another client meanwhile")]
    IdTakenMeanwhile {
        /// The client id.
        id: String,
    },
    /// The server reached `max_clients` between the handshake and the session's install.
    #[error("the server filled up meanwhile ({clients} clients, max_clients); try again later")]
    FullMeanwhile {
        /// Clients connected then.
        clients: usize,
    },
    /// A request another server forwards finds this source at its connection limit.
    #[error("too busy: this address already has {limit} connections open")]
    SourceBusy {
        /// Connections one address may hold.
        limit: usize,
    },
    /// An HTTP request to a virtual host without a Host (nor an absolute-form target).
    #[error("bad request: no Host header")]
    NoHostHeader,
    /// An HTTP request with two Host headers, which parties on the way may route apart.
    #[error("bad request: two Host headers; send exactly one")]
    TwoHostHeaders,
    /// An HTTP request whose Host header is not visible ASCII.
    #[error("bad request: the Host header is not plain text")]
    HostNotText,
    /// A visitor tried a proxy that opts in to no visitors.
    #[error("the proxy sets neither secret nor allow_visitors")]
    NotVisitable,
    /// A visitor's secret is not the proxy's.
    #[error("wrong or missing secret")]
    WrongSecret,
    /// A visitor's client id is not in the proxy's `allow_visitors`.
    #[error("client id not in allow_visitors")]
    NotAnAllowedVisitor,
    /// A request another server forwards finds every connection slot taken.
    #[error("too busy: all {limit} connection slots are taken")]
    ServerBusy {
        /// Connections all addresses together may hold.
        limit: usize,
    },
    /// A stream to a proxy's client could not be opened on its connection.
    #[error("connection failed: the proxy's client is unreachable ({0})")]
    OwnerUnreachable(#[source] MuxError),
    /// The stream's open could not be written to the proxy's client.
    #[error("connection failed: {0}")]
    OwnerWrite(#[source] TransportError),
    /// The proxy's client refused the stream; the text is its words, escaped once.
    #[error("{0}")]
    OwnerRefused(MuxError),
    /// The proxy's client did not answer the stream's open in time.
    #[error("connection failed: no answer from the proxy's client within {}s", .after.as_secs())]
    OwnerSilent {
        /// The time it was given.
        after: Duration,
    },
    /// The stream to the proxy's client failed before its status.
    #[error("connection failed: the proxy's client: {0}")]
    OwnerStream(#[source] MuxError),
    /// The stream to the proxy's client failed while the user's first bytes went out.
    #[error("connection failed: the stream to the proxy's client failed ({0})")]
    OwnerStreamIo(#[source] std::io::Error),
    /// A connection another server forwards finds the proxy's client at its stream limit.
    #[error("connection failed: the proxy's client is at its stream limit")]
    OwnerAtStreamLimit,
    /// A peer server forwarded a virtual-host request as if it were for one proxy.
    #[error("a virtual-host request names no proxy")]
    VhostNamesNoProxy,
    /// A peer server's registry probe reached the path for one proxy.
    #[error("a probe names no proxy")]
    ProbeNamesNoProxy,
    /// This server already holds as many peer links as it may.
    #[error("connection failed: already {max} peer links open; not dialling {addr}")]
    PeerLinksFull {
        /// The limit.
        max: usize,
        /// The peer's address that was not dialled.
        addr: String,
    },
    /// The link to a peer server could not be set up (TLS, proofs).
    #[error("connection failed: cannot link to the peer server at {addr}: {source}")]
    PeerLink {
        /// The peer's address.
        addr: String,
        /// What failed.
        source: TransportError,
    },
    /// A peer server's link failed again after a redial.
    #[error("connection failed: the peer server {addr} is unreachable ({source})")]
    PeerUnreachable {
        /// The peer's address.
        addr: String,
        /// Why the stream over the link failed.
        source: Box<ServerError>,
    },
    /// A stream could not be opened on a peer link.
    #[error("{0}")]
    PeerStreamOpen(#[source] MuxError),
    /// The `Forward` could not be written on a peer stream.
    #[error("{0}")]
    PeerStreamWrite(#[source] TransportError),
    /// The peer server answered a `Forward` with another message.
    #[error("connection failed: the peer server {server_id} answered {got}")]
    PeerAnsweredOther {
        /// The peer server.
        server_id: String,
        /// The message's name.
        got: &'static str,
    },
    /// The peer server closed the stream before its answer.
    #[error("connection failed: the peer server {server_id} closed the stream")]
    PeerClosed {
        /// The peer server.
        server_id: String,
    },
    /// The peer server's answer could not be read.
    #[error("connection failed: {0}")]
    PeerRead(#[source] TransportError),
    /// The peer server did not answer in time.
    #[error("connection failed: no answer from the peer server {server_id} within {}s", .after.as_secs())]
    PeerSilent {
        /// The peer server.
        server_id: String,
        /// The time it was given.
        after: Duration,
    },
    /// No server of the cluster serves the proxy.
    #[error("proxy not found")]
    ProxyNotFound,
    /// The proxy's registration moved again while it was being looked up.
    #[error("proxy not found: its registration is moving; try again")]
    ProxyMoving,
    /// The owner's server denied the forwarded connection; the text is its words, escaped
    /// once.
    #[error("{}", tunnel_proto::PeerText(reason))]
    PeerDenied {
        /// The owner's server's words.
        reason: String,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ServerError as E;

    /// The texts users read in config problems, field errors, logs and stream refusals were
    /// `String`s before these variants; they must read the same.
    #[test]
    fn texts_are_the_ones_users_read() {
        let cases: Vec<(E, &str)> = vec![
            (
                E::NotAPortRange { text: "0".into() },
                r#""0" is not a port range: use "N" or "N-M" with ports 1-65535"#,
            ),
            (
                E::EmptyPortRange { text: "9-1".into() },
                r#""9-1" is an empty range: write the lower port first"#,
            ),
            (
                E::NotADomain { domain: "a:1".into() },
                r#""a:1" is not a domain: use a host name like "app.example.com" or a wildcard like "*.example.com" (no port, no scheme)"#,
            ),
            (
                E::NotALocation { location: "api".into() },
                r#""api" is not a path prefix: start it with "/" (e.g. "/api"), no query"#,
            ),
            (
                E::TooManyProxies { count: 3, max: 2 },
                "3 proxies and visitors, but this client may register 2 (max_proxies in the server's clients_file)",
            ),
            (
                E::HeadersPerClient { held: 4 },
                "stream refused: this client already has 4 streams still sending their header (max_stream_headers_per_client)",
            ),
            (
                E::HeadersServerWide,
                "stream refused: the server holds too many streams still sending their header (max_stream_headers); try again",
            ),
            (
                E::IdTakenMeanwhile { id: "c".into() },
                r#"client id "c" was taken by another client meanwhile"#,
            ),
            (
                E::FullMeanwhile { clients: 5 },
                "the server filled up meanwhile (5 clients, max_clients); try again later",
            ),
            (
                E::SourceBusy { limit: 8 },
                "too busy: this address already has 8 connections open",
            ),
            (
                E::ServerBusy { limit: 9 },
                "too busy: all 9 connection slots are taken",
            ),
            (
                E::OwnerSilent {
                    after: Duration::from_secs(15),
                },
                "connection failed: no answer from the proxy's client within 15s",
            ),
            (
                E::PeerLinksFull {
                    max: 64,
                    addr: "10.0.0.2:7443".into(),
                },
                "connection failed: already 64 peer links open; not dialling 10.0.0.2:7443",
            ),
            (
                E::PeerAnsweredOther {
                    server_id: "b".into(),
                    got: "Hello",
                },
                "connection failed: the peer server b answered Hello",
            ),
            (
                E::PeerClosed {
                    server_id: "b".into(),
                },
                "connection failed: the peer server b closed the stream",
            ),
            (
                E::PeerSilent {
                    server_id: "b".into(),
                    after: Duration::from_secs(10),
                },
                "connection failed: no answer from the peer server b within 10s",
            ),
            (E::ProxyNotFound, "proxy not found"),
            (
                E::ProxyMoving,
                "proxy not found: its registration is moving; try again",
            ),
            (
                E::PeerDenied {
                    reason: "access denied".into(),
                },
                "access denied",
            ),
            (
                E::StreamsFull { open: 3 },
                "too many streams: this client already has 3 open (max_streams_per_client)",
            ),
            (
                E::OwnerAtStreamLimit,
                "connection failed: the proxy's client is at its stream limit",
            ),
            (
                E::VhostNamesNoProxy,
                "a virtual-host request names no proxy",
            ),
            (E::ProbeNamesNoProxy, "a probe names no proxy"),
            (E::NoHostHeader, "bad request: no Host header"),
            (
                E::TwoHostHeaders,
                "bad request: two Host headers; send exactly one",
            ),
            (
                E::HostNotText,
                "bad request: the Host header is not plain text",
            ),
            (
                E::NotVisitable,
                "the proxy sets neither secret nor allow_visitors",
            ),
            (E::WrongSecret, "wrong or missing secret"),
            (E::NotAnAllowedVisitor, "client id not in allow_visitors"),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text, "{e:?}");
        }
    }
}
