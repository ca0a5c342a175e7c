//! Session tuning: stream limits, flow-control windows and frame size.
//!
//! # Window sizing (why the defaults are what they are)
//!
//! A yamux stream may only have `window` bytes in flight, so one stream's throughput is capped
//! at `window / RTT`. With the classic fixed 256 KiB window that is ~25 Mbit/s at 80 ms, the
//! reason frp's yamux mode once ran at a tenth of TCP speed (frp#2987).
//!
//! yamux 0.14 starts every stream at 256 KiB (`yamux::DEFAULT_CREDIT`) and doubles a stream's
//! window whenever the sender used half of it within two RTTs (`connection/stream/flow_control.rs`).
//! Growth is bounded by a pool shared by the whole connection:
//!
//! ```text
//! stream window <= 256 KiB + (max_connection_receive_window
//!                             - max_num_streams * 256 KiB
//!                             - growth already granted to other streams)
//! ```
//!
//! and a stream keeps its grown window until it is dropped. So the number that matters is the
//! *headroom* `connection_window - max_streams * 256 KiB`: with [`DEFAULT_HEADROOM`] = 64 MiB a
//! single bulk stream can grow to 64 MiB (enough for ~2.5 Gbit/s at 100 ms), and eight bulk
//! streams can each reach 8 MiB at once. Memory is only used when a reader falls behind, so the
//! worst case per session is `connection_window` of buffered data.
//!
//! yamux itself counts a stream until its driver has processed the drop, and the peer counts it
//! until our RST/FIN arrives; if a SYN ever found yamux's own table full it would kill the whole
//! connection. We therefore enforce `max_streams` ourselves (refusing one stream at a time) and
//! give yamux a limit of twice that, raising its connection window by the same 256 KiB per extra
//! stream so the headroom stays what the user configured.

use crate::MuxError;

pub use crate::send_queue::DEFAULT_SEND_QUEUE;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Receive window every yamux stream starts with (and the per-stream minimum yamux demands).
pub const STREAM_WINDOW: usize = yamux::DEFAULT_CREDIT as usize;

/// Default `max_streams`.
pub const DEFAULT_MAX_STREAMS: usize = 1024;

/// Default growth pool for stream windows above [`STREAM_WINDOW`], see the module docs.
pub const DEFAULT_HEADROOM: usize = 64 * MIB;

/// Default yamux data frame payload. 16 KiB (the yamux default) costs one allocation, one
/// channel hop and one transport write per 16 KiB; the pipe hands over 64 KiB per write, and
/// 64 KiB frames carry that in one frame. Measured over loopback TLS (best of 8 runs): 64 KiB
/// and 256 KiB frames ran 1.2-1.5x faster than 16 KiB; 256 KiB gained nothing over 64 KiB
/// while holding other streams' frames back four times longer.
pub const DEFAULT_SPLIT_SEND_SIZE: usize = 64 * KIB;

/// Default number of accepted-but-not-yet-taken inbound streams.
pub const DEFAULT_ACCEPT_BACKLOG: usize = 256;

const MIN_SPLIT_SEND_SIZE: usize = 4 * KIB;
/// The receiver's whole window at stream start; a bigger first frame is a protocol error.
const MAX_SPLIT_SEND_SIZE: usize = STREAM_WINDOW;

/// Upper bound for `max_streams`: keeps `2 * max_streams * 256 KiB` (yamux's assert) in range.
pub const MAX_STREAMS_LIMIT: usize = {
    let by_address_space = usize::MAX / (4 * STREAM_WINDOW);
    if by_address_space < 65_536 {
        by_address_space
    } else {
        65_536
    }
};

/// Tuning of one multiplexed session. Both ends should use the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MuxConfig {
    /// Live streams per session (opened + accepted). Beyond it `open()` fails with
    /// [`MuxError::TooManyStreams`] and inbound streams are reset; the session survives.
    pub max_streams: usize,
    /// Total receive window per session in bytes: at least `max_streams * 256 KiB`, the excess
    /// is the pool from which busy streams grow their windows (see the module docs).
    pub connection_window: usize,
    /// Largest yamux data frame payload in bytes (4 KiB ..= 256 KiB).
    pub split_send_size: usize,
    /// Inbound streams queued before `Incoming::accept()` takes them; beyond it they are reset.
    pub accept_backlog: usize,
    /// Bytes the session's streams may have handed to yamux but not yet written to the
    /// transport, together; a stream with nothing queued may always send one frame. Keeps
    /// the per-byte cost of many busy streams that of one (see [`DEFAULT_SEND_QUEUE`]).
    pub send_queue: usize,
}

impl Default for MuxConfig {
    fn default() -> Self {
        Self {
            max_streams: DEFAULT_MAX_STREAMS,
            connection_window: DEFAULT_MAX_STREAMS * STREAM_WINDOW + DEFAULT_HEADROOM,
            split_send_size: DEFAULT_SPLIT_SEND_SIZE,
            accept_backlog: DEFAULT_ACCEPT_BACKLOG,
            send_queue: DEFAULT_SEND_QUEUE,
        }
    }
}

