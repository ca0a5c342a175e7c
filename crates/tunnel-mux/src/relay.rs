//! One user connection carried by one stream, with aborts signalled both ways.
//!
//! A dropped stream reaches the peer as an RST, which `MuxStream` reads as an error only while
//! the peer has not sent its own FIN, and which carries no reason. So an abort also travels out
//! of band: the engines send the stream id on their control stream, and the far side looks the
//! id up in its [`AbortTable`] and resets its TCP socket, so the application there sees an
//! abort too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::pipe::{
    pipe_from, reset_tcp, Borrowed, ByteCounters, Copied, PipeConfig, PipeEnd, PipeStats,
};

/// Streams of one session whose data path the peer may abort, by yamux stream id.
#[derive(Debug, Clone, Default)]
pub struct AbortTable(Arc<Mutex<HashMap<u32, CancellationToken>>>);

impl AbortTable {
    /// Start watching stream `id`; the entry goes away with the guard.
    pub fn register(&self, id: u32) -> AbortGuard {
        let token = CancellationToken::new();
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, token.clone());
        AbortGuard {
            table: self.clone(),
            id,
            token,
        }
    }

    /// The peer says stream `id` failed. Returns whether a live stream was found.
    pub fn abort(&self, id: u32) -> bool {
        let token = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        token.map(|t| t.cancel()).is_some()
    }

    /// The session is gone: abort every stream.
    pub fn abort_all(&self) {
        let tokens: Vec<_> = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, t)| t)
            .collect();
        for t in tokens {
            t.cancel();
        }
    }

    /// Streams registered now.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no stream is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps one stream in an [`AbortTable`] while alive.
#[derive(Debug)]
pub struct AbortGuard {
    table: AbortTable,
    id: u32,
    token: CancellationToken,
}

impl AbortGuard {
    /// Cancelled when the peer aborts the stream or the session ends.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        self.table
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// How a relay ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayEnd {
    /// Both directions reached EOF.
    Finished(PipeStats),
    /// One side went quiet after the other half-closed; given up.
    IdleAfterHalfClose(PipeStats),
    /// No byte moved either way for [`PipeConfig::idle`]; both ends closed.
    Idle(PipeStats),
    /// A read or write failed here; the caller should tell the peer (send an abort).
    Failed {
        /// Bytes moved before the failure.
        stats: PipeStats,
        /// What failed.
        error: std::io::Error,
    },
    /// The peer aborted, or the session ended.
    Aborted,
}

impl RelayEnd {
    /// Bytes moved, where known.
    pub fn stats(&self) -> PipeStats {
        match self {
            RelayEnd::Finished(s) | RelayEnd::IdleAfterHalfClose(s) | RelayEnd::Idle(s) => *s,
            RelayEnd::Failed { stats, .. } => *stats,
            RelayEnd::Aborted => PipeStats::default(),
        }
    }
}

/// After signalling an abort, how long to keep our end of the stream open. Closing it at once
/// would race the abort: the peer would read the stream's end as a clean EOF and pass a FIN to
/// its application before the abort arrived. Instead we wait for the peer to drop its end.
const ABORT_LINGER: Duration = Duration::from_secs(2);

/// Pipe a TCP connection and a stream until both finish. When the data path fails here, the
/// TCP connection is reset, `signal_abort` tells the peer (via the control stream), and the
/// stream is held until the peer lets go. When the peer aborts (`abort` fires), the TCP
/// connection is reset. Either way its application sees an abort, not a clean close.
///
/// The stream is read as an `AsyncBufRead` ([`crate::MuxStream`] is one): its frames are
/// written to the TCP connection as they are, without a copy into a buffer of the relay's.
pub async fn relay_tcp<S>(
    mut tcp: TcpStream,
    mut stream: S,
    cfg: &PipeConfig,
    abort: &CancellationToken,
    counters: Option<&ByteCounters>,
    signal_abort: impl FnOnce(),
) -> RelayEnd
where
    S: AsyncRead + AsyncBufRead + AsyncWrite + Unpin,
{
    let from_tcp = Copied::new(cfg.buffer_size);
    let end = tokio::select! {
        end = pipe_from(&mut tcp, &mut stream, from_tcp, Borrowed, cfg, counters) => end,
        () = abort.cancelled() => {
            reset_tcp(tcp);
            return RelayEnd::Aborted;
        }
    };
    match end {
        PipeEnd::Finished(s) => RelayEnd::Finished(s),
        PipeEnd::IdleAfterHalfClose(s) => RelayEnd::IdleAfterHalfClose(s),
        PipeEnd::Idle(s) => RelayEnd::Idle(s),
        PipeEnd::Failed { stats, error } => {
            reset_tcp(tcp);
            signal_abort();
            linger(&mut stream, abort).await;
            RelayEnd::Failed { stats, error }
        }
    }
}

/// Pipe two streams (a visitor's and a proxy owner's). On failure or abort of either,
/// `signal_abort` tells both peers, and both streams are held until the peers let go. Both
/// are read as `AsyncBufRead`, so frames pass from one to the other without a copy of ours.
pub async fn relay_streams<A, B>(
    a: &mut A,
    b: &mut B,
    cfg: &PipeConfig,
    abort_a: &CancellationToken,
    abort_b: &CancellationToken,
    counters: Option<&ByteCounters>,
    signal_abort: impl FnOnce(),
) -> RelayEnd
where
    A: AsyncRead + AsyncBufRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncBufRead + AsyncWrite + Unpin,
{
    let end = tokio::select! {
        end = pipe_from(a, b, Borrowed, Borrowed, cfg, counters) => match end {
            PipeEnd::Finished(s) => return RelayEnd::Finished(s),
            PipeEnd::IdleAfterHalfClose(s) => return RelayEnd::IdleAfterHalfClose(s),
            PipeEnd::Idle(s) => return RelayEnd::Idle(s),
            PipeEnd::Failed { stats, error } => RelayEnd::Failed { stats, error },
        },
        () = abort_a.cancelled() => RelayEnd::Aborted,
        () = abort_b.cancelled() => RelayEnd::Aborted,
    };
    signal_abort();
    tokio::join!(linger(a, abort_a), linger(b, abort_b));
    end
}

/// Read and discard until the peer drops its end, it aborts, or the linger time passes.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S, abort: &CancellationToken) {
    let mut sink = [0u8; 4096];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = drain => {}
        () = abort.cancelled() => {}
        () = tokio::time::sleep(ABORT_LINGER) => {}
    }
}
