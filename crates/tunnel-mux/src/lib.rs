//! yamux sessions for tls-tunnel with a tokio-friendly open/accept API, and the forwarder that
//! copies bytes between a proxied TCP connection and its stream.
//!
//! * [`start`] runs a yamux session over any tokio byte stream (the TLS stream after the
//!   handshake frames) in a driver task and returns a cloneable [`MuxHandle`] (open, close,
//!   watch) and an [`Incoming`] (accept).
//! * [`MuxStream`] is a tokio `AsyncRead + AsyncWrite`; `shutdown()` half-closes (FIN),
//!   dropping without it resets (RST), and a peer reset reads as an error, not as EOF.
//! * [`pipe()`] forwards both ways with half-close, an idle timeout after the first EOF and an
//!   explicit failure outcome; [`reset_tcp`] aborts a TCP connection.
//! * [`EarlyStream`] lets the opener of a stream send before the far side answered its
//!   open: it reads the status frame out of the reply, then passes everything through.
//! * [`relay_tcp`] / [`relay_streams`] wrap the pipe with abort signalling between the two
//!   ends of a tunnel ([`AbortTable`]).
//! * [`Lanes`] holds the connections of one session and places each new stream on the
//!   least loaded one ([`Lane`], counted by [`LaneSlot`]); both engines use it.
//! * [`relay_datagrams`] / [`serve_udp`] carry UDP flows, one stream per user address.
//! * [`SessionSpawner`] runs a stream's handler inside its session's task, and
//!   [`SessionThreads`] keeps whole sessions on threads of their own (see each).
//! * [`spawn_control`] serves a session's control stream: heartbeats both ways, aborts into
//!   the [`AbortTable`], everything else handed to the engine.
//!
//! Repeatable warnings are limited with [`tunnel_proto::WarnLimit`]; frames on the control
//! stream are read and written with [`tunnel_proto::read_message`] / `write_message`.
//!
//! Window sizing and the other defaults are explained in [`MuxConfig`]'s module docs.
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use tunnel_mux::{start, Mode, MuxConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (client_io, server_io) = tokio::io::duplex(256 * 1024);
//! let cfg = MuxConfig::default();
//! let (client, _client_incoming) = start(client_io, Mode::Client, &cfg);
//! let (server, mut server_incoming) = start(server_io, Mode::Server, &cfg);
//!
//! let mut out = client.open().await?;
//! out.write_all(b"ping").await?; // the peer sees the stream with its first bytes
//! out.shutdown().await?; // FIN: the peer reads EOF after "ping" and may still answer
//!
//! let mut inbound = server_incoming.accept().await.ok_or("session ended")?;
//! let mut request = Vec::new();
//! inbound.read_to_end(&mut request).await?;
//! assert_eq!(request, b"ping");
//! inbound.write_all(b"pong").await?;
//! inbound.shutdown().await?;
//!
//! let mut reply = Vec::new();
//! out.read_to_end(&mut reply).await?;
//! assert_eq!(reply, b"pong");
//!
//! client.close();
//! client.closed().await;
//! server.closed().await; // the peer's GoAway ends the server session too
//! # Ok(())
//! # }
//! ```

// Every public item is documented, and `pub` means reachable from outside the crate. Set
// here rather than in `[workspace.lints]`: Cargo applies those to every target of every
// package, the end-to-end tests and their shared fixtures too.
#![warn(missing_docs, unreachable_pub)]

mod colocate;
mod config;
mod control;
mod datagram;
mod driver;
mod early;
mod error;
mod io;
mod lanes;
mod pipe;
mod rate;
mod relay;
mod send_queue;
mod session;
mod stream;
mod threads;

pub use config::{
    MuxConfig, DEFAULT_ACCEPT_BACKLOG, DEFAULT_HEADROOM, DEFAULT_MAX_STREAMS, DEFAULT_SEND_QUEUE,
    DEFAULT_SPLIT_SEND_SIZE, MAX_STREAMS_LIMIT, STREAM_WINDOW,
};
pub use control::{
    spawn_control, ControlChannel, ControlClosed, ControlInbox, ControlSender, Heartbeat,
};
pub use datagram::{
    relay_datagrams, serve_udp, DatagramCounters, DirCounters, Downlink, FlowEnd, FlowLimits,
    OpenedFlow, Uplink, DEFAULT_FLOW_QUEUE, DEFAULT_MAX_FLOWS,
};
pub use early::EarlyStream;
pub use error::MuxError;
pub use lanes::{settle, Lane, LaneReservation, LaneSlot, Lanes, SETTLE};
pub use pipe::{pipe, pipe_counted, reset_tcp, ByteCounters, PipeConfig, PipeEnd, PipeStats};
pub use rate::{RateLimit, TokenBucket, BURST};
pub use relay::{relay_streams, relay_tcp, AbortGuard, AbortTable, RelayEnd};
pub use session::{start, Incoming, Mode, MuxHandle};
pub use stream::{MuxStream, SessionSpawner};
pub use threads::{Portable, SessionThreads};
