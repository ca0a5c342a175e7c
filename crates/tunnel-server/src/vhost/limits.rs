//! What one user connection to the virtual host may cost: how many a source and everyone
//! may hold, how long they may take to start and to finish a request head, and how big the
//! head may be. Each bound has a config key; see [`crate::ServerConfig`].

use std::time::Duration;

use crate::source_limit::SourceLimit;
use crate::ServerConfig;

/// The vhost's connection bounds, from the config.
pub(crate) struct Limits {
    /// `vhost_max_conns_per_source`, `vhost_max_conns`.
    pub conns: SourceLimit,
    /// `vhost_first_byte_timeout`: a connection that sends nothing is closed after it.
    pub first_byte: Duration,
    /// `vhost_header_timeout`: the whole head, from the first byte or from the end of the
    /// previous answer (so also the idle keep-alive timeout).
    pub header: Duration,
    /// `vhost_max_header_size`: the read buffer, and so the largest head; beyond it, 431.
    pub max_header_size: usize,
}

impl Limits {
    pub(super) fn new(cfg: &ServerConfig) -> Self {
        Limits {
            conns: SourceLimit::new(cfg.vhost_max_conns_per_source, cfg.vhost_max_conns),
            first_byte: Duration::from_secs(cfg.vhost_first_byte_timeout.max(1)),
            header: Duration::from_secs(cfg.vhost_header_timeout.max(1)),
            max_header_size: cfg.vhost_max_header_size.max(MIN_HEADER_SIZE),
        }
    }
}

/// hyper cannot parse with a smaller buffer.
pub(crate) const MIN_HEADER_SIZE: usize = 8 * 1024;
