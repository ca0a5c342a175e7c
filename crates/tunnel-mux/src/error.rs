//! The one error type of this crate.

/// What can go wrong when using a multiplexed session.
///
/// Stream I/O reports `std::io::Error` (the tokio traits demand it); this type covers the
/// session-level operations: opening streams and validating configuration, and why an
/// [`EarlyStream`](crate::EarlyStream) failed before its payload.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The session has ended (closed locally, peer gone, or I/O failure).
    #[error("the tunnel session is closed; reconnect to open new streams")]
    Closed,

    /// Opening one more stream would exceed `MuxConfig::max_streams`. The session stays usable.
    #[error(
        "too many concurrent streams on this tunnel session (limit {limit}); \
         raise max_streams on both ends or wait for streams to finish"
    )]
    TooManyStreams {
        /// The configured limit.
        limit: usize,
    },

    /// The session failed while opening a stream; it is unusable from now on.
    #[error("the tunnel session failed ({reason}); reconnect to open new streams")]
    Session {
        /// What yamux reported.
        reason: String,
    },

    /// A session already has as many connections ("lanes") as it may; it goes on with those.
    #[error("this session already has {open} connections (at most {max}); it goes on with those")]
    TooManyLanes {
        /// Connections of the session now.
        open: usize,
        /// The most it may have.
        max: usize,
    },

    /// The far side answered a stream's open with an error; its words, escaped when shown.
    #[error("{}", tunnel_proto::PeerText(reason))]
    Refused {
        /// The far side's words, as sent.
        reason: String,
    },

    /// The far side did not answer a stream's open in time.
    #[error("no answer to the stream's open within {}s", after.as_secs())]
    NoStatus {
        /// The time it was given.
        after: std::time::Duration,
    },

    /// The stream failed, ended, or carried something else where its status belonged.
    #[error("no valid answer to the stream's open: {reason}")]
    BadStatus {
        /// What came instead.
        reason: String,
    },

    /// A `MuxConfig` value is out of range.
    #[error("invalid multiplexer configuration: {0}")]
    Config(String),
}