impl MuxConfig {
    /// Set `max_streams`, moving `connection_window` along so the growth headroom is unchanged.
    #[must_use]
    pub fn with_max_streams(mut self, max_streams: usize) -> Self {
        let headroom = self.headroom();
        self.max_streams = max_streams;
        self.connection_window = max_streams
            .saturating_mul(STREAM_WINDOW)
            .saturating_add(headroom);
        self
    }

    /// Set the total receive window per session (see [`MuxConfig::connection_window`]).
    #[must_use]
    pub fn with_connection_window(mut self, bytes: usize) -> Self {
        self.connection_window = bytes;
        self
    }

    /// Set the largest data frame payload.
    #[must_use]
    pub fn with_split_send_size(mut self, bytes: usize) -> Self {
        self.split_send_size = bytes;
        self
    }

    /// Set how many inbound streams may wait for `accept()`.
    #[must_use]
    pub fn with_accept_backlog(mut self, streams: usize) -> Self {
        self.accept_backlog = streams;
        self
    }

    /// Set the session's send queue bound, in bytes.
    #[must_use]
    pub fn with_send_queue(mut self, bytes: usize) -> Self {
        self.send_queue = bytes;
        self
    }

    /// Check every value; call it where configuration is loaded so users get an error early.
    /// [`crate::start`] never fails: it clamps out-of-range values (and logs a warning).
    pub fn validate(&self) -> Result<(), MuxError> {
        if self.max_streams == 0 || self.max_streams > MAX_STREAMS_LIMIT {
            return Err(MuxError::Config(format!(
                "max_streams is {}, it must be between 1 and {MAX_STREAMS_LIMIT}",
                self.max_streams
            )));
        }
        let floor = self.max_streams * STREAM_WINDOW;
        if self.connection_window < floor {
            return Err(MuxError::Config(format!(
                "connection_window is {} bytes but max_streams = {} needs at least {floor} \
                 (256 KiB per stream); raise connection_window or lower max_streams",
                self.connection_window, self.max_streams
            )));
        }
        if !(MIN_SPLIT_SEND_SIZE..=MAX_SPLIT_SEND_SIZE).contains(&self.split_send_size) {
            return Err(MuxError::Config(format!(
                "split_send_size is {}, it must be between {MIN_SPLIT_SEND_SIZE} and \
                 {MAX_SPLIT_SEND_SIZE} bytes",
                self.split_send_size
            )));
        }
        if self.accept_backlog == 0 {
            return Err(MuxError::Config(
                "accept_backlog is 0, it must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }

    fn headroom(&self) -> usize {
        self.connection_window
            .saturating_sub(self.max_streams.saturating_mul(STREAM_WINDOW))
    }

    /// The values a session really uses: clamped into range, never able to trip yamux's asserts.
    pub(crate) fn effective(&self) -> Effective {
        if let Err(e) = self.validate() {
            tracing::warn!("{e}; using the nearest valid value");
        }
        let max_streams = self.max_streams.clamp(1, MAX_STREAMS_LIMIT);
        let headroom = self.headroom();
        let yamux_streams = 2 * max_streams;
        let window = (yamux_streams * STREAM_WINDOW).saturating_add(headroom);
        let split_send_size = self
            .split_send_size
            .clamp(MIN_SPLIT_SEND_SIZE, MAX_SPLIT_SEND_SIZE);

        let mut yamux = yamux::Config::default();
        // Window first: each setter asserts window >= 256 KiB * streams against the other value,
        // and the default window (1 GiB) may be too small for the new stream count.
        yamux.set_max_connection_receive_window(None);
        yamux.set_max_num_streams(yamux_streams);
        yamux.set_max_connection_receive_window(Some(window));
        yamux.set_split_send_size(split_send_size);
        Effective {
            max_streams,
            accept_backlog: self.accept_backlog.max(1),
            send_queue: self.send_queue,
            yamux,
        }
    }
}

/// Clamped values plus the yamux configuration derived from them.
#[derive(Debug)]
pub(crate) struct Effective {
    pub max_streams: usize,
    pub accept_backlog: usize,
    pub send_queue: usize,
    pub yamux: yamux::Config,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_lets_one_stream_reach_8_mib() {
        let cfg = MuxConfig::default();
        cfg.validate().expect("default config is valid");
        assert!(STREAM_WINDOW + cfg.headroom() >= 8 * MIB);
    }

    #[test]
    fn with_max_streams_keeps_headroom() {
        let cfg = MuxConfig::default().with_max_streams(4096);
        assert_eq!(cfg.headroom(), DEFAULT_HEADROOM);
        cfg.validate().expect("still valid");
    }

    #[test]
    fn out_of_range_values_are_rejected_but_never_panic() {
        let bad = [
            MuxConfig::default().with_max_streams(0),
            MuxConfig::default().with_max_streams(usize::MAX),
            MuxConfig::default().with_connection_window(0),
            MuxConfig::default().with_split_send_size(1),
            MuxConfig::default().with_split_send_size(usize::MAX),
            MuxConfig::default().with_accept_backlog(0),
        ];
        for cfg in bad {
            let err = cfg.validate().expect_err("must be rejected");
            assert!(matches!(err, MuxError::Config(_)), "{err}");
            // Building the yamux config would panic on an inconsistent window.
            let eff = cfg.effective();
            assert!(eff.max_streams >= 1 && eff.accept_backlog >= 1);
        }
    }
}
